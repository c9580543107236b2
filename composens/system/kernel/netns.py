"""/var/run/netns entries: the only module that writes there.

An entry is a symlink to docker's own mount of the container's namespace
(NetworkSettings.SandboxKey, /var/run/docker/netns/<random id>), never to /proc/<pid>/ns/net:
a pid is reused, while docker gives every new sandbox a new random name and removes the old
mount once the container stops. So an entry can reach its container's namespace or nothing,
never another container's or the host's. Before linking, the sandbox is checked to be the very
namespace the container's process is in (same nsfs inode).

Entries are removed with unlink(2) on the symlink only: `ip netns delete` and pyroute2's
netns.remove() unmount the target through the link, which is docker's own mount.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from composens.model.entries import ENTRY_MARK, Action, EntryChange, EntryOnDisk, Wanted, entry_mark
from composens.model.errors import ComposensError, EngineError, PermissionProblem, WiringError
from composens.model.names import HUB_NODE as HUB
from composens.model.progress import ENTRIES, SILENT, Progress
from composens.system.faults import crash_point
from composens.system.world import WORLD, reader

if TYPE_CHECKING:  # not imported to run: reading entries (a replay) needs neither
    from composens.model.containers import Container
    from composens.model.record import State

NETNS_DIR = Path("/var/run/netns")


def _set_mark(path: Path, mark: str) -> None:
    with contextlib.suppress(OSError):  # no xattrs here: the record is what knows the entry
        WORLD.changed(f"the mark of {path}")
        os.setxattr(path, ENTRY_MARK, mark.encode(), follow_symlinks=False)


SO_NETNS_COOKIE = 71  # linux/asm-generic/socket.h; Linux 5.14 and later


def namespace_cookie(path: str | Path) -> int | None:
    """Return the cookie of the network namespace a path opens (None if it opens none): a socket made inside it
    tells. Unlike an inode, the kernel never gives a cookie to another namespace while the machine runs."""
    cookie: int | None = WORLD.read("cookie", str(path))
    return cookie


@reader("cookie")
def _cookie(path: str) -> int | None:
    import socket
    import struct

    from composens.system.kernel.entering import run_in_netns  # a thread that enters the namespace

    found: list[int] = []

    def ask() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            found.append(struct.unpack("=Q", probe.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0])

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        run_in_netns(fd, ask)
    except OSError:
        return None
    finally:
        os.close(fd)
    return found[0] if found else None


def namespace_inode(path: str | Path) -> int | None:
    """Return the inode of the network namespace a path opens, or None if it opens none."""
    inode: int | None = WORLD.read("inode", str(path))
    return inode


@reader("inode")
def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def resolve_target(container: Container, by_id: Mapping[str, Container]) -> tuple[str | None, int | None, str]:
    """Find docker's mount of the namespace the container is in now: (path, inode, reason if none)."""
    if not container.running:
        return None, None, "not running"
    if container.network_mode == "host":
        return None, None, "network_mode: host"
    current = namespace_inode(f"/proc/{container.pid}/ns/net")
    candidate = container.sandbox
    owner_id = container.netns_owner
    if owner_id is not None:
        owner = by_id.get(owner_id)
        candidate = owner.sandbox if owner and owner.running else ""
    if current is not None and candidate and namespace_inode(candidate) == current:
        return candidate, current, ""
    if owner_id is not None:
        return (
            None,
            current,
            (
                "it no longer shares the namespace of the container it joined (that one restarted); "
                "recreate it: composens up -d --force-recreate " + container.service
            ),
        )
    return None, current, "docker holds no mount of its namespace"


class NetnsDirectory:
    def __init__(self, root: Path = NETNS_DIR) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name

    def probe(self, name: str) -> EntryOnDisk:
        found: EntryOnDisk = WORLD.read("entry", str(self.root), name)
        return found

    def ensure_root(self) -> None:
        if not self.root.is_dir():
            WORLD.changed(f"the folder {self.root}")
            try:
                self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
            except PermissionError as e:
                raise PermissionProblem(f"cannot write {self.root}: composens needs root (run it with sudo)") from e
        if not WORLD.read("writable", str(self.root)):
            raise PermissionProblem(f"cannot write {self.root}: composens needs root (run it with sudo)")

    def create(self, name: str, target: str, mark: str) -> None:
        """Make a new entry carrying composens' mark; fail if anything stands at that name."""
        path = self.path(name)
        WORLD.changed(f"the entry {path}")
        os.symlink(target, path)
        _set_mark(path, mark)

    def replace(self, name: str, target: str, mark: str) -> None:
        """Point an entry composens owns at a new target in one step."""
        # Beside the entry: `ip netns add` makes the directory a mount point of its own.
        WORLD.changed(f"the entry {self.path(name)}")
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        _set_mark(tmp, mark)
        os.replace(tmp, self.path(name))

    def mark(self, name: str) -> str | None:
        """The mark composens left on an entry (see entry_mark), or None."""
        mark: str | None = WORLD.read("mark", str(self.root), name)
        return mark

    def remove(self, name: str) -> None:
        WORLD.changed(f"the entry {self.path(name)}")
        os.unlink(self.path(name))  # the symlink itself; never umount through it


# The readings of entries, made again from plain arguments (composens.system.world).


@reader("entry")
def _entry(root: str, name: str) -> EntryOnDisk:
    path = Path(root) / name
    if not os.path.lexists(path):
        return EntryOnDisk(exists=False)
    target = os.readlink(path) if path.is_symlink() else None
    return EntryOnDisk(True, target, namespace_inode(path))


@reader("mark")
def _mark(root: str, name: str) -> str | None:
    try:
        return os.getxattr(Path(root) / name, ENTRY_MARK, follow_symlinks=False).decode(errors="replace")
    except OSError:
        return None


@reader("writable")
def _writable(root: str) -> bool:
    return os.access(root, os.W_OK)


def link(
    directory: NetnsDirectory,
    state: State,
    project: str,
    wanted: Iterable[Wanted],
    services: set[str],
    progress: Progress = SILENT,
) -> list[EntryChange]:
    """Make the project's entries for `services` exactly `wanted`; touch nothing composens did not make.

    Every entry about to be made or moved is recorded, and the record saved, before the first one
    is touched: one write ahead for the whole run, so a crash leaves no entry the record misses.
    `progress` is told of the entries to make or move, and of each as it is.
    """
    wanted = list(wanted)
    names = {w.name for w in wanted}
    changes = [
        _remove_ours(directory, state, name, "no running container")
        for name, rec in sorted(state.entries.items())
        if rec.project == project and rec.service in services and name not in names
    ]
    decided = [(w, _decide(directory, state, project, w)) for w in wanted]
    moves = [(w, change) for w, change in decided if change.action in (Action.CREATE, Action.REPLACE)]
    for w, change in moves:
        assert w.target is not None
        from composens.model.record import EntryRecord

        record = EntryRecord(project, w.container.service, w.container.id, w.target)
        # While an entry moves, its record owns both the old target and the new one.
        state.entries[w.name] = replace(record, previous=change.detail or None)
    if moves:
        state.save()
        progress.expect(ENTRIES, len(moves))
    moving = {w.name for w, _ in moves}
    for w, change in decided:
        if w.name in moving:
            changes.append(_carry_out(directory, state, w, change))
            progress.advance(ENTRIES)
        else:
            changes.append(change)
        if change.action is Action.KEEP and directory.mark(w.name) is None:  # made before entries were marked
            _set_mark(directory.path(w.name), entry_mark(project, w.container.service, w.container.id))
    return changes


def _decide(directory: NetnsDirectory, state: State, project: str, w: Wanted) -> EntryChange:
    """Say what to do for one wanted entry; only removals happen here, the rest waits for the record."""
    service = w.container.service
    entry = directory.probe(w.name)
    record = state.entries.get(w.name)
    ours = record is not None and entry.exists and record.made(entry.symlink_target)
    if entry.exists and not ours:
        return EntryChange(w.name, service, Action.CONFLICT, entry.symlink_target, _conflict_detail(directory, w.name))
    if record is not None and record.project != project and ours:
        return EntryChange(
            w.name,
            service,
            Action.CONFLICT,
            entry.symlink_target,
            f"project {record.project} uses the name {w.name}; set a top-level x-composens.netns_prefix "
            "in one of the projects, or bring that one down",
        )
    if w.target is None:
        if ours:
            return _remove_ours(directory, state, w.name, w.why_not)
        return EntryChange(w.name, service, Action.SKIP, None, w.why_not)
    from composens.model.record import EntryRecord

    if ours and record == EntryRecord(project, service, w.container.id, w.target) and entry.reaches == w.inode:
        return EntryChange(w.name, service, Action.KEEP, w.target)
    if ours:
        return EntryChange(w.name, service, Action.REPLACE, w.target, entry.symlink_target or "")
    state.entries.pop(w.name, None)  # a record whose entry someone else removed
    return EntryChange(w.name, service, Action.CREATE, w.target)


def _carry_out(directory: NetnsDirectory, state: State, w: Wanted, change: EntryChange) -> EntryChange:
    assert w.target is not None
    mark = entry_mark(state.entries[w.name].project, w.container.service, w.container.id)
    if change.action is Action.REPLACE:
        directory.replace(w.name, w.target, mark)
    else:
        try:
            directory.create(w.name, w.target, mark)
        except FileExistsError:
            del state.entries[w.name]
            return EntryChange(w.name, change.service, Action.CONFLICT, None, _conflict_detail(directory, w.name))
        crash_point("after-first-entry")
    state.entries[w.name] = replace(state.entries[w.name], previous=None)
    return EntryChange(w.name, change.service, change.action, w.target)


def _conflict_detail(directory: NetnsDirectory, name: str) -> str:
    return f"{not_ours(directory, name)} or choose another name with x-composens.netns or netns_prefix"


def not_ours(directory: NetnsDirectory, name: str) -> str:
    """Say that an entry is someone else's and how to remove it safely, should they want to."""
    path = directory.path(name)
    # `ip netns delete` on a symlink unmounts its target through it: docker's own mount, say.
    how = f"rm {path}" if path.is_symlink() else f"ip netns delete {name}"
    return f"{path} exists and was not made by composens; remove it yourself ({how})"


def _remove_ours(directory: NetnsDirectory, state: State, name: str, why: str) -> EntryChange:
    record = state.entries[name]
    entry = directory.probe(name)
    if entry.exists and record.made(entry.symlink_target):
        directory.remove(name)  # first: if this fails, the record still owns the entry
        del state.entries[name]
        return EntryChange(name, record.service, Action.REMOVE, record.target, why)
    del state.entries[name]
    return EntryChange(name, record.service, Action.SKIP, None, "entry already gone or no longer composens'")


def unlink(
    directory: NetnsDirectory, state: State, project: str, services: set[str] | None = None
) -> list[EntryChange]:
    """Remove the entries composens made for the project (only those of `services` if given)."""
    return [
        _remove_ours(directory, state, name, "unlinked")
        for name, rec in sorted(state.entries.items())
        if rec.project == project and (services is None or rec.service in services)
    ]


# --------------------------------------------------------------------------- the hub


def hub_is_ours(directory: NetnsDirectory, state: State, project: str, name: str) -> bool:
    """Tell whether the entry `name` is the hub namespace composens made for `project`."""
    record = state.hubs.get(name)
    if record is None or record.project != project:
        return False
    entry = directory.probe(name)
    if not entry.exists or entry.symlink_target is not None or entry.reaches is None:
        return False
    if record.inode is not None:
        # The inode alone is not enough: once the hub is gone the kernel gives it to the next namespace made,
        # a person's `ip netns add` of the same name say. The cookie is never reused.
        if record.inode != entry.reaches:
            return False
        return record.cookie is None or record.cookie == namespace_cookie(directory.path(name))
    # Claimed just before a run that ended before it could note which namespace it made: taken for that
    # one only while it is as `ip netns add` leaves a namespace, with nothing in it but lo.
    return _only_loopback(name)


def _only_loopback(name: str) -> bool:
    WORLD.refuse("a hub told by its links")
    done = subprocess.run(["ip", "-n", name, "-o", "link", "show"], capture_output=True, text=True, check=False)
    return done.returncode == 0 and [line.split(":")[1].strip() for line in done.stdout.splitlines()] == ["lo"]


def ensure_hub(directory: NetnsDirectory, state: State, project: str, name: str) -> EntryChange:
    """Make the project's hub: a namespace of its own (`ip netns add`), the one entry that is not a container's."""
    from composens.model.record import HubRecord

    if directory.probe(name).exists:
        if not hub_is_ours(directory, state, project, name):
            return EntryChange(name, HUB, Action.CONFLICT, None, hub_conflict(directory, state, project, name))
        record = state.hubs[name]
        if record.inode is None or record.cookie is None:  # claimed by a run cut short, or an older record
            path = directory.path(name)
            state.hubs[name] = HubRecord(project, directory.probe(name).reaches, namespace_cookie(path))
        return EntryChange(name, HUB, Action.KEEP, "namespace")
    state.hubs[name] = HubRecord(project, None)
    state.save()  # claimed before it exists
    try:
        _ip_netns("add", name)
    except ComposensError:
        del state.hubs[name]  # not made: not claimed
        raise
    path = directory.path(name)
    state.hubs[name] = HubRecord(project, directory.probe(name).reaches, namespace_cookie(path))
    return EntryChange(name, HUB, Action.CREATE, "namespace")


def hub_conflict(directory: NetnsDirectory, state: State, project: str, name: str) -> str:
    record = state.hubs.get(name)
    if record is not None and record.project != project:
        return f"hub namespace {name} belongs to project {record.project}; set x-composens.hub in one of the projects"
    return f"{not_ours(directory, name)} or choose another hub name with x-composens.hub"


def remove_hub(directory: NetnsDirectory, state: State, project: str, name: str, why: str) -> EntryChange:
    """Delete a hub composens made (with everything in it: bridges and ports); forget one that is gone."""
    ours = hub_is_ours(directory, state, project, name)
    if ours:
        _ip_netns("delete", name)  # a real mount, unlike container entries: unmounted and removed
    state.hubs.pop(name, None)
    if ours:
        return EntryChange(name, HUB, Action.REMOVE, "namespace", why)
    return EntryChange(name, HUB, Action.SKIP, None, "hub already gone or no longer composens'")


def _ip_netns(verb: str, name: str) -> None:
    WORLD.changed(f"the namespace {name}")
    try:
        done = subprocess.run(["ip", "netns", verb, name], capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise EngineError("the ip command is missing: install iproute2") from e
    if done.returncode != 0:
        raise WiringError(f"`ip netns {verb} {name}` failed: {done.stderr.strip() or done.returncode}")
