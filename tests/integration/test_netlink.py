"""netlink's reading of a namespace is the reading of `ip -details -json`, field for field, on the real kernel."""

from __future__ import annotations

import errno
import random
import socket
import struct
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from composens.model.errors import WiringError
from composens.plan.live import LiveAddress, LiveNamespace, Vxlan
from composens.system.kernel import netlink, reading
from tests.integration.conftest import run


def ip(netns: str | None, lines: str, tool: str = "ip") -> None:
    run(tool, *(["-n", netns] if netns else []), "-batch", "-", input=lines)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """Two namespaces of this test's own, filled with what composens reads; removed even on failure."""
    tag = uuid.uuid4().hex[:6]
    a, b = f"cnl{tag}a", f"cnl{tag}b"
    made = []
    try:
        for name in (a, b):
            run("ip", "netns", "add", name)
            made.append(name)
        fill(a, b)
        yield a, b
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def fill(a: str, b: str) -> None:
    ip(None, f"link add va0 netns {a} mtu 1400 type veth peer name vb0 netns {b}\n")
    ip(
        a,
        "link add vs0 type veth peer name vs1\n"  # a pair inside one namespace: ip names the peer, not its index
        "link add vp0 type veth peer name vp1\n"
        "link add br0 type bridge stp_state 1 mcast_snooping 0 group_fwd_mask 0xfff8\n"
        "link add br1 type bridge\n"
        "link set vs1 master br0\n"
        "link set vp1 master br1\n"
        'link set va0 alias "composens:netlinktest"\n'
        "link set va0 address 02:00:5e:10:00:0a\n"
        "link set vs0 alias x\n"
        "link set lo up\nlink set va0 up\nlink set vs1 up\nlink set br0 up\nlink set vp0 up\n"
        # vs0 and br1 stay down
        "addr add 198.18.0.1/24 dev va0\n"
        "addr add 198.18.0.2/24 dev va0\n"  # a secondary
        "addr add 198.18.1.1/30 dev va0\n"
        "addr add 192.0.2.1/24 dev vp0 valid_lft 600 preferred_lft 300\n"  # dynamic: no IFA_F_PERMANENT
        "addr add 2001:db8::1/64 dev va0 nodad\n"
        "addr add 2001:db8:1::1/64 dev va0 nodad valid_lft 3600 preferred_lft 1800\n"
        "addr add 2001:db8:2::1/64 dev vp0 nodad\n"
        "route add default via 198.18.0.254 dev va0\n"
        "route add 198.19.0.0/16 via 198.18.0.254 dev va0 metric 100\n"
        "route add 198.19.0.0/16 via 198.18.0.253 dev va0 metric 200\n"
        "route add 198.19.5.5 via 198.18.0.254\n"  # a host route: ip prints it without its length
        "route add 198.19.6.0/24 dev va0 proto static\n"
        "route add 198.19.7.0/24 dev va0 proto zebra metric 20\n"
        "route add 198.19.8.0/24 dev va0 proto 77\n"  # a number ip has no name for
        "route add 198.19.9.0/24 via 198.18.0.254 table 100\n"
        "route add blackhole 198.19.11.0/24\n"
        "route add 198.19.10.0/24 nexthop via 198.18.0.253 dev va0 nexthop via 198.18.0.252 dev va0\n"
        "route add 2001:db8:5::/48 via 2001:db8::2 dev va0 metric 1024\n"
        "route add 2001:db8:6::/48 dev va0 metric 7\n"
        "route add 2001:db8:7::/48 via 2001:db8::2 dev va0 table 100\n"
        "route add 2001:db8:8::/48 nexthop via 2001:db8::3 dev va0 nexthop via 2001:db8::4 dev va0\n",
    )
    ip(a, "qdisc add dev va0 root tbf rate 1mbit burst 32kbit latency 400ms\n", tool="tc")
    ip(b, "link set vb0 up\naddr add 198.18.0.9/24 dev vb0\nroute add 198.19.0.0/16 via 198.18.0.1\n")
    # VXLAN ends as composens makes them (from the host's namespace, straight in b), over IPv4 and IPv6.
    # Each run its own VNIs: a namespace's devices outlive it for a moment (the kernel cleans up after it).
    vni = random.randint(1, 2**24 - 2)
    ip(None, f"link add name vx4 netns {b} type vxlan id {vni} local 198.18.0.77 remote 198.18.0.78 dstport 4799\n")
    ip(
        None,
        f"link add name vx6 netns {b} type vxlan id {vni + 1} local 2001:db8::77 remote 2001:db8::78 dstport 4799\n",
    )


def test_netlink_reads_what_ip_json_reads(namespaces: tuple[str, str]) -> None:
    a, b = namespaces
    for name in (a, b):
        by_ip = reading.read_namespace(name)
        by_netlink = netlink.read_path(f"/var/run/netns/{name}").namespace
        assert by_netlink.links == by_ip.links
        assert by_netlink.addresses == by_ip.addresses
        assert by_netlink.routes == by_ip.routes
        assert by_netlink == by_ip


def test_what_was_compared_has_every_kind_of_thing(namespaces: tuple[str, str]) -> None:
    """The equality above is worth something only if the namespace holds each case."""
    a, b = namespaces
    read = netlink.read_path(f"/var/run/netns/{a}")
    found = read.namespace
    other = netlink.read_path(f"/var/run/netns/{b}").namespace
    assert found.links["va0"].peer_index == other.links["vb0"].index
    assert found.links["vs0"].peer_index == found.links["vs1"].index
    assert found.links["va0"].alias == "composens:netlinktest"
    assert found.links["va0"].mtu == 1400
    assert found.links["va0"].mac == "02:00:5e:10:00:0a"
    assert found.links["lo"].mac == "00:00:00:00:00:00"
    assert not found.links["vs0"].up
    assert found.links["vs1"].master == "br0"
    assert dict(found.links["br0"].bridge_options) == {
        "stp_state": "1",
        "mcast_snooping": "0",
        "group_fwd_mask": "0xfff8",
    }
    assert dict(found.links["br1"].bridge_options)["group_fwd_mask"] == "0"
    va0 = found.addresses_of("va0")
    assert LiveAddress("198.18.0.2/24", secondary=True) in va0
    assert LiveAddress("2001:db8:1::1/64", dynamic=True) in va0
    assert LiveAddress("192.0.2.1/24", dynamic=True) in found.addresses_of("vp0")
    assert any(a.link_local for a in va0)
    assert read.address_flags["va0", "2001:db8::1/64"] & netlink.IFA_F_PERMANENT
    assert not read.address_flags["va0", "2001:db8:1::1/64"] & netlink.IFA_F_PERMANENT
    routes = {(r.destination, r.metric): r for r in found.routes}
    assert routes["198.19.5.5/32", 0].gateway == "198.18.0.254"
    assert routes["198.19.6.0/24", 0].protocol == "static"
    assert routes["198.19.7.0/24", 20].protocol == "zebra"
    assert routes["198.19.8.0/24", 0].protocol == "77"
    assert routes["198.19.10.0/24", 0].gateway is None  # multipath: ip names no single gateway
    assert routes["2001:db8:6::/48", 7].family == 6
    assert routes["default", 0].family == 4
    assert "198.19.9.0/24" not in {d for d, _ in routes}  # table 100 is not main's
    assert "198.19.11.0/24" not in {d for d, _ in routes}  # a blackhole is no unicast route
    assert read.root_qdiscs["va0"] == "tbf"
    vx4, vx6 = other.links["vx4"].vxlan, other.links["vx6"].vxlan
    assert vx4 is not None
    assert vx4 == Vxlan(vx4.vni, "198.18.0.77", "198.18.0.78", 4799)
    assert vx6 == Vxlan(vx4.vni + 1, "2001:db8::77", "2001:db8::78", 4799)


def test_wiring_reads_by_netlink_with_tc_details_where_a_qdisc_is_set(
    namespaces: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = namespaces
    path = f"/var/run/netns/{a}"
    by_ip = reading.read_namespace(a, qdiscs=True)
    assert by_ip.qdiscs["va0"].kind == "tbf"

    def no_ip(target: reading.Target, *, qdiscs: bool) -> None:
        raise AssertionError("read by ip, not by netlink")

    monkeypatch.setattr(reading, "_read_target_by_ip", no_ip)
    for target in (reading.Target(a, path, path), reading.Target(a, path, path, linked=False)):
        assert reading.read_target(target, qdiscs=True) == by_ip
        assert reading.read_all({"a": target}, qdiscs=True) == {"a": by_ip}


def test_without_netlink_ip_reads_the_same(namespaces: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = namespaces
    path = f"/var/run/netns/{a}"
    by_netlink = reading.read_target(reading.Target(a, path, path), qdiscs=True)

    def refused(fd: int, *, own: bool = False) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(netlink, "read_fd", refused)
    for target in (reading.Target(a, path, path), reading.Target(a, path, path, linked=False)):
        assert reading.read_target(target, qdiscs=True) == by_netlink


def test_a_namespace_that_is_gone_is_a_wiring_error(namespaces: tuple[str, str]) -> None:
    a, _ = namespaces
    target = reading.Target(a, f"/var/run/netns/{a}-gone", "x", linked=False)
    with pytest.raises(WiringError, match="cannot read the interfaces of"):
        reading.read_target(target)


class Faulty:
    """A real netlink socket whose answers pass through `fault` (a datagram in, a datagram out)."""

    def __init__(self, sock: socket.socket, fault: Callable[[bytearray], bytes]) -> None:
        self.sock = sock
        self.fault = fault

    def __enter__(self) -> Faulty:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)

    def recvmsg(self, size: int) -> tuple[bytes, list[Any], int, Any]:
        data, ancillary, flags, address = self.sock.recvmsg(size)
        return self.fault(bytearray(data)), ancillary, flags, address


def messages(data: bytearray) -> Iterator[tuple[int, int]]:
    """The offset and type of each netlink message in a datagram."""
    offset = 0
    while offset + netlink.NLMSG.size <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        yield offset, kind
        offset += (length + 3) & ~3


def done_with_emsgsize(data: bytearray) -> bytes:
    for offset, kind in messages(data):
        if kind == netlink.NLMSG_DONE:
            struct.pack_into("=i", data, offset + netlink.NLMSG.size, -errno.EMSGSIZE)
    return bytes(data)


def always_interrupted(data: bytearray) -> bytes:
    for offset, _ in messages(data):
        flags = struct.unpack_from("=H", data, offset + 6)[0]
        struct.pack_into("=H", data, offset + 6, flags | netlink.NLM_F_DUMP_INTR)
    return bytes(data)


def overlong_message(data: bytearray) -> bytes:
    for offset, kind in messages(data):
        if kind == netlink.RTM_NEWLINK:
            struct.pack_into("=I", data, offset, len(data) - offset + 400)
            break
    return bytes(data)


def truncated_mtu(data: bytearray) -> bytes:
    """Each link's IFLA_MTU said to be 2 bytes long (its padded size unchanged, so the rest still parses)."""
    for offset, kind in messages(data):
        if kind != netlink.RTM_NEWLINK:
            continue
        end = offset + struct.unpack_from("=I", data, offset)[0]
        at = offset + netlink.NLMSG.size + netlink.IFINFOMSG.size
        while at + 4 <= end:
            length, attribute = struct.unpack_from("=HH", data, at)
            if attribute == netlink.IFLA_MTU:
                struct.pack_into("=H", data, at, 6)
            at += (length + 3) & ~3
    return bytes(data)


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        (done_with_emsgsize, "Message too long"),
        (always_interrupted, f"interrupted {netlink.TRIES} times"),
        (overlong_message, "where .* came"),
        (truncated_mtu, "malformed"),
    ],
)
def test_a_dump_netlink_cannot_use_is_read_by_ip_with_the_same_answer(
    namespaces: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    fault: Callable[[bytearray], bytes],
    why: str,
) -> None:
    a, _ = namespaces
    path = f"/var/run/netns/{a}"
    by_netlink = reading.read_target(reading.Target(a, path, path), qdiscs=True)
    made = netlink._new_socket
    monkeypatch.setattr(netlink, "_new_socket", lambda: Faulty(made(), fault))
    with pytest.raises(netlink.NetlinkError, match=why):
        netlink.read_path(path)
    by_ip = reading._read_target_by_ip
    fell_back = []

    def spied(target: reading.Target, *, qdiscs: bool) -> LiveNamespace:
        fell_back.append(target)
        return by_ip(target, qdiscs=qdiscs)

    monkeypatch.setattr(reading, "_read_target_by_ip", spied)
    for target in (reading.Target(a, path, path), reading.Target(a, path, path, linked=False)):
        assert reading.read_target(target, qdiscs=True) == by_netlink
    assert len(fell_back) == 2


def test_ip_failing_an_interrupted_dump_is_a_clear_reading_failure(
    namespaces: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the kernel keeps interrupting dumps, ip (6.1) prints what it got and warns: that is no reading either."""
    a, _ = namespaces
    real = reading._ip

    def warning(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        done = real(*args, **kw)
        return subprocess.CompletedProcess(done.args, 0, done.stdout, "Dump was interrupted and may be inconsistent.\n")

    monkeypatch.setattr(reading, "_ip", warning)
    with pytest.raises(WiringError, match=f"cannot read the interfaces of {a}: Dump was interrupted"):
        reading.read_namespace(a)
