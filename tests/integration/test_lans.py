"""LANs on the real engine: a bridge in a hub namespace of the project's own, nothing of it in the host's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.conftest import NETNS_DIR, STATE, Project, run
from tests.integration.test_wiring import ping

pytestmark = pytest.mark.integration

LAN = Path(__file__).resolve().parents[1] / "topology" / "lan" / "docker-compose.yml"


def lan_lab(project: Project) -> str:
    """The golden LAN lab (three routers on lan1, h1 behind r3), with entry and hub names of this test's own."""
    text = LAN.read_text().replace("image: busybox:1.36", "image: IMAGE").replace("name: lanlab\n", "")
    return text.replace(
        "x-composens:\n  lans:", f"x-composens:\n  netns_prefix: {project.name}-\n  hub: {project.name}-hub\n  lans:", 1
    )


def two_lans(project: Project) -> str:
    return f"""
x-composens:
  netns_prefix: {project.name}-
  hub: {project.name}-hub
  lans:
    lan1: {{endpoints: ["a1:eth1", "a2:eth1", "gw:left"]}}
    lan2: {{endpoints: ["gw:right", "b1:eth1", "b2:eth1"]}}
services:
  a1: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.1.11/24]}}, routes: [default via 198.18.1.1]}}}}
  a2: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.1.12/24]}}, routes: [default via 198.18.1.1]}}}}
  gw:
    image: IMAGE
    network_mode: none
    sysctls: {{net.ipv4.ip_forward: "1"}}
    x-composens: {{addresses: {{left: [198.18.1.1/24], right: [198.18.2.1/24]}}}}
  b1: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.2.21/24]}}, routes: [default via 198.18.2.1]}}}}
  b2: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.2.22/24]}}, routes: [default via 198.18.2.1]}}}}
"""


def hub_links(project: Project) -> dict[str, dict[str, object]]:
    out = run("ip", "-n", f"{project.name}-hub", "-d", "-j", "link", "show").stdout
    return {item["ifname"]: item for item in json.loads(out)}


def test_three_routers_share_one_segment_over_ipv4_and_ipv6(project: Project) -> None:
    project.write(lan_lab(project))
    done = project.cli("up", "-d")
    assert f"{project.name}-hub: /var/run/netns/{project.name}-hub (a namespace of its own) hub create" in done.stdout
    addresses = {
        "r1": ("10.1.0.1", "2001:db8:1::1"),
        "r2": ("10.1.0.2", "2001:db8:1::2"),
        "r3": ("10.1.0.3", "2001:db8:1::3"),
    }
    for source in addresses:
        for target, (v4, v6) in addresses.items():
            if source != target:
                assert ping(project, source, v4).returncode == 0, (source, v4)
                assert ping(project, source, v6).returncode == 0, (source, v6)
    # All-nodes multicast on the LAN: both other members answer (a switch, not snooping, passes it).
    own = run("ip", "-n", f"{project.name}-r1", "-6", "-o", "addr", "show", "dev", "eth1", "scope", "link").stdout
    answered = run(
        "ip",
        "netns",
        "exec",
        f"{project.name}-r1",
        "busybox",
        "ping",
        "-6",
        "-c",
        "3",
        "-I",
        "eth1",
        "ff02::1",
        check=False,
    ).stdout
    sources = set(re.findall(r"from (fe80::[0-9a-f:]+)", answered)) - set(re.findall(r"inet6 (fe80::[0-9a-f:]+)", own))
    assert len(sources) == 2, answered
    neighbours = run("ip", "-n", f"{project.name}-r1", "neigh", "show", "dev", "eth1").stdout
    assert "10.1.0.2" in neighbours
    assert "10.1.0.3" in neighbours
    # Through the LAN and a point-to-point link: r1 -> r3 (forwarding) -> h1.
    assert ping(project, "r1", "10.2.0.2").returncode == 0
    # The bridge is a plain switch: no STP, no snooping, link-local groups passed, no address, IPv6 off.
    links = hub_links(project)
    data = links["lan1"]["linkinfo"]["info_data"]  # type: ignore[index]
    assert (data["stp_state"], data["mcast_snooping"], data["group_fwd_mask"]) == (0, 0, "0xfff8")
    assert {name for name, item in links.items() if item.get("master") == "lan1"} == {"r1.eth1", "r2.eth1", "r3.eth1"}
    assert links["lan1"]["mtu"] == 9000
    hub_addresses = run("ip", "-n", f"{project.name}-hub", "-o", "addr", "show").stdout
    assert hub_addresses.strip() == "" or all(" lo " in line for line in hub_addresses.splitlines())
    rows = {r["netns"]: r for r in project.ps()}
    hub_row = rows[f"{project.name}-hub"]
    assert hub_row["service"] == "(hub)"
    assert hub_row["status"] == "linked"
    assert {i["ifname"]: (i["present"], i["up"]) for i in hub_row["interfaces"]} == {  # type: ignore[union-attr]
        "lan1": (True, True),
        "r1.eth1": (True, True),
        "r2.eth1": (True, True),
        "r3.eth1": (True, True),
    }
    assert all(r["drift"] == [] for r in rows.values())


def test_two_lans_joined_by_a_router(project: Project) -> None:
    project.write(two_lans(project))
    project.cli("up", "-d")
    for source in ("a1", "a2"):
        for target in ("198.18.2.21", "198.18.2.22"):
            assert ping(project, source, target).returncode == 0, (source, target)
    assert ping(project, "b2", "198.18.1.11").returncode == 0


def host_picture() -> tuple[object, ...]:
    links = sorted(item["ifname"] for item in json.loads(run("ip", "-j", "link", "show").stdout))
    bridges = sorted(item["ifname"] for item in json.loads(run("ip", "-j", "link", "show", "type", "bridge").stdout))
    rules = [
        [line for line in run(tool).stdout.splitlines() if not line.startswith("#")]
        for tool in ("iptables-save", "ip6tables-save")
    ]
    return links, bridges, rules


def test_nothing_of_the_lab_appears_in_the_host_namespace(project: Project) -> None:
    project.write(lan_lab(project))
    # compose's own part first (containers, and whatever compose itself makes), then everything composens does.
    run("docker", "compose", "-p", project.name, "up", "-d", cwd=project.folder)
    before = host_picture()
    project.cli("netns", "link")
    assert ping(project, "r1", "10.1.0.2").returncode == 0
    assert host_picture() == before


def test_a_restarted_member_gets_its_port_back_and_the_others_keep_theirs(project: Project) -> None:
    project.write(lan_lab(project))
    project.cli("up", "-d")
    ports = {name: item["ifindex"] for name, item in hub_links(project).items()}
    run("docker", "restart", "-t", "0", project.container("r2"))
    assert "r2.eth1" not in hub_links(project)  # the pair died with r2's namespace
    assert ping(project, "r1", "10.1.0.3").returncode == 0  # the segment still switches for the others
    project.cli("netns", "link")
    after = {name: item["ifindex"] for name, item in hub_links(project).items()}
    assert "r2.eth1" in after
    assert {n: i for n, i in after.items() if n != "r2.eth1"} == {n: i for n, i in ports.items() if n != "r2.eth1"}
    assert ping(project, "r1", "10.1.0.2").returncode == 0
    assert ping(project, "r2", "2001:db8:1::3").returncode == 0


def hub_left(project: Project) -> list[str]:
    found = [p.name for p in NETNS_DIR.iterdir() if p.name.startswith(project.name)] if NETNS_DIR.exists() else []
    mounts = Path("/proc/mounts").read_text()
    found += [line.split()[1] for line in mounts.splitlines() if f"/netns/{project.name}" in line]
    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    found += [name for name, hub in state.get("hubs", {}).items() if hub["project"] == project.name]
    found += [p for p in state.get("projects", {}) if p == project.name]
    found += run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}").stdout.split()
    return found


def test_down_leaves_no_hub_port_entry_or_container(project: Project) -> None:
    project.write(lan_lab(project))
    project.cli("up", "-d")
    done = project.cli("down", "-t", "0")
    assert f"{project.name}-hub: /var/run/netns/{project.name}-hub (a namespace of its own) hub remove" in done.stdout
    assert hub_left(project) == []


@pytest.mark.parametrize("point", ["after-first-entry", "after-veths"])
def test_kill_9_midway_then_up_or_down_converges(project: Project, point: str) -> None:
    project.write(lan_lab(project))
    project.crash(point, "up", "-d")
    project.cli("up", "-d")
    assert ping(project, "r1", "10.1.0.3").returncode == 0
    assert project.cli("plan", "--exit-code", check=False).returncode == 0
    project.cli("down", "-t", "0")
    assert hub_left(project) == []


def test_prune_removes_the_hub_of_a_project_that_is_gone(project: Project) -> None:
    project.write(lan_lab(project))
    project.cli("up", "-d")
    run("docker", "compose", "-p", project.name, "down", "-t", "0", cwd=project.folder)  # composens not asked
    assert (NETNS_DIR / f"{project.name}-hub").exists()  # the hub is composens' own: it outlives the containers
    pruned = project.cli("netns", "prune")
    assert f"removed hub {project.name}-hub (project {project.name}): project not running" in pruned.stdout
    assert hub_left(project) == []


def test_a_namespace_made_by_hand_under_a_deleted_hubs_name_is_never_taken_for_the_hub(project: Project) -> None:
    """The kernel gives a freed namespace's inode to the next one made: the hub is known by its cookie too."""
    project.write(two_lans(project))
    project.cli("up", "-d")
    hub = f"{project.name}-hub"
    old_inode = (NETNS_DIR / hub).stat().st_ino
    run("ip", "netns", "delete", hub)  # a person removes the hub ...
    run("ip", "netns", "add", hub)  # ... and makes a namespace of their own under its name
    try:
        run("ip", "-n", hub, "link", "add", "name", "mine", "type", "bridge")
        print(f"hub inode {old_inode}, the person's {(NETNS_DIR / hub).stat().st_ino}")
        again = project.cli("up", "-d", check=False)
        assert again.returncode == 6, again.stdout + again.stderr
        assert f"{NETNS_DIR / hub} exists and was not made by composens" in again.stderr
        project.cli("down", "-t", "0")
        assert (NETNS_DIR / hub).exists()
        assert "mine" in hub_links(project)
    finally:
        run("ip", "netns", "delete", hub, check=False)
