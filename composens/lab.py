"""The core: bring a project's netns entries and wiring to what its compose file declares.

Lab joins the adapters (compose, netns, wiring, state) and returns data for render.py. wiring
(ctypes, threads: 14 ms of start-up) is imported only where a lab has links to read or change.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from composens import netns, topology
from composens.compose import Compose, Container
from composens.errors import ComposensError, ConfigError, ConflictError
from composens.netns import Action, EntryChange, NetnsDirectory, Status, Wanted
from composens.state import State, StateStore
from composens.topology import HOST, Topology

STATE_DIR = Path("/run/composens")
SETTLE_DELAY = 1.0  # s after a burst of events: one more pass
MAX_RETRY_DELAY = 16.0  # s between passes while they keep failing


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


class StopFlag:
    """Tells a follower to stop. Set from signal handlers, so it takes no lock: a second signal
    arriving while a first handler held threading.Event's lock would deadlock (seen here: a watch
    stopped by two quick SIGINTs hung for good)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@dataclass(frozen=True)
class Pruned:
    kind: str  # "entry" or "host interface"
    name: str
    project: str
    reason: str


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
        return topology.parse(self.compose.essentials(), source=self.compose.options.source_label())

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
            if node.replicas > 1 or node.network_mode == "host":
                continue
            assert node.netns is not None
            entry = self.directory.probe(node.netns)
            record = state.entries.get(node.netns)
            ours = record is not None and record.made(entry.symlink_target)
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
        return containers, self._with_owners({c.id: c for c in containers})

    def _with_owners(self, by_id: dict[str, Container]) -> dict[str, Container]:
        """Add the containers whose namespace these joined (network_mode container:<id>), in one inspect."""
        owners = sorted({c.netns_owner for c in by_id.values() if c.netns_owner and c.netns_owner not in by_id})
        by_id.update({c.id: c for c in self.compose.inspect(owners, missing_ok=True)})
        return by_id

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
            from composens import wiring

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
        running = [
            Wanted(names[c.id], c, *netns.resolve_target(c, by_id))
            for c in sorted(containers, key=lambda c: (c.service, c.number))
            if c.id in names and c.running and c.network_mode != "host"
        ]
        report = LinkReport()
        self.directory.ensure_root()
        with self.store.locked() as state:
            wanted = [w for w in running if w.container.service in services]
            report.entries = netns.link(self.directory, state, topo.project, wanted, services)
            if wire and topo.links:
                self._wire(topo, state, running, report)
        return report

    def _wire(self, topo: Topology, state: State, running: list[Wanted], report: LinkReport) -> None:
        # Only services whose entry is ours and reaches their namespace now: the batch lines name entries.
        paths: dict[str, str] = {}
        for w in running:
            if w.target is None or w.container.service not in topo.wired_services:
                continue
            record = state.entries.get(w.name)
            entry = self.directory.probe(w.name)
            owned = record is not None and record.project == topo.project and record.target == w.target
            if owned and entry.symlink_target == w.target and entry.reaches == w.inode:
                paths[w.container.service] = w.target
        available = frozenset(paths)
        for link in topo.links:
            missing = [ep.node for ep in (link.a, link.b) if ep.node != HOST and ep.node not in available]
            if missing:
                report.unwired.append(f"{link.a} <-> {link.b}: {', '.join(missing)} not running")
        steps = topology.plan(topo, available=available)
        ours = state.wired.setdefault(topo.project, set())

        def claim(endpoints: set[str]) -> None:  # written before the pairs exist: see State.save
            ours.update(endpoints)
            state.save()

        from composens import wiring

        result = wiring.apply(steps, topo, paths, ours, claim)
        report.wired, report.kept = result.done, result.kept

    def unlink(self, topo: Topology, services: set[str] | None = None) -> list[EntryChange]:
        with self.store.locked() as state:
            return netns.unlink(self.directory, state, topo.project, services)

    def unwire(self, topo: Topology) -> list[str]:
        """Remove the host-side ends composens created for the project; they outlive its containers."""
        with self.store.locked() as state:
            host_ends = _host_ends(state.wired.pop(topo.project, set()))
            if not host_ends:
                return []
            from composens import wiring

            return wiring.remove_host_interfaces(host_ends)

    def prune(self, *, dry_run: bool) -> list[Pruned]:
        """Remove, across all projects, what composens made that no running container owns any more."""
        self.directory.ensure_root()
        with self.store.locked() as state:
            ids = sorted({rec.container for rec in state.entries.values()})
            by_id = self._with_owners({c.id: c for c in self.compose.inspect(ids, missing_ok=True)})
            pruned = []
            for name, record in sorted(state.entries.items()):
                container = by_id.get(record.container)
                target, inode, why = netns.resolve_target(container, by_id) if container else (None, None, "gone")
                entry = self.directory.probe(name)
                if not record.made(entry.symlink_target):
                    pruned.append(Pruned("entry", name, record.project, "no longer composens' (record dropped)"))
                elif target != record.target or entry.reaches != inode:
                    pruned.append(Pruned("entry", name, record.project, why or "container restarted"))
                else:
                    continue
                if not dry_run:
                    if record.made(entry.symlink_target):
                        self.directory.remove(name)
                    del state.entries[name]
            running = {c.project for c in by_id.values() if c.running}
            for project, endpoints in sorted(state.wired.items()):
                if project in running:
                    continue
                hosts = _host_ends(endpoints)
                from composens import wiring

                present = wiring.remove_host_interfaces(hosts, dry_run=dry_run) if hosts else []
                pruned += [Pruned("host interface", name, project, "project not running") for name in present]
                if not dry_run:
                    del state.wired[project]
            return pruned

    def run_attached(
        self,
        topo: Topology,
        args: list[str],
        services: set[str],
        on_report: Callable[[LinkReport], None],
        on_error: Callable[[str], None],
    ) -> int:
        """Run attached `compose up`, relinking as containers start and stop, and unlink at the end."""
        events = self.compose.events(topo.project, f"{time.time():.3f}")
        stop = StopFlag()
        follower = threading.Thread(
            target=self.follow, args=(events, topo, services, on_report, on_error, stop), daemon=True
        )
        follower.start()
        # Ctrl-C reaches compose too (same process group); it stops the containers and ends `up`.
        previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
        try:
            code = self.compose.start(["up", *args]).wait()
        finally:
            stop.set()
            events.terminate()
            follower.join(timeout=10)
            signal.signal(signal.SIGINT, previous)
        on_report(LinkReport(entries=self.unlink(topo, services)))
        return code

    def watch(
        self,
        topo: Topology,
        services: set[str],
        on_report: Callable[[LinkReport], None],
        on_error: Callable[[str], None],
    ) -> None:
        """Converge now, then relink and rewire whenever a container starts or dies, until SIGINT or SIGTERM."""
        events = self.compose.events(topo.project, f"{time.time():.3f}")
        stop = StopFlag()
        handlers = {
            sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            on_report(self.link(topo, services))
            self.follow(events, topo, services, on_report, on_error, stop)
        finally:
            events.terminate()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def follow(
        self,
        events: subprocess.Popen[str],
        topo: Topology,
        services: set[str],
        on_report: Callable[[LinkReport], None],
        on_error: Callable[[str], None],
        stop: StopFlag,
    ) -> None:
        """Relink after every burst of container starts and deaths until `stop` is set or events end."""
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            for line in events.stdout or ():
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()

        def relink() -> bool:
            try:
                on_report(self.link(topo, services))
            except ComposensError as e:
                on_error(e.message)
                return False
            return True

        # The engine's view can lag its events (a container reported started before inspect shows
        # its sandbox, or still running while it dies): one more pass a second after the last burst
        # catches what the first missed, and a pass that failed is tried again, less and less often.
        settle_at: float | None = None
        retry = SETTLE_DELAY
        while not stop.is_set():
            wait = 0.2 if settle_at is None else min(0.2, max(0.01, settle_at - time.monotonic()))
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                if settle_at is not None and time.monotonic() >= settle_at:
                    settle_at = None
                    if not relink():
                        retry = min(retry * 2, MAX_RETRY_DELAY)
                        settle_at = time.monotonic() + retry
                continue
            burst = [line]
            while True:  # a restart or an `up` sends several events at once: repair once for all
                try:
                    burst.append(lines.get(timeout=0.05))
                except queue.Empty:
                    break
            if any(_is_lifecycle(item) for item in burst if item is not None):
                relink()
                retry = SETTLE_DELAY
                settle_at = time.monotonic() + SETTLE_DELAY
            if None in burst:
                return


def _host_ends(endpoints: set[str]) -> set[str]:
    """Pick the host-side interface names out of recorded `node:ifname` endpoints."""
    return {ep.split(":", 1)[1] for ep in endpoints if ep.startswith(f"{HOST}:")}


def _is_lifecycle(line: str) -> bool:
    try:
        return json.loads(line).get("Action") in ("start", "die", "destroy")
    except ValueError:
        return False
