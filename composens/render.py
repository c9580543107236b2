"""Everything composens shows: the only module that imports rich.

Data goes to stdout, messages to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from composens.lab import LinkReport, NetnsRow
from composens.netns import Action, EntryChange
from composens.topology import Endpoint, Topology

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

JSON_KEYS = ("service", "container", "pid", "netns", "path", "target", "status", "interfaces")


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

    def message(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def error(self, text: str) -> None:
        self.message(f"composens: error: {text}")

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

    def repair(self, report: LinkReport) -> None:
        """One line per repair `watch` makes; nothing when nothing changed."""
        line = repair_line(report)
        if line:
            self.line(line)

    def netns_table(self, rows: Sequence[NetnsRow]) -> None:
        self.console().print(netns_table(rows))

    def netns_json(self, rows: Sequence[NetnsRow]) -> None:
        self.line(netns_json(rows))

    def show(self, rows: Sequence[NetnsRow]) -> None:
        """The seed's link-show: `name: path -> target` and the status."""
        for row in rows:
            target = row.target or "-"
            self.line(f"{row.netns}: {row.path} -> {target} ({row.status})")


def repair_line(report: LinkReport) -> str | None:
    entries = [f"{c.name} {c.action}" for c in report.entries if c.action is not Action.KEEP]
    words = []
    if entries:
        words.append(", ".join(entries))
    if report.wired:
        words.append(f"{len(report.wired)} wiring change{'s' if len(report.wired) != 1 else ''}")
    if not words:
        return None
    return f"{time.strftime('%H:%M:%S')} repaired: " + "; ".join(words)


def entry_change_line(change: EntryChange) -> str:
    path = f"/var/run/netns/{change.name}"
    if change.action in (Action.CONFLICT, Action.SKIP):
        return f"{change.name}: {change.action}: {change.detail}"
    target = change.target or "-"
    return f"{change.name}: {path} -> {target} {change.action}"


def _interfaces_text(row: NetnsRow) -> str:
    words = []
    for iface in row.interfaces:
        state = "up" if iface.up else ("down" if iface.present else "missing")
        words.append(f"{iface.ifname} {state}")
    return ", ".join(words) or "-"


def netns_table(rows: Sequence[NetnsRow]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("SERVICE", "CONTAINER", "PID", "NETNS", "TARGET", "STATUS", "INTERFACES"):
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
        )
    return table


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
                "interfaces": [{"ifname": i.ifname, "present": i.present, "up": i.up} for i in r.interfaces],
            }
            for r in rows
        ],
        indent=2,
    )


def mermaid(topo: Topology) -> str:
    lines = ["graph LR"]
    for name in _graph_nodes(topo):
        lines.append(f'  {_node_id(name)}["{name}"]')
    for link in topo.links:
        label = f"{_end_label(topo, link.a)} — {_end_label(topo, link.b)}"
        lines.append(f'  {_node_id(link.a.node)} ---|"{label}"| {_node_id(link.b.node)}')
    return "\n".join(lines)


def dot(topo: Topology) -> str:
    lines = ["graph composens {", "  node [shape=box];"]
    lines += [f'  "{name}";' for name in _graph_nodes(topo)]
    for link in topo.links:
        lines.append(
            f'  "{link.a.node}" -- "{link.b.node}" '
            f'[taillabel="{_end_label(topo, link.a)}", headlabel="{_end_label(topo, link.b)}"];'
        )
    lines.append("}")
    return "\n".join(lines)


def _graph_nodes(topo: Topology) -> list[str]:
    """Every service, then the host if a link reaches it."""
    return list(dict.fromkeys([*topo.services, *(ep.node for link in topo.links for ep in (link.a, link.b))]))


def _node_id(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def _end_label(topo: Topology, ep: Endpoint) -> str:
    return " ".join([ep.ifname, *topo.node(ep.node).addresses.get(ep.ifname, ())])
