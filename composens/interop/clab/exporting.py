"""Export a compose project as a containerlab topology: nodes of kind linux, links, LANs as bridge nodes.

Pure: the project's resolved config and its topology in, a document and warnings out. What containerlab would
otherwise do differently is written out: every link's MTU (1500, the kernel's, where the file gives none, since
containerlab's own default is 9500), `privileged: false` for a service that is not (containerlab's linux nodes
are), the management network and the nodes' addresses on it (mgmt.py), the start order (stages.py), containers'
names through `name` and `prefix` when the project names them as containerlab does, and exec lines in the order
an imported topology had them (importing.ORDER_KEY).
"""

from __future__ import annotations

import math
import os.path
import re
import shlex
from collections.abc import Mapping
from typing import Any

from composens.interop.clab import execlines, stages
from composens.interop.clab.files import Converted
from composens.interop.clab.importing import ORDER_KEY
from composens.interop.clab.keys import PLAIN_WORD
from composens.interop.clab.mgmt import DOCKER_BRIDGE, Exported, export_mgmt
from composens.model import startwait, topology
from composens.model.topology import EXTENSION, Topology

KERNEL_MTU = 1500  # what a veth pair gets when composens is given no MTU
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_PULL_POLICY = {"always": "Always", "never": "Never", "missing": "IfNotPresent", "if_not_present": "IfNotPresent"}


def export_topology(config: Mapping[str, Any], topo: Topology, *, output_dir: str) -> Converted:
    """Turn a project (its full resolved config, and the topology parsed from it) into a containerlab topology."""
    warnings: list[str] = []
    raw_services = config.get("services") or {}
    mgmt = export_mgmt(config, warnings)
    lab, prefix = _naming(raw_services, topo, warnings)
    nodes: dict[str, Any] = {}
    for name, spec in raw_services.items():
        nodes[name] = _node(name, spec, topo, mgmt, config, output_dir, warnings)
    links: list[dict[str, Any]] = []
    macs = {name: (spec.get(EXTENSION) or {}).get("macs") or {} for name, spec in raw_services.items()}
    for link in topo.links:
        links.append(_clab_link([link.a, link.b], link.mtu, macs))
        if link.conditions:
            warnings.append(f"{EXTENSION}.links: {link.a} {link.b}: netem conditions are not carried")
    comments = []
    for lan in topo.lans:
        nodes[lan.name] = {"kind": "bridge"}
        comments.append(f"{lan.name}: containerlab needs this bridge on the host first: "
                        f"ip link add {lan.name} type bridge && ip link set {lan.name} up")  # fmt: skip
        for member, port in zip(lan.members, lan.ports, strict=True):
            links.append(_clab_link([member, topology.Endpoint(lan.name, port)], lan.mtu, macs))
        if lan.conditions:
            warnings.append(f"{EXTENSION}.lans.{lan.name}: netem conditions are not carried")
    top = config.get(EXTENSION) or {}
    for key in ("host", "checks", "netns_prefix", "hub", "hosts", "vxlan"):
        if top.get(key):
            warnings.append(f"{EXTENSION}.{key}: has no containerlab equivalent; not carried")
    document: dict[str, Any] = {"name": lab}
    if prefix is not None:
        document["prefix"] = prefix
    if mgmt.section:
        document["mgmt"] = mgmt.section
    document["topology"] = {"nodes": nodes}
    if links:
        document["topology"]["links"] = links
    return Converted(document, tuple(warnings), tuple(comments))


def _naming(services: Mapping[str, Any], topo: Topology, warnings: list[str]) -> tuple[str, str | None]:
    """The lab's name and `prefix` that give the services' containers the names they have (container_name), as
    containerlab names them (PREFIX-LAB-NODE, LAB-NODE with `__lab-name`, NODE with ""); the project's name and
    containerlab's own prefix when they have none."""
    given = {name: spec.get("container_name") for name, spec in services.items()}
    if not any(given.values()):
        return topo.project, None
    if all(given[name] == name for name in services):
        return topo.project, ""
    heads = {name: str(c).removesuffix(f"-{name}") for name, c in given.items() if c and str(c).endswith(f"-{name}")}
    if len(heads) == len(services) and len(set(heads.values())) == 1:
        head = next(iter(heads.values()))
        if head.startswith("clab-") and len(head) > len("clab-"):
            return head.removeprefix("clab-"), None
        return head, "__lab-name"
    for name, container in given.items():
        if container:
            warnings.append(f"{name}: container_name: {container}: containerlab names every container "
                            "PREFIX-LAB-NODE, and the others do not fit one; not carried")  # fmt: skip
    return topo.project, None


# compose keys the export carries, or that compose writes on every service by itself.
_EXPORTED = {"image", "command", "entrypoint", "environment", "volumes", "ports", "labels", "sysctls", "cap_add",
             "user", "network_mode", "mem_limit", "cpus", "privileged", "tty", "hostname", "networks", "build",
             EXTENSION, "deploy", "scale", "container_name", "depends_on", "dns", "dns_search", "dns_opt",
             "healthcheck", "pull_policy", "cgroup_parent", "restart", "pid", "stdin_open", "shm_size",
             "cpuset", ORDER_KEY}  # fmt: skip


def _node(
    name: str,
    spec: Mapping[str, Any],
    topo: Topology,
    mgmt: Exported,
    config: Mapping[str, Any],
    output_dir: str,
    warnings: list[str],
) -> dict[str, Any]:
    node: dict[str, Any] = {"kind": "linux", "image": spec.get("image") or f"{topo.project}-{name}"}
    if "image" not in spec:
        warnings.append(
            f"{name}: build: containerlab needs an image; the node uses {node['image']}, as compose names it"
        )
    elif spec.get("build"):
        warnings.append(f"{name}: build: containerlab builds nothing; the node uses the image {node['image']}")
    for key, clab_key in (("command", "cmd"), ("entrypoint", "entrypoint")):
        if spec.get(key):
            value = spec[key]
            node[clab_key] = shlex.join(value) if isinstance(value, list) else str(value)
    env = spec.get("environment") or {}
    if env:
        node["env"] = {k: v for k, v in env.items() if v is not None}
    binds = [_export_bind(name, v, output_dir, warnings) for v in spec.get("volumes") or []]
    if any(binds):
        node["binds"] = [b for b in binds if b]
    ports = [_export_port(name, p, warnings) for p in spec.get("ports") or []]
    if any(ports):
        node["ports"] = [p for p in ports if p]
    for key, clab_key in (("labels", "labels"), ("sysctls", "sysctls")):
        if spec.get(key):
            node[clab_key] = {k: str(v) for k, v in spec[key].items()}
    if spec.get("cap_add"):
        node["cap-add"] = list(spec["cap_add"])
    if spec.get("user"):
        node["user"] = str(spec["user"])
    if not spec.get("privileged"):
        node["privileged"] = False  # containerlab's linux nodes are privileged unless they say not
    mode = spec.get("network_mode") or ""
    if mode in ("none", "host") or mode.startswith("container:"):
        node["network-mode"] = mode
    elif mode.startswith("service:"):
        node["network-mode"] = f"container:{mode.removeprefix('service:')}"
    elif mode and mode != DOCKER_BRIDGE:
        warnings.append(f"{name}: network_mode: {mode}: has no containerlab equivalent; not carried")
    if spec.get("mem_limit"):
        node["memory"] = f"{spec['mem_limit']}b" if str(spec["mem_limit"]).isdigit() else str(spec["mem_limit"])
    if spec.get("shm_size"):
        node["shm-size"] = f"{spec['shm_size']}b" if str(spec["shm_size"]).isdigit() else str(spec["shm_size"])
    if spec.get("cpus"):
        node["cpu"] = float(spec["cpus"])
    if spec.get("cpuset"):
        node["cpu-set"] = str(spec["cpuset"])
    if spec.get("cgroup_parent"):
        node["cgroup-parent"] = str(spec["cgroup_parent"])
    if spec.get("restart"):
        node["restart-policy"] = str(spec["restart"])
    if str(spec.get("pid") or "").startswith("service:"):
        node["pid-mode"] = f"container:{str(spec['pid']).removeprefix('service:')}"
    elif spec.get("pid"):
        node["pid-mode"] = str(spec["pid"])
    if spec.get("hostname") and spec["hostname"] != name:
        node["hostname"] = spec["hostname"]
    node.update(mgmt.nodes.get(name, {}))
    _keys_of_another_shape(name, spec, node, warnings)
    ext = spec.get(EXTENSION) or {}
    service = topo.services[name]
    shares = mode.removeprefix("service:") if mode.startswith("service:") else None
    waits, lost = stages.export_waits(spec.get("depends_on"), service.start_after_wiring is not None, shares)
    warnings.extend(f"{name}: {line}" for line in lost)
    if waits:
        node["stages"] = waits
    if service.start_after_wiring is not None and not waits:
        warnings.append(f"{name}: {EXTENSION}.start_after_wiring: has no containerlab equivalent; not carried")
    elif service.start_after_wiring not in (None, startwait.DEFAULT_LIMIT):
        warnings.append(f"{name}: {EXTENSION}.start_after_wiring: {service.start_after_wiring}: containerlab "
                        "waits without a limit")  # fmt: skip
    if service.start_delay:
        node["startup-delay"] = service.start_delay
    if service.replicas > 1:
        warnings.append(f"{name}: scaled to {service.replicas}; containerlab runs one node")
    for key in sorted(set(spec) - _EXPORTED):
        warnings.append(f"{name}: {key}: has no containerlab equivalent; not carried")
    if ext.get("netns"):
        warnings.append(f"{name}: {EXTENSION}.netns: has no containerlab equivalent; not carried")
    lines = _exec_lines(name, spec, topo, mgmt, config, warnings)
    if lines:
        node["exec"] = lines
    return node


def _keys_of_another_shape(name: str, spec: Mapping[str, Any], node: dict[str, Any], warnings: list[str]) -> None:
    """dns, healthcheck and the pull policy, which containerlab spells differently."""
    dns = {clab: list(spec[key]) for key, clab in (("dns", "servers"), ("dns_search", "search"), ("dns_opt",
           "options")) if spec.get(key)}  # fmt: skip
    if dns:
        node["dns"] = dns
    health = spec.get("healthcheck") or {}
    if health.get("disable"):
        warnings.append(f"{name}: healthcheck: disable: containerlab keeps the image's; not carried")
    elif health:
        check: dict[str, Any] = {}
        if health.get("test"):
            test = health["test"]
            check["test"] = list(test) if isinstance(test, list) else ["CMD-SHELL", str(test)]
        for key in ("interval", "timeout", "start_period"):
            seconds = _whole_seconds(str(health.get(key) or ""))
            if seconds:  # 0 is docker's default, to containerlab as to compose
                check[key.replace("_", "-")] = seconds
        if health.get("retries"):
            check["retries"] = int(health["retries"])
        if health.get("start_interval"):
            warnings.append(f"{name}: healthcheck: start_interval: has no containerlab equivalent; not carried")
        node["healthcheck"] = check
    policy = spec.get("pull_policy")
    if policy:
        if policy in _PULL_POLICY:
            node["image-pull-policy"] = _PULL_POLICY[policy]
        else:
            warnings.append(f"{name}: pull_policy: {policy}: has no containerlab equivalent; not carried")


def _whole_seconds(duration: str) -> int:
    """A compose duration (`1m30s`, `1.5s`) in whole seconds, rounded up: containerlab's are whole seconds."""
    total = sum(float(n) * _SECONDS[unit] for n, unit in _DURATION.findall(duration))
    return math.ceil(total - 1e-9)


def _families(name: str, spec: Mapping[str, Any], mgmt: Exported, config: Mapping[str, Any]) -> frozenset[int]:
    """The families the service's management network gives it a default route of, as the import reads them."""
    mode = spec.get("network_mode") or ""
    if mode == DOCKER_BRIDGE and mgmt.network == DOCKER_BRIDGE:
        return frozenset({4})
    if mode or mgmt.network is None or mgmt.network not in (spec.get("networks") or {}):
        return frozenset()
    network = (config.get("networks") or {}).get(mgmt.network) or {}
    return frozenset({4, 6}) if network.get("enable_ipv6") else frozenset({4})


def _exec_lines(
    name: str,
    spec: Mapping[str, Any],
    topo: Topology,
    mgmt: Exported,
    config: Mapping[str, Any],
    warnings: list[str],
) -> list[str]:
    """The node's exec lines: its addresses, its routes, then its commands; or, for a service imported with its
    lines kept in containerlab's order, those lines, when they still say what the service declares."""
    service = topo.services[name]
    kept = (spec.get(ORDER_KEY) or {}).get("exec")
    if kept:
        lines = [str(line).replace("$$", "$") for line in kept]  # compose's config writes a literal '$' as '$$'
        ordered = _in_order(name, lines, spec, topo, mgmt, config)
        if ordered is not None:
            return [line.replace("$", "$$") for line in ordered]
        warnings.append(f"{name}: {ORDER_KEY}.exec: no longer says what {EXTENSION} declares; the exec lines are "
                        "written in composens' order (addresses, routes, commands)")  # fmt: skip
    lines = [f"ip address add {a} dev {ifname}" for ifname, addresses in service.addresses.items() for a in addresses]
    lines += [f"ip route add {route}" for route in service.routes]
    for command in service.exec:
        if isinstance(command, tuple):
            line = shlex.join(command)
        elif all(PLAIN_WORD.fullmatch(w) for w in command.split()):
            line = " ".join(command.split())
        else:
            line = shlex.join(["sh", "-c", command])  # containerlab runs a line with no shell
        lines.append(line.replace("$", "$$"))  # topology.parse took compose's '$$' for '$'; containerlab's is '$$' too
    return lines


def _in_order(
    name: str,
    lines: list[str],
    spec: Mapping[str, Any],
    topo: Topology,
    mgmt: Exported,
    config: Mapping[str, Any],
) -> list[str] | None:
    """The kept lines, after an `ip address add` for each declared address they do not hold (a link's), when
    placing them again gives the service's routes and commands and only addresses it declares; else None."""
    service = topo.services[name]
    declared = {ifname: list(addresses) for ifname, addresses in service.addresses.items()}
    ends = [e for link in topo.links for e in (link.a, link.b)] + [m for lan in topo.lans for m in lan.members]
    interfaces = [e.ifname for e in ends if e.node == name]
    link_addresses = [a for found in service.addresses.values() for a in found]
    placed = execlines.place(lines, interfaces, link_addresses, _families(name, spec, mgmt, config))
    commands = tuple(_argv(execlines.command(line)) for line in placed.commands)
    if placed.routes != list(service.routes) or commands != tuple(_argv(c) for c in service.exec):
        return None
    from_lines = {(ifname, a) for ifname, found in placed.addresses.items() for a in found}
    if any(a not in declared.get(ifname, []) for ifname, a in from_lines):
        return None
    first = [f"ip address add {a} dev {ifname}" for ifname, found in declared.items() for a in found
             if (ifname, a) not in from_lines]  # fmt: skip
    return first + lines


def _argv(command: topology.Command | list[str]) -> tuple[str, ...]:
    """What a command runs: a string is `sh -c STRING`, which for plain words is those words themselves."""
    if isinstance(command, list | tuple):
        words = tuple(command)
        return _argv(words[2]) if len(words) == 3 and words[:2] == ("sh", "-c") else words
    split = command.split()
    return tuple(split) if all(PLAIN_WORD.fullmatch(w) for w in split) else ("sh", "-c", command)


def _export_bind(name: str, volume: Any, output_dir: str, warnings: list[str]) -> str | None:
    if not isinstance(volume, dict) or volume.get("type") != "bind":
        target = volume.get("target") if isinstance(volume, dict) else volume
        warnings.append(f"{name}: volumes: {target}: only bind mounts are containerlab binds; not carried")
        return None
    source = str(volume["source"])
    relative = os.path.relpath(source, output_dir)
    if not relative.startswith(".."):
        source = relative
    # Every mode said: compose's config writes no read_only for a read-write bind, and docker's own default is rw.
    options = volume.get("bind") or {}
    modes = ["ro" if volume.get("read_only") else "rw"]
    modes += [str(options[key]) for key in ("selinux", "propagation") if options.get(key)]
    return f"{source}:{volume['target']}:{','.join(modes)}"


def _export_port(name: str, port: Any, warnings: list[str]) -> str | None:
    if not isinstance(port, dict) or not port.get("published"):
        warnings.append(f"{name}: ports: {port}: only published ports are carried")
        return None
    text = f"{port['published']}:{port['target']}"
    if port.get("host_ip"):
        text = f"{port['host_ip']}:{text}"
    return text + (f"/{port['protocol']}" if port.get("protocol") not in (None, "tcp") else "")


def _clab_link(ends: list[topology.Endpoint], mtu: int | None, macs: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    found = {str(e): macs.get(e.node, {}).get(e.ifname) for e in ends}
    if any(found.values()):
        link: dict[str, Any] = {"type": "veth", "endpoints": []}
        for e in ends:
            end = {"node": e.node, "interface": e.ifname}
            mac = found[str(e)]
            if mac:
                end["mac"] = mac
            link["endpoints"].append(end)
    else:
        link = {"endpoints": [str(e) for e in ends]}
    link["mtu"] = mtu or KERNEL_MTU  # containerlab's own default is 9500: say what composens makes
    return link
