"""A capture of a lab (many interfaces, one stream of packets in time order) and the flight recorder built on it.

CaptureSession reads the packet sockets of composens.system.kernel.capture, merges the packets of every interface
into stamp order (ReorderBuffer, holding each packet 0.2 s for a later-read one with an earlier stamp) and keeps
the per-interface counts. RunTimeChanges.open_capture (runtime.py) makes one.

FlightRecorder captures in a thread while checks (`composens test`) or a scenario run, keeping only the last
`keep` seconds within `memory` bytes (PacketRing). The runner notes a failure with its name and time; the recorder
then keeps the window from `keep` before it to AFTER_S after it and, once that has passed, writes it through the
`write` function it was given (pcapng, by the command line: the lab does not know file formats). Nothing is written
when no failure is noted. Commands use it through composens.cli.recording.flight_recording (a `with`, which also
gives it the pcapng writer); beneath that, for `composens test` and `composens scenario run` alike:

    recorder = lab.flight_recorder(topo, directory, write)   # None without x-composens.capture (or settings=)
    recorder.start()
    ...  recorder.note_failure("r1 reaches r3", at_ns)        # at_ns: time.time_ns() of the failure (default now);
                                                              # returns the path the window will be written to
    written = recorder.stop()                                 # {name: path} of every window written

Memory: the ring holds at most `memory` bytes (each packet counted as its length plus 200 bytes of Python
overhead: 304 measured for a 106-byte frame); a window being completed holds references to the ring's packets plus
those of its AFTER_S seconds, themselves at most `memory` bytes, so the recorder holds at most twice `memory`, plus
the packets of the merge's HOLD_NS (0.2 s: ~10 MB at 160,000 packets a second), plus each interface's kernel ring
(4 MiB by default). bench/README.md has the figures under load.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from composens.model.capture import AFTER_S, CaptureTarget, RecorderSettings
from composens.model.packets import (
    CapturedPacket,
    Interface,
    InterfaceStatistics,
    PacketRing,
    ReorderBuffer,
    held_bytes,
)
from composens.system.kernel.capture import HOLD_NS, RING_RETIRE_MS, PacketCapture

READ_EVERY = 0.05  # s: the longest a read waits, so a stop or a window due is seen this soon
# A window is complete once every packet stamped before its end has been released: the ring hands blocks over
# within RING_RETIRE_MS, the merge holds them HOLD_NS more; this leaves room for a slow turn of the loop.
SETTLE_NS = HOLD_NS + RING_RETIRE_MS * 1_000_000 + 300_000_000

WindowWriter = Callable[[Path, Sequence[Interface], Sequence[CapturedPacket], Sequence[InterfaceStatistics]], None]


@dataclass
class CaptureSession:
    """An open capture of some lab interfaces: packets out in stamp order, the kernel's counts per interface."""

    targets: tuple[CaptureTarget, ...]
    capture: PacketCapture
    snaplen: int
    expression: str = ""
    started_ns: int = field(default_factory=time.time_ns)
    _merge: ReorderBuffer = field(default_factory=lambda: ReorderBuffer(HOLD_NS))

    def interfaces(self) -> list[Interface]:
        """Describe each target as a capture file names it (its lab name, what it faces, link type, filter)."""
        return [
            Interface(t.name, linktype, t.description, self.snaplen, self.expression or None)
            for t, linktype in zip(self.targets, self.capture.linktypes, strict=True)
        ]

    def read(self, timeout: float = READ_EVERY) -> list[CapturedPacket]:
        """Wait up to `timeout` s; return the packets whose turn has come, oldest first."""
        self._merge.push_many(self.capture.read(timeout))
        return self._merge.release(time.time_ns())

    def notes(self) -> list[str]:
        """Say what happened to targets since last asked: `r2:eth1: its container stopped`."""
        said = [f"{self.targets[n.interface_id].name}: {n.text}" for n in self.capture.notes]
        self.capture.notes.clear()
        return said

    @property
    def all_gone(self) -> bool:
        """Say whether every target went away for good (its container or hub no longer exists)."""
        return self.capture.all_gone

    @property
    def late(self) -> int:
        """Say how many packets came after a later-stamped one had been handed out (0: strictly in order)."""
        return self._merge.late

    def statistics(self) -> list[InterfaceStatistics]:
        """Each interface's counters since the start, as the kernel counted them (received, dropped)."""
        return self._statistics(self.capture.counters())

    def close(self) -> tuple[list[CapturedPacket], list[InterfaceStatistics]]:
        """Stop: every packet still held, oldest first, and each interface's counters (received, dropped)."""
        packets, counters = self.capture.close()
        self._merge.push_many(packets)
        return self._merge.drain(), self._statistics(counters)

    def _statistics(self, counters: list[tuple[int, int]]) -> list[InterfaceStatistics]:
        end_ns = time.time_ns()
        return [
            InterfaceStatistics(i, end_ns, received, dropped, self.started_ns, end_ns)
            for i, (received, dropped) in enumerate(counters)
        ]


@dataclass
class _Window:
    """A failure's window being filled: the ring's packets at the failure, then those up to its end."""

    name: str
    path: Path
    start_ns: int
    end_ns: int
    packets: list[CapturedPacket]
    bytes_held: int = 0
    truncated: bool = False  # its own bound was reached after the failure: later packets were left out

    def extend(self, packets: Sequence[CapturedPacket], limit: int) -> None:
        for packet in packets:
            if packet.timestamp_ns > self.end_ns:
                break
            size = held_bytes(packet)
            if self.bytes_held + size > limit:
                self.truncated = True
                break
            self.packets.append(packet)
            self.bytes_held += size


class FlightRecorder:
    """Capture while something runs; keep the last seconds; write the window around each failure noted."""

    def __init__(
        self,
        session: CaptureSession,
        settings: RecorderSettings,
        directory: Path,
        write: WindowWriter,
        *,
        after_s: float = AFTER_S,
    ) -> None:
        self.session = session
        self.settings = settings
        self.directory = directory
        self.after_ns = round(after_s * 1_000_000_000)
        self.ring = PacketRing(settings.keep_ns, settings.memory)
        self.written: dict[str, Path] = {}
        self.peak_bytes = 0  # the most the ring and the open windows held at once, as the ring counts bytes
        self.notes: list[str] = []
        self._write = write
        self._pending: list[_Window] = []
        self._paths: set[Path] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def start(self) -> None:
        """Start capturing in a thread of its own."""
        self._thread = threading.Thread(target=self._run, name="composens-recorder", daemon=True)
        self._thread.start()

    def note_failure(self, name: str, at_ns: int | None = None) -> Path:
        """Note a failure (now, or at `at_ns`): its window will be written; return the file it will be written to.

        `at_ns` is on time.time_ns()'s clock, as packets are stamped, and may be past: the window is then what the
        ring still holds of [at_ns - keep, at_ns + after] (the ring keeps the last `keep` seconds before now).
        """
        at = time.time_ns() if at_ns is None else at_ns
        with self._lock:
            path = self._path_for(name)
            start = at - self.settings.keep_ns
            window = _Window(name, path, start, at + self.after_ns, [])
            kept = self.ring.window(start, None)
            # The ring let young packets go for room: the window starts later than `keep` before the failure.
            window.truncated = self.ring.evicted_for_room > 0 and (not kept or kept[0].timestamp_ns > start)
            window.extend(kept, self.settings.memory)
            self._pending.append(window)
        return path

    def stop(self) -> dict[str, Path]:
        """Wait for the windows noted to be complete, write them, stop capturing; return {failure name: file}."""
        if self._thread is None:  # never started: nothing was captured, but the sockets are open
            self.session.close()
            return {}
        with self._lock:
            last_end = max((w.end_ns for w in self._pending), default=0)
        while self._thread.is_alive() and time.time_ns() < last_end + SETTLE_NS:
            time.sleep(READ_EVERY)
        self._stopping.set()
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        return dict(self.written)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                packets = self.session.read(READ_EVERY)
                self._take(packets, time.time_ns())
                self.notes += self.session.notes()
            rest, statistics = self.session.close()
            self._take(rest, None)
            self._finish(statistics)
        except BaseException as error:  # handed to stop()'s caller: a recorder that fails must not go unnoticed
            self._failure = error
            with contextlib.suppress(Exception):  # the first failure is the one to tell
                self.session.close()

    def _take(self, packets: list[CapturedPacket], now_ns: int | None) -> None:
        with self._lock:
            self.ring.add_many(packets)
            if now_ns is not None:
                self.ring.expire(now_ns)
            for window in self._pending:
                window.extend(packets, self.settings.memory)
            held = self.ring.bytes_held + sum(w.bytes_held for w in self._pending)
            self.peak_bytes = max(self.peak_bytes, held)
            due = [w for w in self._pending if now_ns is not None and now_ns >= w.end_ns + SETTLE_NS]
        if due:
            statistics = self.session.statistics()
            for window in due:
                self._flush(window, statistics)

    def _finish(self, statistics: list[InterfaceStatistics]) -> None:
        with self._lock:
            windows = list(self._pending)
        for window in windows:
            self._flush(window, statistics)

    def _flush(self, window: _Window, statistics: list[InterfaceStatistics]) -> None:
        """Write a complete window and let it go."""
        if window.truncated:
            self.notes.append(
                f"{window.name}: the recorder's memory bound ({self.settings.memory // 2**20} MiB) left packets "
                "out of its window; raise x-composens.capture.memory"
            )
        self._write(window.path, self.session.interfaces(), window.packets, statistics)
        with self._lock:
            self._pending.remove(window)
            self.written[window.name] = window.path

    def _path_for(self, name: str) -> Path:
        """A file named after the failure, distinct from every other window of this run."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:100] or "failure"
        path = self.directory / f"{stem}.pcapng"
        number = 2
        while path in self._paths:
            path = self.directory / f"{stem}-{number}.pcapng"
            number += 1
        self._paths.add(path)
        return path
