"""veth pairs, addresses, routes and IPv6 sysctls through netlink: the only pyroute2 user.

Each namespace is reached through docker's mount of it (the same path the netns entry points
at), so wiring never depends on a pid. Netlink sockets are opened once per namespace, and
every change this run makes is logged so that a failure midway can be undone.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from composens.errors import ConflictError, WiringError
from composens.topology import (
    HOST,
    AddAddress,
    AddRoute,
    CreateVeth,
    EnableIPv6,
    Endpoint,
    SetUp,
    Step,
    Topology,
    ip_command,
)

CLONE_NEWNET = 0x40000000
IFA_F_NODAD = 0x02
IFF_UP = 0x1


def run_in_netns(ns_fd: int, work: Callable[[], None]) -> None:
    """Run `work` in a thread that entered the namespace; the process itself never moves."""
    failure: list[BaseException] = []

    def target() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(ns_fd, CLONE_NEWNET) != 0:
            failure.append(OSError(ctypes.get_errno(), "setns failed"))
            return
        try:
            work()
        except BaseException as e:  # re-raised in the caller's thread
            failure.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


@dataclass
class _Iface:
    index: int
    kind: str | None
    peer_index: int | None
    up: bool


class Namespaces:
    """Open netlink sockets, one per namespace, by node name (HOST: our own namespace)."""

    def __init__(self, paths: Mapping[str, str]) -> None:
        self.paths = dict(paths)
        self._sockets: dict[str, Any] = {}
        self._fds: dict[str, int] = {}
        self._links: dict[str, dict[str, _Iface]] = {}

    def fd(self, node: str) -> int:
        if node not in self._fds:
            path = "/proc/self/ns/net" if node == HOST else self.paths[node]
            self._fds[node] = os.open(path, os.O_RDONLY)
        return self._fds[node]

    def ipr(self, node: str) -> Any:
        if node not in self._sockets:
            from pyroute2 import IPRoute

            # flags=0: never let pyroute2 create a namespace that is not there.
            self._sockets[node] = IPRoute() if node == HOST else IPRoute(netns=self.paths[node], flags=0)
        return self._sockets[node]

    def links(self, node: str, *, refresh: bool = False) -> dict[str, _Iface]:
        if refresh or node not in self._links:
            found = {}
            for msg in self.ipr(node).get_links():
                found[msg.get("ifname")] = _Iface(
                    index=msg["index"],
                    kind=msg.get(("linkinfo", "kind")),
                    peer_index=msg.get("link"),
                    up=bool(msg["flags"] & IFF_UP),
                )
            self._links[node] = found
        return self._links[node]

    def index(self, ep: Endpoint) -> int:
        iface = self.links(ep.node).get(ep.ifname) or self.links(ep.node, refresh=True).get(ep.ifname)
        if iface is None:
            raise WiringError(f"interface {ep.ifname} vanished from {ep.node}")
        return iface.index

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        for fd in self._fds.values():
            os.close(fd)
        self._sockets.clear()
        self._fds.clear()


@contextmanager
def open_namespaces(paths: Mapping[str, str]) -> Iterator[Namespaces]:
    namespaces = Namespaces(paths)
    try:
        yield namespaces
    finally:
        namespaces.close()


def veth_pair_intact(ns: Namespaces, a: Endpoint, b: Endpoint) -> bool:
    """Tell whether a and b exist and are each other's veth peer."""
    end_a = ns.links(a.node).get(a.ifname)
    end_b = ns.links(b.node).get(b.ifname)
    return (
        end_a is not None
        and end_b is not None
        and end_a.kind == "veth"
        and end_b.kind == "veth"
        and end_a.peer_index == end_b.index
        and end_b.peer_index == end_a.index
    )


@dataclass
class WiringReport:
    done: list[str] = field(default_factory=list)  # the ip commands of what changed
    kept: int = 0
    created_endpoints: set[str] = field(default_factory=set)


class _Applier:
    def __init__(self, topology: Topology, ns: Namespaces, ours: set[str]) -> None:
        self.topology = topology
        self.ns = ns
        self.ours = ours
        self.report = WiringReport()
        self.undo: list[Callable[[], None]] = []
        self.fresh: set[Endpoint] = set()  # ends created by this run: nothing on them to check

    def apply(self, step: Step) -> None:
        match step:
            case CreateVeth():
                changed = self._veth(step)
            case EnableIPv6(node, ifname):
                changed = self._enable_ipv6(node, ifname)
            case AddAddress():
                changed = self._address(step)
            case SetUp(node, ifname):
                changed = self._up(node, ifname)
            case AddRoute():
                changed = self._route(step)
        if changed:
            self.report.done.append(ip_command(step, self.topology))
        else:
            self.report.kept += 1

    def _veth(self, step: CreateVeth) -> bool:
        a, b = step.a, step.b
        if veth_pair_intact(self.ns, a, b):
            return False
        for ep in (a, b):
            existing = self.ns.links(ep.node).get(ep.ifname)
            if existing is None:
                continue
            if str(ep) not in self.ours:
                raise ConflictError(
                    f"interface {ep.ifname} already exists in {self._where(ep.node)} and was not created "
                    "by composens; remove or rename it"
                )
            # Our own end whose peer died with a restarted namespace: recreate the pair.
            self.ns.ipr(ep.node).link("del", index=existing.index)
            self.ns.links(ep.node).pop(ep.ifname)
        mtu = {"mtu": step.mtu} if step.mtu else {}
        peer = {"ifname": b.ifname, "net_ns_fd": self.ns.fd(b.node), **mtu}
        self.ns.ipr(HOST).link("add", ifname=a.ifname, kind="veth", net_ns_fd=self.ns.fd(a.node), peer=peer, **mtu)
        self.undo.append(lambda: self._delete(a))
        self.fresh.update((a, b))
        self.report.created_endpoints.update((str(a), str(b)))
        return True

    def _delete(self, ep: Endpoint) -> None:
        index = self.ns.links(ep.node, refresh=True).get(ep.ifname)
        if index is not None:
            self.ns.ipr(ep.node).link("del", index=index.index)

    def _enable_ipv6(self, node: str, ifname: str) -> bool:
        # accept_dad=0 too: the link-local address would otherwise stay tentative for a second or
        # two, and neighbour discovery drops the lab's first packets meanwhile.
        wanted = {"disable_ipv6": "0", "accept_dad": "0"}
        changed: list[str] = []

        def write() -> None:
            for key, value in wanted.items():
                with open(f"/proc/sys/net/ipv6/conf/{ifname}/{key}", "r+") as f:
                    if f.read().strip() != value:
                        f.seek(0)
                        f.write(value)
                        changed.append(key)

        run_in_netns(self.ns.fd(node), write)
        return bool(changed)

    def _address(self, step: AddAddress) -> bool:
        ep = Endpoint(step.node, step.ifname)
        ipr = self.ns.ipr(step.node)
        index = self.ns.index(ep)
        address = ipaddress.ip_interface(step.address)
        if ep not in self.fresh:
            for msg in ipr.get_addr(index=index):
                if msg.get("address") == str(address.ip) and msg["prefixlen"] == address.network.prefixlen:
                    return False
        flags = IFA_F_NODAD if address.version == 6 else 0
        ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen, flags=flags)
        self.undo.append(
            lambda: ipr.addr("del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
        )
        return True

    def _up(self, node: str, ifname: str) -> bool:
        ep = Endpoint(node, ifname)
        iface = self.ns.links(node).get(ifname)
        if ep not in self.fresh and iface is not None and iface.up:
            return False
        self.ns.ipr(node).link("set", index=self.ns.index(ep), state="up")
        return True

    def _route(self, step: AddRoute) -> bool:
        route = step.route
        spec: dict[str, Any] = {"gateway": route.gateway}
        if route.destination != "default":
            spec["dst"] = route.destination
        else:
            spec["dst"] = "0.0.0.0/0" if route.version == 4 else "::/0"
        if route.dev:
            spec["oif"] = self.ns.index(Endpoint(step.node, route.dev))
        if route.metric is not None:
            spec["priority"] = route.metric
        ipr = self.ns.ipr(step.node)
        try:
            ipr.route("add", **spec)
        except Exception as e:
            if getattr(e, "code", None) == errno.EEXIST:
                return False
            raise
        self.undo.append(lambda: ipr.route("del", **spec))
        return True

    def _where(self, node: str) -> str:
        return "the host's namespace" if node == HOST else f"netns {self.topology.node(node).netns}"

    def rollback(self) -> None:
        for undo in reversed(self.undo):
            try:
                undo()
            except Exception:
                continue


def apply(steps: tuple[Step, ...], topology: Topology, paths: Mapping[str, str], ours: set[str]) -> WiringReport:
    """Bring the namespaces to the planned wiring; on failure undo this run's changes and raise."""
    with open_namespaces(paths) as ns:
        applier = _Applier(topology, ns, ours)
        for step in steps:
            try:
                applier.apply(step)
            except ConflictError:
                applier.rollback()
                raise
            except Exception as e:
                applier.rollback()
                reason = getattr(e, "strerror", None) or (e.args[1] if len(e.args) > 1 else e)
                raise WiringError(
                    f"`{ip_command(step, topology)}` failed: {reason}; undid what this run had created"
                ) from e
        return applier.report


@dataclass(frozen=True)
class InterfaceState:
    ifname: str
    present: bool
    up: bool


def interface_states(path: str, ifnames: tuple[str, ...]) -> list[InterfaceState]:
    """Say whether each interface exists in the namespace at `path` and is up."""
    with open_namespaces({"n": path}) as ns:
        try:
            links = ns.links("n")
        except OSError:
            links = {}
        return [InterfaceState(name, name in links, bool(links.get(name) and links[name].up)) for name in ifnames]


def remove_host_interfaces(ifnames: set[str]) -> list[str]:
    """Delete host-side ends composens created; return the names it removed."""
    removed = []
    with open_namespaces({}) as ns:
        links = ns.links(HOST)
        for name in sorted(ifnames):
            iface = links.get(name)
            if iface is not None and iface.kind == "veth":
                ns.ipr(HOST).link("del", index=iface.index)
                removed.append(name)
    return removed
