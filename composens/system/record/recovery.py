"""Rebuild a damaged record from what is on disk: the entries, the engine, and the interfaces' marks.

Run only when the user asks (`composens netns prune --recover`), after composens refused to act on a
record it could not read. An entry is adopted when it is a symlink to the very namespace a running
compose container is in; a hub when it is a namespace of its own holding bridges marked with a
project's alias; an interface when it carries a project's mark in a namespace adopted here. What
cannot be known again (the addresses and routes composens added) is not claimed: they are kept as
declared, and shown as extra rather than removed once the file stops declaring them.
"""

from __future__ import annotations

import os

from composens.model import entries
from composens.model.containers import Container
from composens.model.errors import ComposensError
from composens.model.names import valid_netns_name
from composens.model.record import Claim, EntryRecord, HubRecord, State
from composens.model.topology import HOST, HUB
from composens.system.docker.compose import Compose
from composens.system.kernel import netns
from composens.system.kernel.netns import NetnsDirectory
from composens.system.record.store import StateStore

MARK = "composens:"


def recover(directory: NetnsDirectory, store: StateStore, compose: Compose) -> list[str]:
    """Rebuild the record if it was damaged; return one line per thing adopted or left."""
    with store.locked(recovering=True) as state:
        if state.damaged is None:
            return _adopt_unrecorded(state) or ["the record is readable and knows every marked interface"]
        lines = [f"rebuilding the record (the damaged one is kept at {state.damaged})"]
        # A container that joined another's namespace (network_mode service:X) reports X's sandbox: not its own.
        running = [c for c in compose.containers(None) if c.running and c.sandbox and not c.netns_owner]
        by_sandbox = {c.sandbox: c for c in running}
        if directory.root.is_dir():
            for path in sorted(directory.root.iterdir()):
                if valid_netns_name(path.name):
                    lines += _adopt(directory, state, path.name, by_sandbox)
        lines += _adopt_interfaces(state, None, HOST, "host", None)
        state.damaged = None
        return lines


def _adopt_unrecorded(state: State) -> list[str]:
    """With a readable record: claim the interfaces marked for a project in its own namespaces that the record
    does not know (a run cut short between making one and writing it down, or an older record)."""
    lines = []
    for name, entry in sorted(state.entries.items()):
        lines += _adopt_interfaces(state, name, entry.service, entry.target, entry.project)
    for name, hub in sorted(state.hubs.items()):
        lines += _adopt_interfaces(state, name, HUB, f"hub:{hub.inode}", hub.project)
    return lines + _adopt_interfaces(state, None, HOST, "host", None)


def _adopt(directory: NetnsDirectory, state: State, name: str, by_sandbox: dict[str, Container]) -> list[str]:
    path = directory.path(name)
    if not path.is_symlink():
        return _adopt_hub(directory, state, name)
    target = os.readlink(path)
    container = by_sandbox.get(target)
    inode = netns.namespace_inode(target)
    if container is None or inode is None or inode != netns.namespace_inode(f"/proc/{container.pid}/ns/net"):
        return [f"left {path}: it is not the namespace of a running compose container (rm {path} removes it)"]
    # Pointing at a container's sandbox is not enough: a person may have linked it too, under a name of theirs.
    if directory.mark(name) != entries.entry_mark(container.project, container.service, container.id):
        return [f"left {path}: composens did not make it (it carries no mark of composens' for that container)"]
    state.entries[name] = EntryRecord(container.project, container.service, container.id, target)
    lines = [f"adopted entry {name} (project {container.project}, service {container.service})"]
    return lines + _adopt_interfaces(state, name, container.service, target, container.project)


def _adopt_hub(directory: NetnsDirectory, state: State, name: str) -> list[str]:
    from composens.system.kernel import reading

    try:
        found = reading.read_namespace(name)
    except ComposensError:  # an entry that opens nothing is simply not adopted
        return [f"left {directory.path(name)}: it opens no namespace"]
    owners = {
        link.alias[len(MARK) :]
        for link in found.links.values()
        if link.kind == "bridge" and link.alias and link.alias.startswith(MARK)
    }
    if len(owners) != 1:
        return [f"left {directory.path(name)}: not a hub of one composens project"]
    project = owners.pop()
    inode = directory.probe(name).reaches
    state.hubs[name] = HubRecord(project, inode, netns.namespace_cookie(directory.path(name)))
    return [f"adopted hub {name} (project {project})", *_adopt_interfaces(state, name, HUB, f"hub:{inode}", project)]


def _adopt_interfaces(state: State, netns_name: str | None, node: str, identity: str, project: str | None) -> list[str]:
    """Claim the interfaces in a namespace that carry a project's mark (one project's only, unless the host)."""
    from composens.system.kernel import reading

    try:
        found = reading.read_namespace(netns_name)
    except ComposensError:  # a namespace that vanished meanwhile has nothing to claim
        return []
    lines = []
    for link in found.links.values():
        if not link.alias or not link.alias.startswith(MARK):
            continue
        owner = link.alias[len(MARK) :]
        if project is not None and owner != project:
            continue
        if not owner or owner not in {e.project for e in state.entries.values()} | {
            h.project for h in state.hubs.values()
        }:
            continue
        claims = state.project(owner).node(node, identity).interfaces
        if link.ifname in claims:
            continue  # known already, with its peer
        claims[link.ifname] = Claim(link.index)
        lines.append(f"adopted interface {link.ifname} in {netns_name or 'the host'} (project {owner})")
    return lines
