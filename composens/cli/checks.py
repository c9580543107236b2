"""`composens test`: run the checks the file declares, live on a terminal, as a table, JSON or JUnit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from composens.cli.app import TableFormat, app, state_of
from composens.model.errors import ExitCode

if TYPE_CHECKING:
    from composens.model.checks import CheckUpdate
    from composens.model.packets import CapturedPacket, Interface, InterfaceStatistics


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
    import dataclasses
    import time

    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    out = state.output()
    started = time.monotonic()
    recorder = lab.flight_recorder(topo, captures.absolute(), write_window) if topo.checks else None
    written: dict[str, Path] = {}
    if recorder is not None:
        recorder.start()
    try:
        with out.check_progress(live=format is TableFormat.table) as progress:

            def on_update(update: CheckUpdate) -> None:
                progress(update)
                if recorder is not None and update.state in ("fail", "error"):
                    recorder.note_failure(update.name)

            results = lab.run_checks(topo, names or [], fail_fast=fail_fast, on_update=on_update)
    finally:
        if recorder is not None:
            written = recorder.stop()
            for note in recorder.notes:
                out.warning(f"flight recorder: {note}")
    results = tuple(dataclasses.replace(r, capture=str(written[r.name])) if r.name in written else r for r in results)
    seconds = time.monotonic() - started
    if junit:
        from composens.interop.junit import junit_xml

        out.data(junit_xml(results, f"composens {topo.project}", seconds=seconds).encode(), junit)
    out.check_results(results, fmt=str(format))
    if any(r.result != "pass" for r in results):
        raise typer.Exit(ExitCode.FAILURE)


def write_window(
    path: Path,
    interfaces: Sequence[Interface],
    packets: Sequence[CapturedPacket],
    statistics: Sequence[InterfaceStatistics],
) -> None:
    """Write a flight recorder's window as pcapng: whole, or not at all (written aside, then renamed into place)."""
    from composens.interop.pcapng import write_pcapng

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as stream:
        write_pcapng(stream, interfaces, packets, statistics)
    partial.replace(path)
