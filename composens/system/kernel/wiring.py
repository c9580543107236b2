"""veth pairs, bridges, addresses, routes and per-interface sysctls: the only module that changes interfaces.

It changes interfaces through iproute2, the kernel's reference tool, rather than pyroute2: one
`ip -batch` process per namespace runs, line for line, the commands `composens plan` prints.
A namespace is read over netlink (netlink.py: no process, the same answer as `ip -details -json`),
or with one `ip -json -batch` where no netlink socket can be made there. Measured here for 100
links: pyroute2 took 0.23 s to import and about 1 ms of Python per request or decoded message
(0.6 s in all), `ip -batch` 0.08 s for the whole work. Namespaces are named by their netns
entries, which the caller has verified; sysctls are written from a thread that entered the
namespace through docker's mount of it.

A run reads every namespace once, asks converge.py what to change, writes its claims to the
record, and runs removals, then creations, then (after reading the changed namespaces again)
routes. When `ip` reports a failure or stops early, the namespaces are read again and each line
is judged by whether its effect is there: nothing that did not run is recorded as done, and the
command named in the error is the one that failed. A failure undoes what the run did, newest
first, and says whether that put the lab back as it was.
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from composens.model.conditions import LiveQdisc, parse_qdiscs
from composens.model.errors import ConfigError, ConflictError, WiringError
from composens.model.progress import SILENT, WIRING, Progress
from composens.model.record import Claim, NodeRecord, ProjectRecord
from composens.model.topology import Topology
from composens.plan import changes as ch
from composens.plan import converge, live
from composens.plan.changes import Change
from composens.plan.live import LiveNamespace
from composens.system.faults import crash_point
from composens.system.kernel.entering import inside, run_in_netns
from composens.system.kernel.reading import (
    DUMP_INTERRUPTED,
    HOST_TARGET,
    READ_LINES,
    Target,
    _ip,
    in_parallel,
    read_all,
    read_sysctls,
    read_target,
)
from composens.system.world import WORLD


@dataclass
class BatchResult:
    failures: dict[int, str]  # line index -> ip's message
    clean: bool  # every line ran and succeeded
    after: LiveNamespace | None = None  # the namespace read back at the batch's end (ip: links, addresses, routes)
    qdiscs: dict[str, LiveQdisc] | None = None  # read back at a tc batch's end


def run_batch(netns: str | None, lines: list[str], tool: str = "ip", *, read_back: bool = False) -> BatchResult:
    """Run every line through `ip -force -batch` (or tc's); say which lines it reported failing and whether all ran.

    With read_back the batch ends by reading the namespace (no other process needed to see the result).
    """
    if not lines:
        return BatchResult({}, True)
    WORLD.changed(f"{tool} -batch in {netns or 'the host'}")
    read_back = read_back and tool != "bridge"  # FDB entries are judged by bridge's own report
    reads = (READ_LINES if tool == "ip" else "qdisc show\n") if read_back else ""
    options = (["-details", "-json"] if tool == "ip" else ["-json"]) if read_back else []
    done = _ip(netns, *options, "-force", "-batch", "-", stdin="\n".join(lines) + "\n" + reads, tool=tool)
    failures: dict[int, str] = {}
    message: list[str] = []
    for text in done.stderr.splitlines():
        if text.startswith("Command failed -:"):
            failures[int(text.rsplit(":", 1)[1]) - 1] = " ".join(message) or "failed"
            message = []
        elif text.strip():
            message.append(text.strip())
    if message and done.returncode != 0:
        # ip exits on some errors (a netns that vanished, say) without naming the line: the rest did not run.
        failures[-1] = " ".join(message)
    result = BatchResult(failures, done.returncode == 0)
    if read_back and DUMP_INTERRUPTED not in done.stderr:  # else the next refresh reads the namespace again
        try:
            documents = list(live.json_documents(done.stdout))
        except ValueError:
            documents = []
        if tool == "ip" and len(documents) == 3:
            result.after = live.parse_namespace(*documents)
        elif tool == "tc" and len(documents) == 1:
            result.qdiscs = parse_qdiscs(documents[0])
    return result


@dataclass
class WiringReport:
    done: list[str] = field(default_factory=list)  # the commands of what changed
    unwired: list[str] = field(default_factory=list)
    changed_at: float | None = None  # monotonic: when the first batch that changed something had run
    # The namespaces and their records as the run left them (read back after its changes): what the services
    # the run was not asked about are judged wired by, before their gates open and their exec commands run.
    state: dict[str, LiveNamespace] = field(default_factory=dict)
    records: dict[str, NodeRecord] = field(default_factory=dict)


class _Failed(Exception):
    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"`{command}` failed: {message}")
        self.command = command


class _Run:
    """One convergence: the namespaces, their records, what ran, and how to take it back."""

    def __init__(
        self,
        topo: Topology,
        targets: Mapping[str, Target],
        project: ProjectRecord,
        save: Callable[[], None],
        progress: Progress = SILENT,
    ):
        self.topo = topo
        self.progress = progress
        self.targets = targets
        self.project = project
        self.save = save
        self.state: dict[str, LiveNamespace] = {}
        self.records: dict[str, NodeRecord] = {}
        # each change that ran, with its place in the plan and its undo (workers finish in any order)
        self.ran: list[tuple[int, Change, tuple[Change, ...]]] = []
        self._place: dict[int, int] = {}  # id(change) -> its place in the plan
        self.before: dict[str, NodeRecord] = {}  # the records as the run found them, put back by a rollback
        self.report = WiringReport()
        self.qdiscs = False  # whether the namespaces' qdiscs are read (when conditions are in play)
        self.after: dict[str, LiveNamespace] = {}  # links, addresses, routes as a node's last ip batch read them back
        self.after_qdiscs: dict[str, dict[str, LiveQdisc]] = {}  # qdiscs as its last tc batch read them back
        self._lock = threading.Lock()
        self._tick = 0  # waves run so far
        # node -> the last wave that changed its interfaces (ip) or its qdiscs (tc), and that read them back
        self._changed_at: dict[tuple[str, str], int] = {}
        self._read_at: dict[tuple[str, str], int] = {}
        self._qdisc_before: dict[tuple[str, str], dict[str, str] | None] = {}
        self._fds: dict[str, int] = {}

    def netns_of(self, node: str) -> str | None:
        return self.targets[node].netns if node in self.targets else self.topo.node(node).netns

    def command(self, change: Change) -> str:
        return ch.command(change, self.netns_of)

    # ------------------------------------------------------------------ records

    def claim(self, changes: Iterable[Change]) -> None:
        """Write down what is about to be made, before it exists: a crash leaves nothing unclaimed."""
        with self._lock:
            self._claim(changes)
            self.save()

    def _claim(self, changes: Iterable[Change]) -> None:
        for change in changes:
            match change:
                case ch.CreatePair(a, b):
                    self.records[a.node].interfaces[a.ifname] = Claim(None, str(b))
                    self.records[b.node].interfaces[b.ifname] = Claim(None, str(a))
                case ch.CreateBridge(node, name):
                    self.records[node].interfaces[name] = Claim(None)
                case ch.CreateVxlan(end):
                    self.records[end.node].interfaces[end.ifname] = Claim(None, fdb=())
                case ch.AppendFdb(node, ifname, remote):
                    port = self.records[node].interfaces.get(ifname)
                    if port is not None and remote not in (port.fdb or ()):
                        port.fdb = (*(port.fdb or ()), remote)
                case ch.AddAddress(node, ifname, address):
                    self.records[node].addresses.setdefault(ifname, set()).add(address)
                case ch.AddRoute(node, route):
                    self.records[node].routes[route.key] = str(route)
                case ch.SetQdisc(node, ifname, conditions):
                    self._qdisc_before[node, ifname] = self.records[node].qdiscs.get(ifname)
                    self.records[node].qdiscs[ifname] = conditions.spelled()

    def note(self, change: Change, *, ran: bool) -> None:
        """Bring the record in line with one change that ran, or withdraw the claim of one that did not."""
        with self._lock:  # workers of different namespaces touch each other's records (a veth's peer)
            self._note(change, ran=ran)

    def _note(self, change: Change, *, ran: bool) -> None:
        match change:
            case ch.CreatePair(a, b) if not ran:
                self.records[a.node].interfaces.pop(a.ifname, None)
                self.records[b.node].interfaces.pop(b.ifname, None)
            case ch.CreateBridge(node, name) if not ran:
                self.records[node].interfaces.pop(name, None)
            case ch.CreateVxlan(end) if not ran:
                self.records[end.node].interfaces.pop(end.ifname, None)
            case ch.AppendFdb(node, ifname, remote) if not ran:
                port = self.records[node].interfaces.get(ifname)
                if port is not None and port.fdb is not None:
                    port.fdb = tuple(r for r in port.fdb if r != remote)
            case ch.DeleteLink(node, ifname, peer) if ran:
                self.records[node].forget(ifname)
                if peer is not None and peer.node in self.records:
                    self.records[peer.node].forget(peer.ifname)
            case ch.AddAddress(node, ifname, address) if not ran:
                self.records[node].addresses.get(ifname, set()).discard(address)
            case ch.DelAddress(node, ifname, address) if ran:
                self.records[node].addresses.get(ifname, set()).discard(address)
            case ch.AddRoute(node, route, replace) if not ran and not replace:
                self.records[node].routes.pop(route.key, None)
            case ch.DelRoute(node, route) if ran:
                self.records[node].routes.pop(route.key, None)
            case ch.SetQdisc(node, ifname) if not ran:
                before = self._qdisc_before.get((node, ifname))
                if before is None:
                    self.records[node].qdiscs.pop(ifname, None)
                else:
                    self.records[node].qdiscs[ifname] = before
            case ch.DelQdisc(node, ifname) if ran:
                self.records[node].qdiscs.pop(ifname, None)

    def settle_claims(self) -> None:
        """After a run: learn the ifindex of what was made; forget what is no longer there."""
        for node, record in self.records.items():
            ns = self.state.get(node)
            if ns is None:
                continue
            mark = ch.marker(self.topo.project)
            for ifname, claim in list(record.interfaces.items()):
                found = ns.links.get(ifname)
                if found is None:
                    record.forget(ifname)
                elif claim.index is None and found.alias == mark:
                    claim.index = found.index
            for ifname, addresses in list(record.addresses.items()):
                present = {a.address for a in ns.addresses_of(ifname)}
                record.addresses[ifname] = addresses & present
            keys = {r.key for r in ns.routes}
            for key in [k for k in record.routes if k not in keys]:
                del record.routes[key]
            if self.qdiscs:
                for ifname in [i for i in record.qdiscs if i not in ns.qdiscs]:
                    del record.qdiscs[ifname]

    # ------------------------------------------------------------------ running

    def execute(self, waves: Sequence[Sequence[Change]]) -> None:
        for wave in waves:
            if wave:
                self._wave(wave)

    def _affects(self, change: Change) -> set[str]:
        """The namespaces a change alters: its own, and a pair's two ends' or a deleted veth's peer's."""
        nodes = {change.node}
        if isinstance(change, ch.CreatePair):
            nodes |= {change.a.node, change.b.node}
        if isinstance(change, ch.CreateVxlan):
            nodes.add(change.end.node)
        if isinstance(change, ch.DeleteLink) and change.peer is not None:
            nodes.add(change.peer.node)
        return nodes

    def refresh(self, nodes: set[str]) -> None:
        """Bring `state` up to date for `nodes`: from their batches' read-backs where those came after every
        change to them, else by reading them again."""

        def behind(node: str, tool: str) -> bool:
            return self._changed_at.get((node, tool), -1) > self._read_at.get((node, tool), -1)

        stale = {n for n in nodes if n in self.targets and (behind(n, "ip") or behind(n, "tc"))}
        for node in nodes - stale:
            known = self.state.get(node, live.EMPTY)
            current = self.after.get(node, known)
            # An ip read-back carries no qdiscs: they are tc's read-back's, else the ones known before.
            qdiscs = self.after_qdiscs.get(node, known.qdiscs)
            self.state[node] = replace(current, qdiscs={k: v for k, v in qdiscs.items() if k in current.links})
        if stale:
            self.state.update(read_all({n: self.targets[n] for n in stale}, qdiscs=self.qdiscs))

    def _wave(self, wave: Sequence[Change]) -> None:
        """Run one wave: per namespace its sysctls, then its batch; namespaces side by side."""
        self._tick += 1
        by_node: dict[str, list[Change]] = {}
        crossed: set[str] = set()  # nodes another namespace's batch changes: their own read-back may predate it
        for change in wave:
            self._place.setdefault(id(change), len(self._place))
            by_node.setdefault(change.node, []).append(change)
            for node in self._affects(change):
                self._changed_at[node, ch.tool(change)] = self._tick
                if isinstance(change, ch.CreatePair | ch.CreateVxlan | ch.DeleteLink):
                    self._changed_at[node, "tc"] = self._tick  # an interface's qdisc comes and goes with it
                if node != change.node:
                    crossed.add(node)
        outcomes = in_parallel(self._node_changes, list(by_node.items()))
        for node in crossed:
            for tool in ("ip", "tc"):
                if self._read_at.get((node, tool)) == self._tick:
                    self._read_at[node, tool] = self._tick - 1
        failure = next((o for o in outcomes if o is not None), None)
        if failure is not None:
            raise failure

    def _node_changes(self, job: tuple[str, list[Change]]) -> _Failed | None:
        node, changes = job
        sysctls = [c for c in changes if isinstance(c, ch.WriteSysctls)]
        for change, outcome in self._write_sysctls(node, sysctls):
            if isinstance(outcome, OSError):
                self.note(change, ran=False)
                return _Failed(self.command(change), outcome.strerror or str(outcome))
            previous = outcome
            self._done(change, (ch.WriteSysctls(change.node, change.ifname, change.family, previous, sign="~"),))
            with self._lock:
                key = f"{change.family}:{change.ifname}"
                if change.sign == "+":
                    self.records[node].sysctls.setdefault(key, dict(previous))
                elif change.sign == "-":
                    self.records[node].sysctls.pop(key, None)
        lines = [c for c in changes if not isinstance(c, ch.WriteSysctls)]
        # One batch per run of lines for one program, in the order planned (and printed).
        for tool, segment in itertools.groupby(lines, key=ch.tool):
            failed = self._batch(node, list(segment), tool)
            if failed is not None:
                return failed
        self.progress.advance(WIRING, len(changes))
        return None

    def _batch(self, node: str, changes: Sequence[Change], tool: str) -> _Failed | None:
        if not changes:
            return None
        result = run_batch(
            self.netns_of(node), [ch.batch_line(c, self.netns_of) for c in changes], tool, read_back=True
        )
        ran = time.monotonic()
        with self._lock:
            if self.report.changed_at is None:
                self.report.changed_at = ran
            if result.after is not None:
                self._read_at[node, "ip"] = self._tick
                self.after[node] = result.after
            if result.qdiscs is not None:
                self._read_at[node, "tc"] = self._tick
                self.after_qdiscs[node] = result.qdiscs
        if result.clean:
            for change in changes:
                self._done(change, self._undo(change))
            return None
        # ip reported failures, or stopped early: read again and judge each line by its effect.
        seen = self._look(changes)
        failed: tuple[Change, str] | None = None
        for i, change in enumerate(changes):
            if ch.visible(change, seen, self.topo.project):
                self._done(change, self._undo(change))
                continue
            self.note(change, ran=False)
            if failed is None:
                failed = (change, result.failures.get(i) or result.failures.get(-1) or "ip reported no reason")
        if failed is None:
            return None
        message = failed[1]
        if "qdisc kind is unknown" in message and "netem" in self.command(failed[0]):
            message += " (this kernel has no sch_netem: delay, jitter, loss, corrupt, duplicate and reorder need it)"
        return _Failed(self.command(failed[0]), message)

    def _look(self, changes: Sequence[Change]) -> dict[str, LiveNamespace]:
        nodes = {c.node for c in changes}
        for change in changes:
            if isinstance(change, ch.CreatePair):
                nodes |= {change.a.node, change.b.node}
            if isinstance(change, ch.CreateVxlan):
                nodes.add(change.end.node)
        seen = {}
        for node in nodes:
            try:
                seen[node] = read_target(self.targets[node], qdiscs=True) if node in self.targets else live.EMPTY
            except WiringError:
                seen[node] = live.EMPTY  # the namespace is gone: nothing in it took effect
        return seen

    def _done(self, change: Change, undo: tuple[Change, ...]) -> None:
        with self._lock:
            self.ran.append((self._place.get(id(change), len(self._place)), change, undo))
            self.report.done.append(self.command(change))
        self.note(change, ran=True)

    def _undo(self, change: Change) -> tuple[Change, ...]:
        """The changes that take `change` back, from what the namespaces looked like before the run."""
        match change:
            case ch.CreatePair(a, b):
                return (ch.DeleteLink(a.node, a.ifname, b),)
            case ch.CreateBridge(node, name):
                return (ch.DeleteLink(node, name),)
            case ch.CreateVxlan(end):
                return (ch.DeleteLink(end.node, end.ifname),)
            case ch.DeleteLink(restore=restore):
                return restore
            case ch.SetLink(node, ifname, mtu, _, alias, state, _, mac):
                before = self.state.get(node, live.EMPTY).links.get(ifname)
                if before is None:
                    return ()
                return (
                    ch.SetLink(
                        node,
                        ifname,
                        before.mtu if mtu is not None else None,
                        None,  # a port left of its bridge goes back when the pair is made again
                        # An alias that was empty stays as it is: the claim covers the interface either way.
                        before.alias if alias is not None and before.alias else None,
                        ("up" if before.up else "down") if state is not None else None,
                        mac=before.mac if mac is not None else None,
                    ),
                )
            case ch.AddAddress(node, ifname, address):
                return (ch.DelAddress(node, ifname, address),)
            case ch.DelAddress(node, ifname, address):
                return (ch.AddAddress(node, ifname, address),)
            case ch.AddRoute(node, route, replace):
                old = next((r for r in self.state.get(node, live.EMPTY).routes if r.key == route.key), None)
                if replace and old is not None and old.gateway:
                    return (ch.AddRoute(node, converge.as_route(old), replace=True),)
                return (
                    ch.DelRoute(
                        node,
                        live.LiveRoute(route.family, route.destination, route.gateway, route.dev, route.kernel_metric),
                    ),
                )
            case ch.DelRoute(node, route):
                return (ch.AddRoute(node, converge.as_route(route)),) if route.gateway else ()
            case ch.SetQdisc(node, ifname) | ch.DelQdisc(node, ifname):
                old_qdisc = self.state.get(node, live.EMPTY).qdiscs.get(ifname)
                if old_qdisc is not None and old_qdisc.conditions is not None:
                    return (ch.SetQdisc(node, ifname, old_qdisc.conditions),)
                return (ch.DelQdisc(node, ifname),) if isinstance(change, ch.SetQdisc) else ()
        return ()

    def _write_sysctls(
        self, node: str, changes: list[ch.WriteSysctls]
    ) -> list[tuple[ch.WriteSysctls, tuple[tuple[str, str], ...] | OSError]]:
        """Write each change's values, all from one thread inside the namespace, in order, up to the first that
        fails; return what each replaced (only the values that differed), or why it failed."""
        outcomes: list[tuple[ch.WriteSysctls, tuple[tuple[str, str], ...] | OSError]] = []

        def write() -> None:
            for change in changes:
                base = f"/proc/sys/net/ipv{change.family}/conf/{change.ifname}"
                previous: list[tuple[str, str]] = []
                try:
                    for key, value in change.values:
                        with open(f"{base}/{key}", "r+") as f:
                            old = f.read().strip()
                            if old != value:
                                WORLD.changed(f"{base}/{key}")
                                f.seek(0)
                                f.write(value)
                                previous.append((key, old))
                except OSError as e:
                    outcomes.append((change, e))
                    return
                outcomes.append((change, tuple(previous)))

        if not changes:
            return outcomes
        target = self.targets.get(node, HOST_TARGET)
        if target.netns is None and target.path == HOST_TARGET.path:
            write()
        else:
            try:
                run_in_netns(self.fd(node), write)
            except OSError as e:  # the namespace cannot be entered (its container stopped, say): nothing written
                return [(changes[0], e)]
        return outcomes

    def fd(self, node: str) -> int:
        if node not in self._fds:
            self._fds[node] = os.open(self.targets[node].path, os.O_RDONLY)
        return self._fds[node]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def rollback(self) -> str:
        """Undo what ran, newest first (in the plan's order), put the record back as the run found it, and
        say whether that left the lab as it was before the run."""
        failures = []
        lost = []  # what nothing could put back
        undone = sorted(self.ran, key=lambda item: item[0], reverse=True)
        self.ran = []
        remade: dict[str, dict[str, Claim]] = {}
        for _, change, undo in undone:
            if not undo:
                if isinstance(change, ch.DeleteLink):
                    lost.append(f"{change.ifname} in {self.netns_of(change.node) or 'the host'}")
                continue
            for step in undo:
                if isinstance(step, ch.CreatePair):
                    remade.setdefault(step.a.node, {})[step.a.ifname] = Claim(None, str(step.b))
                    remade.setdefault(step.b.node, {})[step.b.ifname] = Claim(None, str(step.a))
                elif isinstance(step, ch.CreateBridge):
                    remade.setdefault(step.node, {})[step.name] = Claim(None)
                elif isinstance(step, ch.CreateVxlan):
                    remade.setdefault(step.end.node, {})[step.end.ifname] = Claim(None, fdb=())
            self.claim(c for c in undo if isinstance(c, ch.MAKES_INTERFACE))  # before they exist
            for step in undo:
                try:
                    self._wave([step])
                except (_Failed, WiringError) as e:
                    failures.append(str(e))
                    continue
                if isinstance(step, ch.AppendFdb) and step.ifname in remade.get(step.node, {}):
                    # The port made again replicates to that host again: its record says so.
                    port = remade[step.node][step.ifname]
                    port.fdb = (*(port.fdb or ()), step.remote)
        self.ran = []
        # The record goes back to what it said before the run (so nothing a rollback put back is taken for
        # composens' that was not), with what was made again claimed afresh: it has new ifindexes.
        for node, before in self.before.items():
            restored = copy.deepcopy(before)
            restored.interfaces.update(remade.get(node, {}))
            self.project.nodes[node] = self.records[node] = restored
        self.save()
        if failures:
            return f"undoing it failed too ({failures[0]}); run composens up -d again to converge"
        if lost:
            return (
                f"undid what this run had done, except that nothing could put back {', '.join(lost)}; "
                "run composens up -d again to converge"
            )
        return f"undid what this run had done: {FULLY_UNDONE}"


FULLY_UNDONE = "the lab is as it was before"  # what a rollback says when it put everything back


# The kernel frees a dead namespace's devices a moment after the namespace goes: a VXLAN end made again at once
# for a container that restarted can find its VNI still taken by the old one. Such a run, undone, is tried again.
VNI_STILL_TAKEN = "VNI already exists"
VNI_RETRIES = (0.2, 0.5, 1.0)  # s to wait before each new try


def converge_lab(
    topo: Topology,
    scope: converge.Scope,
    targets: Mapping[str, Target],
    project: ProjectRecord,
    save: Callable[[], None],
    progress: Progress = SILENT,
) -> WiringReport:
    """Bring the namespaces in `targets` to what the file declares; on failure undo this run and raise.

    `targets` holds every namespace the run may read and change (their entries verified by the
    caller). `save` writes the record: called before each change it claims. `progress` is told of the changes
    to make and of each namespace's as they are made.
    """
    for pause in (*VNI_RETRIES, None):
        try:
            return _converge_once(topo, scope, targets, project, save, progress)
        except WiringError as e:
            if VNI_STILL_TAKEN not in e.message:
                raise
            if pause is None:  # still taken after the waits: not a dead namespace's, someone else's
                raise WiringError(
                    f"{e.message}; a VXLAN device of another project (or the system's) holds that VNI on this "
                    "host's UDP port: declare another vni for the link or LAN, or another vxlan.port"
                ) from e
            if FULLY_UNDONE not in e.message:
                raise  # not fully undone: trying again would build on what is left
            time.sleep(pause)
    raise AssertionError("unreachable: the last try returns or raises")


def _converge_once(
    topo: Topology,
    scope: converge.Scope,
    targets: Mapping[str, Target],
    project: ProjectRecord,
    save: Callable[[], None],
    progress: Progress,
) -> WiringReport:
    run = _Run(topo, targets, project, save, progress)
    try:
        run.qdiscs = scope.qdiscs
        run.state = read_all(targets, qdiscs=scope.qdiscs)
        run.records = {node: project.node(node, target.identity) for node, target in targets.items()}
        run.before = copy.deepcopy(run.records)
        plan = converge.diff(topo, run.state, run.records, scope, check_gateways=True)
        run.report.unwired = plan.unwired
        if plan.problems:
            raise ConfigError(plan.problems[0])
        if plan.conflicts:
            raise ConflictError(plan.conflicts[0])
        _apply(run, plan, scope)
        run.report.state, run.report.records = run.state, run.records
    finally:
        run.close()
    return run.report


def _apply(run: _Run, plan: converge.Diff, scope: converge.Scope) -> None:
    creations = plan.creations
    made = [c for c in creations if isinstance(c, ch.MAKES_INTERFACE)]
    rest = [c for c in creations if not isinstance(c, ch.MAKES_INTERFACE)]
    if plan.removals or creations:
        run.progress.expect(WIRING, len(plan.removals) + len(creations))
    try:
        run.execute([plan.removals])
        run.claim(creations)  # after the removals, which forget what they delete: a new end may reuse a name
        run.execute([made])
        if made:
            crash_point("after-veths")
        run.execute([rest])
        run.refresh({node for change in plan.removals + creations for node in run._affects(change)})
        routes = converge.route_diff(run.topo, run.state, run.records, scope)
        if routes.conflicts:
            raise ConflictError(routes.conflicts[0])
        run.claim(routes.routes)
        if routes.routes:
            run.progress.expect(WIRING, len(routes.routes))
        run.execute([routes.routes])
        run.refresh({change.node for change in routes.routes})
        run.settle_claims()
    except (_Failed, ConflictError, WiringError) as e:
        outcome = run.rollback()
        if isinstance(e, ConflictError):
            raise
        message = e.message if isinstance(e, WiringError) else str(e)
        raise WiringError(f"{message}; {outcome}") from e


def remove_project(
    topo: Topology, targets: Mapping[str, Target], project: ProjectRecord, save: Callable[[], None]
) -> list[str]:
    """Delete every interface composens made for the project in `targets` (down, prune); return the commands."""
    run = _Run(topo, targets, project, save)
    try:
        run.state = read_all(targets)
        run.records = {node: project.node(node, target.identity) for node, target in targets.items()}
        mark = ch.marker(topo.project)
        deletions: list[Change] = []
        gone: set[str] = set()
        for node, ns in run.state.items():
            for ifname, claim in run.records[node].interfaces.items():
                if converge.owned(ns.links.get(ifname), claim, mark) and f"{node}:{ifname}" not in gone:
                    deletions.append(ch.DeleteLink(node, ifname))
                    gone |= {f"{node}:{ifname}", claim.peer or ""}
        try:
            run.execute([deletions])
        except _Failed as e:
            raise WiringError(str(e)) from e
        for node in targets:
            project.nodes.pop(node, None)
        return run.report.done
    finally:
        run.close()


def prepare_hub(path: str) -> None:
    """Switch IPv6 off in a hub namespace (its bridges and ports follow `default`): no ND, MLD or RA of its own."""

    failing = f"cannot switch IPv6 off in the hub namespace {path}"
    files = tuple(f"/proc/sys/net/ipv6/conf/{conf}/{key}" for conf, key, _ in ch.HUB_SYSCTLS)
    wanted = tuple(value for _, _, value in ch.HUB_SYSCTLS)
    if read_sysctls(path, files, failing) == wanted:
        return
    WORLD.changed(f"the sysctls of the hub {path}")

    def write() -> None:
        for file, value in zip(files, wanted, strict=True):
            with open(file, "r+") as f:
                if f.read().strip() != value:
                    f.seek(0)
                    f.write(value)

    inside(path, write, failing)
