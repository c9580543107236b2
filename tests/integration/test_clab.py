"""containerlab labs imported and run on the real engine, as containerlab deploys them (issue 27).

Each lab is a topology written in the style of containerlab's lab-examples, imported with `composens import` and
brought up with `composens up -d`. Two changes are made to the compose file the import writes, both for this
machine, not for the lab: `netns_prefix` (entries named after the test's project, so that runs never meet) and
`privileged: false` with the capabilities the nodes use (this machine refuses privileged containers). The lab's
name is unique per run, since containerlab's container names (`clab-<lab>-<node>`) are the engine's, not the
project's.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import yaml

from composens.system.kernel import processes
from tests.integration.conftest import IMAGE, STATE, Project, run
from tests.integration.test_hardware import first_ping
from tests.integration.test_resilience import stop, wait_until

pytestmark = pytest.mark.integration

# A routed lab with a switch, as a containerlab user writes one. {lab} is the lab's name, {image} the image.
L3_TOPOLOGY = """\
# Two clients behind a router, a probe on a switch. containerlab deploy -t l3.clab.yml && ./verify.sh
name: {lab}
topology:
  defaults:
    kind: linux
    image: {image}
    cmd: sleep 86400
  nodes:
    client2:
      stages:
        create:
          wait-for:
            - node: client1
              stage: create
      exec:
        - ip addr add 198.18.2.2/24 dev eth1
        - ip route add 198.18.1.0/24 via 198.18.2.1
    client1:
      stages:
        create:
          wait-for:
            - node: router
              stage: healthy
      exec:
        - ip addr add 198.18.1.2/24 dev eth1
        - ip route del default
        - ip route add default via 198.18.1.1
    router:
      mgmt-ipv4: 172.20.20.2
      mgmt-ipv6: 3fff:172:20:20::2
      sysctls:
        net.ipv4.ip_forward: 1
      healthcheck:
        test: [CMD, "true"]
        interval: 1
      exec:
        - ip addr add 198.18.1.1/24 dev eth1
        - ip addr add 198.18.2.1/24 dev eth2
    probe:
      startup-delay: 2
      stages:
        configure:
          wait-for:
            - node: router
              stage: configure
      cmd: sh -c 'cat /proc/uptime > /tmp/started; ip -o link show eth1 > /tmp/links; exec sleep 86400'
      exec:
        - ip addr add 198.18.3.2/24 dev eth1
    sw:
      kind: bridge
  links:
    - endpoints: ["router:eth1", "client1:eth1"]
    - endpoints: ["router:eth2", "client2:eth1"]
    - endpoints: ["probe:eth1", "sw:probe-eth1"]
"""

# The lab's own checks, as its users run them after `containerlab deploy`: only docker and the container names.
VERIFY = """\
#!/bin/sh
# Checks the l3 lab once deployed: containerlab deploy -t l3.clab.yml && ./verify.sh
set -eu
echo "client1 reaches client2 through the router"
docker exec clab-{lab}-client1 ping -c 2 -W 2 198.18.2.2
echo "client1's default route is the lab's"
docker exec clab-{lab}-client1 ip route show default | grep -q "via 198.18.1.1"
echo "the router has its management addresses"
docker exec clab-{lab}-router ip -4 addr show dev eth0 | grep -q "inet 172.20.20.2/24"
docker exec clab-{lab}-router ip -6 addr show dev eth0 | grep -q "inet6 3fff:172:20:20::2/64"
echo "jumbo frames cross the router's links"
docker exec clab-{lab}-client1 ip link show dev eth1 | grep -q "mtu 9500"
docker exec clab-{lab}-client1 ping -c 2 -W 2 -s 8972 198.18.1.1
echo "the probe is on the switch"
docker exec clab-{lab}-probe ip -4 addr show dev eth1 | grep -q "inet 198.18.3.2/24"
echo "all good"
"""


@dataclass
class Imported:
    lab: str  # the lab's name, this run's own
    warnings: list[str]  # what the import said on stderr
    config: dict[str, Any]  # the compose file, as the test wrote it back


def import_lab(project: Project, topology: str, name: str = "lab.clab.yml") -> Imported:
    """Write the topology under a lab name of this run's, import it into the project's folder, and make the two
    changes this machine needs (module docstring)."""
    lab = f"l{uuid.uuid4().hex[:7]}"
    (project.folder / name).write_text(topology.format(lab=lab, image=IMAGE))
    imported = run(sys.executable, "-m", "composens", "import", name, "-o", "docker-compose.yml", cwd=project.folder)
    compose_file = project.folder / "docker-compose.yml"
    config = yaml.safe_load(compose_file.read_text())
    config.setdefault("x-composens", {})["netns_prefix"] = f"{project.name}-"
    for service in config["services"].values():
        service["privileged"] = False
        service["cap_add"] = ["NET_ADMIN", "NET_RAW"]
    compose_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return Imported(lab, imported.stderr.splitlines(), config)


def inspect(container: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(run("docker", "inspect", container).stdout)[0]
    return found


def started_at(container: str) -> datetime:
    return moment(str(inspect(container)["State"]["StartedAt"]))


def moment(text: str) -> datetime:
    """docker's RFC 3339 time with nanoseconds, to microseconds (what datetime holds)."""
    found = re.fullmatch(r"([0-9-]+T[0-9:]+)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert found, text
    head, fraction, zone = found.groups()
    return datetime.fromisoformat(f"{head}.{(fraction or '')[:6].ljust(6, '0')}{'+00:00' if zone == 'Z' else zone}")


def snmp(container: str, field: str) -> int:
    """A counter of the container's IPv4 stack (/proc/net/snmp, its namespace's)."""
    lines = [line.split() for line in run("docker", "exec", container, "cat", "/proc/net/snmp").stdout.splitlines()]
    names, values = next((a, b) for a, b in itertools.pairwise(lines) if a[0] == "Ip:" and b[0] == "Ip:")
    return int(values[names.index(field)])


def test_a_containerlab_lab_runs_and_its_own_script_passes_unchanged(project: Project) -> None:
    imported = import_lab(project, L3_TOPOLOGY, "l3.clab.yml")
    lab = imported.lab
    (project.folder / "verify.sh").write_text(VERIFY.format(lab=lab))
    assert imported.warnings == []  # nothing of this lab is lost
    up = project.cli("up", "-d", check=False, timeout=180)
    assert up.returncode == 0, up.stderr
    names = {service: f"clab-{lab}-{service}" for service in ("router", "client1", "client2", "probe")}
    rows = {str(r["service"]): r for r in project.ps()}
    assert {s: rows[s]["container"] for s in names} == names  # composens finds them by compose's labels
    assert {s: rows[s]["status"] for s in names} == dict.fromkeys(names, "linked")
    wait_until(lambda: first_ping(project, "client1", "198.18.2.2"), timeout=30)

    verify = subprocess.run(["sh", "verify.sh"], cwd=project.folder, capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, f"{verify.stdout}\n{verify.stderr}"
    assert verify.stdout.rstrip().endswith("all good")

    # The management network: containerlab's subnets, and the gateways docker takes (the first addresses), as
    # containerlab leaves them to it.
    network = json.loads(run("docker", "network", "inspect", f"{project.name}_clab").stdout)[0]
    assert {c["Subnet"] for c in network["IPAM"]["Config"]} == {"172.20.20.0/24", "3fff:172:20:20::/64"}
    assert network["EnableIPv6"] is True
    gateways = [run("docker", "exec", names["router"], "ip", *family, "route", "show", "default").stdout.split()[2]
                for family in ([], ["-6"])]  # fmt: skip
    assert gateways == ["172.20.20.1", "3fff:172:20:20::1"]
    router = inspect(names["router"])["NetworkSettings"]["Networks"][f"{project.name}_clab"]
    assert (router["IPAddress"], router["GlobalIPv6Address"]) == ("172.20.20.2", "3fff:172:20:20::2")

    # The start order wait-for asked for: router healthy, then client1, then client2.
    health = inspect(names["router"])["State"]["Health"]["Log"]
    healthy = min(moment(h["End"]) for h in health if h["ExitCode"] == 0)
    assert healthy < started_at(names["client1"]) < started_at(names["client2"])
    # startup-delay: the probe's command ran two seconds after its container's first process started (both
    # read on the clock since boot: /proc/uptime in the container, the process's start time from the host).
    command_at = float(run("docker", "exec", names["probe"], "cat", "/tmp/started").stdout.split()[0])
    first = processes.started_at(int(inspect(names["probe"])["State"]["Pid"]))
    assert first is not None
    assert command_at - first / os.sysconf("SC_CLK_TCK") >= 1.9
    # A wait for the router's configure stage (its links): the probe's command started once the lab was wired.
    assert "eth1" in run("docker", "exec", names["probe"], "cat", "/tmp/links").stdout

    # 9000-byte packets cross a 9500-byte link whole: neither end fragments or reassembles them...
    before = (snmp(names["client1"], "FragCreates"), snmp(names["router"], "ReasmReqds"))
    run("docker", "exec", names["client1"], "ping", "-c", "3", "-W", "2", "-s", "8972", "198.18.1.1")
    assert (snmp(names["client1"], "FragCreates"), snmp(names["router"], "ReasmReqds")) == before
    # ...which those counters would show: a 9600-byte one is cut in two.
    run("docker", "exec", names["client1"], "ping", "-c", "1", "-W", "2", "-s", "9572", "198.18.1.1")
    assert snmp(names["client1"], "FragCreates") > before[0]


LONE_DEFAULT = """\
name: {lab}
topology:
  defaults: {{kind: linux, image: {image}, cmd: sleep 86400}}
  nodes:
    gw:
      exec: [ip addr add 198.18.4.1/24 dev eth1]
    host1:
      exec:
        - ip addr add 198.18.4.2/24 dev eth1
        - ip route add default via 198.18.4.1
  links:
    - endpoints: [gw:eth1, host1:eth1]
"""


def test_a_lone_default_route_fails_as_under_containerlab_and_the_lab_runs(project: Project) -> None:
    imported = import_lab(project, LONE_DEFAULT)
    lab = imported.lab
    assert any("'ip route add default via 198.18.4.1': stays a command" in w for w in imported.warnings)
    up = project.cli("up", "-d", check=False, timeout=180)
    assert up.returncode == 1, up.stderr  # the failed line, reported; everything else done
    assert "ip route add default via 198.18.4.1" in up.stderr
    assert {str(r["status"]) for r in project.ps() if r["service"] in ("gw", "host1")} == {"linked"}
    assert wait_until(lambda: first_ping(project, "host1", "198.18.4.1"), timeout=30) >= 0
    routes = run("docker", "exec", f"clab-{lab}-host1", "ip", "route", "show", "default").stdout
    assert "via 172.20.20.1 dev eth0" in routes  # docker's, as containerlab leaves it


COMPOSENS_LAB = """\
name: {lab}
topology:
  defaults: {{kind: linux, image: {image}, cmd: sleep 86400}}
  nodes:
    a:
      exec:
        - ip addr add 198.18.9.1/24 dev eth1
        - sh -c 'echo ran >> /tmp/exec-runs'
    b:
      exec: [ip addr add 198.18.9.2/24 dev eth1]
  links:
    - endpoints: ["a:eth1", "b:eth1"]
"""


def test_composens_links_checks_repairs_and_recovers_containers_named_by_containerlab(project: Project) -> None:
    imported = import_lab(project, COMPOSENS_LAB)
    lab, config = imported.lab, imported.config
    config["x-composens"]["checks"] = [
        {"name": "a reaches b", "ping": {"from": "a", "to": "198.18.9.2"}, "wait": 10},
        {"name": "b is b", "exec": {"service": "b", "command": ["hostname"]}, "stdout_contains": "b"},
    ]
    (project.folder / "docker-compose.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    a, b = f"clab-{lab}-a", f"clab-{lab}-b"
    project.cli("up", "-d", timeout=180)
    assert {str(r["container"]): r["status"] for r in project.ps() if r["service"] != "-"} == {
        a: "linked",
        b: "linked",
    }
    tested = project.cli("test", check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert run("docker", "exec", a, "cat", "/tmp/exec-runs").stdout == "ran\n"

    watch = project.spawn("watch")
    try:
        run("docker", "restart", "-t", "0", a)
        wait_until(lambda: first_ping(project, "a", "198.18.9.2"), timeout=30)
        wait_until(lambda: run("docker", "exec", a, "cat", "/tmp/exec-runs", check=False).stdout == "ran\nran\n")
    finally:
        out, err = stop(watch)
    assert "repaired: " in out, err

    run("docker", "restart", "-t", "0", b)
    project.cli("netns", "link")
    assert wait_until(lambda: first_ping(project, "a", "198.18.9.2"), timeout=30) >= 0

    original = STATE.read_text()
    STATE.write_text('{"version": 2, "entries": [')  # cut short: every command stops until it is recovered
    try:
        assert project.cli("ps", "--netns", check=False).returncode == 8
        recovered = project.cli("netns", "prune", "--recover")
        for service in ("a", "b"):
            assert f"adopted entry {project.name}-{service} (project {project.name}, service {service})" in (
                recovered.stdout
            )
        assert {str(r["container"]): r["status"] for r in project.ps() if r["service"] != "-"} == {
            a: "linked",
            b: "linked",
        }
    finally:
        for path in STATE.parent.glob("state.json.damaged-*"):
            path.unlink()
        if "damaged" in STATE.read_text() or STATE.read_text().startswith('{"version": 2, "entries": ['):
            STATE.write_text(original)
    project.cli("down", "-t", "0")
    assert run("docker", "ps", "-aq", "--filter", f"name=^clab-{lab}-").stdout.split() == []
