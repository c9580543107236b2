"""The core of a lab: bring a project's netns entries and wiring to what its compose file declares.

LabCore joins the adapters (compose, netns, wiring, state); the capabilities built on it (status, run-time
changes, following the engine's events) are classes of their own, joined in lab.py. wiring (ctypes, threads: 14 ms
of start-up) is imported only where a lab has links to read or change.
"""

from __future__ import annotations

import functools
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from composens.model import declared, entries, topology
from composens.model.containers import Container
from composens.model.entries import Action, EntryChange, Status, Wanted
from composens.model.errors import ConfigError, ConflictError
from composens.model.progress import SILENT, Progress
from composens.model.record import NodeRecord, State
from composens.model.report import (
    LinkReport,
    PlanLine,
    Pruned,
)
from composens.model.topology import HOST, HUB, Endpoint, Topology
from composens.system.docker.compose import Compose
from composens.system.docker.options import COMPOSE_FILE_NAMES
from composens.system.kernel import netns
from composens.system.kernel.netns import NetnsDirectory
from composens.system.record.store import StateStore
from composens.system.world import WORLD

if TYPE_CHECKING:
    from composens.model.conditions import Conditions
    from composens.plan.converge import Scope
    from composens.plan.live import LiveAddress
    from composens.system.kernel.reading import Target


STATE_DIR = Path("/run/composens")
MAX_NAMED = 4  # ends named in an error about conditions the kernel cannot set; the rest are counted
QDISC_HINTS = {
    "netem": "modprobe sch_netem, or use a kernel built with it; a rate alone needs only tbf",
    "tbf": "modprobe sch_tbf, or use a kernel built with it",
}


@dataclass(frozen=True)
class Paths:
    netns_dir: Path = netns.NETNS_DIR
    state_dir: Path = STATE_DIR


class LabCore:
    """What every capability of a lab stands on: the project, its containers, their entries and the record;
    linking and converging, planning, unlinking, pruning."""

    def __init__(self, compose: Compose, paths: Paths | None = None, *, host: str | None = None) -> None:
        self.compose = compose
        self.host = host  # which of a multi-host lab's hosts this is, when chosen (--host, COMPOSENS_HOST)
        self.paths = paths or Paths()
        self.directory = NetnsDirectory(self.paths.netns_dir)
        self.store = StateStore(self.paths.state_dir)
        self._kernel_has: set[str] = set()  # qdisc kinds found settable, asked once a command (never on disk)

    def load(self, *, whole: bool = False) -> Topology:
        """Read and validate the project's configuration: over several hosts, the part this one runs (or all)."""
        machine: str | None = WORLD.read("machine-id")  # the salt of the MACs derived on this machine
        topo = declared.parse(self.compose.essentials(), source=self.compose.options.source_label(), machine=machine)
        if topo.hosts is None or whole:
            return topo
        from composens.model import hosts
        from composens.system.kernel import reading

        here = reading.read_namespace(None)
        assigned = set().union(*map(assigned_of, here.addresses.values()))
        me = hosts.which_host(topo.hosts, assigned, self.host, topo.source)
        device = next((name for name, addrs in here.addresses.items() if me.underlay in assigned_of(addrs)), None)
        link = here.links.get(device) if device else None
        # Chosen with --host on a machine that does not have its address: the file's underlay MTU is taken as said.
        return hosts.view(topo, topo.hosts, me, link.mtu if link else None, device or "")

    def project_warnings(self, topo: Topology) -> list[str]:
        """What may make the hosts of a multi-host lab disagree: a project name compose derives from the folder."""
        options = self.compose.options
        if topo.hosts is None or options.project_name or os.environ.get("COMPOSE_PROJECT_NAME"):
            return []
        folder = Path(options.project_directory or ".")
        files = [Path(f) for f in options.files] or [
            next((folder / n for n in COMPOSE_FILE_NAMES if (folder / n).exists()), folder / COMPOSE_FILE_NAMES[0])
        ]
        if any(_names_project(f) for f in files):
            return []
        return [
            f"{topo.source}: no top-level name: the project is {topo.project!r} after this folder, and the VNIs and "
            "marks derive from it; give the file a name: (or -p) so that every host agrees"
        ]

    @staticmethod
    def select(topo: Topology, services: Iterable[str]) -> set[str]:
        """Return the chosen services (all when none are named); unknown names are an error."""
        chosen = set(services)
        unknown = sorted(chosen - set(topo.services))
        placed = topo.hosts.placement if topo.hosts is not None else {}
        elsewhere = [f"{s} is placed on host {placed[s]}" for s in unknown if s in placed]
        if elsewhere:
            raise ConfigError(f"{topo.source}: {'; '.join(elsewhere)}, not on this host ({topo.this_host})")
        if unknown:
            raise ConfigError(f"{topo.source}: no such service: {', '.join(unknown)}")
        return chosen or set(topo.services)

    def moved_away(self, topo: Topology) -> list[str]:
        """On one host of a multi-host lab: the services with containers here that the file places elsewhere."""
        if topo.hosts is None or topo.this_host is None:
            return []
        containers = self.compose.containers(topo.project)
        placed = topo.hosts.placement
        return sorted({c.service for c in containers if placed.get(c.service, topo.this_host) != topo.this_host})

    def unpause(self, topo: Topology, services: set[str]) -> list[str]:
        """Unpause the chosen services' paused containers (`docker pause`, a scenario cut short), which compose up
        refuses to start; return their services."""
        paused = sorted(
            {c.service for c in self.compose.containers(topo.project) if c.paused and c.service in services}
        )
        if paused:
            self.compose.quietly(["unpause", *paused])
        return paused

    def remove_moved(self, topo: Topology, services: list[str]) -> tuple[list[EntryChange], int]:
        """Unlink and remove the containers of services placed on another host now (`compose rm -s -f`)."""
        entries = self.unlink(topo, set(services))
        return entries, self.compose.run(["rm", "-s", "-f", *services])

    def precheck(self, topo: Topology, services: set[str]) -> None:
        """Refuse before anything runs when a name the project needs is taken by something not of it, or when
        the kernel cannot set the conditions it declares."""
        state = self.store.read()
        self.check_kernel(topo, state)
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
                    f"{netns.not_ours(self.directory, node.netns)} or give service {name} another name with "
                    "x-composens.netns or netns_prefix"
                )
            if ours and record is not None and record.project != topo.project:
                raise ConflictError(
                    f"netns name {node.netns} of service {name} is in use by project {record.project}; "
                    "set a top-level x-composens.netns_prefix in one of the projects"
                )
        if topo.hub is not None and topo.hub.netns is not None:
            hub = topo.hub.netns
            if self.directory.probe(hub).exists and not netns.hub_is_ours(self.directory, state, topo.project, hub):
                raise ConflictError(netns.hub_conflict(self.directory, state, topo.project, hub))
        host_ends = [ep for pair in topo.pairs() for ep in (pair.a, pair.b) if ep.node == HOST]
        if host_ends:
            self._precheck_host(topo, state, host_ends)

    def check_kernel(self, topo: Topology, state: State) -> None:
        """Refuse (exit 3) before anything changes when the kernel lacks a qdisc the file or `netem set` wants."""
        from composens.model.conditions import parse as parse_conditions

        record = state.projects.get(topo.project)
        run_time = record.conditions if record else {}
        self._check_qdiscs(
            _declared_conditions(topo)
            + [(f"{end} (netem set)", parse_conditions(spelled)) for end, spelled in sorted(run_time.items())]
        )

    def _check_qdiscs(self, wanted: list[tuple[str, Conditions]]) -> None:
        kinds = {conditions.kind for _, conditions in wanted} - self._kernel_has
        if not kinds:
            return
        from composens.system.kernel import reading

        missing = reading.missing_qdisc_kinds(kinds)
        self._kernel_has |= kinds - missing
        for kind in sorted(missing):
            asking = [f"{where} ({conditions})" for where, conditions in wanted if conditions.kind == kind]
            shown = ", ".join(asking[:MAX_NAMED]) + (
                f" and {len(asking) - MAX_NAMED} more" if len(asking) > MAX_NAMED else ""
            )
            raise ConfigError(
                f"this kernel has no sch_{kind}, which {shown} {'need' if len(asking) > 1 else 'needs'}; "
                f"{QDISC_HINTS.get(kind, 'load the module or use a kernel built with it')}"
            )

    def _precheck_host(self, topo: Topology, state: State, host_ends: list[topology.Endpoint]) -> None:
        from composens.plan import converge
        from composens.plan.changes import marker
        from composens.system.kernel import reading

        host = reading.read_namespace(None)
        record = state.projects.get(topo.project)
        claims = record.nodes[HOST].interfaces if record and HOST in record.nodes else {}
        for end in host_ends:
            link = host.links.get(end.ifname)
            claim = claims.get(end.ifname)
            # Unmarked but claimed while being made (a run killed midway): convergence checks its peer.
            pending = link is not None and link.alias is None and claim is not None and claim.index is None
            if link is not None and not pending and not converge.owned(link, claim, marker(topo.project)):
                owner = link.alias.removeprefix("composens:") if link.alias else None
                whose = f"belongs to project {owner}" if owner else "was not created by composens"
                raise ConflictError(
                    f"interface {end.ifname} already exists in the host's namespace and {whose}; remove or rename it"
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

    def _running(self, topo: Topology) -> tuple[list[Container], dict[str, Container], dict[str, str], list[Wanted]]:
        containers, by_id = self._containers(topo)
        names = self._names(topo, containers)
        running = [
            Wanted(names[c.id], c, *netns.resolve_target(c, by_id))
            for c in sorted(containers, key=lambda c: (c.service, c.number))
            if c.id in names and c.running and c.network_mode != "host"
        ]
        return containers, by_id, names, running

    def _targets(
        self, topo: Topology, state: State, running: list[Wanted], *, linked: bool = True
    ) -> dict[str, Target]:
        """The namespaces wiring may read and change: services whose entry is ours and reaches their namespace
        now (the batch lines name entries), the host's when the project has host ends, the hub when it is ours.

        With linked=False (for plan), also services whose entry `netns link` would make or repoint.
        """
        from composens.system.kernel.reading import HOST_TARGET, Target

        record = state.projects.get(topo.project)
        recorded = set(record.nodes) if record else set()
        targets: dict[str, Target] = {}
        for w in running:
            service = w.container.service
            if w.target is None or (service not in topo.wired_services and service not in recorded):
                continue
            entry_record = state.entries.get(w.name)
            entry = self.directory.probe(w.name)
            owned = (
                entry_record is not None and entry_record.project == topo.project and entry_record.target == w.target
            )
            reaches = owned and entry.symlink_target == w.target and entry.reaches == w.inode
            free = not entry.exists or (entry_record is not None and entry_record.project == topo.project)
            if reaches or (not linked and free):
                targets[service] = Target(w.name, w.target, w.target, linked=reaches)
        host_ends = any(ep.node == HOST for pair in topo.pairs() for ep in (pair.a, pair.b))
        if host_ends or topo.host.routes or HOST in recorded:
            targets[HOST] = HOST_TARGET
        if topo.hub is not None and topo.hub.netns is not None:
            hub = topo.hub.netns
            if netns.hub_is_ours(self.directory, state, topo.project, hub):
                inode = self.directory.probe(hub).reaches
                targets[HUB] = Target(hub, str(self.directory.path(hub)), f"hub:{inode}")
        return targets

    def _absent(
        self, topo: Topology, state: State, running: list[Wanted], targets: Mapping[str, Target]
    ) -> dict[str, str]:
        """Why each running container's service has no namespace wiring may reach: not that it does not run."""
        absent: dict[str, str] = {}
        for w in running:
            service = w.container.service
            if service in targets or service not in topo.wired_services:
                continue
            entry = self.directory.probe(w.name)
            record = state.entries.get(w.name)
            if w.target is None:
                why = w.why_not or "its namespace cannot be trusted"
            elif not entry.exists:
                why = "no netns entry"
            elif record is not None and record.project == topo.project and record.made(entry.symlink_target):
                why = "stale netns entry"
            else:
                why = f"netns name {w.name} taken"
            absent[service] = f"running, not linked ({why})"
        return absent

    @staticmethod
    def _scope(topo: Topology, state: State, targets: dict[str, Target], services: set[str]) -> Scope:
        from composens.model.conditions import parse as parse_conditions
        from composens.plan.converge import Scope

        record = state.projects.get(topo.project)
        conditions = (
            {Endpoint(*end.split(":", 1)): parse_conditions(spelled) for end, spelled in record.conditions.items()}
            if record
            else {}
        )
        declared = any(pair.conditions for pair in topo.pairs()) or any(t.conditions for t in topo.tunnels)
        recorded = record is not None and any(node.qdiscs for node in record.nodes.values())
        down = frozenset(_down_ends(state, topo.project))
        qdiscs = declared or bool(conditions) or recorded
        return Scope(frozenset(targets), _chosen(topo, services), down, conditions, qdiscs)

    @staticmethod
    def _records(state: State, project: str, targets: dict[str, Target]) -> dict[str, NodeRecord]:
        """The record of each target's current namespace, read only (a namespace that is gone has none)."""
        record = state.projects.get(project)
        nodes = record.nodes if record else {}
        return {n: nodes[n] for n, t in targets.items() if n in nodes and nodes[n].netns == t.identity}

    def compose_for_up(self, topo: Topology) -> Compose:
        """The compose that runs `up`: the project's own, or one whose waiting services start only once wired (and
        delayed ones after their delay)."""
        from composens.system.run import startgate

        if not startgate.waiting(topo) and not startgate.delayed(topo):
            return self.compose
        self.store.ensure_directory()
        return startgate.gated_compose(self.compose, topo, self.paths.state_dir)

    def link(
        self,
        topo: Topology,
        services: set[str],
        *,
        wire: bool = True,
        first: Callable[[State, list[Container]], None] | None = None,
        progress: Progress = SILENT,
    ) -> LinkReport:
        """Link every running container of `services` and converge the wiring that touches them.

        `first` changes the record (a run-time setting) in the same hold of the lock, once the containers are
        known. They are listed once the lock is held: a run that waited for another's would act on a stale list.
        `progress` is told of the entries, changes and exec commands as they are made and run.
        """
        began = time.monotonic()
        if wire:
            self.check_kernel(topo, self.store.read())
        report = LinkReport()
        self.directory.ensure_root()
        with self.store.locked() as state:
            listed_at = time.time()
            containers, _, _, running = self._running(topo)
            if first is not None:
                first(state, containers)
            wanted = [w for w in running if w.container.service in services]
            report.entries = netns.link(self.directory, state, topo.project, wanted, services, progress)
            if not wire:
                report.seconds = time.monotonic() - began
                return report
            targets, in_line = self._wire(topo, state, running, services, report, progress)
            report.links, report.lans = _wired_counts(topo, services, targets)
            starts = [w for w in running if w.inode is not None]
            wired = [w for w in starts if self._ready(topo, w, services, targets, in_line)]
            awaiting = _awaiting(topo, state, targets, services)
        # Outside the lock: the kernel takes up to a second (more for hundreds of interfaces) to make them usable.
        held = self._wait_ready(topo, awaiting, report)
        wired = [w for w in wired if w.container.service not in held]
        if any(node.exec for node in topo.services.values()):  # outside the lock: commands may take their time
            from composens.system.run import execs

            report.execs = execs.run_pending(
                self.paths.state_dir,
                topo,
                [(w.container.service, w.container.id, w.inode, w.container.pid) for w in wired if w.inode],
                [(w.inode, w.container.pid) for w in starts if w.inode],
                self.compose.docker,
                listed_at=listed_at,
                use_api=self.compose.use_api,
                progress=progress,
            )
        self._open_gates(
            topo, starts, wired, listed_at
        )  # after its exec commands: a command may rely on what they set up
        report.seconds = time.monotonic() - began
        return report

    @staticmethod
    def _ready(
        topo: Topology, w: Wanted, services: set[str], targets: Mapping[str, Target], in_line: Callable[[str], bool]
    ) -> bool:
        """Tell whether a start is wired, so that its exec commands may run and its gate open: its pairs were
        converged by this run (a service it was asked about), or else are found as the file declares them. A
        service whose wiring an earlier run rolled back has namespaces to reach, but not its interfaces."""
        service = w.container.service
        if not _wired(topo, service, targets):
            return False
        if service in services or not (topo.services[service].exec or _gated(topo, w)):
            return True  # converged by this run; or nothing waits on it
        return in_line(service)

    @staticmethod
    def _wait_ready(topo: Topology, awaiting: dict[str, tuple[str, tuple[str, ...]]], report: LinkReport) -> set[str]:
        """Wait until every wired interface is usable (plan/ready.py); report those that are not by the limit, and
        return the services they hold back: not wired, so no exec command runs and no gate opens for them."""
        if not awaiting:
            return set()
        from composens.plan import ready as readiness
        from composens.system.kernel import ready

        limit = ready.limit_for(sum(len(names) for _, names in awaiting.values()))
        unready = ready.wait_ready(awaiting, limit)
        report.not_ready = [
            f"{readiness.describe(topo, end)} is not usable after {limit:g} s: {why}"
            for end, why in sorted(unready.items(), key=lambda item: str(item[0]))
        ]
        return readiness.services_held(topo, unready)

    def _open_gates(self, topo: Topology, starts: list[Wanted], wired: list[Wanted], listed_at: float) -> None:
        """Let the waiting services whose namespace is wired now start their commands."""
        from composens.system.run import startgate

        ours = [(w.inode, w.container.pid) for w in starts if _gated(topo, w) and w.inode]
        if not ours:
            return
        opened = [(w.inode, w.container.pid) for w in wired if _gated(topo, w) and w.inode]
        startgate.release(self.paths.state_dir, topo.project, opened, ours, listed_at)

    def _wire(
        self,
        topo: Topology,
        state: State,
        running: list[Wanted],
        services: set[str],
        report: LinkReport,
        progress: Progress = SILENT,
    ) -> tuple[dict[str, Target], Callable[[str], bool]]:
        """Converge the wiring that touches `services`; return the namespaces it could reach, and what tells
        whether another service's wiring is found in line with the file (as the run left the namespaces)."""
        old_hubs = [
            n for n, h in state.hubs.items() if h.project == topo.project and (topo.hub is None or n != topo.hub.netns)
        ]
        if topo.hub is not None and topo.hub.netns is not None and topo.lans:
            change = netns.ensure_hub(self.directory, state, topo.project, topo.hub.netns)
            report.entries.append(change)
            if change.action is not Action.CONFLICT:
                from composens.system.kernel import wiring

                wiring.prepare_hub(str(self.directory.path(topo.hub.netns)))
        record = state.projects.get(topo.project)
        targets: dict[str, Target] = {}
        in_line: Callable[[str], bool] = _nothing_declared  # no pair anywhere: nothing to find out of line
        if topo.pairs() or topo.tunnels or (record and not record.empty()):
            from composens.plan import converge
            from composens.system.kernel import wiring

            targets = self._targets(topo, state, running)
            scope = self._scope(topo, state, targets, services)
            result = wiring.converge_lab(topo, scope, targets, state.project(topo.project), state.save, progress)
            report.wired, report.unwired, report.changed_at = result.done, result.unwired, result.changed_at
            in_line = functools.partial(converge.in_line, topo, result.state, result.records, scope)
        if services >= set(topo.services):
            for name in old_hubs:
                report.entries.append(netns.remove_hub(self.directory, state, topo.project, name, "no longer declared"))
            if old_hubs and not topo.lans:
                state.project(topo.project).nodes.pop(HUB, None)  # what was made there went with it
        return targets, in_line

    def plan(self, topo: Topology, services: set[str] | None, *, full: bool) -> tuple[list[PlanLine], list[str]]:
        """The commands that would bring the lab to its file: against the live lab, or from scratch.

        Returns the lines and the links that cannot be planned now (and why).
        """
        from composens.plan import changes as ch
        from composens.plan import converge, live
        from composens.system.kernel import reading

        chosen = services if services is not None else set(topo.services)
        containers, _, _, running = ([], {}, {}, []) if full else self._running(topo)
        if full or not running:
            lines, unwired = converge.full_plan(topo, None if services is None else frozenset(services))
            # Nothing runs: the plan from scratch says what up would wire; with nothing to wire, what is not running.
            stopped = [] if full or lines else [f"{s}: not running" for s in not_running(topo, chosen, containers)]
            return [PlanLine("", line) for line in lines], stopped + unwired
        stopped = [f"{s}: not running" for s in not_running(topo, chosen, containers)]
        state = self.store.read()
        plan_lines = self._entry_plan(topo, state, running, chosen)
        targets = self._targets(topo, state, running, linked=False)
        if topo.hub is not None and topo.hub.netns and topo.lans and HUB not in targets:
            plan_lines += [PlanLine("+", line) for line in ch.hub_commands(topo.hub.netns)]
            from composens.system.kernel.reading import Target

            targets[HUB] = Target(topo.hub.netns, "", "hub:new")
        scope = self._scope(topo, state, targets, chosen)
        seen = reading.read_all({n: t for n, t in targets.items() if t.identity != "hub:new"}, qdiscs=scope.qdiscs)
        seen.update({n: live.EMPTY for n, t in targets.items() if t.identity == "hub:new"})
        found = converge.diff(topo, seen, self._records(state, topo.project, targets), scope, check_gateways=True)
        if found.problems:
            raise ConfigError(found.problems[0])
        netns_of = lambda node: targets[node].netns if node in targets else topo.node(node).netns  # noqa: E731
        plan_lines += [PlanLine(c.sign, ch.command(c, netns_of)) for c in found.changes]
        plan_lines += [PlanLine("!", f"conflict: {c}") for c in found.conflicts]
        if chosen >= set(topo.services):
            for name, hub in sorted(state.hubs.items()):
                if hub.project == topo.project and (topo.hub is None or name != topo.hub.netns or not topo.lans):
                    plan_lines.append(PlanLine("-", f"ip netns delete {name}"))
        return plan_lines, stopped + found.unwired

    def _entry_plan(self, topo: Topology, state: State, running: list[Wanted], services: set[str]) -> list[PlanLine]:
        """The entries `netns link` would make, move or remove, as the commands that do the same."""
        import shlex

        lines = []
        names = set()
        for w in running:
            if w.container.service not in services:
                continue
            names.add(w.name)
            path = str(self.directory.path(w.name))
            entry = self.directory.probe(w.name)
            status = entries.classify(topo.project, entry, state.entries.get(w.name), w.container, w.inode)
            if w.target is not None and status is Status.UNLINKED:
                lines.append(PlanLine("+", shlex.join(["ln", "-s", w.target, path])))
            elif w.target is not None and status is Status.STALE:
                lines.append(PlanLine("~", shlex.join(["ln", "-sfn", w.target, path])))
        for name, record in sorted(state.entries.items()):
            if record.project == topo.project and record.service in services and name not in names:
                lines.append(PlanLine("-", shlex.join(["rm", str(self.directory.path(name))])))
        return lines

    def unlink(self, topo: Topology, services: set[str] | None = None) -> list[EntryChange]:
        with self.store.locked() as state:
            return netns.unlink(self.directory, state, topo.project, services)

    def unwire(self, topo: Topology) -> list[EntryChange | str]:
        """Remove what composens made for the project outside its containers: host ends (and the routes through
        them) and hubs. Container ends go with their namespaces."""
        with self.store.locked() as state:
            return self._unwire_project(topo.project, state, topo)

    def _unwire_project(
        self, project: str, state: State, topo: Topology | None = None, *, gone: bool = False
    ) -> list[EntryChange | str]:
        """Remove the host ends and hubs of a project, and its run-time settings. The records of its containers'
        namespaces stay unless the project is gone: should compose down fail, the next up still knows them."""
        done: list[EntryChange | str] = []
        record = state.projects.get(project)
        if record is not None and HOST in record.nodes:
            from composens.system.kernel import reading, wiring

            topo = topo or declared.parse({"name": project}, source="record")
            done += wiring.remove_project(topo, {HOST: reading.HOST_TARGET}, record, state.save)
        for name in [n for n, h in sorted(state.hubs.items()) if h.project == project]:
            done.append(netns.remove_hub(self.directory, state, project, name, "project down"))
        if gone or record is None:
            state.projects.pop(project, None)
        else:
            for node in (HOST, HUB):
                record.nodes.pop(node, None)
            record.down.clear()
            record.conditions.clear()
        return done

    def forget(self, topo: Topology) -> None:
        """Drop what the record says about a project whose containers compose has removed."""
        from composens.system.run import execs, startgate

        with self.store.locked() as state:
            state.projects.pop(topo.project, None)
            startgate.forget(self.paths.state_dir, topo.project)
            execs.forget(self.paths.state_dir, topo.project)

    def recover(self) -> list[str]:
        """Rebuild a damaged record from the entries, the engine and the interfaces' marks."""
        from composens.system.record import recovery

        self.directory.ensure_root()
        return recovery.recover(self.directory, self.store, self.compose)

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
            projects = set(state.projects) | {h.project for h in state.hubs.values()}
            for project in sorted(projects):
                if self.compose.project_exists(project):
                    continue  # the engine says so: it has containers (running or stopped), whether or not entries
                pruned += self._prune_project(project, state, dry_run=dry_run)
            return pruned

    def _prune_project(self, project: str, state: State, *, dry_run: bool) -> list[Pruned]:
        record = state.projects.get(project)
        host = sorted(record.nodes[HOST].interfaces) if record and HOST in record.nodes else []
        hubs = [n for n, h in sorted(state.hubs.items()) if h.project == project]
        if dry_run:
            return [Pruned("host interface", n, project, "project not running") for n in host] + [
                Pruned("hub", n, project, "project not running") for n in hubs
            ]
        pruned = []
        for item in self._unwire_project(project, state, gone=True):
            if isinstance(item, EntryChange):
                if item.action is Action.REMOVE:
                    pruned.append(Pruned("hub", item.name, project, "project not running"))
            else:
                pruned.append(Pruned("host interface", item.split("dev ", 1)[1], project, "project not running"))
        return pruned


def _wired(topo: Topology, service: str, targets: Mapping[str, Target]) -> bool:
    """Every pair of the service is wired: its own namespace and each peer's were converged (or it has none), and
    its own namespace too where it has only VXLAN ends (their far side is another host's to make)."""
    ends = [ep.node for pair in topo.pairs() if service in (pair.a.node, pair.b.node) for ep in (pair.a, pair.b)]
    ends += [t.end.node for t in topo.tunnels if t.end.node == service]
    return all(node in targets for node in ends)


def _nothing_declared(service: str) -> bool:
    return True


def _gated(topo: Topology, w: Wanted) -> bool:
    """Tell whether a start waits for its wiring: by the file, or by the label of a container made with the wait."""
    from composens.system.run import startgate

    node = topo.services.get(w.container.service)
    return bool(node and node.start_after_wiring) or startgate.GATED_LABEL in w.container.labels


def _wired_counts(topo: Topology, services: set[str], targets: Mapping[str, Target]) -> tuple[int, int]:
    """How many declared links and LANs touching `services` are wired now: a link whose two ends' namespaces were
    converged (a cross-host link: this host's end's), a LAN whose hub and every member here were."""
    links = sum(
        1
        for link in topo.links
        if {link.a.node, link.b.node} & services and link.a.node in targets and link.b.node in targets
    )
    links += sum(1 for t in topo.tunnels if t.lan is None and t.end.node in services and t.end.node in targets)
    lans = sum(
        1
        for lan in topo.lans
        if {m.node for m in lan.members} & services and HUB in targets and all(m.node in targets for m in lan.members)
    )
    return links, lans


def _awaiting(
    topo: Topology, state: State, targets: Mapping[str, Target], services: set[str]
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The interfaces to wait for once the pairs touching `services` are wired, by node: the path of its namespace
    and their names."""
    from composens.plan.ready import awaited

    down = _down_ends(state, topo.project)
    found = awaited(topo, set(targets), down, _chosen(topo, services))
    return {node: (targets[node].path, names) for node, names in found.items()}


def _down_ends(state: State, project: str) -> set[Endpoint]:
    """The ends set down at run time (`composens link down`), as the record keeps them."""
    record = state.projects.get(project)
    return {Endpoint(*item.split(":", 1)) for item in record.down} if record else set()


def _chosen(topo: Topology, services: set[str]) -> frozenset[str] | None:
    """The services a run was asked about; None where that is all of them (and so the host and the hub too)."""
    return None if services >= set(topo.services) else frozenset(services)


def not_running(topo: Topology, services: set[str], containers: list[Container]) -> tuple[str, ...]:
    """The chosen services the file wants running (not scaled to 0) that have no running container."""
    up = {c.service for c in containers if c.running}
    return tuple(s for s in topo.services if s in services and topo.services[s].replicas and s not in up)


def _names_project(path: Path) -> bool:
    """Tell whether a compose file declares the project's name (a top-level `name:` line)."""
    try:
        text = path.read_text()
    except OSError:
        return False
    return any(line.startswith("name:") for line in text.splitlines())


def _declared_conditions(topo: Topology) -> list[tuple[str, Conditions]]:
    """Who declares which conditions: each link end's, each LAN's (on all its ports)."""
    found: list[tuple[str, Conditions]] = []
    for link in topo.links:
        found += [(f"link end {end}", conditions) for end, conditions in link.conditions.items()]
    found += [(f"LAN {lan.name}", lan.conditions) for lan in topo.lans if lan.conditions is not None]
    found += [(f"cross-host end {t.end}", t.conditions) for t in topo.tunnels if t.conditions is not None]
    return found


def assigned_of(addresses: Iterable[LiveAddress]) -> set[str]:
    return {a.address.split("/")[0] for a in addresses}
