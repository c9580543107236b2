"""Fault scenarios on a running lab: the steps done through the lab's own run-time changes, and the lab restored.

A step changes the lab the way its command would: `link` and `partition` hold ends down in the record and converge
(as `composens link down`), `netem` records conditions and converges (as `netem set`), pause and the rest run
through compose (stop and kill unlink first; start and restart relink and rewire afterwards, as `watch` would
once it saw the container start), exec and checks run through the engine's API as `composens test` does. So a
crash mid-scenario leaves only run-time state that `up -d` (compose unpauses and starts), `link up` and
`netem reset --all` undo, and `ps --netns` shows it (ends `down (set)`, conditions, `paused` drift).

When a scenario ends, fails or is stopped, restore() puts back what it changed: each service it touched to the
state it had (unpaused, started, or stopped again), each end it touched to its record before (up, or its
conditions), then converges the whole lab to its file. `--keep` leaves the last state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from composens.lab.runtime import RunTimeChanges
from composens.model.checks import tail
from composens.model.conditions import Conditions
from composens.model.containers import Container
from composens.model.errors import ComposensError, ConfigError
from composens.model.record import State
from composens.model.scenarios import (
    Declared,
    Scenario,
    ScenarioReport,
    StepRecord,
    Verdict,
    placement_problem,
)
from composens.model.topology import EXTENSION, Endpoint, Topology
from composens.system.kernel import netns
from composens.system.run.scenario import Done


@dataclass(frozen=True)
class _Snapshot:
    """What a scenario may change, as it was before it began."""

    containers: dict[str, tuple[bool, bool]]  # service: (running, paused); absent: no container
    down: set[str]  # of the ends it touches, those held down in the record
    conditions: dict[str, dict[str, str]]  # of the ends it touches, those with run-time conditions


@dataclass
class _Restored:
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class ScenarioRuns(RunTimeChanges):
    """Fault scenarios on a running lab."""

    def declared_scenarios(self, topo: Topology) -> Declared:
        """The probes and scenarios the file declares; none is an error (exit 3)."""
        declared: Declared | None = topo.scenarios
        if declared is None or not declared.scenarios:
            raise ConfigError(f"{topo.source}: no scenarios are declared ({EXTENSION}.scenarios)")
        return declared

    def choose_scenarios(self, topo: Topology, names: Sequence[str]) -> list[Scenario]:
        """The scenarios named, in the order given, each checked to run here; an unknown name is exit 3."""
        declared = self.declared_scenarios(topo)
        unknown = [n for n in names if n not in declared.scenarios]
        if unknown:
            known = ", ".join(declared.scenarios)
            raise ConfigError(
                f"{topo.source}: no such scenario: {', '.join(repr(n) for n in unknown)} (declared: {known})"
            )
        chosen = [declared.scenarios[n] for n in dict.fromkeys(names)]
        for scenario in chosen:
            problem = placement_problem(scenario, declared.probes, topo)
            if problem:
                raise ConfigError(problem)
            self._check_qdiscs(scenario.conditions())  # this kernel can set what its netem steps ask for
        return chosen

    def run_scenario(
        self,
        topo: Topology,
        scenario: Scenario,
        *,
        keep: bool = False,
        fail_fast: bool = False,
        stop: Callable[[], str | None] = lambda: None,
        on_step: Callable[[StepRecord], None] = lambda step: None,
        on_verdict: Callable[[Verdict], None] = lambda verdict: None,
    ) -> ScenarioReport:
        """Run a scenario against the running lab and restore the lab afterwards (unless keep)."""
        from composens.system.run.monitor import Monitor
        from composens.system.run.scenario import Runner

        declared = self.declared_scenarios(topo)
        containers, by_id = self._containers(topo)
        running = {c.service: c for c in containers if c.running and c.service in topo.services}
        needed = {declared.probes[p].service: f"probe {p}" for p in scenario.probes}
        needed |= {end.node: f"a step on {end}" for end in sorted(scenario.ends(), key=str)}
        for service, why in sorted(needed.items()):
            if service not in running:
                raise ComposensError(f"service {service} is not running ({why} needs it): `composens up -d` first")
        paths = {}
        for name in scenario.probes:
            service = declared.probes[name].service
            path, _, _ = netns.resolve_target(running[service], by_id)  # docker's mount, checked to be it now
            if path is None:
                raise ComposensError(f"service {service} has no network namespace to probe from (probe {name})")
            paths[name] = path
        probes = [(declared.probes[name], paths[name]) for name in scenario.probes]
        snapshot = self._snapshot(topo, scenario, containers)
        actions = _LabActions(self, topo)
        runner = Runner(
            scenario,
            declared.probes,
            actions,
            lambda epoch: Monitor(probes, epoch=epoch),
            check_waits={c.name: c.wait for c in topo.checks},
            fail_fast=fail_fast,
            stop=stop,
            on_step=on_step,
            on_verdict=on_verdict,
        )
        report: ScenarioReport | None = None
        try:
            report = runner.run()
        finally:
            restored = _Restored() if keep else self.restore(topo, scenario, snapshot)
        return dataclasses.replace(
            report, restored=tuple(restored.lines), restore_errors=tuple(restored.errors), kept=keep
        )

    def _snapshot(self, topo: Topology, scenario: Scenario, containers: list[Container]) -> _Snapshot:
        touched = scenario.services()
        states = {c.service: (c.running, c.paused) for c in containers if c.service in touched}
        record = self.store.read().projects.get(topo.project)
        ends = {str(end) for end in scenario.ends()}
        down = set(record.down) & ends if record else set()
        conditions = {k: dict(v) for k, v in record.conditions.items() if k in ends} if record else {}
        return _Snapshot(states, down, conditions)

    def restore(self, topo: Topology, scenario: Scenario, snapshot: _Snapshot) -> _Restored:
        """Put back what the scenario changed, then converge the lab to its file; say what that did."""
        done = _Restored()
        for part in (self._restore_containers, self._restore_record):
            try:
                part(topo, scenario, snapshot, done)
            except ComposensError as e:
                done.errors.append(e.message)
        try:
            report = self.link(topo, set(topo.services))
        except ComposensError as e:
            done.errors.append(f"converging the lab: {e.message}")
            return done
        if report.wired:
            done.lines.append(f"converged the lab to its file: {len(report.wired)} change(s)")
        done.errors += [f"not wired: {reason}" for reason in report.unwired]
        return done

    def _restore_containers(self, topo: Topology, scenario: Scenario, snapshot: _Snapshot, done: _Restored) -> None:
        touched = scenario.services()
        if not touched:
            return
        now = {c.service: (c.running, c.paused) for c in self.compose.containers(topo.project) if c.service in touched}
        for service in sorted(touched):
            was_running, was_paused = snapshot.containers.get(service, (False, False))
            is_running, is_paused = now.get(service, (False, False))
            try:
                if was_running and not was_paused:
                    if is_paused:
                        self.compose.quietly(["unpause", service])
                        done.lines.append(f"unpaused {service}")
                    elif not is_running:
                        self.compose.quietly(["start", service])
                        done.lines.append(f"started {service}")
                elif was_running and was_paused and is_running and not is_paused:
                    self.compose.quietly(["pause", service])
                    done.lines.append(f"paused {service} again")
                elif not was_running and is_running:
                    if is_paused:
                        self.compose.quietly(["unpause", service])
                    self.unlink(topo, {service})
                    self.compose.quietly(["stop", service])
                    done.lines.append(f"stopped {service} again")
            except ComposensError as e:
                done.errors.append(f"{service}: {e.message}")

    def _restore_record(self, topo: Topology, scenario: Scenario, snapshot: _Snapshot, done: _Restored) -> None:
        ends = sorted(str(end) for end in scenario.ends())
        if not ends:
            return
        with self.store.locked() as state:
            record = state.project(topo.project)
            for end in ends:
                if end in record.down and end not in snapshot.down:
                    record.down.discard(end)
                    done.lines.append(f"link up {end}")
                elif end not in record.down and end in snapshot.down:
                    record.down.add(end)
                    done.lines.append(f"link down {end} again")
                before = snapshot.conditions.get(end)
                if record.conditions.get(end) != before:
                    if before is None:
                        record.conditions.pop(end, None)
                        done.lines.append(f"conditions of {end} back to the file")
                    else:
                        record.conditions[end] = before
                        done.lines.append(f"conditions of {end} back to what netem set had")


class _LabActions:
    """What the runner's steps do, through the lab (composens.system.run.scenario.Actions)."""

    def __init__(self, lab: ScenarioRuns, topo: Topology) -> None:
        self.lab = lab
        self.topo = topo

    def _converge(
        self, services: set[str], first: Callable[[State, list[Container]], None] | None = None
    ) -> float | None:
        """Link and converge; return when the first change was made (monotonic), or None when none was."""
        from composens.system.run.scenario import StepFailed

        try:
            report = self.lab.link(self.topo, services, first=first)
        except ComposensError as e:
            raise StepFailed(e.message) from e
        if report.conflicts:
            raise StepFailed(report.conflicts[0].detail)
        failed = [r for r in report.execs if not r.ok]
        if failed:
            raise StepFailed(f"exec {failed[0].service}: `{failed[0].command}` did not succeed: {failed[0].verdict}")
        return report.changed_at

    def hold(self, ends: Sequence[Endpoint], *, down: bool) -> Done:
        def record_them(state: State, containers: list[Container]) -> None:
            self.lab._require_running(containers, {end.node for end in ends})
            record = state.project(self.topo.project)
            for end in ends:
                (record.down.add if down else record.down.discard)(str(end))

        return Done(self._converge({end.node for end in ends}, record_them))

    def conditions(self, ends: Sequence[tuple[Endpoint, Conditions | None]]) -> Done:
        def record_them(state: State, containers: list[Container]) -> None:
            self.lab._require_running(containers, {end.node for end, _ in ends})
            record = state.project(self.topo.project)
            for end, conditions in ends:
                if conditions is None:
                    record.conditions.pop(str(end), None)
                else:
                    record.conditions[str(end)] = conditions.spelled()

        return Done(self._converge({end.node for end, _ in ends}, record_them))

    def services(self, action: str, services: Sequence[str]) -> Done:
        from composens.system.run.scenario import StepFailed

        chosen = set(services)
        try:
            if action in ("stop", "kill"):
                self.lab.unlink(self.topo, chosen)  # as `composens stop` does: its entries go first
            self.lab.compose.quietly([action, *services])
        except ComposensError as e:
            raise StepFailed(e.message) from e
        if action in ("start", "restart"):
            self._converge(chosen)  # relinked and rewired, as watch does once it sees the start
            return Done(detail="relinked and rewired")
        return Done()

    def exec(self, service: str, command: Sequence[str], timeout: float) -> Done:
        from composens.system.run import probe
        from composens.system.run.scenario import StepFailed

        containers, _ = self.lab._containers(self.topo)
        container = next((c for c in containers if c.service == service and c.running), None)
        if container is None:
            raise StepFailed(f"service {service} is not running")
        try:
            out = probe.run_exec(
                container.id,
                command,
                timeout=timeout,
                docker=self.lab.compose.docker,
                use_api=self.lab.compose.use_api,
            )
        except probe.ProbeError as e:
            raise StepFailed(str(e)) from e
        if out.exit_code is None:
            raise StepFailed(f"timed out after {timeout:g} s")
        if out.exit_code != 0:
            raise StepFailed(f"exit code {out.exit_code}: {tail(out.stderr if out.stderr.strip() else out.stdout)}")
        return Done(detail=tail(out.stdout) if out.stdout.strip() else None)

    def check(self, name: str) -> tuple[bool, str | None]:
        from composens.system.run import probe

        check = dataclasses.replace(next(c for c in self.topo.checks if c.name == name), wait=None)
        (result,) = probe.run_checks([check], self.lab.check_targets(self.topo), probe=self.lab.check_attempt())
        return result.result == "pass", result.reason
