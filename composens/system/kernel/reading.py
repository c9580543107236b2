"""Reading a namespace: its links, addresses, routes (and qdiscs), from a thread that entered it.

Split from wiring.py so that a command which only reads (and composens.replay, which checks that
nothing a command read has changed) need not import the planning and changing machinery. Over
netlink (netlink.py: no process, the same answer as `ip -details -json`), or with one `ip -json
-batch` where no netlink socket can be made there; qdisc details from `tc -json` where a link's root
qdisc is not the kernel's default.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from composens.model.errors import EngineError, WiringError
from composens.system.kernel import netlink
from composens.system.kernel.entering import CLONE_NEWNET, inside
from composens.system.world import WORLD, reader

if TYPE_CHECKING:
    from composens.plan.live import LiveNamespace

PARALLEL = 8  # ip processes at once: on two cores 8 read and wired a LAN of 100 in 0.37 s, 4 in 0.40 s, 16 in 0.50 s
READ_LINES = "link show\naddr show\nroute show table all\n"
DUMP_INTERRUPTED = "Dump was interrupted"  # what ip warns (lib/libnetlink.c) when the kernel flags NLM_F_DUMP_INTR
# The least each qdisc composens sets takes, to learn whether the kernel has it (tbf needs all three).
PROBE_QDISCS = {"netem": ("netem",), "tbf": ("tbf", "rate", "1mbit", "burst", "16384", "latency", "200ms")}

T = TypeVar("T")
R = TypeVar("R")


def missing_qdisc_kinds(kinds: Iterable[str]) -> set[str]:
    """The qdisc kinds this kernel cannot set: each tried on the loopback of a network namespace made for it.

    The namespace belongs to a thread unshared for the purpose (tc, its child, starts in it) and goes when
    both end: nothing outside it changes, except that the kernel may load the qdisc's module, as wiring
    would. It costs 2.7 ms for a kind and 4.8 ms for both (medians of 50 here). When the namespace cannot
    be made, nothing is said to be missing: the wiring's own error then tells.
    """
    return set(WORLD.read("qdisc-kinds", sorted(set(kinds))))


@reader("qdisc-kinds", view=sorted)
def _missing_qdisc_kinds(wanted: list[str]) -> set[str]:
    missing: set[str] = set()

    def probe() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            return
        for kind in wanted:
            done = _ip(None, "qdisc", "replace", "dev", "lo", "root", *PROBE_QDISCS.get(kind, (kind,)), tool="tc")
            if done.returncode != 0 and "qdisc kind is unknown" in done.stderr:
                missing.add(kind)

    if wanted:
        thread = threading.Thread(target=probe)
        thread.start()
        thread.join()
    return missing


def in_parallel(work: Callable[[T], R], items: list[T]) -> list[R]:
    """Run `work` on each item in a few threads (each mostly waits for an ip process); keep the order."""
    if len(items) < 2:
        return [work(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor  # here: its import costs 12 ms, and a replay needs none

    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(items))) as pool:
        return list(pool.map(work, items))


@dataclass(frozen=True)
class Target:
    """A namespace composens may change: how `ip -n` names it, where to enter it, and which one it is."""

    netns: str | None  # the /var/run/netns entry (None: the host's namespace)
    path: str  # what to open to enter it (docker's mount, a hub's entry, /proc/self/ns/net)
    identity: str  # which namespace it is, for the record: a new one forgets what the old one had
    linked: bool = True  # the entry reaches it now (checked by the caller), so `ip -n` may name it


HOST_TARGET = Target(None, "/proc/self/ns/net", "host")


def _ip(netns: str | None, *args: str, stdin: str | None = None, tool: str = "ip") -> subprocess.CompletedProcess[str]:
    command = [tool, *(["-n", netns] if netns else []), *args]
    try:
        return subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise EngineError(f"the {tool} command is missing: install iproute2") from e


def read_namespace(netns: str | None, *, qdiscs: bool = False) -> LiveNamespace:
    """Read a namespace's links, addresses and routes with one `ip -json -batch` (and its qdiscs with `tc`)."""
    found: LiveNamespace = WORLD.read("ip-namespace", netns, qdiscs)
    return found


@reader("ip-namespace")
def _read_namespace(netns: str | None, qdiscs: bool) -> LiveNamespace:
    return _parse_read(_read_commands(netns, qdiscs=qdiscs), netns or "the host")


def _read_commands(netns: str | None, *, qdiscs: bool) -> list[subprocess.CompletedProcess[str]]:
    from composens.model.conditions import DEFAULT_KINDS

    done = [_ip(netns, "-details", "-json", "-batch", "-", stdin=READ_LINES)]
    # ip names each link's root qdisc: only a namespace where one is not the kernel's default needs tc's details.
    if qdiscs and any(item.get("qdisc") not in DEFAULT_KINDS for item in _first_document(done[0].stdout)):
        done.append(_ip(netns, "-json", "qdisc", "show", tool="tc"))
    return done


def _first_document(text: str) -> list[dict[str, Any]]:
    from composens.plan import live

    try:
        found: Any = next(live.json_documents(text), [])
    except ValueError:
        return []
    return found if isinstance(found, list) else []


def _parse_read(done: list[subprocess.CompletedProcess[str]], what: str) -> LiveNamespace:
    from composens.model.conditions import parse_qdiscs
    from composens.plan import live

    for answer in done:
        # iproute2 6.1 prints an interrupted dump and only warns: an inconsistent reading is no reading.
        if answer.returncode != 0 or DUMP_INTERRUPTED in answer.stderr:
            raise WiringError(f"cannot read the interfaces of {what}: {answer.stderr.strip()}")
    documents = list(live.json_documents(done[0].stdout))
    if len(documents) != 3:
        raise WiringError(f"cannot read the interfaces of {what}: ip printed {len(documents)} answers")
    found = live.parse_namespace(*documents)
    if len(done) > 1:
        found = replace(found, qdiscs=parse_qdiscs(json.loads(done[1].stdout or "[]")))
    return found


def read_target(target: Target, *, qdiscs: bool = False) -> LiveNamespace:
    """Read a namespace through its path, whether or not an entry names it: over netlink (see netlink.py),
    or with `ip -json` where a netlink socket cannot be made there."""
    args = (target.netns, target.path, target.identity, target.linked, qdiscs)
    found: LiveNamespace
    found, dumps = WORLD.read("namespace", *args)
    if dumps is not None:  # read from these alone: the same dumps, the same namespace (a replay checks those first)
        WORLD.noted("namespace-dumps", args, lambda: netlink.dumps_digest(dumps))
    return found


@reader("namespace", view=lambda read: read[0])
def _read_target_again(
    netns: str | None, path: str, identity: str, linked: bool, qdiscs: bool
) -> tuple[LiveNamespace, netlink.Dumps | None]:
    return _read_target(Target(netns, path, identity, linked), qdiscs=qdiscs)


@reader("namespace-dumps")
def _dumps_digest(netns: str | None, path: str, identity: str, linked: bool, qdiscs: bool) -> str | None:
    """The digest of what the namespace dumps, unparsed: equal dumps, an equal namespace."""
    return netlink.read_dumps_digests([path])[0]


def _read_target(target: Target, *, qdiscs: bool) -> tuple[LiveNamespace, netlink.Dumps | None]:
    """The namespace, and the netlink dumps it was read from when nothing else was asked."""
    try:
        fd = os.open(target.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise WiringError(f"cannot read the interfaces of {target.netns or target.path}: {e.strerror or e}") from e
    try:
        read = netlink.read_fd(fd, own=target.path == HOST_TARGET.path)
    except OSError:
        read = None  # no netlink there (or not for us): ip reads it as before
    finally:
        os.close(fd)
    if read is None:
        return _read_target_by_ip(target, qdiscs=qdiscs), None
    found = read.namespace
    from composens.model.conditions import DEFAULT_KINDS

    # Only a namespace where some link's root qdisc is not the kernel's default needs tc's details.
    if qdiscs and any(read.root_qdiscs.get(name) not in DEFAULT_KINDS for name in found.links):
        done: list[subprocess.CompletedProcess[str]] = []

        def show() -> None:
            done.append(_ip(None, "-json", "qdisc", "show", tool="tc"))

        if target.path == HOST_TARGET.path or target.linked:
            done.append(_ip(target.netns, "-json", "qdisc", "show", tool="tc"))
        else:
            inside(target.path, show, f"cannot read the qdiscs of {target.netns}")
        if done[0].returncode != 0:
            raise WiringError(f"cannot read the qdiscs of {target.netns or 'the host'}: {done[0].stderr.strip()}")
        from composens.model.conditions import parse_qdiscs

        return replace(found, qdiscs=parse_qdiscs(json.loads(done[0].stdout or "[]"))), None
    return found, read.dumps


def _read_target_by_ip(target: Target, *, qdiscs: bool) -> LiveNamespace:
    """Read a namespace with `ip -json -batch`: by its entry where that reaches it, else from a thread in it
    (a child process starts in the namespace of the thread that starts it)."""
    if target.path == HOST_TARGET.path or target.linked:
        return read_namespace(target.netns, qdiscs=qdiscs)
    done: list[subprocess.CompletedProcess[str]] = []

    def read() -> None:
        done.extend(_read_commands(None, qdiscs=qdiscs))

    inside(target.path, read, f"cannot read the interfaces of {target.netns}")
    return _parse_read(done, target.netns or target.path)


def read_sysctls(path: str, files: tuple[str, ...], failing: str) -> tuple[str, ...]:
    """The values of /proc/sys files as the namespace at `path` has them."""
    found: tuple[str, ...] = WORLD.read("sysctls", path, list(files), failing)
    return found


@reader("sysctls")
def _read_sysctls(path: str, files: list[str], failing: str) -> tuple[str, ...]:
    found: list[str] = []

    def work() -> None:
        for file in files:
            with open(file) as f:
                found.append(f.read().strip())

    inside(path, work, failing)
    return tuple(found)


def read_all(
    targets: Mapping[str, Target], *, qdiscs: bool = False, vanished_ok: bool = False
) -> dict[str, LiveNamespace]:
    """Read every target namespace, side by side. With vanished_ok, one that cannot be read (a container that
    stopped or restarted meanwhile took it away) is left out rather than failing the whole read."""

    def read(target: Target) -> LiveNamespace | None:
        try:
            return read_target(target, qdiscs=qdiscs)
        except WiringError:
            if not vanished_ok:
                raise
            return None

    nodes = list(targets)
    found = in_parallel(read, [targets[n] for n in nodes])
    return {node: ns for node, ns in zip(nodes, found, strict=True) if ns is not None}
