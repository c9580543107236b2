"""The flight recorder's windows, on a made-up stream of packets: what a failure's file holds, and when none is written."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from composens.lab.capture import FlightRecorder
from composens.model.capture import RecorderSettings
from composens.model.packets import CapturedPacket, Interface, InterfaceStatistics

MS = 1_000_000


class MadeUpSession:
    """Stands in for a CaptureSession: a packet stamped now on every read, every 10 ms."""

    def __init__(self) -> None:
        self.closed = False

    def read(self, timeout: float = 0.05) -> list[CapturedPacket]:
        time.sleep(0.01)
        return [CapturedPacket(0, time.time_ns(), b"\0" * 60, 60)]

    def notes(self) -> list[str]:
        return []

    def interfaces(self) -> list[Interface]:
        return [Interface("r1:eth1")]

    def statistics(self) -> list[InterfaceStatistics]:
        return [InterfaceStatistics(0, time.time_ns(), 1, 0)]

    def close(self) -> tuple[list[CapturedPacket], list[InterfaceStatistics]]:
        self.closed = True
        return [], self.statistics()


Written = list[tuple[Path, list[int]]]


def recorder(keep_s: float, after_s: float, written: Written) -> tuple[FlightRecorder, MadeUpSession]:
    def write(path: Path, interfaces: Sequence[Interface], packets: Sequence[CapturedPacket], _: object) -> None:
        assert [i.name for i in interfaces] == ["r1:eth1"]
        written.append((path, [p.timestamp_ns for p in packets]))

    session = MadeUpSession()
    made = FlightRecorder(session, RecorderSettings(None, keep_s), Path("/caps"), write, after_s=after_s)  # type: ignore[arg-type]
    return made, session


def test_a_failure_gets_the_window_from_keep_before_it_to_after_it() -> None:
    written: Written = []
    made, session = recorder(0.3, 0.2, written)
    made.start()
    time.sleep(0.6)  # longer than keep: the ring has forgotten the first packets
    at = time.time_ns()
    path = made.note_failure("r1 reaches r3", at)
    assert made.stop() == {"r1 reaches r3": path}
    assert session.closed

    assert path == Path("/caps/r1_reaches_r3.pcapng")
    ((written_path, stamps),) = written
    assert written_path == path
    assert stamps == sorted(stamps)
    assert stamps[0] >= at - 300 * MS  # from keep before it (the ring holds older ones no more)...
    assert stamps[-1] <= at + 200 * MS  # ...to after it, nothing beyond
    assert any(s < at for s in stamps)
    assert any(s > at for s in stamps)


def test_nothing_is_written_when_no_failure_is_noted() -> None:
    written: Written = []
    made, session = recorder(0.3, 0.2, written)
    made.start()
    time.sleep(0.1)
    assert made.stop() == {}
    assert written == []
    assert session.closed


def test_each_failure_gets_a_file_of_its_own_named_after_it() -> None:
    written: Written = []
    made, _ = recorder(0.2, 0.05, written)
    made.start()
    time.sleep(0.1)
    paths = [made.note_failure(name) for name in ("a/b", "a b", "../..", "ok")]
    made.stop()
    assert paths == [
        Path("/caps/a_b.pcapng"),
        Path("/caps/a_b-2.pcapng"),
        Path("/caps/failure.pcapng"),
        Path("/caps/ok.pcapng"),
    ]
    assert sorted(p for p, _ in written) == sorted(paths)


def test_the_ring_stays_within_its_bound_and_says_so() -> None:
    written: Written = []
    made, _ = recorder(60, 0.05, written)
    made.settings = RecorderSettings(None, 60, 1024 * 1024)
    made.ring.max_bytes = 10 * (60 + 200)  # room for ten packets
    made.start()
    time.sleep(0.3)
    made.note_failure("late")
    made.stop()
    assert len(made.ring) <= 10
    assert made.ring.evicted_for_room > 0
    assert any("memory bound" in note for note in made.notes)


def test_a_recorder_stopped_without_being_started_closes_its_capture() -> None:
    written: Written = []
    made, session = recorder(0.3, 0.05, written)
    assert made.stop() == {}
    assert session.closed
    assert written == []


class MadeUpLab:
    """Stands in for the lab: hands out a recorder on a made-up session, when the settings declare one."""

    def __init__(self, written: Written) -> None:
        self.written = written
        self.session = MadeUpSession()
        self.asked: list[tuple[Path, RecorderSettings | None]] = []

    def flight_recorder(
        self, topo: object, directory: Path, write: object, *, settings: RecorderSettings | None = None
    ) -> FlightRecorder | None:
        self.asked.append((directory, settings))
        if settings is None:
            return None

        def keep(path: Path, interfaces: Sequence[Interface], packets: Sequence[CapturedPacket], _: object) -> None:
            self.written.append((path, [p.timestamp_ns for p in packets]))
            write(path, interfaces, packets, _)  # type: ignore[operator]

        return FlightRecorder(self.session, settings, directory, keep, after_s=0.05)  # type: ignore[arg-type]


class MadeUpOutput:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, text: str) -> None:
        self.warnings.append(text)


def test_flight_recording_writes_a_noted_failure_as_pcapng_and_stops_on_leaving(tmp_path: Path) -> None:
    from composens.cli.recording import flight_recording
    from composens.interop.pcapng import read_pcapng

    written: Written = []
    lab, out = MadeUpLab(written), MadeUpOutput()
    with flight_recording(lab, None, tmp_path / "caps", out, settings=RecorderSettings(None, 0.3)) as made:  # type: ignore[arg-type]
        assert made is not None
        time.sleep(0.1)
        path = made.note_failure("r1 reaches r3")
    assert lab.session.closed
    assert made.written == {"r1 reaches r3": path}
    assert path == (tmp_path / "caps" / "r1_reaches_r3.pcapng").absolute()
    contents = read_pcapng(path.read_bytes())
    assert [i.name for i in contents.interfaces] == ["r1:eth1"]
    assert [p.timestamp_ns for p in contents.packets] == written[0][1] != []
    assert not list((tmp_path / "caps").glob(".*.partial"))
    assert out.warnings == []


def test_flight_recording_without_a_recorder_yields_none_and_writes_nothing(tmp_path: Path) -> None:
    from composens.cli.recording import flight_recording

    written: Written = []
    lab, out = MadeUpLab(written), MadeUpOutput()
    with flight_recording(lab, None, tmp_path, out) as made:  # type: ignore[arg-type]
        assert made is None
    assert lab.asked == [(tmp_path.absolute(), None)]
    assert written == []
    assert list(tmp_path.iterdir()) == []


def test_a_failure_noted_late_gets_its_own_window_not_the_seconds_around_the_note() -> None:
    written: Written = []
    made, _ = recorder(1.0, 0.1, written)
    made.start()
    time.sleep(0.3)
    at = time.time_ns()
    time.sleep(0.4)  # judged later than it happened, as a scenario's expectation is
    made.note_failure("late verdict", at)
    made.stop()
    ((_, stamps),) = written
    assert stamps[0] < at < stamps[-1]
    assert stamps[-1] <= at + 100 * MS  # its own end, though packets up to the note (and beyond) were captured
