"""`composens test`: run the checks the file declares, live on a terminal, as a table, JSON or JUnit."""

from __future__ import annotations

from typing import Annotated

import typer

from composens.cli.app import TableFormat, app, state_of
from composens.model.errors import ExitCode


@app.command("test")
def check_lab(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Checks to run, by name (all when none are named).")] = None,
    format: Annotated[TableFormat, typer.Option("--format", help="table, or json for scripts.")] = TableFormat.table,
    junit: Annotated[str | None, typer.Option("--junit", help="Also write the results as JUnit XML to FILE.")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first check that fails.")] = False,
) -> None:
    """Run the checks declared in x-composens.checks against the running lab; exit 1 if any does not pass."""
    import time

    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    out = state.output()
    started = time.monotonic()
    with out.check_progress(live=format is TableFormat.table) as progress:
        results = lab.run_checks(topo, names or [], fail_fast=fail_fast, on_update=progress)
    seconds = time.monotonic() - started
    if junit:
        from composens.interop.junit import junit_xml

        out.data(junit_xml(results, f"composens {topo.project}", seconds=seconds).encode(), junit)
    out.check_results(results, fmt=str(format))
    if any(r.result != "pass" for r in results):
        raise typer.Exit(ExitCode.FAILURE)
