"""Several machines, one compose file: hosts, placement, VNIs, and the view of the lab from one host.

Pure. `parse` reads the top-level `hosts` and `vxlan` keys, each service's `host` and each link's
or LAN's `vni` and validates them with the rest of x-composens; `which_host` says which declared
host this machine is (from the addresses assigned on it); `view` narrows a topology to one host:
its services, the links and LAN members among them, and a VXLAN end (`Tunnel`) for each end of a
link to another host's service and for each LAN with members on other hosts. Everything is
computed from the file alone, so every host derives the same VNIs without asking the others.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from composens.model.conditions import Conditions
from composens.model.errors import ConfigError
from composens.model.macs import derive as derive_mac
from composens.model.names import valid_ifname, valid_netns_name
from composens.model.topology import EXTENSION, HOST, HUB, Endpoint, Lan, Link, Topology

HOSTS_KEY = "hosts"
VXLAN_KEY = "vxlan"
HOST_KEYS = ("underlay",)
VXLAN_KEYS = ("port",)
DEFAULT_PORT = 4789  # IANA's VXLAN port
ASSUMED_MTU = 1500  # an underlay this machine does not have (a host chosen with --host): Ethernet's
VNI_MAX = 2**24 - 1
OVERHEAD = {4: 50, 6: 70}  # VXLAN, UDP, IP and the inner Ethernet header over an IPv4 or IPv6 underlay


@dataclass(frozen=True)
class Host:
    name: str
    underlay: str  # the address its peers reach it at, one of its own

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.underlay).version


@dataclass(frozen=True)
class Hosts:
    """The machines of a lab, where each service runs, and the VNI of every link and LAN."""

    hosts: Mapping[str, Host]
    placement: Mapping[str, str]  # service -> host
    port: int
    link_vnis: tuple[int, ...]  # one per link of the file, in its order
    lan_vnis: Mapping[str, int]

    def host_of(self, end: Endpoint) -> str | None:
        """The host an end is on (None for the host's own namespace, which is wherever its peer is)."""
        return self.placement.get(end.node)


@dataclass(frozen=True)
class Tunnel:
    """A VXLAN end this host makes: a service's end of a cross-host link, or a LAN's port on the hub's bridge."""

    end: Endpoint
    vni: int
    local: str  # this host's underlay address
    remotes: tuple[Host, ...]  # the hosts at the other end (one for a link; every other member host for a LAN)
    port: int
    mtu: int
    lan: str | None = None  # the LAN whose bridge it is a port of
    peer: Endpoint | None = None  # a link's far end
    conditions: Conditions | None = None  # on its egress (a link's; a LAN's apply at each host's member ports)


# --------------------------------------------------------------------------- parsing


def parse(config: Mapping[str, Any], top: Mapping[str, Any], topo: Topology) -> Hosts | None:
    """Read and validate hosts, placement, port and VNIs; None when the file declares no hosts."""
    source = topo.source
    placement = _placement(config, topo)
    raw_hosts = top.get(HOSTS_KEY)
    if raw_hosts is None:
        if placement:
            service, host = next(iter(placement.items()))
            raise ConfigError(
                f"{source}: services.{service}.{EXTENSION}.host: {host!r} is not a declared host "
                f"(declare the machines in {EXTENSION}.{HOSTS_KEY})"
            )
        if VXLAN_KEY in top:
            raise ConfigError(f"{source}: {EXTENSION}.{VXLAN_KEY}: needs {EXTENSION}.{HOSTS_KEY}")
        _check_no_vnis(top, source)
        return None
    hosts = _hosts(raw_hosts, source)
    for service, host in placement.items():
        if host not in hosts:
            raise ConfigError(
                f"{source}: services.{service}.{EXTENSION}.host: {host!r} is not a declared host "
                f"(declared: {', '.join(hosts)})"
            )
    unplaced = [s for s in topo.services if s not in placement]
    if unplaced:
        raise ConfigError(
            f"{source}: services.{unplaced[0]}.{EXTENSION}.host: missing; with {EXTENSION}.{HOSTS_KEY} every "
            f"service is placed on one ({', '.join(hosts)}); not placed: {', '.join(unplaced)}"
        )
    _check_dependencies(config, placement, source)
    port = _port(top.get(VXLAN_KEY), source)
    link_vnis, lan_vnis = _vnis(top, topo)
    found = Hosts(hosts, placement, port, link_vnis, lan_vnis)
    _check_host_ends(topo, found)
    return found


def _check_dependencies(config: Mapping[str, Any], placement: Mapping[str, str], source: str) -> None:
    """Refuse what would make compose start a service on a host it is not placed on: a `depends_on`, or a
    namespace shared with `network_mode: service:X`, reaching a service of another host (compose up of this
    host's services would start that one here too, and the next up would remove it again)."""
    for name, spec in (config.get("services") or {}).items():
        if not isinstance(spec, dict) or name not in placement:
            continue
        depends = spec.get("depends_on") or ()
        needed = [(f"depends_on.{d}", d) for d in depends] if isinstance(depends, dict | list) else []
        mode = str(spec.get("network_mode") or "")
        if mode.startswith("service:"):
            needed.append(("network_mode", mode.split(":", 1)[1]))
        for key, other in needed:
            if other in placement and placement[other] != placement[name]:
                raise ConfigError(
                    f"{source}: services.{name}.{key}: {other} is placed on {placement[other]} and {name} on "
                    f"{placement[name]}; compose would start {other} on {placement[name]} too: place them on one "
                    "host, or drop the dependency"
                )


def _placement(config: Mapping[str, Any], topo: Topology) -> dict[str, str]:
    placement: dict[str, str] = {}
    for name, spec in (config.get("services") or {}).items():
        ext = (spec or {}).get(EXTENSION) if isinstance(spec, dict) else None
        if not isinstance(ext, dict) or "host" not in ext:
            continue
        host = ext["host"]
        if not isinstance(host, str) or not valid_netns_name(host):
            raise ConfigError(f"{topo.source}: services.{name}.{EXTENSION}.host: {host!r} is not a host name")
        placement[name] = host
    return placement


def _hosts(value: Any, source: str) -> dict[str, Host]:
    where = f"{source}: {EXTENSION}.{HOSTS_KEY}"
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: must map host names to {{underlay: ADDRESS}}")
    hosts: dict[str, Host] = {}
    owners: dict[str, str] = {}
    for name, spec in value.items():
        here = f"{where}.{name}"
        if not valid_netns_name(name):
            raise ConfigError(f"{where}: {name!r} is not a host name (letters, digits, '_', '.', '-')")
        if not isinstance(spec, dict):
            raise ConfigError(f"{here}: must be a mapping with underlay: ADDRESS")
        for key in spec:
            if key not in HOST_KEYS:
                raise ConfigError(f"{here}.{key}: unknown key (expected one of: {', '.join(HOST_KEYS)})")
        raw = spec.get("underlay")
        try:
            address = ipaddress.ip_address(str(raw))
        except ValueError:
            raise ConfigError(
                f"{here}.underlay: {raw!r} is not an IPv4 or IPv6 address (the one its peers reach it at)"
            ) from None
        if address.is_multicast or address.is_unspecified or (address.version == 6 and address.is_link_local):
            raise ConfigError(f"{here}.underlay: {address} cannot be a host's own unicast address")
        text = str(address)
        if text in owners:
            raise ConfigError(f"{here}.underlay: {text} is already the underlay of host {owners[text]}")
        owners[text] = name
        hosts[name] = Host(name, text)
    families = {h.family for h in hosts.values()}
    if len(families) > 1:
        raise ConfigError(f"{where}: the underlay addresses mix IPv4 and IPv6; VXLAN needs one family on all hosts")
    return hosts


def _port(value: Any, source: str) -> int:
    if value is None:
        return DEFAULT_PORT
    where = f"{source}: {EXTENSION}.{VXLAN_KEY}"
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping ({{port: N}})")
    for key in value:
        if key not in VXLAN_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key (expected one of: {', '.join(VXLAN_KEYS)})")
    port = value.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{where}.port: {port!r} is not a UDP port (1 to 65535)")
    return port


def _declared_vni(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= VNI_MAX:
        raise ConfigError(f"{where}: {value!r} is not a VNI (a whole number from 1 to {VNI_MAX})")
    return value


def _check_no_vnis(top: Mapping[str, Any], source: str) -> None:
    for i, raw in enumerate(top.get("links") or ()):
        if isinstance(raw, dict) and raw.get("vni") is not None:
            raise ConfigError(f"{source}: {EXTENSION}.links[{i}].vni: a VNI needs {EXTENSION}.{HOSTS_KEY}")
    for name, raw in (top.get("lans") or {}).items():
        if isinstance(raw, dict) and raw.get("vni") is not None:
            raise ConfigError(f"{source}: {EXTENSION}.lans.{name}.vni: a VNI needs {EXTENSION}.{HOSTS_KEY}")


def _vnis(top: Mapping[str, Any], topo: Topology) -> tuple[tuple[int, ...], dict[str, int]]:
    """Each link's and LAN's VNI: the declared one, else derived from the project and the link (or LAN).

    Declared VNIs are taken first; then the others, in the order of their keys (not the file's), each the
    first free value of a hash of (project, key, attempt). So a VNI is stable while its link is, the same on
    every host, and two links never share one: a collision moves the later key on, deterministically.
    """
    source = topo.source
    keys: dict[tuple[str, int | str], str] = {}
    taken: dict[int, str] = {}
    declared: dict[tuple[str, int | str], int] = {}
    raw_links = top.get("links") or []
    for i, link in enumerate(topo.links):
        keys["link", i] = "link\0" + "\0".join(sorted((str(link.a), str(link.b))))
        raw = raw_links[i] if isinstance(raw_links[i], dict) else {}
        vni = _declared_vni(raw.get("vni"), f"{source}: {EXTENSION}.links[{i}].vni")
        if vni is not None:
            declared["link", i] = vni
    raw_lans = top.get("lans") or {}
    for lan in topo.lans:
        keys["lan", lan.name] = f"lan\0{lan.name}"
        found_lan = raw_lans.get(lan.name)
        raw = found_lan if isinstance(found_lan, dict) else {}
        vni = _declared_vni(raw.get("vni"), f"{source}: {EXTENSION}.lans.{lan.name}.vni")
        if vni is not None:
            declared["lan", lan.name] = vni
    for item, vni in declared.items():
        place = _place(item)
        if vni in taken:
            raise ConfigError(f"{source}: {EXTENSION}.{place}.vni: VNI {vni} is already the VNI of {taken[vni]}")
        taken[vni] = place
    found = dict(declared)
    for item in sorted((i for i in keys if i not in declared), key=lambda i: keys[i]):
        found[item] = derive_vni(topo.project, keys[item], set(taken))
        taken[found[item]] = _place(item)
    return tuple(found["link", i] for i in range(len(topo.links))), {
        lan.name: found["lan", lan.name] for lan in topo.lans
    }


def derive_vni(project: str, key: str, taken: set[int]) -> int:
    """The first VNI of (project, key, 0), (project, key, 1), ... hashed that is neither 0 nor taken."""
    from _blake2 import blake2s

    attempt = 0
    while True:
        digest = blake2s(f"{project}\0{key}\0{attempt}".encode(), digest_size=3).digest()
        vni = int.from_bytes(digest, "big")
        if vni != 0 and vni not in taken:
            return vni
        attempt += 1


def _place(item: tuple[str, int | str]) -> str:
    kind, which = item
    return f"links[{which}]" if kind == "link" else f"lans.{which}"


def _check_host_ends(topo: Topology, hosts: Hosts) -> None:
    """A `host:` end is the namespace of the host its link's service runs on; a LAN spanning hosts has none."""
    for lan in topo.lans:
        machines = {hosts.host_of(m) for m in lan.members if m.node != HOST}
        for j, member in enumerate(lan.members):
            if member.node == HOST and len(machines) > 1:
                raise ConfigError(
                    f"{topo.source}: {EXTENSION}.lans.{lan.name}.endpoints[{j}]: {member} is a host's own namespace, "
                    f"but this LAN has members on hosts {', '.join(sorted(str(m) for m in machines))}: "
                    "link the host end to one of them instead"
                )


# --------------------------------------------------------------------------- which host am I


def which_host(hosts: Hosts, assigned: Iterable[str], chosen: str | None, source: str) -> Host:
    """The declared host this machine is: `chosen` (--host, COMPOSENS_HOST), else the one whose underlay
    address is assigned here; none or several is an error listing them."""
    if chosen:
        if chosen not in hosts.hosts:
            raise ConfigError(f"{source}: --host {chosen}: not a declared host (declared: {', '.join(hosts.hosts)})")
        return hosts.hosts[chosen]
    mine = {str(ipaddress.ip_address(a)) for a in assigned}
    matches = [h for h in hosts.hosts.values() if h.underlay in mine]
    listed = ", ".join(f"{h.name} ({h.underlay})" for h in hosts.hosts.values())
    if not matches:
        raise ConfigError(
            f"{source}: no declared host's underlay address is assigned on this machine ({listed}); "
            "choose one with --host NAME or COMPOSENS_HOST"
        )
    if len(matches) > 1:
        raise ConfigError(
            f"{source}: the underlay addresses of several hosts are assigned on this machine "
            f"({', '.join(h.name for h in matches)}); choose one with --host NAME or COMPOSENS_HOST"
        )
    return matches[0]


def largest_mtu(underlay_mtu: int, family: int) -> int:
    return underlay_mtu - OVERHEAD[family]


# --------------------------------------------------------------------------- the view from one host


def view(topo: Topology, hosts: Hosts, me: Host, underlay_mtu: int, underlay_dev: str) -> Topology:
    """Narrow a topology to what `me` runs: its services, links and LAN members, and its VXLAN ends.

    A declared MTU on a cross-host link or a LAN spanning hosts larger than the underlay can carry is an
    error; without one, such a link (and every port of such a LAN) gets the largest that fits a 1500 underlay
    (the underlay's own, if smaller), so every host computes the same.
    """
    fits = largest_mtu(underlay_mtu, me.family)
    # Without a declared MTU, the largest that fits a 1500 underlay (or a smaller one): the same on every host
    # whatever each one's underlay, so the two ends of a link (and every port of a LAN) agree.
    default = min(fits, largest_mtu(1500, me.family))

    def local(end: Endpoint) -> bool:
        return hosts.host_of(end) == me.name

    def mtu_of(declared: int | None, place: str) -> int:
        if declared is not None and declared > fits:
            raise ConfigError(
                f"{topo.source}: {EXTENSION}.{place}.mtu: {declared} does not fit the underlay: {underlay_dev} on "
                f"host {me.name} has MTU {underlay_mtu}, and VXLAN over IPv{me.family} takes "
                f"{OVERHEAD[me.family]} bytes, so at most {fits}"
            )
        return declared if declared is not None else default

    links: list[Link] = []
    tunnels: list[Tunnel] = []
    for i, link in enumerate(topo.links):
        service_ends = [ep for ep in (link.a, link.b) if ep.node != HOST]
        here = [ep for ep in service_ends if local(ep)]
        if len(here) == len(service_ends):
            links.append(link)
        elif here:
            (end,) = here
            peer = link.b if end == link.a else link.a
            remote = hosts.hosts[hosts.placement[peer.node]]
            mtu = mtu_of(link.mtu, f"links[{i}]")
            vni = hosts.link_vnis[i]
            conditions = link.conditions.get(end)
            tunnels.append(Tunnel(end, vni, me.underlay, (remote,), hosts.port, mtu, peer=peer, conditions=conditions))
    lans: list[Lan] = []
    for lan in topo.lans:
        machines = {hosts.host_of(m) for m in lan.members if m.node != HOST}
        members = [m for m in lan.members if m.node == HOST or local(m)]
        if not any(m.node != HOST for m in members):
            continue
        if len(machines) == 1:
            lans.append(lan)
            continue
        mtu = mtu_of(lan.mtu, f"lans.{lan.name}")
        kept = tuple(lan.ports[lan.members.index(m)] for m in members)
        lans.append(replace(lan, members=tuple(members), ports=kept, mtu=mtu))
        remotes = tuple(hosts.hosts[h] for h in sorted(str(m) for m in machines if m != me.name))
        port = Endpoint(HUB, vxlan_port_name(lan, topo.lans))
        tunnels.append(Tunnel(port, hosts.lan_vnis[lan.name], me.underlay, remotes, hosts.port, mtu, lan=lan.name))
    services = {name: node for name, node in topo.services.items() if hosts.placement.get(name) == me.name}
    # A LAN's port is named alike on every host: its MAC is salted with the host, so no two ports of one segment
    # share one, and with the hosts it replicates to, so a change of those (which live in FDB entries composens
    # does not read back) makes the port again.
    ports = {t.end: derive_mac(topo.project, f"{HUB}@{me.name}", _port_key(t)) for t in tunnels if t.lan}
    return replace(
        topo,
        macs={**topo.macs, **ports},
        services=services,
        links=tuple(links),
        lans=tuple(lans),
        hub=topo.hub if lans else None,
        checks=tuple(c for c in topo.checks if c.service in services),
        tunnels=tuple(tunnels),
        this_host=me.name,
    )


def _port_key(tunnel: Tunnel) -> str:
    return "\0".join((tunnel.end.ifname, *(h.underlay for h in tunnel.remotes)))


def vxlan_port_name(lan: Lan, lans: Iterable[Lan]) -> str:
    """The name of a LAN's VXLAN port on its bridge in the hub: `vx.<lan>` where that fits and is free."""
    from _blake2 import blake2s

    taken = {name for other in lans for name in (other.name, *other.ports)}
    name = f"vx.{lan.name}"
    if valid_ifname(name) and name not in taken:
        return name
    return "v" + blake2s(f"vxlan\0{lan.name}".encode(), digest_size=5).hexdigest()
