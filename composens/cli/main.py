"""The command line: docker compose's, plus netns linking and wiring. No logic lives here."""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from typer.core import TyperGroup

from composens import __version__, replay
from composens.model.errors import ComposeFailed, ComposensError, ConfigError, ConflictError, ExitCode
from composens.system.docker.compose import Compose, ComposeOptions
from composens.system.faults import crash_point

if TYPE_CHECKING:
    from click import Command, Context

    from composens.lab.lab import Lab
    from composens.model.report import LinkReport
    from composens.model.topology import Endpoint, Topology
    from composens.show.render import Output

# Options of compose commands that take a value, so their values are not taken for service names.
VALUE_OPTIONS = {
    "up": {"--attach", "--exit-code-from", "--no-attach", "--pull", "--scale", "-t", "--timeout", "--wait-timeout"},
    "down": {"--rmi", "-t", "--timeout"},
    "stop": {"-t", "--timeout"},
    "restart": {"-t", "--timeout"},
    "kill": {"-s", "--signal"},
    "start": {"--wait-timeout"},
    "rm": set(),
}
PLAN_DIFFERS = 2  # `plan --exit-code`, as `terraform plan -detailed-exitcode` says it
RELINK_AFTER = ("start", "restart")
UNLINK_BEFORE = ("stop", "kill", "rm")
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": ["-h", "--help"]}


def service_args(command: str, args: list[str]) -> list[str]:
    """Pick the SERVICE arguments out of a compose command's arguments."""
    takes_value = VALUE_OPTIONS.get(command, set())
    services: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in takes_value
        else:
            services.append(arg)
    return services


def is_detached(args: list[str]) -> bool:
    for arg in args:
        if arg in ("--detach", "--wait"):
            return True
        if arg.startswith("-") and not arg.startswith("--") and arg[1:].isalpha() and "d" in arg[1:]:
            return True
    return False


@dataclass
class App:
    options: ComposeOptions
    debug: bool
    host: str | None = None  # which host of a multi-host lab this is (--host, COMPOSENS_HOST)

    def compose(self) -> Compose:
        from composens.system.docker.configcache import ConfigCache

        return Compose(self.options, cache=ConfigCache())

    def lab(self) -> Lab:
        from composens.lab.lab import Lab

        return Lab(self.compose(), host=self.host)

    def output(self) -> Output:
        from composens.show.render import Output

        return Output()


class PassthroughGroup(TyperGroup):
    """A group that hands any command it does not know to docker compose."""

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        known = super().get_command(ctx, cmd_name)
        return known if known is not None else typer.main.get_command(_passthrough_app)


_passthrough_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@_passthrough_app.command(context_settings=EXTRA_ARGS, add_help_option=False)
def passthrough(ctx: typer.Context) -> None:
    """Any other docker compose command."""
    command = ctx.info_name or ""
    raise typer.Exit(_passthrough(_app(ctx), command, list(ctx.args)))


def _passthrough(app: App, command: str, args: list[str]) -> int:
    """Run a compose command unchanged; keep entries true around commands that start or stop containers."""
    if command not in RELINK_AFTER + UNLINK_BEFORE:
        return app.compose().run([command, *args])
    lab = app.lab()
    topo = lab.load()
    services = lab.select(topo, service_args(command, args))
    out = app.output()
    if command in UNLINK_BEFORE and "--dry-run" not in args:
        out.entry_changes(lab.unlink(topo, services))
    code: int = app.compose().run([command, *args])
    if "--dry-run" not in args:
        _report_link(out, lab.link(topo, services))
    return code


def _report_link(out: Output, report: LinkReport) -> None:
    from composens.system.kernel.netns import Action

    if report.wired or report.execs or any(c.action is not Action.KEEP for c in report.entries):
        replay.changed("the lab")
    out.link_report(report)
    if report.conflicts:
        raise ConflictError(report.conflicts[0].detail)
    failed = [r for r in report.execs if not r.ok]
    if failed:  # the lab is wired; a command the file asked to run in it did not succeed
        raise ComposensError(f"exec {failed[0].service}: `{failed[0].command}` did not succeed (see above)")


app = typer.Typer(
    cls=PassthroughGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "docker compose for network labs. Runs compose, links every service's network namespace into "
        "`ip netns`, and wires the veth links, addresses and routes declared under x-composens. "
        "Commands not listed here are passed to docker compose unchanged."
    ),
)
netns_app = typer.Typer(
    help="Link, show or unlink the netns entries of a running project (the seed's link-on/show/off)."
)
app.add_typer(netns_app, name="netns")
link_app = typer.Typer(help="Cut a link at one end (its peer loses carrier) and restore it.")
app.add_typer(link_app, name="link")
netem_app = typer.Typer(help="Link conditions at run time: delay, jitter, loss, corruption, duplication, rate.")
app.add_typer(netem_app, name="netem")


def _version(value: bool) -> None:
    if value:
        print(f"composens {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    file: Annotated[list[str] | None, typer.Option("-f", "--file", help="Compose configuration file(s).")] = None,
    project_name: Annotated[str | None, typer.Option("-p", "--project-name", help="Project name.")] = None,
    profile: Annotated[list[str] | None, typer.Option("--profile", help="Profile(s) to enable.")] = None,
    env_file: Annotated[list[str] | None, typer.Option("--env-file", help="Environment file(s).")] = None,
    project_directory: Annotated[str | None, typer.Option("--project-directory", help="Working directory.")] = None,
    ansi: Annotated[str | None, typer.Option("--ansi", help="Passed to compose.")] = None,
    progress: Annotated[str | None, typer.Option("--progress", help="Passed to compose.")] = None,
    parallel: Annotated[str | None, typer.Option("--parallel", help="Passed to compose.")] = None,
    compatibility: Annotated[bool, typer.Option("--compatibility", help="Passed to compose.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    host: Annotated[
        str | None,
        typer.Option(
            "--host", envvar="COMPOSENS_HOST", help="Which of x-composens.hosts this machine is (default: by address)."
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    extra: list[str] = []
    for flag, value in (("--ansi", ansi), ("--progress", progress), ("--parallel", parallel)):
        if value is not None:
            extra += [flag, value]
    if compatibility:
        extra.append("--compatibility")
    options = ComposeOptions(
        files=tuple(file or ()),
        project_name=project_name,
        profiles=tuple(profile or ()),
        env_files=tuple(env_file or ()),
        project_directory=project_directory,
        extra=tuple(extra),
    )
    ctx.obj = App(options, debug, host or None)


def _app(ctx: typer.Context) -> App:
    found = ctx.find_object(App)
    assert found is not None, "the group callback always sets the App"
    return found


@app.command(context_settings=EXTRA_ARGS)
def up(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the ip commands of the wiring; compose runs in dry-run mode.")
    ] = False,
) -> None:
    """Run compose up, then link every service's netns and wire the declared links. [compose up options] [SERVICE...]"""
    state = _app(ctx)
    args = list(ctx.args)
    lab = state.lab()
    topo = lab.load()
    services = lab.select(topo, service_args("up", args))
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
        _report_link(out, lab.link(topo, set()))  # what this host still had of the lab (its hub, say) goes
        return
    args = _placed_here(topo, args)
    if not is_detached(args):
        raise typer.Exit(lab.run_attached(topo, compose, args, services, out.link_report, out.warning))
    code = compose.run(["up", *args])
    if code != 0:
        raise ComposeFailed(f"docker compose up exited with {code}; nothing was linked", exit_code=code)
    crash_point("after-compose-up")
    try:
        _report_link(out, lab.link(topo, services))
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
    state = _app(ctx)
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


class TableFormat(StrEnum):
    table = "table"
    json = "json"


@app.command(context_settings=EXTRA_ARGS)
def ps(
    ctx: typer.Context,
    netns: Annotated[bool, typer.Option("--netns", help="Show netns entries and links instead of compose ps.")] = False,
    format: Annotated[str | None, typer.Option("--format", help="With --netns: table or json.")] = None,
) -> None:
    """compose ps; with --netns, each container's netns entry, its status and its declared interfaces."""
    state = _app(ctx)
    args = list(ctx.args)
    if not netns:
        raise typer.Exit(state.compose().run(["ps", *(["--format", format] if format else []), *args]))
    if format not in (None, "table", "json"):
        raise typer.BadParameter("with --netns, --format is table or json", param_hint="--format")
    _show_rows(state, service_args("ps", args), format or "table", seed_style=False)


def _show_rows(state: App, names: list[str], fmt: str, *, seed_style: bool) -> None:
    lab = state.lab()
    topo = lab.load()
    status = lab.status(topo, lab.select(topo, names))
    out = state.output()
    if fmt == "json":
        out.netns_json(status.rows)
    elif seed_style:
        out.show(status.rows)
    else:
        out.netns_table(status)


ServicesArg = Annotated[list[str] | None, typer.Argument(help="Services (all when none are named).")]


@netns_app.command("link")
def netns_link(ctx: typer.Context, services: ServicesArg = None) -> None:
    """Link (or repair) the entries and wiring of running containers: the seed's link-on."""
    state = _app(ctx)
    lab = state.lab()
    topo = lab.load()
    _report_link(state.output(), lab.link(topo, lab.select(topo, services or [])))


@netns_app.command("show")
def netns_show(
    ctx: typer.Context,
    services: ServicesArg = None,
    format: Annotated[TableFormat | None, typer.Option("--format", help="json for scripts.")] = None,
) -> None:
    """Show each entry and where it points: the seed's link-show."""
    _show_rows(_app(ctx), services or [], str(format or "text"), seed_style=True)


@netns_app.command("unlink")
def netns_unlink(ctx: typer.Context, services: ServicesArg = None) -> None:
    """Remove the entries composens made: the seed's link-off."""
    state = _app(ctx)
    lab = state.lab()
    topo = lab.load()
    state.output().entry_changes(lab.unlink(topo, lab.select(topo, services or [])))


@netns_app.command("prune")
def netns_prune(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; remove nothing.")] = False,
    recover: Annotated[
        bool,
        typer.Option(
            "--recover", help="Rebuild a damaged record from the entries, the engine and the interfaces' marks."
        ),
    ] = False,
) -> None:
    """Remove entries, host-side links and hubs composens made that no running project owns, in every project."""
    state = _app(ctx)
    out = state.output()
    lab = state.lab()
    if recover:
        for line in lab.recover():
            out.line(line)
    verb = "would remove" if dry_run else "removed"
    for item in lab.prune(dry_run=dry_run):
        out.line(f"{verb} {item.kind} {item.name} (project {item.project}): {item.reason}")


@app.command()
def watch(ctx: typer.Context, services: ServicesArg = None) -> None:
    """Keep entries and wiring true: repair on every container start, restart or death until Ctrl-C."""
    state = _app(ctx)
    lab = state.lab()
    topo = lab.load()
    chosen = lab.select(topo, services or [])
    lab.directory.ensure_root()
    out = state.output()
    out.message(f"composens: watching project {topo.project}; Ctrl-C to stop")
    lab.watch(topo, chosen, out.repair, out.warning)
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
    state = _app(ctx)
    lab = state.lab()
    topo = lab.load()
    lines, unwired = lab.plan(topo, lab.select(topo, services) if services else None, full=full)
    for warning in lab.project_warnings(topo):
        state.output().warning(warning)
    state.output().plan(lines, unwired)
    # What cannot be planned (a service not running, a pair whose end is not up) is a difference too.
    if exit_code and not full and (lines or unwired):
        raise typer.Exit(PLAN_DIFFERS)


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

    state = _app(ctx)
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


EndArg = Annotated[
    str, typer.Argument(help="SERVICE:IFNAME, an end of a declared link or LAN.", metavar="SERVICE:IFNAME")
]


@link_app.command("down")
def link_down(ctx: typer.Context, end: EndArg) -> None:
    """Set an interface down; it stays down across restarts until `composens link up`."""
    _hold(ctx, end, down=True)


@link_app.command("up")
def link_up(ctx: typer.Context, end: EndArg) -> None:
    """Set an interface up again (and put back the routes through it)."""
    _hold(ctx, end, down=False)


def _hold(ctx: typer.Context, text: str, *, down: bool) -> None:
    state = _app(ctx)
    lab = state.lab()
    topo = lab.load()
    _report_link(state.output(), lab.hold(topo, lab.endpoint(topo, text), down=down))


@netem_app.command("set")
def netem_set(
    ctx: typer.Context,
    end: EndArg,
    delay: Annotated[str | None, typer.Option(help="e.g. 40ms")] = None,
    jitter: Annotated[str | None, typer.Option(help="e.g. 5ms (needs --delay)")] = None,
    loss: Annotated[str | None, typer.Option(help="e.g. 1%")] = None,
    corrupt: Annotated[str | None, typer.Option(help="e.g. 0.1%")] = None,
    duplicate: Annotated[str | None, typer.Option(help="e.g. 1%")] = None,
    reorder: Annotated[str | None, typer.Option(help="e.g. 25% (needs --delay)")] = None,
    rate: Annotated[str | None, typer.Option(help="e.g. 10mbit")] = None,
    limit: Annotated[int | None, typer.Option(help="packets queued")] = None,
    both: Annotated[bool, typer.Option("--both", help="The same on the peer end (both directions).")] = False,
) -> None:
    """Replace an interface's egress conditions at run time; they survive restarts until `netem reset`."""
    from composens.model.conditions import ConditionsError
    from composens.model.conditions import parse as parse_conditions

    state = _app(ctx)
    lab = state.lab()
    topo = lab.load()
    first = lab.endpoint(topo, end)
    given: dict[str, str | int | None] = {"delay": delay, "jitter": jitter, "loss": loss, "corrupt": corrupt}
    given |= {"duplicate": duplicate, "reorder": reorder, "rate": rate, "limit": limit}
    try:
        conditions = parse_conditions({k: v for k, v in given.items() if v is not None})
    except ConditionsError as e:
        raise ConfigError(f"netem set: {e}") from None
    ends = [first, *([_peer(topo, first)] if both else [])]
    _report_link(state.output(), lab.set_conditions(topo, ends, conditions))


def _peer(topo: Topology, end: Endpoint) -> Endpoint:
    for pair in topo.pairs():
        if end in (pair.a, pair.b):
            return pair.b if end == pair.a else pair.a
    tunnel = next(t for t in topo.tunnels if t.end == end)  # lab.endpoint accepted only declared ends
    raise ConfigError(
        f"{topo.source}: {end}'s peer {tunnel.peer} is on host {tunnel.remotes[0].name}: set its end there"
    )


@netem_app.command("reset")
def netem_reset(
    ctx: typer.Context,
    end: Annotated[str | None, typer.Argument(help="SERVICE:IFNAME", metavar="SERVICE:IFNAME")] = None,
    all_ends: Annotated[bool, typer.Option("--all", help="Every interface set at run time.")] = False,
) -> None:
    """Put an interface's conditions back to what the file declares (nothing, where it declares nothing)."""
    state = _app(ctx)
    lab = state.lab()
    topo = lab.load()
    if all_ends == (end is not None):
        raise typer.BadParameter("name one SERVICE:IFNAME, or --all")
    if end is None:
        report = lab.reset_all_conditions(topo)
    else:
        first = lab.endpoint(topo, end)
        report = lab.set_conditions(topo, [first], None)
    _report_link(state.output(), report)


@netem_app.command("show")
def netem_show(
    ctx: typer.Context,
    services: ServicesArg = None,
    format: Annotated[TableFormat, typer.Option("--format", help="table, or json for scripts.")] = TableFormat.table,
) -> None:
    """Every lab interface with conditions, as the kernel has them now, and who set them."""
    state = _app(ctx)
    lab = state.lab()
    topo = lab.load()
    state.output().conditions(lab.conditions(topo, lab.select(topo, services or [])), fmt=str(format))


@app.command(context_settings=EXTRA_ARGS)
def capture(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(help="SERVICE:IFNAME, or a LAN's name (the whole segment).")],
    write: Annotated[str | None, typer.Option("-w", help="Write pcap to FILE (- for stdout).")] = None,
    count: Annotated[int | None, typer.Option("-c", help="Stop after COUNT packets.")] = None,
) -> None:
    """tcpdump on a lab interface in its namespace: pcap to a file or a pipe, readable lines on a terminal.

    Arguments after `--` go to tcpdump (a filter, say).
    """
    from composens.system.kernel import capture as capturing

    state = _app(ctx)
    lab = state.lab()
    topo = lab.load()
    netns_name, ifname = lab.capture(topo, what)
    argv = capturing.tcpdump_argv(
        netns_name, ifname, write=write, count=count, extra=list(ctx.args), to_terminal=sys.stdout.isatty()
    )
    capturing.run(argv)


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    svg = "svg"
    png = "png"


@app.command()
def graph(
    ctx: typer.Context,
    format: Annotated[
        GraphFormat, typer.Option("--format", help="mermaid, dot (Graphviz source), or svg/png (drawn by Graphviz).")
    ] = GraphFormat.mermaid,
    output: Annotated[str | None, typer.Option("-o", "--output", help="Write to FILE instead of stdout.")] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Draw the running lab: down, missing and drifted marked.")
    ] = False,
) -> None:
    """Draw the lab: one box per service with a row per interface, links from row to row."""
    from composens.show import picture

    state = _app(ctx)
    lab = state.lab()
    topo = lab.load(whole=not live)  # a lab over several hosts is drawn whole; --live draws this host's part
    overlay = lab.overlay(topo) if live else None
    text = picture.mermaid(topo, overlay) if format is GraphFormat.mermaid else picture.dot(topo, overlay)
    if format in (GraphFormat.svg, GraphFormat.png):
        from composens.show import graphviz

        state.output().data(graphviz.render(text, str(format)), output)
    else:
        state.output().data((text + "\n").encode(), output)


@app.command("import")
def import_topology(
    ctx: typer.Context,
    topology_file: Annotated[str, typer.Argument(help="A containerlab topology (*.clab.yml).", metavar="TOPOLOGY")],
    output: Annotated[str | None, typer.Option("-o", "--output", help="Write to FILE instead of stdout.")] = None,
    no_mgmt: Annotated[
        bool, typer.Option("--no-mgmt", help="No management network: every node gets network_mode: none.")
    ] = False,
) -> None:
    """Write a containerlab topology as a compose file with x-composens links, LANs, addresses and routes."""
    from composens.interop import clab

    state = _app(ctx)
    doc = _read_topology(topology_file)
    converted = clab.import_topology(
        doc,
        source=topology_file,
        topology_dir=os.path.dirname(os.path.abspath(topology_file)),
        output_dir=os.path.dirname(os.path.abspath(output or "compose.yaml")),
        mgmt=not no_mgmt,
    )
    out = state.output()
    for warning in converted.warnings:
        out.warning(warning)
    header = f"imported by composens from {os.path.basename(topology_file)}"
    out.data(clab.dump(converted, header=header).encode(), output)


def _read_topology(path: str) -> object:
    import yaml

    from composens.interop import clab

    try:
        with open(path, encoding="utf-8") as f:
            return clab.load(f.read())
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"{path}: not YAML{line}: {problem}") from None


class ExportFormat(StrEnum):
    containerlab = "containerlab"


@app.command("export", context_settings=EXTRA_ARGS)
def export_lab(
    ctx: typer.Context,
    format: Annotated[
        ExportFormat | None, typer.Option("--format", help="containerlab: a topology containerlab accepts.")
    ] = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="Write to FILE instead of stdout.")] = None,
) -> None:
    """Write the lab as a containerlab topology (--format containerlab); without --format, compose's export."""
    from composens.interop import clab
    from composens.model import topology

    state = _app(ctx)
    if format is None:
        raise typer.Exit(state.compose().run(["export", *(["--output", output] if output else []), *ctx.args]))
    compose = state.compose()
    config = compose.config()  # all of it: the cached essentials lack images, commands and volumes
    topo = topology.parse(topology.essentials(config), source=compose.options.source_label())
    converted = clab.export_topology(config, topo, output_dir=os.path.dirname(os.path.abspath(output or "x")))
    out = state.output()
    for warning in converted.warnings:
        out.warning(warning)
    out.data(clab.dump(converted, header=f"exported by composens from project {topo.project}").encode(), output)


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI and map every failure to one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("COMPOSENS_DEBUG") == "1"
    command = typer.main.get_command(app)
    try:
        # standalone: click itself reports usage errors (exit 2) and handles --help and Exit.
        command.main(args=args, prog_name="composens", standalone_mode=True)
    except ComposensError as e:
        if debug:
            traceback.print_exc()
        print(f"composens: error: {e.message}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print(
            "composens: interrupted; `composens up -d` finishes the lab, `composens down` removes it", file=sys.stderr
        )
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as e:
        if debug:
            traceback.print_exc()
        print(f"composens: error: unexpected {type(e).__name__}: {e} (run with --debug for details)", file=sys.stderr)
        sys.exit(ExitCode.FAILURE)
    sys.exit(ExitCode.OK)
