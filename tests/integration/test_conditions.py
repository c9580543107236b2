"""Link conditions, links cut and restored, and capture, on the real engine and this machine's kernel.

This kernel has tbf but no sch_netem (CONFIG_NET_SCH_NETEM is off and modules cannot load), so the
rate tests here run end to end; delay, loss and the rest are proven on a Debian kernel in a KVM guest
(test_netem_kernel.py), and here composens must refuse them with a clear error instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import NETNS_DIR, Project, run
from tests.integration.test_wiring import ping

pytestmark = pytest.mark.integration

# Sends 200 KB and waits until the receiver has read it all and closed: the transfer's own time.
TRANSFER = """
import socket, sys, time
mode, addr = sys.argv[1], sys.argv[2]
if mode == "recv":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((addr, 5001)); s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept()
    while c.recv(65536):
        pass
    c.close()
else:
    c = socket.create_connection((addr, 5001)); start = time.monotonic()
    c.sendall(bytes(204800)); c.shutdown(socket.SHUT_WR); c.recv(1)
    print(f"{time.monotonic() - start:.3f}")
"""


def pair_lab(project: Project, netem: str = "") -> str:
    return f"""
x-composens:
  netns_prefix: {project.name}-
  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
{netem}
services:
  r1: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.0.1/30]}}}}}}
  r2: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.0.2/30]}}}}}}
"""


def transfer(project: Project, source: str, target: str, address: str, tmp: Path) -> float:
    """Seconds to send 200 KB from one service's namespace to another's, over the lab's link."""
    script = tmp / f"transfer-{uuid.uuid4().hex[:6]}.py"
    script.write_text(TRANSFER)
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", f"{project.name}-{target}", sys.executable, str(script), "recv", address],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        sent = run("ip", "netns", "exec", f"{project.name}-{source}", sys.executable, str(script), "send", address)
        return float(sent.stdout)
    finally:
        receiver.wait(timeout=30)


def conditions(project: Project) -> list[dict[str, object]]:
    shown: list[dict[str, object]] = json.loads(project.cli("netem", "show", "--format", "json").stdout)
    return shown


def test_a_declared_rate_limits_one_direction_and_reads_back(project: Project, tmp_path: Path) -> None:
    project.write(pair_lab(project, '      netem: {"r1:eth1": {rate: 1mbit}}'))
    done = project.cli("up", "-d")
    assert f"wired: tc -n {project.name}-r1 qdisc replace dev eth1 root tbf rate 1mbit" in done.stdout
    assert transfer(project, "r1", "r2", "198.18.0.2", tmp_path) >= 1.3
    assert transfer(project, "r2", "r1", "198.18.0.1", tmp_path) < 0.5  # r2's egress is free
    assert conditions(project) == [
        {"service": "r1", "ifname": "eth1", "live": "rate 1mbit", "wanted": "rate 1mbit", "source": "declared"}
    ]
    assert project.cli("plan", "--exit-code", check=False).returncode == 0


def test_run_time_conditions_survive_a_restart_until_reset(project: Project, tmp_path: Path) -> None:
    project.write(pair_lab(project))
    project.cli("up", "-d")
    assert conditions(project) == []  # an unimpaired lab
    assert transfer(project, "r1", "r2", "198.18.0.2", tmp_path) < 0.5
    project.cli("netem", "set", "r1:eth1", "--rate", "1mbit", "--both")
    assert transfer(project, "r1", "r2", "198.18.0.2", tmp_path) >= 1.3
    assert transfer(project, "r2", "r1", "198.18.0.1", tmp_path) >= 1.3
    rows = {r["netns"]: r for r in project.ps()}
    [eth1] = rows[f"{project.name}-r1"]["interfaces"]  # type: ignore[misc]
    assert eth1["conditions"] == "rate 1mbit"
    assert rows[f"{project.name}-r1"]["drift"] == []  # set at run time: what composens wants there now
    run("docker", "restart", "-t", "0", project.container("r1"))
    project.cli("netns", "link")  # the pair is new; the conditions set at run time come back on both ends
    assert {(r["service"], r["source"], r["live"]) for r in conditions(project)} == {
        ("r1", "run time", "rate 1mbit"),
        ("r2", "run time", "rate 1mbit"),
    }
    project.cli("netem", "reset", "--all")
    assert conditions(project) == []
    assert transfer(project, "r1", "r2", "198.18.0.2", tmp_path) < 0.5


def test_a_link_cut_at_one_end_stays_cut_across_a_restart_until_link_up(project: Project) -> None:
    project.write(pair_lab(project))
    project.cli("up", "-d")
    assert ping(project, "r1", "198.18.0.2").returncode == 0
    project.cli("link", "down", "r1:eth1")
    assert ping(project, "r1", "198.18.0.2").returncode != 0
    assert "NO-CARRIER" in run("ip", "-n", f"{project.name}-r2", "link", "show", "dev", "eth1").stdout
    rows = {r["netns"]: r for r in project.ps()}
    [eth1] = rows[f"{project.name}-r1"]["interfaces"]  # type: ignore[misc]
    assert (eth1["present"], eth1["up"], eth1["set_down"]) == (True, False, True)
    assert rows[f"{project.name}-r1"]["drift"] == []
    assert "eth1 down (set)" in project.cli("ps", "--netns").stdout
    run("docker", "restart", "-t", "0", project.container("r1"))
    project.cli("netns", "link")
    held = run("ip", "-n", f"{project.name}-r1", "-j", "link", "show", "dev", "eth1").stdout
    assert "UP" not in json.loads(held)[0]["flags"]  # made again, and held down as it was
    assert ping(project, "r1", "198.18.0.2").returncode != 0
    project.cli("link", "up", "r1:eth1")
    assert ping(project, "r1", "198.18.0.2").returncode == 0
    assert project.cli("plan", "--exit-code", check=False).returncode == 0


def kernel_has_netem() -> bool:
    name = f"cnsq{uuid.uuid4().hex[:6]}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "add", "name", "q0", "type", "veth", "peer", "name", "q1")
        return (
            run("tc", "-n", name, "qdisc", "add", "dev", "q0", "root", "netem", "delay", "1ms", check=False).returncode
            == 0
        )
    finally:
        run("ip", "netns", "delete", name, check=False)


def test_a_declared_delay_works_or_is_refused_with_the_reason(project: Project) -> None:
    project.write(pair_lab(project, "      netem: {delay: 50ms}"))
    done = project.cli("up", "-d", check=False)
    if kernel_has_netem():
        assert done.returncode == 0, done.stderr
        rtt = run("ip", "netns", "exec", f"{project.name}-r1", "busybox", "ping", "-c", "3", "198.18.0.2").stdout
        average = float(rtt.rsplit("=", 1)[1].split("/")[1])
        assert 90 <= average <= 150
        return
    # Refused before compose up: no container, no entry, no interface.
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip() == (
        "composens: error: this kernel has no sch_netem, which link end r1:eth1 (delay 50ms), link end r2:eth1 "
        "(delay 50ms) need; modprobe sch_netem, or use a kernel built with it; a rate alone needs only tbf"
    )
    label = f"label=com.docker.compose.project={project.name}"
    assert run("docker", "ps", "-aq", "--filter", label).stdout.split() == []
    assert not [p for p in NETNS_DIR.iterdir() if p.name.startswith(project.name)]
    assert project.name not in run("ip", "-o", "link", "show").stdout  # no host-side interface marked as ours


def test_conditions_the_kernel_lacks_are_refused_before_anything_changes(project: Project) -> None:
    if kernel_has_netem():
        pytest.skip("this kernel has sch_netem: nothing to refuse")
    text, host_end = lan_and_host_lab(project)
    lossy = text.replace("netem: {rate: 2mbit}", "netem: {rate: 2mbit, loss: 1%}")
    project.write(lossy)
    refused = project.cli("up", "-d", check=False)
    assert refused.returncode == 3, refused.stderr
    assert "no sch_netem, which LAN lan1 (loss 1% rate 2mbit) needs;" in refused.stderr
    assert run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}").stdout == ""
    assert run("ip", "link", "show", "dev", host_end, check=False).returncode != 0  # the host end was never made
    # A rate alone (tbf) is fine; `netem set` of a delay is refused before it is recorded.
    project.write(text)
    project.cli("up", "-d")
    denied = project.cli("netem", "set", "r1:up", "--delay", "10ms", "--both", check=False)
    assert denied.returncode == 3, denied.stderr
    assert "no sch_netem, which netem set r1:up (delay 10ms), netem set host:" in denied.stderr
    assert all(r["source"] == "declared" for r in conditions(project))  # nothing recorded at run time
    assert project.cli("plan", "--exit-code", check=False).returncode == 0
    assert project.cli("netns", "link").returncode == 0  # and later runs are not stuck on it


def test_capture_writes_the_packets_of_a_ping(project: Project, tmp_path: Path) -> None:
    project.write(pair_lab(project))
    project.cli("up", "-d")
    pcap = tmp_path / "f.pcap"
    capturing = project.spawn("capture", "r1:eth1", "-c", "4", "-w", str(pcap), "--", "icmp")
    time.sleep(1.5)  # tcpdump opens the interface
    run("ip", "netns", "exec", f"{project.name}-r2", "busybox", "ping", "-c", "3", "198.18.0.1", check=False)
    _, err = capturing.communicate(timeout=30)
    assert capturing.returncode == 0, err
    read = run("tcpdump", "-r", str(pcap), "-n").stdout.splitlines()
    assert len(read) == 4
    assert all("ICMP echo" in line for line in read)


def test_unknown_ends_and_stopped_services_are_clear_errors(project: Project) -> None:
    project.write(pair_lab(project))
    project.cli("up", "-d")
    unknown = project.cli("link", "down", "r1:eth9", check=False)
    assert unknown.returncode == 3
    assert unknown.stderr.strip() == (
        "composens: error: docker-compose.yml: r1 has no interface 'eth9' of a link or LAN (it has: eth1)"
    )
    bad = project.cli("netem", "set", "r1:eth1", "--loss", "120%", check=False)
    assert bad.returncode == 3
    assert bad.stderr.strip() == (
        "composens: error: netem set: loss: '120%' is not a percentage (0% to 100%, written with %: 1%)"
    )
    run("docker", "stop", "-t", "0", project.container("r2"))
    stopped = project.cli("link", "down", "r2:eth1", check=False)
    assert stopped.returncode == 1
    assert stopped.stderr.strip() == "composens: error: service r2 is not running: `composens up -d r2` first"


def lan_and_host_lab(project: Project) -> tuple[str, str]:
    """Two services on a LAN with a rate on every port, and a link from r1 to the host with a rate on the host's end."""
    host_end = f"h{project.name[-8:]}"
    return (
        f"""
x-composens:
  netns_prefix: {project.name}-
  hub: {project.name}-hub
  lans:
    lan1: {{endpoints: ["r1:eth1", "r2:eth1"], netem: {{rate: 2mbit}}}}
  links:
    - endpoints: ["r1:up", "host:{host_end}"]
      netem: {{"host:{host_end}": {{rate: 1mbit}}}}
services:
  r1: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.0.1/24], up: [198.18.9.2/30]}}}}}}
  r2: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.0.2/24]}}}}}}
""",
        host_end,
    )


def test_netem_show_lists_lan_ports_by_lan_and_member_and_host_ends(project: Project) -> None:
    text, host_end = lan_and_host_lab(project)
    project.write(text)
    project.cli("up", "-d")
    assert "qdisc tbf" in run("ip", "-o", "link", "show", "dev", host_end).stdout  # made, on the host
    lan_port = {"live": "rate 2mbit", "wanted": "rate 2mbit", "source": "declared"}
    assert conditions(project) == [
        {"service": "host", "ifname": host_end, "live": "rate 1mbit", "wanted": "rate 1mbit", "source": "declared"},
        {"service": "lan1", "ifname": "r1:eth1", **lan_port},
        {"service": "lan1", "ifname": "r2:eth1", **lan_port},
    ]
    # Named services: the host ends and hub ports that face them.
    only_r2 = json.loads(project.cli("netem", "show", "r2", "--format", "json").stdout)
    assert only_r2 == [{"service": "lan1", "ifname": "r2:eth1", **lan_port}]
    only_r1 = json.loads(project.cli("netem", "show", "r1", "--format", "json").stdout)
    assert [(r["service"], r["ifname"]) for r in only_r1] == [("host", host_end), ("lan1", "r1:eth1")]
    table = project.cli("netem", "show").stdout.splitlines()
    assert table[0].split() == ["SERVICE", "INTERFACE", "LIVE", "WANTED", "SET", "BY"]
    assert table[2].split() == ["lan1", "r1:eth1", "rate", "2mbit", "rate", "2mbit", "declared"]
