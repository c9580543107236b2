"""wiring's bookkeeping against a kernel modelled by changes.simulate: what the record says after edits,
failures and rollbacks. The kernel's own answers are proven in tests/integration; this is the logic around them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from composens.model import declared, hosts, topology
from composens.model.errors import WiringError
from composens.model.record import Claim, ProjectRecord
from composens.model.topology import HOST, HUB, Endpoint
from composens.plan import changes as ch
from composens.plan import converge, live
from composens.plan.changes import Change
from composens.plan.live import LiveRoute
from composens.system.kernel import reading, wiring


class Kernel:
    """Namespaces by node; each batch line is a change applied with changes.simulate."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ns: dict[str, live.LiveNamespace] = {}
        self.lines: dict[str, Change] = {}
        self.node_of: dict[str | None, str] = {None: HOST}
        self.refuse: Callable[[Change], str | None] = lambda change: None
        self.log: list[str] = []
        monkeypatch.setattr(wiring, "run_batch", self.run_batch)
        monkeypatch.setattr(wiring, "read_all", lambda targets, *, qdiscs=False: {n: self.read(n) for n in targets})
        monkeypatch.setattr(
            wiring, "read_target", lambda target, *, qdiscs=False: self.read(self.node_of[target.netns])
        )
        monkeypatch.setattr(ch, "batch_line", self.batch_line)
        monkeypatch.setattr(wiring._Run, "_write_sysctls", lambda run, node, changes: self.write_sysctls(node, changes))

    def read(self, node: str) -> live.LiveNamespace:
        return self.ns.get(node, live.EMPTY)

    def batch_line(self, change: Change, netns_of: Any) -> str:
        token = f"L{len(self.lines)}"
        self.lines[token] = change
        return token

    def run_batch(self, netns: str | None, lines: list[str], tool: str = "ip", *, read_back: bool = False) -> Any:
        node = self.node_of[netns]
        failures: dict[int, str] = {}
        for i, token in enumerate(lines):
            change = self.lines[token]
            refused = self.refuse(change)
            if refused:
                failures[i] = refused
                break
            self.ns = ch.simulate(self.ns, change)
            self.log.append(f"{change.sign} {ch.command(change, lambda n: None if n == HOST else n)}")
        result = wiring.BatchResult(failures, not failures)
        if read_back:
            ns = self.read(node)
            if tool == "ip":
                result.after = replace(ns, qdiscs={}, promoting=frozenset())  # ip's read has no qdiscs
            else:
                result.qdiscs = dict(ns.qdiscs)
        return result

    def write_sysctls(self, node: str, changes: list[ch.WriteSysctls]) -> list[tuple[ch.WriteSysctls, Any]]:
        done: list[tuple[ch.WriteSysctls, Any]] = []
        for change in changes:
            self.ns = ch.simulate(self.ns, change)
            done.append((change, tuple((key, "1") for key, _ in change.values if key != "promote_secondaries")))
        return done

    def targets(self, topo: topology.Topology) -> dict[str, reading.Target]:
        found = {HOST: reading.HOST_TARGET}
        for service in topo.services:
            found[service] = reading.Target(service, f"/x/{service}", f"/x/{service}")
            self.node_of[service] = service
        for node in found:
            self.ns.setdefault(node, live.EMPTY)
        return found

    def run(self, topo: topology.Topology, record: ProjectRecord, **scope: Any) -> list[str]:
        targets = self.targets(topo)
        self.log = []
        wiring.converge_lab(
            topo, converge.Scope(frozenset(targets), qdiscs=True, **scope), targets, record, lambda: None
        )
        return self.log

    def plan(self, topo: topology.Topology, record: ProjectRecord, **scope: Any) -> converge.Diff:
        targets = self.targets(topo)
        records = {n: record.nodes[n] for n in targets if n in record.nodes}
        found_scope = converge.Scope(frozenset(targets), qdiscs=True, **scope)
        return converge.diff(topo, {n: self.read(n) for n in targets}, records, found_scope)


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    return Kernel(monkeypatch)


def pair(**a_extra: Any) -> dict[str, Any]:
    return {
        "name": "p",
        "x-composens": {"links": [{"endpoints": ["a:a_b", "b:b_a"]}]},
        "services": {
            "a": {"network_mode": "none", "x-composens": {"addresses": {"a_b": ["10.0.0.1/24"]}, **a_extra}},
            "b": {"network_mode": "none", "x-composens": {"addresses": {"b_a": ["10.0.0.2/24"]}}},
            "c": {"network_mode": "none"},
        },
    }


def parse(config: dict[str, Any]) -> topology.Topology:
    return declared.parse(config, source="f")


def test_conditions_stay_known_across_edits_that_only_ip_carries_out(kernel: Kernel) -> None:
    config = pair()
    config["x-composens"]["links"][0]["netem"] = {"delay": "10ms"}
    record = ProjectRecord()
    kernel.run(parse(config), record)
    edited = copy.deepcopy(config)
    edited["services"]["a"]["x-composens"]["routes"] = ["30.0.0.0/24 via 10.0.0.2"]
    assert kernel.run(parse(edited), record) == ["+ ip -n a route add 30.0.0.0/24 via 10.0.0.2"]
    assert record.nodes["a"].qdiscs == {"a_b": {"delay": "10ms"}}
    del edited["x-composens"]["links"][0]["netem"]
    assert kernel.run(parse(edited), record) == ["- tc -n a qdisc del dev a_b root", "- tc -n b qdisc del dev b_a root"]
    assert kernel.plan(parse(edited), record).changes == []


def test_a_rollback_takes_nothing_a_person_made_for_composens(kernel: Kernel) -> None:
    record = ProjectRecord()
    kernel.run(parse(pair()), record)
    kernel.ns["a"] = live.add_address(kernel.ns["a"], "a_b", "10.0.0.99/24")
    kernel.ns["a"] = live.put_route(kernel.ns["a"], LiveRoute(4, "40.0.0.0/24", "10.0.0.2", "a_b", 0))
    before = copy.deepcopy(record)
    moved = copy.deepcopy(pair())
    moved["x-composens"]["links"][0]["endpoints"] = ["a:a_b", "c:c_a"]
    moved["services"]["c"]["x-composens"] = {"addresses": {"c_a": ["10.0.0.3/24"]}}
    del moved["services"]["b"]["x-composens"]
    kernel.refuse = lambda change: "boom" if isinstance(change, ch.AddAddress) and change.node == "c" else None
    with pytest.raises(WiringError, match="undid what this run had done: the lab is as it was before"):
        kernel.run(parse(moved), record)
    kernel.refuse = lambda change: None
    assert record.nodes["a"].addresses == before.nodes["a"].addresses
    assert record.nodes["a"].routes == before.nodes["a"].routes == {}
    assert kernel.run(parse(pair()), record) == []  # the person's address and route stay theirs
    assert [str(d) for d in kernel.plan(parse(pair()), record).drift] == [
        "extra address 10.0.0.99/24 on a_b (not made by composens)",
        "extra route 40.0.0.0/24 via 10.0.0.2 dev a_b metric 0 (not made by composens)",
    ]


@pytest.mark.parametrize("route", ["0.0.0.0/0 via 10.0.0.2", "default via 10.0.0.2"])
def test_a_default_route_reaches_a_fixed_point_whatever_its_spelling(kernel: Kernel, route: str) -> None:
    record = ProjectRecord()
    config = pair(routes=[route])
    kernel.run(parse(config), record)
    kernel.ns["a"] = replace(  # as the kernel reports it: "default"
        kernel.ns["a"], routes=tuple(replace(r, destination="default") for r in kernel.ns["a"].routes)
    )
    assert kernel.run(parse(config), record) == []


def test_an_ipv6_metric_of_zero_is_the_kernels_1024(kernel: Kernel) -> None:
    assert topology.parse_route("2001:db9::/64 via 2001:db8::2 metric 0").kernel_metric == 1024


def test_undoing_the_mark_of_an_adopted_interface_does_not_crash(kernel: Kernel) -> None:
    topo = parse(pair())
    kernel.targets(topo)
    kernel.ns = ch.simulate(kernel.ns, ch.CreatePair(Endpoint("a", "a_b"), Endpoint("b", "b_a")))  # killed midway
    record = ProjectRecord()
    record.node("a", "/x/a").interfaces["a_b"] = Claim(None, "b:b_a")
    record.node("b", "/x/b").interfaces["b_a"] = Claim(None, "a:a_b")
    kernel.refuse = lambda change: "boom" if isinstance(change, ch.AddAddress) and change.node == "b" else None
    with pytest.raises(WiringError, match="the lab is as it was before"):
        kernel.run(topo, record)


def test_a_link_set_down_stays_a_fixed_point_with_ipv6(kernel: Kernel) -> None:
    config = pair()
    config["services"]["a"]["x-composens"]["addresses"]["a_b"].append("2001:db8::1/64")
    record = ProjectRecord()
    kernel.run(parse(config), record)
    held = frozenset({Endpoint("a", "a_b")})
    assert kernel.run(parse(config), record, down=held) == ["~ ip -n a link set dev a_b down"]
    assert kernel.run(parse(config), record, down=held) == []


def test_a_restore_that_cannot_put_a_pair_back_says_so(kernel: Kernel) -> None:
    record = ProjectRecord()
    kernel.run(parse(pair()), record)
    record.nodes["a"].interfaces["a_b"].peer = None  # as --recover rebuilds a claim: no peer known
    record.nodes["b"].interfaces["b_a"].peer = None
    moved = copy.deepcopy(pair())
    moved["x-composens"]["links"][0]["endpoints"] = ["a:a_c", "c:c_a"]
    moved["services"]["a"]["x-composens"]["addresses"] = {"a_c": ["10.0.0.1/24"]}
    moved["services"]["c"]["x-composens"] = {"addresses": {"c_a": ["10.0.0.3/24"]}}
    del moved["services"]["b"]["x-composens"]
    kernel.refuse = lambda change: "boom" if isinstance(change, ch.AddAddress) and change.node == "c" else None
    with pytest.raises(WiringError, match="except that nothing could put back"):
        kernel.run(parse(moved), record)


def test_a_pair_whose_name_someone_took_meanwhile_is_not_judged_made_nor_its_interface_deleted(
    kernel: Kernel,
) -> None:
    """Between the read and the batch a foreign `a_b` appears in a: ip refuses the pair; the rollback must leave it."""
    topo = parse(pair())
    record = ProjectRecord()
    foreign = live.LiveLink("a_b", 7, None, None, None, 1500, True)

    def refuse(change: Change) -> str | None:
        if isinstance(change, ch.CreatePair):
            kernel.ns["a"] = live.with_link(kernel.ns["a"], foreign)  # what ip's `File exists` was about
            return "RTNETLINK answers: File exists"
        return None

    kernel.refuse = refuse
    with pytest.raises(WiringError, match="File exists"):
        kernel.run(topo, record)
    assert kernel.ns["a"].links["a_b"] == foreign
    assert "a_b" not in record.nodes["a"].interfaces
    assert not any(line.startswith("- ip link del") for line in kernel.log)


def test_a_namespace_that_vanished_mid_read_is_left_out_when_asked() -> None:
    """ps and netem show read every namespace: one container restarting meanwhile must not fail the others."""
    gone = reading.Target("gone", "/nonexistent/composens-test-ns", "/nonexistent/composens-test-ns", linked=False)
    with pytest.raises(WiringError, match="cannot read the interfaces of gone"):
        reading.read_all({"a": gone})
    assert set(reading.read_all({HOST: reading.HOST_TARGET, "a": gone}, vanished_ok=True)) == {HOST}


def test_a_run_undone_because_a_dead_namespaces_vni_was_still_taken_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    taken = WiringError(
        "`ip link add name eth1 netns r1 type vxlan id 5001 ...` failed: Error: A VXLAN device with the specified "
        "VNI already exists.; undid what this run had done: the lab is as it was before"
    )

    def once(*args: Any) -> wiring.WiringReport:
        calls.append(1)
        if len(calls) < 3:
            raise taken
        return wiring.WiringReport(done=["made"])

    monkeypatch.setattr(wiring, "_converge_once", once)
    monkeypatch.setattr(wiring, "VNI_RETRIES", (0.0, 0.0, 0.0))
    assert wiring.converge_lab(*([None] * 5)).done == ["made"]  # type: ignore[arg-type]
    assert len(calls) == 3
    other = WiringError("`ip ...` failed: File exists; undid what this run had done: the lab is as it was before")
    calls.clear()
    monkeypatch.setattr(wiring, "_converge_once", lambda *args: calls.append(1) or (_ for _ in ()).throw(other))
    with pytest.raises(WiringError, match="File exists"):
        wiring.converge_lab(*([None] * 5))  # type: ignore[arg-type]
    assert len(calls) == 1


# --------------------------------------------------------------------------- a LAN's VXLAN port (issue 26, item 8)


class FdbKernel(Kernel):
    """The kernel model, with each VXLAN device's all-zero FDB entries (head-end replication) kept too."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch)
        self.fdb: dict[tuple[str, str], list[str]] = {}

    def run_batch(self, netns: str | None, lines: list[str], tool: str = "ip", *, read_back: bool = False) -> Any:
        for token in lines:
            match self.lines[token]:
                case ch.CreateVxlan(end, _, _, remote):
                    self.fdb[end.node, end.ifname] = [remote]  # the device's own remote is its first entry
                case ch.AppendFdb(node, ifname, remote):
                    self.fdb[node, ifname].append(remote)
                case ch.DeleteLink(node, ifname):
                    self.fdb.pop((node, ifname), None)
        return super().run_batch(netns, lines, tool, read_back=read_back)

    def targets(self, topo: topology.Topology) -> dict[str, reading.Target]:
        found = super().targets(topo)
        if topo.hub is not None:
            found[HUB] = reading.Target(HUB, "/x/hub", "hub:1")
            self.node_of[HUB] = HUB
            self.ns.setdefault(HUB, live.EMPTY)
        return found


def three_hosts(*, with_h3: bool = True, r1_addresses: tuple[str, ...] = ("198.19.9.1/24",)) -> topology.Topology:
    """The view from h1 of a LAN with members on h1, h2 and (with_h3) h3."""
    config: dict[str, Any] = {
        "name": "p",
        "x-composens": {
            "hosts": {f"h{i}": {"underlay": f"198.18.200.{i}"} for i in (1, 2, 3)},
            "lans": {"core": {"endpoints": ["r1:lan0", "r2:lan0", *(["r3:lan0"] if with_h3 else [])]}},
        },
        "services": {
            "r1": {"network_mode": "none", "x-composens": {"host": "h1", "addresses": {"lan0": list(r1_addresses)}}},
            "r2": {"network_mode": "none", "x-composens": {"host": "h2"}},
            "r3": {"network_mode": "none", "x-composens": {"host": "h3"}},
        },
    }
    topo = parse(config)
    return hosts.view(topo, topo.hosts, topo.hosts.hosts["h1"])


def test_a_rollback_puts_a_lan_ports_replication_to_further_hosts_back(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FdbKernel(monkeypatch)
    record = ProjectRecord()
    before = three_hosts()
    kernel.run(before, record)
    assert kernel.fdb[HUB, "vx.core"] == ["198.18.200.2", "198.18.200.3"]
    assert record.nodes[HUB].interfaces["vx.core"].fdb == ("198.18.200.3",)
    old_mac = kernel.ns[HUB].links["vx.core"].mac
    # An edit that makes the port again (h3 leaves the LAN: its MAC changes) and then fails: the run is undone.
    edited = three_hosts(with_h3=False, r1_addresses=("198.19.9.1/24", "198.19.9.9/24"))
    kernel.refuse = lambda change: "boom" if isinstance(change, ch.AddAddress) and change.node == "r1" else None
    with pytest.raises(WiringError, match="the lab is as it was before"):
        kernel.run(edited, record)
    kernel.refuse = lambda change: None
    # The port is back as it was: its MAC, its remote and its entry towards h3, and the record says so.
    assert kernel.ns[HUB].links["vx.core"].mac == old_mac
    assert kernel.fdb[HUB, "vx.core"] == ["198.18.200.2", "198.18.200.3"]
    assert "+ bridge -n @hub fdb append 00:00:00:00:00:00 dev vx.core dst 198.18.200.3" in kernel.log
    assert record.nodes[HUB].interfaces["vx.core"].fdb == ("198.18.200.3",)
    # The file reverted: nothing to do, and rightly so.
    assert kernel.run(before, record) == []
    assert kernel.fdb[HUB, "vx.core"] == ["198.18.200.2", "198.18.200.3"]


def test_a_lan_port_is_judged_by_the_entries_composens_appended_too(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FdbKernel(monkeypatch)
    record = ProjectRecord()
    topo = three_hosts()
    kernel.run(topo, record)
    port = record.nodes[HUB].interfaces["vx.core"]
    port.fdb = ()  # an entry a run could not put back (its restore failed): the MAC alone would hide it
    found = kernel.plan(topo, record)
    assert any("replicates to other hosts than h2 (198.18.200.2), h3 (198.18.200.3)" in d.item for d in found.drift)
    log = kernel.run(topo, record)
    assert "- ip -n @hub link del dev vx.core" in log
    assert kernel.fdb[HUB, "vx.core"] == ["198.18.200.2", "198.18.200.3"]
    assert record.nodes[HUB].interfaces["vx.core"].fdb == ("198.18.200.3",)
    # A record that does not know the entries (from before composens kept them, or rebuilt): the MAC decides.
    record.nodes[HUB].interfaces["vx.core"].fdb = None
    assert kernel.run(topo, record) == []


def test_a_claims_fdb_entries_survive_the_record_on_disk() -> None:
    from composens.model.record import State

    state = State()
    node = state.project("p").node(HUB, "hub:1")
    node.interfaces["vx.core"] = Claim(7, None, ("198.18.200.3", "2001:db8::3"))
    node.interfaces["eth1"] = Claim(8)
    again = State.from_json(state.to_json())
    assert again.projects["p"].nodes[HUB].interfaces == node.interfaces
    assert '"fdb"' not in state.to_json().split('"eth1"')[1].split("}")[0]  # only where it is known
    broken = state.to_json().replace('"198.18.200.3"', '"not-an-address"')
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        State.from_json(broken)


def test_a_service_whose_wiring_was_rolled_back_is_not_found_in_line(kernel: Kernel) -> None:
    """Issue 26, item 4: what a later run judges before it opens a service's gate or runs its exec commands."""
    topo = parse(pair())
    targets = kernel.targets(topo)
    scope = converge.Scope(frozenset(targets), qdiscs=True)
    record = ProjectRecord()
    kernel.refuse = lambda change: "boom" if isinstance(change, ch.AddAddress) and change.node == "b" else None
    with pytest.raises(WiringError, match="the lab is as it was before"):
        wiring.converge_lab(topo, scope, targets, record, lambda: None)
    kernel.refuse = lambda change: None
    # A run asked about c only changes nothing of a and b: their namespaces are there, their pair is not.
    only_c = converge.Scope(frozenset(targets), frozenset({"c"}), qdiscs=True)
    done = wiring.converge_lab(topo, only_c, targets, record, lambda: None)
    assert done.done == []
    assert not converge.in_line(topo, done.state, done.records, only_c, "a")
    assert not converge.in_line(topo, done.state, done.records, only_c, "b")
    assert converge.in_line(topo, done.state, done.records, only_c, "c")  # nothing declared for it
    whole = wiring.converge_lab(topo, scope, targets, record, lambda: None)
    assert whole.done
    assert converge.in_line(topo, whole.state, whole.records, only_c, "a")
    assert converge.in_line(topo, whole.state, whole.records, only_c, "b")
