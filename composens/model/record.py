"""What composens created, recorded so that it removes and changes only that: the record's data, and its JSON.

It is written before each change it describes (a claim), and claims that a failed run takes back are withdrawn
(the store: composens.system.record.store). Everything read back is checked (names, ids, paths, addresses) before
it is believed: entry names become paths that are unlinked, container ids become docker arguments; a record that
cannot be read or checked raises ValueError, saying what is wrong.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from composens.model import names

STATE_VERSION = 2
_CONTAINER_ID = re.compile(r"[0-9a-f]{12,64}")
RECOVER_HINT = "run `composens netns prune --recover` to rebuild it from the entries, the engine and the interfaces"


@dataclass(frozen=True)
class EntryRecord:
    """A /var/run/netns entry composens made: which container it is for and where it points."""

    project: str
    service: str
    container: str
    target: str
    previous: str | None = None  # the target being replaced, until the new one is in place

    def made(self, symlink_target: str | None) -> bool:
        """Tell whether an entry pointing at `symlink_target` is the one this record describes."""
        return symlink_target is not None and symlink_target in (self.target, self.previous)


@dataclass(frozen=True)
class HubRecord:
    """A namespace composens created itself (`ip netns add`) to hold a project's LAN bridges."""

    project: str
    inode: int | None = None  # its namespace's inode once made; None while it is being made
    # Its namespace's cookie (SO_NETNS_COOKIE): unique while the machine runs, where the kernel reuses an inode
    # as soon as the namespace is gone. None in records written before composens noted it.
    cookie: int | None = None


@dataclass
class Claim:
    """An interface composens made: its ifindex once seen (None while it is being made), and its veth peer."""

    index: int | None = None
    peer: str | None = None  # "node:ifname"
    # A VXLAN end's all-zero FDB entries composens appended (a LAN's head-end replication to its third and further
    # hosts), by underlay address: what a rollback puts back with the port, and what the port is judged by. None
    # where that is not known (a record from before composens kept it, or one rebuilt by --recover).
    fdb: tuple[str, ...] | None = None


RouteKey = tuple[int, str, int]  # family, destination, metric


@dataclass
class NodeRecord:
    """What composens made in one namespace (a service's, the host's or the hub), while that namespace lives."""

    netns: str  # which namespace: docker's path of a service's sandbox, "host", or "hub:<inode>"
    interfaces: dict[str, Claim] = field(default_factory=dict)
    addresses: dict[str, set[str]] = field(default_factory=dict)  # ifname -> addresses composens added
    routes: dict[RouteKey, str] = field(default_factory=dict)  # routes composens added, by the kernel's key
    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)  # "6:ifname" -> the values it replaced
    qdiscs: dict[str, dict[str, str]] = field(default_factory=dict)  # ifname -> the conditions it set, as spelled

    def forget(self, ifname: str) -> None:
        self.interfaces.pop(ifname, None)
        self.addresses.pop(ifname, None)
        self.qdiscs.pop(ifname, None)
        for key in [k for k in self.sysctls if k.split(":", 1)[1] == ifname]:
            del self.sysctls[key]

    def empty(self) -> bool:
        return not (self.interfaces or self.addresses or self.routes or self.sysctls or self.qdiscs)


@dataclass
class ProjectRecord:
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)  # "node:ifname" set down with `composens link down`
    conditions: dict[str, dict[str, str]] = field(default_factory=dict)  # "node:ifname" -> set with `netem set`

    def node(self, name: str, netns: str) -> NodeRecord:
        """The record of a node's current namespace; one of a namespace that is gone is dropped."""
        record = self.nodes.get(name)
        if record is None or record.netns != netns:
            record = self.nodes[name] = NodeRecord(netns)
        return record

    def empty(self) -> bool:
        return not self.down and not self.conditions and all(node.empty() for node in self.nodes.values())


@dataclass
class State:
    entries: dict[str, EntryRecord] = field(default_factory=dict)
    hubs: dict[str, HubRecord] = field(default_factory=dict)
    projects: dict[str, ProjectRecord] = field(default_factory=dict)
    damaged: str | None = None  # where an unreadable record was moved; nothing changes until recovery
    # Writes the record now; set by StateStore.locked(). Called before each change on disk, so a
    # crash leaves no entry or interface that the record does not claim.
    save: Callable[[], None] = field(default=lambda: None, repr=False, compare=False)

    def project(self, name: str) -> ProjectRecord:
        return self.projects.setdefault(name, ProjectRecord())

    def to_json(self) -> str:
        projects = {name: _project_json(record) for name, record in sorted(self.projects.items()) if not record.empty()}
        return json.dumps(
            {
                "version": STATE_VERSION,
                "entries": {name: _entry_json(rec) for name, rec in sorted(self.entries.items())},
                "hubs": {
                    name: {"project": h.project, "inode": h.inode, **({"cookie": h.cookie} if h.cookie else {})}
                    for name, h in sorted(self.hubs.items())
                },
                "projects": projects,
                **({"damaged": self.damaged} if self.damaged else {}),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> State:
        """Read a record; raise ValueError (saying what is wrong) for anything it cannot trust."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        version = data.get("version")
        if version == 1:
            return _from_version_1(data)
        if version != STATE_VERSION:
            raise ValueError(f"version {version!r}, this composens reads {STATE_VERSION}")
        damaged = data.get("damaged")
        return cls(
            entries={_name(k): _entry(v) for k, v in _mapping(data, "entries").items()},
            hubs={_name(k): _hub(v) for k, v in _mapping(data, "hubs").items()},
            projects={_project_name(k): _project(v) for k, v in _mapping(data, "projects").items()},
            damaged=_path(damaged) if damaged is not None else None,
        )


# --------------------------------------------------------------------------- checked reading


def _mapping(data: Any, key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{key} is not an object")
    return value


def _str(value: Any, what: str, rule: Callable[[object], bool] | re.Pattern[str] | None = None) -> str:
    valid = rule.fullmatch if isinstance(rule, re.Pattern) else rule
    if not isinstance(value, str) or (valid is not None and not valid(value)):
        raise ValueError(f"{what} {value!r} is not valid")
    return value


def _name(value: Any) -> str:
    return _str(value, "netns name", names.valid_netns_name)


def _project_name(value: Any) -> str:
    return _str(value, "project name", names.valid_project)


def _path(value: Any) -> str:
    text = _str(value, "path")
    if not text.startswith("/") or os.path.normpath(text) != text or any(c in text for c in "\0\n"):
        raise ValueError(f"path {text!r} is not a plain absolute path")
    return text


def _entry(data: Any) -> EntryRecord:
    if not isinstance(data, dict) or set(data) - {"project", "service", "container", "target", "previous"}:
        raise ValueError(f"entry {data!r} is not valid")
    previous = data.get("previous")
    return EntryRecord(
        project=_project_name(data.get("project")),
        service=_str(data.get("service"), "service", names.valid_node),
        container=_str(data.get("container"), "container id", _CONTAINER_ID),
        target=_path(data.get("target")),
        previous=_path(previous) if previous is not None else None,
    )


def _entry_json(rec: EntryRecord) -> dict[str, Any]:
    return {
        "project": rec.project,
        "service": rec.service,
        "container": rec.container,
        "target": rec.target,
        "previous": rec.previous,
    }


def _hub(data: Any) -> HubRecord:
    if not isinstance(data, dict):
        raise ValueError(f"hub {data!r} is not valid")
    if set(data) - {"project", "inode", "cookie"}:
        raise ValueError(f"hub {data!r} is not valid")
    inode, cookie = data.get("inode"), data.get("cookie")
    for what, value in (("inode", inode), ("cookie", cookie)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"hub {what} {value!r} is not valid")
    return HubRecord(_project_name(data.get("project")), inode, cookie)


def _project(data: Any) -> ProjectRecord:
    if not isinstance(data, dict):
        raise ValueError("project record is not an object")
    down = data.get("down", [])
    if not isinstance(down, list):
        raise ValueError("down is not a list")
    return ProjectRecord(
        nodes={_str(k, "node", names.valid_node): _node(v) for k, v in _mapping(data, "nodes").items()},
        down={_endpoint(item) for item in down},
        conditions={_endpoint(k): _conditions(v) for k, v in _mapping(data, "conditions").items()},
    )


def _conditions(value: Any) -> dict[str, str]:
    from composens.model.conditions import ConditionsError, parse

    try:
        return parse(value).spelled()
    except ConditionsError as e:
        raise ValueError(f"conditions {value!r}: {e}") from None


def _endpoint(value: Any) -> str:
    text = _str(value, "endpoint")
    node, _, ifname = text.partition(":")
    _str(node, "node", names.valid_node)
    _str(ifname, "interface name", names.valid_ifname)
    return text


def _node(data: Any) -> NodeRecord:
    if not isinstance(data, dict):
        raise ValueError("node record is not an object")
    record = NodeRecord(netns=_str(data.get("netns"), "namespace"))
    for ifname, claim in _mapping(data, "interfaces").items():
        if not isinstance(claim, dict):
            raise ValueError(f"claim {claim!r} is not valid")
        index, peer, fdb = claim.get("index"), claim.get("peer"), claim.get("fdb")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 1):
            raise ValueError(f"ifindex {index!r} is not valid")
        if fdb is not None and not isinstance(fdb, list):
            raise ValueError(f"FDB entries {fdb!r} are not a list")
        record.interfaces[_str(ifname, "interface name", names.valid_ifname)] = Claim(
            index,
            _endpoint(peer) if peer is not None else None,
            tuple(_underlay(a) for a in fdb) if fdb is not None else None,
        )
    for ifname, addresses in _mapping(data, "addresses").items():
        if not isinstance(addresses, list):
            raise ValueError("addresses are not a list")
        record.addresses[_str(ifname, "interface name", names.valid_ifname)] = {_address(a) for a in addresses}
    for key, text in _mapping(data, "routes").items():
        record.routes[_route_key(key)] = _str(text, "route")
    for key, values in _mapping(data, "sysctls").items():
        family, _, ifname = _str(key, "sysctl key").partition(":")
        if family not in ("4", "6") or not names.valid_ifname(ifname) or not isinstance(values, dict):
            raise ValueError(f"sysctls {key!r} are not valid")
        record.sysctls[key] = {
            _str(k, "sysctl", re.compile(r"[a-z0-9_]+")): _str(v, "sysctl value", re.compile(r"-?[0-9]+"))
            for k, v in values.items()
        }
    for ifname, spelled in _mapping(data, "qdiscs").items():
        record.qdiscs[_str(ifname, "interface name", names.valid_ifname)] = _conditions(spelled)
    return record


def _address(value: Any) -> str:
    text = _str(value, "address")
    if "%" in text:
        raise ValueError(f"address {text!r} is not valid")
    return str(ipaddress.ip_interface(text))


def _underlay(value: Any) -> str:
    return str(ipaddress.ip_address(_str(value, "underlay address")))


def _claim_json(claim: Claim) -> dict[str, Any]:
    found: dict[str, Any] = {"index": claim.index, "peer": claim.peer}
    if claim.fdb is not None:
        found["fdb"] = list(claim.fdb)
    return found


def _route_key(text: str) -> RouteKey:
    family, destination, metric = text.split("|")
    if family not in ("4", "6") or not metric.isascii() or not metric.isdigit():
        raise ValueError(f"route key {text!r} is not valid")
    if destination != "default":
        destination = str(ipaddress.ip_network(destination))
    return int(family), destination, int(metric)


def _project_json(record: ProjectRecord) -> dict[str, Any]:
    return {
        "nodes": {
            name: {
                "netns": node.netns,
                "interfaces": {i: _claim_json(c) for i, c in sorted(node.interfaces.items())},
                "addresses": {i: sorted(a) for i, a in sorted(node.addresses.items()) if a},
                "routes": {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in sorted(node.routes.items())},
                "sysctls": dict(sorted(node.sysctls.items())),
                "qdiscs": dict(sorted(node.qdiscs.items())),
            }
            for name, node in sorted(record.nodes.items())
            if not node.empty()
        },
        "down": sorted(record.down),
        "conditions": dict(sorted(record.conditions.items())),
    }


def _from_version_1(data: dict[str, Any]) -> State:
    """Read the first record format: entries, and the interfaces each project claimed by name.

    Its claims become claims of interfaces still being made, in the namespaces the entries point at;
    the next run finds them unmarked, takes them as its own and marks them.
    """
    entries = {_name(k): _entry(v) for k, v in _mapping(data, "entries").items()}
    projects: dict[str, ProjectRecord] = {}
    for project, endpoints in _mapping(data, "wired").items():
        if not isinstance(endpoints, list):
            raise ValueError("wired is not a list")
        record = projects.setdefault(_project_name(project), ProjectRecord())
        for text in endpoints:
            node, _, ifname = _endpoint(text).partition(":")
            targets = [e.target for e in entries.values() if e.project == project and e.service == node]
            netns = "host" if node == "host" else (targets[0] if targets else "")
            if netns:
                record.node(node, netns).interfaces[ifname] = Claim()
    return State(entries=entries, projects=projects)
