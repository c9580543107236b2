"""The record: checked when read back, never taken for empty when damaged, written 0600 whatever the umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from composens.model import entries
from composens.model.errors import ExitCode, RecordDamaged
from composens.model.record import Claim, EntryRecord, HubRecord, State
from composens.system.kernel import netns
from composens.system.kernel.netns import NetnsDirectory
from composens.system.record.store import StateStore

ID = "ab" * 32
ENTRY = {"project": "p", "service": "node1", "container": ID, "target": "/var/run/docker/netns/abc", "previous": None}


def full_state() -> State:
    state = State(entries={"node1": EntryRecord("p", "node1", ID, "/var/run/docker/netns/abc")})
    state.hubs["p"] = HubRecord("p", 4026532000, 4096)
    node = state.project("p").node("node1", "/var/run/docker/netns/abc")
    node.interfaces["eth1"] = Claim(2, "router1:eth1")
    node.interfaces["eth2"] = Claim(None, "@hub:node1.eth2")
    node.addresses["eth1"] = {"10.0.0.1/24", "2001:db8::1/64"}
    node.routes[4, "default", 0] = "default via 10.0.0.10"
    node.routes[6, "2001:db8:5::/64", 1024] = "2001:db8:5::/64 via 2001:db8::10"
    node.sysctls["6:eth1"] = {"accept_dad": "1", "disable_ipv6": "1"}
    state.project("p").down.add("node1:eth1")
    return state


def test_a_full_record_reads_back_as_written() -> None:
    state = full_state()
    again = State.from_json(state.to_json())
    assert again == state
    assert again.to_json() == state.to_json()


def write(store: StateStore, data: object) -> None:
    store.directory.mkdir(parents=True, exist_ok=True)
    store.path.write_text(json.dumps(data) if not isinstance(data, str) else data)


@pytest.mark.parametrize(
    "data",
    [
        "null",
        "[]",
        "{not json",
        {"version": 2, "entries": []},
        {"version": 2, "entries": {"node1": []}},
        {"version": 2, "entries": {"node1": None}},
        {"version": 2, "projects": {"p": {"nodes": []}}},
        {"version": 2, "projects": {"p": {"nodes": {"a": {"netns": "x", "interfaces": {"eth1": 5}}}}}},
        {"version": 3},
        {"version": 2, "entries": {"/abs/victim": ENTRY}},
        {"version": 2, "entries": {"../x": ENTRY}},
        {"version": 2, "entries": {"node1": {**ENTRY, "container": "-rf"}}},
        {"version": 2, "entries": {"node1": {**ENTRY, "target": "relative/path"}}},
        {"version": 2, "entries": {"node1": {**ENTRY, "target": "/var/run/../../etc"}}},
        {"version": 2, "entries": {"node1": {**ENTRY, "project": "UPPER case"}}},
        {"version": 2, "projects": {"p": {"nodes": {"a": {"netns": "x", "interfaces": {"e$(id)": {"index": 2}}}}}}},
        {"version": 2, "projects": {"p": {"nodes": {"a": {"netns": "x", "addresses": {"eth1": ["fe80::1%x/64"]}}}}}},
    ],
    ids=lambda d: str(d)[:40],
)
def test_a_record_it_cannot_trust_is_refused_and_kept(tmp_path: Path, data: object) -> None:
    store = StateStore(tmp_path / "state")
    write(store, data)
    original = store.path.read_bytes()
    with pytest.raises(RecordDamaged) as read_error:
        store.read()
    assert read_error.value.exit_code == ExitCode.RECORD == 8
    assert "composens netns prune --recover" in read_error.value.message
    with pytest.raises(RecordDamaged) as caught, store.locked():
        pytest.fail("a writer must not get a damaged record")
    moved = [p for p in store.directory.iterdir() if p.name.startswith("state.json.damaged-")]
    assert len(moved) == 1
    assert moved[0].read_bytes() == original  # its bytes kept, where the message says
    assert str(moved[0]) in caught.value.message
    # Until recovery every writer and reader is refused: nothing acts on an empty record by mistake.
    with pytest.raises(RecordDamaged), store.locked():
        pass
    with pytest.raises(RecordDamaged):
        store.read()
    with store.locked(recovering=True) as state:
        assert state == State(damaged=str(moved[0]))
        state.damaged = None
    assert store.read() == State()


def test_a_first_version_record_is_read_and_its_claims_are_taken_up(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    write(store, {"version": 1, "entries": {"node1": ENTRY}, "wired": {"p": ["node1:eth1", "host:up0"]}})
    state = store.read()
    assert state.entries["node1"].container == ID
    nodes = state.projects["p"].nodes
    assert nodes["node1"].netns == "/var/run/docker/netns/abc"
    assert nodes["node1"].interfaces == {"eth1": Claim()}
    assert nodes["host"].interfaces == {"up0": Claim()}


def test_the_record_is_private_whatever_the_umask(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    old = os.umask(0)
    try:
        with store.locked() as state:
            state.entries.update(full_state().entries)
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((store.directory / "lock").stat().st_mode) == 0o600


def test_an_entry_that_cannot_be_unlinked_stays_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = NetnsDirectory(tmp_path / "netns")
    directory.root.mkdir()
    sandbox = tmp_path / "sandbox"
    sandbox.write_text("")
    directory.create("node1", str(sandbox), entries.entry_mark("p", "node1", ID))
    state = State(entries={"node1": EntryRecord("p", "node1", ID, str(sandbox))})

    def refuse(name: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(directory, "remove", refuse)
    with pytest.raises(PermissionError):
        netns.unlink(directory, state, "p")
    assert "node1" in state.entries  # still owned: the next run can remove it


def test_advice_for_a_foreign_symlink_entry_is_rm_not_ip_netns_delete(tmp_path: Path) -> None:
    directory = NetnsDirectory(tmp_path)
    (tmp_path / "node1").symlink_to("/var/run/docker/netns/abc")
    (tmp_path / "real").write_text("")
    assert netns.not_ours(directory, "node1").endswith(f"(rm {tmp_path / 'node1'})")
    assert "ip netns delete" not in netns.not_ours(directory, "node1")
    assert netns.not_ours(directory, "real").endswith("(ip netns delete real)")


def test_every_service_name_the_parser_takes_reads_back_from_the_record() -> None:
    """Compose allows `_r1` and `.r1`: a lab of them must not lock every project out (exit 8) once recorded."""
    from composens.model import declared

    config = {
        "name": "p",
        "x-composens": {"netns_prefix": "lab", "links": [{"endpoints": ["_r1:eth1", ".r2:eth1"]}]},
        "services": {"_r1": {"network_mode": "none"}, ".r2": {"network_mode": "none"}},
    }
    topo = declared.parse(config, source="f")
    state = State()
    for name in topo.services:
        entry = topo.netns_name(name, 1, scaled=False)
        state.entries[entry] = EntryRecord("p", name, ID, f"/var/run/docker/netns/{entry}")
        state.project("p").node(name, f"/var/run/docker/netns/{entry}").interfaces["eth1"] = Claim(None, None)
    again = State.from_json(state.to_json())
    assert set(again.project("p").nodes) == {"_r1", ".r2"}
    assert {e.service for e in again.entries.values()} == {"_r1", ".r2"}


def test_an_entry_carries_the_mark_of_what_it_was_made_for(tmp_path: Path) -> None:
    directory = NetnsDirectory(tmp_path / "netns")
    directory.root.mkdir()
    directory.create("node1", "/var/run/docker/netns/abc", entries.entry_mark("p", "node1", ID))
    os.symlink("/var/run/docker/netns/abc", directory.path("mine"))  # a person's link to the same sandbox
    assert directory.mark("node1") == f"p node1 {ID}"
    assert directory.mark("mine") is None
    directory.replace("node1", "/var/run/docker/netns/def", entries.entry_mark("p", "node1", "cd" * 32))
    assert directory.mark("node1") == f"p node1 {'cd' * 32}"
