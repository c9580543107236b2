"""The command line's frame: the Typer app and its groups, global options, and what every command shares.

Each command group is a module of its own beside this one (lab, netns, runtime, checks, graph, interop, extcap);
composens.cli.main joins them and maps every failure to one line and an exit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

from composens import __version__
from composens.cli.arguments import EXTRA_ARGS, service_args
from composens.model.errors import ComposensError, ConflictError
from composens.system.docker.compose import Compose
from composens.system.docker.options import ComposeOptions
from composens.system.world import WORLD

if TYPE_CHECKING:
    from click import Command, Context

    from composens.lab.lab import Lab
    from composens.model.report import LinkReport
    from composens.show.render import Output

RELINK_AFTER = ("start", "restart")
UNLINK_BEFORE = ("stop", "kill", "rm")


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
    raise typer.Exit(run_passthrough(state_of(ctx), command, list(ctx.args)))


def run_passthrough(app: App, command: str, args: list[str]) -> int:
    """Run a compose command unchanged; keep entries true around commands that start or stop containers."""
    if command not in RELINK_AFTER + UNLINK_BEFORE:
        return app.compose().run([command, *args])
    lab = app.lab()
    topo = lab.load()
    named = service_args(command, args)
    services = lab.select(topo, named)
    if named and command in RELINK_AFTER:
        # compose starts what they depend on too (start), and restarts what depends on them with restart: true
        # (restart, unless --no-deps): those have new namespaces to link and wire as well.
        start = command == "start"
        services = topo.started_with(services, dependencies=start, dependents=start or "--no-deps" not in args)
    out = app.output()
    if command in UNLINK_BEFORE and "--dry-run" not in args:
        out.entry_changes(lab.unlink(topo, services))
    code: int = app.compose().run([command, *args])
    if "--dry-run" not in args:
        report_link(out, lab.link(topo, services))
    return code


def report_link(out: Output, report: LinkReport, *, brief: bool = False) -> None:
    """Show what a run of linking did (brief: a summary on a terminal) and turn what failed into its exit code."""
    from composens.model.entries import Action

    if report.wired or report.execs or any(c.action is not Action.KEEP for c in report.entries):
        WORLD.changed("the lab")
    out.link_report(report, brief=brief)
    if report.conflicts:
        raise ConflictError(report.conflicts[0].detail)
    failed = [r for r in report.execs if not r.ok]
    if failed:  # the lab is wired; a command the file asked to run in it did not succeed
        raise ComposensError(f"exec {failed[0].service}: `{failed[0].command}` did not succeed (see above)")
    if report.not_ready:  # wired, but the kernel has not made these usable yet: their services are not ready
        count = len(report.not_ready)
        raise ComposensError(f"{count} wired interface{'s are' if count > 1 else ' is'} not usable yet (see above)")


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


def state_of(ctx: typer.Context) -> App:
    found = ctx.find_object(App)
    assert found is not None, "the group callback always sets the App"
    return found


class TableFormat(StrEnum):
    table = "table"
    json = "json"


ServicesArg = Annotated[list[str] | None, typer.Argument(help="Services (all when none are named).")]


VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose",
        help="Every entry, wiring command and exec output, as a pipe gets them (on a terminal: a summary by default).",
    ),
]


EndArg = Annotated[
    str, typer.Argument(help="SERVICE:IFNAME, an end of a declared link or LAN.", metavar="SERVICE:IFNAME")
]


def show_rows(state: App, names: list[str], fmt: str, *, seed_style: bool) -> None:
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
