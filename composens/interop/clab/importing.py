"""Import a containerlab topology as a compose file that runs the lab as containerlab deploys it.

Pure: dicts in, dicts and warnings out; the CLI reads and writes the files. Import applies containerlab's own
inheritance (types/topology.go): for a single value the most specific of node > group > kind > defaults that
sets it wins; `env`, `labels` and `sysctls` are maps merged key by key (the more specific wins); `env-files` and
`cap-add` are the union in that order; `binds` are merged by their container path (a node's bind to /etc/x
replaces its kind's bind to /etc/x, other binds add up); `ports` are the most specific non-empty list; `exec` is
every level's lines, defaults first, each line once (utils.MergeStringSlices); `stages` append (stages.py);
`aliases` are the node's own. The kind is the node's, else its group's, else the defaults'; the group is the
node's, else its kind's, else the defaults'.

What containerlab does when it deploys, the compose file does by default: containers named
`clab-<lab>-<node>` (the `prefix` rules; `container_names=False` keeps compose's names), links of 9500 bytes
unless the topology says otherwise, the management network's defaults (mgmt.py), the start order (stages.py),
and exec lines in their order (execlines.py).
"""

from __future__ import annotations

import ipaddress
import os.path
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from composens.interop.clab import execlines, kinds, stages, variables
from composens.interop.clab.files import Converted
from composens.interop.clab.keys import MAPS, SCALARS, UNIONS
from composens.interop.clab.mgmt import Mgmt, import_mgmt
from composens.model import declared, names
from composens.model.errors import ConfigError
from composens.model.topology import EXTENSION, HOST, Topology

DEFAULT_MTU = 9500  # containerlab's veth links, bridge links and host links when they give none (links/link_veth.go)
DEFAULT_PREFIX = "clab"  # containerlab's container names: clab-<lab>-<node> (core/config.go nodeLongName)
ORDER_KEY = "x-containerlab"  # a service's exec lines in containerlab's order, for the export (see _place_exec)

HANDLED = {*SCALARS, *MAPS, *UNIONS, "kind", "group", "binds", "ports", "exec", "network-mode", "mgmt-ipv4",
           "mgmt-ipv6", "tmpfs", "memory", "shm-size", "privileged", "dns", "healthcheck", "aliases",
           "image-pull-policy", "stages", "startup-delay"}  # fmt: skip
EXTENDED_LINK_KEYS = ("type", "endpoints", "endpoint", "host-interface", "mtu")
TOP_LEVEL = ("name", "prefix", "mgmt", "topology", "settings", "debug")
MAGIC = ("__clabDir__", "__clabLabName__", "__clabNodeDir__", "__clabNodeName__")
GENERATED = ("ansible-inventory.yml", "topology-data.json")  # containerlab writes these into the lab folder

_COMPOSE_NAME = re.compile(r"[a-zA-Z0-9._-]+")
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")  # docker's
_YAML11_BOOLS = {"y": True, "yes": True, "on": True, "true": True, "n": False, "no": False, "off": False,
                 "false": False}  # fmt: skip
# go-humanize's ParseBytes, which containerlab reads `memory` and `shm-size` with: m and mb are 10^6, mi and mib 2^20.
_SIZE = re.compile(r"\s*([0-9][0-9,]*(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*")
_UNITS = {"": 1, "b": 1, **{p: 1000**i for i, p in enumerate("kmgtpe", 1)},
          **{f"{p}b": 1000**i for i, p in enumerate("kmgtpe", 1)},
          **{f"{p}i": 1024**i for i, p in enumerate("kmgtpe", 1)},
          **{f"{p}ib": 1024**i for i, p in enumerate("kmgtpe", 1)}}  # fmt: skip
_PULL_POLICY = {"always": "always", "never": "never", "ifnotpresent": "missing"}  # types.go ParsePullPolicyValue


class KindsRefused(ConfigError):
    """The nodes composens cannot run, a line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass
class _Service:
    spec: dict[str, Any]
    kind_mode: str = ""  # "mgmt" (on the management network), "none", "host", or "container"
    delay: int = 0  # startup-delay, seconds
    mgmt_addresses: dict[str, str] = field(default_factory=dict)  # ipv4_address, ipv6_address
    aliases: list[str] = field(default_factory=list)
    addresses: dict[str, list[str]] = field(default_factory=dict)  # from link ipv4/ipv6, then from exec lines
    macs: dict[str, str] = field(default_factory=dict)
    interfaces: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Lab:
    name: str  # the topology's `name` as written ("" when it has none)
    source: str
    topology_dir: str
    output_dir: str
    mgmt: Mgmt | None  # None: --no-mgmt

    def folder(self, node: str | None = None) -> str:
        """The lab's folder (containerlab's __clabDir__), or a node's in it, relative to the topology."""
        return f"clab-{self.name}" + (f"/{node}" if node else "")


def import_topology(
    doc: Any,
    *,
    source: str,
    topology_dir: str,
    output_dir: str,
    mgmt: bool = True,
    container_names: bool = True,
) -> Converted:
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
    for key in doc:
        if key == "settings":
            warnings.append("settings: containerlab's certificate authority and settings are not carried")
        elif key not in TOP_LEVEL:
            warnings.append(f"{key}: not a containerlab topology key; not carried")
    given = doc.get("name")
    lab_name = given if isinstance(given, str) else ""
    lab = _Lab(
        lab_name,
        source,
        topology_dir,
        output_dir,
        import_mgmt(doc.get("mgmt"), lab_name, source, warnings) if mgmt else None,
    )
    resolved = {name: _inherit(name, topo, source) for name in nodes}
    _refuse_kinds(resolved, source)
    naming = _naming(doc, lab_name, source, warnings) if container_names else None
    services: dict[str, _Service] = {}
    for name, node in resolved.items():
        if node["kind"] == kinds.RUNNABLE:
            if not _COMPOSE_NAME.fullmatch(name):
                raise ConfigError(
                    f"{source}: topology.nodes.{name}: not a compose service name (letters, digits, '._-')"
                )
            services[name] = _service(name, node, resolved, lab, warnings)
            if naming is not None:
                services[name].spec["container_name"] = _container_name(naming, lab_name, name, source)
        else:  # what its own definition says (not what it inherits, which containerlab gives it no use for)
            for key in sorted(set(nodes[name] or {}) - {"kind", "group", "stages"}):
                warnings.append(f"{name}: {key}: a {node['kind']} node has no compose equivalent; not carried")
    links, lans = _links(topo.get("links"), resolved, services, source, warnings)
    lan_section = _lans(lans, warnings)
    for name, service in services.items():
        _place_exec(name, service, resolved[name].get("exec", []), lab, warnings)
    order = _order(resolved, services, lab, warnings)
    document: dict[str, Any] = {}
    project = _project_name(lab_name, warnings)
    if project:
        document["name"] = project
    document["services"] = {name: _finish(name, s, lab, order, warnings) for name, s in services.items()}
    on_network = any("networks" in s for s in document["services"].values())
    if lab.mgmt is not None and not lab.mgmt.docker_bridge and on_network:
        document["networks"] = {lab.mgmt.network: dict(lab.mgmt.spec)}
        _overlaps(services, lab.mgmt, warnings)
    top: dict[str, Any] = {}
    if links:
        top["links"] = links
    if lan_section:
        top["lans"] = lan_section
    if top:
        document[EXTENSION] = top
    document = variables.escape(document, source)
    check_imported(document, source)
    return Converted(document, tuple(warnings))


def check_imported(document: Mapping[str, Any], source: str) -> Topology:
    """Parse an imported project as composens will, so that what import writes is a lab composens runs."""
    try:
        return declared.parse(dict(document), source=f"{source} (imported)")
    except ConfigError as e:
        raise ConfigError(f"{source}: cannot be imported: {e.message}") from None


# ----- nodes and their levels


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
    kinds_section = section(topo.get("kinds"), "topology.kinds")
    groups = section(topo.get("groups"), "topology.groups")

    def group_def(group: Any) -> dict[str, Any]:
        return section(groups.get(group), f"topology.groups.{group}") if isinstance(group, str) else {}

    kind = node.get("kind") or group_def(node.get("group")).get("kind") or group_def(defaults.get("group")).get("kind")
    kind = kind or defaults.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"{source}: topology.nodes.{name}: has no kind (set kind on the node, its group or defaults)")
    kind_def = section(kinds_section.get(kind), f"topology.kinds.{kind}")
    group = node.get("group") or kind_def.get("group") or defaults.get("group")
    return kind, [defaults, kind_def, group_def(group), node]


def _inherit(name: str, topo: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Resolve a node's definition through defaults < kinds < groups < node, as containerlab does."""
    kind, levels = _levels(name, topo, source)
    merged: dict[str, Any] = {"kind": kind.lower()}  # as containerlab looks a kind up (core/config.go)
    for key in dict.fromkeys(k for level in levels for k in level):
        if key == "kind":
            continue
        values = [level[key] for level in levels if _is_set(key, level.get(key))]
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
            merged[key] = list(dict.fromkeys(line for value in values for line in _strings(value, source, where)))
        elif key == "stages":
            merged[key] = stages.merge(values, source, where)
        elif key == "aliases":
            own = levels[-1].get("aliases")  # the node's own only (GetNodeAliases)
            if own:
                merged[key] = _strings(own, source, where)
        else:
            merged[key] = values[-1]
    return merged


def _is_set(key: str, value: Any) -> bool:
    """Whether a level sets a key, as containerlab's getField asks: a value, not empty (nor 0 for a number)."""
    if value is None or (isinstance(value, str | list | dict) and not value):
        return False
    return not (key in ("startup-delay", "cpu") and not isinstance(value, bool) and value == 0)


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
    """Refuse the nodes composens cannot run: one line each, a kind containerlab does not know named so."""
    lines = []
    for name, node in resolved.items():
        kind = node["kind"]
        if kind not in kinds.KNOWN:
            lines.append(
                f"{source}: topology.nodes.{name}: kind {kind!r} is not a kind containerlab knows (a misspelling?)"
            )
        elif kind != kinds.RUNNABLE and kind not in kinds.LAN_KINDS and kind != kinds.HOST:
            lines.append(
                f"{source}: topology.nodes.{name}: kind {kind} needs containerlab's own start-up "
                "(composens runs linux nodes, and bridge, ovs-bridge and host ones as LANs and host ends)"
            )
    if lines:
        raise KindsRefused(lines)


def _naming(doc: Mapping[str, Any], lab: str, source: str, warnings: list[str]) -> str | None:
    """The `prefix` containers are named with, or None when the topology has no name to name them by."""
    prefix = doc.get("prefix", DEFAULT_PREFIX)
    if prefix is None:
        prefix = DEFAULT_PREFIX  # `prefix:` with no value is absent to containerlab's *string
    if not isinstance(prefix, str):
        raise ConfigError(f"{source}: prefix: must be a string")
    if not lab:
        warnings.append(
            "name: the topology has none (containerlab's schema asks for one); containers keep compose's names"
        )
        return None
    return prefix


def _container_name(prefix: str, lab: str, node: str, source: str) -> str:
    """containerlab's name for a node's container (core/config.go nodeLongName)."""
    if prefix == "":
        name = node
    elif prefix == "__lab-name":
        name = f"{lab}-{node}"
    else:
        name = f"{prefix}-{lab}-{node}"
    if not _CONTAINER_NAME.fullmatch(name):
        raise ConfigError(
            f"{source}: topology.nodes.{node}: its container name {name!r} (from prefix and name) is "
            "not one docker accepts"
        )
    return name


def _service(
    name: str, node: Mapping[str, Any], resolved: Mapping[str, Any], lab: _Lab, warnings: list[str]
) -> _Service:
    source = lab.source
    if not isinstance(node.get("image"), str):
        raise ConfigError(f"{source}: topology.nodes.{name}: a linux node needs an image")
    spec: dict[str, Any] = {}
    service = _Service(spec)
    for key, value in node.items():
        if key in SCALARS:
            spec[SCALARS[key]] = value if isinstance(value, bool | int | float) else str(value)
        elif key in MAPS:
            spec[MAPS[key]] = {str(k): _scalar_text(v) for k, v in value.items()}
        elif key in UNIONS:
            spec[UNIONS[key]] = value
        elif key not in HANDLED:
            warnings.append(f"{name}: {key}: has no compose equivalent; not carried")
    for key, compose_key in (("memory", "mem_limit"), ("shm-size", "shm_size")):
        if key in node:
            spec[compose_key] = _bytes(node[key], source, f"topology.nodes.{name}.{key}")
    if "env_file" in spec:
        spec["env_file"] = [_rebase(path, lab.topology_dir, lab.output_dir) for path in spec["env_file"]]
    if "binds" in node:
        binds = [_bind(name, bind, lab, warnings) for bind in node["binds"]]
        if any(binds):
            spec["volumes"] = [b for b in binds if b]
    if "ports" in node:
        spec["ports"] = _strings(node["ports"], source, f"topology.nodes.{name}.ports")
    if "tmpfs" in node:
        spec["tmpfs"] = node["tmpfs"]
    _node_keys(name, node, spec, service, resolved, source, warnings)
    mode = node.get("network-mode")
    mode = mode if isinstance(mode, str) else ""
    if mode in ("none", "host"):
        spec["network_mode"] = mode
        spec.setdefault("hostname", name)
        service.kind_mode = mode
    elif mode.startswith("container:") and mode != "container:":
        # A lab node's container by its service; any other container by its own name (containerlab tries the
        # lab's name first, then the bare one). A container in another's namespace has that one's hostname.
        target = mode.removeprefix("container:")
        runnable = target in resolved and resolved[target]["kind"] == kinds.RUNNABLE
        spec["network_mode"] = f"service:{target}" if runnable else mode
        service.kind_mode = "container"
        for key in ("dns", "dns_search", "dns_opt"):  # docker refuses them there; containerlab skips them
            if spec.pop(key, None):
                warnings.append(f"{name}: dns: a container in another's network namespace uses that one's; not carried")
                break
        for key in ("dns_search", "dns_opt"):
            spec.pop(key, None)
        if "hostname" in spec:
            warnings.append(
                f"{name}: hostname: a container in another's network namespace has that one's hostname; not carried"
            )
            del spec["hostname"]
    else:
        service.kind_mode = "mgmt"  # containerlab puts any other network-mode on the management network
        spec.setdefault("hostname", name)
    for version in (4, 6):
        if node.get(f"mgmt-ipv{version}"):
            service.mgmt_addresses[f"ipv{version}_address"] = str(node[f"mgmt-ipv{version}"])
    delay = node.get("startup-delay", 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= 86400:
        raise ConfigError(f"{source}: topology.nodes.{name}.startup-delay: {delay!r} is not whole seconds")
    service.delay = delay
    # As containerlab starts every container: privileged, with a terminal.
    spec["privileged"] = _boolean(node.get("privileged", True), source, f"topology.nodes.{name}.privileged")
    spec.setdefault("tty", True)
    return service


def _node_keys(
    name: str,
    node: Mapping[str, Any],
    spec: dict[str, Any],
    service: _Service,
    resolved: Mapping[str, Any],
    source: str,
    warnings: list[str],
) -> None:
    """The node keys that have a compose key of another shape: dns, healthcheck, aliases, the pull policy, pid."""
    where = f"topology.nodes.{name}"
    dns = node.get("dns")
    if dns is not None:
        dns = _mapping(dns, source, f"{where}.dns")
        for key, compose_key in (("servers", "dns"), ("search", "dns_search"), ("options", "dns_opt")):
            if dns.get(key):
                spec[compose_key] = _strings(dns[key], source, f"{where}.dns.{key}")
    health = node.get("healthcheck")
    if health is not None:
        health = _mapping(health, source, f"{where}.healthcheck")
        check: dict[str, Any] = {}
        if health.get("test"):
            check["test"] = _strings(health["test"], source, f"{where}.healthcheck.test")
        for key in ("interval", "timeout", "start-period"):  # whole seconds; 0 is docker's default
            seconds = health.get(key)
            if seconds:
                if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
                    raise ConfigError(f"{source}: {where}.healthcheck.{key}: {seconds!r} is not whole seconds")
                check[key.replace("-", "_")] = f"{seconds}s"
        if health.get("retries"):
            check["retries"] = health["retries"]
        if check:
            spec["healthcheck"] = check
    if node.get("aliases"):
        service.aliases = list(node["aliases"])
    policy = node.get("image-pull-policy")
    if policy:
        # containerlab reads any other spelling as IfNotPresent, its default.
        spec["pull_policy"] = _PULL_POLICY.get(str(policy).strip().lower(), "missing")
    pid = node.get("pid-mode")
    if isinstance(pid, str) and pid.startswith("container:"):
        target = pid.removeprefix("container:")
        if target in resolved and resolved[target]["kind"] == kinds.RUNNABLE:
            spec["pid"] = f"service:{target}"


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as containerlab's YAML reads a boolean into a string
    return "" if value is None else str(value)


def _boolean(value: Any, source: str, where: str) -> bool:
    """A boolean key as yaml.v2 reads it into a Go bool: YAML 1.1's yes/no/on/off too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _YAML11_BOOLS:
        return _YAML11_BOOLS[value.lower()]
    raise ConfigError(f"{source}: {where}: {value!r} is not a boolean")


def _bytes(value: Any, source: str, where: str) -> int:
    """A size as containerlab reads it (go-humanize ParseBytes: `512m` is 512 * 10^6, `512mib` 512 * 2^20)."""
    match = _SIZE.fullmatch(str(value))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(f"{source}: {where}: {value!r} is not a size (such as 512MB, 1GiB)")
    return int(float(match.group(1).replace(",", "")) * _UNITS[unit])


def _rebase(path: str, topology_dir: str, output_dir: str) -> str:
    """Make a path relative to the topology file relative to the compose file (absolute and ~ paths stay)."""
    if path.startswith(("/", "~", "$")):
        return path
    moved = os.path.relpath(os.path.normpath(os.path.join(topology_dir, path)), output_dir)
    return moved if moved.startswith("../") or moved == ".." else f"./{moved}"


def _bind(name: str, bind: str, lab: _Lab, warnings: list[str]) -> str | None:
    """A bind's host path as containerlab resolves it (core/config.go resolveBindPaths): its magic variables
    replaced, relative to the topology's folder."""
    host, sep, rest = bind.partition(":")
    if not sep:
        return bind  # an anonymous volume at that path, in compose as in docker
    host = (
        host.replace("__clabNodeDir__", lab.folder(name))
        .replace("__clabDir__", lab.folder())
        .replace("__clabNodeName__", name)
        .replace("__clabLabName__", lab.folder())
    )
    inside = os.path.normpath(os.path.join(lab.topology_dir, host))
    folder = os.path.join(lab.topology_dir, lab.folder())
    if inside in {os.path.join(folder, f) for f in GENERATED} or inside.startswith(os.path.join(folder, ".tls", "")):
        warnings.append(f"{name}: binds: {bind!r}: containerlab writes that file as it deploys; not carried")
        return None
    return f"{_rebase(host, lab.topology_dir, lab.output_dir)}:{rest}"


def _project_name(name: str, warnings: list[str]) -> str:
    if not name:
        return ""
    project = re.sub(r"[^a-z0-9_-]", "-", name.lower()).lstrip("-_")
    if project != name:
        warnings.append(f"name: {name!r} is not a compose project name; the project is called {project!r}")
    return project if names.valid_project(project) else ""


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
    lans = {name: _Lan() for name, node in nodes.items() if node["kind"] in kinds.LAN_KINDS}
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
        mtu = mtu or DEFAULT_MTU  # containerlab's for an unset (or 0) MTU, on both ends
        bridged = [e for e in ends if e.node in lans]
        if len(bridged) == 2:
            warnings.append(f"{where}: joins two bridges ({ends[0].node}, {ends[1].node}); not carried")
            continue
        if any(e.addresses for e in ends if e.node in services):
            warnings.append(
                f"{where}: ipv4/ipv6: containerlab leaves a linux node's interface without them; composens sets them"
            )
        for end in ends:
            if end.node in services and services[end.node].kind_mode == "container":
                owner = str(nodes[end.node].get("network-mode", "")).removeprefix("container:")
                raise ConfigError(
                    f"{source}: {where}: {_endpoint(end)}: {end.node} is in the network namespace of {owner} "
                    f"(network-mode: container:{owner}); composens wires nodes with a namespace of their own"
                )
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
            lan.mtus.add(mtu)
            continue
        links.append({"endpoints": [_endpoint(e) for e in ends], "mtu": mtu})
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
    return node == HOST or (node in nodes and nodes[node]["kind"] == kinds.HOST)


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
    """Each bridge node with links as a LAN (one link too: containerlab makes it as any other); one with none is
    nothing to carry."""
    section: dict[str, Any] = {}
    for name, lan in lans.items():
        if not lan.members:
            continue
        entry: dict[str, Any] = {"endpoints": lan.members, "mtu": max(lan.mtus)}
        if len(lan.mtus) > 1:
            warnings.append(f"{name}: links of MTUs {sorted(lan.mtus)}; a LAN has one, {max(lan.mtus)}")
        section[name] = entry
    return section


# ----- exec lines


def _place_exec(name: str, service: _Service, lines: list[str], lab: _Lab, warnings: list[str]) -> None:
    """Turn plain `ip` lines into declared state (execlines.py); keep the others as commands, in order.

    composens sets declared state before it runs any command; when a command came before such a line, the lines
    are also kept as they are under `x-containerlab.exec`, from which the export writes them back in their order
    (a line that installs iproute2 must stay ahead of the `ip` lines that need it).
    """
    replaced = [_magic(line, name, lab) for line in lines]
    lines = list(dict.fromkeys(replaced))  # each once, as containerlab merges them
    families = lab.mgmt.families if lab.mgmt is not None and service.kind_mode == "mgmt" else frozenset()
    placed = execlines.place(
        lines, service.interfaces, [a for found in service.addresses.values() for a in found], families
    )
    warnings.extend(f"{name}: {note}" for note in placed.notes)
    for ifname, addresses in placed.addresses.items():
        service.addresses.setdefault(ifname, []).extend(addresses)
    ext: dict[str, Any] = {}
    if service.addresses:
        ext["addresses"] = {ifname: list(dict.fromkeys(found)) for ifname, found in service.addresses.items()}
    if placed.routes:
        ext["routes"] = [str(route) for route in placed.routes]
    if placed.commands:
        ext["exec"] = [execlines.command(line) for line in placed.commands]
        if service.spec.get("user") not in (None, "", "0", "root"):
            warnings.append(
                f"{name}: exec: containerlab runs these as root; composens as the service's user {service.spec['user']}"
            )
    if service.macs:
        ext["macs"] = service.macs
    if ext:
        service.spec[EXTENSION] = ext
    if placed.reordered:
        service.spec[ORDER_KEY] = {"exec": lines}


def _magic(line: str, node: str, lab: _Lab) -> str:
    """containerlab's magic variables in an exec line (core/config.go processNodeExecs): its own absolute paths."""
    folder = os.path.join(lab.topology_dir, lab.folder())
    return (
        line.replace("__clabNodeDir__", os.path.join(folder, node))
        .replace("__clabDir__", folder)
        .replace("__clabNodeName__", node)
        .replace("__clabLabName__", lab.folder())
    )


# ----- start order


def _order(
    resolved: Mapping[str, Mapping[str, Any]], services: Mapping[str, _Service], lab: _Lab, warnings: list[str]
) -> stages.Order:
    source = lab.source
    order = stages.Order()
    for name, node in resolved.items():
        merged: stages.NodeStages = node.get("stages") or stages.NodeStages()
        for stage, execs in merged.execs.items():
            if execs:
                warnings.append(
                    f"{name}: stages.{stage}.exec: containerlab runs these at its own deploy stage; not carried"
                )
        for waits in merged.waits.values():
            for wait in waits:
                if wait.node not in resolved:
                    raise ConfigError(
                        f"{source}: topology.nodes.{name}.stages: waits for {wait.node!r}, which is "
                        "not a node of the topology"
                    )
                if name not in services or wait.node not in services:
                    other = name if name not in services else wait.node
                    warnings.append(
                        f"{name}: stages: a wait for {wait.node} ({wait.stage}): {other} is a "
                        f"{resolved[other]['kind']} node, no container to wait for; not carried"
                    )
                    continue
                order.wait(name, wait.node, wait.stage)
                if wait.stage == "healthy" and "healthcheck" not in services[wait.node].spec:
                    warnings.append(
                        f"{name}: stages: waits for {wait.node} to be healthy, which has no "
                        "healthcheck: compose refuses to start it (containerlab waits for ever)"
                    )
    addressed = lab.mgmt is not None and not lab.mgmt.docker_bridge  # a network that takes fixed addresses
    static = [n for n, s in services.items() if s.kind_mode == "mgmt" and s.mgmt_addresses and addressed]
    for name, service in services.items():
        if service.kind_mode == "mgmt" and not service.mgmt_addresses:
            for other in static:  # so that docker hands no fixed address to another first (clab.go)
                if other not in order.depends_on.get(name, {}):
                    order.wait(name, other, "create")
    edges = {n: set(order.depends_on.get(n, {})) for n in services}
    for name, service in services.items():
        mode = str(service.spec.get("network_mode", ""))
        if mode.startswith("service:"):
            edges[name].add(mode.removeprefix("service:"))
    stages.check_acyclic(edges, source)
    return order


# ----- the service as written


def _finish(name: str, service: _Service, lab: _Lab, order: stages.Order, warnings: list[str]) -> dict[str, Any]:
    spec = service.spec
    mgmt = lab.mgmt
    if service.kind_mode == "mgmt":
        if mgmt is None:
            spec["network_mode"] = "none"
        elif mgmt.docker_bridge:
            spec["network_mode"] = "bridge"
        else:
            attached: dict[str, Any] = dict(service.mgmt_addresses)
            if service.aliases:
                attached["aliases"] = service.aliases
            spec["networks"] = {mgmt.network: attached} if attached else [mgmt.network]
    if "networks" not in spec:
        if service.mgmt_addresses:
            bridge = service.kind_mode == "mgmt" and mgmt is not None and mgmt.docker_bridge
            why = (
                "docker's default bridge takes no fixed address"
                if bridge
                else ("no management network (--no-mgmt, network-mode)")
            )
            warnings.append(f"{name}: mgmt-ipv4/mgmt-ipv6: {why}; not carried")
        if service.aliases:
            warnings.append(f"{name}: aliases: only a management network of the lab's own has them; not carried")
    if name in order.depends_on:
        spec["depends_on"] = {dependee: {"condition": c} for dependee, c in order.depends_on[name].items()}
    start: dict[str, Any] = {}
    if name in order.after_wiring and service.kind_mode in ("mgmt", "none") and not spec.get("pid"):
        start["start_after_wiring"] = True
    elif name in order.after_wiring:  # the start gate needs the container's own network and pid namespaces
        warnings.append(
            f"{name}: stages: waits for another node's links, which composens waits for only in a "
            "container with namespaces of its own; it waits for that node's start"
        )
    if service.delay:
        start["start_delay"] = service.delay
    ext = spec.pop(EXTENSION, {})
    kept = spec.pop(ORDER_KEY, None)
    if start or ext:
        spec[EXTENSION] = {**ext, **start}
    if kept:
        spec[ORDER_KEY] = kept
    return spec


def _overlaps(services: Mapping[str, _Service], mgmt: Mgmt, warnings: list[str]) -> None:
    """Say where a link's subnet overlaps the management network: a node's address there may be another's."""
    for name, service in services.items():
        for ifname, addresses in service.addresses.items():
            for address in dict.fromkeys(addresses):
                try:
                    subnet = ipaddress.ip_interface(address).network
                except ValueError:
                    continue
                for managed in mgmt.subnets:
                    if subnet.version == managed.version and subnet.overlaps(managed):
                        warnings.append(
                            f"{name}: {ifname}: {address} overlaps the management network "
                            f"{mgmt.network} ({managed}): docker may give a node that address"
                        )
