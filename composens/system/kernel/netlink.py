"""Read a namespace's links, addresses and routes over a NETLINK_ROUTE socket: no process per namespace.

The answer is the very `live.LiveNamespace` that `live.parse_namespace` builds from `ip -details
-json` (link show, addr show, route show table all), field for field; tests/integration/
test_netlink.py proves it on the kernel. Three dump requests (RTM_GETLINK, RTM_GETADDR,
RTM_GETROUTE), each parsed with struct. A socket stays bound to the namespace it was made in, so
it is made in a thread that entered the namespace (entering.run_in_netns) and read from any thread.

A dump that cannot be taken for the namespace is a NetlinkError (an OSError, on which reading.py reads with `ip
-json` instead): one ending in an error, one still flagged interrupted after TRIES tries, one holding a message that is
not well formed. Nothing here trusts a length it has not checked, so no answer crashes the command or passes, cut
short, for a whole one (tests/unit/test_netlink_dumps.py).

Only reading goes this way: every change still runs through `ip -batch`/`tc -batch`, so `composens
plan` prints exactly what runs. qdisc details (netem's and tbf's options) are still tc's to say;
each link's root qdisc name (IFLA_QDISC) tells the caller whether tc must be asked.

Why not pyroute2's parser (bench/netlink_parsers.py, pyroute2 0.9.7, two loaded cores): on the same
recorded dumps of one ring member (lo and two veths with their addresses and routes, 33 messages,
9.8 KB) its low-level MarshalRtnl decoded in 3.2 to 3.5 ms, and importing it took 0.21 to 0.29 s;
this parser takes 0.50 to 0.55 ms, a whole read (thread, socket, three dumps, parse) 0.9 to 1.0 ms,
and this module's own import 6 to 10 ms. Reading all 60 namespaces of a ring took 52 ms this way
against 105 to 173 ms with one `ip -json -batch` process each, eight at a time.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

try:
    from _blake2 import blake2b  # hashlib's own BLAKE2; hashlib itself loads OpenSSL first (4 to 15 ms)
except ImportError:  # pragma: no cover - an interpreter without it
    from hashlib import blake2b

if TYPE_CHECKING:
    from composens.plan.live import LiveAddress, LiveLink, LiveNamespace, LiveRoute, Vxlan
    from composens.plan.ready import Carrier, CarrierLink, CarrierRoute

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12  # Linux 4.20: dump requests' headers filter (a route dump by its table)
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26

IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_QDISC, IFLA_MASTER = 1, 3, 4, 5, 6, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_EXT_MASK = 18, 20, 29
IFLA_OPERSTATE, IFLA_AF_SPEC = 16, 26
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
IFLA_BRPORT_STATE = 1
IFLA_INET6_FLAGS, IFLA_INET6_CONF, IFLA_INET6_ADDR_GEN_MODE = 1, 2, 8
DEVCONF_DISABLE_IPV6 = 26  # its index in IFLA_INET6_CONF's array of s32 (linux/ipv6.h)
CARRIER_ATTRIBUTES = frozenset({IFLA_IFNAME, IFLA_OPERSTATE, IFLA_AF_SPEC, IFLA_LINKINFO})
LINK_ATTRIBUTES = frozenset(
    {IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_QDISC, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS}
)
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFLA_BR_STP_STATE, IFLA_BR_GROUP_FWD_MASK, IFLA_BR_MCAST_SNOOPING = 5, 9, 23
IFLA_VXLAN_ID, IFLA_VXLAN_GROUP, IFLA_VXLAN_LOCAL, IFLA_VXLAN_PORT = 1, 2, 4, 15  # linux/if_link.h
IFLA_VXLAN_GROUP6, IFLA_VXLAN_LOCAL6 = 16, 17

IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_SECONDARY = 0x01
IFA_F_PERMANENT = 0x80

# Link types whose hardware address ip prints as an IP address (ll_addr_n2a), by its length.
IP_ADDRESSED = {768: (4, socket.AF_INET), 776: (4, socket.AF_INET), 778: (4, socket.AF_INET)}  # ipip, sit, gre
IP_ADDRESSED |= {769: (16, socket.AF_INET6), 823: (16, socket.AF_INET6)}  # ip6tnl, ip6gre

RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE, RTA_PREF = 1, 4, 5, 6, 15, 20
RT_TABLE_MAIN = 254
RTN_UNICAST, RTN_MULTICAST = 1, 5
RTM_F_CLONED = 0x200
RTNH_F_LINKDOWN = 0x10
# The groups whose events can make an interface ready: links (operstate), IPv4 and IPv6 routes, IPv6's own link
# events (IF_READY) and addresses (linux/rtnetlink.h RTMGRP_*).
RTMGRP_LINK, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_IPV6_IFINFO = 1, 0x40, 0x100, 0x400, 0x800
CARRIER_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE | RTMGRP_IPV6_IFINFO

NLMSG = struct.Struct("=IHHII")
RTATTR = struct.Struct("=HH")
IFINFOMSG = struct.Struct("=BxHiII")
IFADDRMSG = struct.Struct("=BBBBI")
RTMSG = struct.Struct("=BBBBBBBBI")
U32 = struct.Struct("=I")
U16 = struct.Struct("=H")
RECEIVE = 1 << 17
# A dump the kernel marks interrupted (the namespace changed while it was sent in parts) is asked again at once; one
# interrupted this many times in a row is a namespace that keeps changing: a reading failure, never a partial answer.
TRIES = 10

# iproute2's names for route protocols (lib/rt_names.c), overridden by /etc/iproute2/rt_protos.
PROTOCOLS = {
    0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra", 10: "mrt",
    11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp", 18: "keepalived",
    42: "babel", 99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip", 192: "eigrp",
}  # fmt: skip
PROTOCOL_FILES = ("/usr/share/iproute2/rt_protos", "/etc/iproute2/rt_protos")
PROTOCOL_FOLDERS = ("/usr/share/iproute2/rt_protos.d", "/etc/iproute2/rt_protos.d")


Dumps = tuple[list[bytes], list[bytes], list[bytes]]  # the payloads of a link, an address and a route dump


class NetlinkError(OSError):
    """A dump that cannot be taken for the namespace: it ended in an error, stayed interrupted, or did not parse.

    An OSError, so a caller that falls back to `ip -json` where netlink cannot read does so here too."""


@dataclass(frozen=True)
class NetlinkRead:
    """A namespace as netlink dumps it: the LiveNamespace, each link's root qdisc, each address's IFA_F flags."""

    namespace: LiveNamespace
    root_qdiscs: dict[str, str] = field(default_factory=dict)  # ifname -> IFLA_QDISC ("noqueue", "tbf", ...)
    address_flags: dict[tuple[str, str], int] = field(default_factory=dict)  # (ifname, address) -> IFA_F_*
    dumps: Dumps | None = None  # the payloads it was parsed from (see dumps_digest)


def open_socket(ns_fd: int | None = None) -> socket.socket:
    """A NETLINK_ROUTE socket in the namespace of `ns_fd` (None: this process's own)."""
    if ns_fd is None:
        return _new_socket()
    from composens.system.kernel.entering import run_in_netns

    made: list[socket.socket] = []
    run_in_netns(ns_fd, lambda: made.append(_new_socket()))
    return made[0]


def _new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


def events_socket() -> socket.socket:
    """A non-blocking NETLINK_ROUTE socket of this thread's namespace, told of what can make an interface ready
    (CARRIER_GROUPS). Made before the namespace is read, so nothing that changes after the reading goes unseen."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK, NETLINK_ROUTE)
    try:
        sock.bind((0, CARRIER_GROUPS))
    except OSError:
        sock.close()
        raise
    return sock


def read_path(path: str) -> NetlinkRead:
    """Read the namespace at `path` (an nsfs mount, a /var/run/netns entry, /proc/self/ns/net)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_fd(fd, own=path == "/proc/self/ns/net")
    finally:
        os.close(fd)


def read_fd(ns_fd: int, *, own: bool = False) -> NetlinkRead:
    """Read the namespace `ns_fd` refers to (own: it is this process's, so no thread need enter it)."""
    with open_socket(None if own else ns_fd) as sock:
        return read_socket(sock)


def read_socket(sock: socket.socket) -> NetlinkRead:
    """Dump links, addresses and routes through `sock` and parse them as `ip -details -json` would read."""
    dumps = _dumps(sock)
    return replace(parse(*dumps), dumps=dumps)


def read_carrier(sock: socket.socket) -> Carrier:
    """Dump the links and the routes of every table through `sock`: what plan/ready.py judges readiness from."""
    links = _dump_links(sock)
    routes = dump(sock, RTM_GETROUTE, RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0))  # table 0: every table
    return parse_carrier(links, routes)


def read_dumps_digests(paths: list[str]) -> list[str | None]:
    """The digest of what each namespace dumps, unparsed (equal digests, equal reads: composens.replay); None where
    it cannot be read. One thread makes every socket, entering each namespace in turn; this one dumps."""
    from composens.system.kernel.entering import in_each_netns

    fds: list[int] = []
    try:
        for path in paths:
            try:
                fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                fds.append(-1)  # setns fails on it: no socket, no digest
        sockets = in_each_netns(fds, _new_socket)
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)
    found: list[str | None] = []
    for sock in sockets:
        if isinstance(sock, BaseException):
            found.append(None)
            continue
        with sock:
            try:
                found.append(dumps_digest(_dumps(sock)))
            except OSError:
                found.append(None)
    return found


def dumps_digest(dumps: Dumps) -> str:
    """A digest of the three dumps, message by message (headers left out: they carry the socket's port id)."""
    digest = blake2b(digest_size=16)
    for payloads in dumps:
        digest.update(len(payloads).to_bytes(4, "little"))
        for payload in payloads:
            digest.update(len(payload).to_bytes(4, "little") + payload)
    return digest.hexdigest()


def _dump_links(sock: socket.socket) -> list[bytes]:
    """Every link of the socket's namespace, without the statistics neither reading uses."""
    request = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _u32_attr(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    return dump(sock, RTM_GETLINK, request)


def _dumps(sock: socket.socket) -> Dumps:
    try:
        sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        table = RT_TABLE_MAIN  # the kernel sends the main table's routes only (parse keeps only those anyway)
    except OSError:
        table = 0
    links = _dump_links(sock)
    addresses = dump(sock, RTM_GETADDR, IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
    routes = dump(sock, RTM_GETROUTE, RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, table, 0, 0, 0, 0))
    return links, addresses, routes


def _u32_attr(kind: int, value: int) -> bytes:
    return RTATTR.pack(8, kind) + U32.pack(value)


def dump(sock: socket.socket, kind: int, body: bytes) -> list[bytes]:
    """Send one dump request; return the payload of each answer (header stripped), in the kernel's order.

    Fails (NetlinkError) as ip fails a dump: one ending in an error (NLMSG_DONE or NLMSG_ERROR carrying it), and any
    answer that is not well formed; one the kernel flags interrupted is asked again, up to TRIES times."""
    for _ in range(TRIES):
        payloads, interrupted = _dump_once(sock, kind, body)
        if not interrupted:
            return payloads
    raise NetlinkError(
        errno.EINTR,
        f"netlink: the {_DUMPS.get(kind, 'dump')} dump was interrupted {TRIES} times in a row: the namespace keeps "
        "changing",
    )


_DUMPS = {RTM_GETLINK: "link", RTM_GETADDR: "address", RTM_GETROUTE: "route"}


def _dump_once(sock: socket.socket, kind: int, body: bytes) -> tuple[list[bytes], bool]:
    seq = kind  # one socket per read, one dump of each kind at a time on it
    what = f"the {_DUMPS.get(kind, 'dump')} dump"
    sock.send(NLMSG.pack(NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
    payloads: list[bytes] = []
    interrupted = False
    while True:
        for message, flags, payload in _answers(sock, seq, what):
            interrupted = interrupted or bool(flags & NLM_F_DUMP_INTR)
            if message == NLMSG_DONE:
                return payloads, interrupted
            if message != NLMSG_ERROR:  # an error of 0 (an acknowledgement) is no message of the dump
                payloads.append(payload)


def _answers(sock: socket.socket, seq: int, what: str) -> Iterator[tuple[int, int, bytes]]:
    """The messages of one datagram that answer `seq`: type, flags, payload. Every length is checked before it is
    trusted; NLMSG_DONE and NLMSG_ERROR carrying a negative status fail (NetlinkError), as ip fails them."""
    data, _, received_flags, _ = sock.recvmsg(RECEIVE)
    if received_flags & socket.MSG_TRUNC:
        raise NetlinkError(f"netlink: {what} sent a datagram larger than the receive buffer ({RECEIVE} bytes)")
    if not data:
        raise NetlinkError(f"netlink: {what} ended without its last message")
    offset = 0
    while offset < len(data):
        left = len(data) - offset
        if left < NLMSG.size:
            raise NetlinkError(f"netlink: {left} stray bytes after the last message of {what}")
        length, message, flags, got, _ = NLMSG.unpack_from(data, offset)
        if length < NLMSG.size or length > left:
            raise NetlinkError(f"netlink: a message of {length} bytes where {left} came, in {what}")
        if got == seq:
            if message in (NLMSG_DONE, NLMSG_ERROR):
                if length < NLMSG.size + 4:  # as ip: "DONE truncated", "ERROR truncated"
                    raise NetlinkError(f"netlink: {what} ended with a truncated status")
                (status,) = struct.unpack_from("=i", data, offset + NLMSG.size)
                if status < 0:  # as ip, a dump that ends in an error is no dump: what came is not all there is
                    raise NetlinkError(-status, f"netlink: {what} failed: {os.strerror(-status)}")
            yield message, flags, data[offset + NLMSG.size : offset + length]
        offset += (length + 3) & ~3


SYNC_SEQ = 1  # the sequence number of sync_link's request: no dump's (they use their request types, 16 and up)


def sync_link(sock: socket.socket, ifname: str) -> None:
    """Ask for one link by name (RTM_GETLINK, not a dump), and take the answer. The kernel first handles a carrier
    change of that link still queued for its linkwatch work (rtnl_getlink calls linkwatch_sync_dev, to report no
    carrier it does not honour yet), so its operstate, its routes' linkdown and IPv6 follow now, not up to a
    second later. A link that is not there: ENODEV (NetlinkError)."""
    name = ifname.encode() + b"\0"
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + RTATTR.pack(4 + len(name), IFLA_IFNAME) + name
    body += b"\0" * (-len(body) % 4) + _u32_attr(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    sock.send(NLMSG.pack(NLMSG.size + len(body), RTM_GETLINK, NLM_F_REQUEST, SYNC_SEQ, 0) + body)
    while True:
        for message, _, _ in _answers(sock, SYNC_SEQ, f"the link {ifname}"):
            if message in (RTM_NEWLINK, NLMSG_ERROR):
                return


def attributes(data: bytes, offset: int, wanted: frozenset[int] | None = None) -> dict[int, bytes]:
    """The attributes from `offset` on (those of `wanted` types only, if given), by type (the nested flag
    masked off); the last of a type wins."""
    found: dict[int, bytes] = {}
    end = len(data)
    unpack = RTATTR.unpack_from
    while offset + 4 <= end:  # fewer than 4 bytes left: the message's own padding
        length, kind = unpack(data, offset)
        if length < 4 or offset + length > end:
            raise NetlinkError(
                f"netlink: a malformed message: an attribute of {length} bytes where {end - offset} are left"
            )
        kind &= 0x3FFF
        if wanted is None or kind in wanted:
            found[kind] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def _string(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


def _u32(value: bytes) -> int:
    return int(U32.unpack_from(value)[0])


def _address(family: int, value: bytes) -> str:
    return socket.inet_ntop(family, value)


def parse(links: list[bytes], addresses: list[bytes], routes: list[bytes]) -> NetlinkRead:
    """Build what `live.parse_namespace` builds from ip's JSON, from the payloads of the three dumps.

    A message too short for what it says it holds fails as a NetlinkError (a reading failure), never as a crash."""
    try:
        return _parse(links, addresses, routes)
    except (struct.error, ValueError, IndexError) as e:  # a field shorter than its type, an address of a bad length
        raise NetlinkError(f"netlink: a malformed message: {e}") from e


def _parse(links: list[bytes], addresses: list[bytes], routes: list[bytes]) -> NetlinkRead:
    from composens.plan.live import LiveAddress, LiveLink, LiveNamespace  # here: reading dumps alone needs none

    by_index: dict[int, str] = {}
    parsed_links: dict[str, LiveLink] = {}
    qdiscs: dict[str, str] = {}
    raw: list[tuple[int, int, int, dict[int, bytes]]] = []
    for payload in links:
        _, link_type, index, flags, _ = IFINFOMSG.unpack_from(payload)
        attrs = attributes(payload, IFINFOMSG.size, LINK_ATTRIBUTES)
        if IFLA_IFNAME in attrs:
            by_index[index] = _string(attrs[IFLA_IFNAME])
            raw.append((index, link_type, flags, attrs))
    for index, link_type, flags, attrs in raw:
        name = by_index[index]
        info = attributes(attrs[IFLA_LINKINFO], 0) if IFLA_LINKINFO in attrs else {}
        kind = _string(info[IFLA_INFO_KIND]) if IFLA_INFO_KIND in info else None
        peer = _u32(attrs[IFLA_LINK]) if IFLA_LINK in attrs else 0
        master = _u32(attrs[IFLA_MASTER]) if IFLA_MASTER in attrs else None
        alias = _string(attrs[IFLA_IFALIAS]) if IFLA_IFALIAS in attrs else None
        if IFLA_QDISC in attrs:
            qdiscs[name] = _string(attrs[IFLA_QDISC])
        parsed_links[name] = LiveLink(
            ifname=name,
            index=index,
            kind=kind,
            peer_index=(peer or None) if kind == "veth" else None,
            alias=alias or None,
            mtu=_u32(attrs[IFLA_MTU]) if IFLA_MTU in attrs else 1500,
            up=bool(flags & IFF_UP),
            master=None if master is None else by_index.get(master, f"if{master}"),
            bridge_options=_bridge_options(info.get(IFLA_INFO_DATA, b"")) if kind == "bridge" else (),
            mac=_hardware_address(link_type, attrs[IFLA_ADDRESS]) if IFLA_ADDRESS in attrs else None,
            vxlan=_vxlan(info.get(IFLA_INFO_DATA, b"")) if kind == "vxlan" else None,
        )
    parsed_addresses: dict[str, list[LiveAddress]] = {}
    address_flags: dict[tuple[str, str], int] = {}
    for payload in addresses:
        family, prefix, short_flags, _, index = IFADDRMSG.unpack_from(payload)
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        attrs = attributes(payload, IFADDRMSG.size)
        local = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        owner = by_index.get(index)
        if local is None or owner is None:
            continue
        flags = _u32(attrs[IFA_FLAGS]) if IFA_FLAGS in attrs else short_flags
        text = f"{_address(family, local)}/{prefix}"
        address_flags[owner, text] = flags
        # IFA_F_SECONDARY is IFA_F_TEMPORARY in IPv6, which ip calls "temporary", not "secondary".
        parsed_addresses.setdefault(owner, []).append(
            LiveAddress(
                text,
                secondary=family == socket.AF_INET and bool(flags & IFA_F_SECONDARY),
                dynamic=not flags & IFA_F_PERMANENT,
            )
        )
    return NetlinkRead(
        LiveNamespace(
            parsed_links,
            {name: tuple(found) for name, found in parsed_addresses.items()},
            tuple(_routes(routes, by_index)),
        ),
        qdiscs,
        address_flags,
    )


def parse_carrier(links: list[bytes], routes: list[bytes]) -> Carrier:
    """Each link's operstate, bridge port state and IPv6 state, and the table, type, device and linkdown flag of the
    routes readiness looks at, from the payloads of a link and a route dump (a malformed message: NetlinkError)."""
    try:
        return _parse_carrier(links, routes)
    except (struct.error, ValueError, IndexError) as e:
        raise NetlinkError(f"netlink: a malformed message: {e}") from e


def _parse_carrier(links: list[bytes], routes: list[bytes]) -> Carrier:
    from composens.plan.ready import Carrier

    found: dict[str, CarrierLink] = {}
    for payload in links:
        _, _, index, _, _ = IFINFOMSG.unpack_from(payload)
        attrs = attributes(payload, IFINFOMSG.size, CARRIER_ATTRIBUTES)
        if IFLA_IFNAME in attrs:
            found[_string(attrs[IFLA_IFNAME])] = _carrier_link(index, attrs)
    return Carrier(found, tuple(_carrier_routes(routes)))


def _carrier_link(index: int, attrs: dict[int, bytes]) -> CarrierLink:
    from composens.plan.ready import ADDR_GEN_MODE_NONE, IF_READY, OPER_UNKNOWN, CarrierLink

    info = attributes(attrs[IFLA_LINKINFO], 0) if IFLA_LINKINFO in attrs else {}
    port_state = None
    if IFLA_INFO_SLAVE_KIND in info and _string(info[IFLA_INFO_SLAVE_KIND]) == "bridge":
        port = attributes(info.get(IFLA_INFO_SLAVE_DATA, b""), 0)
        port_state = port[IFLA_BRPORT_STATE][0] if IFLA_BRPORT_STATE in port else None
    spec = attributes(attrs[IFLA_AF_SPEC], 0) if IFLA_AF_SPEC in attrs else {}
    inet6 = attributes(spec[socket.AF_INET6], 0) if socket.AF_INET6 in spec else {}
    conf = inet6.get(IFLA_INET6_CONF, b"")
    at = DEVCONF_DISABLE_IPV6 * 4
    # No IPv6 state at all (an MTU below 1280, IPv6 compiled out): the kernel gives it no IPv6 to wait for.
    ipv6 = len(conf) >= at + 4 and struct.unpack_from("=i", conf, at)[0] == 0
    flags = _u32(inet6[IFLA_INET6_FLAGS]) if IFLA_INET6_FLAGS in inet6 else 0
    mode = inet6[IFLA_INET6_ADDR_GEN_MODE][0] if IFLA_INET6_ADDR_GEN_MODE in inet6 else 0
    return CarrierLink(
        index=index,
        operstate=attrs[IFLA_OPERSTATE][0] if IFLA_OPERSTATE in attrs else OPER_UNKNOWN,
        port_state=port_state,
        ipv6=ipv6,
        ipv6_ready=bool(flags & IF_READY),
        link_local=mode != ADDR_GEN_MODE_NONE,
    )


def _carrier_routes(payloads: list[bytes]) -> Iterator[CarrierRoute]:
    from composens.plan.ready import CarrierRoute

    for payload in payloads:
        family, dst_len, _, _, short_table, _, _, kind, flags = RTMSG.unpack_from(payload)
        # Only what readiness looks at: a route flagged linkdown, IPv6's multicast /8 and unicast /64 (ff00::/8,
        # fe80::/64); the rest (every local and broadcast route, say) is left unparsed.
        wanted = flags & RTNH_F_LINKDOWN or (
            family == socket.AF_INET6 and (dst_len, kind) in ((8, RTN_MULTICAST), (64, RTN_UNICAST))
        )
        if family not in (socket.AF_INET, socket.AF_INET6) or not wanted:
            continue
        attrs = attributes(payload, RTMSG.size)
        destination = f"{_address(family, attrs[RTA_DST])}/{dst_len}" if RTA_DST in attrs else "default"
        yield CarrierRoute(
            family=6 if family == socket.AF_INET6 else 4,
            table=_u32(attrs[RTA_TABLE]) if RTA_TABLE in attrs else short_table,
            kind=kind,
            destination=destination,
            oif=_u32(attrs[RTA_OIF]) if RTA_OIF in attrs else None,
            linkdown=bool(flags & RTNH_F_LINKDOWN),
        )


def _hardware_address(link_type: int, value: bytes) -> str:
    """As ip's ll_addr_n2a writes it: an IP address for IP tunnels, else bytes in hex joined by colons."""
    size, family = IP_ADDRESSED.get(link_type, (0, 0))
    if size and len(value) == size:
        return _address(family, value)
    return ":".join(f"{byte:02x}" for byte in value)


def _vxlan(data: bytes) -> Vxlan:
    """A VXLAN device's VNI, local and remote addresses and UDP port (big-endian there), as ip prints them."""
    from composens.plan.live import Vxlan

    attrs = attributes(data, 0)

    def address(v4: int, v6: int) -> str | None:
        if v4 in attrs and len(attrs[v4]) == 4:
            return _address(socket.AF_INET, attrs[v4][:4])
        if v6 in attrs and len(attrs[v6]) == 16:
            return _address(socket.AF_INET6, attrs[v6][:16])
        return None

    port = struct.unpack_from("!H", attrs[IFLA_VXLAN_PORT])[0] if IFLA_VXLAN_PORT in attrs else 0
    vni = _u32(attrs[IFLA_VXLAN_ID]) if IFLA_VXLAN_ID in attrs else 0
    return Vxlan(vni, address(IFLA_VXLAN_LOCAL, IFLA_VXLAN_LOCAL6), address(IFLA_VXLAN_GROUP, IFLA_VXLAN_GROUP6), port)


def _bridge_options(data: bytes) -> tuple[tuple[str, str], ...]:
    """stp_state, mcast_snooping, group_fwd_mask as ip prints them (the mask in C's %#x: "0" or "0xfff8")."""
    attrs = attributes(data, 0)
    options = []
    if IFLA_BR_STP_STATE in attrs:
        options.append(("stp_state", str(_u32(attrs[IFLA_BR_STP_STATE]))))
    if IFLA_BR_MCAST_SNOOPING in attrs:
        options.append(("mcast_snooping", str(attrs[IFLA_BR_MCAST_SNOOPING][0])))
    if IFLA_BR_GROUP_FWD_MASK in attrs:
        mask = U16.unpack_from(attrs[IFLA_BR_GROUP_FWD_MASK])[0]
        options.append(("group_fwd_mask", f"{mask:#x}" if mask else "0"))
    return tuple(options)


def _routes(payloads: list[bytes], by_index: dict[int, str]) -> Iterator[LiveRoute]:
    """The main table's unicast routes, as live._parse_routes keeps them from `ip route show table all`."""
    import ipaddress

    from composens.plan.live import LiveRoute

    for payload in payloads:
        family, dst_len, _, _, short_table, protocol, _, kind, flags = RTMSG.unpack_from(payload)
        if family not in (socket.AF_INET, socket.AF_INET6) or kind != RTN_UNICAST or flags & RTM_F_CLONED:
            continue  # ip leaves cloned routes out unless asked for the cache
        attrs = attributes(payload, RTMSG.size)
        table = _u32(attrs[RTA_TABLE]) if RTA_TABLE in attrs else short_table
        if table != RT_TABLE_MAIN:
            continue
        gateway = _address(family, attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
        if RTA_DST in attrs:
            network = ipaddress.ip_network(f"{_address(family, attrs[RTA_DST])}/{dst_len}", strict=False)
            destination = str(network)
        else:
            destination = "default"
        # The family as live._parse_routes tells it from ip's words: an IPv6 route always carries a preference.
        six = ":" in destination or ":" in (gateway or "") or RTA_PREF in attrs
        oif = _u32(attrs[RTA_OIF]) if RTA_OIF in attrs else None
        yield LiveRoute(
            family=6 if six else 4,
            destination=destination,
            gateway=gateway,
            dev=None if oif is None else by_index.get(oif, f"if{oif}"),
            metric=_u32(attrs[RTA_PRIORITY]) if RTA_PRIORITY in attrs else 0,
            protocol=protocol_name(protocol),
        )


def protocol_name(number: int) -> str:
    """A route protocol as ip names it: iproute2's defaults, then its rt_protos files."""
    return _protocols().get(number, str(number))


@functools.cache  # read once per process, as ip reads its table once
def _protocols() -> dict[int, str]:
    names = dict(PROTOCOLS)
    files = [Path(p) for p in PROTOCOL_FILES]
    for folder in PROTOCOL_FOLDERS:
        try:
            files += sorted(Path(folder).glob("*.conf"))
        except OSError:
            continue
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 2:
                try:
                    names[int(words[0], 0)] = words[1]
                except ValueError:
                    continue
    return names
