"""Wait, through netlink and without sleeping, until the interfaces a run wired are usable (plan/ready.py says what
that is: carrier seen by the kernel and, where IPv6 is on, by IPv6).

One thread enters each awaited namespace in turn and makes two NETLINK_ROUTE sockets there: first one subscribed to
the events that can make an interface ready (link, route, IPv6 link and address events), then one that asks. Each
namespace is read once; one that is not ready is read again whenever its events socket says something changed there,
until every awaited interface is ready or the limit passes. Subscribing before the first reading means no change
after it goes unseen; nothing polls on a timer.

The kernel handles carrier changes in a work queue that runs at most once a second, a hundred devices at a time
(linkwatch): left to it, a ring was usable 0.74 to 0.86 s after `up -d` had returned (bench/README.md). But asked
for one link by name (RTM_GETLINK, not a dump), the kernel handles that link's queued change first (rtnl_getlink
calls linkwatch_sync_dev): so before each reading, each awaited interface not yet ready is asked for by name, and
most of the wait goes. Where a kernel does not do that, the events still end the wait. The limit is LIMIT seconds
and one more for every hundred interfaces awaited; what is still not ready then is reported, never taken as ready.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import select
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from composens.plan.ready import not_ready
from composens.system.kernel import netlink
from composens.system.kernel.entering import in_each_netns
from composens.system.world import WORLD, reader

if TYPE_CHECKING:
    from composens.model.topology import Endpoint

LIMIT = 10.0  # s: ten times what linkwatch takes to handle a hundred devices on a quiet machine
PER_HUNDRED = 1.0  # s more for each hundred interfaces: linkwatch handles a hundred at a time, a second apart


def limit_for(interfaces: int) -> float:
    """How long to wait at most for `interfaces` interfaces to become ready."""
    return LIMIT + PER_HUNDRED * math.ceil(interfaces / 100)


def wait_ready(
    awaiting: Mapping[str, tuple[str, tuple[str, ...]]], limit: float, *, sync: bool = True
) -> dict[Endpoint, str]:
    """Wait until each awaited interface (by node: the path of its namespace, the interface names) is usable, for
    `limit` seconds at most; return those that are not by then, and why. sync=False leaves the kernel its own pace
    (bench/run.py measures that pace)."""
    asked = [[node, path, list(names)] for node, (path, names) in sorted(awaiting.items()) if names]
    if not asked:
        return {}
    # What the command says rests on what is ready when the wait ends, and that is the reading told: made again
    # (composens.replay), it is read at once, without waiting.
    with WORLD.derived():
        found = _wait_ready(asked, limit, sync=sync)
    WORLD.noted("ready", (asked,), lambda: found)
    from composens.model.topology import Endpoint  # here: a replay's reading needs no topology

    return {Endpoint(node, ifname): why for node, ifname, why in found}


@reader("ready")
def _ready_now(asked: list[list[Any]]) -> list[tuple[str, str, str]]:
    """What of the awaited interfaces is not ready now: no waiting, and the kernel left to its pace (a change still
    queued reads as not ready: the command is then worked out, and waits)."""
    return _wait_ready(asked, 0, sync=False)


def _wait_ready(asked: list[list[Any]], limit: float, *, sync: bool = True) -> list[tuple[str, str, str]]:
    deadline = time.monotonic() + limit
    names = {str(node): tuple(ifnames) for node, _, ifnames in asked}
    fds: list[int] = []
    unreadable: dict[str, str] = {}
    for node, path, _ in asked:
        try:
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as e:
            fds.append(-1)  # setns fails on it: the namespace is reported unreadable below
            unreadable[node] = f"its namespace cannot be opened: {e.strerror or e}"
    try:
        made = in_each_netns(fds, functools.partial(_sockets, events=limit > 0))
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)
    watched: dict[str, tuple[socket.socket | None, socket.socket]] = {}
    for (node, _, _), sockets in zip(asked, made, strict=True):
        if isinstance(sockets, BaseException):
            unreadable.setdefault(node, f"its namespace cannot be read: {sockets.strerror or sockets}")
        else:
            watched[node] = sockets
    try:
        return _until_ready(names, watched, unreadable, deadline, sync=sync)
    finally:
        for events, dumps in watched.values():
            if events is not None:
                events.close()
            dumps.close()


def _sockets(*, events: bool) -> tuple[socket.socket | None, socket.socket]:
    """This namespace's sockets: one told of its events (only to wait; made first, so that whatever changes after the
    first reading is told on it) and one to ask with."""
    told = netlink.events_socket() if events else None
    try:
        return told, netlink._new_socket()
    except OSError:
        if told is not None:
            told.close()
        raise


def _until_ready(
    names: Mapping[str, tuple[str, ...]],
    watched: Mapping[str, tuple[socket.socket | None, socket.socket]],
    unreadable: dict[str, str],
    deadline: float,
    *,
    sync: bool,
) -> list[tuple[str, str, str]]:
    """Read each watched namespace, then again on each of its events, until all are ready or the deadline passes."""
    unready: dict[str, dict[str, str]] = {}  # node -> its interfaces not ready, and why

    def judge(node: str) -> bool:
        """Read the namespace and note what is not ready in it; tell whether all of it is."""
        dumps = watched[node][1]
        if sync:
            waiting = list(unready[node]) if node in unready else names[node]
            for ifname in waiting:
                with contextlib.suppress(OSError):  # not there (ENODEV): the dump below says so
                    netlink.sync_link(dumps, ifname)  # the kernel handles its queued carrier change now
        try:
            seen = netlink.read_carrier(dumps)
        except OSError as e:  # a dump that failed (netlink.NetlinkError): read again on the next event
            unready[node] = dict.fromkeys(names[node], f"its namespace cannot be read: {e}")
            return False
        unready[node] = not_ready(names[node], seen)
        return not unready[node]

    poller = select.poll()
    by_fd: dict[int, str] = {}
    by_fd_events: dict[int, socket.socket] = {}
    for node, (events, _) in watched.items():
        if not judge(node) and events is not None:
            poller.register(events, select.POLLIN)
            by_fd[events.fileno()] = node
            by_fd_events[events.fileno()] = events
    while by_fd:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ in poller.poll(max(1, math.ceil(left * 1000))):
            node = by_fd[fd]
            _drain(by_fd_events[fd])
            if judge(node):
                poller.unregister(fd)
                del by_fd[fd]
    found = [(node, ifname, why) for node, ends in unready.items() for ifname, why in ends.items()]
    found += [(node, ifname, why) for node, why in unreadable.items() for ifname in names[node]]
    return sorted(found)


def _drain(events: socket.socket) -> None:
    """Take every event the socket holds: any of them is reason enough to read the namespace again."""
    while True:
        try:
            events.recv(netlink.RECEIVE)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.ENOBUFS:  # ENOBUFS: events were lost, which the reading that follows makes up for
                return
