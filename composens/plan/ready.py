"""Whether a wired interface is usable yet: what the kernel must have done once its carrier came. Pure.

An interface can be up, with its carrier (`UP,LOWER_UP`), its addresses and its routes, and still not carry IPv6:
the kernel handles carrier changes in a work queue that runs at most once a second (linkwatch), and only then sets
the interface's operstate, clears `linkdown` from its routes, and lets IPv6 see the link (addrconf: the `fe80::/64`
route, the link-local address, the `multicast ff00::/8` route in table local, the all-nodes group). Until then a
send to ff02::1 fails with "Network is unreachable", and a routing daemon, a router advertisement or an MLD join
started then fails with it. So "wired" waits for this (system/kernel/ready.py), judged here from what the kernel's
link and route dumps say (system/kernel/netlink.py parses them into these types):

- its operstate is up (or unknown, as the kernel's own netif_oper_up counts it: a VXLAN device's);
- as a bridge port (a LAN's hub port), it forwards;
- no route through it is flagged `linkdown`;
- where IPv6 is on (its disable_ipv6 is 0: every end with a declared IPv6 address, and any the image enables),
  addrconf has seen the link (IF_READY), its `ff00::/8` route is in table local and, unless it makes no link-local
  address (addr_gen_mode none), its `fe80::/64` route in table main.

Which interfaces are awaited: both ends of every pair wired now (a link's two ends, a LAN member's end and its hub
port, a host end and its peer), and this host's VXLAN ends, except the ends of a pair one end of which was set down
with `composens link down` (its peer has no carrier by design).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from composens.model.names import HUB_NODE

if TYPE_CHECKING:  # the topology is the lab's to import: a replay reads readiness without it (20 to 45 ms)
    from composens.model.topology import Endpoint, Topology

# linux/if.h (IF_OPER_*), include/net/if_inet6.h (IF_READY), linux/if_bridge.h (BR_STATE_*), linux/rtnetlink.h
OPERSTATES = ("unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up")
OPER_UNKNOWN, OPER_UP = 0, 6
IF_READY = 0x80000000
PORT_STATES = ("disabled", "listening", "learning", "forwarding", "blocking")
BR_STATE_FORWARDING = 3
ADDR_GEN_MODE_NONE = 1
RT_TABLE_MAIN, RT_TABLE_LOCAL = 254, 255
RTN_UNICAST, RTN_MULTICAST = 1, 5


@dataclass(frozen=True)
class CarrierLink:
    """One interface as the kernel's link dump shows it, for what readiness needs."""

    index: int
    operstate: int
    port_state: int | None = None  # its STP state, as a bridge's port
    ipv6: bool = False  # IPv6 is on (disable_ipv6 is 0)
    ipv6_ready: bool = False  # addrconf has seen its link ready (IF_READY)
    link_local: bool = True  # the kernel makes it a link-local address (addr_gen_mode is not none)


@dataclass(frozen=True)
class CarrierRoute:
    """One route, in any table, as the kernel's route dump shows it."""

    family: int  # 4 or 6
    table: int
    kind: int  # rtm_type: unicast, local, multicast, ...
    destination: str  # "fe80::/64", "ff00::/8", "198.18.0.0/24"; "default"
    oif: int | None
    linkdown: bool


@dataclass(frozen=True)
class Carrier:
    """What a namespace's link and route dumps say about its interfaces' readiness."""

    links: Mapping[str, CarrierLink]
    routes: tuple[CarrierRoute, ...] = ()


def awaited(
    topo: Topology,
    reachable: Collection[str],
    down: Collection[Endpoint],
    chosen: Collection[str] | None = None,
) -> dict[str, tuple[str, ...]]:
    """The interfaces to wait for, by node: both ends of each pair the run converged (one end is a `chosen` service,
    or all were chosen: None) whose two namespaces it reached (`reachable`) and neither end of which is set down, and
    the VXLAN ends of chosen services in a reachable namespace that are not set down. A pair the run did not touch
    (`netns link r1` leaves r3 <-> r4 as it is) is not its to wait for: it may not be there at all."""
    found: dict[str, list[str]] = {}
    for pair in topo.pairs():
        ends = (pair.a, pair.b)
        if chosen is not None and not any(end.node in chosen for end in ends):
            continue
        if all(end.node in reachable and end not in down for end in ends):
            for end in ends:
                found.setdefault(end.node, []).append(end.ifname)
    for tunnel in topo.tunnels:
        end = tunnel.end
        if (chosen is None or end.node in chosen) and end.node in reachable and end not in down:
            found.setdefault(end.node, []).append(end.ifname)
    return {node: tuple(dict.fromkeys(names)) for node, names in found.items()}


def why_not_ready(ifname: str, seen: Carrier) -> str | None:
    """Why the interface is not usable yet (None: it is), from its namespace's dumps."""
    link = seen.links.get(ifname)
    if link is None:
        return "it is not there"
    if link.operstate not in (OPER_UP, OPER_UNKNOWN):
        return f"the kernel has not seen its carrier yet (operstate {_named(OPERSTATES, link.operstate)})"
    if link.port_state is not None and link.port_state != BR_STATE_FORWARDING:
        return f"as a bridge port it does not forward yet ({_named(PORT_STATES, link.port_state)})"
    mine = [r for r in seen.routes if r.oif == link.index]
    down = next((r for r in mine if r.linkdown), None)
    if down is not None:
        return f"its route {down.destination} is flagged linkdown"
    if not link.ipv6:
        return None
    missing = []
    if not link.ipv6_ready:
        missing.append("IPv6 has not seen its link yet")
    if not any(r.table == RT_TABLE_LOCAL and r.kind == RTN_MULTICAST and r.destination == "ff00::/8" for r in mine):
        missing.append("no multicast ff00::/8 route")
    if link.link_local and not any(r.table == RT_TABLE_MAIN and r.destination == "fe80::/64" for r in mine):
        missing.append("no fe80::/64 route")
    return "; ".join(missing) or None


def not_ready(names: Collection[str], seen: Carrier) -> dict[str, str]:
    """Each of a namespace's awaited interfaces that is not usable yet, and why."""
    found = {}
    for ifname in names:
        why = why_not_ready(ifname, seen)
        if why is not None:
            found[ifname] = why
    return found


def services_held(topo: Topology, unready: Collection[Endpoint]) -> set[str]:
    """The services not usable while `unready` ends are not: each with such an end of its own, or as the peer of
    one of its ends (the far end of a link, a LAN member's hub port, a host end)."""
    held = {end.node for end in unready}
    for pair in topo.pairs():
        if pair.a in unready or pair.b in unready:
            held |= {pair.a.node, pair.b.node}
    return held & set(topo.services)


def describe(topo: Topology, end: Endpoint) -> str:
    """An end as a person knows it: `r1:eth1`, `host:lab0`, a hub port by the member it faces and its LAN."""
    if end.node == HUB_NODE:
        for lan in topo.lans:
            if end.ifname in lan.ports:
                return f"the port {end.ifname} of LAN {lan.name} (facing {lan.members[lan.ports.index(end.ifname)]})"
        return f"the hub's {end.ifname}"
    return str(end)


def _named(names: tuple[str, ...], value: int) -> str:
    return names[value] if 0 <= value < len(names) else str(value)
