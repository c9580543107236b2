"""The lab's own commands: up, down, ps --netns, plan, watch."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from composens.cli.app import ServicesArg, VerboseOption, app, report_link, show_rows, state_of
from composens.cli.arguments import EXTRA_ARGS, is_detached, service_args
from composens.model.errors import ComposeFailed
from composens.system.faults import crash_point

if TYPE_CHECKING:
    from composens.model.topology import Topology

PLAN_DIFFERS = 2  # `plan --exit-code`, as `terraform plan -detailed-exitcode` says it


@app.command(context_settings=EXTRA_ARGS)
def up(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the ip commands of the wiring; compose runs in dry-run mode.")
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Run compose up, then link every service's netns and wire the declared links. [compose up options] [SERVICE...]"""
    state = state_of(ctx)
    args = list(ctx.args)
    lab = state.lab()
    topo = lab.load()
    named = service_args("up", args)
    services = lab.select(topo, named)
    if named:  # compose starts what they depend on too, and restarts what depends on them with restart: true
        services = topo.started_with(services, dependencies="--no-deps" not in args, dependents=True)
    out = state.output()
    for warning in lab.project_warnings(topo):
        out.warning(warning)
    if dry_run:
        out.plan(*lab.plan(topo, services, full=False))
        raise typer.Exit(state.compose().run(["up", "--dry-run", *args]))
    lab.directory.ensure_root()
    lab.precheck(topo, services)
    compose = lab.compose_for_up(topo)
    moved = lab.moved_away(topo)
    if moved:  # placed on another host now: its containers here go (and its links with them)
        entries, code = lab.remove_moved(topo, moved)
        out.entry_changes(entries)
        if code != 0:
            raise ComposeFailed(f"docker compose rm of {', '.join(moved)} exited with {code}", exit_code=code)
    if topo.this_host is not None and not topo.services:
        out.message(f"composens: no service is placed on host {topo.this_host}: nothing to bring up here")
        report_link(out, lab.link(topo, set()), brief=not verbose)  # what this host still had of the lab goes
        return
    args = _placed_here(topo, args)
    for service in lab.unpause(topo, services):
        out.line(f"{service}: unpaused (compose up cannot start a paused container)")
    if not is_detached(args):
        followed = functools.partial(out.followed, brief=not verbose)
        raise typer.Exit(lab.run_attached(topo, compose, args, services, followed, out.warning))
    code = compose.run(["up", *args])
    if code != 0:
        raise ComposeFailed(f"docker compose up exited with {code}; nothing was linked", exit_code=code)
    crash_point("after-compose-up")
    try:
        with out.link_progress(live=not verbose) as progress:
            report = lab.link(topo, services, progress=progress)
        report_link(out, report, brief=not verbose)
    except KeyboardInterrupt:
        made = sorted(name for name, rec in lab.store.read().entries.items() if rec.project == topo.project)
        out.message(f"composens: compose up had finished; netns entries recorded so far: {', '.join(made) or 'none'}")
        raise


def _placed_here(topo: Topology, args: list[str]) -> list[str]:
    """compose up's arguments on one host of a multi-host lab: only the services placed there, unless named."""
    if topo.this_host is None or service_args("up", args):
        return args
    return [*args, *topo.services]


@app.command(context_settings=EXTRA_ARGS)
def down(ctx: typer.Context) -> None:
    """Remove host-side links and netns entries, then run compose down. [compose down options]"""
    state = state_of(ctx)
    args = list(ctx.args)
    lab = state.lab()
    topo = lab.load()
    out = state.output()
    if "--dry-run" not in args:
        lab.directory.ensure_root()
        for item in lab.unwire(topo):
            if isinstance(item, str):
                out.line(f"unwired: {item}")
            else:
                out.entry_changes([item])
        out.entry_changes(lab.unlink(topo))
    code = state.compose().run(["down", *args])
    if code != 0:
        raise ComposeFailed(f"docker compose down exited with {code}", exit_code=code)
    if "--dry-run" not in args and not service_args("down", args):
        lab.forget(topo)  # the containers are gone, and with them what composens made in their namespaces


@app.command(context_settings=EXTRA_ARGS)
def ps(
    ctx: typer.Context,
    netns: Annotated[bool, typer.Option("--netns", help="Show netns entries and links instead of compose ps.")] = False,
    format: Annotated[str | None, typer.Option("--format", help="With --netns: table or json.")] = None,
) -> None:
    """compose ps; with --netns, each container's netns entry, its status and its declared interfaces."""
    state = state_of(ctx)
    args = list(ctx.args)
    if not netns:
        raise typer.Exit(state.compose().run(["ps", *(["--format", format] if format else []), *args]))
    if format not in (None, "table", "json"):
        raise typer.BadParameter("with --netns, --format is table or json", param_hint="--format")
    show_rows(state, service_args("ps", args), format or "table", seed_style=False)


@app.command()
def watch(
    ctx: typer.Context,
    services: ServicesArg = None,
    verbose: VerboseOption = False,
    install_unit: Annotated[
        bool,
        typer.Option(
            "--install-unit",
            help="Instead of watching: write a systemd unit that runs this watch (after docker.service, restarted "
            "on failure), and enable and start it where systemd runs.",
        ),
    ] = False,
    remove_unit: Annotated[
        bool, typer.Option("--remove-unit", help="Stop, disable and remove the project's watch unit.")
    ] = False,
    unit_dir: Annotated[
        Path | None,
        typer.Option(
            "--unit-dir", help="Write the unit here, and leave systemctl alone (default /etc/systemd/system)."
        ),
    ] = None,
) -> None:
    """Keep entries and wiring true: repair on every container start, restart or death until Ctrl-C.

    When the docker engine stops, wait for it and repair everything once it is back.
    """
    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    chosen = lab.select(topo, services or [])
    out = state.output()
    if install_unit and remove_unit:
        raise typer.BadParameter("--install-unit or --remove-unit, not both")
    if unit_dir is not None and not (install_unit or remove_unit):
        raise typer.BadParameter("--unit-dir goes with --install-unit or --remove-unit", param_hint="--unit-dir")
    if install_unit:
        out.unit_change(lab.install_watch_unit(topo, services or [], verbose=verbose, directory=unit_dir))
        return
    if remove_unit:
        out.unit_change(lab.remove_watch_unit(topo, directory=unit_dir))
        return
    lab.directory.ensure_root()
    out.message(f"composens: watching project {topo.project}; Ctrl-C to stop")
    note = lambda text: out.message(f"composens: {text}")  # noqa: E731
    lab.watch(topo, chosen, functools.partial(out.repair, verbose=verbose), out.warning, note)
    out.message("composens: stopped watching")


@app.command()
def plan(
    ctx: typer.Context,
    services: ServicesArg = None,
    full: Annotated[bool, typer.Option("--full", help="The whole plan from scratch, not the changes.")] = False,
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Exit 2 when the lab differs from its file, 0 when it matches.")
    ] = False,
) -> None:
    """Print the commands that bring the lab to its file: + adds, - removes, ~ changes. Changes nothing."""
    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    lines, unwired = lab.plan(topo, lab.select(topo, services) if services else None, full=full)
    for warning in lab.project_warnings(topo):
        state.output().warning(warning)
    state.output().plan(lines, unwired)
    # What cannot be planned (a service not running, a pair whose end is not up) is a difference too.
    if exit_code and not full and (lines or unwired):
        raise typer.Exit(PLAN_DIFFERS)
