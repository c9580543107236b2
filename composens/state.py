"""What composens created, recorded so that it removes only that.

The record lives in /run (tmpfs, like /var/run/netns), so a reboot clears both together.
Writers hold an exclusive flock; the file is replaced by rename, so a crash leaves the old or
the new record, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from composens.errors import PermissionProblem

STATE_VERSION = 1


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


@dataclass
class State:
    entries: dict[str, EntryRecord] = field(default_factory=dict)
    # project -> endpoints composens created, as "node:ifname" ("host:ifname" for host-side ends)
    wired: dict[str, set[str]] = field(default_factory=dict)
    # Writes the record now; set by StateStore.locked(). Called before each change on disk, so a
    # crash leaves no entry or interface that the record does not claim.
    save: Callable[[], None] = field(default=lambda: None, repr=False, compare=False)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "entries": {name: asdict(rec) for name, rec in sorted(self.entries.items())},
                "wired": {project: sorted(eps) for project, eps in sorted(self.wired.items()) if eps},
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> State:
        data = json.loads(text)
        if data.get("version") != STATE_VERSION:
            return cls()
        return cls(
            entries={name: EntryRecord(**rec) for name, rec in data.get("entries", {}).items()},
            wired={project: set(eps) for project, eps in data.get("wired", {}).items()},
        )


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "state.json"

    def read(self) -> State:
        """Read the record without locking, for commands that only look."""
        try:
            return State.from_json(self.path.read_text())
        except FileNotFoundError:
            return State()
        except (ValueError, TypeError, KeyError):
            # A record this version cannot read claims nothing: nothing will be removed on its word.
            return State()

    @contextmanager
    def locked(self) -> Iterator[State]:
        """Hold the lock, yield the record, and save it when the block ends (also after an error)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except PermissionError as e:
            raise PermissionProblem(f"cannot write {self.directory}: composens needs root (run it with sudo)") from e
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.read()
            state.save = lambda: self._save(state)
            try:
                yield state
            finally:
                self._save(state)
        finally:
            os.close(lock)

    def _save(self, state: State) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(state.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
