"""Work inside another network namespace from a thread that entered it: the process itself never moves.

A socket stays in the namespace it was made in, so a thread that entered a namespace can make netlink or packet
sockets there and hand them to any other thread.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from composens.model.errors import WiringError

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def run_in_netns(ns_fd: int, work: Callable[[], None]) -> None:
    """Run `work` in a thread that entered the namespace; the process itself never moves."""
    (outcome,) = in_each_netns([ns_fd], work)
    if isinstance(outcome, BaseException):
        raise outcome  # in the caller's thread


def in_each_netns(ns_fds: list[int], work: Callable[[], T]) -> list[T | OSError]:
    """Run `work` once in each namespace, from one thread that enters them in turn: one thread, not one each, and
    what `work` makes there (a socket) stays bound to the namespace it was made in. An OSError is that one's answer."""
    found: list[T | OSError] = []

    def target() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for fd in ns_fds:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                found.append(OSError(ctypes.get_errno(), "setns failed"))
                continue
            try:
                found.append(work())
            except Exception as e:
                found.append(e if isinstance(e, OSError) else OSError(str(e)))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return found


def inside(path: str, work: Callable[[], None], failing: str) -> None:
    """Run `work` in the namespace at `path` (see run_in_netns); an OSError becomes `failing: why`."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise WiringError(f"{failing}: {e.strerror or e}") from e
    try:
        run_in_netns(fd, work)
    except OSError as e:
        raise WiringError(f"{failing}: {e.strerror or e}") from e
    finally:
        os.close(fd)
