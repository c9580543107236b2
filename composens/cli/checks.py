"""`composens test`: run the checks the file declares, live on a terminal, as a table, JSON or JUnit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from composens.cli.app import TableFormat, app, state_of
from composens.model.errors import ExitCode

if TYPE_CHECKING:
    from composens.model.checks import CheckUpdate


@app.command("test")
def check_lab(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Checks to run, by name (all when none are named).")] = None,
    format: Annotated[TableFormat, typer.Option("--format", help="table, or json for scripts.")] = TableFormat.table,
    junit: Annotated[str | None, typer.Option("--junit", help="Also write the results as JUnit XML to FILE.")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first check that fails.")] = False,
    captures: Annotated[
        Path,
        typer.Option("--captures", help="Where the flight recorder writes a failure's packets (x-composens.capture)."),
    ] = Path("composens-captures"),
) -> None:
    """Run the checks declared in x-composens.checks against the running lab; exit 1 if any does not pass.

    With x-composens.capture, the lab is captured while they run, and the packets around each check that fails are
    written to DIR/CHECK.pcapng (named in the table, the JSON and the JUnit XML); nothing when all pass.
    """
    import contextlib
    import dataclasses
    import time

    from composens.cli.recording import flight_recording

    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    out = state.output()
    started = time.monotonic()
    recording = flight_recording(lab, topo, captures, out) if topo.checks else contextlib.nullcontext()
    with recording as recorder, out.check_progress(live=format is TableFormat.table) as progress:

        def on_update(update: CheckUpdate) -> None:
            progress(update)
            if recorder is not None and update.state in ("fail", "error"):
                recorder.note_failure(update.name)

        results = lab.run_checks(topo, names or [], fail_fast=fail_fast, on_update=on_update)
    written = recorder.written if recorder is not None else {}
    results = tuple(dataclasses.replace(r, capture=str(written[r.name])) if r.name in written else r for r in results)
    seconds = time.monotonic() - started
    if junit:
        from composens.interop.junit import junit_xml

        out.data(junit_xml(results, f"composens {topo.project}", seconds=seconds).encode(), junit)
    out.check_results(results, fmt=str(format))
    if any(r.result != "pass" for r in results):
        raise typer.Exit(ExitCode.FAILURE)
