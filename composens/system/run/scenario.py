"""The timed runner of a scenario: its probes from start to end, its steps in order, each expectation judged.

The lab gives the runner its Actions (composens.lab.scenarios: link down/up, conditions, compose's pause and the
rest, exec, checks); the runner keeps the time. Every time is seconds since the scenario's start on the monotonic
clock, and each step is stamped when it began, when its change was in place (`effective`: when the action that
made it returned) and when it ended.

Expectations, by their windows (model/scenarios.py says what each figure is):
- a probe's with recovers_within T is judged over [F, F + T], F being when the previous fault step took effect
  (the scenario's start if none did): the runner waits until F + T and the probe's timeout have passed;
- a probe's without it is judged over [F, the start of the next fault step, or the end]: once the scenario ends
  (with --fail-fast, as soon as that window closes and its last requests have had their timeout);
- `over: scenario` over the whole scenario, at its end;
- a check's with `within` is tried from the moment F's fault took effect, about every CHECK_EVERY, until it passes
  or F + within has passed: in a thread of its own, so an expectation before it that waits does not delay it, and
  its figure is when it first passed after F; without within it is tried when its step comes, as it is declared
  (once, or until its `wait` runs out).

`stop()` is asked between steps and while waiting; when it says why (a signal), no further step begins and the
report says so; what the steps changed is undone by the caller (Actions.restore in the lab), not here. Each
verdict carries its window and the scenario's start on the wall clock (`Verdict.wall_window`), so a flight
recorder can keep the packets around a failed one as soon as it is given (`on_verdict`).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from composens.model.conditions import Conditions
from composens.model.scenarios import (
    ExecStep,
    ExpectCheck,
    ExpectProbe,
    FlapStep,
    HealStep,
    LinkStep,
    NetemStep,
    PartitionStep,
    Probe,
    ProbeRecord,
    Scenario,
    ScenarioReport,
    ServiceStep,
    SleepStep,
    Step,
    StepRecord,
    Verdict,
    is_fault,
    judge_check,
    judge_probe,
)
from composens.model.topology import Endpoint

TICK = 0.05  # s: how often a wait looks at stop()
CHECK_EVERY = 0.25  # s between the starts of a check expectation's attempts
SETTLE = 0.02  # s after a window's last timeout before it is judged: a reply stamped at the edge is counted
EARLY = 0.0001  # s: a wait this close to its end is over


class StepFailed(Exception):
    """A step could not do what it says; the scenario stops there and the lab is restored."""


@dataclass(frozen=True)
class Done:
    """What an action did: when its change was in place (monotonic; None: when it returned), and what it says."""

    at: float | None = None
    detail: str | None = None


class Actions(Protocol):
    """What a scenario's steps do to the lab (composens.lab.scenarios)."""

    def hold(self, ends: Sequence[Endpoint], *, down: bool) -> Done: ...

    def conditions(self, ends: Sequence[tuple[Endpoint, Conditions | None]]) -> Done: ...

    def services(self, action: str, services: Sequence[str]) -> Done: ...

    def exec(self, service: str, command: Sequence[str], timeout: float) -> Done: ...

    def check(self, name: str) -> tuple[bool, str | None]:
        """Try a declared check once: whether it passed, and why not."""
        ...


class Probes(Protocol):
    """The probes of a scenario (monitor.Monitor), as the runner uses them."""

    def start(self, at: float | None = None) -> None: ...

    def snapshot(self) -> dict[str, ProbeRecord]: ...

    def stop(self) -> dict[str, ProbeRecord]: ...


@dataclass
class _Pending:
    """A probe expectation whose window is still open, or closed and not judged yet."""

    step: int
    expect: ExpectProbe
    start: float
    end: float | None = None
    begun: float | None = None  # when the fault step that opened the window began (its outages count from there)


class _CheckWatch:
    """A check tried from `since` until it passes, `deadline` passes or the scenario stops, in a thread."""

    def __init__(self, runner: Runner, name: str, since: float, deadline: float | None) -> None:
        self.runner = runner
        self.name = name
        self.since = since  # s since the start
        self.deadline = deadline  # s since the start; None: one attempt
        self.passed = False
        self.reason: str | None = None
        self.ended = since
        self.thread = threading.Thread(target=self._run, name=f"composens-check-{name}", daemon=True)

    def start(self) -> _CheckWatch:
        self.thread.start()
        return self

    def _run(self) -> None:
        runner = self.runner
        while True:
            began = runner.now()
            try:
                self.passed, self.reason = runner.actions.check(self.name)
            except Exception as e:  # a check that cannot be run fails with why, never the run
                self.passed, self.reason = False, f"{type(e).__name__}: {e}"
            self.ended = runner.now()
            if self.passed or self.deadline is None or runner.stop() is not None:
                return
            if began + CHECK_EVERY >= self.deadline:
                return
            runner._wait_until(began + CHECK_EVERY)
            if runner.stop() is not None:
                return

    def join(self) -> None:
        self.thread.join()


@dataclass
class _State:
    last_fault: float = 0.0
    last_fault_begun: float = 0.0  # when that fault step began: its effect may come before its stamp
    down: set[Endpoint] = field(default_factory=set)  # set down by this scenario's steps
    partitioned: list[Endpoint] = field(default_factory=list)  # set down by partitions, for heal
    impaired: list[Endpoint] = field(default_factory=list)  # given conditions by netem steps, for `netem: reset`
    pending: list[_Pending] = field(default_factory=list)
    watching: dict[int, _CheckWatch] = field(default_factory=dict)  # expect check step -> its attempts since F
    verdicts: list[Verdict] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    stopped: str | None = None


class Runner:
    """Runs one scenario against a lab's Actions, with its probes."""

    def __init__(
        self,
        scenario: Scenario,
        probes: Mapping[str, Probe],
        actions: Actions,
        make_probes: Callable[[float], Probes],
        *,
        check_waits: Mapping[str, float | None] | None = None,
        fail_fast: bool = False,
        stop: Callable[[], str | None] = lambda: None,
        on_step: Callable[[StepRecord], None] = lambda step: None,
        on_verdict: Callable[[Verdict], None] = lambda verdict: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.scenario = scenario
        self.probes = {name: probes[name] for name in scenario.probes}
        self.actions = actions
        self.make_probes = make_probes
        self.check_waits = dict(check_waits or {})  # each check's own `wait`, for expectations without within
        self.fail_fast = fail_fast
        self.stop = stop
        self.on_step = on_step
        self.on_verdict = on_verdict
        self.clock = clock
        self.sleep = sleep
        self.wall = wall
        self.epoch = 0.0
        self.started_at: float | None = None
        self.state = _State()

    def now(self) -> float:
        return self.clock() - self.epoch

    def run(self) -> ScenarioReport:
        """Start the probes, run every step, judge every expectation; the lab is left as the steps left it."""
        self.epoch = self.clock()
        self.started_at = started_at = self.wall()  # paired with epoch: each verdict carries it (on the wall clock)
        monitor = self.make_probes(self.epoch)
        monitor.start(self.epoch)
        state = self.state
        self._arm(0, 0.0)  # the checks expected within a time of the start, before any fault
        try:
            for index, step in enumerate(self.scenario.steps):
                why = self.stop()
                if why is not None:
                    state.stopped = why
                    break
                if is_fault(step):
                    self._close_windows(monitor, self.now())
                    if state.stopped is not None:
                        break
                if not self._step(index, step, monitor):
                    break
            end = self.now()
        finally:
            for watch in state.watching.values():  # stopped early: none tries a check after the scenario
                watch.join()
            records = monitor.stop()
        for pending in state.pending:
            self._judge(pending, records, end)
        state.pending.clear()
        ordered = sorted(state.verdicts, key=lambda v: v.step)
        return ScenarioReport(
            self.scenario.name,
            self.scenario.description,
            started_at,
            end,
            tuple(state.steps),
            tuple(ordered),
            tuple(records[name] for name in self.scenario.probes),
            state.stopped,
            planned=tuple(step.text for step in self.scenario.steps),
        )

    # ------------------------------------------------------------------ steps

    def _step(self, index: int, step: Step, monitor: Probes) -> bool:
        """Run one step and record it; False when the scenario stops here."""
        started = self.now()
        marks: list[tuple[float, str]] = []
        detail: str | None = None
        effective: float | None = None
        try:
            if isinstance(step, ExpectProbe):
                self._expect_probe(index, step, monitor)
            elif isinstance(step, ExpectCheck):
                self._expect_check(index, step)
            elif isinstance(step, SleepStep):
                self._wait_until(started + step.seconds)
            else:
                detail = self._act(step, marks)
                effective = marks[0][0] if marks else self.now()
        except StepFailed as e:
            self._record(
                StepRecord(index, step.text, _kind(step), started, None, self.now(), tuple(marks), detail, str(e))
            )
            self.state.stopped = f"step {index + 1} failed"
            return False
        if effective is not None:
            self.state.last_fault, self.state.last_fault_begun = effective, started
            self._arm(index + 1, effective)
        self._record(StepRecord(index, step.text, _kind(step), started, effective, self.now(), tuple(marks), detail))
        if self.state.stopped is not None:
            return False
        why = self.stop()
        if why is not None and isinstance(step, FlapStep | SleepStep | ExpectProbe | ExpectCheck):
            self.state.stopped = why  # it was cut short: say so now
            return False
        return True

    def _record(self, record: StepRecord) -> None:
        self.state.steps.append(record)
        self.on_step(record)

    def _act(self, step: Step, marks: list[tuple[float, str]]) -> str | None:
        """Do a fault step; note in marks when each change was in place."""
        state = self.state
        if isinstance(step, LinkStep):
            done = self.actions.hold([step.end], down=step.down)
            (state.down.add if step.down else state.down.discard)(step.end)
            marks.append((self._when(done), step.text))
            return done.detail
        if isinstance(step, FlapStep):
            return self._flap(step, marks)
        if isinstance(step, NetemStep):
            ends = [(end, None) for end in state.impaired] if step.reset_all else list(step.ends)
            if not ends:
                return "nothing to reset"
            done = self.actions.conditions(ends)
            for end, conditions in ends:
                if end in state.impaired:
                    state.impaired.remove(end)
                if conditions is not None:
                    state.impaired.append(end)
            marks.append((self._when(done), step.text))
            return done.detail
        if isinstance(step, PartitionStep):
            cut = [end for end in step.cut if end not in state.down]
            done = self.actions.hold(cut, down=True) if cut else Done()
            state.down.update(cut)
            state.partitioned += cut
            marks.append((self._when(done), step.text))
            return "cut " + ", ".join(map(str, step.cut))
        if isinstance(step, HealStep):
            healed = list(state.partitioned)
            done = self.actions.hold(healed, down=False) if healed else Done()
            state.down.difference_update(healed)
            state.partitioned.clear()
            marks.append((self._when(done), "heal"))
            return "restored " + ", ".join(map(str, healed)) if healed else "nothing was cut"
        if isinstance(step, ServiceStep):
            done = self.actions.services(step.action, step.services)
            marks.append((self._when(done), step.text))
            return done.detail
        if isinstance(step, ExecStep):
            done = self.actions.exec(step.service, step.command, step.timeout)
            marks.append((self._when(done), step.text))
            return done.detail
        raise AssertionError(f"not a fault step: {step!r}")

    def _when(self, done: Done) -> float:
        """When an action's change was in place, in seconds since the start."""
        return (done.at - self.epoch) if done.at is not None else self.now()

    def _flap(self, step: FlapStep, marks: list[tuple[float, str]]) -> str:
        periods = step.periods()
        flapped = 0
        for down_for, up_for in periods:
            went_down = self._when(self.actions.hold([step.end], down=True))
            self.state.down.add(step.end)
            marks.append((went_down, f"down {step.end}"))
            self._wait_until(went_down + down_for)
            if self.stop() is not None:
                break  # left down: the restore brings it up
            came_up = self._when(self.actions.hold([step.end], down=False))
            self.state.down.discard(step.end)
            marks.append((came_up, f"up {step.end}"))
            flapped += 1
            self._wait_until(came_up + up_for)
            if self.stop() is not None:
                break
        said = ", ".join(f"{d:g}/{u:g}" for d, u in periods)
        return f"{flapped} of {step.times} flaps (down/up s: {said})"

    # ------------------------------------------------------------------ expectations

    def _expect_probe(self, index: int, expect: ExpectProbe, monitor: Probes) -> None:
        state = self.state
        if expect.over == "scenario":
            state.pending.append(_Pending(index, expect, 0.0))
            return
        if expect.recovers_within is None:
            state.pending.append(_Pending(index, expect, state.last_fault, begun=state.last_fault_begun))
            return
        fault, begun = state.last_fault, state.last_fault_begun
        end = fault + expect.recovers_within
        timeout = self.probes[expect.probe].timeout
        self._wait_until(end + timeout + SETTLE)
        if self.stop() is not None:
            return  # not judged: the scenario was stopped before its window closed
        record = monitor.snapshot()[expect.probe]
        self._verdicts(judge_probe(index, expect, record, fault, end, fault=fault, begun=begun))

    def _arm(self, first: int, since: float) -> None:
        """Start trying, from `since`, the checks expected `within` a time by the steps before the next fault."""
        for index in range(first, len(self.scenario.steps)):
            step = self.scenario.steps[index]
            if is_fault(step):
                return
            if isinstance(step, ExpectCheck) and step.within is not None:
                self.state.watching[index] = _CheckWatch(self, step.check, since, since + step.within).start()

    def _expect_check(self, index: int, expect: ExpectCheck) -> None:
        watch = self.state.watching.get(index)
        if watch is None:  # tried from now, as the check is declared
            wait = self.check_waits.get(expect.check)
            now = self.now()
            watch = _CheckWatch(self, expect.check, now, now + wait if wait else None).start()
            self.state.watching[index] = watch
        while watch.thread.is_alive():
            if self.stop() is not None:
                return  # not judged: the scenario was stopped first (its attempt ends before the restore)
            watch.thread.join(TICK)
        self._verdicts([judge_check(index, expect, watch.passed, watch.reason, watch.since, watch.ended)])

    def _close_windows(self, monitor: Probes, at: float) -> None:
        """A fault step begins: the open windows of expectations since the last one close now."""
        closing = [p for p in self.state.pending if p.end is None and p.expect.over == "since-fault"]
        for pending in closing:
            pending.end = at
        if not self.fail_fast or not closing:
            return
        timeout = max(self.probes[p.expect.probe].timeout for p in closing)
        self._wait_until(at + timeout + SETTLE)
        records = monitor.snapshot()
        for pending in closing:
            self.state.pending.remove(pending)
            self._judge(pending, records, at)

    def _judge(self, pending: _Pending, records: Mapping[str, ProbeRecord], end: float) -> None:
        window_end = pending.end if pending.end is not None else end
        record = records[pending.expect.probe]
        self._verdicts(
            judge_probe(pending.step, pending.expect, record, pending.start, window_end, begun=pending.begun)
        )

    def _verdicts(self, verdicts: list[Verdict]) -> None:
        for judged in verdicts:
            verdict = dataclasses.replace(judged, started_at=self.started_at)  # its window on the wall clock too
            self.state.verdicts.append(verdict)
            self.on_verdict(verdict)
            if not verdict.passed and self.fail_fast and self.state.stopped is None:
                self.state.stopped = f"fail-fast: {verdict.name} failed"

    def _wait_until(self, when: float) -> None:
        """Wait until `when` (s since the start), or until stop() says why not."""
        while (left := when - self.now()) > EARLY:
            if self.stop() is not None:
                return
            self.sleep(min(TICK, left))


def _kind(step: Step) -> str:
    """A step's kind as the file names it."""
    names = {
        LinkStep: "link",
        FlapStep: "flap",
        NetemStep: "netem",
        PartitionStep: "partition",
        HealStep: "heal",
        ExecStep: "exec",
        SleepStep: "sleep",
        ExpectProbe: "expect",
        ExpectCheck: "expect",
    }
    return step.action if isinstance(step, ServiceStep) else names[type(step)]
