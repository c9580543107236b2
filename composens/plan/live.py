"""What a namespace has now: interfaces, addresses and routes, as `ip -json` reports them.

Pure: parsing of iproute2's JSON and a model of how the kernel answers the changes composens
makes (`simulate`), so that `composens plan` can say which routes a change will take with it
before anything runs. wiring.py reads the real thing; tests build it from descriptions.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from composens.model.conditions import LiveQdisc

# Routes written by hand (`ip route add` says "boot") or by a static configuration: the ones a
# person may have added on a composens interface. Routing daemons' routes (zebra, bird, ...) come
# and go with the protocol and are no drift.
MANUAL_PROTOCOLS = ("boot", "static")


@dataclass(frozen=True)
class Vxlan:
    """What makes a VXLAN device the tunnel it is: its VNI, its two ends on the underlay, and the UDP port."""

    vni: int
    local: str | None
    remote: str | None
    port: int


@dataclass(frozen=True)
class LiveLink:
    ifname: str
    index: int
    kind: str | None  # "veth", "bridge", ...; None for a plain device
    peer_index: int | None  # a veth's peer (its ifindex in the peer's namespace)
    alias: str | None
    mtu: int
    up: bool  # administratively up
    master: str | None = None  # the bridge it is a port of
    bridge_options: tuple[tuple[str, str], ...] = ()  # for a bridge: stp_state, mcast_snooping, group_fwd_mask
    mac: str | None = None  # its hardware address, as ip writes it
    vxlan: Vxlan | None = None  # for a VXLAN device: its tunnel


@dataclass(frozen=True)
class LiveAddress:
    address: str  # "10.0.0.1/24", "2001:db8::1/64"
    secondary: bool = False
    dynamic: bool = False  # made by the kernel with a lifetime (SLAAC from a router advertisement), not by hand

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4

    @property
    def link_local(self) -> bool:
        return ipaddress.ip_interface(self.address).is_link_local

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_interface(self.address).network


@dataclass(frozen=True)
class LiveRoute:
    family: int
    destination: str  # "default" or CIDR
    gateway: str | None
    dev: str | None
    metric: int
    protocol: str = "boot"

    @property
    def key(self) -> tuple[int, str, int]:
        return self.family, self.destination, self.metric

    def words(self) -> list[str]:
        words = [self.destination]
        if self.gateway:
            words += ["via", self.gateway]
        if self.dev:
            words += ["dev", self.dev]
        return [*words, "metric", str(self.metric)]

    def __str__(self) -> str:
        return " ".join(self.words())


@dataclass(frozen=True)
class LiveNamespace:
    links: Mapping[str, LiveLink] = field(default_factory=dict)
    addresses: Mapping[str, tuple[LiveAddress, ...]] = field(default_factory=dict)
    routes: tuple[LiveRoute, ...] = ()
    qdiscs: Mapping[str, LiveQdisc] = field(default_factory=dict)  # root qdiscs other than the default, when read
    promoting: frozenset[str] = frozenset()  # interfaces whose IPv4 secondaries are promoted (simulation only)

    def addresses_of(self, ifname: str) -> tuple[LiveAddress, ...]:
        return self.addresses.get(ifname, ())

    def routes_via(self, ifname: str) -> tuple[LiveRoute, ...]:
        return tuple(r for r in self.routes if r.dev == ifname)


EMPTY = LiveNamespace()


# --------------------------------------------------------------------------- parsing


def json_documents(text: str) -> Iterator[Any]:
    """Yield each JSON document of `ip -json -batch` output (one per command, back to back)."""
    decoder = json.JSONDecoder()
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return
        document, position = decoder.raw_decode(text, position)
        yield document


def parse_namespace(
    links: list[dict[str, Any]], addresses: list[dict[str, Any]], routes: list[dict[str, Any]]
) -> LiveNamespace:
    """Build a LiveNamespace from `ip -details -json` link show, addr show and route show table all."""
    index_of = {item["ifname"]: item["ifindex"] for item in links}
    parsed_links = {}
    for item in links:
        info = item.get("linkinfo") or {}
        data = info.get("info_data") or {}
        # A peer in another namespace shows as link_index; one in the same namespace by its name.
        peer = item.get("link_index", index_of.get(item.get("link", "")))
        options = tuple(
            (key, str(data[key])) for key in ("stp_state", "mcast_snooping", "group_fwd_mask") if key in data
        )
        parsed_links[item["ifname"]] = LiveLink(
            ifname=item["ifname"],
            index=item["ifindex"],
            kind=info.get("info_kind"),
            peer_index=peer if info.get("info_kind") == "veth" else None,
            alias=item.get("ifalias") or None,
            mtu=item.get("mtu", 1500),
            up="UP" in item.get("flags", ()),
            master=item.get("master"),
            bridge_options=options if info.get("info_kind") == "bridge" else (),
            mac=item.get("address"),
            vxlan=_vxlan(data) if info.get("info_kind") == "vxlan" else None,
        )
    parsed_addresses = {
        item["ifname"]: tuple(
            LiveAddress(f"{info['local']}/{info['prefixlen']}", bool(info.get("secondary")), bool(info.get("dynamic")))
            for info in item.get("addr_info", ())
            if info.get("family") in ("inet", "inet6") and "local" in info
        )
        for item in addresses
    }
    return LiveNamespace(parsed_links, {k: v for k, v in parsed_addresses.items() if v}, _parse_routes(routes))


def _vxlan(data: Mapping[str, Any]) -> Vxlan:
    """A VXLAN device's tunnel from ip's details (IPv6 ends are `local6`/`remote6` there)."""
    local = data.get("local", data.get("local6"))
    remote = data.get("remote", data.get("remote6"))
    return Vxlan(
        int(data.get("id", 0)),
        str(ipaddress.ip_address(local)) if local else None,
        str(ipaddress.ip_address(remote)) if remote else None,
        int(data.get("port", 0)),
    )


def _parse_routes(routes: Iterable[dict[str, Any]]) -> tuple[LiveRoute, ...]:
    parsed = []
    for item in routes:
        if item.get("table", "main") != "main" or item.get("type", "unicast") != "unicast":
            continue
        destination = str(item.get("dst", ""))
        # Only IPv6 routes carry a preference; a default route without a gateway has nothing else to tell.
        family = 6 if ":" in destination or ":" in str(item.get("gateway", "")) or "pref" in item else 4
        if destination != "default":
            if "/" not in destination:
                destination += "/128" if family == 6 else "/32"  # ip prints a host route without its length
            destination = str(ipaddress.ip_network(destination, strict=False))
        parsed.append(
            LiveRoute(
                family=family,
                destination=destination,
                gateway=item.get("gateway"),
                dev=item.get("dev"),
                metric=int(item.get("metric", 0)),
                protocol=str(item.get("protocol", "boot")),
            )
        )
    return tuple(parsed)


# --------------------------------------------------------------------------- simulation


def without_link(ns: LiveNamespace, ifname: str) -> LiveNamespace:
    """The namespace once an interface is gone: its addresses and the routes through it go too."""
    links = {name: link for name, link in ns.links.items() if name != ifname}
    addresses = {name: addrs for name, addrs in ns.addresses.items() if name != ifname}
    links = {name: (replace(link, master=None) if link.master == ifname else link) for name, link in links.items()}
    qdiscs = {name: q for name, q in ns.qdiscs.items() if name != ifname}
    routes = tuple(r for r in ns.routes if r.dev != ifname)
    return replace(ns, links=links, addresses=addresses, routes=routes, qdiscs=qdiscs)


def with_link(ns: LiveNamespace, link: LiveLink) -> LiveNamespace:
    return replace(ns, links={**ns.links, link.ifname: link})


def set_down(ns: LiveNamespace, ifname: str) -> LiveNamespace:
    """The kernel's answer to `link set down`: the routes through it go. Its addresses stay: composens sets
    keep_addr_on_down wherever it enables IPv6 (the kernel would flush IPv6 addresses otherwise)."""
    return replace(ns, routes=tuple(r for r in ns.routes if r.dev != ifname))


def add_address(ns: LiveNamespace, ifname: str, address: str) -> LiveNamespace:
    new = LiveAddress(address)
    current = ns.addresses_of(ifname)
    if new.family == 4:
        new = replace(new, secondary=any(a.family == 4 and a.network == new.network for a in current))
    return replace(ns, addresses={**ns.addresses, ifname: (*current, new)})


def delete_address(ns: LiveNamespace, ifname: str, address: str) -> LiveNamespace:
    """The kernel's answer to `addr del`: a primary takes its secondaries with it unless they are promoted,
    and an interface left without IPv4 loses its IPv4 routes."""
    current = ns.addresses_of(ifname)
    gone = next((a for a in current if a.address == address), None)
    if gone is None:
        return ns
    kept = [a for a in current if a.address != address]
    if gone.family == 4 and not gone.secondary:
        same = [a for a in kept if a.family == 4 and a.network == gone.network]
        if ifname in ns.promoting:
            if same:
                kept = [replace(a, secondary=False) if a == same[0] else a for a in kept]
        else:
            kept = [a for a in kept if a not in same]
    routes = ns.routes
    if gone.family == 4 and not any(a.family == 4 for a in kept):
        routes = tuple(r for r in routes if not (r.family == 4 and r.dev == ifname))
    return replace(ns, addresses={**ns.addresses, ifname: tuple(kept)}, routes=routes)


def resolve_dev(ns: LiveNamespace, gateway: str) -> str | None:
    """The interface the kernel sends to a gateway through: the first up one with an address on its subnet."""
    address = ipaddress.ip_address(gateway)
    for ifname, addrs in ns.addresses.items():
        link = ns.links.get(ifname)
        if link is not None and link.up and any(a.family == address.version and address in a.network for a in addrs):
            return ifname
    return None


def put_route(ns: LiveNamespace, route: LiveRoute) -> LiveNamespace:
    routes = tuple(r for r in ns.routes if r.key != route.key)
    return replace(ns, routes=(*routes, route))


def drop_route(ns: LiveNamespace, key: tuple[int, str, int]) -> LiveNamespace:
    return replace(ns, routes=tuple(r for r in ns.routes if r.key != key))
