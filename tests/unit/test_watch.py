"""`watch` outlives its engine, its systemd unit, and what `ps --netns` says of running containers it cannot reach
(issue 26, item 11). Pure logic: the engine and its event stream are stood in for."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from composens.lab import follow
from composens.lab.core import Paths
from composens.lab.lab import Lab, StopFlag
from composens.model import unit
from composens.model.declared import parse
from composens.model.errors import ConfigError, ConflictError, EngineError
from composens.model.report import LinkReport
from composens.plan import converge
from composens.plan.live import EMPTY
from composens.system.docker.options import ComposeOptions
from composens.system.run import units

PAIR = {
    "name": "lab",
    "x-composens": {"links": [{"endpoints": ["a:eth1", "b:eth1"]}]},
    "services": {"a": {"network_mode": "none"}, "b": {"network_mode": "none"}},
}


# ---------------------------------------------------------------- ps --netns: running, but not linked


def test_a_pair_of_running_containers_with_stale_entries_is_not_called_not_running() -> None:
    topo = parse(PAIR, source="f")
    stale = "running, not linked (stale netns entry)"
    found = converge.diff(topo, {}, {}, converge.Scope(frozenset(), absent={"a": stale, "b": stale}))
    assert [reason for _, reason in found.unwired_pairs] == [
        "a:eth1 <-> b:eth1: a, b running, not linked (stale netns entry)"
    ]
    one = converge.diff(topo, {"a": EMPTY}, {}, converge.Scope(frozenset({"a"}), absent={}))
    assert [reason for _, reason in one.unwired_pairs] == ["a:eth1 <-> b:eth1: b not running"]
    mixed = converge.Scope(frozenset(), absent={"a": stale})
    assert mixed.why_absent(["a", "b"], str) == "a running, not linked (stale netns entry); b not running"


# ---------------------------------------------------------------- watch: the engine goes away and comes back


class Engine:
    """Stands in for the engine: its event streams (short-lived processes) and whether it answers."""

    def __init__(self) -> None:
        self.streams = 0
        self.pings: list[bool] = []
        self.answers_after = 3  # the engine answers from the third ping on
        self.options = ComposeOptions(files=("docker-compose.yml",))
        self.docker = ["docker"]
        self.use_api = False

    def events(self, project: str, since: str) -> subprocess.Popen[str]:
        self.streams += 1
        # The first stream ends at once (dockerd stopped); the next ones stay open (it is back).
        seconds = "0" if self.streams == 1 else "30"
        return subprocess.Popen(["sleep", seconds], stdout=subprocess.PIPE, text=True)

    def engine_answers(self) -> bool:
        self.pings.append(len(self.pings) + 1 >= self.answers_after)
        return self.pings[-1]


def test_watch_waits_for_the_engine_saying_so_once_and_repairs_once_it_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(follow, "FIRST_ENGINE_WAIT", 0.01)
    monkeypatch.setattr(follow, "STOP_CHECK", 0.01)
    engine = Engine()
    lab = Lab(engine, Paths(tmp_path / "netns", tmp_path / "state"))  # type: ignore[arg-type]
    topo = parse(PAIR, source="f")
    passes: list[float] = []
    stop = StopFlag()

    def link(topo: Any, services: Any, **kw: Any) -> LinkReport:
        passes.append(time.monotonic())
        if len(passes) == 2:  # the pass after the engine came back: done, so stop watching
            stop.set()
        return LinkReport()

    monkeypatch.setattr(lab, "link", link)
    notes: list[str] = []
    errors: list[str] = []
    lab.watch(topo, {"a", "b"}, lambda report: None, errors.append, notes.append, stop)
    assert notes == [
        "the docker engine stopped answering; waiting for it to come back",
        "the docker engine is back; repairing the lab",
    ]
    assert engine.pings == [False, False, True]  # asked until it answered, then no more
    assert len(passes) == 2  # the first pass, and the repair once it was back
    assert engine.streams == 2  # events followed anew, before the repair (no start is missed)
    assert errors == []


def test_watch_stops_while_waiting_for_the_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(follow, "STOP_CHECK", 0.01)
    engine = Engine()
    engine.answers_after = 10**6  # never
    lab = Lab(engine, Paths(tmp_path / "netns", tmp_path / "state"))  # type: ignore[arg-type]
    monkeypatch.setattr(lab, "link", lambda *a, **kw: LinkReport())
    stop = StopFlag()
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    lab.watch(parse(PAIR, source="f"), {"a", "b"}, lambda r: None, lambda e: None, lambda n: None, stop)
    assert time.monotonic() - began < 5
    assert 1 <= len(engine.pings) <= 3  # backing off: 0.5 s, then 1 s, ...


def test_a_repair_that_fails_because_the_engine_left_says_nothing_of_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(follow, "FIRST_ENGINE_WAIT", 0.01)
    engine = Engine()
    engine.answers_after = 10**6
    lab = Lab(engine, Paths(tmp_path / "netns", tmp_path / "state"))  # type: ignore[arg-type]
    calls = []

    def link(*args: Any, **kw: Any) -> LinkReport:
        calls.append(1)
        raise EngineError("the docker daemon is not reachable: start it")

    monkeypatch.setattr(lab, "link", link)
    errors = follow_for_half_a_second(lab)
    assert calls
    assert errors == []


# ---------------------------------------------------------------- the unit


def test_the_unit_runs_this_watch_after_docker_and_restarts_it_on_failure() -> None:
    argv = [sys.executable, "-m", "composens", "-f", "/srv/my lab/compose.yml", "-p", "lab1", "watch", "r1"]
    text = unit.watch_unit("lab1", argv, "/srv/my lab", {"COMPOSE_PROFILES": "a,b", "HOME": "/root", "X": "1"})
    lines = text.splitlines()
    assert lines[0].startswith(unit.MARK)
    assert "After=docker.service network-online.target" in lines
    assert "Wants=docker.service" in lines
    assert "Restart=on-failure" in lines
    assert "RestartPreventExitStatus=2 3 4" in lines
    assert "WorkingDirectory=/srv/my lab" in lines
    assert 'Environment="COMPOSE_PROFILES=a,b"' in lines
    assert not any("HOME" in line for line in lines)  # only what chooses files, engine and host is carried
    assert f'ExecStart={sys.executable} -m composens -f "/srv/my lab/compose.yml" -p lab1 watch r1' in lines
    assert "WantedBy=multi-user.target" in lines
    assert unit.unit_name("lab1") == "composens-watch-lab1.service"


def test_the_unit_escapes_what_systemd_would_expand_and_refuses_line_breaks() -> None:
    text = unit.watch_unit("p", ["/usr/bin/python3", "100%", "$HOME", 'a"b'], "/srv/%h", {})
    assert 'ExecStart=/usr/bin/python3 "100%%" "$$HOME" "a\\"b"' in text.splitlines()
    assert "WorkingDirectory=/srv/%%h" in text.splitlines()
    with pytest.raises(ConfigError):
        unit.watch_unit("p", ["/usr/bin/python3", "a\nExecStartPre=/bin/false"], "/srv", {})


def test_units_are_written_whole_and_only_composens_own_are_replaced_or_removed(tmp_path: Path) -> None:
    text = unit.watch_unit("p", ["/usr/bin/python3"], "/srv", {})
    path = units.write(tmp_path, "composens-watch-p.service", text)
    assert path.read_text() == text
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert units.write(tmp_path, "composens-watch-p.service", text) == path  # its own: rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["composens-watch-p.service"]  # no temporary left
    foreign = tmp_path / "composens-watch-q.service"
    foreign.write_text("[Unit]\nDescription=someone's\n")
    with pytest.raises(ConflictError):
        units.write(tmp_path, foreign.name, text)
    with pytest.raises(ConflictError):
        units.remove(tmp_path, foreign.name)
    assert foreign.read_text() == "[Unit]\nDescription=someone's\n"
    assert units.remove(tmp_path, "composens-watch-p.service") == path
    assert not path.exists()
    assert units.remove(tmp_path, "composens-watch-p.service") is None


def test_the_unit_runs_watch_with_absolute_paths_and_the_chosen_host(tmp_path: Path) -> None:
    engine = Engine()
    engine.options = ComposeOptions(files=("lab.yml",), env_files=("x.env",), profiles=("p1",))
    lab = Lab(engine, Paths(tmp_path / "netns", tmp_path / "state"), host="h2")  # type: ignore[arg-type]
    argv = lab.watch_command(parse(PAIR, source="f"), ["a"], verbose=True)
    cwd = Path.cwd()
    assert argv == [
        sys.executable, "-m", "composens", "-f", str(cwd / "lab.yml"), "-p", "lab", "--profile", "p1",
        "--env-file", str(cwd / "x.env"), "--host", "h2", "watch", "a", "--verbose",
    ]  # fmt: skip


def test_an_engine_that_keeps_refusing_while_it_answers_is_said(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(follow, "ENGINE_GRACE", 0.0)
    monkeypatch.setattr(follow, "SETTLE_DELAY", 0.05)
    engine = Engine()
    engine.answers_after = 1  # it answers: the failure is its own, not a stop
    lab = Lab(engine, Paths(tmp_path / "netns", tmp_path / "state"))  # type: ignore[arg-type]
    monkeypatch.setattr(lab, "link", lambda *a, **kw: (_ for _ in ()).throw(EngineError("refused: no space left")))
    errors = follow_for_half_a_second(lab)
    assert errors[:1] == ["refused: no space left"]


def follow_for_half_a_second(lab: Lab) -> list[str]:
    """Run the lab's follow loop on an event stream that says nothing, stopped after 0.5 s; return what it said."""
    errors: list[str] = []
    stop = StopFlag()
    events = subprocess.Popen(["sleep", "30"], stdout=subprocess.PIPE, text=True)
    threading.Timer(0.5, stop.set).start()
    try:
        lab.follow(events, parse(PAIR, source="f"), {"a"}, lambda r: None, errors.append, stop, first_pass=True)
    finally:
        events.kill()
        events.wait()
    return errors
