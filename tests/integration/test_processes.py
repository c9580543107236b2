"""Stopping a process tree from the host, on processes of the test's own (no engine needed)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from composens.system.kernel import processes

pytestmark = pytest.mark.integration


@pytest.fixture
def tree() -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """A shell running two sleeps, and the pids of all three."""
    shell = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 301 & wait"], start_new_session=True)
    held = [os.pidfd_open(shell.pid)]  # killed through these at the end: never a pid reused meanwhile
    try:
        children: list[int] = []
        deadline = time.monotonic() + 10
        while len(children) < 2 and time.monotonic() < deadline:
            children = [int(p) for p in Path(f"/proc/{shell.pid}/task/{shell.pid}/children").read_text().split()]
            time.sleep(0.01)
        held += [os.pidfd_open(pid) for pid in children]
        assert len(children) == 2
        yield shell, [shell.pid, *children]
    finally:
        for fd in held:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
        shell.wait(timeout=10)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_the_process_and_what_it_started_are_killed(tree: tuple[subprocess.Popen[bytes], list[int]]) -> None:
    shell, pids = tree
    assert processes.stop_tree(shell.pid, processes.pid_namespace(os.getpid())) == 3
    assert shell.wait(timeout=10) == -9
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(alive(pid) for pid in pids)


def test_a_process_in_another_pid_namespace_is_left_alone(tree: tuple[subprocess.Popen[bytes], list[int]]) -> None:
    shell, pids = tree
    assert processes.stop_tree(shell.pid, processes.pid_namespace(os.getpid()) + 1) == 0
    assert all(alive(pid) for pid in pids)
    assert Path(f"/proc/{shell.pid}/stat").read_text().rpartition(")")[2].split()[0] != "T"  # not even stopped
