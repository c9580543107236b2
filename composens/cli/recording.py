"""The flight recorder as commands use it: `composens test` (cli/checks.py), `composens scenario run` (cli/scenario.py).

    from composens.cli.recording import flight_recording

    with flight_recording(lab, topo, directory, out) as recorder:  # None: the file declares no x-composens.capture
        ...                                                       # run the checks, the scenario
        if recorder is not None:
            path = recorder.note_failure(name, at_ns)             # a failure named `name` at at_ns (time.time_ns()
                                                                  # clock, as packets are stamped; default: now)
    written = recorder.written if recorder is not None else {}    # {name: Path} of every window written

The recorder captures from the `with` on, keeps the last `keep` seconds within `memory` bytes (x-composens.capture,
or `settings` given here: targets, keep, memory), and for each failure noted writes DIR/NAME.pcapng holding the
packets from `keep` before it to AFTER_S (2 s) after it. Leaving the `with` waits for the windows still being
filled, writes them, closes every socket and warns of what the recorder noted (a target gone, a window cut short by
the memory bound). Nothing is written when no failure is noted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from composens.lab.capture import FlightRecorder
    from composens.lab.lab import Lab
    from composens.model.capture import RecorderSettings
    from composens.model.packets import CapturedPacket, Interface, InterfaceStatistics
    from composens.model.topology import Topology
    from composens.show.render import Output


@contextmanager
def flight_recording(
    lab: Lab, topo: Topology, directory: Path, out: Output, *, settings: RecorderSettings | None = None
) -> Iterator[FlightRecorder | None]:
    """Record the lab while the block runs; write each noted failure's window to DIRECTORY/NAME.pcapng."""
    recorder = lab.flight_recorder(topo, directory.absolute(), write_window, settings=settings)
    if recorder is None:
        yield None
        return
    recorder.start()
    try:
        yield recorder
    finally:
        try:
            recorder.stop()
        finally:
            for note in recorder.notes:
                out.warning(f"flight recorder: {note}")


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
