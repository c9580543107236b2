"""Everything composens shows: the only module that imports rich.

Data goes to stdout, messages to stderr.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from composens.model.entries import Action, EntryChange
from composens.model.report import ConditionsRow, ExecResult, LabStatus, LinkReport, NetnsRow, PlanLine, RemoteEnd
from composens.model.topology import HUB

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from composens.model.checks import CheckResult, CheckUpdate

RESULT_STYLES = {"pass": "green", "fail": "bold red", "error": "bold red", "skipped": "yellow", "waiting": "yellow"}

JSON_KEYS = ("service", "container", "pid", "netns", "path", "target", "status", "interfaces", "drift")


class Output:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, width: int | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.width = width

    def console(self) -> Console:
        from rich.console import Console

        # Piped output is for reading or grepping: never cut the table down to 80 columns.
        width = self.width or (None if self.out.isatty() else 250)
        return Console(file=self.out, width=width, highlight=False, soft_wrap=False, markup=False, emoji=False)

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
        self.console().print(checks_table(results))
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

    def link_report(self, report: LinkReport) -> None:
        self.entry_changes(report.entries)
        for command in report.wired:
            self.line(f"wired: {command}")
        for reason in report.unwired:
            self.message(f"composens: not wired: {reason}")
        for result in report.execs:
            self.exec_result(result)

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

    def repair(self, report: LinkReport) -> None:
        """One line per repair `watch` makes; nothing when nothing changed."""
        line = repair_line(report)
        if line:
            self.line(line)

    def netns_table(self, status: LabStatus) -> None:
        self.console().print(netns_table(status.rows))
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
            table.add_column(column, no_wrap=True)
        for row in rows:
            table.add_row(row.service, row.ifname, row.live or "none", row.wanted or "none", row.source)
        self.console().print(table)

    def plan(self, lines: Sequence[PlanLine], unwired: Sequence[str]) -> None:
        for line in lines:
            self.line(str(line))
        for reason in unwired:
            self.message(f"composens: not planned: {reason}")

    def netns_json(self, rows: Sequence[NetnsRow]) -> None:
        self.line(netns_json(rows))

    def show(self, rows: Sequence[NetnsRow]) -> None:
        """The seed's link-show: `name: path -> target` and the status, for every entry (the host has none)."""
        for row in rows:
            if row.netns == "-":
                continue
            target = row.target or "-"
            self.line(f"{row.netns}: {row.path} -> {target} ({row.status})")


def repair_line(report: LinkReport) -> str | None:
    entries = [f"{c.name} {c.action}" for c in report.entries if c.action is not Action.KEEP]
    words = []
    if entries:
        words.append(", ".join(entries))
    if report.wired:
        words.append(f"{len(report.wired)} wiring change{'s' if len(report.wired) != 1 else ''}")
    if report.execs:
        failed = sum(1 for r in report.execs if not r.ok)
        words.append(f"{len(report.execs)} exec command{'s' if len(report.execs) != 1 else ''}")
        if failed:
            words[-1] += f" ({failed} failed)"
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
        table.add_column(column, no_wrap=True)
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
        table.add_column(column, no_wrap=column != "DETAIL")
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
