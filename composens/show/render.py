"""Everything composens shows: the only module that imports rich.

Data goes to stdout, messages to stderr.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from composens.model.entries import Action, EntryChange
from composens.model.progress import SILENT, Progress
from composens.model.report import ConditionsRow, ExecResult, LabStatus, LinkReport, NetnsRow, PlanLine, RemoteEnd
from composens.model.topology import HUB

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID
    from rich.table import Table

    from composens.model.checks import CheckResult, CheckUpdate
    from composens.model.scenarios import Declared, ScenarioReport, StepRecord, Verdict
    from composens.model.unit import UnitChange

RESULT_STYLES = {
    "pass": "green",
    "fail": "bold red",
    "error": "bold red",
    "skipped": "yellow",
    "waiting": "yellow",
    "stopped": "yellow",
}

OUTAGES_SHOWN = 4  # a probe's outages in a scenario's table; JSON has every one

# How long a run works before a progress display appears: a quicker run shows only its summary, and pays nothing for
# a display (importing rich for it takes 45 ms; bench/progress.py).
PROGRESS_AFTER = 1.0
UNBOUNDED = 1 << 20  # a console width no table reaches: to measure a table's natural width

JSON_KEYS = ("service", "container", "pid", "netns", "path", "target", "status", "interfaces", "drift")


class Output:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, width: int | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.width = width

    def console(self, width: int | None = None) -> Console:
        from rich.console import Console

        return Console(
            file=self.out, width=width or self.width, highlight=False, soft_wrap=False, markup=False, emoji=False
        )

    def table(self, table: Table) -> None:
        """Print a table with every cell whole: through a pipe at its natural width, one line per row (for grep and
        cut); on a terminal at the terminal's width, wrapping only the columns that may wrap, wider only when the
        columns that must stay whole need it (the terminal folds the lines then: nothing is dropped or cut)."""
        from rich.console import Console
        from rich.measure import Measurement

        _keep_whole(table)
        unbounded = Console(file=io.StringIO(), width=UNBOUNDED, highlight=False, markup=False, emoji=False)
        needed = Measurement.get(unbounded, unbounded.options, table)
        if self.out.isatty():
            terminal = self.width or self.console().width
            self.console(max(terminal, needed.minimum)).print(table)
            return
        buffer = io.StringIO()
        Console(file=buffer, width=max(needed.maximum, 1), color_system=None, highlight=False, markup=False).print(
            table
        )
        for line in buffer.getvalue().splitlines():
            self.line(line.rstrip())  # rich pads every cell to its column; a script should not have to strip

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def data(self, content: bytes, path: str | None) -> None:
        """Write a document (a picture, say) to a file, or to stdout."""
        if path is not None:
            with open(path, "wb") as f:
                f.write(content)
            return
        self.out.flush()
        buffer = getattr(self.out, "buffer", None)
        if buffer is not None:
            buffer.write(content)
            buffer.flush()
        else:  # a text stream without bytes underneath (a test's StringIO)
            self.out.write(content.decode())

    @contextmanager
    def check_progress(self, *, live: bool) -> Iterator[CheckProgress]:
        """Show checks as they run: a live table on a terminal, else one line per check that ends (stderr)."""
        progress = CheckProgress(self)
        if not (live and self.out.isatty()):
            yield progress
            return
        from rich.live import Live

        with Live(progress.table(), console=self.console(), transient=True, refresh_per_second=8) as screen:
            progress.screen = screen
            yield progress

    def check_results(self, results: Sequence[CheckResult], *, fmt: str) -> None:
        if fmt == "json":
            self.line(checks_json(results))
            return
        self.table(checks_table(results))
        passed = sum(r.result == "pass" for r in results)
        self.line(f"{passed}/{len(results)} checks passed")
        for r in results:
            if r.capture:
                self.line(f"packets around {r.name!r}: {r.capture}")

    def message(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def warning(self, text: str) -> None:
        self.message(f"composens: warning: {text}")

    def entry_changes(self, changes: Sequence[EntryChange]) -> None:
        """One line per entry, in the seed's spirit: `node1: /var/run/netns/node1 -> TARGET link create`."""
        for change in changes:
            self.line(entry_change_line(change))

    @contextmanager
    def link_progress(self, *, live: bool) -> Iterator[Progress]:
        """Show linking, wiring and exec commands as they go: on a terminal, a transient display once there is work
        to do and it takes more than PROGRESS_AFTER; elsewhere (and with live=False) nothing."""
        if not (live and self.out.isatty()):
            yield SILENT
            return
        progress = LinkProgress(self)
        try:
            yield progress
        finally:
            progress.close()

    def link_report(self, report: LinkReport, *, brief: bool = False) -> None:
        """What a run of linking did. With brief, on a terminal: a summary (and what failed, in full); else every
        entry in the seed's line format, every wiring command (`wired: ...`) and every exec command with its output."""
        if brief and self.out.isatty():
            self.link_summary(report)
            return
        self.entry_changes(report.entries)
        for command in report.wired:
            self.line(f"wired: {command}")
        for reason in report.unwired:
            self.message(f"composens: not wired: {reason}")
        for why in report.not_ready:
            self.message(f"composens: not ready: {why}")
        for result in report.execs:
            self.exec_result(result)

    def link_summary(self, report: LinkReport) -> None:
        """A run in a few lines: entries that could not be made and why, links not wired, exec commands that failed
        (with their output), then one line of counts and time."""
        self.entry_changes([c for c in report.entries if c.action in (Action.CONFLICT, Action.SKIP)])
        for reason in report.unwired:
            self.message(f"composens: not wired: {reason}")
        for result in report.execs:
            if not result.ok:
                self.exec_result(result)
        self.line(summary_line(report))

    def followed(self, report: LinkReport, *, brief: bool = False) -> None:
        """One pass of attached `up`: in full, or (brief, on a terminal) its summary when it changed anything."""
        if not (brief and self.out.isatty()):
            self.link_report(report)
        elif changed_anything(report) or report.unwired:
            self.link_summary(report)

    def unit_change(self, change: UnitChange) -> None:
        """What `watch --install-unit` or `--remove-unit` did, and what is left to do by hand."""
        if change.action == "absent":
            self.line(f"no unit {change.path}: nothing to remove")
        elif change.action == "removed":
            stopped = " (stopped and disabled first)" if change.systemd else ""
            self.line(f"removed {change.path}{stopped}")
        elif change.systemd:
            self.line(f"wrote {change.path}; enabled and started {change.name}")
        else:
            self.line(f"wrote {change.path}")
            self.line(f"to run it where systemd runs: systemctl daemon-reload && systemctl enable --now {change.name}")

    def exec_result(self, result: ExecResult) -> None:
        """An x-composens.exec command that ran: `exec SERVICE: COMMAND: ok`, its output indented below."""
        line = f"exec {result.service}: {result.command}: {result.verdict}"
        output = [f"  {text}" for text in result.output.splitlines()]
        if result.ok:
            self.line(line)
            for text in output:
                self.line(text)
        else:
            self.message(f"composens: {line}")
            for text in output:
                self.message(text)

    def repair(self, report: LinkReport, *, verbose: bool = False) -> None:
        """One line per repair `watch` makes (with verbose, its wiring commands below it); nothing when nothing
        changed."""
        line = repair_line(report)
        if line:
            self.line(line)
            if verbose:
                for command in report.wired:
                    self.line(f"  {command}")
        for why in report.not_ready:  # which ones, and why: watch goes on, and tries again on the next event
            self.message(f"composens: not ready: {why}")

    def netns_table(self, status: LabStatus) -> None:
        self.table(netns_table(status.rows))
        for note in status_notes(status):
            self.line(note)
        self.line(drift_summary(status))

    def conditions(self, rows: Sequence[ConditionsRow], *, fmt: str) -> None:
        if fmt == "json":
            self.line(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
            return
        from rich.table import Table

        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("SERVICE", "INTERFACE", "LIVE", "WANTED", "SET BY"):
            table.add_column(column, **_column_style(column not in ("LIVE", "WANTED")))
        for row in rows:
            table.add_row(row.service, row.ifname, row.live or "none", row.wanted or "none", row.source)
        self.table(table)

    def plan(self, lines: Sequence[PlanLine], unwired: Sequence[str]) -> None:
        for line in lines:
            self.line(str(line))
        for reason in unwired:
            self.message(f"composens: not planned: {reason}")

    def netns_json(self, rows: Sequence[NetnsRow]) -> None:
        self.line(netns_json(rows))

    def scenario_step(self, scenario: str, step: StepRecord) -> None:
        """A step as it ends (stderr): when it began, what it is, when it took effect, what it did. An expectation
        says itself in its verdicts."""
        if step.kind == "expect" and step.error is None:
            return
        effect = f" (in effect at {step.effective:.2f} s)" if step.effective is not None else ""
        said = f": {step.error}" if step.error else (f": {step.detail}" if step.detail else "")
        prefix = "failed: " if step.error else ""
        self.message(f"{scenario} {step.started:8.2f} s  {prefix}{step.index + 1}. {step.text}{effect}{said}")

    def scenario_verdict(self, scenario: str, verdict: Verdict) -> None:
        """A verdict as it is given (stderr)."""
        self.message(
            f"{scenario} {verdict.window[1]:8.2f} s  {verdict.result}: {verdict.name}: {verdict.reason or verdict.text}"
        )

    def scenario_reports(self, reports: Sequence[ScenarioReport], *, fmt: str) -> None:
        if fmt == "json":
            self.line(json.dumps([scenario_json(r) for r in reports], indent=2))
            return
        console = self.console()
        for report in reports:
            for part in scenario_tables(report):
                if isinstance(part, str):
                    self.line(part)
                else:
                    console.print(part)
        verdicts = [v for r in reports for v in r.verdicts]
        passed = sum(v.passed for v in verdicts)
        self.line(f"{passed}/{len(verdicts)} expectations passed in {len(reports)} scenario(s)")

    def scenario_list(self, declared: Declared, *, fmt: str) -> None:
        if fmt == "json":
            listing = [
                {
                    "name": s.name,
                    "description": s.description,
                    "probes": [str(declared.probes[p]) for p in s.probes],
                    "steps": [step.text for step in s.steps],
                }
                for s in declared.scenarios.values()
            ]
            self.line(json.dumps(listing, indent=2))
            return
        for scenario in declared.scenarios.values():
            about = f": {scenario.description}" if scenario.description else ""
            self.line(f"{scenario.name}{about}")
            for name in scenario.probes:
                self.line(f"  probe {name}: {declared.probes[name]}")
            for i, step in enumerate(scenario.steps, 1):
                self.line(f"  {i}. {step.text}")

    def show(self, rows: Sequence[NetnsRow]) -> None:
        """The seed's link-show: `name: path -> target` and the status, for every entry (the host has none)."""
        for row in rows:
            if row.netns == "-":
                continue
            target = row.target or "-"
            self.line(f"{row.netns}: {row.path} -> {target} ({row.status})")


def _column_style(whole: bool) -> dict[str, Any]:
    """A column that stays whole (a name, a status: one line, never cut), or one that may wrap on a terminal (a long
    word folded rather than cut with an ellipsis)."""
    return {"no_wrap": True} if whole else {"no_wrap": False, "overflow": "fold"}


def _keep_whole(table: Table) -> None:
    """Give each column that stays whole the width of its widest cell, so that no width squeezes it."""
    from rich.cells import cell_len
    from rich.text import Text

    for column in table.columns:
        if column.no_wrap:
            cells = [column.header, *column.cells]
            column.min_width = max(cell_len(c.plain if isinstance(c, Text) else str(c)) for c in cells)


def changed_anything(report: LinkReport) -> bool:
    return bool(report.wired or report.execs or any(c.action is not Action.KEEP for c in report.entries))


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary_line(report: LinkReport) -> str:
    """A run of linking in one line: `linked 60 services (60 new), wired 60 links and 1 LAN: 420 changes in 1.9 s`.

    The time is given only when the run changed something: a run that changed nothing may be replayed, and its
    answer must hold for the replay too."""
    removed = sum(1 for c in report.entries if c.action is Action.REMOVE and c.service != HUB)
    made = [f"{report.new} new"] if report.new else []
    made += [f"{removed} removed"] if removed else []
    if report.linked or not removed:
        words = f"linked {_counted(report.linked, 'service')}" + (f" ({', '.join(made)})" if made else "")
    else:  # only entries removed: the end of an attached `up`, a lab whose containers stopped
        words = f"unlinked {_counted(removed, 'service')}"
    wired = [_counted(report.links, "link")] if report.links or not report.lans else []
    wired += [_counted(report.lans, "LAN")] if report.lans else []
    if report.links or report.lans or report.wired or report.unwired:
        words += f", wired {' and '.join(wired)}"
    if report.unwired:
        words += f" ({len(report.unwired)} not wired)"
    if report.execs:
        failed = sum(1 for r in report.execs if not r.ok)
        words += f"; ran {_counted(len(report.execs), 'exec command')}" + (f" ({failed} failed)" if failed else "")
    if not changed_anything(report):
        return f"{words}: nothing to change"
    changes = f"{_counted(len(report.wired), 'change')} in {report.seconds:.1f} s" if report.wired else ""
    hint = " (--verbose lists them)" if report.wired else ""
    return f"{words}: {changes or f'done in {report.seconds:.1f} s'}{hint}"


def repair_line(report: LinkReport) -> str | None:
    entries = [f"{c.name} {c.action}" for c in report.entries if c.action is not Action.KEEP]
    words = []
    if entries:
        words.append(", ".join(entries))
    if report.wired:
        words.append(_counted(len(report.wired), "wiring change"))
    if report.execs:
        failed = sum(1 for r in report.execs if not r.ok)
        words.append(_counted(len(report.execs), "exec command"))
        if failed:
            words[-1] += f" ({failed} failed)"
    if report.not_ready:
        words.append(_counted(len(report.not_ready), "interface") + " not ready")
    if not words:
        return None
    return f"{time.strftime('%H:%M:%S')} repaired: " + "; ".join(words)


def entry_change_line(change: EntryChange) -> str:
    path = f"/var/run/netns/{change.name}"
    if change.action in (Action.CONFLICT, Action.SKIP):
        return f"{change.name}: {change.action}: {change.detail}"
    if change.service == HUB:
        verb = {Action.CREATE: "hub create", Action.KEEP: "hub", Action.REMOVE: "hub remove"}.get(change.action, "hub")
        return f"{change.name}: {path} (a namespace of its own) {verb}"
    target = change.target or "-"
    return f"{change.name}: {path} -> {target} {change.action}"


def _interfaces_text(row: NetnsRow) -> str:
    words = []
    for iface in row.interfaces:
        state = "up" if iface.up else ("down" if iface.present else "missing")
        held = " (set)" if iface.set_down else ""
        conditions = f" [{iface.conditions}]" if iface.conditions else ""
        mac = f" {iface.mac}" if iface.mac else ""
        remote = f" (vxlan {iface.remote.vni} to {', '.join(iface.remote.hosts)})" if iface.remote else ""
        words.append(f"{iface.ifname} {state}{held}{mac}{remote}{conditions}")
    return ", ".join(words) or "-"


def netns_table(rows: Sequence[NetnsRow]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("SERVICE", "CONTAINER", "PID", "NETNS", "TARGET", "STATUS", "INTERFACES", "DRIFT"):
        table.add_column(column, **_column_style(column not in ("TARGET", "INTERFACES", "DRIFT")))
    styles = {"linked": "green", "unlinked": "yellow", "stale": "red", "conflict": "bold red", "none": "dim"}
    for row in rows:
        table.add_row(
            row.service,
            row.container or "-",
            str(row.pid) if row.pid else "-",
            row.netns,
            row.target or "-",
            Text(row.status, style=styles[row.status]),
            _interfaces_text(row),
            Text("; ".join(str(d) for d in row.drift) or "-", style="yellow" if row.drift else ""),
        )
    return table


def drift_summary(status: LabStatus) -> str:
    """One line under the table: whether the lab matches its file."""
    if not status.running:
        return "nothing of the lab is running: `composens up -d` starts it"
    count = status.differences()
    if not count:
        return "the lab matches its file"
    plural = "s" if count != 1 else ""
    return f"{count} difference{plural} from the file: `composens plan` lists the changes, `composens up -d` makes them"


def status_notes(status: LabStatus) -> list[str]:
    """The differences no row shows: services not running, pairs not wired."""
    notes = [f"not running: {service}" for service in status.not_running]
    return notes + [f"not wired: {reason}" for reason in status.unwired]


def _remote_json(remote: RemoteEnd | None) -> dict[str, object] | None:
    if remote is None:
        return None
    return {
        "hosts": list(remote.hosts),
        "vni": remote.vni,
        "vteps": list(remote.vteps),
        "port": remote.port,
        "peer": remote.peer,
    }


def netns_json(rows: Sequence[NetnsRow]) -> str:
    return json.dumps(
        [
            {
                "service": r.service,
                "container": r.container or None,
                "pid": r.pid,
                "netns": r.netns,
                "path": r.path,
                "target": r.target,
                "status": str(r.status),
                "interfaces": [
                    {
                        "ifname": i.ifname,
                        "present": i.present,
                        "up": i.up,
                        "set_down": i.set_down,
                        "conditions": i.conditions,
                        "mac": i.mac,
                        "remote": _remote_json(i.remote),
                    }
                    for i in r.interfaces
                ],
                "drift": [{"problem": d.problem, "item": d.item, "ours": d.ours} for d in r.drift],
            }
            for r in rows
        ],
        indent=2,
    )


class LinkProgress:
    """A Progress drawn on a terminal: one line per step (linking, wiring, exec commands) with a bar and counts,
    from PROGRESS_AFTER on, gone when the run ends. Told of work from several threads: everything under a lock."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.steps: dict[str, list[int]] = {}  # step -> [done, total]
        self.display: RichProgress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.closed = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._began = time.monotonic()

    def expect(self, step: str, items: int) -> None:
        with self._lock:
            counts = self.steps.setdefault(step, [0, 0])
            counts[1] += items
            if self._timer is None and self.display is None:  # the first work: show it once it takes a while
                wait = max(0.0, PROGRESS_AFTER - (time.monotonic() - self._began))
                self._timer = threading.Timer(wait, self._show)
                self._timer.daemon = True
                self._timer.start()
            self._update(step)

    def advance(self, step: str, items: int = 1) -> None:
        with self._lock:
            self.steps.setdefault(step, [0, 0])[0] += items
            self._update(step)

    def _update(self, step: str) -> None:
        if self.display is None:
            return
        done, total = self.steps[step]
        if step not in self.tasks:
            self.tasks[step] = self.display.add_task(step, total=total)
        self.display.update(self.tasks[step], completed=done, total=max(total, done))

    def _show(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with self._lock:
            if self.closed:
                return
            self.display = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.output.console(),
                transient=True,
                refresh_per_second=4,  # enough to see it move; each drawing costs the work a little
            )
            self.display.start()
            for step in self.steps:
                self._update(step)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            if self._timer is not None:
                self._timer.cancel()
            if self.display is not None:
                self.display.stop()


class CheckProgress:
    """What `composens test` shows while checks run; called with each CheckUpdate."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.states: dict[int, CheckUpdate] = {}
        self.screen: object | None = None  # a rich Live, on a terminal

    def __call__(self, update: CheckUpdate) -> None:
        first_wait = update.state == "waiting" and self.states.get(update.index) is None
        self.states[update.index] = update
        if self.screen is not None:
            self.screen.update(self.table())  # type: ignore[attr-defined]
        elif update.state != "waiting" or first_wait:
            self.output.message(f"composens: check {update.name!r}: {_progress_text(update)}")

    def table(self) -> Table:
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False, header_style="bold", title="checks", title_justify="left")
        for column in ("CHECK", "STATE", "ATTEMPTS", "LEFT"):
            table.add_column(column, no_wrap=True)
        for _, update in sorted(self.states.items()):
            left = f"{update.remaining:.0f} s" if update.remaining is not None else "-"
            table.add_row(
                update.name, Text(update.state, style=RESULT_STYLES[update.state]), str(update.attempts), left
            )
        return table


def _progress_text(update: CheckUpdate) -> str:
    if update.state == "waiting":
        left = f", {update.remaining:.0f} s left" if update.remaining is not None else ""
        return f"waiting ({update.reason}{left})"
    return f"{update.state} after {update.attempts} attempt{'s' if update.attempts != 1 else ''}"


def _detail(result: CheckResult) -> str:
    if result.reason:
        return result.reason
    if result.rtts_ms:
        rtts = result.rtts_ms
        return f"{len(rtts)} replies, rtt min/avg/max {min(rtts):.2f}/{sum(rtts) / len(rtts):.2f}/{max(rtts):.2f} ms"
    if result.kind == "ping" and result.result == "pass":
        return "no reply, as expected"
    return ""


def checks_table(results: Sequence[CheckResult]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("CHECK", "SERVICE", "RESULT", "ATTEMPTS", "TIME", "DETAIL"):
        table.add_column(column, **_column_style(column != "DETAIL"))
    for r in results:
        table.add_row(
            r.name,
            r.service,
            Text(r.result, style=RESULT_STYLES[r.result]),
            str(r.attempts),
            f"{r.seconds:.1f} s",
            _detail(r),
        )
    return table


def checks_json(results: Sequence[CheckResult]) -> str:
    return json.dumps(
        [
            {
                "name": r.name,
                "service": r.service,
                "kind": r.kind,
                "result": r.result,
                "attempts": r.attempts,
                "seconds": round(r.seconds, 3),
                "reason": r.reason,
                "rtts_ms": [round(t, 3) for t in r.rtts_ms],
                "capture": r.capture,
            }
            for r in results
        ],
        indent=2,
    )


# --------------------------------------------------------------------------- scenarios


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def scenario_tables(report: ScenarioReport) -> list[object]:
    """A scenario's report as text: a heading, its steps, its verdicts, its probes and outages, its restore."""
    from rich.table import Table
    from rich.text import Text

    from composens.model.scenarios import probe_summary, seconds_text

    about = f" - {report.description}" if report.description else ""
    heading = Text(f"scenario {report.name}: {report.outcome} ({seconds_text(report.seconds)}){about}")
    heading.stylize(RESULT_STYLES.get(report.outcome, ""), 0, len(f"scenario {report.name}: {report.outcome}"))
    parts: list[object] = [heading]
    steps = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("STEP", "BEGAN", "IN EFFECT", "ENDED", "WHAT", "DETAIL"):
        steps.add_column(column, no_wrap=column != "DETAIL")
    for step in report.steps:
        detail = Text(step.error, style="bold red") if step.error else Text(step.detail or "")
        steps.add_row(
            str(step.index + 1),
            _seconds(step.started),
            _seconds(step.effective),
            _seconds(step.ended),
            step.text,
            detail,
        )
    parts.append(steps)
    if report.verdicts:
        verdicts = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("STEP", "EXPECTATION", "FIGURE", "RESULT", "WINDOW"):
            verdicts.add_column(column, no_wrap=column != "FIGURE")
        for v in report.verdicts:
            window = f"{v.window[0]:.2f}-{v.window[1]:.2f} s"
            shown = v.text if v.passed else (v.reason or v.text)
            verdicts.add_row(str(v.step + 1), v.name, shown, Text(v.result, style=RESULT_STYLES[v.result]), window)
        parts.append(verdicts)
        parts += [f"packets around {v.name!r} (step {v.step + 1}): {v.capture}" for v in report.verdicts if v.capture]
    if report.probes:
        probes = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("PROBE", "SENT", "LOST", "RTT AVG/P99/MAX", "OUTAGES (START-END: LENGTH, LOST)"):
            probes.add_column(column, no_wrap=column != "OUTAGES (START-END: LENGTH, LOST)")
        for record in report.probes:
            summary = probe_summary(record, report.seconds)
            rtt = summary["rtt"]
            rtts = f"{rtt['avg'] * 1000:.2f}/{rtt['p99'] * 1000:.2f}/{rtt['max'] * 1000:.2f} ms" if rtt else "-"
            spans = [
                f"{o['start']:.2f}-{o['end'] if o['end'] is not None else report.seconds:.2f} s: "
                f"{seconds_text(o['duration'])}{'' if o['over'] else ' (not over)'}, {o['lost']}"
                for o in summary["outages"][:OUTAGES_SHOWN]
            ]
            if len(summary["outages"]) > OUTAGES_SHOWN:
                spans.append(f"and {len(summary['outages']) - OUTAGES_SHOWN} more (--format json has them all)")
            loss = f"{summary['lost']} ({summary['loss_percent']:.2g} %)" if summary["sent"] else "0"
            probes.add_row(record.probe.name, str(summary["sent"]), loss, rtts, "; ".join(spans) or "none")
        parts.append(probes)
    if report.stopped:
        parts.append(f"stopped: {report.stopped}")
    if report.kept:
        parts.append("kept as the last step left it (--keep)")
    elif report.restored:
        parts.append("restored: " + "; ".join(report.restored))
    for error in report.restore_errors:
        parts.append(f"not restored: {error}")
    parts.append("")
    return parts


def scenario_json(report: ScenarioReport) -> dict[str, object]:
    """A scenario's report for scripts: every step, verdict and probe, each probe's every request."""
    from composens.model.scenarios import probe_summary

    def r3(value: float | None) -> float | None:
        return None if value is None else round(value, 6)

    return {
        "name": report.name,
        "description": report.description,
        "result": report.outcome,
        "started_at": round(report.started_at, 6),
        "seconds": r3(report.seconds),
        "stopped": report.stopped,
        "steps": [
            {
                "index": s.index + 1,
                "kind": s.kind,
                "step": s.text,
                "started": r3(s.started),
                "effective": r3(s.effective),
                "ended": r3(s.ended),
                "marks": [{"at": r3(at), "what": what} for at, what in s.marks],
                "detail": s.detail,
                "error": s.error,
            }
            for s in report.steps
        ],
        "expectations": [
            {
                "step": v.step + 1,
                "name": v.name,
                "subject": v.subject,
                "kind": v.kind,
                "figure": r3(v.figure),
                "unit": v.unit,
                "text": v.text,
                "result": v.result,
                "reason": v.reason,
                "window": {"start": r3(v.window[0]), "end": r3(v.window[1])},
                "wall_window": {"start": r3(report.wall(v.window[0])), "end": r3(report.wall(v.window[1]))},
                "capture": v.capture,
            }
            for v in report.verdicts
        ],
        "probes": [
            {
                "name": p.probe.name,
                "kind": p.probe.kind,
                "from": p.probe.service,
                "to": p.probe.to,
                "port": p.probe.port,
                "interval": p.probe.interval,
                "timeout": p.probe.timeout,
                "scheduled": r3(p.scheduled),  # request k was due at scheduled + k * interval
                **_rounded(probe_summary(p, report.seconds)),
                "requests": [
                    {"seq": k, "sent": r3(r.sent), "rtt": r3(r.rtt), **({"error": r.error} if r.error else {})}
                    for k, r in enumerate(p.requests)
                ],
            }
            for p in report.probes
        ],
        "restored": list(report.restored),
        "restore_errors": list(report.restore_errors),
        "kept": report.kept,
    }


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
