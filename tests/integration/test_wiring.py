"""Declared wiring on the real engine: the seed's lab from one `composens up -d` (issue: declared wiring)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import NETNS_DIR, Project, run

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def seed_lab(project: Project) -> str:
    """The demo compose file, with entry names prefixed so tests never collide with a running demo."""
    text = DEMO.read_text().replace("image: busybox:1.36", "image: IMAGE").replace("name: seedlab\n", "")
    return text.replace("x-composens:\n  links:", f"x-composens:\n  netns_prefix: {project.name}-\n  links:", 1)


def ping(project: Project, service: str, address: str) -> subprocess.CompletedProcess[str]:
    return run(
        "ip",
        "netns",
        "exec",
        f"{project.name}-{service}",
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        address,
        check=False,
    )


def host_links(prefix: str) -> list[str]:
    out = run("ip", "-o", "link", "show").stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if prefix in line]


def test_seed_lab_pings_over_ipv4_and_ipv6_through_the_routers(project: Project) -> None:
    project.write(seed_lab(project))
    done = project.cli("up", "-d")
    assert "wired:" in done.stdout
    assert ping(project, "node1", "20.0.0.2").returncode == 0
    assert ping(project, "node1", "2001:2222:2222::2").returncode == 0
    assert ping(project, "node2", "10.0.0.1").returncode == 0
    # IPv4 goes through router1 only, IPv6 through router2 only
    route = run("ip", "-n", f"{project.name}-node1", "route", "get", "20.0.0.2").stdout
    assert "via 10.0.0.10 dev node1_router1" in route
    rows = {r["netns"]: r for r in project.ps()}
    router1 = rows[f"{project.name}-router1"]
    assert router1["interfaces"] == [
        {
            "ifname": "router1_node1",
            "present": True,
            "up": True,
            "set_down": False,
            "conditions": None,
            "mac": None,
            "remote": None,
        },
        {
            "ifname": "router1_node2",
            "present": True,
            "up": True,
            "set_down": False,
            "conditions": None,
            "mac": None,
            "remote": None,
        },
    ]


def test_re_up_changes_nothing_and_restart_is_repaired(project: Project) -> None:
    project.write(seed_lab(project))
    project.cli("up", "-d")
    again = project.cli("up", "-d")
    assert "wired:" not in again.stdout
    run("docker", "restart", "-t", "0", project.container("router1"))
    assert ping(project, "node1", "20.0.0.2").returncode != 0  # the pair died with router1's namespace
    rows = {r["netns"]: r for r in project.ps()}
    node1 = {i["ifname"]: i for i in rows[f"{project.name}-node1"]["interfaces"]}  # type: ignore[union-attr]
    assert node1["node1_router1"]["present"] is False
    repaired = project.cli("up", "-d")
    assert "ip link add name node1_router1" in repaired.stdout
    assert "node1_router2" not in repaired.stdout  # only what was missing is recreated
    assert ping(project, "node1", "20.0.0.2").returncode == 0
    assert ping(project, "node1", "2001:2222:2222::2").returncode == 0


def test_host_endpoint_is_wired_and_removed_by_down(project: Project) -> None:
    host_if = f"{project.name[:9]}up"
    project.write(f"""
x-composens:
  netns_prefix: {project.name}-
  links:
    - endpoints: ["r1:uplink", "host:{host_if}"]
      mtu: 1400
  host:
    addresses: {{{host_if}: [198.18.0.1/30]}}
services:
  r1:
    image: IMAGE
    network_mode: none
    x-composens:
      addresses: {{uplink: [198.18.0.2/30]}}
""")
    project.cli("up", "-d")
    assert host_links(host_if) == [host_if]
    assert "mtu 1400" in run("ip", "link", "show", host_if).stdout
    assert ping(project, "r1", "198.18.0.1").returncode == 0
    project.cli("down", "-t", "0")
    assert host_links(host_if) == []
    assert not [p for p in NETNS_DIR.iterdir() if p.name.startswith(project.name)]
    assert run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}").stdout == ""


def test_failure_midway_rolls_back_and_foreign_interface_survives(project: Project) -> None:
    foreign = f"{project.name[:9]}fx"
    run("ip", "link", "add", foreign, "type", "veth", "peer", "name", f"{foreign}p")
    try:
        project.write(f"""
x-composens:
  netns_prefix: {project.name}-
  links:
    - endpoints: ["a:a_b", "b:b_a"]
    - endpoints: ["a:a_c", "c:c_a"]
    - endpoints: ["c:c_host", "host:{foreign}"]
services:
  a: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{a_b: [192.0.2.1/30]}}}}}}
  b: {{image: IMAGE, network_mode: none}}
  c: {{image: IMAGE, network_mode: none}}
""")
        failed = project.cli("up", "-d", check=False)
        assert failed.returncode == 6, failed.stderr
        assert f"interface {foreign} already exists in the host's namespace" in failed.stderr
        # Refused before compose ran: no container, no entry, nothing wired.
        assert run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}").stdout == ""
        assert not [p for p in NETNS_DIR.iterdir() if p.name.startswith(project.name)]
        assert run("ip", "link", "show", foreign, check=False).returncode == 0  # the foreign one survives
        plan = re.sub(r" address \S+", "", project.cli("plan").stdout)  # MACs aside
        assert f"ip link add name c_host netns {project.name}-c type veth peer name {foreign}" in plan
    finally:
        run("ip", "link", "del", foreign, check=False)


def test_invalid_wiring_is_refused_before_anything_runs(project: Project) -> None:
    project.write("""
x-composens:
  links:
    - endpoints: ["a:eth_with_a_long_name", "b:b_a"]
services:
  a: {image: IMAGE, network_mode: none}
  b: {image: IMAGE, network_mode: none}
""")
    refused = project.cli("up", "-d", check=False)
    assert refused.returncode == 3
    assert refused.stderr.strip() == (
        "composens: error: docker-compose.yml: x-composens.links[0].endpoints[0]: 'eth_with_a_long_name' is not a "
        "valid interface name (1 to 15 letters, digits or '_.-@+', not starting with '-')"
    )
    assert run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}").stdout == ""


def test_kernel_refusal_midway_undoes_this_runs_links(project: Project) -> None:
    # b's route goes through b_a to a gateway on b's docker network: the planner sees the gateway on one of
    # b's subnets, the kernel refuses it on b_a. Pairs and addresses go in first; then the route fails and
    # everything this run made must go.
    project.write(f"""
x-composens:
  netns_prefix: {project.name}-
  links:
    - endpoints: ["a:a_b", "b:b_a"]
    - endpoints: ["a:a_c", "c:c_a"]
services:
  a:
    image: IMAGE
    network_mode: none
    x-composens:
      addresses: {{a_b: [192.0.2.1/30], a_c: [192.0.2.5/30]}}
  b:
    image: IMAGE
    networks: [lab]
    x-composens:
      addresses: {{b_a: [192.0.2.2/30]}}
      routes: [198.18.7.0/24 via 198.19.77.200 dev b_a]
  c: {{image: IMAGE, network_mode: none}}
networks:
  lab:
    ipam: {{config: [{{subnet: 198.19.77.0/24}}]}}
""")
    failed = project.cli("up", "-d", check=False)
    assert failed.returncode == 7, failed.stderr
    assert failed.stderr.splitlines()[-1].startswith(
        f"composens: error: `ip -n {project.name}-b route add 198.18.7.0/24 via 198.19.77.200 dev b_a` failed:"
    )
    assert failed.stderr.rstrip().endswith("undid what this run had done: the lab is as it was before")
    for service in ("a", "b", "c"):
        names = run("ip", "-n", f"{project.name}-{service}", "-o", "link", "show").stdout
        assert "a_b" not in names
        assert "a_c" not in names
        assert "c_a" not in names
    # entries stay: they were right; a corrected file then wires cleanly
    assert project.status()[f"{project.name}-a"] == "linked"
    text = (project.folder / "docker-compose.yml").read_text().replace("198.19.77.200 dev b_a", "192.0.2.1")
    (project.folder / "docker-compose.yml").write_text(text)
    project.cli("up", "-d")
    assert run("ip", "-n", f"{project.name}-b", "route", "get", "198.18.7.1").stdout.split()[2] == "192.0.2.1"
