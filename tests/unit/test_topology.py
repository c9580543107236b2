"""Parsing, validation and planning: golden plans and a suite of invalid files."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import pytest
import yaml

from composens.model import declared, topology
from composens.model.errors import ConfigError
from composens.plan import changes, converge, live

CASES = Path(__file__).resolve().parents[1] / "topology"
GOLDEN = sorted(p.parent for p in CASES.glob("*/expected.txt"))
INVALID = sorted((CASES / "invalid").glob("*.yml"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def full_plan(topo: topology.Topology) -> list[str]:
    """What `composens plan --full` prints for a topology."""
    return converge.full_plan(topo)[0]


@pytest.mark.parametrize("case", GOLDEN, ids=lambda p: p.name)
def test_plan_matches_golden(case: Path) -> None:
    topo = declared.parse(load(case / "docker-compose.yml"), source="docker-compose.yml")
    got = full_plan(topo)
    expected = (case / "expected.txt").read_text().splitlines()
    diff = "\n".join(difflib.unified_diff(expected, got, "expected", "planned", lineterm=""))
    assert got == expected, diff


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_file_gives_its_exact_error(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# error: ")
    with pytest.raises(ConfigError) as caught:
        declared.parse(load(path), source="docker-compose.yml")
    assert caught.value.message == first.removeprefix("# error: ")


def test_golden_and_invalid_suites_are_not_empty() -> None:
    assert len(GOLDEN) >= 3
    assert len(INVALID) >= 15


def test_plan_only_wires_links_whose_ends_are_available() -> None:
    topo = declared.parse(load(CASES / "seed" / "docker-compose.yml"), source="f")
    found = converge.from_scratch(topo, frozenset({"node1"}))
    veths = [c for c in found.changes if isinstance(c, changes.CreatePair)]
    assert [(v.a.ifname, v.b.ifname) for v in veths] == [
        ("node1_router1", "router1_node1"),
        ("node1_router2", "router2_node1"),
    ]
    routes = [c for c in found.changes if isinstance(c, changes.AddRoute)]
    assert {r.node for r in routes} == {"node1"}


def test_netns_names_prefix_override_and_scale() -> None:
    topo = declared.parse(
        {
            "name": "p",
            "x-composens": {"netns_prefix": "lab-"},
            "services": {"web": {"x-composens": {"netns": "w"}}, "db": {}},
        },
        source="f",
    )
    assert topo.services["web"].netns == "lab-w"
    assert topo.netns_name("web", 2, scaled=True) == "lab-w-2"
    assert topo.netns_name("db", 1, scaled=False) == "lab-db"


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("default via 10.0.0.1", topology.Route("default", "10.0.0.1")),
        ("10.1.0.0/16 via 10.0.0.1 dev eth1 metric 5", topology.Route("10.1.0.0/16", "10.0.0.1", "eth1", 5)),
        ("2001:db8::/32 via fe80::1 dev eth0", topology.Route("2001:db8::/32", "fe80::1", "eth0")),
    ],
)
def test_parse_route(text: str, route: topology.Route) -> None:
    assert topology.parse_route(text) == route
    assert str(topology.parse_route(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.0/24",
        "10.0.0.0/24 via",
        "10.0.0.0/24 via 2001:db8::1",
        "default via x",
        "a via 10.0.0.1",
        "10.0.0.0/8 via 10.0.0.1 metric",
        "10.0.0.0/8 via 10.0.0.1 table 5",
        "10.0.0.0/8 via 10.0.0.1 metric x",
    ],
)
def test_parse_route_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        topology.parse_route(text)


def test_routes_through_a_link_that_is_not_planned_wait_for_it() -> None:
    # router1 is down: node1's IPv4 route goes through it and must wait; its IPv6 route through router2 must not.
    topo = declared.parse(load(CASES / "seed" / "docker-compose.yml"), source="f")
    nodes = frozenset({"node1", "node2", "router2", topology.HOST})
    found = converge.diff(topo, dict.fromkeys(nodes, live.EMPTY), {}, converge.Scope(nodes))
    routes = [str(c.route) for c in found.changes if isinstance(c, changes.AddRoute) and c.node == "node1"]
    assert routes == ["2001:2222:2222::/64 via 2001:1111:1111::10"]
    assert found.unwired == [
        "node1:node1_router1 <-> router1:router1_node1: router1 not running",
        "node2:node2_router1 <-> router1:router1_node2: router1 not running",
    ]


@pytest.mark.parametrize(
    "path", [case / "docker-compose.yml" for case in GOLDEN] + INVALID, ids=lambda p: p.parent.name + "/" + p.stem
)
def test_essentials_keep_everything_parse_reads(path: Path) -> None:
    """The config cache keeps only topology.essentials: the plan, or the error, must come out the same."""
    config = load(path)
    outcomes = []
    for data in (config, topology.essentials(config)):
        try:
            topo = declared.parse(data, source="docker-compose.yml")
            outcomes.append([*full_plan(topo), repr(topo)])
        except ConfigError as e:
            outcomes.append([e.message])
    assert outcomes[0] == outcomes[1]


def test_essentials_drop_what_parse_does_not_read() -> None:
    config = load(CASES / "seed" / "docker-compose.yml")
    config["services"]["node1"].update(environment={"SECRET": "x"}, deploy={"replicas": 1, "resources": {}})
    kept = topology.essentials(config)
    assert "environment" not in kept["services"]["node1"]
    assert kept["services"]["node1"]["deploy"] == {"replicas": 1}
    assert "image" not in kept["services"]["node1"]


def test_the_services_compose_starts_along_with_the_named_ones() -> None:
    """Issue 26, item 3: `up -d r1` starts r1's dependencies too; composens must link and wire them."""
    services: dict[str, Any] = {
        "r1": {"network_mode": "none", "depends_on": {"r3": {"condition": "service_started", "required": True}}},
        "r3": {"network_mode": "none", "depends_on": ["r4"]},  # a list, as a hand-written file has it
        "r4": {"network_mode": "none"},
        "w": {"network_mode": "none", "depends_on": {"r4": {"condition": "service_started", "restart": True}}},
        "x": {"network_mode": "none", "depends_on": {"gone": {"condition": "service_started"}}},
    }
    topo = declared.parse({"name": "p", "services": services}, source="f")
    assert topo.started_with({"r1"}, dependencies=True, dependents=False) == {"r1", "r3", "r4"}
    # w is restarted with r4 (restart: true): up and start of r1 reach it through r4; restart r4 does too.
    assert topo.started_with({"r1"}, dependencies=True, dependents=True) == {"r1", "r3", "r4", "w"}
    assert topo.started_with({"r4"}, dependencies=False, dependents=True) == {"r4", "w"}
    assert topo.started_with({"r1"}, dependencies=False, dependents=False) == {"r1"}  # --no-deps
    assert topo.started_with({"x"}, dependencies=True, dependents=True) == {"x"}  # not a service of this file
