"""One compose file, two hosts: cross-host links and LANs over kernel VXLAN, on a simulated second host."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import IMAGE, Project, run
from tests.integration.twohost import HOST1_UNDERLAY, HOST2_UNDERLAY, SecondHost, second_host


@pytest.fixture(scope="module")
def host2() -> Iterator[SecondHost]:
    with second_host((IMAGE,)) as host:
        yield host


class TwoHosts:
    """One project on both hosts: the same file (or, to make the hosts disagree, another for host 2)."""

    def __init__(self, project: Project, host2: SecondHost) -> None:
        self.project = project
        self.host2 = host2
        self.port = random.randint(4790, 4999)  # this run's own UDP port: no other tunnel on the machine uses it
        self.folder2 = project.folder  # host 2 reads the same folder unless a test gives it its own
        self.host2_mtu: int | None = None  # x-composens.hosts.h2.mtu, when a test declares it
        self.more_hosts = ""  # further hosts (no machine behind them: only their underlay addresses matter)

    @property
    def name(self) -> str:
        return self.project.name

    def write(self, text: str) -> None:
        self.project.write(self._fill(text))

    def write_host2(self, text: str) -> None:
        """Give host 2 a file of its own (same project name): the hosts disagree until it is put back."""
        self.folder2 = self.project.folder / "host2"
        self.folder2.mkdir(exist_ok=True)
        (self.folder2 / "docker-compose.yml").write_text(self._fill(text).replace("IMAGE", IMAGE))

    def _fill(self, text: str) -> str:
        mtu = f", mtu: {self.host2_mtu}" if self.host2_mtu else ""
        head = (
            "x-composens:\n"
            f"  netns_prefix: {self.name}-\n"
            f"  hosts: {{h1: {{underlay: {HOST1_UNDERLAY}}}, h2: {{underlay: {HOST2_UNDERLAY}{mtu}}}{self.more_hosts}}}\n"
            f"  vxlan: {{port: {self.port}}}\n"
        )
        return head + text

    def on1(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.project.cli(*args, check=check)

    def on2(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.host2.composens(self.name, self.folder2, *args, check=check)

    def ns(self, service: str) -> str:
        return f"{self.name}-{service}"

    def in1(self, service: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.ns(service), *args, check=check)

    def in2(self, service: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.host2.run("ip", "netns", "exec", self.ns(service), *args, check=check)

    def link1(self, service: str, ifname: str) -> dict[str, object]:
        found: list[dict[str, object]] = json.loads(self.in1(service, "ip", "-d", "-j", "link", "show", ifname).stdout)
        return found[0]

    def cleanup_host2(self) -> None:
        self.on2("down", "-t", "0", check=False)
        label = f"label=com.docker.compose.project={self.name}"
        ids = self.host2.run("docker", "ps", "-aq", "--filter", label, check=False).stdout.split()
        if ids:
            self.host2.run("docker", "rm", "-f", *ids, check=False)
        self.host2.run("sh", "-c", f"for e in /run/netns/{self.name}*; do [ -L $e ] && rm $e; done; true", check=False)
        self.host2.run("sh", "-c", f"ip netns delete {self.name} 2>/dev/null; true", check=False)


@pytest.fixture
def lab(project: Project, host2: SecondHost) -> Iterator[TwoHosts]:
    both = TwoHosts(project, host2)
    try:
        yield both
    finally:
        both.cleanup_host2()  # host 1's part: the project fixture


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 10) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def pings(runner: Callable[..., subprocess.CompletedProcess[str]], service: str, address: str) -> bool:
    return runner(service, "busybox", "ping", "-c", "1", "-W", "1", address, check=False).returncode == 0


LINK = """\
  links:
    - endpoints: [r1:eth1, r2:eth1]
services:
  r1:
    image: IMAGE
    command: sleep 3600
    network_mode: none
    x-composens: {host: h1, addresses: {eth1: [198.19.1.1/30, "2001:db8:1::1/64"]}}
  r2:
    image: IMAGE
    command: sleep 3600
    network_mode: none
    x-composens: {host: h2, addresses: {eth1: [198.19.1.2/30, "2001:db8:1::2/64"]}}
"""


def test_second_host_is_a_host_of_its_own(host2: SecondHost) -> None:
    # Its own engine (not this machine's), its own /run, and the underlay between the two.
    assert host2.run("docker", "ps", "-aq").stdout.strip() == ""
    assert host2.run("readlink", "/proc/self/ns/net").stdout.strip() != os.readlink("/proc/self/ns/net")
    assert host2.run("ls", "/run/netns").stdout == ""
    assert host2.run("docker", "image", "inspect", IMAGE, check=False).returncode == 0
    host2.run("busybox", "ping", "-c", "1", "-W", "2", HOST1_UNDERLAY)
    assert host2.started_in < 20  # measured: 0.5 s here


def test_a_link_across_hosts_carries_ipv4_and_ipv6_over_the_underlay(lab: TwoHosts, tmp_path: Path) -> None:
    lab.write(LINK)
    lab.on1("up", "-d")
    # Host 1 brought up only its own service.
    assert run("docker", "ps", "-q", "--filter", f"name={lab.project.container('r2')}").stdout.strip() == ""
    lab.on2("up", "-d")
    assert lab.host2.run("docker", "ps", "-q", "--filter", f"name={lab.project.container('r1')}").stdout.strip() == ""
    capture = subprocess.Popen(
        ["tcpdump", "-i", lab.host2.host_if, "-n", "-c", "2", "-l", f"src host {HOST1_UNDERLAY} and udp dst port {lab.port}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        wait_until("r1 reaches r2 over IPv4", lambda: pings(lab.in1, "r1", "198.19.1.2"))
        wait_until("r2 reaches r1 over IPv4", lambda: pings(lab.in2, "r2", "198.19.1.1"))
        wait_until("r1 reaches r2 over IPv6", lambda: pings(lab.in1, "r1", "2001:db8:1::2"))
        wait_until("r2 reaches r1 over IPv6", lambda: pings(lab.in2, "r2", "2001:db8:1::1"))
        seen, _ = capture.communicate(timeout=10)
    finally:
        capture.kill()
    # UDP from host 1's underlay address to host 2's on the VXLAN port (tcpdump decodes VXLAN only on 4789).
    assert re.search(rf"{HOST1_UNDERLAY}\.\d+ > {HOST2_UNDERLAY}\.{lab.port}: ", seen), seen
    # The end is a VXLAN device under the declared name, marked, and its MTU fits the 1500 underlay.
    eth1 = lab.link1("r1", "eth1")
    info = eth1["linkinfo"]["info_data"]  # type: ignore[index]
    assert eth1["linkinfo"]["info_kind"] == "vxlan"  # type: ignore[index]
    assert (info["local"], info["remote"], info["port"]) == (HOST1_UNDERLAY, HOST2_UNDERLAY, lab.port)
    assert eth1["ifalias"] == f"composens:{lab.name}"
    assert eth1["mtu"] == 1450
    # Its UDP socket is on host 1's own namespace, not the container's.
    assert f":{lab.port} " in run("ss", "-Hlun").stdout
    assert f":{lab.port} " not in lab.in1("r1", "ss", "-Hlun", check=False).stdout
    # ps shows where it leads; the lab matches its file on both hosts.
    row = next(r for r in lab.project.ps() if r["service"] == "r1")
    (iface,) = row["interfaces"]  # type: ignore[misc]
    assert iface["remote"]["hosts"] == ["h2"]
    assert iface["remote"]["vteps"] == [HOST2_UNDERLAY]
    assert iface["remote"]["vni"] == info["id"]
    assert iface["remote"]["peer"] == "r2:eth1"
    assert lab.on1("plan", "--exit-code").returncode == 0
    assert lab.on2("plan", "--exit-code").returncode == 0


LAN = """\
  lans:
    core: {endpoints: [m1:lan0, m2:lan0, m3:lan0]}
services:
  m1:
    image: IMAGE
    command: sleep 3600
    network_mode: none
    x-composens: {host: h1, addresses: {lan0: [198.19.2.1/24, "2001:db8:2::1/64"]}}
  m2:
    image: IMAGE
    command: sleep 3600
    network_mode: none
    x-composens: {host: h1, addresses: {lan0: [198.19.2.2/24, "2001:db8:2::2/64"]}}
  m3:
    image: IMAGE
    command: sleep 3600
    network_mode: none
    x-composens: {host: h2, addresses: {lan0: [198.19.2.3/24, "2001:db8:2::3/64"]}}
"""


def link_local(runner: Callable[..., subprocess.CompletedProcess[str]], service: str) -> str:
    text = runner(service, "ip", "-j", "-6", "addr", "show", "dev", "lan0").stdout
    found = [a["local"] for item in json.loads(text) for a in item.get("addr_info", ()) if a.get("scope") == "link"]
    assert found, f"{service} has no IPv6 link-local address on lan0: {text}"
    return str(found[0])


def test_a_lan_across_hosts_is_one_segment(lab: TwoHosts) -> None:
    lab.write(LAN)
    lab.on1("up", "-d")
    lab.on2("up", "-d")
    members = {"m1": (lab.in1, "198.19.2.1"), "m2": (lab.in1, "198.19.2.2"), "m3": (lab.in2, "198.19.2.3")}
    for source, (runner, _) in members.items():
        for target, (_, address) in members.items():
            if source != target:
                wait_until(f"{source} reaches {target}", lambda r=runner, s=source, a=address: pings(r, s, a))
    # Broadcast and multicast cross hosts: all-nodes from the remote member is answered by both others.
    wanted = {link_local(lab.in1, "m1"), link_local(lab.in1, "m2")}
    seen: set[str] = set()

    def both_answer() -> bool:
        # Neighbour discovery towards a fresh member can take a try or two (as on one host).
        out = lab.in2("m3", "busybox", "ping", "-6", "-c", "2", "-I", "lan0", "ff02::1", check=False).stdout
        seen.update(ipaddress.ip_address(w.split("%")[0]).compressed for w in _reply_sources(out))
        return wanted <= seen

    try:
        wait_until("ff02::1 from m3 answered by m1 and m2", both_answer)
    except AssertionError as e:
        raise AssertionError(f"{e}: wanted {sorted(wanted)}, answered by {sorted(seen)}") from None
    # The hub's bridge on each host: the local members' ports and one VXLAN port.
    ports = run("ip", "-n", lab.name, "-j", "link", "show", "master", "core").stdout
    assert sorted(p["ifname"] for p in json.loads(ports)) == ["m1.lan0", "m2.lan0", "vx.core"]
    ports2 = lab.host2.run("ip", "-n", lab.name, "-j", "link", "show", "master", "core").stdout
    assert sorted(p["ifname"] for p in json.loads(ports2)) == ["m3.lan0", "vx.core"]
    assert lab.on1("plan", "--exit-code").returncode == 0


def _reply_sources(ping_output: str) -> list[str]:
    return [line.split(" from ", 1)[1].split(": ", 1)[0] for line in ping_output.splitlines() if " from " in line]


def test_an_mtu_too_large_for_the_underlay_is_refused_before_anything_runs(lab: TwoHosts) -> None:
    lab.write(
        LINK.replace("    - endpoints: [r1:eth1, r2:eth1]\n", "    - endpoints: [r1:eth1, r2:eth1]\n      mtu: 9000\n")
    )
    done = lab.on1("up", "-d", check=False)
    assert done.returncode == 3, done.stderr
    assert (
        "links[0].mtu: 9000 does not fit the underlay of host h1 (MTU 1500, x-composens.hosts.h1.mtu; VXLAN over "
        "IPv4 takes 50 bytes), so at most 1450"
    ) in done.stderr
    label = f"label=com.docker.compose.project={lab.name}"
    assert run("docker", "ps", "-aq", "--filter", label).stdout.strip() == ""


def test_a_smaller_underlay_on_one_host_gives_both_ends_the_same_mtu(lab: TwoHosts) -> None:
    """Issue 26, item 2: with host 2's underlay at 1400, host 1 gave its end 1450 and host 2 its end 1350."""
    lab.host2.run("ip", "link", "set", "dev", lab.host2.far_if, "mtu", "1400")
    try:
        lab.write(LINK)
        # The file says 1500 (undeclared): host 2, whose underlay is smaller, refuses before anything runs.
        refused = lab.on2("up", "-d", check=False)
        assert refused.returncode == 3, refused.stderr
        assert (
            f"x-composens.hosts.h2.mtu: host h2's underlay is smaller than the file says: {lab.host2.far_if} on this "
            "machine has MTU 1400, the file 1500 (1500 when not declared); declare mtu: 1400 for h2"
        ) in refused.stderr
        label = f"label=com.docker.compose.project={lab.name}"
        assert lab.host2.run("docker", "ps", "-aq", "--filter", label).stdout.strip() == ""
        # Declared: each host works the same MTU out of the file, host 1 too, whose own underlay is 1500.
        lab.host2_mtu = 1400
        lab.write(LINK)
        lab.on1("up", "-d")
        lab.on2("up", "-d")
        assert lab.link1("r1", "eth1")["mtu"] == 1350
        far = json.loads(lab.in2("r2", "ip", "-j", "link", "show", "eth1").stdout)[0]
        assert far["mtu"] == 1350
        # A packet as large as the link carries crosses both ways (1350: 1322 bytes of ICMP data and 28 of headers).
        for runner, service, address in ((lab.in1, "r1", "198.19.1.2"), (lab.in2, "r2", "198.19.1.1")):
            wait_until(
                f"{service} reaches {address} with a full-size packet",
                lambda r=runner, s=service, a=address: (
                    r(s, "busybox", "ping", "-c", "1", "-W", "1", "-s", "1322", a, check=False).returncode == 0
                ),
            )
        assert lab.on1("plan", "--exit-code").returncode == 0
        assert lab.on2("plan", "--exit-code").returncode == 0
    finally:
        lab.host2.run("ip", "link", "set", "dev", lab.host2.far_if, "mtu", "1500", check=False)


def test_a_restart_on_host_2_heals_and_host_1_is_untouched(lab: TwoHosts) -> None:
    lab.write(LINK)
    lab.on1("up", "-d")
    lab.on2("up", "-d")
    wait_until("r1 reaches r2", lambda: pings(lab.in1, "r1", "198.19.1.2"))
    before = lab.link1("r1", "eth1")["ifindex"]
    lab.host2.run("docker", "restart", "-t", "0", lab.project.container("r2"))
    lab.on2("netns", "link")
    took = wait_until("r1 reaches r2 again", lambda: pings(lab.in1, "r1", "198.19.1.2"), timeout=10)
    assert took < 10
    assert lab.link1("r1", "eth1")["ifindex"] == before


def test_a_vni_that_differs_on_one_side_breaks_the_link_and_converging_back_heals_it(lab: TwoHosts) -> None:
    lab.write(LINK)
    lab.on1("up", "-d")
    lab.on2("up", "-d")
    wait_until("r1 reaches r2", lambda: pings(lab.in1, "r1", "198.19.1.2"))
    lab.write_host2(
        LINK.replace("    - endpoints: [r1:eth1, r2:eth1]\n", "    - endpoints: [r1:eth1, r2:eth1]\n      vni: 4242\n")
    )
    lab.on2("up", "-d")
    assert (
        json.loads(lab.in2("r2", "ip", "-d", "-j", "link", "show", "eth1").stdout)[0]["linkinfo"]["info_data"]["id"]
        == 4242
    )
    assert not pings(lab.in1, "r1", "198.19.1.2")
    lab.write_host2(LINK)
    assert lab.on2("plan", "--exit-code", check=False).returncode == 2
    lab.on2("up", "-d")
    wait_until("r1 reaches r2 again", lambda: pings(lab.in1, "r1", "198.19.1.2"))


def test_down_on_each_host_removes_only_its_part(lab: TwoHosts) -> None:
    lab.write(LINK)
    lab.on1("up", "-d")
    lab.on2("up", "-d")
    wait_until("r1 reaches r2", lambda: pings(lab.in1, "r1", "198.19.1.2"))
    lab.on2("down", "-t", "0")
    label = f"label=com.docker.compose.project={lab.name}"
    assert lab.host2.run("docker", "ps", "-aq", "--filter", label).stdout.strip() == ""
    assert lab.host2.run("ls", "/run/netns").stdout.strip() == ""
    assert lab.name not in lab.host2.run("cat", "/run/composens/state.json", check=False).stdout
    assert lab.link1("r1", "eth1")["ifalias"] == f"composens:{lab.name}"  # host 1's end stays
    assert lab.on1("plan", "--exit-code").returncode == 0
    lab.on1("down", "-t", "0")
    assert run("docker", "ps", "-aq", "--filter", label).stdout.strip() == ""
    assert not [p for p in Path("/var/run/netns").iterdir() if p.name.startswith(lab.name)]
    # No tunnel left on this host's underlay (a namespace's devices go a moment after it).
    wait_until("host 1's VXLAN socket closed", lambda: f":{lab.port} " not in run("ss", "-Hlun").stdout)


def test_a_service_moved_to_the_other_host_follows_its_placement(lab: TwoHosts) -> None:
    three = LINK + (
        "  r3:\n    image: IMAGE\n    command: sleep 3600\n    network_mode: none\n    x-composens: {host: h2}\n"
    )
    lab.write(three)
    lab.on1("up", "-d")
    lab.on2("up", "-d")
    wait_until("r1 reaches r2", lambda: pings(lab.in1, "r1", "198.19.1.2"))
    # r2 moves to host 1: host 2 removes its container, host 1 starts it, and the link becomes a veth pair.
    lab.write(three.replace("x-composens: {host: h2, addresses", "x-composens: {host: h1, addresses"))
    lab.on2("up", "-d")
    filters = [
        "--filter",
        f"label=com.docker.compose.project={lab.name}",
        "--filter",
        "label=com.docker.compose.service=r2",
    ]
    assert lab.host2.run("docker", "ps", "-aq", *filters).stdout.strip() == ""
    assert lab.host2.run("test", "-e", f"/run/netns/{lab.ns('r2')}", check=False).returncode != 0
    lab.on1("up", "-d")
    assert lab.link1("r1", "eth1")["linkinfo"]["info_kind"] == "veth"  # type: ignore[index]
    wait_until("r1 reaches r2 on one host", lambda: pings(lab.in1, "r1", "198.19.1.2"))
    assert lab.on1("plan", "--exit-code").returncode == 0
    assert lab.on2("plan", "--exit-code").returncode == 0


def test_a_host_left_with_no_service_takes_down_its_part_of_a_lan(lab: TwoHosts) -> None:
    lab.write(LAN)
    lab.on1("up", "-d")
    lab.on2("up", "-d")
    assert lab.host2.run("test", "-e", f"/run/netns/{lab.name}", check=False).returncode == 0  # host 2's hub
    # m3 moves to host 1: host 2 has nothing of the lab left to run, so its hub (and VXLAN port) go too.
    lab.write(LAN.replace("x-composens: {host: h2, addresses", "x-composens: {host: h1, addresses"))
    done = lab.on2("up", "-d")
    assert "no service is placed on host h2" in done.stderr
    assert lab.host2.run("test", "-e", f"/run/netns/{lab.name}", check=False).returncode != 0
    assert lab.host2.run("ip", "-o", "link", "show", "type", "vxlan").stdout == ""
    lab.on1("up", "-d")
    wait_until("m1 reaches m3 on one host", lambda: pings(lab.in1, "m1", "198.19.2.3"))


HOST3_UNDERLAY = "198.18.200.3"  # a third host's address: nothing answers there, host 1 only replicates to it
THREE = """\
  lans:
    core: {endpoints: [m1:lan0, m2:lan0, m3:lan0]}
services:
  m1:
    image: IMAGE
    command: sleep 3600
    networks: [lab]
    x-composens: {host: h1, addresses: {lan0: [198.19.2.1/24]}}
  m2: {image: IMAGE, command: sleep 3600, network_mode: none, x-composens: {host: h2}}
  m3: {image: IMAGE, command: sleep 3600, network_mode: none, x-composens: {host: h3}}
networks:
  lab:
    ipam: {config: [{subnet: 198.19.78.0/24}]}
"""


def replication(lab: TwoHosts) -> list[str]:
    """Where host 1's VXLAN port of LAN core sends broadcast, unknown unicast and multicast: its all-zero entries."""
    text = run("bridge", "-n", lab.name, "-j", "fdb", "show", "dev", "vx.core").stdout
    return sorted(e["dst"] for e in json.loads(text) if e.get("mac") == "00:00:00:00:00:00" and "dst" in e)


def test_a_run_undone_puts_a_lan_ports_replication_to_a_third_host_back(lab: TwoHosts) -> None:
    """Issue 26, item 8: the rollback made the port again without its `bridge fdb append` entries."""
    lab.more_hosts = f", h3: {{underlay: {HOST3_UNDERLAY}}}"
    lab.write(THREE)
    lab.on1("up", "-d")
    assert replication(lab) == [HOST2_UNDERLAY, HOST3_UNDERLAY]
    port = json.loads(run("ip", "-n", lab.name, "-j", "link", "show", "vx.core").stdout)[0]
    # m3 moves to h2 (so the port is made again, replicating to h2 only), and a route the kernel refuses on lan0
    # (its gateway is on m1's docker network) fails the run after that: it is undone.
    edited = THREE.replace("x-composens: {host: h3}", "x-composens: {host: h2}").replace(
        "addresses: {lan0: [198.19.2.1/24]}}",
        "addresses: {lan0: [198.19.2.1/24]}, routes: [198.18.7.0/24 via 198.19.78.200 dev lan0]}",
    )
    lab.write(edited)
    failed = lab.on1("netns", "link", check=False)
    assert failed.returncode == 7, failed.stderr
    assert "route add 198.18.7.0/24 via 198.19.78.200 dev lan0` failed" in failed.stderr
    assert failed.stderr.rstrip().endswith("the lab is as it was before"), failed.stderr
    again = json.loads(run("ip", "-n", lab.name, "-j", "link", "show", "vx.core").stdout)[0]
    assert again["ifindex"] != port["ifindex"]  # made again by the rollback ...
    assert (again["address"], again["master"]) == (port["address"], "core")  # ... as it was
    assert replication(lab) == [HOST2_UNDERLAY, HOST3_UNDERLAY]  # with its entry towards h3
    # The file put back: the lab matches it, head-end replication to h3 included.
    lab.write(THREE)
    assert lab.on1("plan", "--exit-code").returncode == 0
    lab.on1("netns", "link")
    assert replication(lab) == [HOST2_UNDERLAY, HOST3_UNDERLAY]
