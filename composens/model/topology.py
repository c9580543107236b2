"""Parse and validate the x-composens sections of a compose project.

Everything here is pure: it reads the dict `docker compose config` printed and returns frozen
dataclasses. Nothing touches the engine or the kernel. Every string that will reach an `ip`
command line is checked against a safe alphabet here, so that what `composens plan` prints and
what `ip -batch` reads are the same words.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from composens.model import names
from composens.model.conditions import Conditions, ConditionsError
from composens.model.conditions import parse as parse_conditions
from composens.model.errors import ConfigError
from composens.model.names import IFNAMSIZ, NETNS_NAME_MAX, valid_ifname, valid_netns_name, valid_service

HOST = "host"
HUB = names.HUB_NODE  # the LANs' own namespace
EXTENSION = "x-composens"
TOP_LEVEL_KEYS = (
    "netns_prefix",
    "links",
    "lans",
    "hub",
    "host",
    "checks",
    "hosts",
    "vxlan",
    "mac_salt",
    "probes",
    "scenarios",
    "capture",
)
SERVICE_KEYS = ("netns", "addresses", "routes", "macs", "start_after_wiring", "start_delay", "exec", "host")
LINK_KEYS = ("endpoints", "mtu", "netem", "vni")
LAN_KEYS = ("endpoints", "mtu", "netem", "vni")
HOST_KEYS = ("addresses", "routes", "macs")

METRIC_MAX = 2**32 - 1
_NETNS_PREFIX = re.compile(r"[A-Za-z0-9_.-]*")
_PLAIN_KEY = re.compile(r"[\w.:@+-]+")

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
# A command to run in a container: a string goes through `sh -c`, a tuple is the argv itself.
Command = str | tuple[str, ...]


@dataclass(frozen=True)
class Route:
    destination: str  # "default" or a network in CIDR form
    gateway: str
    dev: str | None = None
    metric: int | None = None

    @property
    def family(self) -> int:
        return 6 if ":" in self.gateway else 4

    @property
    def kernel_metric(self) -> int:
        """The metric the kernel gives the route: IPv6 routes default to 1024 (0 means the default there too),
        IPv4 ones to 0."""
        if self.family == 6 and not self.metric:
            return 1024
        return self.metric or 0

    @property
    def key(self) -> tuple[int, str, int]:
        """What makes two routes the same route to the kernel (in the main table): family, destination, metric."""
        return self.family, self.destination, self.kernel_metric

    def words(self) -> list[str]:
        words = [self.destination, "via", self.gateway]
        if self.dev:
            words += ["dev", self.dev]
        if self.metric is not None:
            words += ["metric", str(self.metric)]
        return words

    def __str__(self) -> str:
        return " ".join(self.words())


@dataclass(frozen=True)
class Endpoint:
    node: str  # a service name, HOST for the host's own namespace, or HUB
    ifname: str

    def __str__(self) -> str:
        return f"{self.node}:{self.ifname}"


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint
    mtu: int | None = None
    conditions: Mapping[Endpoint, Conditions] = field(default_factory=dict)  # each end's egress


@dataclass(frozen=True)
class Lan:
    """A multi-access segment: a bridge in the hub namespace, one port per member."""

    name: str  # the bridge's name in the hub
    members: tuple[Endpoint, ...]
    ports: tuple[str, ...]  # the hub-side end of each member's veth pair, in member order
    mtu: int | None = None
    conditions: Conditions | None = None  # on every port's egress: what each member receives

    def port_of(self, member: Endpoint) -> Endpoint:
        return Endpoint(HUB, self.ports[self.members.index(member)])


@dataclass(frozen=True)
class Node:
    """A service, the host or the hub, as far as wiring is concerned."""

    name: str
    netns: str | None  # the /var/run/netns entry name; None for the host
    network_mode: str = ""
    addresses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    replicas: int = 1
    macs: Mapping[str, str] = field(default_factory=dict)  # declared per interface; the rest are derived
    start_after_wiring: int | None = None  # seconds its command waits for the wiring at most; None: no wait
    start_delay: int = 0  # seconds its command waits after each start of its container (containerlab's startup-delay)
    exec: tuple[Command, ...] = ()  # x-composens.exec: run in the container, in order, once it is wired
    # compose's depends_on (links, network_mode: service:X and volumes_from among them, as compose config writes
    # them): each service it depends on, and whether compose restarts this one when that one restarts
    depends_on: Mapping[str, bool] = field(default_factory=dict)

    @property
    def has_own_netns(self) -> bool:
        return self.network_mode != "host" and not self.network_mode.startswith(("service:", "container:"))

    @property
    def has_docker_network(self) -> bool:
        return self.network_mode != "none" and self.name not in (HOST, HUB)


@dataclass(frozen=True)
class Topology:
    project: str
    source: str  # how error messages name the compose file(s)
    netns_prefix: str
    services: Mapping[str, Node]
    host: Node
    links: tuple[Link, ...] = ()
    lans: tuple[Lan, ...] = ()
    hub: Node | None = None  # present when the project declares LANs
    checks: tuple[Any, ...] = ()  # composens.model.checks.Check, parsed there
    macs: Mapping[Endpoint, str] = field(default_factory=dict)  # every end composens makes: declared or derived
    mac_salt: str | None = None  # x-composens.mac_salt: the salt of every derived MAC (None: the machine's)
    hosts: Any = None  # composens.model.hosts.Hosts, when the file places services on several machines
    this_host: str | None = None  # in the view from one host (hosts.view): its name
    tunnels: tuple[Any, ...] = ()  # that host's VXLAN ends (composens.model.hosts.Tunnel)
    scenarios: Any = None  # composens.model.scenarios.Declared: probes and scenarios, when the file declares them
    capture: Any = None  # composens.model.capture.RecorderSettings: the flight recorder, when declared

    def node(self, name: str) -> Node:
        if name == HOST:
            return self.host
        if name == HUB:
            assert self.hub is not None, "only a project with LANs has a hub"
            return self.hub
        return self.services[name]

    def netns_name(self, service: str, number: int, *, scaled: bool) -> str:
        """Name the entry of one container of a service: `<name>` or, when scaled, `<name>-<n>`."""
        base = self.services[service].netns or service
        return f"{base}-{number}" if scaled else base

    def pairs(self) -> tuple[Link, ...]:
        """Every veth pair the file declares: the links, then one per LAN member (member end, hub port)."""
        return self._pairs

    @cached_property
    def _pairs(self) -> tuple[Link, ...]:
        ports = []
        for lan in self.lans:
            for member, port in zip(lan.members, lan.ports, strict=True):
                hub_end = Endpoint(HUB, port)
                ports.append(Link(member, hub_end, lan.mtu, {hub_end: lan.conditions} if lan.conditions else {}))
        return self.links + tuple(ports)

    def mac_of(self, end: Endpoint) -> str | None:
        """The MAC an end composens makes gets: declared in the file, or derived from the project and its name."""
        return self.macs.get(end)

    def conditions_of(self, end: Endpoint) -> Conditions | None:
        """The conditions the file declares on an end's egress."""
        return self._conditions.get(end)

    @cached_property
    def _conditions(self) -> dict[Endpoint, Conditions]:
        found = {end: conditions for pair in self.pairs() for end, conditions in pair.conditions.items()}
        return found | {t.end: t.conditions for t in self.tunnels if t.conditions is not None}

    def interfaces_of(self, node: str) -> tuple[str, ...]:
        """The declared interfaces of a node: its link ends, LAN member ends, and for the hub its ports."""
        return self._interfaces.get(node, ())

    @cached_property
    def _interfaces(self) -> dict[str, tuple[str, ...]]:
        found: dict[str, list[str]] = {}
        for pair in self.pairs():
            for ep in (pair.a, pair.b):
                found.setdefault(ep.node, []).append(ep.ifname)
        for tunnel in self.tunnels:
            found.setdefault(tunnel.end.node, []).append(tunnel.end.ifname)
        return {node: tuple(names) for node, names in found.items()}

    @property
    def wired_services(self) -> tuple[str, ...]:
        return tuple(s for s in self.services if s in self._interfaces)

    def started_with(self, services: Iterable[str], *, dependencies: bool, dependents: bool) -> set[str]:
        """The services compose starts or restarts along with `services` (`up`, `start`, `restart` naming them):
        with `dependencies`, those they depend on, and with `dependents`, those that depend on one of these with
        `restart: true` (compose restarts them with it); transitively, among this file's services."""
        found = set(services)
        while True:
            more = set()
            for name, node in self.services.items():
                if name in found and dependencies:
                    more |= {d for d in node.depends_on if d in self.services}
                if name not in found and dependents and any(r and d in found for d, r in node.depends_on.items()):
                    more.add(name)
            if more <= found:
                return found
            found |= more


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


def parse_declared(config: Mapping[str, Any], *, source: str) -> tuple[Topology, dict[str, Any]]:
    """The services, the host's ends, the links and the LANs of `docker compose config` output, validated, and
    the top-level x-composens section (composens.model.project.parse adds hosts, the hub, MACs and checks)."""
    project = str(config.get("name") or "")
    where_top = _Where(source, EXTENSION)
    top = _section(config.get(EXTENSION), where_top, TOP_LEVEL_KEYS)
    prefix = top.get("netns_prefix", "")
    if not isinstance(prefix, str) or not _NETNS_PREFIX.fullmatch(prefix):
        raise where_top.at("netns_prefix").error(f"{prefix!r} is not a valid prefix (letters, digits, '_', '.', '-')")
    raw_services = config.get("services") or {}
    if not isinstance(raw_services, dict):
        raise _Where(source, "services").error("must be a mapping")
    for name in raw_services:
        if not valid_service(name):
            where = _Where(source, "services").at(str(name))
            raise where.error(
                f"service name {name!r} cannot be recorded by composens (letters, digits, '_', '.', '-'; "
                "not starting with '-'); rename the service"
            )
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
        network_mode="none",
        addresses=_parse_addresses(host_section.get("addresses"), host_where.at("addresses")),
        routes=_parse_routes(host_section.get("routes"), host_where.at("routes")),
        macs=_parse_macs(host_section.get("macs"), host_where.at("macs")),
    )
    links = _parse_links(top.get("links"), services, where_top.at("links"))
    lans = _parse_lans(top.get("lans"), services, where_top.at("lans"))
    topo = Topology(project, source, prefix, services, host, links, lans)
    _check_wiring(topo)
    if "mac_salt" in top:
        from composens.model.macs import MacError, parse_salt

        try:
            topo = replace(topo, mac_salt=parse_salt(top["mac_salt"]))
        except MacError as e:
            raise where_top.at("mac_salt").error(str(e)) from None
    return topo, top


def with_hub_and_macs(topo: Topology, top: Mapping[str, Any], salts: Mapping[Endpoint, str] | None = None) -> Topology:
    """The project's hub (where it has LANs) and every end's MAC (derived ones with the salt of the machine each
    end is on, `salts`), once its hosts are known."""
    if topo.lans:
        where = _Where(topo.source, EXTENSION).at("hub")
        topo = replace(topo, hub=_parse_hub(top.get("hub"), topo.project, topo.services, where))
    return replace(topo, macs=_assign_macs(topo, salts or {}))


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
        part = {key: spec[key] for key in ("network_mode", "pid", "scale", "depends_on", EXTENSION) if key in spec}
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
            raise where.at(str(key)).error(f"unknown key (expected one of: {', '.join(allowed)})")
    return value


def check_netns_name(name: str, where: str) -> str:
    """Return a valid /var/run/netns entry name or raise ConfigError naming where it came from."""
    if not valid_netns_name(name):
        raise ConfigError(
            f"{where}: {name!r} is not a valid netns name "
            f"(letters, digits, '_', '.', '-'; starts with a letter or digit; at most {NETNS_NAME_MAX})"
        )
    return name


def _parse_service(name: str, spec: Any, prefix: str, where: _Where) -> Node:
    if not isinstance(spec, dict):
        raise where.error("must be a mapping")
    ext_where = where.at(EXTENSION)
    ext = _section(spec.get(EXTENSION), ext_where, SERVICE_KEYS)
    base = ext.get("netns", name)
    if not isinstance(base, str):
        raise ext_where.at("netns").error("must be a string")
    netns = check_netns_name(prefix + base, f"{where.source}: {ext_where.at('netns').path}")
    node = Node(
        name=name,
        netns=netns,
        network_mode=str(spec.get("network_mode") or ""),
        addresses=_parse_addresses(ext.get("addresses"), ext_where.at("addresses")),
        routes=_parse_routes(ext.get("routes"), ext_where.at("routes")),
        replicas=_replicas(spec),
        macs=_parse_macs(ext.get("macs"), ext_where.at("macs")),
        start_after_wiring=_parse_start_after_wiring(ext.get("start_after_wiring"), ext_where.at("start_after_wiring")),
        start_delay=_parse_start_delay(ext.get("start_delay"), ext_where.at("start_delay")),
        exec=_parse_exec(ext.get("exec"), ext_where.at("exec")),
        depends_on=_depends_on(spec.get("depends_on")),
    )
    if node.start_after_wiring is not None and not node.has_own_netns:
        raise ext_where.at("start_after_wiring").error(
            f"service {name} has no network namespace of its own to wait for (network_mode: {node.network_mode})"
        )
    if node.start_after_wiring is not None and spec.get("pid"):
        # The wait knows its container's start by the container's first process, which it is only in a pid
        # namespace of the container's own.
        raise ext_where.at("start_after_wiring").error(
            f"service {name} shares another pid namespace (pid: {spec['pid']}); the wait needs one of its own"
        )
    if name == HOST and (node.addresses or node.routes or node.macs):
        raise ext_where.error(_HOST_SERVICE)
    return node


_HOST_SERVICE = (
    "a service called host cannot be wired: 'host' in endpoints names the host's own namespace; rename the service"
)


def _depends_on(value: Any) -> dict[str, bool]:
    """compose's depends_on, a list or (as compose config writes it) a mapping: service -> `restart: true`."""
    if isinstance(value, list):
        return {str(name): False for name in value}
    if isinstance(value, dict):
        return {str(name): isinstance(spec, dict) and spec.get("restart") is True for name, spec in value.items()}
    return {}


def _parse_exec(value: Any, where: _Where) -> tuple[Command, ...]:
    """Read `exec`: a list of commands, each a string (run with `sh -c`) or a list of strings (the argv).

    The config compose printed writes a literal '$' as '$$' (its own escape), so that is undone here.
    """
    if value is None:
        return ()
    if not isinstance(value, list):
        raise where.error("must be a list of commands (a string for sh -c, or a list of strings)")
    commands: list[Command] = []
    for i, item in enumerate(value):
        words = item if isinstance(item, list) else [item]
        if not words or not all(isinstance(w, str) for w in words) or (isinstance(item, str) and not item.strip()):
            raise where.at(i).error(f"{item!r} is not a command (a non-empty string, or a list of strings)")
        if any("\0" in w for w in words):
            raise where.at(i).error(f"{item!r}: a command cannot hold a NUL character")
        unescaped = tuple(w.replace("$$", "$") for w in words)
        commands.append(unescaped if isinstance(item, list) else unescaped[0])
    return tuple(commands)


def _replicas(spec: Mapping[str, Any]) -> int:
    deploy = spec.get("deploy") or {}
    value = spec.get("scale", deploy.get("replicas", 1) if isinstance(deploy, dict) else 1)
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return value if value >= 0 else 1
    # str.isdigit accepts '²', which int() refuses: only ASCII digits are a count.
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else 1


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
    if not valid_ifname(name):
        raise where.error(
            f"{name!r} is not a valid interface name (1 to {IFNAMSIZ - 1} letters, digits or '_.-@+', "
            "not starting with '-')"
        )
    assert isinstance(name, str)
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
        parsed[ifname] = tuple(dict.fromkeys(str(_parse_interface_address(a, here)) for a in items))
    return parsed


def _parse_start_after_wiring(value: Any, where: _Where) -> int | None:
    """true (wait up to the default limit), false, or the limit in seconds."""
    from composens.model.startwait import DEFAULT_LIMIT

    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_LIMIT
    if isinstance(value, int) and 1 <= value <= 86400:
        return value
    raise where.error(f"{value!r} is not true, false or a limit in seconds (1 to 86400)")


def _parse_start_delay(value: Any, where: _Where) -> int:
    """Seconds from 0 to 86400."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 86400:
        return value
    raise where.error(f"{value!r} is not a delay in seconds (0 to 86400)")


def _parse_macs(value: Any, where: _Where) -> dict[str, str]:
    from composens.model.macs import MacError, parse_mac

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.error("must map interface names to MAC addresses")
    parsed = {}
    for ifname, mac in value.items():
        here = where.at(str(ifname))
        check_ifname(ifname, here)
        try:
            parsed[ifname] = parse_mac(mac)
        except MacError as e:
            raise here.error(str(e)) from None
    return parsed


def _assign_macs(topo: Topology, salts: Mapping[Endpoint, str]) -> dict[Endpoint, str]:
    from composens.model.macs import assign

    ends = [(ep.node, ep.ifname) for pair in topo.pairs() for ep in (pair.a, pair.b)]
    declared = {
        (node.name, ifname): mac for node in (*topo.services.values(), topo.host) for ifname, mac in node.macs.items()
    }
    salted = {(end.node, end.ifname): salt for end, salt in salts.items()}
    macs = assign(topo.project, ends, declared, source=f"{topo.source}: {EXTENSION}", salts=salted)
    return {Endpoint(node, ifname): mac for (node, ifname), mac in macs.items()}


def _parse_interface_address(value: Any, where: _Where) -> IPInterface:
    text = str(value)
    if "%" in text:
        raise where.error(f"{text!r}: a scope id ('%') is not allowed; the interface names the scope")
    if "/" not in text:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise where.error(f"{text!r} is not an IPv4 or IPv6 address with prefix") from None
        raise where.error(f"{text!r} needs a prefix length, e.g. {address}/{64 if address.version == 6 else 24}")
    try:
        return ipaddress.ip_interface(text)
    except ValueError as e:
        raise where.error(f"{text!r} is not an IPv4 or IPv6 address with prefix: {e}") from None


def parse_route(text: str) -> Route:
    """Parse `DEST via GATEWAY [dev IFNAME] [metric N]` as `ip route` writes it."""
    if "%" in text:
        raise ValueError("a scope id ('%') is not allowed; name the interface with 'dev IFNAME'")
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
        # The kernel reports 0.0.0.0/0 and ::/0 as "default": one spelling, or a route never matches itself.
        destination = "default" if network.prefixlen == 0 else str(network)
    options = dict(zip(words[3::2], words[4::2], strict=False))
    if len(words[3:]) % 2 or set(options) - {"dev", "metric"}:
        raise ValueError("after the gateway only 'dev IFNAME' and 'metric N' may follow")
    dev = options.get("dev")
    if dev is not None and not valid_ifname(dev):
        raise ValueError(f"dev {dev!r} is not a valid interface name")
    if gateway_ip.version == 6 and gateway_ip.is_link_local and dev is None:
        raise ValueError(f"gateway {gateway} is link-local: name its interface with 'dev IFNAME'")
    metric = options.get("metric")
    if metric is not None and not (metric.isascii() and metric.isdigit() and int(metric) <= METRIC_MAX):
        raise ValueError(f"metric {metric!r} is not a whole number from 0 to {METRIC_MAX}")
    return Route(destination, str(gateway_ip), dev, int(metric) if metric is not None else None)


def _parse_routes(value: Any, where: _Where) -> tuple[Route, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise where.error("must be a list of 'DEST via GATEWAY' strings")
    routes: dict[tuple[int, str, int], Route] = {}
    for i, text in enumerate(value):
        try:
            route = parse_route(str(text))
        except ValueError as e:
            raise where.at(i).error(f"{text!r}: {e}") from None
        if route.key in routes:
            raise where.at(i).error(
                f"{text!r}: a route to {route.destination} with metric {route.kernel_metric} is already declared "
                f"({routes[route.key]}); give one of them another metric"
            )
        routes[route.key] = route
    return tuple(routes.values())


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
        if a.node == b.node == HOST:
            raise here.at("endpoints").error("a link needs at least one service end")
        netem = _parse_link_conditions(spec.get("netem"), (a, b), here.at("netem"))
        links.append(Link(a, b, _parse_mtu(spec.get("mtu"), here.at("mtu")), netem))
    return tuple(links)


def _parse_mtu(mtu: Any, where: _Where) -> int | None:
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535):
        raise where.error(f"{mtu!r} is not an MTU (a whole number from 68 to 65535)")
    return mtu


def _parse_lans(value: Any, services: Mapping[str, Node], where: _Where) -> tuple[Lan, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise where.error("must map LAN names to {endpoints: [SERVICE:IFNAME, ...]}")
    raw_lans = []
    for name, raw in value.items():
        here = where.at(str(name))
        check_ifname(name, here)
        spec = _section(raw, here, LAN_KEYS)
        endpoints = spec.get("endpoints")
        # One member is a LAN too: a bridge with one port, as containerlab makes a bridge node with one link.
        if not isinstance(endpoints, list) or not endpoints:
            raise here.at("endpoints").error("must list one or more 'SERVICE:IFNAME' endpoints")
        members = tuple(_parse_endpoint(ep, services, here.at("endpoints").at(j)) for j, ep in enumerate(endpoints))
        netem = _conditions(spec["netem"], here.at("netem")) if spec.get("netem") is not None else None
        raw_lans.append((name, members, _parse_mtu(spec.get("mtu"), here.at("mtu")), netem))
    ports = _port_names([(name, members) for name, members, _, _ in raw_lans])
    return tuple(
        Lan(name, members, tuple(ports[name, m] for m in members), mtu, netem) for name, members, mtu, netem in raw_lans
    )


def _conditions(value: Any, where: _Where) -> Conditions:
    try:
        return parse_conditions(value)
    except ConditionsError as e:
        raise where.error(str(e)) from None


def _parse_link_conditions(value: Any, ends: tuple[Endpoint, Endpoint], where: _Where) -> dict[Endpoint, Conditions]:
    """Read a link's `netem`: conditions for both ends' egress, or `{SERVICE:IFNAME: {...}}` per end."""
    if value is None:
        return {}
    if isinstance(value, dict) and value and all(isinstance(k, str) and ":" in k for k in value):
        by_name = {str(end): end for end in ends}
        found = {}
        for key, spec in value.items():
            if key not in by_name:
                raise where.at(key).error(f"is not an end of this link ({', '.join(by_name)})")
            found[by_name[key]] = _conditions(spec, where.at(key))
        return found
    both = _conditions(value, where)
    return dict.fromkeys(ends, both)


def _port_names(lans: list[tuple[str, tuple[Endpoint, ...]]]) -> dict[tuple[str, Endpoint], str]:
    """Name each member's port in the hub: `service.ifname` where it fits and is unique, else a digest.

    The name depends only on the member and the LAN (and on no other member's name fitting), so adding a
    member never renames another member's port in practice.
    """
    from _blake2 import blake2s

    bridges = {name for name, _ in lans}
    readable = {(lan, m): f"{m.node}.{m.ifname}" for lan, members in lans for m in members}
    counts: dict[str, int] = {}
    for name in readable.values():
        counts[name] = counts.get(name, 0) + 1
    ports = {}
    for (lan, member), name in readable.items():
        if valid_ifname(name) and counts[name] == 1 and name not in bridges:
            ports[lan, member] = name
        else:
            digest = blake2s(f"{lan}\0{member}".encode(), digest_size=5).hexdigest()
            ports[lan, member] = f"p{digest}"  # 11 bytes: no member name can produce it (no '.')
    return ports


def _parse_hub(value: Any, project: str, services: Mapping[str, Node], where: _Where) -> Node:
    name = project if value is None else value
    if not isinstance(name, str):
        raise where.error("must be a string: the name of the LANs' namespace in ip netns")
    check_netns_name(name, f"{where.source}: {where.path}")
    for service in services.values():
        if service.netns == name:
            raise where.error(
                f"the hub namespace {name!r} has the netns name of service {service.name}; "
                f"set {EXTENSION}.hub to another name"
            )
    return Node(HUB, name, network_mode="none")


def _parse_endpoint(value: Any, services: Mapping[str, Node], where: _Where) -> Endpoint:
    if not isinstance(value, str) or value.count(":") != 1:
        raise where.error(f"{value!r} is not 'SERVICE:IFNAME'")
    node, ifname = value.split(":")
    if node == HOST and HOST in services:
        raise where.error(
            f"{value!r} is ambiguous: 'host' names the host's own namespace, and this project has a "
            "service called host; rename the service to wire it"
        )
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


def _check_wiring(topo: Topology) -> None:
    source = topo.source
    seen: dict[Endpoint, str] = {}
    places: list[tuple[str, tuple[Endpoint, ...]]] = [
        (f"links[{i}]", (link.a, link.b)) for i, link in enumerate(topo.links)
    ]
    places += [(f"lans.{lan.name}", lan.members) for lan in topo.lans]
    for place, endpoints in places:
        for ep in endpoints:
            if ep in seen:
                raise ConfigError(f"{source}: {EXTENSION}.{place}: endpoint {ep} is already used by {seen[ep]}")
            seen[ep] = place
    for node in (*topo.services.values(), topo.host):
        where = f"{EXTENSION}.host" if node.name == HOST else f"services.{node.name}.{EXTENSION}"
        declared = topo.interfaces_of(node.name)
        for key, ifnames in (("addresses", node.addresses), ("macs", node.macs)):
            for ifname in ifnames:
                if ifname not in declared:
                    raise ConfigError(
                        f"{source}: {where}.{key}.{ifname}: {node.name} has no link or LAN with that interface "
                        f"(declare it in {EXTENSION}.links or {EXTENSION}.lans)"
                    )
        _check_routes(node, declared, f"{source}: {where}.routes")


def _check_routes(node: Node, declared: tuple[str, ...], where: str) -> None:
    subnets = [ipaddress.ip_interface(a).network for addrs in node.addresses.values() for a in addrs]
    for i, route in enumerate(node.routes):
        if node.name == HOST:
            # The host's own routes are not composens' business: only routes through the host ends it made.
            if route.dev is not None and route.dev not in declared:
                raise ConfigError(
                    f"{where}[{i}]: dev {route.dev} is not a host-side end of a link; a host route must go "
                    "through one (its dev, or a gateway on a host end's subnet)"
                )
            if route.dev is None and not _on_subnet(route.gateway, subnets):
                raise ConfigError(
                    f"{where}[{i}]: gateway {route.gateway} is on none of the host ends' subnets; a host route "
                    "must go through a host-side end (its dev, or a gateway on a host end's subnet)"
                )
            continue
        if route.dev is not None and route.dev not in declared and not node.has_docker_network:
            raise ConfigError(f"{where}[{i}]: dev {route.dev} is not an interface of {node.name}")
        if not node.has_docker_network and not _on_subnet(route.gateway, subnets) and not _link_local(route.gateway):
            raise ConfigError(
                f"{where}[{i}]: gateway {route.gateway} is on none of {node.name}'s subnets; "
                "add an address on that subnet or fix the gateway"
            )


def _on_subnet(gateway: str, subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    address = ipaddress.ip_address(gateway)
    return any(address in net for net in subnets)


def _link_local(gateway: str) -> bool:
    """An IPv6 link-local gateway is on every IPv6 link (with a dev to say which)."""
    return ipaddress.ip_address(gateway).is_link_local and ":" in gateway
