"""Convergence on the real engine: an edited file reaches the running lab, and only what composens made moves."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from composens.system.kernel.reading import read_namespace
from tests.integration.conftest import NETNS_DIR, STATE, Project, run
from tests.integration.test_wiring import ping

pytestmark = pytest.mark.integration

CASES = Path(__file__).resolve().parents[1] / "converge"
SEED = yaml.safe_load((CASES / "seed.yml").read_text())


def compose_text(project: Project, config: dict[str, Any]) -> str:
    """A converge case's compose document, runnable: the image, and entry names of this test's own."""
    config = json.loads(json.dumps(config))
    config.pop("name", None)
    config["x-composens"]["netns_prefix"] = f"{project.name}-{config['x-composens'].get('netns_prefix', '')}"
    for service in config["services"].values():
        service["image"] = "IMAGE"
    return yaml.safe_dump(config, sort_keys=False)


def hand_made(project: Project, spec: dict[str, Any], prefix: str) -> None:
    """Do to the running lab what the case says a person (or the engine) did."""
    for node, interfaces in spec.get("addresses", {}).items():
        for ifname, addresses in interfaces.items():
            for address in addresses:
                run("ip", "-n", f"{prefix}{node}", "addr", "add", address, "dev", ifname)
    for node, routes in spec.get("routes", {}).items():
        for text in routes:
            run("ip", "-n", f"{prefix}{node}", "route", "add", *text.split())
    for node in spec.get("restart", []):
        run("docker", "restart", "-t", "0", project.container(node))


def snapshot(names: list[str]) -> dict[str, Any]:
    """Every lab interface, address and route in the named namespaces, without ifindexes or docker's eth0."""
    found = {}
    for name in names:
        ns = read_namespace(name)
        links = sorted(
            (k.ifname, k.kind, k.mtu, k.up, k.alias, k.master)
            for k in ns.links.values()
            if k.ifname not in ("lo", "eth0")
        )
        addresses = sorted(
            (ifname, sorted(a.address for a in addrs if not a.link_local))
            for ifname, addrs in ns.addresses.items()
            if ifname not in ("lo", "eth0")
        )
        routes = sorted(str(r) for r in ns.routes if r.protocol != "kernel" and r.dev != "eth0")
        found[name.split("-", 1)[1]] = (links, addresses, routes)
    return found


MAC = re.compile(r"\b[0-9a-f]{2}(:[0-9a-f]{2}){5}\b")


@pytest.mark.parametrize(
    "case",
    sorted(p for p in CASES.glob("*.yml") if p.name not in ("seed.yml", "rename-netns.yml")),
    ids=lambda p: p.stem,
)
def test_an_edit_reaches_the_running_lab_as_a_fresh_lab_would_have_it(project: Project, case: Path) -> None:
    spec = yaml.safe_load(case.read_text())
    after = spec.get("after") or SEED
    prefix = f"{project.name}-"
    names = [f"{prefix}{s}" for s in after["services"]]
    project.write(compose_text(project, SEED))
    project.cli("up", "-d")
    hand_made(project, spec.get("before_live") or {}, prefix)
    project.write(compose_text(project, after))
    before = project.cli("plan", "--exit-code", check=False)
    assert before.returncode == 2, before.stderr
    # The plan on the real lab is the one the golden case predicts on paper, entry names (and the MACs derived
    # from them) aside.
    expected = [
        MAC.sub("MAC", line) for line in case.with_suffix(".expected").read_text().split("# drift")[0].splitlines()
    ]
    real = [
        MAC.sub("MAC", line.replace(prefix, "").replace(f"composens:{project.name}", "composens:convlab"))
        for line in before.stdout.splitlines()
        if not line.startswith(("+ ln ", "~ ln "))
    ]
    assert real == expected
    project.cli("up", "-d")
    settled = project.cli("plan", "--exit-code", check=False)
    assert settled.returncode == 0, settled.stdout + settled.stderr
    assert settled.stdout == ""
    converged = snapshot(names)
    project.cli("down", "-t", "0")
    project.cli("up", "-d")
    hand_made(project, {k: v for k, v in (spec.get("before_live") or {}).items() if k != "restart"}, prefix)
    assert converged == snapshot(names)


def test_a_hand_made_address_survives_and_shows_as_extra(project: Project) -> None:
    prefix = f"{project.name}-"
    project.write(compose_text(project, SEED))
    project.cli("up", "-d")
    run("ip", "-n", f"{prefix}node1", "addr", "add", "10.0.0.99/24", "dev", "node1_router1")
    project.cli("up", "-d")
    assert "10.0.0.99/24" in run("ip", "-n", f"{prefix}node1", "addr", "show", "node1_router1").stdout
    rows = {r["netns"]: r for r in project.ps()}
    assert rows[f"{prefix}node1"]["drift"] == [
        {"problem": "extra", "item": "address 10.0.0.99/24 on node1_router1", "ours": False}
    ]
    assert rows[f"{prefix}node2"]["drift"] == []
    table = project.cli("ps", "--netns").stdout
    assert "extra address 10.0.0.99/24 on node1_router1 (not made by composens)" in table
    # Not composens' to change: shown, and counted by neither ps nor plan as a difference from the file.
    assert "the lab matches its file" in table
    assert project.cli("plan", "--exit-code", check=False).returncode == 0


def test_ps_never_says_the_lab_matches_when_a_service_is_stopped_or_nothing_runs(project: Project) -> None:
    prefix = f"{project.name}-"
    project.write(compose_text(project, SEED))
    project.cli("up", "-d")
    assert "the lab matches its file" in project.cli("ps", "--netns").stdout
    run("docker", "stop", "-t", "0", project.container("router2"))
    table = project.cli("ps", "--netns").stdout
    assert "the lab matches its file" not in table
    assert "not running: router2" in table
    assert "not wired: node1:node1_router2 <-> router2:router2_node1: router2 not running" in table
    assert project.cli("plan", "--exit-code", check=False).returncode == 2
    run("docker", "rm", "-f", project.container("router2"))
    project.cli("netns", "link")  # the stopped container's entry goes: an unlinked service counts as well
    run("ip", "netns", "exec", f"{prefix}node1", "true")
    project.cli("stop", "-t", "0")
    assert "nothing of the lab is running" in project.cli("ps", "--netns").stdout


def test_a_new_prefix_moves_the_entries_and_keeps_the_wiring(project: Project) -> None:
    project.write(compose_text(project, SEED))
    project.cli("up", "-d")
    moved = json.loads(json.dumps(SEED))
    moved["x-composens"]["netns_prefix"] = "x-"
    project.write(compose_text(project, moved))
    done = project.cli("up", "-d")
    assert "wired:" not in done.stdout
    assert sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(project.name)) == [
        f"{project.name}-x-{s}" for s in ("node1", "node2", "router1", "router2")
    ]
    assert ping(project, "x-node1", "20.0.0.2").returncode == 0


def host_end(name: str) -> tuple[int, str | None] | None:
    done = run("ip", "-j", "-d", "link", "show", "dev", name, check=False)
    if done.returncode != 0:
        return None
    item = json.loads(done.stdout)[0]
    return item["ifindex"], item.get("ifalias")


def test_two_projects_with_one_host_end_name(project: Project, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = Project(f"{project.name}b", tmp_path_factory.mktemp("other"))
    end = f"{project.name[:9]}up"
    text = f"""
x-composens:
  netns_prefix: PREFIX-
  links:
    - endpoints: ["r1:uplink", "host:{end}"]
  host:
    addresses: {{{end}: [198.18.0.1/30]}}
services:
  r1:
    image: IMAGE
    network_mode: none
    x-composens:
      addresses: {{uplink: [198.18.0.2/30]}}
"""
    project.write(text.replace("PREFIX", project.name))
    other.write(text.replace("PREFIX", other.name))
    try:
        project.cli("up", "-d")
        first = host_end(end)
        assert first is not None
        assert first[1] == f"composens:{project.name}"
        refused = other.cli("up", "-d", check=False)
        assert refused.returncode == 6, refused.stderr
        assert f"interface {end} already exists in the host's namespace and belongs to project {project.name}" in (
            refused.stderr
        )
        assert run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={other.name}").stdout == ""
        # The case: the first project's container restarts (its pair dies), the second makes its own
        # end of that name; the first's next `netns link` must refuse, never take the second's end for its own.
        run("docker", "restart", "-t", "0", project.container("r1"))
        assert host_end(end) is None
        other.cli("up", "-d")
        second = host_end(end)
        assert second is not None
        assert second[1] == f"composens:{other.name}"
        again = project.cli("netns", "link", check=False)
        assert again.returncode == 6, again.stdout + again.stderr
        assert host_end(end) == second
        project.cli("down", "-t", "0")
        assert host_end(end) == second  # down removes only what is the first project's
        assert ping(other, "r1", "198.18.0.1").returncode == 0
        other.cli("down", "-t", "0")
        assert host_end(end) is None
    finally:
        other.cli("down", "-t", "0", check=False)


def test_host_routes_are_recorded_and_removed_by_down(project: Project) -> None:
    end = f"{project.name[:9]}hr"
    project.write(f"""
x-composens:
  netns_prefix: {project.name}-
  links:
    - endpoints: ["r1:uplink", "host:{end}"]
  host:
    addresses: {{{end}: [198.18.0.5/30]}}
    routes: [198.18.50.0/24 via 198.18.0.6]
services:
  r1:
    image: IMAGE
    network_mode: none
    x-composens:
      addresses: {{uplink: [198.18.0.6/30]}}
""")
    project.cli("up", "-d")
    assert "198.18.0.6" in run("ip", "route", "show", "198.18.50.0/24").stdout
    state = json.loads(STATE.read_text())
    assert state["projects"][project.name]["nodes"]["host"]["routes"] == {
        "4|198.18.50.0/24|0": "198.18.50.0/24 via 198.18.0.6"
    }
    project.cli("down", "-t", "0")
    assert run("ip", "route", "show", "198.18.50.0/24").stdout == ""
    assert host_end(end) is None


def uplink_lab(project: Project, end: str) -> str:
    """One service linked to the host, the host end named `end`."""
    return f"""
x-composens:
  netns_prefix: {project.name}-
  links:
    - endpoints: ["r1:uplink", "host:{end}"]
services:
  r1: {{image: IMAGE, network_mode: none}}
"""


def test_a_damaged_record_stops_every_command_until_it_is_recovered(project: Project) -> None:
    end = f"{project.name[:9]}dm"
    project.write(uplink_lab(project, end))
    project.cli("up", "-d")
    # A person links the same sandbox under a name of their own: a rebuilt record must not take it for composens'.
    mine = NETNS_DIR / f"{project.name}-mine"
    mine.symlink_to(os.readlink(NETNS_DIR / f"{project.name}-r1"))
    original = STATE.read_text()
    STATE.write_text('{"version": 2, "entries": [')  # cut short, as a full disk would
    try:
        for command in (("ps", "--netns"), ("up", "-d"), ("netns", "link"), ("down",)):
            refused = project.cli(*command, check=False)
            assert refused.returncode == 8, (command, refused.stderr)
            assert "netns prune --recover" in refused.stderr
        moved = sorted(STATE.parent.glob("state.json.damaged-*"))
        assert moved
        assert moved[-1].read_text() == '{"version": 2, "entries": ['
        recovered = project.cli("netns", "prune", "--recover")
        assert f"adopted entry {project.name}-r1 (project {project.name}, service r1)" in recovered.stdout
        assert f"adopted interface {end} in the host (project {project.name})" in recovered.stdout
        assert f"left {mine}: composens did not make it" in recovered.stdout
        assert project.status() == {f"{project.name}-r1": "linked", "-": "none"}  # "-": the host's row
        project.cli("netns", "link")
        project.cli("netns", "prune")
        project.cli("down", "-t", "0")
        assert host_end(end) is None
        assert mine.is_symlink()
    finally:
        mine.unlink(missing_ok=True)
        for path in STATE.parent.glob("state.json.damaged-*"):
            path.unlink()
        if "damaged" in STATE.read_text():
            STATE.write_text(original)


def test_prune_asks_the_engine_whether_a_project_runs(project: Project) -> None:
    end = f"{project.name[:9]}pr"
    project.write(uplink_lab(project, end))
    project.cli("up", "-d")
    project.cli("netns", "unlink")  # no entries, but the container runs
    pruned = project.cli("netns", "prune")
    assert project.name not in pruned.stdout
    assert host_end(end) is not None
    assert project.name in json.loads(STATE.read_text())["projects"]
    # The host end dies with its peer's namespace; what is left to prune is the project's record.
    run("docker", "compose", "-p", project.name, "down", "-t", "0", cwd=project.folder)  # composens not asked
    project.cli("netns", "prune")
    assert host_end(end) is None
    assert project.name not in json.loads(STATE.read_text())["projects"]
