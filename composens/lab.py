"""The core: bring a project's netns entries and wiring to what its compose file declares.

Lab joins the adapters (compose, netns, wiring, state) and returns data for render.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from composens import netns, topology, wiring
from composens.compose import Compose, Container
from composens.errors import ComposeFailed, ConfigError, ConflictError
from composens.netns import Action, EntryChange, NetnsDirectory, Status, Wanted
from composens.state import State, StateStore
from composens.topology import HOST, Topology

STATE_DIR = Path("/run/composens")


@dataclass(frozen=True)
class Paths:
    netns_dir: Path = netns.NETNS_DIR
    state_dir: Path = STATE_DIR


@dataclass(frozen=True)
class InterfaceRow:
    ifname: str
    present: bool
    up: bool


@dataclass(frozen=True)
class NetnsRow:
    service: str
    container: str
    pid: int | None
    netns: str
    path: str
    target: str | None
    status: Status
    interfaces: tuple[InterfaceRow, ...] = ()


@dataclass
class LinkReport:
    entries: list[EntryChange] = field(default_factory=list)
    wired: list[str] = field(default_factory=list)  # ip commands of what wiring changed
    kept: int = 0
    unwired: list[str] = field(default_factory=list)  # links not wired, and why

    @property
    def conflicts(self) -> list[EntryChange]:
        return [c for c in self.entries if c.action is Action.CONFLICT]


class Lab:
    def __init__(self, compose: Compose, paths: Paths | None = None) -> None:
        self.compose = compose
        self.paths = paths or Paths()
        self.directory = NetnsDirectory(self.paths.netns_dir)
        self.store = StateStore(self.paths.state_dir)

    def load(self) -> Topology:
        """Read and validate the project's configuration."""
        return topology.parse(self.compose.config(), source=self.compose.options.source_label())

    @staticmethod
    def select(topo: Topology, services: Iterable[str]) -> set[str]:
        """Return the chosen services (all when none are named); unknown names are an error."""
        chosen = set(services)
        unknown = sorted(chosen - set(topo.services))
        if unknown:
            raise ConfigError(f"{topo.source}: no such service: {', '.join(unknown)}")
        return chosen or set(topo.services)

    def precheck(self, topo: Topology, services: set[str]) -> None:
        """Refuse before anything runs when an entry name is taken by something not of this project."""
        state = self.store.read()
        for name in sorted(services):
            node = topo.services[name]
            if node.replicas > 1 or (not node.has_own_netns and node.network_mode == "host"):
                continue
            assert node.netns is not None
            entry = self.directory.probe(node.netns)
            record = state.entries.get(node.netns)
            ours = record is not None and entry.symlink_target == record.target
            if entry.exists and not ours:
                raise ConflictError(
                    f"{self.directory.path(node.netns)} exists and was not made by composens; remove it "
                    f"yourself or give service {name} another name with x-composens.netns or netns_prefix"
                )
            if ours and record is not None and record.project != topo.project:
                raise ConflictError(
                    f"netns name {node.netns} of service {name} is in use by project {record.project}; "
                    "set a top-level x-composens.netns_prefix in one of the projects"
                )

    # ------------------------------------------------------------------ reading

    def _containers(self, topo: Topology) -> tuple[list[Container], dict[str, Container]]:
        containers = self.compose.containers(topo.project)
        by_id = {c.id: c for c in containers}
        outside = {c.netns_owner for c in containers if c.netns_owner and c.netns_owner not in by_id}
        by_id.update({c.id: c for c in self.compose.inspect(sorted(o for o in outside if o))})
        return containers, by_id

    @staticmethod
    def _names(topo: Topology, containers: list[Container]) -> dict[str, str]:
        """Map container id to entry name; two containers wanting one name is an error."""
        counts = Counter(c.service for c in containers if c.service in topo.services)
        names: dict[str, str] = {}
        for c in sorted(containers, key=lambda c: (c.service, c.number)):
            if c.service not in topo.services:
                continue  # an orphan of a service no longer in the file
            names[c.id] = topo.netns_name(c.service, c.number, scaled=counts[c.service] > 1)
        clashes = [n for n, k in Counter(names.values()).items() if k > 1]
        if clashes:
            raise ConfigError(
                f"{topo.source}: more than one container would get the netns name {clashes[0]!r}; "
                "rename a service or set x-composens.netns"
            )
        return names

    def status(self, topo: Topology, services: set[str]) -> list[NetnsRow]:
        """Describe every container of the chosen services and the entry it has or should have."""
        containers, by_id = self._containers(topo)
        names = self._names(topo, containers)
        state = self.store.read()
        rows = []
        linked: dict[str, str] = {}  # container name -> the namespace path its interfaces are read from
        for c in sorted(containers, key=lambda c: (c.service, c.number)):
            if c.id not in names or c.service not in services:
                continue
            name = names[c.id]
            target, current, _ = netns.resolve_target(c, by_id)
            if current is None and c.running and c.network_mode != "host":
                current = netns.namespace_inode(f"/proc/{c.pid}/ns/net")
            entry = self.directory.probe(name)
            status = netns.classify(topo.project, entry, state.entries.get(name), c, current)
            if status is Status.LINKED and target and topo.interfaces_of(c.service):
                linked[c.name] = target
            rows.append(
                NetnsRow(
                    c.service,
                    c.name,
                    c.pid if c.running else None,
                    name,
                    str(self.directory.path(name)),
                    entry.symlink_target,
                    status,
                )
            )
        if topo.links:
            rows = self._with_interfaces(topo, rows, linked)
        known = set(names.values())
        for name, record in sorted(state.entries.items()):
            if record.project == topo.project and record.service in services and name not in known:
                entry = self.directory.probe(name)
                status = netns.classify(topo.project, entry, record, None, None)
                rows.append(
                    NetnsRow(
                        record.service, "", None, name, str(self.directory.path(name)), entry.symlink_target, status
                    )
                )
        return rows

    @staticmethod
    def _with_interfaces(topo: Topology, rows: list[NetnsRow], linked: dict[str, str]) -> list[NetnsRow]:
        """Add each row's declared interfaces, read from every linked namespace in one go."""
        states = {}
        if linked:
            declared = {r.container: topo.interfaces_of(r.service) for r in rows if r.container in linked}
            states = wiring.interface_states(linked, declared)
        return [
            replace(
                r,
                interfaces=tuple(InterfaceRow(i.ifname, i.present, i.up) for i in states[r.container])
                if r.container in states
                else tuple(InterfaceRow(name, False, False) for name in topo.interfaces_of(r.service)),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ changing

    def link(self, topo: Topology, services: set[str], *, wire: bool = True) -> LinkReport:
        """Link every running container of `services` and wire the declared links that can be."""
        containers, by_id = self._containers(topo)
        names = self._names(topo, containers)
        wanted = []
        for c in containers:
            if c.id in names and c.service in services and c.running and c.network_mode != "host":
                target, inode, why = netns.resolve_target(c, by_id)
                wanted.append(Wanted(names[c.id], c, target, inode, why))
        report = LinkReport()
        self.directory.ensure_root()
        with self.store.locked() as state:
            report.entries = netns.link(self.directory, state, topo.project, wanted, services)
            if wire and topo.links:
                self._wire(topo, state, containers, by_id, report)
        return report

    def _wire(
        self, topo: Topology, state: State, containers: list[Container], by_id: dict[str, Container], report: LinkReport
    ) -> None:
        # Only services whose entry is ours and reaches their namespace now: the batch lines name entries.
        paths: dict[str, str] = {}
        names = self._names(topo, containers)
        for c in containers:
            if c.service not in topo.wired_services or c.id not in names:
                continue
            target, inode, _ = netns.resolve_target(c, by_id)
            record = state.entries.get(names[c.id])
            entry = self.directory.probe(names[c.id])
            owned = record is not None and record.project == topo.project and record.target == target
            if target and owned and entry.symlink_target == target and entry.reaches == inode:
                paths[c.service] = target
        available = frozenset(paths)
        for link in topo.links:
            missing = [ep.node for ep in (link.a, link.b) if ep.node != HOST and ep.node not in available]
            if missing:
                report.unwired.append(f"{link.a} <-> {link.b}: {', '.join(missing)} not running")
        steps = topology.plan(topo, available=available)
        ours = state.wired.setdefault(topo.project, set())
        result = wiring.apply(steps, topo, paths, ours)
        ours |= result.created_endpoints
        report.wired, report.kept = result.done, result.kept

    def unlink(self, topo: Topology, services: set[str] | None = None) -> list[EntryChange]:
        with self.store.locked() as state:
            return netns.unlink(self.directory, state, topo.project, services)

    def unwire(self, topo: Topology) -> list[str]:
        """Remove the host-side ends composens created for the project; they outlive its containers."""
        with self.store.locked() as state:
            ours = state.wired.pop(topo.project, set())
            host_ends = {ep.split(":", 1)[1] for ep in ours if ep.startswith(f"{HOST}:")}
            if not host_ends:
                return []
            return wiring.remove_host_interfaces(host_ends)

    def run_attached(
        self, topo: Topology, args: list[str], services: set[str], report: Callable[[LinkReport], None]
    ) -> int:
        """Run attached `compose up`, relinking as containers start and stop, and unlink at the end."""
        since = f"{time.time():.3f}"
        events = self.compose.events(topo.project, since)
        interrupted = threading.Event()

        def on_interrupt(signum: int, frame: FrameType | None) -> None:
            interrupted.set()  # compose, in our process group, stops the containers itself

        previous = signal.signal(signal.SIGINT, on_interrupt)
        follower = threading.Thread(target=self._follow, args=(events, topo, services, report), daemon=True)
        follower.start()
        try:
            up = self.compose.start(["up", *args])
            while True:
                try:
                    code = up.wait()
                    break
                except InterruptedError:
                    continue
        finally:
            events.terminate()
            follower.join(timeout=5)
            signal.signal(signal.SIGINT, previous)
        report(LinkReport(entries=self.unlink(topo, services)))
        return code

    def _follow(
        self, events: subprocess.Popen[str], topo: Topology, services: set[str], report: Callable[[LinkReport], None]
    ) -> None:
        stream = getattr(events, "stdout", None)
        if stream is None:
            return
        for line in stream:
            try:
                action = json.loads(line).get("Action", "")
            except ValueError:
                continue
            if action in ("start", "die", "destroy"):
                try:
                    report(self.link(topo, services))
                except (ComposeFailed, ConflictError, OSError):
                    continue
