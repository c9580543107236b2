"""The world as composens reads it: every reading a command's answer rests on goes through WORLD, by kind.

A reading of the engine, the kernel or the disk on the paths of `ps --netns`, `netns show` and `netns link` is
made with `WORLD.read(kind, *args)`: the reader registered for that kind (`@reader(kind)`, beside the adapter it
belongs to) is called with plain, JSON-able arguments, so the same reading can be made again from the kind and
the arguments alone. Every change composens makes to the world is said first with `WORLD.changed(what)`.

Alone, WORLD only reads. At the edge (the launcher), composens.replay installs an observer that is told of each
reading (what it returned, as the reader's view shows it, or how it failed) and of each change; nothing in the
system or lab layers knows of replaying. A reading cannot be recorded wrongly: the observer is told of exactly
what the registered reader returned, and the replay makes that reader's reading again.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
Args = tuple[Any, ...]

# Where each kind's reader lives: a replay imports only the adapters its recording needs.
READER_MODULES = {
    "config": "composens.system.docker.compose",
    "containers": "composens.system.docker.compose",
    "inspect": "composens.system.docker.compose",
    "record": "composens.system.record.store",
    "modes": "composens.system.record.store",
    "entry": "composens.system.kernel.netns",
    "mark": "composens.system.kernel.netns",
    "inode": "composens.system.kernel.netns",
    "cookie": "composens.system.kernel.netns",
    "writable": "composens.system.kernel.netns",
    "namespace": "composens.system.kernel.reading",
    "namespace-dumps": "composens.system.kernel.reading",
    "ip-namespace": "composens.system.kernel.reading",
    "sysctls": "composens.system.kernel.reading",
    "qdisc-kinds": "composens.system.kernel.reading",
    "ready": "composens.system.kernel.ready",
    "process-start": "composens.system.kernel.processes",
    "exec-results": "composens.system.run.execs",
    "folder": "composens.system.world",
    "machine-id": "composens.system.world",
}


class Observer(Protocol):
    """Told of every reading and change (composens.replay records a run with one)."""

    def read(self, kind: str, args: Args, value: object) -> None: ...

    def failed(self, kind: str, args: Args, error: Exception) -> None: ...

    def changed(self, what: str) -> None: ...

    def refuse(self, why: str) -> None: ...


@dataclass(frozen=True)
class Reader:
    read: Callable[..., Any]
    view: Callable[[Any], object] | None = None  # what of the value the observer is told (all of it when None)

    def shown(self, value: Any) -> object:
        return self.view(value) if self.view is not None else value


_READERS: dict[str, Reader] = {}


def reader(kind: str, *, view: Callable[[Any], object] | None = None) -> Callable[[F], F]:
    """Register the function as the reader of `kind` (listed in READER_MODULES)."""
    assert kind in READER_MODULES, f"a reader of an unlisted kind: {kind}"

    def register(function: F) -> F:
        _READERS[kind] = Reader(function, view)
        return function

    return register


def reader_of(kind: str) -> Reader:
    """The reader of `kind`, importing the adapter it lives in; KeyError for a kind no reader makes."""
    if kind not in _READERS:
        importlib.import_module(READER_MODULES[kind])
    return _READERS[kind]


class World:
    """The one object through which readings are made and changes said; its observer is set at the edge."""

    def __init__(self) -> None:
        self.observer: Observer | None = None
        self._busy = 0  # readings under way, in any thread (composens.replay tells its own I/O from stray I/O)
        self._guard = threading.Lock()

    @property
    def reading(self) -> bool:
        return self._busy > 0

    def read(self, kind: str, *args: Any) -> Any:
        """Make the reading `kind` with `args`; tell the observer what it found, or how it failed."""
        found = reader_of(kind)
        with self._guard:
            self._busy += 1
        try:
            value = found.read(*args)
        except Exception as e:
            if self.observer is not None:
                self.observer.failed(kind, args, e)
            raise
        finally:
            with self._guard:
                self._busy -= 1
        if self.observer is not None:
            self.observer.read(kind, args, found.shown(value))
        return value

    @contextmanager
    def derived(self) -> Iterator[None]:
        """I/O whose outcome an observed reading already decides (the config cache, named by the config's key):
        neither a reading nor a change of the lab."""
        with self._guard:
            self._busy += 1
        try:
            yield
        finally:
            with self._guard:
                self._busy -= 1

    def witness(self, kind: str, *args: Any) -> None:
        """Make the reading only for the observer (nothing without one): what the command decides from it is read
        another way, and a replay must see it unchanged too."""
        if self.observer is not None:
            self.read(kind, *args)

    def noted(self, kind: str, args: Args, value: Callable[[], object]) -> None:
        """Tell the observer of a reading made as part of another, whose value is at hand (`value` works it out,
        only for an observer): the reader of `kind` makes it again from `args` alone."""
        if self.observer is not None:
            self.observer.read(kind, args, reader_of(kind).shown(value()))

    def changed(self, what: str) -> None:
        """Say the run is about to change the world (`what`)."""
        if self.observer is not None:
            self.observer.changed(what)

    def refuse(self, why: str) -> None:
        """Say the run read something no reader can make again (`why`): its answer stands for this run only."""
        if self.observer is not None:
            self.observer.refuse(why)


WORLD = World()


@reader("folder")
def folder(path: str) -> object:
    """A folder's files and their bytes (None: no such folder)."""
    from pathlib import Path

    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except FileNotFoundError:
        return None
    found = []
    for entry in entries:
        try:
            if entry.is_symlink():  # where it points, and whether that is there (a gate's flag is asked so)
                content: object = ("symlink", os.readlink(entry.path), os.path.exists(entry.path))
            elif entry.is_file():
                content = Path(entry.path).read_bytes()
            else:
                content = entry.is_dir()
        except FileNotFoundError:
            continue
        found.append((entry.name, content))
    return found


MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")  # systemd's, and D-Bus's where systemd has none


@reader("machine-id")
def machine_id() -> str | None:
    """This machine's id (machine-id(5): set once, kept across reboots, unique per installation); None when the
    machine has none yet (no file, empty, or systemd's `uninitialized` of a first boot)."""
    for path in MACHINE_ID_FILES:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                text = f.read(64).strip()
        except OSError:
            continue
        if text and text != "uninitialized":
            return text
    return None
