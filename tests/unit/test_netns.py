"""Entry status and the link/unlink reconcile, on a scratch directory with files standing in for namespaces."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from composens.model import entries
from composens.model.containers import Container
from composens.model.entries import Action, EntryOnDisk, Status, Wanted
from composens.model.record import Claim, EntryRecord, State
from composens.system.kernel import netns
from composens.system.kernel.netns import NetnsDirectory
from composens.system.record.store import StateStore

C1 = "c1" * 32  # container ids are 64 hex digits: the record checks them when it reads them back


def container(cid: str = C1, service: str = "node1", *, running: bool = True, mode: str = "none") -> Container:
    return Container(cid, f"p-{service}-1", "p", service, 1, running, 4242 if running else 0, "", mode)


@pytest.fixture
def lab(tmp_path: Path) -> tuple[NetnsDirectory, Path]:
    root = tmp_path / "netns"
    root.mkdir()
    sandboxes = tmp_path / "docker-netns"
    sandboxes.mkdir()
    return NetnsDirectory(root), sandboxes


def sandbox(folder: Path, name: str) -> tuple[str, int]:
    path = folder / name
    path.write_text("")
    return str(path), os.stat(path).st_ino


RECORD = EntryRecord("p", "node1", C1, "/var/run/docker/netns/abc")


@pytest.mark.parametrize(
    ("entry", "record", "alive", "current", "expected"),
    [
        (EntryOnDisk(True, RECORD.target, 7), RECORD, True, 7, Status.LINKED),
        (EntryOnDisk(True, RECORD.target, None), RECORD, True, 7, Status.STALE),  # restarted: sandbox gone
        (EntryOnDisk(True, RECORD.target, 5), RECORD, True, 7, Status.STALE),  # points at an old namespace
        (EntryOnDisk(True, RECORD.target, 7), RECORD, False, None, Status.STALE),  # stopped
        (EntryOnDisk(True, RECORD.target, 7), None, True, 7, Status.CONFLICT),  # not ours
        (EntryOnDisk(True, None, 9), RECORD, True, 7, Status.CONFLICT),  # `ip netns add` replaced ours
        (EntryOnDisk(False), None, True, 7, Status.UNLINKED),
        (EntryOnDisk(False), None, False, None, Status.NONE),
        (EntryOnDisk(False), RECORD, True, 7, Status.UNLINKED),
    ],
)
def test_classify(
    entry: EntryOnDisk, record: EntryRecord | None, alive: bool, current: int | None, expected: Status
) -> None:
    assert entries.classify("p", entry, record, container(running=alive), current) is expected


def test_classify_gone_container_and_other_project() -> None:
    entry = EntryOnDisk(True, RECORD.target, 7)
    assert entries.classify("p", entry, RECORD, None, None) is Status.STALE
    assert entries.classify("other", entry, RECORD, container(), 7) is Status.CONFLICT
    assert entries.classify("p", EntryOnDisk(False), None, container(mode="host"), None) is Status.NONE


def test_link_creates_keeps_replaces_and_removes(lab: tuple[NetnsDirectory, Path]) -> None:
    directory, sandboxes = lab
    state = State()
    target, inode = sandbox(sandboxes, "aaa")
    want = Wanted("node1", container(), target, inode)
    [created] = netns.link(directory, state, "p", [want], {"node1"})
    assert created.action is Action.CREATE
    assert os.readlink(directory.path("node1")) == target
    assert state.entries["node1"] == EntryRecord("p", "node1", C1, target)
    [kept] = netns.link(directory, state, "p", [want], {"node1"})
    assert kept.action is Action.KEEP
    # the container restarted: a new sandbox, the old one gone
    os.unlink(target)
    new_target, new_inode = sandbox(sandboxes, "bbb")
    [replaced] = netns.link(directory, state, "p", [Wanted("node1", container(), new_target, new_inode)], {"node1"})
    assert replaced.action is Action.REPLACE
    assert os.readlink(directory.path("node1")) == new_target
    assert not [p for p in directory.root.iterdir() if p.name.startswith(".")]
    # the container stopped: nothing wanted, the entry goes
    [removed] = netns.link(directory, state, "p", [], {"node1"})
    assert removed.action is Action.REMOVE
    assert not os.path.lexists(directory.path("node1"))
    assert state.entries == {}


def test_link_never_touches_a_foreign_entry(lab: tuple[NetnsDirectory, Path]) -> None:
    directory, sandboxes = lab
    foreign = directory.path("node1")
    foreign.write_text("made by ip netns add")
    target, inode = sandbox(sandboxes, "aaa")
    state = State()
    [change] = netns.link(directory, state, "p", [Wanted("node1", container(), target, inode)], {"node1"})
    assert change.action is Action.CONFLICT
    assert "was not made by composens" in change.detail
    assert foreign.read_text() == "made by ip netns add"
    assert netns.unlink(directory, state, "p") == []
    assert foreign.exists()


def test_link_refuses_a_name_another_project_owns(lab: tuple[NetnsDirectory, Path]) -> None:
    directory, sandboxes = lab
    target, inode = sandbox(sandboxes, "aaa")
    state = State()
    netns.link(directory, state, "first", [Wanted("node1", container(), target, inode)], {"node1"})
    other, other_inode = sandbox(sandboxes, "bbb")
    [change] = netns.link(directory, state, "second", [Wanted("node1", container("c9"), other, other_inode)], {"node1"})
    assert change.action is Action.CONFLICT
    assert "project first uses the name node1" in change.detail
    assert os.readlink(directory.path("node1")) == target


def test_unreachable_namespace_removes_our_entry_and_explains(lab: tuple[NetnsDirectory, Path]) -> None:
    directory, sandboxes = lab
    target, inode = sandbox(sandboxes, "aaa")
    state = State()
    netns.link(directory, state, "p", [Wanted("side", container(service="side"), target, inode)], {"side"})
    why = "it no longer shares the namespace of the container it joined"
    [change] = netns.link(directory, state, "p", [Wanted("side", container(service="side"), None, 9, why)], {"side"})
    assert change.action is Action.REMOVE
    assert change.detail == why
    assert not os.path.lexists(directory.path("side"))


def test_unlink_leaves_a_replaced_entry_alone(lab: tuple[NetnsDirectory, Path]) -> None:
    directory, sandboxes = lab
    target, inode = sandbox(sandboxes, "aaa")
    state = State()
    netns.link(directory, state, "p", [Wanted("node1", container(), target, inode)], {"node1"})
    directory.path("node1").unlink()
    os.symlink("/somewhere/else", directory.path("node1"))
    [change] = netns.unlink(directory, state, "p")
    assert change.action is Action.SKIP
    assert os.readlink(directory.path("node1")) == "/somewhere/else"
    assert state.entries == {}


def test_resolve_target_uses_the_owner_sandbox_only_when_shared(tmp_path: Path) -> None:
    own = container("c1", mode="none")
    assert netns.resolve_target(container(running=False), {})[2] == "not running"
    assert netns.resolve_target(container(mode="host"), {})[2] == "network_mode: host"
    # our own process stands in for the container: its netns is /proc/<pid>/ns/net
    me = Container("me", "me", "p", "me", 1, True, os.getpid(), f"/proc/{os.getpid()}/ns/net", "none")
    target, inode, why = netns.resolve_target(me, {})
    assert target == me.sandbox
    assert inode == os.stat("/proc/self/ns/net").st_ino
    assert why == ""
    joined = Container("j", "j", "p", "side", 1, True, os.getpid(), "", "container:me")
    assert netns.resolve_target(joined, {"me": me})[0] == me.sandbox
    elsewhere = Container("me", "me", "p", "me", 1, True, os.getpid(), str(tmp_path), "none")
    target, _, why = netns.resolve_target(joined, {"me": elsewhere})
    assert target is None
    assert "recreate it" in why
    assert own.netns_owner is None
    assert joined.netns_owner == "me"


def test_state_store_round_trip_and_atomic_save(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    with store.locked() as state:
        state.entries["n"] = RECORD
        state.project("p").node("host", "host").interfaces["up0"] = Claim(7, "a:x")
    again = store.read()
    assert again.entries == {"n": RECORD}
    assert again.projects["p"].nodes["host"].interfaces == {"up0": Claim(7, "a:x")}
    assert not (tmp_path / "state" / "state.tmp").exists()


def test_watch_tries_a_failed_pass_again_until_one_succeeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The follower's timing logic, with link() standing in: after an event, failed passes are retried."""
    import threading
    from types import SimpleNamespace

    from composens.lab import follow as labfollow
    from composens.lab import lab as lab_module
    from composens.model.declared import parse
    from composens.model.errors import WiringError
    from composens.system.docker.compose import Compose
    from composens.system.docker.options import ComposeOptions

    monkeypatch.setattr(labfollow, "SETTLE_DELAY", 0.05)
    monkeypatch.setattr(labfollow, "MAX_RETRY_DELAY", 0.2)
    core = lab_module.Lab(Compose(ComposeOptions()), lab_module.Paths(tmp_path / "netns", tmp_path / "state"))
    topo = parse({"name": "p", "services": {"a": {}}}, source="f")
    attempts: list[float] = []
    stop = lab_module.StopFlag()
    release = threading.Event()

    def link(topo: object, services: object) -> lab_module.LinkReport:
        attempts.append(time.monotonic())
        if len(attempts) == 2:  # not composens' own: saving the record on a full /run, say
            raise OSError(28, "No space left on device")
        if len(attempts) < 4:
            raise WiringError(f"attempt {len(attempts)} failed")
        return lab_module.LinkReport()

    def engine_events() -> Iterator[str]:
        yield '{"Action": "start"}\n'
        release.wait(10)  # the stream stays open, as docker events does, until the watch stops

    def reported(report: lab_module.LinkReport) -> None:
        stop.set()
        release.set()

    errors: list[str] = []
    monkeypatch.setattr(core, "link", link)
    core.follow(SimpleNamespace(stdout=engine_events()), topo, {"a"}, reported, errors.append, stop)  # type: ignore[arg-type]
    assert errors == ["attempt 1 failed", "unexpected OSError: [Errno 28] No space left on device", "attempt 3 failed"]
    assert len(attempts) == 4
    gaps = [later - earlier for earlier, later in pairwise(attempts)]
    assert gaps[1] > gaps[0] * 1.5, gaps  # retries back off
