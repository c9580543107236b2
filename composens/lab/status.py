"""What a running lab looks like beside its file: the rows of `ps --netns` (and of `graph --live`)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from composens.lab.core import LabCore, not_running
from composens.model import entries
from composens.model.containers import Container
from composens.model.entries import Status, Wanted
from composens.model.errors import ComposensError
from composens.model.record import State
from composens.model.report import (
    HOST_ROW,
    HUB_ROW,
    ExecResult,
    InterfaceRow,
    LabStatus,
    NetnsRow,
    RemoteEnd,
)
from composens.model.topology import HOST, HUB, Endpoint, Topology
from composens.system.kernel import netns

if TYPE_CHECKING:
    from composens.plan.live import LiveNamespace


class StatusReading(LabCore):
    """What a running lab looks like beside its file: the rows of `ps --netns` (and of `graph --live`)."""

    def status(self, topo: Topology, services: set[str]) -> LabStatus:
        """Describe every container of the chosen services, the entry it has or should have, and its drift; and
        what else differs from the file (services not running, pairs not wired)."""
        containers, by_id, names, running = self._running(topo)
        state = self.store.read()
        rows = []
        for c in sorted(containers, key=lambda c: (c.service, c.number)):
            if c.id not in names or c.service not in services:
                continue
            name = names[c.id]
            _, current, _ = netns.resolve_target(c, by_id)
            entry = self.directory.probe(name)
            status = entries.classify(topo.project, entry, state.entries.get(name), c, current)
            path = str(self.directory.path(name))
            rows.append(
                NetnsRow(c.service, c.name, c.pid if c.running else None, name, path, entry.symlink_target, status)
            )
        known = set(names.values())
        for name, record in sorted(state.entries.items()):
            if record.project == topo.project and record.service in services and name not in known:
                entry = self.directory.probe(name)
                status = entries.classify(topo.project, entry, record, None, None)
                path = str(self.directory.path(name))
                rows.append(NetnsRow(record.service, "", None, name, path, entry.symlink_target, status))
        rows += self._special_rows(topo, state)
        stopped = not_running(topo, services, containers)
        unwired: list[str] = []
        if topo.pairs() or topo.tunnels or state.projects.get(topo.project):
            rows, unwired = self._with_wiring(topo, state, running, services, rows)
        rows = self._with_exec_failures(topo, running, rows)
        rows = _with_pauses(containers, rows)
        return LabStatus(tuple(rows), tuple(unwired), stopped)

    def _with_exec_failures(self, topo: Topology, running: list[Wanted], rows: list[NetnsRow]) -> list[NetnsRow]:
        """Add to a container's row each x-composens.exec command of its current start that failed."""
        if not any(node.exec for node in topo.services.values()):
            return rows
        from composens.model.report import Drift
        from composens.system.run import execs

        inode_of = {w.container.name: w.inode for w in running}
        result = []
        for row in rows:
            found = execs.results_of(
                self.paths.state_dir, topo.project, row.service, inode_of.get(row.container), row.pid
            )
            failed = tuple(
                Drift(row.service, "failed", f"exec `{r.command}`: {_exit_text(r)}") for r in found if not r.ok
            )
            result.append(replace(row, drift=row.drift + failed) if failed else row)
        return result

    def live_rows(self, topo: Topology) -> tuple[NetnsRow, ...]:
        """The rows of every service, for `graph --live`; refused when nothing of the lab runs."""
        status = self.status(topo, set(topo.services))
        if not status.running:
            raise ComposensError(f"project {topo.project} is not running: `composens up -d` first, or drop --live")
        return status.rows

    def _special_rows(self, topo: Topology, state: State) -> list[NetnsRow]:
        rows = []
        if any(ep.node == HOST for pair in topo.pairs() for ep in (pair.a, pair.b)):
            rows.append(NetnsRow(HOST_ROW, "", None, "-", "/proc/1/ns/net", None, Status.NONE))
        if topo.hub is not None and topo.hub.netns is not None:
            hub = topo.hub.netns
            entry = self.directory.probe(hub)
            if netns.hub_is_ours(self.directory, state, topo.project, hub):
                status = Status.LINKED
            else:
                status = Status.CONFLICT if entry.exists else Status.UNLINKED
            rows.append(NetnsRow(HUB_ROW, "", None, hub, str(self.directory.path(hub)), None, status))
        return rows

    def _with_wiring(
        self, topo: Topology, state: State, running: list[Wanted], services: set[str], rows: list[NetnsRow]
    ) -> tuple[list[NetnsRow], list[str]]:
        """Add each row's declared interfaces and drift, read from every linked namespace side by side; and say
        which declared pairs touching the chosen services are not wired."""
        from composens.plan import converge
        from composens.system.kernel import reading

        targets = self._targets(topo, state, running)
        scope = self._scope(topo, state, targets, set(topo.services))
        # A container restarting while this reads takes its namespace along: its row is stale, the rest stands.
        seen = reading.read_all(targets, qdiscs=scope.qdiscs, vanished_ok=True)
        vanished = {targets[node].netns for node in targets if node not in seen}
        targets = {node: target for node, target in targets.items() if node in seen}
        scope = replace(scope, available=frozenset(targets), absent=self._absent(topo, state, running, targets))
        found = converge.diff(topo, seen, self._records(state, topo.project, targets), scope)
        node_of = {HOST_ROW: HOST, HUB_ROW: HUB}
        result = []
        for row in rows:
            node = node_of.get(row.service, row.service)
            if row.netns in vanished and row.status is Status.LINKED:
                row = replace(row, status=Status.STALE)
            linked = node in seen and (node in (HOST, HUB) or targets[node].netns == row.netns)
            declared = _declared_interfaces(topo, node)
            macs = topo.node(node).macs if node != HUB else {}
            interfaces = tuple(
                _interface_row(
                    seen[node] if linked else None,
                    name,
                    Endpoint(node, name) in scope.down,
                    name in macs,
                    _remote_of(topo, Endpoint(node, name)),
                )
                for name in declared
            )
            drift = tuple(d for d in found.drift if d.node == node) if linked else ()
            result.append(replace(row, interfaces=interfaces, drift=drift))
        unwired = [reason for pair, reason in found.unwired_pairs if {pair.a.node, pair.b.node} & services]
        unwired += [reason for node, reason in found.unwired_tunnels if node in services or node == HUB]
        return result, unwired


def _with_pauses(containers: list[Container], rows: list[NetnsRow]) -> list[NetnsRow]:
    """Say which containers are paused (`docker pause`, a scenario cut short): `up -d` unpauses them."""
    from composens.model.report import Drift

    paused = {c.name: c.service for c in containers if c.paused}
    return [
        replace(row, drift=(*row.drift, Drift(row.service, "paused", "container: `composens up -d` unpauses it")))
        if row.container in paused
        else row
        for row in rows
    ]


def _exit_text(result: ExecResult) -> str:
    last = result.output.strip().splitlines()[-1] if result.output.strip() else ""
    return f"{result.verdict}: {last}" if last else result.verdict


def _declared_interfaces(topo: Topology, node: str) -> tuple[str, ...]:
    if node == HUB:
        ports = tuple(t.end.ifname for t in topo.tunnels if t.end.node == HUB)
        return tuple(name for lan in topo.lans for name in (lan.name, *lan.ports)) + ports
    return topo.interfaces_of(node)


def _remote_of(topo: Topology, end: Endpoint) -> RemoteEnd | None:
    """Where a cross-host interface leads: the far host (or hosts), its VNI and its VTEPs."""
    tunnel = next((t for t in topo.tunnels if t.end == end), None)
    if tunnel is None:
        return None
    return RemoteEnd(
        tuple(h.name for h in tunnel.remotes),
        tunnel.vni,
        tuple(h.underlay for h in tunnel.remotes),
        tunnel.port,
        str(tunnel.peer) if tunnel.peer else None,
    )


def _interface_row(
    ns: LiveNamespace | None, ifname: str, held_down: bool, show_mac: bool, remote: RemoteEnd | None = None
) -> InterfaceRow:
    link = ns.links.get(ifname) if ns is not None else None
    qdisc = ns.qdiscs.get(ifname) if ns is not None else None
    conditions = (str(qdisc.conditions) if qdisc.conditions else qdisc.kind) if qdisc else None
    mac = link.mac if link is not None and show_mac else None
    return InterfaceRow(ifname, link is not None, link is not None and link.up, held_down, conditions, mac, remote)
