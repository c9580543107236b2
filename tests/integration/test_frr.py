"""Routing daemons on the real engine: FRR's OSPF over composens' links and LANs, and fault scenarios measured on it.

The image is built from Debian's packages by scripts/frr-image.sh, once per machine (three to four minutes the
first time, nothing pulled from a registry; .ci/run builds it before the suite). Where it cannot be built these
tests are skipped saying why, except in CI (CI set), where that is a failure.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import IMAGE, REPO, Project, run
from tests.integration.test_hardware import first_ping

pytestmark = pytest.mark.integration

FRR_IMAGE = os.environ.get("COMPOSENS_FRR_IMAGE", "composens-frr:bookworm")
CLAB_LAB = REPO / "tests" / "clab" / "import" / "frr-ospf" / "lab"


@pytest.fixture(scope="session")
def frr_image() -> str:
    built = run("bash", str(REPO / "scripts" / "frr-image.sh"), FRR_IMAGE, timeout=900, check=False)
    if built.returncode != 0:
        why = f"the FRR image {FRR_IMAGE} could not be built (scripts/frr-image.sh): {built.stderr.strip()[-300:]}"
        if os.environ.get("CI"):
            pytest.fail(f"CI requires the FRR tests to run: {why}")
        pytest.skip(why)
    return FRR_IMAGE


def wait_for(condition: object, timeout: float, what: str, seen: Callable[[], str] | None = None) -> None:
    """Wait until `condition` holds; on failure say `what`, and what `seen` finds then (a daemon's own view)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(1)
    raise AssertionError(f"{what} not within {timeout:.0f} s" + (f"; seen then:\n{seen()}" if seen else ""))


def vtysh(project: Project, service: str, command: str) -> str:
    return run("docker", "exec", project.container(service), "vtysh", "-c", command, check=False).stdout


OSPF_WIRING = """\
  lans:
    core: {{endpoints: ["r1:eth1", "r2:eth1", "r3:eth1"]}}
  links:
    - endpoints: ["r1:eth2", "h1:eth1"]
    - endpoints: ["r3:eth2", "h3:eth1"]
"""
# Three routers on a LAN, a host behind r1 and one behind r3. {r1} ... {h3}: what each service's x-composens
# says besides its addresses (start_after_wiring, or where it is placed).
OSPF_SERVICES = """\
x-router: &router
  image: {image}
  network_mode: none
  cap_add: [NET_ADMIN, NET_RAW, SYS_ADMIN]  # zebra's and ospfd's
  sysctls: {{net.ipv4.ip_forward: "1"}}
services:
  r1:
    <<: *router
    volumes: ["{folder}/r1.conf:/etc/frr/frr.conf"]
    x-composens: {{{r1}addresses: {{eth1: [198.18.20.1/24], eth2: [198.18.21.1/24]}}}}
  r2:
    <<: *router
    volumes: ["{folder}/r2.conf:/etc/frr/frr.conf"]
    x-composens: {{{r2}addresses: {{eth1: [198.18.20.2/24]}}}}
  r3:
    <<: *router
    volumes: ["{folder}/r3.conf:/etc/frr/frr.conf"]
    x-composens: {{{r3}addresses: {{eth1: [198.18.20.3/24], eth2: [198.18.23.1/24]}}}}
  h1:
    image: IMAGE
    network_mode: none
    x-composens: {{{h1}addresses: {{eth1: [198.18.21.2/24]}}, routes: [198.18.0.0/15 via 198.18.21.1]}}
  h3:
    image: IMAGE
    network_mode: none
    x-composens: {{{h3}addresses: {{eth1: [198.18.23.2/24]}}, routes: [198.18.0.0/15 via 198.18.23.1]}}
"""
ROUTER_INTERFACES = (("r1", ["eth1", "eth2"]), ("r2", ["eth1"]), ("r3", ["eth1", "eth2"]))


def ospf_lab(image: str, folder: Path | str, **extra: str) -> str:
    """The lab's wiring and services; `extra` per service (missing: nothing besides its addresses)."""
    services = {name: extra.get(name, "") for name in ("r1", "r2", "r3", "h1", "h3")}
    return OSPF_WIRING.format() + OSPF_SERVICES.format(image=image, folder=folder, **services)


def write_frr_confs(folder: Path) -> None:
    for router, interfaces in ROUTER_INTERFACES:
        (folder / f"{router}.conf").write_text(frr_conf(router, interfaces))


def frr_conf(router: str, interfaces: list[str]) -> str:
    # `interface` stanzas before `router ospf`: FRR arms an interface's wait timer with the dead interval it
    # knows when `network` brings the interface in.
    stanzas = "".join(f"interface {i}\n ip ospf hello-interval 1\n ip ospf dead-interval 4\n" for i in interfaces)
    return f"frr defaults traditional\nhostname {router}\n{stanzas}router ospf\n network 198.18.0.0/15 area 0\n"


def test_ospf_over_a_lan_of_routers_that_start_once_wired(project: Project, frr_image: str) -> None:
    wait = "start_after_wiring: true, "
    head = f"x-composens:\n  netns_prefix: {project.name}-\n  hub: {project.name}-hub\n"
    project.write(head + ospf_lab(frr_image, ".", r1=wait, r2=wait, r3=wait))
    write_frr_confs(project.folder)
    project.cli("up", "-d")
    wait_for(lambda: vtysh(project, "r2", "show ip ospf neighbor").count("Full") == 2, 60, "two Full adjacencies")
    wait_for(lambda: first_ping(project, "h1", "198.18.23.2"), 60, "h1 reaching h3 through r1 and r3")
    # FRR saw its interfaces, addresses in place, from the start: no wait for them in its log.
    assert "198.18.20.2/24" in vtysh(project, "r2", "show interface eth1")


def test_an_imported_containerlab_frr_lab_routes_end_to_end_and_reruns_exec_after_a_restart(
    project: Project, frr_image: str, tmp_path: Path
) -> None:
    lab = tmp_path / "clab"
    shutil.copytree(CLAB_LAB, lab)
    for conf in lab.glob("router*/frr.conf"):
        # OSPF's defaults (hello 10 s, a 40 s wait before a DR is elected) took a minute to route: point-to-point
        # links with a 1 s hello route in seconds, and the import is what this test is about.
        fast = r"\1 ip ospf hello-interval 1\n ip ospf dead-interval 3\n ip ospf network point-to-point\n"
        conf.write_text(re.sub(r"^(interface eth\d+\n)", fast, conf.read_text(), flags=re.M))
    topology = (lab / "frr.clab.yml").read_text().replace("quay.io/frrouting/frr:10.2.1", frr_image)
    topology = topology.replace("busybox:1.36", os.environ.get("COMPOSENS_DEMO_IMAGE", "busybox:1.36"))
    topology = topology.replace("cmd: sleep infinity", "cmd: sleep 86400")
    topology = topology.replace(
        "        - ip route add 198.18.0.0/15 via 198.19.1.1\n",
        "        - ip route add 198.18.0.0/15 via 198.19.1.1\n        - sh -c 'echo ran >> /tmp/exec-runs'\n",
    )
    (lab / "frr.clab.yml").write_text(topology)
    # --compose-names: the test's own project and container names, so that runs never meet (test_clab.py runs a lab
    # under containerlab's names).
    imported = run(
        sys.executable, "-m", "composens", "import", str(lab / "frr.clab.yml"), "--no-mgmt", "--compose-names",
        "-o", str(project.folder / "docker-compose.yml"), cwd=project.folder,
    )  # fmt: skip
    assert imported.returncode == 0
    compose_file = project.folder / "docker-compose.yml"
    config = yaml.safe_load(compose_file.read_text())
    del config["name"]  # the test's own project name
    config["x-composens"]["netns_prefix"] = f"{project.name}-"
    for service in config["services"].values():
        # containerlab runs its nodes privileged; this machine grants no container every capability.
        service.pop("privileged", None)
        service["cap_add"] = ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]
    compose_file.write_text(yaml.safe_dump(config, sort_keys=False))
    project.cli("up", "-d")
    wait_for(lambda: first_ping(project, "PC1", "198.19.3.2"), 90, "PC1 reaching PC3 over OSPF")
    assert run("docker", "exec", project.container("PC1"), "cat", "/tmp/exec-runs").stdout == "ran\n"
    run("docker", "restart", "-t", "0", project.container("PC1"))
    project.cli("netns", "link")
    assert run("docker", "exec", project.container("PC1"), "cat", "/tmp/exec-runs").stdout == "ran\nran\n"
    wait_for(lambda: first_ping(project, "PC1", "198.19.3.2"), 60, "PC1 reaching PC3 again")


def two_hosts_seen(lab: Any, host2: Any) -> str:
    """What each host shows of the spanning LAN: the daemons' neighbours, the hubs' VXLAN ports and FDBs, the
    underlay (for a failure that is not reproduced alone)."""
    project, hub = lab.project, lab.project.name
    on2 = functools.partial(host2.run, check=False)
    shown = [
        vtysh(project, "r2", "show ip ospf neighbor"),
        on2("docker", "exec", project.container("r3"), "vtysh", "-c", "show ip ospf neighbor").stdout,
        run("ip", "-n", hub, "-d", "-s", "link", "show", "dev", "vx.core", check=False).stdout,
        run("bridge", "-n", hub, "fdb", "show", "br", "core", check=False).stdout,
        on2("ip", "-n", hub, "-d", "-s", "link", "show", "dev", "vx.core").stdout,
        on2("bridge", "-n", hub, "fdb", "show", "br", "core").stdout,
        run("ip", "-s", "link", "show", "dev", host2.host_if, check=False).stdout,
        run("ip", "neigh", "show", "dev", host2.host_if, check=False).stdout,
        run("ip", "route", "get", host2.underlay, check=False).stdout,
        run("ss", "-uan", check=False).stdout,
        run("ip", "-d", "link", "show", "type", "vxlan", check=False).stdout,
        run("timeout", "3", "tcpdump", "-ni", host2.host_if, "-c", "10", "udp", check=False).stdout,
        lab.on1("ps", "--netns", check=False).stdout,
        lab.on2("ps", "--netns", check=False).stdout,
    ]
    return "\n".join(shown)


def test_ospf_across_two_hosts_on_a_lan_that_spans_them(project: Project, frr_image: str, tmp_path: Path) -> None:
    from tests.integration.test_multihost import TwoHosts
    from tests.integration.twohost import second_host

    # Both hosts read the configs from one folder that each can see (host 2's mount namespace shares /tmp).
    configs = tmp_path / "frr"
    configs.mkdir()
    write_frr_confs(configs)
    with second_host((os.environ.get("COMPOSENS_DEMO_IMAGE", "busybox:1.36"), frr_image)) as host2:
        lab = TwoHosts(project, host2)
        try:
            on1, on2 = "host: h1, ", "host: h2, "
            lab.write(ospf_lab(frr_image, configs, r1=on1, r2=on1, r3=on2, h1=on1, h3=on2))
            lab.on1("up", "-d")
            lab.on2("up", "-d")
            wait_for(
                lambda: vtysh(project, "r2", "show ip ospf neighbor").count("Full") == 2,
                90,
                "two Full on host 1's r2",
                lambda: two_hosts_seen(lab, host2),
            )
            wait_for(lambda: first_ping(project, "h1", "198.18.23.2"), 60, "h1 (host 1) reaching h3 (host 2)")
            route = run("ip", "netns", "exec", f"{project.name}-r1", "ip", "route", "show", "198.18.23.0/24").stdout
            assert "via 198.18.20.3 dev eth1" in route, route  # learnt over the LAN, through host 2's r3
            assert "proto ospf" in route, route
        finally:
            # Host 1's part while host 2's underlay is still there: without it host 1 cannot tell which host it is,
            # its `down` fails, and the project's record outlived the test.
            lab.on1("down", "-t", "0", check=False)
            lab.cleanup_host2()


# --------------------------------------------------------------------------- fault scenarios (issue 28)

# Two edges, w and e, joined through two cores, a and b, at equal cost; a host behind each edge. Each core link is a
# LAN of two: the edge's end keeps its carrier when the core's end is cut, as behind a switch, so a core can fail
# silently. OSPF: hello 1 s, dead 3 s, point-to-point on every link (no DR election to wait for), and no hold on
# LSAs or SPF (FRR waits 5 s between two LSAs of a router by default: a core coming back took 11 to 16 s).
CORE_ADDRESSES = {  # (router, interface): address; the LANs as (name, edge end, core end)
    ("w", "eth1"): "198.18.10.1", ("a", "eth1"): "198.18.10.2",
    ("w", "eth2"): "198.18.11.1", ("b", "eth1"): "198.18.11.2",
    ("a", "eth2"): "198.18.12.1", ("e", "eth1"): "198.18.12.2",
    ("b", "eth2"): "198.18.13.1", ("e", "eth2"): "198.18.13.2",
    ("w", "eth3"): "198.18.30.1", ("e", "eth3"): "198.18.31.1",
}  # fmt: skip
CORE_LANS = (
    ("wa", "w:eth1", "a:eth1"),
    ("wb", "w:eth2", "b:eth1"),
    ("ae", "e:eth1", "a:eth2"),
    ("be", "e:eth2", "b:eth2"),
)
TOWARDS = {"a": ("198.18.10.2", "198.18.12.1", "w:eth1"), "b": ("198.18.11.2", "198.18.13.1", "w:eth2")}
HW, HE = "198.18.30.2", "198.18.31.2"
INTERVAL = 0.02
ROUTE = "show ip route {}/24"


def core_lab(project: Project, image: str, scenarios: dict[str, object]) -> str:
    routers = {
        "w": ("eth1", "eth2", "eth3"),
        "a": ("eth1", "eth2"),
        "b": ("eth1", "eth2"),
        "e": ("eth1", "eth2", "eth3"),
    }
    for router, interfaces in routers.items():
        stanzas = "".join(
            f"interface {i}\n ip ospf hello-interval 1\n ip ospf dead-interval 3\n ip ospf network point-to-point\n"
            for i in interfaces
        )
        (project.folder / f"{router}.conf").write_text(
            f"frr defaults traditional\nhostname {router}\n{stanzas}router ospf\n network 198.18.0.0/15 area 0\n"
            " timers throttle lsa all 0\n timers lsa min-arrival 0\n timers throttle spf 0 50 500\n"
        )
    both = "vtysh -c '{show}' | grep -c ', via ' | grep -qx 2"
    only = "vtysh -c '{show}' | grep -q {keep} && ! vtysh -c '{show}' | grep -q {drop}"
    checks = [
        {
            "name": "w has both paths",
            "exec": {"service": "w", "command": both.format(show=ROUTE.format("198.18.31.0"))},
            "wait": 60,
        },
        {
            "name": "e has both paths",
            "exec": {"service": "e", "command": both.format(show=ROUTE.format("198.18.30.0"))},
            "wait": 60,
        },
    ]
    for core, other in (("a", "b"), ("b", "a")):
        show = ROUTE.format("198.18.31.0")
        checks.append(
            {
                "name": f"w routes around {core}",
                "exec": {
                    "service": "w",
                    "command": only.format(show=show, keep=TOWARDS[other][0], drop=TOWARDS[core][0]),
                },
            }
        )
    lab = {
        "x-composens": {
            "netns_prefix": f"{project.name}-",
            "hub": f"{project.name}-hub",
            "lans": {name: {"endpoints": [edge, core]} for name, edge, core in CORE_LANS},
            "links": [{"endpoints": ["w:eth3", "hw:eth1"]}, {"endpoints": ["e:eth3", "he:eth1"]}],
            "checks": checks,
            "probes": {"west-east": {"ping": {"from": "hw", "to": HE, "interval": f"{INTERVAL * 1000:g}ms"}}},
            "scenarios": scenarios,
        },
        "services": {
            "hw": {
                "image": IMAGE,
                "network_mode": "none",
                "x-composens": {"addresses": {"eth1": [f"{HW}/24"]}, "routes": ["198.18.0.0/15 via 198.18.30.1"]},
            },
            "he": {
                "image": IMAGE,
                "network_mode": "none",
                "x-composens": {"addresses": {"eth1": [f"{HE}/24"]}, "routes": ["198.18.0.0/15 via 198.18.31.1"]},
            },
        },
    }
    for router, interfaces in routers.items():
        lab["services"][router] = {  # type: ignore[index]
            "image": image,
            "network_mode": "none",
            "cap_add": ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"],
            "sysctls": {"net.ipv4.ip_forward": "1"},
            "volumes": [f"./{router}.conf:/etc/frr/frr.conf"],
            "x-composens": {
                "start_after_wiring": True,
                "addresses": {i: [f"{CORE_ADDRESSES[router, i]}/24"] for i in interfaces},
            },
        }
    return yaml.safe_dump(lab, sort_keys=False)


def core_on_path(project: Project) -> str:
    """The core the probe's echo requests cross: the next hop w's kernel picks for that flow (ECMP hashes it)."""
    out = run("ip", "-n", f"{project.name}-w", "route", "get", HE, "from", HW, "iif", "eth3").stdout
    return next(core for core, (address, _, _) in TOWARDS.items() if f"via {address} " in out)


def icmp_echoes(pcap: Path) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]]:
    """Echo requests and replies in a pcap file (Ethernet, IPv4): (identifier, sequence) -> capture time."""
    data = pcap.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), hex(magic)
    scale = 1e-6 if magic == 0xA1B2C3D4 else 1e-9
    requests: dict[tuple[int, int], float] = {}
    replies: dict[tuple[int, int], float] = {}
    offset = 24
    while offset + 16 <= len(data):
        seconds, fraction, captured, _ = struct.unpack_from("<IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00" or frame[14 + 9] != 1:
            continue
        icmp = frame[14 + (frame[14] & 0x0F) * 4 :]
        kind, _, _, ident, sequence = struct.unpack_from("!BBHHH", icmp)
        when = seconds + fraction * scale
        if kind == 8:
            requests.setdefault((ident, sequence), when)
        elif kind == 0:
            replies.setdefault((ident, sequence), when)
    return requests, replies


def longest_outage(requests: dict[tuple[int, int], float], replies: dict[tuple[int, int], float]) -> float:
    """As composens measures it: from the first unanswered request to the first answered one after it."""
    longest, first_lost = 0.0, None
    for key, sent in sorted(requests.items(), key=lambda item: item[1]):
        if key not in replies:
            first_lost = sent if first_lost is None else first_lost
        elif first_lost is not None:
            longest, first_lost = max(longest, sent - first_lost), None
    return longest


def test_a_core_that_fails_silently_is_routed_around_at_the_dead_interval_a_cut_link_at_once(
    project: Project, frr_image: str
) -> None:
    project.write(core_lab(project, frr_image, {}))
    project.cli("up", "-d")
    done = project.cli("test", "w has both paths", "e has both paths", check=False, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    core = core_on_path(project)
    other = "b" if core == "a" else "a"
    rest = ["w", "e", other, "hw", "he"]
    again = [
        {"expect": {"check": "w has both paths", "within": "40s"}},
        {"expect": {"check": "e has both paths", "within": "40s"}},
    ]
    project.write(
        core_lab(
            project,
            frr_image,
            {
                # docker pause freezes the core's daemons, not its kernel: it keeps forwarding with the routes it has,
                # while its neighbours drop it once they miss its hellos for the dead interval.
                "core-paused": {
                    "steps": [
                        {"sleep": "500ms"},
                        {"pause": core},
                        {"expect": {"check": f"w routes around {core}", "within": "8s"}},
                        {"expect": {"probe": "west-east", "loss": {"max": "2%"}}},
                        {"unpause": core},
                        *again,
                    ]
                },
                # Silent: its daemons frozen and its ends cut behind the LANs (the edges keep their carrier).
                "core-dies-silently": {
                    "steps": [
                        {"sleep": "500ms"},
                        {"partition": [rest, [core]]},
                        {"pause": core},
                        {
                            "expect": {
                                "probe": "west-east",
                                "recovers_within": "8s",
                                "outage": {"min": "2s", "max": "5s"},
                            }
                        },
                        {"unpause": core},
                        "heal",
                        *again,
                    ]
                },
                # w's own end towards the core: FRR sees the carrier go and routes around it at once.
                "core-link-cut": {
                    "steps": [
                        {"sleep": "500ms"},
                        {"link": {"down": TOWARDS[core][2]}},
                        {"expect": {"probe": "west-east", "recovers_within": "2s", "outage": {"max": "1s"}}},
                        {"link": {"up": TOWARDS[core][2]}},
                        *again,
                    ]
                },
            },
        )
    )
    pcap = project.folder / "hw.pcap"
    tcpdump = subprocess.Popen(
        ["ip", "netns", "exec", f"{project.name}-hw", "tcpdump", "-i", "eth1", "-U", "-n", "-w", str(pcap), "icmp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1)  # tcpdump listening
        ran = project.cli(
            "scenario",
            "run",
            "core-paused",
            "core-dies-silently",
            "core-link-cut",
            "--format",
            "json",
            check=False,
            timeout=400,
        )
    finally:
        tcpdump.send_signal(signal.SIGINT)
        tcpdump.communicate(timeout=30)
    assert ran.returncode == 0, ran.stderr
    paused, silent, cut = json.loads(ran.stdout)
    assert [r["result"] for r in (paused, silent, cut)] == ["pass", "pass", "pass"], ran.stderr
    verdicts = {v["name"]: v for report in (paused, silent, cut) for v in report["expectations"]}
    dropped = verdicts[f"check 'w routes around {core}' within 8 s"]["figure"]
    assert 2 <= dropped <= 5, dropped  # the pause was seen only once the dead interval passed
    outage = verdicts["west-east outage <= 5 s"]["figure"]
    assert 2 <= outage <= 5, outage
    cut_outage = max((o["duration"] for o in probe_of(cut)["outages"]), default=0.0)
    assert cut_outage < outage / 2, (cut_outage, outage)
    # The capture of the same probe in hw's namespace says the same, within two intervals.
    requests, replies = icmp_echoes(pcap)
    ours = {
        key: t
        for key, t in requests.items()
        if t >= silent["started_at"] and t <= silent["started_at"] + silent["seconds"]
    }
    assert len(ours) >= 0.9 * silent["seconds"] / INTERVAL
    captured = longest_outage(ours, replies)
    assert abs(captured - outage) <= 2 * INTERVAL, (captured, outage)


def probe_of(report: dict[str, object]) -> dict[str, object]:
    (probe,) = report["probes"]  # type: ignore[misc]
    return probe  # type: ignore[no-any-return]
