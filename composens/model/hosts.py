"""Several machines, one compose file: hosts, placement, VNIs, and the view of the lab from one host.

Pure. `parse` reads the top-level `hosts` and `vxlan` keys, each service's `host` and each link's
or LAN's `vni` and validates them with the rest of x-composens; `which_host` says which declared
host this machine is (from the addresses assigned on it); `view` narrows a topology to one host:
its services, the links and LAN members among them, and a VXLAN end (`Tunnel`) for each end of a
link to another host's service and for each LAN with members on other hosts. Everything is
computed from the file alone, so every host derives the same VNIs and MTUs without asking the others:
a cross-host link (or a LAN spanning hosts) gets what the smallest underlay among the hosts it joins
carries, each host's underlay MTU as the file declares it (`hosts.NAME.mtu`, default 1500).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from composens.model.conditions import Conditions
from composens.model.errors import ConfigError
from composens.model.macs import derive as derive_mac
from composens.model.macs import salt_for
from composens.model.names import valid_ifname, valid_netns_name
from composens.model.topology import EXTENSION, HOST, HUB, Endpoint, Lan, Link, Topology

HOSTS_KEY = "hosts"
VXLAN_KEY = "vxlan"
HOST_KEYS = ("underlay", "mtu")
VXLAN_KEYS = ("port",)
DEFAULT_PORT = 4789  # IANA's VXLAN port
UNDERLAY_MTU = 1500  # a host's underlay MTU when the file declares none: Ethernet's
VNI_MAX = 2**24 - 1
OVERHEAD = {4: 50, 6: 70}  # VXLAN, UDP, IP and the inner Ethernet header over an IPv4 or IPv6 underlay
LINK_MTU_MIN, LINK_MTU_MAX = 68, 65535  # what a link's `mtu` may be (as topology.py checks it)


@dataclass(frozen=True)
class Host:
    name: str
    underlay: str  # the address its peers reach it at, one of its own
    mtu: int = UNDERLAY_MTU  # what its underlay carries, as the file says (checked on the host itself)

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.underlay).version

    @property
    def carries(self) -> int:
        """The largest MTU a VXLAN interface over this host's underlay can have."""
        return self.mtu - OVERHEAD[self.family]


@dataclass(frozen=True)
class Hosts:
    """The machines of a lab, where each service runs, and the VNI of every link and LAN."""

    hosts: Mapping[str, Host]
    placement: Mapping[str, str]  # service -> host
    port: int
    link_vnis: tuple[int, ...]  # one per link of the file, in its order
    lan_vnis: Mapping[str, int]
    # The MTU of each cross-host link (None for a link on one host) and of each LAN spanning hosts: declared, or
    # what the smallest underlay among the hosts it joins carries. The same on every host, from the file alone.
    link_mtus: tuple[int | None, ...] = ()
    lan_mtus: Mapping[str, int] = field(default_factory=dict)

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
    return replace(found, link_mtus=_link_mtus(topo, found), lan_mtus=_lan_mtus(topo, found))


def _machines(hosts: Hosts, ends: Iterable[Endpoint]) -> list[str]:
    """The hosts the service ends are placed on, in name order (a `host:` end is wherever its peer is)."""
    return sorted({hosts.placement[end.node] for end in ends if end.node != HOST})


def _mtu_across(hosts: Hosts, machines: list[str], declared: int | None, place: str, source: str) -> int:
    """The MTU of a link or LAN joining `machines`: the declared one if every underlay carries it, else what the
    smallest underlay carries."""
    smallest = min((hosts.hosts[name] for name in machines), key=lambda h: (h.carries, h.name))
    if declared is None:
        return smallest.carries
    if declared > smallest.carries:
        raise ConfigError(
            f"{source}: {EXTENSION}.{place}.mtu: {declared} does not fit the underlay of host {smallest.name} "
            f"(MTU {smallest.mtu}, {EXTENSION}.{HOSTS_KEY}.{smallest.name}.mtu; VXLAN over IPv{smallest.family} "
            f"takes {OVERHEAD[smallest.family]} bytes), so at most {smallest.carries}"
        )
    return declared


def _link_mtus(topo: Topology, hosts: Hosts) -> tuple[int | None, ...]:
    found: list[int | None] = []
    for i, link in enumerate(topo.links):
        machines = _machines(hosts, (link.a, link.b))
        across = len(machines) > 1
        found.append(_mtu_across(hosts, machines, link.mtu, f"links[{i}]", topo.source) if across else None)
    return tuple(found)


def _lan_mtus(topo: Topology, hosts: Hosts) -> dict[str, int]:
    found: dict[str, int] = {}
    for lan in topo.lans:
        machines = _machines(hosts, lan.members)
        if len(machines) > 1:
            found[lan.name] = _mtu_across(hosts, machines, lan.mtu, f"lans.{lan.name}", topo.source)
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
            raise ConfigError(f"{here}: must be a mapping with underlay: ADDRESS (and optionally mtu: N)")
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
        hosts[name] = Host(name, text, _underlay_mtu(spec.get("mtu"), address.version, f"{here}.mtu"))
    families = {h.family for h in hosts.values()}
    if len(families) > 1:
        raise ConfigError(f"{where}: the underlay addresses mix IPv4 and IPv6; VXLAN needs one family on all hosts")
    return hosts


def _underlay_mtu(value: Any, family: int, where: str) -> int:
    """A host's underlay MTU as declared: enough for a link's smallest MTU once VXLAN has taken its share."""
    if value is None:
        return UNDERLAY_MTU
    least = LINK_MTU_MIN + OVERHEAD[family]
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= LINK_MTU_MAX:
        raise ConfigError(
            f"{where}: {value!r} is not an underlay MTU ({least} to {LINK_MTU_MAX} over IPv{family}: the MTU of the "
            "interface holding the host's underlay address)"
        )
    return value


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


def check_underlay(topo: Topology, me: Host, underlay_mtu: int | None, underlay_dev: str) -> None:
    """Refuse (exit 3) a host whose own underlay is smaller than the file says, where it carries tunnels: its ends
    would get an MTU its underlay cannot carry. None: this machine does not have the underlay address (a host
    chosen with --host), so the file is taken at its word."""
    if underlay_mtu is None or underlay_mtu >= me.mtu or not topo.tunnels:
        return
    fits = underlay_mtu - OVERHEAD[me.family]
    raise ConfigError(
        f"{topo.source}: {EXTENSION}.{HOSTS_KEY}.{me.name}.mtu: host {me.name}'s underlay is smaller than the file "
        f"says: {underlay_dev} on this machine has MTU {underlay_mtu}, the file {me.mtu} ({UNDERLAY_MTU} when not "
        "declared); "
        f"declare mtu: {underlay_mtu} for {me.name}, and every host gives the links and LANs that cross it at most "
        f"{fits}"
    )


# --------------------------------------------------------------------------- the view from one host


def view(topo: Topology, hosts: Hosts, me: Host, underlay_mtu: int | None = None, underlay_dev: str = "") -> Topology:
    """Narrow a topology to what `me` runs: its services, links and LAN members, and its VXLAN ends.

    A cross-host link (and every port of a LAN spanning hosts) gets the MTU the file gives it (`Hosts.link_mtus`,
    `lan_mtus`): every host computes the same. A host whose underlay (`underlay_mtu`, the MTU of `underlay_dev`;
    None when not known here) is smaller than the file declares is refused (check_underlay).
    """

    def local(end: Endpoint) -> bool:
        return hosts.host_of(end) == me.name

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
            mtu = hosts.link_mtus[i]
            assert mtu is not None, "a link between two hosts has its MTU"
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
        mtu = hosts.lan_mtus[lan.name]
        kept = tuple(lan.ports[lan.members.index(m)] for m in members)
        lans.append(replace(lan, members=tuple(members), ports=kept, mtu=mtu))
        remotes = tuple(hosts.hosts[h] for h in sorted(str(m) for m in machines if m != me.name))
        port = Endpoint(HUB, vxlan_port_name(lan, topo.lans))
        tunnels.append(Tunnel(port, hosts.lan_vnis[lan.name], me.underlay, remotes, hosts.port, mtu, lan=lan.name))
    services = {name: node for name, node in topo.services.items() if hosts.placement.get(name) == me.name}
    # A LAN's port is named alike on every host: its MAC is salted with the host, so no two ports of one segment
    # share one, and with the hosts it replicates to, so a change of those (which live in FDB entries composens
    # does not read back) makes the port again.
    salt = salt_for(topo.mac_salt, me.underlay, None)
    ports = {t.end: derive_mac(topo.project, f"{HUB}@{me.name}", _port_key(t), salt=salt) for t in tunnels if t.lan}
    found = replace(
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
    check_underlay(found, me, underlay_mtu, underlay_dev)
    return found


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
