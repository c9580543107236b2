"""`composens scenario run|list`: fault scenarios with verdicts, as a table, JSON, JUnit and a timeline picture."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from composens.cli.app import TableFormat, app, state_of
from composens.model.errors import ExitCode

if TYPE_CHECKING:
    from composens.model.scenarios import Verdict

scenario_app = typer.Typer(help="Fault scenarios: break the lab on purpose and measure how it recovers.")
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("list")
def scenario_list(
    ctx: typer.Context,
    format: Annotated[TableFormat, typer.Option("--format", help="table, or json for scripts.")] = TableFormat.table,
) -> None:
    """Show the scenarios the file declares, with their probes and steps."""
    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    state.output().scenario_list(lab.declared_scenarios(topo), fmt=str(format))


@scenario_app.command("run")
def scenario_run(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Scenarios to run, in this order.", metavar="NAME...")],
    format: Annotated[TableFormat, typer.Option("--format", help="table, or json for scripts.")] = TableFormat.table,
    junit: Annotated[str | None, typer.Option("--junit", help="Also write the verdicts as JUnit XML to FILE.")] = None,
    timeline: Annotated[
        str | None, typer.Option("--timeline", help="Also draw the run as an SVG picture in FILE.", metavar="FILE.svg")
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the lab as the last step left it.")] = False,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first expectation that fails (the lab is restored).")
    ] = False,
    captures: Annotated[
        Path,
        typer.Option(
            "--captures", help="Where the flight recorder writes a failed expectation's packets (x-composens.capture)."
        ),
    ] = Path("composens-captures"),
) -> None:
    """Run scenarios against the running lab, then restore it; exit 1 if any expectation does not pass.

    Ctrl-C or SIGTERM stops the scenario at once: the lab is restored, what ran is reported, the exit is 130.
    With x-composens.capture, the lab is captured while they run, and the packets around each expectation that
    fails are written to DIR/SCENARIO_step_N_EXPECTATION.pcapng (named in the report, the JSON and the JUnit XML).
    """
    from composens.cli.recording import flight_recording
    from composens.lab.follow import StopFlag
    from composens.model.scenarios import capture_name, failure_at_ns

    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    scenarios = lab.choose_scenarios(topo, names)  # every name and step checked before anything runs
    out = state.output()
    stop = StopFlag()
    said: list[str] = []

    def stopping(signum: int, frame: object) -> None:
        said.append(signal.Signals(signum).name)
        stop.set()

    handlers = {sig: signal.signal(sig, stopping) for sig in (signal.SIGINT, signal.SIGTERM)}
    reports = []
    try:
        with flight_recording(lab, topo, captures, out) as recorder:  # leaving it writes the windows noted
            for scenario in scenarios:

                def on_verdict(verdict: Verdict, name: str = scenario.name) -> None:
                    out.scenario_verdict(name, verdict)
                    if recorder is not None and not verdict.passed:  # noted now: the ring keeps only `keep` s
                        recorder.note_failure(capture_name(name, verdict), failure_at_ns(verdict))

                report = lab.run_scenario(
                    topo,
                    scenario,
                    keep=keep,
                    fail_fast=fail_fast,
                    stop=lambda: f"stopped by {said[0]}" if said else None,
                    on_step=lambda step, name=scenario.name: out.scenario_step(name, step),  # type: ignore[misc]
                    on_verdict=on_verdict,
                )
                reports.append(report)
                if stop.is_set() or (fail_fast and not report.passed):
                    break
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    written = {name: str(path) for name, path in recorder.written.items()} if recorder is not None else {}
    reports = [report.with_captures(written) for report in reports]
    if junit:
        from composens.interop.junit import scenarios_junit

        out.data(scenarios_junit(reports, f"composens {topo.project}").encode(), junit)
    if timeline:
        from composens.show.timeline import timeline_svg

        out.data(timeline_svg(reports).encode(), timeline)
    out.scenario_reports(reports, fmt=str(format))
    if stop.is_set():
        left = "left as the last step left it (--keep)" if keep else "restored"
        out.message(f"composens: {reports[-1].stopped if reports else 'stopped'}; the lab was {left}")
        raise typer.Exit(ExitCode.INTERRUPTED)
    if any(not report.passed for report in reports):
        raise typer.Exit(ExitCode.FAILURE)
