"""netlink.parse on messages built byte by byte: what ip would print for each field (no kernel needed)."""

from __future__ import annotations

import socket
import struct

from composens.plan.live import LiveAddress, LiveRoute
from composens.system.kernel import netlink as nl


def attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * ((4 - length % 4) % 4)


def u32(value: int) -> bytes:
    return struct.pack("=I", value)


def text(value: str) -> bytes:
    return value.encode() + b"\0"


def link(index: int, name: str, *extra: bytes, flags: int = 0, link_type: int = 1) -> bytes:
    return nl.IFINFOMSG.pack(0, link_type, index, flags, 0) + attr(nl.IFLA_IFNAME, text(name)) + b"".join(extra)


def linkinfo(kind: str, data: bytes = b"") -> bytes:
    return attr(
        nl.IFLA_LINKINFO, attr(nl.IFLA_INFO_KIND, text(kind)) + (attr(nl.IFLA_INFO_DATA, data) if data else b"")
    )


def test_links_read_as_ip_prints_them() -> None:
    bridge_data = (
        attr(nl.IFLA_BR_STP_STATE, u32(1))
        + attr(nl.IFLA_BR_GROUP_FWD_MASK, struct.pack("=H", 0xFFF8))
        + attr(nl.IFLA_BR_MCAST_SNOOPING, b"\0")
    )
    links = [
        link(1, "lo", attr(nl.IFLA_MTU, u32(65536)), attr(nl.IFLA_ADDRESS, bytes(6)), flags=nl.IFF_UP, link_type=772),
        link(2, "br0", linkinfo("bridge", bridge_data), attr(nl.IFLA_QDISC, text("noqueue"))),
        link(3, "br1", linkinfo("bridge", attr(nl.IFLA_BR_GROUP_FWD_MASK, struct.pack("=H", 0)))),
        link(
            4,
            "va0",
            linkinfo("veth"),
            attr(nl.IFLA_LINK, u32(9)),
            attr(nl.IFLA_MASTER, u32(2)),
            attr(nl.IFLA_IFALIAS, text("composens:x")),
            attr(nl.IFLA_ADDRESS, bytes([2, 0, 0x5E, 0x10, 0, 0xA])),
            attr(nl.IFLA_QDISC, text("tbf")),
            flags=nl.IFF_UP,
        ),
        link(5, "gre0", linkinfo("gre"), attr(nl.IFLA_LINK, u32(0)), attr(nl.IFLA_ADDRESS, bytes(4)), link_type=778),
        link(6, "v0", linkinfo("veth"), attr(nl.IFLA_IFALIAS, b"\0")),
    ]
    read = nl.parse(links, [], [])
    found = read.namespace.links
    assert (found["lo"].mtu, found["lo"].up, found["lo"].kind, found["lo"].mac) == (
        65536,
        True,
        None,
        "00:00:00:00:00:00",
    )
    assert found["br0"].bridge_options == (("stp_state", "1"), ("mcast_snooping", "0"), ("group_fwd_mask", "0xfff8"))
    assert found["br1"].bridge_options == (("group_fwd_mask", "0"),)  # C's %#x writes 0 without its 0x
    va0 = found["va0"]
    assert (va0.peer_index, va0.master, va0.alias, va0.mac, va0.mtu) == (
        9,
        "br0",
        "composens:x",
        "02:00:5e:10:00:0a",
        1500,
    )
    assert (found["gre0"].mac, found["gre0"].peer_index) == ("0.0.0.0", None)  # a tunnel's address is an IP
    assert (found["v0"].alias, found["v0"].peer_index, found["v0"].up) == (None, None, False)
    assert read.root_qdiscs == {"br0": "noqueue", "va0": "tbf"}


def address(family: int, prefix: int, index: int, value: str, flags: int, *, local: bool = True) -> bytes:
    packed = socket.inet_pton(family, value)
    kind = nl.IFA_LOCAL if local else nl.IFA_ADDRESS
    return (
        nl.IFADDRMSG.pack(family, prefix, flags & 0xFF, 0, index) + attr(kind, packed) + attr(nl.IFA_FLAGS, u32(flags))
    )


def test_addresses_keep_their_order_secondary_and_dynamic() -> None:
    links = [link(2, "va0")]
    permanent = nl.IFA_F_PERMANENT
    addresses = [
        address(socket.AF_INET, 24, 2, "198.18.0.1", permanent),
        address(socket.AF_INET, 24, 2, "198.18.0.2", permanent | nl.IFA_F_SECONDARY),
        address(socket.AF_INET, 24, 2, "192.0.2.1", 0),
        address(socket.AF_INET6, 64, 2, "2001:db8::1", permanent | 0x01, local=False),  # IPv6's 0x01: temporary
        address(socket.AF_INET6, 128, 7, "2001:db8::9", permanent, local=False),  # a link the dump did not name
    ]
    read = nl.parse(links, addresses, [])
    assert read.namespace.addresses == {
        "va0": (
            LiveAddress("198.18.0.1/24"),
            LiveAddress("198.18.0.2/24", secondary=True),
            LiveAddress("192.0.2.1/24", dynamic=True),
            LiveAddress("2001:db8::1/64"),
        )
    }
    assert read.address_flags["va0", "192.0.2.1/24"] == 0


def route(family: int, dst: str | None, dst_len: int, *extra: bytes, table: int = 254, kind: int = 1) -> bytes:
    head = nl.RTMSG.pack(family, dst_len, 0, 0, table if table < 256 else 252, 3, 0, kind, 0)
    parts = [attr(nl.RTA_TABLE, u32(table))]
    if dst is not None:
        parts.append(attr(nl.RTA_DST, socket.inet_pton(family, dst)))
    return head + b"".join(parts) + b"".join(extra)


def test_routes_of_the_main_table_as_live_parse_routes_keeps_them() -> None:
    links = [link(2, "va0")]
    v4, v6 = socket.AF_INET, socket.AF_INET6
    gateway = attr(nl.RTA_GATEWAY, socket.inet_pton(v4, "198.18.0.254"))
    routes = [
        route(v4, None, 0, gateway, attr(nl.RTA_OIF, u32(2))),
        route(v4, "198.19.5.5", 32, gateway, attr(nl.RTA_PRIORITY, u32(100))),
        route(v4, "198.19.0.0", 16, attr(nl.RTA_OIF, u32(2)), attr(9, b"\0" * 8)),  # RTA_MULTIPATH: its hops unread
        route(v4, "198.19.9.0", 24, gateway, table=100),
        route(v4, "198.19.11.0", 24, kind=6),  # a blackhole
        route(v6, "2001:db8:5::", 48, attr(nl.RTA_OIF, u32(3)), attr(nl.RTA_PREF, b"\0")),
        route(v6, None, 0, attr(nl.RTA_PREF, b"\0")),
        nl.RTMSG.pack(v4, 24, 0, 0, 254, 3, 0, 1, nl.RTM_F_CLONED) + attr(nl.RTA_DST, bytes(4)),
    ]
    found = nl.parse(links, [], routes).namespace.routes
    assert found == (
        LiveRoute(4, "default", "198.18.0.254", "va0", 0, "boot"),
        LiveRoute(4, "198.19.5.5/32", "198.18.0.254", None, 100, "boot"),
        LiveRoute(4, "198.19.0.0/16", None, "va0", 0, "boot"),
        LiveRoute(6, "2001:db8:5::/48", None, "if3", 0, "boot"),
        LiveRoute(6, "default", None, None, 0, "boot"),
    )


def test_protocols_are_named_as_ip_names_them() -> None:
    assert nl.protocol_name(3) == "boot"
    assert nl.protocol_name(2) == "kernel"
    assert nl.protocol_name(11) == "zebra"
    assert nl.protocol_name(188) == "ospf"
    assert nl.protocol_name(77) == "77"
