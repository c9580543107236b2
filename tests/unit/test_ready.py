"""When a wired interface is usable (plan/ready.py), judged from link and route dumps built byte by byte."""

from __future__ import annotations

import socket
import struct

import pytest

from composens.model import declared
from composens.model.topology import HUB, Endpoint
from composens.plan import ready
from composens.plan.ready import Carrier, CarrierLink, CarrierRoute
from composens.system.kernel import netlink as nl
from tests.unit.test_netlink_parse import attr, link, u32

V6, V4 = socket.AF_INET6, socket.AF_INET


def inet6(*, disabled: int = 0, flags: int = ready.IF_READY, mode: int = 0) -> bytes:
    conf = [0] * 40
    conf[nl.DEVCONF_DISABLE_IPV6] = disabled
    inner = attr(nl.IFLA_INET6_FLAGS, u32(flags)) + attr(nl.IFLA_INET6_CONF, struct.pack(f"={len(conf)}i", *conf))
    inner += attr(nl.IFLA_INET6_ADDR_GEN_MODE, bytes([mode]))
    return attr(nl.IFLA_AF_SPEC, attr(socket.AF_INET, b"\0" * 8) + attr(V6, inner))


def operstate(value: int) -> bytes:
    return attr(nl.IFLA_OPERSTATE, bytes([value]))


def bridge_port(state: int) -> bytes:
    return attr(
        nl.IFLA_LINKINFO,
        attr(nl.IFLA_INFO_KIND, b"veth\0")
        + attr(nl.IFLA_INFO_SLAVE_KIND, b"bridge\0")
        + attr(nl.IFLA_INFO_SLAVE_DATA, attr(nl.IFLA_BRPORT_STATE, bytes([state]))),
    )


def route(family: int, dst: str, dst_len: int, oif: int, *, table: int = 254, kind: int = 1, flags: int = 0) -> bytes:
    head = nl.RTMSG.pack(family, dst_len, 0, 0, min(table, 255), 2, 0, kind, flags)
    return (
        head
        + attr(nl.RTA_TABLE, u32(table))
        + attr(nl.RTA_DST, socket.inet_pton(family, dst))
        + attr(nl.RTA_OIF, u32(oif))
    )


READY_ROUTES = [
    route(V6, "fe80::", 64, 2),
    route(V6, "ff00::", 8, 2, table=255, kind=ready.RTN_MULTICAST),
    route(V6, "2001:db8::", 64, 2),
]


def judged(links: list[bytes], routes: list[bytes], ifname: str = "eth1") -> str | None:
    return ready.why_not_ready(ifname, nl.parse_carrier(links, routes))


def test_an_interface_is_ready_once_the_kernel_and_ipv6_have_seen_its_carrier() -> None:
    assert judged([link(2, "eth1", operstate(ready.OPER_UP), inet6())], READY_ROUTES) is None


def test_up_with_carrier_but_not_yet_handled_is_not_ready() -> None:
    """What the issue read at the failure: UP,LOWER_UP, operstate still down, no IPv6 routes of its own yet."""
    links = [link(2, "eth1", operstate(2), inet6(flags=0), flags=nl.IFF_UP | 0x10000)]
    assert judged(links, [route(V6, "2001:db8::", 64, 2, flags=nl.RTNH_F_LINKDOWN)]) == (
        "the kernel has not seen its carrier yet (operstate down)"
    )


def test_a_prefix_route_flagged_linkdown_is_not_ready() -> None:
    routes = [*READY_ROUTES[:2], route(V6, "2001:db8::", 64, 2, flags=nl.RTNH_F_LINKDOWN)]
    assert judged([link(2, "eth1", operstate(ready.OPER_UP), inet6())], routes) == (
        "its route 2001:db8::/64 is flagged linkdown"
    )


def test_ipv6_not_yet_ready_names_what_is_missing() -> None:
    links = [link(2, "eth1", operstate(ready.OPER_UP), inet6(flags=0))]
    assert judged(links, [route(V6, "2001:db8::", 64, 2)]) == (
        "IPv6 has not seen its link yet; no multicast ff00::/8 route; no fe80::/64 route"
    )
    routes_of_another = [route(V6, "fe80::", 64, 3), route(V6, "ff00::", 8, 3, table=255, kind=ready.RTN_MULTICAST)]
    assert judged([link(2, "eth1", operstate(ready.OPER_UP), inet6())], routes_of_another) == (
        "no multicast ff00::/8 route; no fe80::/64 route"
    )
    in_main = [route(V6, "fe80::", 64, 2), route(V6, "ff00::", 8, 2, kind=ready.RTN_MULTICAST)]
    assert judged([link(2, "eth1", operstate(ready.OPER_UP), inet6())], in_main) == "no multicast ff00::/8 route"


def test_without_ipv6_carrier_alone_counts() -> None:
    assert judged([link(2, "eth1", operstate(ready.OPER_UP), inet6(disabled=1, flags=0))], []) is None
    assert judged([link(2, "eth1", operstate(ready.OPER_UP))], []) is None  # no IPv6 state at all
    ipv4_linkdown = [route(V4, "198.18.0.0", 24, 2, flags=nl.RTNH_F_LINKDOWN)]
    assert judged([link(2, "eth1", operstate(ready.OPER_UP))], ipv4_linkdown) == (
        "its route 198.18.0.0/24 is flagged linkdown"
    )


def test_no_link_local_address_no_fe80_route_awaited() -> None:
    links = [link(2, "eth1", operstate(ready.OPER_UP), inet6(mode=ready.ADDR_GEN_MODE_NONE))]
    assert judged(links, READY_ROUTES[1:]) is None


def test_operstate_unknown_counts_as_up_as_the_kernel_counts_it() -> None:
    assert judged([link(5, "vx0", operstate(ready.OPER_UNKNOWN))], [], "vx0") is None
    assert judged([link(5, "eth1", operstate(5))], []) == "the kernel has not seen its carrier yet (operstate dormant)"


def test_a_hub_port_forwards_before_it_is_ready() -> None:
    listening = [link(3, "r1.eth1", operstate(ready.OPER_UP), bridge_port(1))]
    assert judged(listening, [], "r1.eth1") == "as a bridge port it does not forward yet (listening)"
    forwarding = [link(3, "r1.eth1", operstate(ready.OPER_UP), bridge_port(ready.BR_STATE_FORWARDING))]
    assert judged(forwarding, [], "r1.eth1") is None


def test_a_missing_interface_is_not_ready() -> None:
    assert judged([], []) == "it is not there"


def test_carrier_parse_reads_every_field() -> None:
    seen = nl.parse_carrier(
        [link(2, "eth1", operstate(6), inet6(mode=3)), link(3, "p0", operstate(2), bridge_port(4))],
        [route(V6, "ff00::", 8, 2, table=255, kind=5, flags=nl.RTNH_F_LINKDOWN)],
    )
    assert seen == Carrier(
        {
            "eth1": CarrierLink(2, 6, None, ipv6=True, ipv6_ready=True, link_local=True),
            "p0": CarrierLink(3, 2, 4, ipv6=False, ipv6_ready=False, link_local=True),
        },
        (CarrierRoute(6, 255, 5, "ff00::/8", 2, linkdown=True),),
    )


@pytest.mark.parametrize(
    ("links", "routes"),
    [
        ([link(2, "eth1", attr(nl.IFLA_OPERSTATE, b""))], []),
        ([link(2, "eth1", attr(nl.IFLA_AF_SPEC, attr(V6, attr(nl.IFLA_INET6_FLAGS, b"\1"))))], []),
        ([link(2, "eth1")], [nl.RTMSG.pack(V6, 8, 0, 0, 255, 2, 0, 5, 0) + attr(nl.RTA_DST, b"\xff")]),
        ([link(2, "eth1") + struct.pack("=HH", 64, nl.IFLA_OPERSTATE)], []),
    ],
)
def test_a_malformed_carrier_dump_is_a_reading_failure(links: list[bytes], routes: list[bytes]) -> None:
    with pytest.raises(nl.NetlinkError, match="malformed"):
        nl.parse_carrier(links, routes)


LAB = {
    "name": "ready",
    "x-composens": {
        "links": [{"endpoints": ["a:eth1", "b:eth1"]}, {"endpoints": ["b:eth2", "host:b-up"]}],
        "lans": {"lan1": {"endpoints": ["a:eth2", "b:eth3", "c:eth1"]}},
    },
    "services": {name: {"image": "busybox", "network_mode": "none"} for name in ("a", "b", "c")},
}


def test_both_ends_of_every_pair_wired_now_are_awaited() -> None:
    topo = declared.parse(LAB, source="test")
    port = {member: str(topo.lans[0].port_of(Endpoint(*member.split(":"))).ifname) for member in ("a:eth2", "b:eth3")}
    found = ready.awaited(topo, {"a", "b", "host", HUB}, set())
    assert found == {
        "a": ("eth1", "eth2"),
        "b": ("eth1", "eth2", "eth3"),
        "host": ("b-up",),
        HUB: (port["a:eth2"], port["b:eth3"]),
    }  # c is not running: its LAN pair is not wired, so not awaited
    assert ready.awaited(topo, {"a", "b", "host", HUB}, {Endpoint("b", "eth1")}) == {
        "a": ("eth2",),
        "b": ("eth2", "eth3"),
        "host": ("b-up",),
        HUB: (port["a:eth2"], port["b:eth3"]),
    }  # a link set down: its peer has no carrier by design


def test_only_the_pairs_a_run_converged_are_awaited() -> None:
    """`netns link c` wires c's LAN end and nothing else: a <-> b may not be there at all (issue 26's CI failure)."""
    topo = declared.parse(LAB, source="test")
    port = str(topo.lans[0].port_of(Endpoint("c", "eth1")).ifname)
    assert ready.awaited(topo, {"a", "b", "c", "host", HUB}, set(), {"c"}) == {"c": ("eth1",), HUB: (port,)}
    assert set(ready.awaited(topo, {"a", "b", "c", "host", HUB}, set(), {"a"})) == {"a", "b", HUB}


def test_a_service_is_held_by_its_own_ends_and_their_peers() -> None:
    topo = declared.parse(LAB, source="test")
    lan = topo.lans[0]
    assert ready.services_held(topo, {Endpoint("a", "eth1")}) == {"a", "b"}
    assert ready.services_held(topo, {lan.port_of(Endpoint("c", "eth1"))}) == {"c"}
    assert ready.services_held(topo, {Endpoint("host", "b-up")}) == {"b"}
    assert ready.services_held(topo, set()) == set()
    assert ready.describe(topo, lan.port_of(Endpoint("c", "eth1"))) == (
        f"the port {lan.port_of(Endpoint('c', 'eth1')).ifname} of LAN lan1 (facing c:eth1)"
    )
    assert ready.describe(topo, Endpoint("a", "eth1")) == "a:eth1"
    assert ready.not_ready(("eth1", "eth2"), Carrier({"eth2": CarrierLink(3, ready.OPER_UP)})) == {
        "eth1": "it is not there"
    }


NOT_READY = "b:eth1 is not usable after 11 s: the kernel has not seen its carrier yet (operstate dormant)"


def test_not_ready_is_said_on_stderr_and_fails_the_run() -> None:
    import io

    from composens.cli.app import report_link
    from composens.model.errors import ComposensError
    from composens.model.report import LinkReport
    from composens.show.render import Output, repair_line

    out, err = io.StringIO(), io.StringIO()
    report = LinkReport(wired=["ip link set b up"], not_ready=[NOT_READY])
    with pytest.raises(ComposensError, match=r"^1 wired interface is not usable yet \(see above\)$") as failed:
        report_link(Output(out, err), report)
    assert failed.value.exit_code == 1
    assert out.getvalue() == "wired: ip link set b up\n"
    assert err.getvalue() == f"composens: not ready: {NOT_READY}\n"
    line = repair_line(report)
    assert line is not None
    assert line.split(" ", 1)[1] == "repaired: 1 wiring change; 1 interface not ready"
    out, err = io.StringIO(), io.StringIO()
    Output(out, err).repair(report)  # watch goes on: the line, and which interface and why
    assert err.getvalue() == f"composens: not ready: {NOT_READY}\n"
