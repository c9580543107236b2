"""What composens prints: tables whole through a pipe and on a narrow terminal (issue 26, item 12)."""

from __future__ import annotations

import io
import re

import pytest

from composens.model.checks import CheckResult
from composens.model.entries import Status
from composens.model.report import ConditionsRow, Drift, InterfaceRow, LabStatus, NetnsRow
from composens.show.render import Output

LONG = "a-long-service-name"
# The lab: a-long-service-name and b linked by e1, six addresses added by hand on b's end.
EXTRAS = tuple(Drift("b", "extra", f"address 198.18.9.{i}/24 on e1", ours=False, ifname="e1") for i in range(1, 7))
ROWS = (
    NetnsRow(
        LONG,
        f"lab-{LONG}-1",
        4242,
        f"lab-{LONG}",
        f"/var/run/netns/lab-{LONG}",
        "/var/run/docker/netns/bf9ca0645a25",
        Status.LINKED,
        (InterfaceRow("e1", True, True),),
    ),
    NetnsRow(
        "b",
        "lab-b-1",
        4343,
        "lab-b",
        "/var/run/netns/lab-b",
        "/var/run/docker/netns/a6e77f20c6cb",
        Status.LINKED,
        (InterfaceRow("e1", True, True),),
        EXTRAS,
    ),
)


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a console's stdout does; its text without colours."""

    def isatty(self) -> bool:
        return True

    def getvalue(self) -> str:
        return re.sub(r"\x1b\[[0-9;]*m", "", super().getvalue())


def piped() -> tuple[Output, io.StringIO]:
    out = io.StringIO()
    return Output(out=out, err=io.StringIO()), out


def test_ps_netns_through_a_pipe_keeps_every_column_whole_one_line_per_row() -> None:
    output, out = piped()
    output.netns_table(LabStatus(ROWS))
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["SERVICE", "CONTAINER", "PID", "NETNS", "TARGET", "STATUS", "INTERFACES", "DRIFT"]
    long_row, b_row = lines[1], lines[2]
    assert long_row.split()[:7] == [
        LONG,
        f"lab-{LONG}-1",
        "4242",
        f"lab-{LONG}",
        "/var/run/docker/netns/bf9ca0645a25",
        "linked",
        "e1",
    ]
    assert b_row.split()[:6] == ["b", "lab-b-1", "4343", "lab-b", "/var/run/docker/netns/a6e77f20c6cb", "linked"]
    assert b_row.endswith("; ".join(str(d) for d in EXTRAS))  # the whole drift, on the row's own line
    assert lines[3] == "the lab matches its file"
    assert all(line == line.rstrip() for line in lines), "no trailing blanks for scripts to strip"
    assert "…" not in out.getvalue()


def test_ps_netns_on_a_narrow_terminal_wraps_the_long_cells_and_cuts_no_name() -> None:
    out = Terminal()
    Output(out=out, err=io.StringIO(), width=100).netns_table(LabStatus(ROWS))
    text = out.getvalue()
    assert "…" not in text
    first = text.splitlines()[1].split()
    assert first[:4] == [LONG, f"lab-{LONG}-1", "4242", f"lab-{LONG}"]
    assert "linked" in first
    assert len(text.splitlines()) > 4, "the drift wraps onto lines of its own"


def test_netem_show_through_a_pipe_keeps_every_column_whole() -> None:
    output, out = piped()
    long_lan = "lan-" + "x" * 60
    rows = [
        ConditionsRow(long_lan, f"{LONG}:e1", "delay 100ms " * 30, "delay 100ms " * 30, "declared"),
        ConditionsRow(LONG, "e1", None, "rate 10mbit", "run time"),
    ]
    output.conditions(rows, fmt="table")
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["SERVICE", "INTERFACE", "LIVE", "WANTED", "SET", "BY"]
    assert lines[1].split()[:2] == [long_lan, f"{LONG}:e1"]
    assert lines[1].endswith("declared")
    assert lines[2].split() == [LONG, "e1", "none", "rate", "10mbit", "run", "time"]
    assert len(lines) == 3


@pytest.mark.parametrize("terminal", [False, True])
def test_test_results_keep_every_column_whole(terminal: bool) -> None:
    out: io.StringIO = Terminal() if terminal else io.StringIO()
    output = Output(out=out, err=io.StringIO(), width=80 if terminal else None)
    name = f"{LONG} reaches b over IPv6 through the longest path of the whole lab"
    reason = "exit code 1, expected 0: " + "the daemon said no " * 20
    output.check_results([CheckResult(name, LONG, "exec", "fail", 3, 2.5, reason)], fmt="table")
    text = out.getvalue()
    assert "…" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["CHECK", "SERVICE", "RESULT", "ATTEMPTS", "TIME", "DETAIL"]
    assert lines[1].startswith(f"{name}  {LONG}  fail ")
    if not terminal:
        assert lines[1].endswith(reason.rstrip())
        assert lines[2] == "0/1 checks passed"
