"""Convergence on paper: golden change lines for edits of a running lab, and properties that hold for any lab.

Each tests/converge/<case>.yml starts from the seed lab (tests/converge/seed.yml) converged from nothing,
changes the live lab by hand (`before_live`), then converges to `after` (the seed when absent). Its
<case>.expected holds the exact plan (`+`/`-`/`~` lines) and, after `# drift`, what `ps --netns` shows.
Set COMPOSENS_UPDATE_GOLDEN=1 to rewrite them (then read the diff).
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from composens.model import declared, topology
from composens.plan import changes, converge, live
from composens.plan.live import LiveRoute
from tests.unit.simlab import PaperLab

CASES = Path(__file__).resolve().parents[1] / "converge"
SEED = yaml.safe_load((CASES / "seed.yml").read_text())


def parse(config: dict[str, Any]) -> topology.Topology:
    return declared.parse(config, source="docker-compose.yml")


def tweak(lab: PaperLab, spec: dict[str, Any]) -> None:
    """Change the live lab by hand, as a person (or a container restart) would."""
    for node, interfaces in spec.get("addresses", {}).items():
        for ifname, addresses in interfaces.items():
            for address in addresses:
                lab.add_address(node, ifname, address)
    for node, routes in spec.get("routes", {}).items():
        for text in routes:
            dest, _, gateway, _, dev, _, metric = text.split()
            lab.add_route(node, LiveRoute(4 if "." in gateway else 6, dest, gateway, dev, int(metric)))
    for node in spec.get("restart", []):
        lab.restart(node)


@pytest.mark.parametrize("case", sorted(p for p in CASES.glob("*.yml") if p.name != "seed.yml"), ids=lambda p: p.stem)
def test_edit_of_a_running_lab_gives_its_golden_changes(case: Path) -> None:
    spec = yaml.safe_load(case.read_text())
    after = parse(spec.get("after") or SEED)
    lab = PaperLab()
    lab.converge(parse(SEED))
    tweak(lab, spec.get("before_live") or {})
    lines, found = lab.converge(after)
    got = [*lines, "# drift", *(f"{d.node}: {d}" for d in found.drift)]
    expected_path = case.with_suffix(".expected")
    if os.environ.get("COMPOSENS_UPDATE_GOLDEN"):
        expected_path.write_text("\n".join(got) + "\n")
    expected = expected_path.read_text().splitlines()
    assert got == expected, "\n".join(difflib.unified_diff(expected, got, "expected", "got", lineterm=""))
    # Converged: a second run has nothing to do, and the lab is what converging the edited file from
    # nothing gives (with what the person added by hand still there).
    again, found_again = lab.converge(after)
    assert again == []
    assert [d for d in found_again.drift if d.ours is not False] == []
    fresh = PaperLab()
    fresh.converge(after)
    hand_made = {k: v for k, v in (spec.get("before_live") or {}).items() if k != "restart"}
    tweak(fresh, hand_made)
    assert lab.picture() == fresh.picture()


def test_an_unchanged_lab_reads_as_matching() -> None:
    lab = PaperLab()
    lab.converge(parse(SEED))
    lines, found = lab.converge(parse(SEED))
    assert lines == []
    assert found.drift == []
    assert found.conflicts == []


def test_addresses_the_kernel_makes_from_router_advertisements_are_no_drift() -> None:
    """SLAAC addresses (dynamic, with a lifetime) come and go with the RAs: neither extra nor removed."""
    from dataclasses import replace

    lab = PaperLab()
    lab.converge(parse(SEED))
    ns = lab.state["node1"]
    slaac = live.LiveAddress("2001:db8:77::5054:ff:fe12:3456/64", dynamic=True)
    lab.state["node1"] = replace(
        ns, addresses={**ns.addresses, "node1_router2": (*ns.addresses_of("node1_router2"), slaac)}
    )
    lines, found = lab.converge(parse(SEED))
    assert lines == []
    assert found.drift == []


def test_a_foreign_interface_with_a_declared_name_is_a_conflict_and_nothing_runs() -> None:
    topo = parse(SEED)
    lab = PaperLab()
    foreign = live.LiveLink("node1_router1", 7, "veth", 8, None, 1500, True)
    lab.state["node1"] = live.with_link(live.EMPTY, foreign)
    nodes = lab.nodes(topo)
    found = converge.diff(topo, {n: lab.state.get(n, live.EMPTY) for n in nodes}, {}, converge.Scope(frozenset(nodes)))
    assert found.conflicts == [
        "interface node1_router1 already exists in netns node1 and was not created by composens; remove or rename it"
    ]


def test_another_projects_interface_is_its_own_not_ours() -> None:
    topo = parse(SEED)
    theirs = live.LiveLink("node1_router1", 7, "veth", 8, "composens:other", 1500, True)
    nodes = {topology.HOST, *topo.services}
    state = dict.fromkeys(nodes, live.EMPTY) | {"node1": live.with_link(live.EMPTY, theirs)}
    found = converge.diff(topo, state, {}, converge.Scope(frozenset(nodes)))
    assert found.conflicts[0].startswith("interface node1_router1 in netns node1 belongs to project other")


def test_a_route_someone_else_made_to_a_declared_destination_is_a_conflict() -> None:
    lab = PaperLab()
    lab.converge(parse(SEED))
    lab.state["node1"] = live.drop_route(lab.state["node1"], (4, "20.0.0.0/24", 0))
    lab.record.nodes["node1"].routes.pop((4, "20.0.0.0/24", 0))
    lab.add_route("node1", LiveRoute(4, "20.0.0.0/24", "10.0.0.99", "node1_router1", 0))
    topo = parse(SEED)
    nodes = lab.nodes(topo)
    records = {n: lab.record.node(n, lab.identity[n]) for n in nodes}
    found = converge.diff(topo, lab.state, records, converge.Scope(frozenset(nodes)))
    assert found.conflicts == [
        "route to 20.0.0.0/24 metric 0 in netns node1 exists (via 10.0.0.99 dev node1_router1) and was not made "
        "by composens; remove it or give the declared route another metric"
    ]


def test_choosing_services_leaves_the_others_as_they_are() -> None:
    lab = PaperLab()
    lab.converge(parse(SEED))
    lab.restart("router1")
    lab.restart("router2")
    lines, _ = lab.converge(parse(SEED), chosen=frozenset({"router1"}))
    assert lines
    assert all("router2" not in line for line in lines)


def test_a_gateway_on_no_subnet_of_a_docker_network_service_is_refused_before_anything_runs() -> None:
    config = yaml.safe_load((CASES.parent / "topology" / "options" / "docker-compose.yml").read_text())
    topo = parse(config)
    nodes = {topology.HOST, *topo.services}
    state = dict.fromkeys(nodes, live.EMPTY)
    state["a"] = live.add_address(
        live.with_link(live.EMPTY, live.LiveLink("eth0", 2, "veth", 3, None, 1500, True)), "eth0", "172.30.5.2/24"
    )
    found = converge.diff(topo, state, {}, converge.Scope(frozenset(nodes)), check_gateways=True)
    assert found.problems == [
        "docker-compose.yml: route 198.18.0.0/15 via 172.30.0.1 of a: gateway 172.30.0.1 is on none of its subnets "
        "(declared, or its docker networks'); add an address on that subnet or fix the gateway"
    ]
    state["a"] = live.add_address(state["a"], "eth0", "172.30.0.2/16")
    assert converge.diff(topo, state, {}, converge.Scope(frozenset(nodes)), check_gateways=True).problems == []


# --------------------------------------------------------------------------- any lab


def ring(size: int, names: list[str], mtus: list[int | None], v6: list[bool]) -> dict[str, Any]:
    """A ring of `size` routers, link i between r<i> and r<i+1>, each a /30 (or /64), with routes across."""
    services: dict[str, Any] = {
        f"r{i}": {"network_mode": "none", "x-composens": {"addresses": {}, "routes": []}} for i in range(size)
    }
    links = []
    for i in range(size):
        a, b = f"r{i}", f"r{(i + 1) % size}"
        ia, ib = f"{names[i]}a", f"{names[i]}b"
        link: dict[str, Any] = {"endpoints": [f"{a}:{ia}", f"{b}:{ib}"]}
        if mtus[i]:
            link["mtu"] = mtus[i]
        links.append(link)
        if v6[i]:
            services[a]["x-composens"]["addresses"][ia] = [f"2001:db8:{i}::1/64"]
            services[b]["x-composens"]["addresses"][ib] = [f"2001:db8:{i}::2/64"]
            services[a]["x-composens"]["routes"].append(f"2001:db8:ff{i:02x}::/64 via 2001:db8:{i}::2")
        else:
            services[a]["x-composens"]["addresses"][ia] = [f"198.18.{i}.1/30"]
            services[b]["x-composens"]["addresses"][ib] = [f"198.18.{i}.2/30"]
            services[a]["x-composens"]["routes"].append(f"198.19.{i}.0/24 via 198.18.{i}.2")
    return {"name": "ring", "x-composens": {"links": links}, "services": services}


labs = st.integers(2, 5).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(st.sampled_from(["e", "x", "l.", "p@", "q+"]), min_size=n, max_size=n).map(
            lambda names: [f"{name}{i}" for i, name in enumerate(names)]
        ),
        st.lists(st.sampled_from([None, 1400, 9000]), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(labs, labs)
def test_any_edit_converges_in_one_run_to_what_a_fresh_lab_is(first: tuple[Any, ...], second: tuple[Any, ...]) -> None:
    before, after = parse(ring(*first)), parse(ring(*second))
    lab = PaperLab()
    lab.converge(before)
    assert lab.converge(before)[0] == []  # nothing to do twice
    lab.converge(after)
    assert lab.converge(after)[0] == []
    fresh = PaperLab()
    fresh.converge(after)
    # Services gone from the file are compose's orphans: like compose, composens leaves them (and the links
    # between them) until `up --remove-orphans` or `down` removes their containers.
    kept = {topology.HOST, *after.services}
    assert {n: p for n, p in lab.picture().items() if n in kept} == fresh.picture()


def test_changed_netem_conditions_are_taken_off_and_set_anew() -> None:
    """tc qdisc replace on a netem keeps what the new line does not name: a netem that differs goes first."""
    config = json.loads(json.dumps(SEED))
    config["x-composens"]["links"][0]["netem"] = {"delay": "40ms", "corrupt": "1%"}
    lab = PaperLab()
    lab.converge(parse(config))
    config["x-composens"]["links"][0]["netem"] = {"delay": "40ms"}
    lines, found = lab.converge(parse(config))
    assert lines == [
        "- tc -n node1 qdisc del dev node1_router1 root",
        "- tc -n router1 qdisc del dev router1_node1 root",
        "+ tc -n node1 qdisc replace dev node1_router1 root netem delay 40ms",
        "+ tc -n router1 qdisc replace dev router1_node1 root netem delay 40ms",
    ]
    assert [str(d) for d in found.drift] == [
        "differs conditions on node1_router1: delay 40ms corrupt 1%, wanted delay 40ms",
        "differs conditions on router1_node1: delay 40ms corrupt 1%, wanted delay 40ms",
    ]
    config["x-composens"]["links"][0].pop("netem")
    lines, _ = lab.converge(parse(config))
    assert lines == [
        "- tc -n node1 qdisc del dev node1_router1 root",
        "- tc -n router1 qdisc del dev router1_node1 root",
    ]
    assert lab.converge(parse(config))[0] == []


def test_a_limit_no_longer_wanted_is_taken_off() -> None:
    """Going from {delay, limit: 10} to {delay} shows drift and sets netem anew (its default queue of 1000)."""
    config = json.loads(json.dumps(SEED))
    config["x-composens"]["links"][0]["netem"] = {"node1:node1_router1": {"delay": "10ms", "limit": 10}}
    lab = PaperLab()
    lab.converge(parse(config))
    config["x-composens"]["links"][0]["netem"] = {"node1:node1_router1": {"delay": "10ms"}}
    lines, found = lab.converge(parse(config))
    assert [str(d) for d in found.drift] == [
        "differs conditions on node1_router1: delay 10ms limit 10, wanted delay 10ms"
    ]
    assert lines == [
        "- tc -n node1 qdisc del dev node1_router1 root",
        "+ tc -n node1 qdisc replace dev node1_router1 root netem delay 10ms",
    ]
    assert lab.converge(parse(config))[0] == []


def test_the_full_plan_is_the_diff_from_nothing() -> None:
    topo = parse(SEED)
    found = converge.from_scratch(topo)
    assert all(c.sign == "+" for c in found.changes)
    assert sum(isinstance(c, changes.CreatePair) for c in found.changes) == 4
