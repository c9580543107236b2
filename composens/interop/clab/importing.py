"""Import a containerlab topology as a compose file.

Pure: dicts in, dicts and warnings out; the CLI reads and writes the files. Import applies
containerlab's own inheritance (types/topology.go): for a single value the most specific of
node > group > kind > defaults that sets it wins; `env`, `labels` and `sysctls` are maps merged
key by key (the more specific wins); `env-files` and `cap-add` are the union in that order;
`binds` are merged by their container path (a node's bind to /etc/x replaces its kind's bind to
/etc/x, other binds add up); `ports` are the most specific non-empty list; `exec` is every
level's lines, defaults first. The kind is the node's, else its group's, else the defaults'; the
group is the node's, else its kind's, else the defaults'.

containerlab runs an `exec` line split into words as a shell splits them (shlex), with no shell;
composens runs a string with `sh -c` and a list as it is, so a line becomes a string when `sh`
would split it into the same words, and the list of its words otherwise.
"""

from __future__ import annotations

import ipaddress
import os.path
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from composens.interop.clab.files import Converted
from composens.interop.clab.keys import MAPS, PLAIN_WORD, SCALARS, UNIONS
from composens.model import declared, names, topology
from composens.model.errors import ConfigError
from composens.model.topology import EXTENSION, HOST, Topology

RUNNABLE_KINDS = ("linux",)  # run as a plain container, with nothing of containerlab's own start-up
LAN_KINDS = ("bridge", "ovs-bridge")  # become x-composens.lans (a Linux bridge in the hub either way)
HOST_KIND = "host"  # a node standing for the host: its link ends are composens' host: ends
MGMT_NETWORK = "clab"  # containerlab's management network's default name

HANDLED = {*SCALARS, *MAPS, *UNIONS, "kind", "group", "binds", "ports", "exec", "network-mode", "mgmt-ipv4",
           "mgmt-ipv6", "tmpfs"}  # fmt: skip
EXTENDED_LINK_KEYS = ("type", "endpoints", "endpoint", "host-interface", "mtu")

_COMPOSE_NAME = re.compile(r"[a-zA-Z0-9._-]+")
# compose and containerlab both substitute $NAME, ${NAME}, ${NAME:-x} and ${NAME-x} from the environment;
# containerlab's ${NAME:=x} reads as ${NAME:-x}; any other '$' is literal to containerlab, so '$$' to compose.
_VARIABLE = re.compile(r"\$\$|\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*(?:(:?)([-=])([^}]*))?\})|\$")


@dataclass
class _Service:
    spec: dict[str, Any]
    mgmt_addresses: dict[str, str] = field(default_factory=dict)  # ipv4_address, ipv6_address
    addresses: dict[str, list[str]] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)
    interfaces: list[str] = field(default_factory=list)


def import_topology(doc: Any, *, source: str, topology_dir: str, output_dir: str, mgmt: bool = True) -> Converted:
    """Turn a containerlab topology into a compose project with x-composens sections.

    `topology_dir` and `output_dir` are absolute: binds relative to the one are made relative to the other.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("topology"), dict):
        raise ConfigError(f"{source}: not a containerlab topology (no 'topology' mapping)")
    topo = doc["topology"]
    nodes = topo.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise ConfigError(f"{source}: topology.nodes: must map node names to their definitions")
    warnings: list[str] = []
    for name in nodes:
        if not isinstance(name, str):
            raise ConfigError(f"{source}: topology.nodes: node name {name!r} is not a string")
    resolved = {name: _inherit(name, topo, source) for name in nodes}
    _refuse_kinds(resolved, source)
    services: dict[str, _Service] = {}
    for name, node in resolved.items():
        if node["kind"] in RUNNABLE_KINDS:
            if not _COMPOSE_NAME.fullmatch(name):
                raise ConfigError(
                    f"{source}: topology.nodes.{name}: not a compose service name (letters, digits, '._-')"
                )
            services[name] = _Service(_service(name, node, source, topology_dir, output_dir, warnings))
            for version in (4, 6):
                if node.get(f"mgmt-ipv{version}"):
                    services[name].mgmt_addresses[f"ipv{version}_address"] = str(node[f"mgmt-ipv{version}"])
        elif node["kind"] in LAN_KINDS or node["kind"] == HOST_KIND:
            for key in sorted(set(node) - {"kind", "group"}):
                warnings.append(f"{name}: {key}: a {node['kind']} node has no compose equivalent; not carried")
    links, lans = _links(topo.get("links"), resolved, services, source, warnings)
    lan_section = _lans(lans, warnings)
    for name, service in services.items():
        _place_exec(service, resolved[name].get("exec", []))
    document: dict[str, Any] = {}
    project = _project_name(doc.get("name"), warnings)
    if project:
        document["name"] = project
    document["services"] = {name: _finish(name, s, mgmt, doc.get("mgmt"), warnings) for name, s in services.items()}
    if mgmt and any("networks" in s for s in document["services"].values()):
        document["networks"] = {_mgmt_name(doc.get("mgmt")): _mgmt_network(doc.get("mgmt"), warnings)}
    top: dict[str, Any] = {}
    if links:
        top["links"] = links
    if lan_section:
        top["lans"] = lan_section
    if top:
        document[EXTENSION] = top
    document = _escape(document)
    check_imported(document, source)
    return Converted(document, tuple(warnings))


def check_imported(document: Mapping[str, Any], source: str) -> Topology:
    """Parse an imported project as composens will, so that what import writes is a lab composens runs."""
    try:
        return declared.parse(_without_unknown_keys(document), source=f"{source} (imported)")
    except ConfigError as e:
        raise ConfigError(f"{source}: cannot be imported: {e.message}") from None


def _without_unknown_keys(document: Mapping[str, Any]) -> dict[str, Any]:
    """Drop x-composens.macs while this composens does not read it yet (issue 18 adds it)."""
    if "macs" in topology.SERVICE_KEYS:
        return dict(document)
    services = {}
    for name, spec in (document.get("services") or {}).items():
        ext = {k: v for k, v in (spec.get(EXTENSION) or {}).items() if k != "macs"}
        services[name] = {**spec, EXTENSION: ext} if EXTENSION in spec else spec
    return {**document, "services": services}


def _levels(name: str, topo: Mapping[str, Any], source: str) -> tuple[str, list[dict[str, Any]]]:
    """Return a node's kind and its definitions from the least specific (defaults) to the node's own."""

    def section(value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {where}: must be a mapping")
        return value

    node = section(topo["nodes"][name], f"topology.nodes.{name}")
    defaults = section(topo.get("defaults"), "topology.defaults")
    kinds = section(topo.get("kinds"), "topology.kinds")
    groups = section(topo.get("groups"), "topology.groups")

    def group_def(group: Any) -> dict[str, Any]:
        return section(groups.get(group), f"topology.groups.{group}") if isinstance(group, str) else {}

    kind = node.get("kind") or group_def(node.get("group")).get("kind") or group_def(defaults.get("group")).get("kind")
    kind = kind or defaults.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"{source}: topology.nodes.{name}: has no kind (set kind on the node, its group or defaults)")
    kind_def = section(kinds.get(kind), f"topology.kinds.{kind}")
    group = node.get("group") or kind_def.get("group") or defaults.get("group")
    return kind, [defaults, kind_def, group_def(group), node]


def _inherit(name: str, topo: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Resolve a node's definition through defaults < kinds < groups < node, as containerlab does."""
    kind, levels = _levels(name, topo, source)
    merged: dict[str, Any] = {"kind": kind}
    for key in dict.fromkeys(k for level in levels for k in level):
        if key == "kind":
            continue
        values = [level[key] for level in levels if level.get(key) not in (None, "", [], {})]
        if not values:
            continue
        where = f"topology.nodes.{name}.{key}"
        if key in MAPS:
            merged[key] = {k: v for value in values for k, v in _mapping(value, source, where).items()}
        elif key in UNIONS:
            merged[key] = list(dict.fromkeys(str(v) for value in values for v in _strings(value, source, where)))
        elif key == "binds":
            by_target: dict[str, str] = {}
            for value in values:
                for bind in _strings(value, source, where):
                    by_target[_bind_target(bind)] = bind
            merged[key] = list(by_target.values())
        elif key == "exec":
            merged[key] = [line for value in values for line in _strings(value, source, where)]
        else:
            merged[key] = values[-1]
    return merged


def _mapping(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {where}: must be a mapping")
    return value


def _strings(value: Any, source: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise ConfigError(f"{source}: {where}: must be a list of strings")
    return [str(v) for v in value]


def _bind_target(bind: str) -> str:
    parts = bind.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _refuse_kinds(resolved: Mapping[str, Mapping[str, Any]], source: str) -> None:
    refused = [f"{name} ({node['kind']})" for name, node in resolved.items() if not _known_kind(node["kind"])]
    if refused:
        raise ConfigError(
            f"{source}: composens runs only linux nodes (bridge and ovs-bridge become LANs, host its host: ends); "
            f"these need containerlab's own start-up: {', '.join(refused)}"
        )


def _known_kind(kind: str) -> bool:
    return kind in RUNNABLE_KINDS or kind in LAN_KINDS or kind == HOST_KIND


def _service(
    name: str, node: Mapping[str, Any], source: str, topology_dir: str, output_dir: str, warnings: list[str]
) -> dict[str, Any]:
    if not isinstance(node.get("image"), str):
        raise ConfigError(f"{source}: topology.nodes.{name}: a linux node needs an image")
    spec: dict[str, Any] = {}
    for key, value in node.items():
        if key in SCALARS:
            spec[SCALARS[key]] = value if isinstance(value, bool | int | float) else str(value)
        elif key in MAPS:
            spec[MAPS[key]] = {str(k): _scalar_text(v) for k, v in value.items()}
        elif key in UNIONS:
            spec[UNIONS[key]] = value
        elif key not in HANDLED:
            warnings.append(f"{name}: {key}: has no compose equivalent; not carried")
    if "env_file" in spec:
        spec["env_file"] = [_rebase(path, topology_dir, output_dir) for path in spec["env_file"]]
    if "binds" in node:
        spec["volumes"] = [_bind(name, bind, topology_dir, output_dir, warnings) for bind in node["binds"]]
        spec["volumes"] = [v for v in spec["volumes"] if v]
    if "ports" in node:
        spec["ports"] = _strings(node["ports"], source, f"topology.nodes.{name}.ports")
    if "tmpfs" in node:
        spec["tmpfs"] = node["tmpfs"]
    mode = node.get("network-mode")
    if isinstance(mode, str) and mode:
        target = mode.removeprefix("container:")
        spec["network_mode"] = f"service:{target}" if mode.startswith("container:") and target != mode else mode
    # As containerlab starts every container: its hostname the node's name, privileged, with a terminal.
    spec.setdefault("hostname", name)
    spec.setdefault("privileged", True)
    spec.setdefault("tty", True)
    return spec


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as containerlab's YAML reads a boolean into a string
    return "" if value is None else str(value)


def _rebase(path: str, topology_dir: str, output_dir: str) -> str:
    """Make a path relative to the topology file relative to the compose file (absolute and ~ paths stay)."""
    if path.startswith(("/", "~", "$")):
        return path
    moved = os.path.relpath(os.path.normpath(os.path.join(topology_dir, path)), output_dir)
    return moved if moved.startswith("../") or moved == ".." else f"./{moved}"


def _bind(name: str, bind: str, topology_dir: str, output_dir: str, warnings: list[str]) -> str | None:
    if "__clab" in bind:
        warnings.append(f"{name}: binds: {bind!r} names a containerlab lab folder (__clab...__); not carried")
        return None
    source, _, rest = bind.partition(":")
    if not rest:
        return bind  # an anonymous volume at that path, in compose as in docker
    return f"{_rebase(source, topology_dir, output_dir)}:{rest}"


def _project_name(name: Any, warnings: list[str]) -> str:
    if not isinstance(name, str) or not name:
        return ""
    project = re.sub(r"[^a-z0-9_-]", "-", name.lower()).lstrip("-_")
    if project != name:
        warnings.append(f"name: {name!r} is not a compose project name; the project is called {project!r}")
    return project if names.valid_project(project) else ""


def _mgmt_name(mgmt: Any) -> str:
    name = mgmt.get("network") if isinstance(mgmt, dict) else None
    return name if isinstance(name, str) and _COMPOSE_NAME.fullmatch(name) else MGMT_NETWORK


def _mgmt_network(mgmt: Any, warnings: list[str]) -> dict[str, Any]:
    """containerlab's management network as a compose network of the project."""
    if not isinstance(mgmt, dict):
        return {}
    network: dict[str, Any] = {}
    pools = []
    for family in ("ipv4", "ipv6"):
        subnet = mgmt.get(f"{family}-subnet")
        if isinstance(subnet, str) and subnet != "auto":
            pool = {"subnet": subnet}
            if isinstance(mgmt.get(f"{family}-gw"), str):
                pool["gateway"] = mgmt[f"{family}-gw"]
            if isinstance(mgmt.get(f"{family}-range"), str):
                pool["ip_range"] = mgmt[f"{family}-range"]
            pools.append(pool)
            if family == "ipv6":
                network["enable_ipv6"] = True
    if pools:
        network["ipam"] = {"config": pools}
    if mgmt.get("mtu"):
        network["driver_opts"] = {"com.docker.network.driver.mtu": str(mgmt["mtu"])}
    carried = {"network", "mtu"} | {f"{f}-{k}" for f in ("ipv4", "ipv6") for k in ("subnet", "gw", "range")}
    for key in sorted(set(mgmt) - carried):
        warnings.append(f"mgmt: {key}: has no compose equivalent; not carried")
    return network


# ----- links


@dataclass
class _Lan:
    members: list[str] = field(default_factory=list)
    mtus: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class _End:
    node: str
    ifname: str
    mac: str | None = None
    addresses: tuple[str, ...] = ()


def _links(
    value: Any,
    nodes: Mapping[str, Mapping[str, Any]],
    services: Mapping[str, _Service],
    source: str,
    warnings: list[str],
) -> tuple[list[dict[str, Any]], dict[str, _Lan]]:
    if value is None:
        value = []
    if not isinstance(value, list):
        raise ConfigError(f"{source}: topology.links: must be a list of links")
    links: list[dict[str, Any]] = []
    lans = {name: _Lan() for name, node in nodes.items() if node["kind"] in LAN_KINDS}
    for i, raw in enumerate(value):
        where = f"topology.links[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: {where}: must be a mapping")
        ends = _ends(raw, nodes, source, where, warnings)
        if ends is None:
            continue
        for key in sorted(set(raw) - {*EXTENDED_LINK_KEYS, "ipv4", "ipv6"}):
            warnings.append(f"{where}: {key}: has no composens equivalent; not carried")
        mtu = raw.get("mtu")
        if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int)):
            raise ConfigError(f"{source}: {where}.mtu: {mtu!r} is not an MTU")
        bridged = [e for e in ends if e.node in lans]
        if len(bridged) == 2:
            warnings.append(f"{where}: joins two bridges ({ends[0].node}, {ends[1].node}); not carried")
            continue
        for end in ends:
            if end.node in services:
                service = services[end.node]
                service.interfaces.append(end.ifname)
                if end.mac:
                    service.macs[end.ifname] = end.mac
                if end.addresses:
                    service.addresses.setdefault(end.ifname, []).extend(end.addresses)
            elif end.addresses or end.mac:
                warnings.append(
                    f"{where}: {end.node}:{end.ifname}: addresses and MACs of a host or bridge end are not carried"
                )
        if bridged:
            member = next(e for e in ends if e.node not in lans)
            lan = lans[bridged[0].node]
            lan.members.append(_endpoint(member))
            if mtu is not None:
                lan.mtus.add(mtu)
            continue
        link: dict[str, Any] = {"endpoints": [_endpoint(e) for e in ends]}
        if mtu is not None:
            link["mtu"] = mtu
        links.append(link)
    return links, lans


def _endpoint(end: _End) -> str:
    return f"{end.node}:{end.ifname}"


def _ends(
    raw: Mapping[str, Any], nodes: Mapping[str, Mapping[str, Any]], source: str, where: str, warnings: list[str]
) -> tuple[_End, _End] | None:
    """Read a link's two ends, in the brief or an extended form; None for a link composens has no kind of."""
    kind = raw.get("type")
    if kind is None:
        endpoints = raw.get("endpoints")
        if not isinstance(endpoints, list) or len(endpoints) != 2 or not all(isinstance(e, str) for e in endpoints):
            raise ConfigError(f"{source}: {where}.endpoints: must list two 'NODE:INTERFACE' endpoints")
        special = [e.split(":", 1)[0] for e in endpoints if e.split(":", 1)[0] in ("mgmt-net", "macvlan")]
        if special:
            warnings.append(f"{where}: a {special[0]} link has no composens equivalent; not carried")
            return None
        ends = [_brief_end(e, j, raw, source, f"{where}.endpoints[{j}]") for j, e in enumerate(endpoints)]
    elif kind == "veth":
        endpoints = raw.get("endpoints")
        if not isinstance(endpoints, list) or len(endpoints) != 2:
            raise ConfigError(f"{source}: {where}.endpoints: a veth link has two endpoints")
        ends = [_extended_end(e, source, f"{where}.endpoints[{j}]") for j, e in enumerate(endpoints)]
    elif kind == "host":
        if not isinstance(raw.get("host-interface"), str):
            raise ConfigError(f"{source}: {where}.host-interface: a host link names its host interface")
        ends = [_extended_end(raw.get("endpoint"), source, f"{where}.endpoint"), _End(HOST, raw["host-interface"])]
    else:
        warnings.append(f"{where}: a {kind} link has no composens equivalent; not carried")
        return None
    for j, end in enumerate(ends):
        if end.node != HOST and end.node not in nodes:
            raise ConfigError(f"{source}: {where}: endpoint {j + 1} names an unknown node {end.node!r}")
    a, b = (_End(HOST, e.ifname, e.mac, e.addresses) if _is_host(e.node, nodes) else e for e in ends)
    return a, b


def _is_host(node: str, nodes: Mapping[str, Mapping[str, Any]]) -> bool:
    return node == HOST or (node in nodes and nodes[node]["kind"] == HOST_KIND)


def _brief_end(text: str, index: int, raw: Mapping[str, Any], source: str, where: str) -> _End:
    node, sep, ifname = text.partition(":")
    if not sep or not node or not ifname:
        raise ConfigError(f"{source}: {where}: {text!r} is not 'NODE:INTERFACE'")
    addresses = []
    for family in ("ipv4", "ipv6"):
        given = raw.get(family)
        if isinstance(given, list) and index < len(given) and given[index]:
            addresses.append(str(given[index]))
    return _End(node, ifname, None, tuple(addresses))


def _extended_end(value: Any, source: str, where: str) -> _End:
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("node"), str)
        or not isinstance(value.get("interface"), str)
    ):
        raise ConfigError(f"{source}: {where}: must be {{node: NODE, interface: INTERFACE}}")
    mac = value.get("mac")
    addresses = tuple(str(value[f]) for f in ("ipv4", "ipv6") if value.get(f))
    return _End(value["node"], value["interface"], str(mac) if mac else None, addresses)


def _lans(lans: Mapping[str, _Lan], warnings: list[str]) -> dict[str, Any]:
    section: dict[str, Any] = {}
    for name, lan in lans.items():
        if len(lan.members) < 2:
            warnings.append(f"{name}: a bridge with {len(lan.members)} link(s); a LAN needs two or more, not carried")
            continue
        entry: dict[str, Any] = {"endpoints": lan.members}
        if lan.mtus:
            entry["mtu"] = max(lan.mtus)
            if len(lan.mtus) > 1:
                warnings.append(f"{name}: links of MTUs {sorted(lan.mtus)}; a LAN has one, {max(lan.mtus)}")
        section[name] = entry
    return section


# ----- exec lines


def _place_exec(service: _Service, lines: Iterable[str]) -> None:
    """Turn plain `ip address add`, `ip route add` and `ip link set ... up` lines into declared state."""
    declared = set(service.interfaces)
    kept: list[str] = []
    for line in lines:
        words = _split(line)
        address = _address_line(words)
        if address and address[0] in declared:
            service.addresses.setdefault(address[0], []).append(address[1])
        elif _link_up_line(words) not in declared:
            kept.append(line)
    subnets = [
        ipaddress.ip_interface(a).network for addrs in service.addresses.values() for a in addrs if _is_address(a)
    ]
    routes: dict[tuple[int, str, int], str] = {}
    commands: list[Any] = []
    for line in kept:
        route = _route_line(_split(line), declared, subnets)
        if route is not None and route.key not in routes:
            routes[route.key] = str(route)
        else:
            commands.append(_command(line))
    if service.addresses:
        service.spec.setdefault(EXTENSION, {})["addresses"] = {
            ifname: list(dict.fromkeys(addresses)) for ifname, addresses in service.addresses.items()
        }
    if routes:
        service.spec.setdefault(EXTENSION, {})["routes"] = list(routes.values())
    if commands:
        service.spec.setdefault(EXTENSION, {})["exec"] = commands
    if service.macs:
        service.spec.setdefault(EXTENSION, {})["macs"] = service.macs


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return []


def _ip_words(words: list[str]) -> list[str]:
    """The words of an `ip` command after `ip` and a family option; [] for anything else."""
    if not words or words[0] != "ip":
        return []
    rest = words[1:]
    while rest and rest[0] in ("-4", "-6"):
        rest = rest[1:]
    return rest


def _address_line(words: list[str]) -> tuple[str, str] | None:
    rest = _ip_words(words)
    if len(rest) != 5 or rest[0] not in ("a", "addr", "address") or rest[1] not in ("a", "add") or rest[3] != "dev":
        return None
    if _is_address(rest[2]) and "/" in rest[2]:
        return rest[4], str(ipaddress.ip_interface(rest[2]))
    return None


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return "%" not in text


def _link_up_line(words: list[str]) -> str | None:
    rest = _ip_words(words)
    if rest[:2] in (["l", "set"], ["link", "set"]):
        target = rest[2:]
        if target[:1] == ["dev"]:
            target = target[1:]
        if len(target) == 2 and target[1] == "up":
            return target[0]
    return None


def _route_line(
    words: list[str], declared: set[str], subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> topology.Route | None:
    rest = _ip_words(words)
    if len(rest) < 2 or rest[0] not in ("r", "ro", "route") or rest[1] not in ("a", "add"):
        return None
    try:
        route = topology.parse_route(" ".join(rest[2:]))
    except ValueError:
        return None
    if route.dev is not None and route.dev not in declared:
        return None
    gateway = ipaddress.ip_address(route.gateway)
    on_link = any(gateway in net for net in subnets) or (gateway.is_link_local and route.dev is not None)
    return route if on_link else None


def _command(line: str) -> str | list[str]:
    """A containerlab exec line as a composens command that runs the same argv."""
    words = _split(line)
    if len(words) == 3 and words[:2] == ["sh", "-c"]:
        return words[2]
    if words and all(PLAIN_WORD.fullmatch(w) for w in words):
        return " ".join(words)
    return words or line


def _finish(name: str, service: _Service, mgmt: bool, mgmt_section: Any, warnings: list[str]) -> dict[str, Any]:
    spec = service.spec
    if "network_mode" not in spec and mgmt:
        network = _mgmt_name(mgmt_section)
        spec["networks"] = {network: service.mgmt_addresses} if service.mgmt_addresses else [network]
    elif "network_mode" not in spec:
        spec["network_mode"] = "none"
    if service.mgmt_addresses and "networks" not in spec:
        warnings.append(f"{name}: mgmt-ipv4/mgmt-ipv6: no management network (--no-mgmt, network-mode); not carried")
    ext = spec.pop(EXTENSION, None)
    if ext:
        spec[EXTENSION] = ext
    return spec


# ----- compose's interpolation


def _escape(value: Any) -> Any:
    """Keep the environment variables containerlab would substitute, and make every other '$' literal."""
    if isinstance(value, str):
        return _VARIABLE.sub(_escape_one, value)
    if isinstance(value, list):
        return [_escape(v) for v in value]
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    return value


def _escape_one(match: re.Match[str]) -> str:
    text = match.group(0)
    if text in ("$", "$$"):
        return "$$"  # containerlab's own escape for a literal '$' is compose's too
    if match.group(2) == "=":
        return text.replace(":=", ":-", 1) if match.group(1) else text.replace("=", "-", 1)
    return text
