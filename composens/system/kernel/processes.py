"""Stop a process and everything it started, only while each is still in one pid namespace.

A check's command that outlives its timeout is stopped from the host: the engine's API has no call
that ends an exec, and killing the docker client leaves the command running in the container. Each
process is opened as a pidfd before it is checked, and signalled through it, so a pid the kernel
reused meanwhile for another process is never signalled. The tree is first frozen with SIGSTOP (a
stopped process cannot fork), read again until no process in it has a child not yet held, then
killed: nothing it started escapes by being orphaned midway.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from composens.system.world import WORLD, reader

PROC = Path("/proc")
FREEZE_WAIT = 1.0  # s for the held processes to show as stopped, per round


def pid_namespace(pid: int, proc: Path = PROC) -> int:
    """The inode of a process's pid namespace."""
    return (proc / str(pid) / "ns" / "pid").stat().st_ino


def stop_tree(root: int, namespace: int, proc: Path = PROC) -> int:
    """Kill `root` and its descendants that are in the pid namespace `namespace` (an inode); return how many."""
    held: dict[int, int] = {}  # pid: pidfd
    try:
        _hold(root, namespace, held, proc)
        while held:
            _wait_stopped(held, proc)
            new = [pid for pid, parent in _parents(proc) if parent in held and pid not in held]
            if not new:
                break
            for pid in new:
                _hold(pid, namespace, held, proc)
        for fd in held.values():
            _signal(fd, signal.SIGKILL)
        return len(held)
    finally:
        for fd in held.values():
            os.close(fd)


def _hold(pid: int, namespace: int, held: dict[int, int], proc: Path) -> None:
    """Open the process, check that it is in the namespace (after opening: the pidfd is of that one), stop it."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        same = pid_namespace(pid, proc) == namespace
    except (FileNotFoundError, ProcessLookupError):
        same = False  # gone meanwhile
    if same and _signal(fd, signal.SIGSTOP):
        held[pid] = fd
    else:
        os.close(fd)


def _signal(fd: int, sig: int) -> bool:
    try:
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        return False  # it ended (or was reaped) already
    return True


def _wait_stopped(held: dict[int, int], proc: Path) -> None:
    """Wait until each held process is stopped or dead: then none of them can fork any more."""
    deadline = time.monotonic() + FREEZE_WAIT
    while time.monotonic() < deadline:
        if all(_state(pid, proc) in ("T", "t", "Z", "X", None) for pid in held):
            return
        time.sleep(0.001)


def _state(pid: int, proc: Path) -> str | None:
    stat = _stat(pid, proc)
    return stat[0] if stat else None


def _stat(pid: int, proc: Path) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses): the state is
    the first (field 3 of proc(5))."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None  # gone (or never there)
    return text.rpartition(")")[2].split()


def started_at(pid: int) -> int | None:
    """The start time of a process, in clock ticks since boot (field 22 of its stat), as /proc/1/stat says in
    the container of which it is the first process; None when there is no such process."""
    found: int | None = WORLD.read("process-start", pid)
    return found


@reader("process-start")
def _started_at(pid: int) -> int | None:
    stat = _stat(pid, PROC)
    return int(stat[19]) if stat and len(stat) > 19 and stat[19].isdigit() else None


def _parents(proc: Path) -> list[tuple[int, int]]:
    """Every process's (pid, parent pid)."""
    found = []
    for entry in os.scandir(proc):
        if entry.name.isdigit() and (stat := _stat(int(entry.name), proc)) and len(stat) > 1:
            found.append((int(entry.name), int(stat[1])))
    return found
