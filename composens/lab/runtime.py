"""Run-time changes and questions of a running lab: link down/up, netem, capture, checks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from composens.lab.core import LabCore
from composens.model.containers import Container
from composens.model.errors import ComposensError, ConfigError
from composens.model.packets import DEFAULT_SNAPLEN
from composens.model.record import State
from composens.model.report import (
    ConditionsRow,
    LinkReport,
)
from composens.model.topology import HOST, HUB, Endpoint, Topology
from composens.system.kernel import netns

if TYPE_CHECKING:
    from composens.lab.capture import CaptureSession, FlightRecorder, WindowWriter
    from composens.model.capture import CaptureTarget, RecorderSettings
    from composens.model.checks import Check, CheckResult, CheckUpdate
    from composens.model.conditions import Conditions
    from composens.system.kernel.capture import CapturePoint, Gone, Locate
    from composens.system.run import probe


class RunTimeChanges(LabCore):
    """Run-time changes and questions of a running lab: link down/up, netem, capture, checks."""

    def run_checks(
        self, topo: Topology, names: Iterable[str], *, fail_fast: bool, on_update: Callable[[CheckUpdate], None]
    ) -> tuple[CheckResult, ...]:
        """Run the declared checks (those named, or all) against the running lab."""
        from composens.system.run import probe

        if not topo.checks:
            raise ConfigError(f"{topo.source}: no checks are declared (x-composens.checks)")
        chosen = list(names)
        unknown = sorted(set(chosen) - {c.name for c in topo.checks})
        if unknown:
            raise ConfigError(f"{topo.source}: no such check: {', '.join(repr(n) for n in unknown)}")
        checks = [c for c in topo.checks if not chosen or c.name in chosen]
        return probe.run_checks(
            checks, self.check_targets(topo), fail_fast=fail_fast, on_update=on_update, probe=self.check_attempt()
        )

    def check_targets(self, topo: Topology) -> dict[str, probe.Target]:
        """Where each service's checks run: its first container, in the namespace docker mounted for it (verified
        to be its namespace now)."""
        from composens.system.run import probe

        containers, by_id = self._containers(topo)
        targets: dict[str, probe.Target] = {}
        for c in sorted(containers, key=lambda c: (c.service, c.number)):
            if c.service in topo.services and c.service not in targets:
                path, _, _ = netns.resolve_target(c, by_id)
                targets[c.service] = probe.Target(c.service, c.id, path, c.running)
        return targets

    def check_attempt(self) -> Callable[[Check, probe.Target], probe.Attempt]:
        """One try of a check in its target, through this lab's engine."""
        import functools

        from composens.system.run import probe

        return functools.partial(probe.attempt, docker=self.compose.docker, use_api=self.compose.use_api)

    # ------------------------------------------------------------------ run-time changes

    def endpoint(self, topo: Topology, text: str) -> Endpoint:
        """Read SERVICE:IFNAME naming a declared end of a link or a LAN member; an error (exit 3) otherwise."""
        service, _, ifname = text.partition(":")
        end = Endpoint(service, ifname)
        if service not in topo.services:
            raise ConfigError(f"{topo.source}: no such service: {service!r} (expected SERVICE:IFNAME)")
        if ifname not in topo.interfaces_of(service):
            declared = ", ".join(topo.interfaces_of(service)) or "none"
            raise ConfigError(
                f"{topo.source}: {service} has no interface {ifname!r} of a link or LAN (it has: {declared})"
            )
        return end

    @staticmethod
    def _require_running(containers: list[Container], services: Iterable[str]) -> None:
        for service in sorted(services):
            if not any(c.running and c.service == service for c in containers):
                raise ComposensError(f"service {service} is not running: `composens up -d {service}` first")

    def hold(self, topo: Topology, end: Endpoint, *, down: bool) -> LinkReport:
        """Set an end down (the peer loses carrier) or up again; kept across restarts until `link up` or down."""

        def record_it(state: State, containers: list[Container]) -> None:
            self._require_running(containers, [end.node])
            record = state.project(topo.project)
            (record.down.add if down else record.down.discard)(str(end))

        return self.link(topo, {end.node}, first=record_it)

    def set_conditions(self, topo: Topology, ends: list[Endpoint], conditions: Conditions | None) -> LinkReport:
        """Replace the conditions on ends' egress at run time (None: back to what the file declares)."""
        services = {end.node for end in ends if end.node in topo.services}
        if conditions is not None:
            self._check_qdiscs([(f"netem set {end}", conditions) for end in ends])

        def record_them(state: State, containers: list[Container]) -> None:
            self._require_running(containers, services)
            record = state.project(topo.project)
            for end in ends:
                if conditions is None:
                    record.conditions.pop(str(end), None)
                else:
                    record.conditions[str(end)] = conditions.spelled()

        return self.link(topo, services, first=record_them)

    def reset_all_conditions(self, topo: Topology) -> LinkReport:
        with self.store.locked() as state:
            ends = list(state.project(topo.project).conditions)
            state.project(topo.project).conditions.clear()
        return self.link(topo, {end.split(":", 1)[0] for end in ends} or set(topo.services))

    def conditions(self, topo: Topology, services: set[str]) -> list[ConditionsRow]:
        """Every lab interface with conditions: what the kernel has now, and whether the file or a person set them.

        A service's ends are listed under its name; the host's ends under `host`; a LAN's hub ports under the
        LAN's name, each by the member end it faces (`lan1`, `r1:eth1`: what r1 receives on lan1). With services
        named, the host ends and hub ports that face them come too.
        """
        from composens.system.kernel import reading

        _, _, _, running = self._running(topo)
        state = self.store.read()
        targets = self._targets(topo, state, running)
        labels = _condition_labels(topo, services)
        # A container restarting while this reads takes its namespace along: its rows are left out, the rest stands.
        chosen = {n: t for n, t in targets.items() if n in services or n in (HOST, HUB)}
        seen = reading.read_all(chosen, qdiscs=True, vanished_ok=True)
        scope = self._scope(topo, state, targets, services)
        rows = []
        for node, ns in seen.items():
            for ifname in topo.interfaces_of(node):
                end = Endpoint(node, ifname)
                found = ns.qdiscs.get(ifname)
                declared = topo.conditions_of(end)
                at_run_time = scope.conditions.get(end)
                if end not in labels or (found is None and declared is None and at_run_time is None):
                    continue
                source = "run time" if at_run_time else ("declared" if declared else "not composens'")
                live_text = (str(found.conditions) if found.conditions else found.kind) if found else None
                wanted = at_run_time or declared
                rows.append(ConditionsRow(*labels[end], live_text, str(wanted) if wanted else None, source))
        return rows

    # ------------------------------------------------------------------ capture

    def open_capture(
        self,
        topo: Topology,
        names: Sequence[str] | None,
        *,
        expression: str = "",
        snaplen: int = DEFAULT_SNAPLEN,
        ring_blocks: int | None = None,
    ) -> CaptureSession:
        """Start capturing on the named targets (None: every interface of the lab on this host).

        Everything is checked before the first socket opens: an unknown target, one not there now (its service not
        running, its interface missing) or a filter tcpdump rejects is a ConfigError (exit 3); on any failure the
        sockets opened so far are closed. A target that goes away later is captured again once it is back.
        """
        from composens.lab.capture import CaptureSession
        from composens.model.capture import all_targets, resolve
        from composens.system.kernel import capture as capturing

        targets = all_targets(topo) if names is None else resolve(topo, names)
        if not targets:
            raise ConfigError(f"{topo.source}: nothing to capture: the lab has no link or LAN on this host")
        found = self._capture_points(topo, targets)
        for target, point in zip(targets, found, strict=True):
            if not isinstance(point, capturing.CapturePoint):
                raise ConfigError(f"capture target {target.name}: {point}")
        points = [p for p in found if isinstance(p, capturing.CapturePoint)]
        try:
            program = capturing.compile_filter(points[0], expression, snaplen)
        except capturing.InterfaceMissing as e:
            raise ConfigError(f"capture target {targets[0].name}: {e}; `composens up -d` first") from None
        capture = capturing.PacketCapture(
            program, ring_blocks or capturing.DEFAULT_RING_BLOCKS, locate=self._capture_locator(topo, targets)
        )
        try:
            for target, point in zip(targets, points, strict=True):
                try:
                    capture.add(point)
                except capturing.InterfaceMissing as e:
                    raise ConfigError(f"capture target {target.name}: {e}; `composens up -d` first") from None
        except BaseException:
            capture.close()
            raise
        return CaptureSession(targets, capture, snaplen, expression)

    def flight_recorder(
        self, topo: Topology, directory: Path, write: WindowWriter, *, settings: RecorderSettings | None = None
    ) -> FlightRecorder | None:
        """The flight recorder the file declares (x-composens.capture), or `settings`; None when neither says one.

        Its sockets are open on return (start() begins reading them). Unlike a capture, a target that is not there
        now is no error: it is captured once it is.
        """
        from composens.lab.capture import CaptureSession, FlightRecorder
        from composens.model.capture import recorder_targets
        from composens.system.kernel import capture as capturing

        settings = settings or topo.capture
        if settings is None:
            return None
        targets = recorder_targets(topo, settings)
        if not targets:
            return None
        found = self._capture_points(topo, targets)
        capture = capturing.PacketCapture(
            capturing.take_all(DEFAULT_SNAPLEN), locate=self._capture_locator(topo, targets)
        )
        try:
            for point in found:
                try:
                    capture.add(point if isinstance(point, capturing.CapturePoint) else None)
                except capturing.InterfaceMissing:
                    capture.add(None)  # looked for again while the recorder runs
        except BaseException:
            capture.close()
            raise
        return FlightRecorder(CaptureSession(targets, capture, DEFAULT_SNAPLEN), settings, directory, write)

    def _capture_locator(self, topo: Topology, targets: Sequence[CaptureTarget]) -> Locate:
        """Where a target is now, asked while a capture runs: a point, GONE for good, or None (not now)."""
        from composens.system.kernel.capture import GONE, CapturePoint

        def locate(interface_id: int) -> CapturePoint | Gone | None:
            (found,) = self._capture_points(topo, [targets[interface_id]], gone=True)
            return found if isinstance(found, CapturePoint) else (GONE if found is GONE else None)

        return locate

    def _capture_points(
        self, topo: Topology, targets: Sequence[CaptureTarget], *, gone: bool = False
    ) -> list[CapturePoint | Gone | str]:
        """Where each target is now: a point to open, or why it is not there (GONE, with gone=True, for good)."""
        from composens.system.kernel.capture import GONE, CapturePoint

        found: list[CapturePoint | Gone | str] = []
        services = {t.node for t in targets if t.node not in (HOST, HUB)}
        containers, by_id = self._containers(topo) if services else ([], {})
        hub_ours: bool | None = None
        for target in targets:
            if target.node == HOST:
                found.append(CapturePoint("/proc/self/ns/net", target.ifname))
            elif target.node == HUB:
                hub = topo.hub.netns if topo.hub is not None else None
                if hub_ours is None:
                    hub_ours = hub is not None and netns.hub_is_ours(
                        self.directory, self.store.read(), topo.project, hub
                    )
                if hub is not None and hub_ours:
                    found.append(CapturePoint(str(self.directory.path(hub)), target.ifname))
                else:
                    found.append(GONE if gone else f"the hub of LAN {target.name} is not up")
            else:
                mine = [c for c in containers if c.service == target.node]
                running = [c for c in mine if c.running]
                path = netns.resolve_target(running[0], by_id)[0] if running else None
                if path is not None:
                    found.append(CapturePoint(path, target.ifname, running[0].pid))
                elif gone and not mine:
                    found.append(GONE)  # removed (down, rm): it will not come back to this capture
                else:
                    found.append(f"service {target.node} is not running")
        return found


def _condition_labels(topo: Topology, services: set[str]) -> dict[Endpoint, tuple[str, str]]:
    """How `netem show` names each end it may list, for the chosen services: (service column, interface column)."""
    everything = services >= set(topo.services)

    def chosen(end: Endpoint) -> bool:
        return end.node in services or (end.node == HOST and everything)

    labels: dict[Endpoint, tuple[str, str]] = {}
    for pair in topo.links:
        for end, peer in ((pair.a, pair.b), (pair.b, pair.a)):
            if chosen(end) or (end.node == HOST and peer.node in services):
                labels[end] = (end.node, end.ifname)
    for lan in topo.lans:
        for member in lan.members:
            if chosen(member):
                labels[member] = (member.node, member.ifname)
                labels[lan.port_of(member)] = (lan.name, str(member))
    for tunnel in topo.tunnels:  # a cross-host link's end on this host
        if tunnel.lan is None and chosen(tunnel.end):
            labels[tunnel.end] = (tunnel.end.node, tunnel.end.ifname)
    return labels
