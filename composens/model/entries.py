"""/var/run/netns entries as composens sees them: how each stands for its container, and what a run did to it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from composens.model.containers import Container
    from composens.model.record import EntryRecord


class Status(StrEnum):
    LINKED = "linked"
    UNLINKED = "unlinked"
    STALE = "stale"
    CONFLICT = "conflict"
    NONE = "none"


class Action(StrEnum):
    CREATE = "link create"
    REPLACE = "link replace"
    KEEP = "linked"
    REMOVE = "link remove"
    CONFLICT = "conflict"
    SKIP = "skip"


@dataclass(frozen=True)
class EntryOnDisk:
    exists: bool
    symlink_target: str | None = None
    reaches: int | None = None  # inode of the namespace opening it would enter


@dataclass(frozen=True)
class Wanted:
    """An entry a running container should have."""

    name: str
    container: Container
    target: str | None  # docker's path to its namespace, verified; None when none can be trusted
    inode: int | None  # the namespace its process is in now
    why_not: str = ""


@dataclass(frozen=True)
class EntryChange:
    name: str
    service: str
    action: Action
    target: str | None = None
    detail: str = ""


# An extended attribute on the symlink itself, which only root can set: how a rebuilt record tells an entry
# composens made from a person's symlink to the same sandbox. Where the file system has no xattrs, entries are
# made unmarked (the record still knows them) and a rebuild leaves them.
ENTRY_MARK = "trusted.composens"


def entry_mark(project: str, service: str, container: str) -> str:
    return f"{project} {service} {container}"


def classify(
    project: str,
    entry: EntryOnDisk,
    record: EntryRecord | None,
    container: Container | None,
    current: int | None,
) -> Status:
    """Say how an entry name stands for a container (None: the container is gone)."""
    ours = record is not None and entry.exists and record.made(entry.symlink_target)
    if entry.exists and (not ours or (record is not None and record.project != project)):
        return Status.CONFLICT
    if ours:
        assert record is not None
        same = container is not None and record.container == container.id
        return Status.LINKED if same and current is not None and entry.reaches == current else Status.STALE
    reachable = container is not None and container.running and container.network_mode != "host"
    return Status.UNLINKED if reachable else Status.NONE
