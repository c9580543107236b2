"""Export a compose project as a containerlab topology: nodes of kind linux, links, LANs as bridge nodes.

Pure: the project's resolved config and its topology in, a document and warnings out.
"""

from __future__ import annotations

import os.path
import shlex
from collections.abc import Mapping
from typing import Any

from composens.interop.clab.files import Converted
from composens.interop.clab.keys import PLAIN_WORD
from composens.model import topology
from composens.model.topology import EXTENSION, Topology


def export_topology(config: Mapping[str, Any], topo: Topology, *, output_dir: str) -> Converted:
    """Turn a project (its full resolved config, and the topology parsed from it) into a containerlab topology."""
    warnings: list[str] = []
    raw_services = config.get("services") or {}
    nodes: dict[str, Any] = {}
    for name, spec in raw_services.items():
        nodes[name] = _node(name, spec, topo, output_dir, warnings)
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
    for key in ("host", "checks", "netns_prefix", "hub"):
        if top.get(key):
            warnings.append(f"{EXTENSION}.{key}: has no containerlab equivalent; not carried")
    document: dict[str, Any] = {"name": topo.project, "topology": {"nodes": nodes}}
    if links:
        document["topology"]["links"] = links
    return Converted(document, tuple(warnings), tuple(comments))


# compose keys the export carries, or that compose writes on every service by itself.
_EXPORTED = {"image", "command", "entrypoint", "environment", "volumes", "ports", "labels", "sysctls", "cap_add",
             "user", "network_mode", "mem_limit", "cpus", "privileged", "tty", "hostname", "networks", "build",
             EXTENSION, "deploy", "scale"}  # fmt: skip


def _node(name: str, spec: Mapping[str, Any], topo: Topology, output_dir: str, warnings: list[str]) -> dict[str, Any]:
    node: dict[str, Any] = {"kind": "linux", "image": spec.get("image") or f"{topo.project}-{name}"}
    if "image" not in spec:
        warnings.append(
            f"{name}: build: containerlab needs an image; the node uses {node['image']}, as compose names it"
        )
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
    mode = spec.get("network_mode") or ""
    if mode in ("none", "host") or mode.startswith("container:"):
        node["network-mode"] = mode
    elif mode.startswith("service:"):
        node["network-mode"] = f"container:{mode.removeprefix('service:')}"
    if spec.get("mem_limit"):
        node["memory"] = f"{spec['mem_limit']}b" if str(spec["mem_limit"]).isdigit() else str(spec["mem_limit"])
    if spec.get("cpus"):
        node["cpu"] = float(spec["cpus"])
    if spec.get("hostname") and spec["hostname"] != name:
        node["hostname"] = spec["hostname"]
    networks = spec.get("networks") or {}
    if set(networks) - {"default"}:
        warnings.append(f"{name}: networks: containerlab gives every node its management network instead; not carried")
    if topo.services[name].replicas > 1:
        warnings.append(f"{name}: scaled to {topo.services[name].replicas}; containerlab runs one node")
    for key in sorted(set(spec) - _EXPORTED):
        warnings.append(f"{name}: {key}: has no containerlab equivalent; not carried")
    ext = spec.get(EXTENSION) or {}
    if ext.get("netns"):
        warnings.append(f"{name}: {EXTENSION}.netns: has no containerlab equivalent; not carried")
    lines = _exec_lines(topo.services[name])
    if lines:
        node["exec"] = lines
    return node


def _exec_lines(service: topology.Node) -> list[str]:
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


def _export_bind(name: str, volume: Any, output_dir: str, warnings: list[str]) -> str | None:
    if not isinstance(volume, dict) or volume.get("type") != "bind":
        target = volume.get("target") if isinstance(volume, dict) else volume
        warnings.append(f"{name}: volumes: {target}: only bind mounts are containerlab binds; not carried")
        return None
    source = str(volume["source"])
    relative = os.path.relpath(source, output_dir)
    if not relative.startswith(".."):
        source = relative
    return f"{source}:{volume['target']}" + (":ro" if volume.get("read_only") else "")


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
    if mtu is not None:
        link["mtu"] = mtu
    return link
