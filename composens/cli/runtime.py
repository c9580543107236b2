"""Run-time changes of a running lab: `link down|up`, `netem set|reset|show`, `capture`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from composens.cli.app import EndArg, ServicesArg, TableFormat, app, link_app, netem_app, report_link, state_of
from composens.cli.arguments import EXTRA_ARGS
from composens.model.errors import ConfigError

if TYPE_CHECKING:
    from composens.model.topology import Endpoint, Topology


@link_app.command("down")
def link_down(ctx: typer.Context, end: EndArg) -> None:
    """Set an interface down; it stays down across restarts until `composens link up`."""
    _hold(ctx, end, down=True)


@link_app.command("up")
def link_up(ctx: typer.Context, end: EndArg) -> None:
    """Set an interface up again (and put back the routes through it)."""
    _hold(ctx, end, down=False)


def _hold(ctx: typer.Context, text: str, *, down: bool) -> None:
    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    report_link(state.output(), lab.hold(topo, lab.endpoint(topo, text), down=down))


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

    state = state_of(ctx)
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
    report_link(state.output(), lab.set_conditions(topo, ends, conditions))


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
    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    if all_ends == (end is not None):
        raise typer.BadParameter("name one SERVICE:IFNAME, or --all")
    if end is None:
        report = lab.reset_all_conditions(topo)
    else:
        first = lab.endpoint(topo, end)
        report = lab.set_conditions(topo, [first], None)
    report_link(state.output(), report)


@netem_app.command("show")
def netem_show(
    ctx: typer.Context,
    services: ServicesArg = None,
    format: Annotated[TableFormat, typer.Option("--format", help="table, or json for scripts.")] = TableFormat.table,
) -> None:
    """Every lab interface with conditions, as the kernel has them now, and who set them."""
    state = state_of(ctx)
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

    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    netns_name, ifname = lab.capture(topo, what)
    argv = capturing.tcpdump_argv(
        netns_name, ifname, write=write, count=count, extra=list(ctx.args), to_terminal=sys.stdout.isatty()
    )
    capturing.run(argv)
