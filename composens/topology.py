"""Parse and validate the x-composens sections of a compose project; plan the wiring.

Everything here is pure: it reads the dict `docker compose config` printed and returns frozen
dataclasses. Nothing touches the engine or the kernel.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from composens.errors import ConfigError

HOST = "host"
EXTENSION = "x-composens"
TOP_LEVEL_KEYS = ("netns_prefix", "links", "host")
SERVICE_KEYS = ("netns", "addresses", "routes")
LINK_KEYS = ("endpoints", "mtu")
HOST_KEYS = ("addresses", "routes")

NETNS_NAME_MAX = 64
IFNAMSIZ = 16  # the kernel's limit includes the trailing NUL: 15 visible characters
_NETNS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NETNS_PREFIX = re.compile(r"[A-Za-z0-9_.-]*")
_PLAIN_KEY = re.compile(r"[\w.:@+-]+")

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Route:
    destination: str  # "default" or a network in CIDR form
    gateway: str
    dev: str | None = None
    metric: int | None = None

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.gateway).version

    def __str__(self) -> str:
        words = [self.destination, "via", self.gateway]
        if self.dev:
            words += ["dev", self.dev]
        if self.metric is not None:
            words += ["metric", str(self.metric)]
        return " ".join(words)


@dataclass(frozen=True)
class Endpoint:
    node: str  # a service name, or HOST for the host's own namespace
    ifname: str

    def __str__(self) -> str:
        return f"{self.node}:{self.ifname}"


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint
    mtu: int | None = None


@dataclass(frozen=True)
class Node:
    """A service, or the host, as far as wiring is concerned."""

    name: str
    netns: str | None  # the /var/run/netns entry name; None for the host
    network_mode: str = ""
    addresses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    replicas: int = 1

    @property
    def has_own_netns(self) -> bool:
        return self.network_mode != "host" and not self.network_mode.startswith(("service:", "container:"))

    @property
    def has_docker_network(self) -> bool:
        return self.network_mode != "none"


@dataclass(frozen=True)
class Topology:
    project: str
    source: str  # how error messages name the compose file(s)
    netns_prefix: str
    services: Mapping[str, Node]
    host: Node
    links: tuple[Link, ...] = ()

    def node(self, name: str) -> Node:
        return self.host if name == HOST else self.services[name]

    def netns_name(self, service: str, number: int, *, scaled: bool) -> str:
        """Name the entry of one container of a service: `<name>` or, when scaled, `<name>-<n>`."""
        base = self.services[service].netns or service
        return f"{base}-{number}" if scaled else base

    def interfaces_of(self, node: str) -> tuple[str, ...]:
        names = [ep.ifname for link in self.links for ep in (link.a, link.b) if ep.node == node]
        return tuple(names)

    @property
    def wired_services(self) -> tuple[str, ...]:
        seen = {ep.node for link in self.links for ep in (link.a, link.b)} - {HOST}
        return tuple(s for s in self.services if s in seen)


# --------------------------------------------------------------------------- parsing


class _Where:
    """Builds `file: path.to.key: message` errors."""

    def __init__(self, source: str, path: str) -> None:
        self.source = source
        self.path = path

    def at(self, key: str | int) -> _Where:
        if isinstance(key, int):
            return _Where(self.source, f"{self.path}[{key}]")
        # A key with odd characters (a newline, say) is quoted so the message stays one line.
        name = key if _PLAIN_KEY.fullmatch(key) else repr(key)
        return _Where(self.source, f"{self.path}.{name}" if self.path else name)

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.path}: {message}")


def parse(config: Mapping[str, Any], *, source: str) -> Topology:
    """Turn `docker compose config` output into a validated Topology."""
    project = str(config.get("name") or "")
    top = _section(config.get(EXTENSION), _Where(source, EXTENSION), TOP_LEVEL_KEYS)
    where_top = _Where(source, EXTENSION)
    prefix = top.get("netns_prefix", "")
    if not isinstance(prefix, str) or not _NETNS_PREFIX.fullmatch(prefix):
        raise where_top.at("netns_prefix").error(f"{prefix!r} is not a valid prefix (letters, digits, '_', '.', '-')")
    raw_services = config.get("services") or {}
    services = {
        name: _parse_service(name, spec or {}, prefix, _Where(source, f"services.{name}"))
        for name, spec in raw_services.items()
    }
    _check_unique_netns(services, source)
    host_where = where_top.at("host")
    host_section = _section(top.get("host"), host_where, HOST_KEYS)
    host = Node(
        name=HOST,
        netns=None,
        addresses=_parse_addresses(host_section.get("addresses"), host_where.at("addresses")),
        routes=_parse_routes(host_section.get("routes"), host_where.at("routes")),
    )
    links = _parse_links(top.get("links"), services, where_top.at("links"))
    topology = Topology(project, source, prefix, services, host, links)
    _check_wiring(topology)
    return topology


def essentials(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the part of a resolved config that parse reads, which is what the config cache keeps."""
    services = config.get("services")
    if not isinstance(services, dict):
        return dict(config)  # parse will say what is wrong with it
    kept: dict[str, Any] = {"name": config.get("name"), "services": {}}
    if EXTENSION in config:
        kept[EXTENSION] = config[EXTENSION]
    for name, spec in services.items():
        if not isinstance(spec, dict):
            kept["services"][name] = spec
            continue
        part = {key: spec[key] for key in ("network_mode", "scale", EXTENSION) if key in spec}
        deploy = spec.get("deploy")
        if isinstance(deploy, dict) and "replicas" in deploy:
            part["deploy"] = {"replicas": deploy["replicas"]}
        kept["services"][name] = part
    return kept


def _section(value: Any, where: _Where, allowed: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.error("must be a mapping")
    for key in value:
        if key not in allowed:
            raise where.at(key).error(f"unknown key (expected one of: {', '.join(allowed)})")
    return value


def check_netns_name(name: str, where: str) -> str:
    """Return a valid /var/run/netns entry name or raise ConfigError naming where it came from."""
    if not _NETNS_NAME.fullmatch(name) or len(name) > NETNS_NAME_MAX:
        raise ConfigError(
            f"{where}: {name!r} is not a valid netns name "
            f"(letters, digits, '_', '.', '-'; starts with a letter or digit; at most {NETNS_NAME_MAX})"
        )
    return name


def _parse_service(name: str, spec: Mapping[str, Any], prefix: str, where: _Where) -> Node:
    ext_where = where.at(EXTENSION)
    ext = _section(spec.get(EXTENSION), ext_where, SERVICE_KEYS)
    base = ext.get("netns", name)
    if not isinstance(base, str):
        raise ext_where.at("netns").error("must be a string")
    netns = check_netns_name(prefix + base, f"{where.source}: {ext_where.at('netns').path}")
    return Node(
        name=name,
        netns=netns,
        network_mode=str(spec.get("network_mode") or ""),
        addresses=_parse_addresses(ext.get("addresses"), ext_where.at("addresses")),
        routes=_parse_routes(ext.get("routes"), ext_where.at("routes")),
        replicas=_replicas(spec),
    )


def _replicas(spec: Mapping[str, Any]) -> int:
    deploy = spec.get("deploy") or {}
    value = spec.get("scale", deploy.get("replicas", 1))
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else 1


def _check_unique_netns(services: Mapping[str, Node], source: str) -> None:
    owners: dict[str, str] = {}
    for node in services.values():
        assert node.netns is not None
        if node.netns in owners:
            raise ConfigError(
                f"{source}: services {owners[node.netns]} and {node.name} both use the netns name "
                f"{node.netns!r}; give one of them another x-composens.netns"
            )
        owners[node.netns] = node.name


def check_ifname(name: Any, where: _Where) -> str:
    if (
        not isinstance(name, str)
        or not name
        or len(name) >= IFNAMSIZ
        or name in (".", "..")
        or any(c in name for c in "/:")
        or any(c.isspace() for c in name)
    ):
        raise where.error(
            f"{name!r} is not a valid interface name (1 to {IFNAMSIZ - 1} characters, no '/', ':' or spaces)"
        )
    return name


def _parse_addresses(value: Any, where: _Where) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.error("must map interface names to lists of addresses")
    parsed: dict[str, tuple[str, ...]] = {}
    for ifname, addresses in value.items():
        here = where.at(str(ifname))
        check_ifname(ifname, here)
        items = addresses if isinstance(addresses, list) else [addresses]
        parsed[ifname] = tuple(str(_parse_interface_address(a, here)) for a in items)
    return parsed


def _parse_interface_address(value: Any, where: _Where) -> IPInterface:
    text = str(value)
    if "/" not in text:
        example = f"{text}/64" if ":" in text else f"{text}/24"
        raise where.error(f"{text!r} needs a prefix length, e.g. {example}")
    try:
        return ipaddress.ip_interface(text)
    except ValueError as e:
        raise where.error(f"{text!r} is not an IPv4 or IPv6 address with prefix: {e}") from None


def parse_route(text: str) -> Route:
    """Parse `DEST via GATEWAY [dev IFNAME] [metric N]` as `ip route` writes it."""
    words = text.split()
    if len(words) < 3 or words[1] != "via":
        raise ValueError("expected 'DEST via GATEWAY [dev IFNAME] [metric N]'")
    destination, gateway = words[0], words[2]
    try:
        gateway_ip = ipaddress.ip_address(gateway)
    except ValueError:
        raise ValueError(f"gateway {gateway!r} is not an IP address") from None
    if destination != "default":
        try:
            network = ipaddress.ip_network(destination, strict=True)
        except ValueError as e:
            raise ValueError(f"destination {destination!r} is not a network: {e}") from None
        if network.version != gateway_ip.version:
            raise ValueError(f"destination {destination} and gateway {gateway} are of different IP versions")
        destination = str(network)
    options = dict(zip(words[3::2], words[4::2], strict=False))
    if len(words[3:]) % 2 or set(options) - {"dev", "metric"}:
        raise ValueError("after the gateway only 'dev IFNAME' and 'metric N' may follow")
    metric = options.get("metric")
    if metric is not None and not metric.isdigit():
        raise ValueError(f"metric {metric!r} is not a whole number")
    return Route(destination, str(gateway_ip), options.get("dev"), int(metric) if metric else None)


def _parse_routes(value: Any, where: _Where) -> tuple[Route, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise where.error("must be a list of 'DEST via GATEWAY' strings")
    routes = []
    for i, text in enumerate(value):
        try:
            routes.append(parse_route(str(text)))
        except ValueError as e:
            raise where.at(i).error(f"{text!r}: {e}") from None
    return tuple(routes)


def _parse_links(value: Any, services: Mapping[str, Node], where: _Where) -> tuple[Link, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise where.error("must be a list of links")
    links = []
    for i, raw in enumerate(value):
        here = where.at(i)
        spec = _section(raw, here, LINK_KEYS)
        endpoints = spec.get("endpoints")
        if not isinstance(endpoints, list) or len(endpoints) != 2:
            raise here.at("endpoints").error("must list exactly two 'SERVICE:IFNAME' endpoints")
        a, b = (_parse_endpoint(ep, services, here.at("endpoints").at(j)) for j, ep in enumerate(endpoints))
        mtu = spec.get("mtu")
        if mtu is not None and (not isinstance(mtu, int) or not 68 <= mtu <= 65535):
            raise here.at("mtu").error(f"{mtu!r} is not an MTU (a whole number from 68 to 65535)")
        links.append(Link(a, b, mtu))
    return tuple(links)


def _parse_endpoint(value: Any, services: Mapping[str, Node], where: _Where) -> Endpoint:
    if not isinstance(value, str) or value.count(":") != 1:
        raise where.error(f"{value!r} is not 'SERVICE:IFNAME'")
    node, ifname = value.split(":")
    if node != HOST:
        if node not in services:
            raise where.error(f"unknown service {node!r}")
        service = services[node]
        if not service.has_own_netns:
            raise where.error(
                f"service {node} has no network namespace of its own (network_mode: {service.network_mode})"
            )
        if service.replicas > 1:
            raise where.error(f"service {node} is scaled to {service.replicas}; a link needs exactly one container")
    return Endpoint(node, check_ifname(ifname, where))


def _check_wiring(topology: Topology) -> None:
    source = topology.source
    seen: dict[Endpoint, int] = {}
    for i, link in enumerate(topology.links):
        for ep in (link.a, link.b):
            if ep in seen:
                raise ConfigError(
                    f"{source}: {EXTENSION}.links[{i}]: endpoint {ep} is already used by links[{seen[ep]}]"
                )
            seen[ep] = i
    for node in (*topology.services.values(), topology.host):
        where = f"{EXTENSION}.host" if node.name == HOST else f"services.{node.name}.{EXTENSION}"
        declared = topology.interfaces_of(node.name)
        for ifname in node.addresses:
            if ifname not in declared:
                raise ConfigError(
                    f"{source}: {where}.addresses.{ifname}: {node.name} has no link with that interface "
                    f"(declare it in {EXTENSION}.links)"
                )
        _check_routes(node, declared, f"{source}: {where}.routes")


def _check_routes(node: Node, declared: tuple[str, ...], where: str) -> None:
    subnets = [ipaddress.ip_interface(a).network for addrs in node.addresses.values() for a in addrs]
    for i, route in enumerate(node.routes):
        if route.dev is not None and route.dev not in declared and not node.has_docker_network:
            raise ConfigError(f"{where}[{i}]: dev {route.dev} is not an interface of {node.name}")
        gateway = ipaddress.ip_address(route.gateway)
        if node.name != HOST and not node.has_docker_network and not any(gateway in net for net in subnets):
            raise ConfigError(
                f"{where}[{i}]: gateway {route.gateway} is on none of {node.name}'s subnets; "
                "add an address on that subnet or fix the gateway"
            )


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class CreateVeth:
    a: Endpoint
    b: Endpoint
    mtu: int | None


@dataclass(frozen=True)
class EnableIPv6:
    node: str
    ifname: str


@dataclass(frozen=True)
class AddAddress:
    node: str
    ifname: str
    address: str


@dataclass(frozen=True)
class SetUp:
    node: str
    ifname: str


@dataclass(frozen=True)
class AddRoute:
    node: str
    route: Route


Step = CreateVeth | EnableIPv6 | AddAddress | SetUp | AddRoute


def plan(
    topology: Topology,
    *,
    available: frozenset[str] | None = None,
    touching: frozenset[str] | None = None,
) -> tuple[Step, ...]:
    """Order the steps that wire the topology: links, then addresses and up, then routes.

    Only links whose two ends are `available` (services with a reachable namespace; the host
    always is) and that touch a service in `touching` are planned; None means all.
    """

    def wanted(link: Link) -> bool:
        nodes = (link.a.node, link.b.node)
        if available is not None and not all(n == HOST or n in available for n in nodes):
            return False
        return touching is None or any(n in touching for n in nodes)

    links = [link for link in topology.links if wanted(link)]
    steps: list[Step] = [CreateVeth(link.a, link.b, link.mtu) for link in links]
    ends = [ep for link in links for ep in (link.a, link.b)]
    for ep in ends:
        addresses = topology.node(ep.node).addresses.get(ep.ifname, ())
        if any(ipaddress.ip_interface(a).version == 6 for a in addresses):
            steps.append(EnableIPv6(ep.node, ep.ifname))
        steps.extend(AddAddress(ep.node, ep.ifname, a) for a in addresses)
        steps.append(SetUp(ep.node, ep.ifname))
    planned = set(ends)
    for name in dict.fromkeys(ep.node for ep in ends):
        node = topology.node(name)
        unplanned = {ifname for ifname in topology.interfaces_of(name) if Endpoint(name, ifname) not in planned}
        steps.extend(AddRoute(name, r) for r in node.routes if not _through(node, r, unplanned))
    return tuple(steps)


def _through(node: Node, route: Route, ifnames: set[str]) -> bool:
    """Tell whether a route leaves through one of `ifnames` (by its dev, or its gateway's subnet)."""
    if route.dev is not None:
        return route.dev in ifnames
    gateway = ipaddress.ip_address(route.gateway)
    return any(gateway in ipaddress.ip_interface(a).network for i in ifnames for a in node.addresses.get(i, ()))


def batch_line(step: AddAddress | SetUp | AddRoute | CreateVeth, topology: Topology) -> tuple[str | None, str]:
    """Say in which netns (None: the host's) a step runs and its `ip -batch` line there."""
    match step:
        case CreateVeth(a, b, mtu):
            mtu_opt = f" mtu {mtu}" if mtu else ""

            def end(ep: Endpoint) -> str:
                netns = topology.node(ep.node).netns
                return f"name {ep.ifname}{mtu_opt}" + (f" netns {netns}" if netns else "")

            # `name` and `dev` everywhere: an interface may be called `up` or `mtu`.
            return None, f"link add {end(a)} type veth peer {end(b)}"
        case AddAddress(node, ifname, address):
            nodad = " nodad" if ipaddress.ip_interface(address).version == 6 else ""
            return topology.node(node).netns, f"addr add {address} dev {ifname}{nodad}"
        case SetUp(node, ifname):
            return topology.node(node).netns, f"link set dev {ifname} up"
        case AddRoute(node, route):
            return topology.node(node).netns, f"route add {route}"
    raise AssertionError(step)


def ip_command(step: Step, topology: Topology) -> str:
    """Write a step as the command that does the same: what `composens plan` prints and wiring runs."""
    if isinstance(step, EnableIPv6):
        netns = topology.node(step.node).netns
        prefix = f"ip netns exec {netns} " if netns else ""
        # The slash form where the name has a dot, which the dotted form would split.
        sep = "/" if "." in step.ifname else "."
        conf = sep.join(("net", "ipv6", "conf", step.ifname))
        return f"{prefix}sysctl -qw {conf}{sep}accept_dad=0 {conf}{sep}disable_ipv6=0"
    netns, line = batch_line(step, topology)
    return f"ip -n {netns} {line}" if netns else f"ip {line}"
