"""Run-time changes of a running lab: `link down|up`, `netem set|reset|show`, `capture`."""

from __future__ import annotations

import collections
import operator
import os
import shutil
import sys
from typing import IO, TYPE_CHECKING, Annotated

import click
import typer
from typer.core import TyperCommand

from composens.cli.app import EndArg, ServicesArg, TableFormat, app, link_app, netem_app, report_link, state_of
from composens.model.errors import ComposensError, ConfigError

# model.packets.DEFAULT_SNAPLEN, spelled here so that every command's start-up does not import the packet model
# (3 ms) for one number; tests/unit/test_capture_model.py holds the two equal.
DEFAULT_SNAPLEN = 262144

if TYPE_CHECKING:
    from composens.lab.capture import CaptureSession
    from composens.model.packets import CapturedPacket, InterfaceStatistics
    from composens.model.topology import Endpoint, Topology
    from composens.show.render import Output


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


class _FilterAfterDash(TyperCommand):
    """Keep what follows `--` apart: click hands it to the TARGET arguments, but it is the capture filter."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["capture filter"] = args[args.index("--") + 1 :] if "--" in args else []
        return super().parse_args(ctx, args)


@app.command(cls=_FilterAfterDash, context_settings={"help_option_names": ["-h", "--help"]})
def capture(
    ctx: typer.Context,
    targets: Annotated[
        list[str] | None,
        typer.Argument(help="SERVICE:IFNAME, or a LAN's name (its whole segment); any number.", metavar="TARGET..."),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every interface of the lab on this host.")] = False,
    write: Annotated[str | None, typer.Option("-w", help="Write pcapng to FILE (- for stdout).")] = None,
    count: Annotated[int | None, typer.Option("-c", min=1, help="Stop after COUNT packets.")] = None,
    duration: Annotated[str | None, typer.Option("--duration", help="Stop after D (10s, 500ms, 2m).")] = None,
    snaplen: Annotated[
        int, typer.Option("-s", min=64, max=DEFAULT_SNAPLEN, help="Bytes kept of each packet.")
    ] = DEFAULT_SNAPLEN,
    buffer: Annotated[int, typer.Option("-B", min=1, max=256, help="Kernel ring per interface, MiB.")] = 4,
) -> None:
    """Capture on lab interfaces at once: one pcapng stream, each packet under its interface's lab name.

    pcapng to FILE, or to stdout when it is a pipe (`composens capture --all | wireshark -k -i -`); on a terminal,
    one line per packet with the interface's name in front (tshark). Words after `--` are the filter, in tcpdump's
    syntax. Ctrl-C or SIGTERM end it, with every interface's counts.
    """
    from composens.model.capture import parse_duration

    words: list[str] = ctx.meta.get("capture filter", [])
    names = (targets or [])[: len(targets or []) - len(words)]
    if every == bool(names):
        raise typer.BadParameter("name the targets (SERVICE:IFNAME or a LAN), or --all")
    try:
        seconds = parse_duration(duration) if duration is not None else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--duration") from None
    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    to_terminal = write is None and sys.stdout.isatty()
    if to_terminal and shutil.which("tshark") is None:
        raise ComposensError(TSHARK_HINT)
    session = lab.open_capture(topo, None if every else names, expression=" ".join(words), snaplen=snaplen,
                               ring_blocks=buffer)  # fmt: skip
    capture_until_stopped(session, state.output(), write, to_terminal, count, seconds)


TSHARK_HINT = "a capture on a terminal shows its packets with tshark: apt-get install tshark, or write to a file (-w)"
# tshark's summary line, with the interface's name in front and absolute times.
TSHARK_COLUMNS = (
    'gui.column.format:"Interface","%Cus:frame.interface_name","Time","%At","Source","%s","Destination","%d",'
    '"Protocol","%p","Length","%L","Info","%i"'
)


def capture_until_stopped(
    session: CaptureSession, out: Output, write: str | None, to_terminal: bool, count: int | None,
    seconds: float | None,
) -> None:  # fmt: skip
    """Write the merged packets until Ctrl-C, SIGTERM, COUNT packets, D seconds, or every target is gone."""
    import signal
    import time

    from composens.lab.follow import StopFlag

    stop = StopFlag()
    handlers = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    sink = _Sink(session, write, to_terminal)
    names = ", ".join(t.name for t in session.targets)
    out.message(f"composens: capturing on {len(session.targets)} interface(s): {names}")
    deadline = time.monotonic() + seconds if seconds is not None else None
    try:
        while not (stop.is_set() or session.all_gone or (deadline is not None and time.monotonic() >= deadline)):
            sink.write(session.read(), count)
            for note in session.notes():
                out.message(f"composens: {note}")
            if count is not None and sink.written >= count:
                break
        rest, statistics = session.close()
        sink.write(rest, count)
        sink.finish(statistics)
    except BrokenPipeError:
        # The reader went away (Wireshark closed): stop quietly, and keep Python from failing to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    finally:
        session.close()  # a second close does nothing; this one is for a failure midway
        sink.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    for target, captured, counted in zip(session.targets, sink.per_interface, statistics, strict=True):
        out.message(
            f"composens: {target.name}: {captured} packets captured, {counted.received} received by the kernel, "
            f"{counted.dropped} dropped"
        )


class _Sink:
    """Where a capture's pcapng goes: a file, stdout (a pipe), or tshark showing it on the terminal."""

    def __init__(self, session: CaptureSession, write: str | None, to_terminal: bool) -> None:
        import subprocess

        from composens.interop.pcapng import PcapngWriter

        self.viewer: subprocess.Popen[bytes] | None = None
        self.stream: IO[bytes]
        if to_terminal:
            # Its own process group: Ctrl-C at the terminal stops us only; we end tshark by closing its input.
            self.viewer = subprocess.Popen(
                ["tshark", "-r", "-", "-l", "-n", "-o", TSHARK_COLUMNS],
                stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, process_group=0,
            )  # fmt: skip
            assert self.viewer.stdin is not None
            self.stream = self.viewer.stdin
        elif write is None or write == "-":
            self.stream = sys.stdout.buffer
        else:
            self.stream = open(write, "wb")  # noqa: SIM115 - closed by close()
        self.written = 0
        self.per_interface = [0] * len(session.targets)
        self.writer = PcapngWriter(self.stream)
        for interface in session.interfaces():
            self.writer.add_interface(interface)
        self.writer.flush()

    def write(self, packets: list[CapturedPacket], count: int | None) -> None:
        """Write packets (no more than COUNT in all), and push them to the reader."""
        if count is not None:
            packets = packets[: max(0, count - self.written)]
        if not packets:
            return
        self.writer.write_packets(packets)
        self.writer.flush()
        self.written += len(packets)
        for interface_id, count in collections.Counter(map(operator.itemgetter(0), packets)).items():
            self.per_interface[interface_id] += count

    def finish(self, statistics: list[InterfaceStatistics]) -> None:
        """Write each interface's counters at the end."""
        for counters in statistics:
            self.writer.write_statistics(counters)
        self.writer.flush()

    def close(self) -> None:
        import contextlib

        if self.stream is not sys.stdout.buffer:
            with contextlib.suppress(BrokenPipeError):  # tshark gone: what it had not read is lost with it
                self.stream.close()
        if self.viewer is not None:
            self.viewer.wait()
