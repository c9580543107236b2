"""What composens prints: tables whole through a pipe and on a narrow terminal (issue 26, item 12)."""

from __future__ import annotations

import io
import re
import time
from dataclasses import replace

import pytest

from composens.model.checks import CheckResult
from composens.model.entries import Action, EntryChange, Status
from composens.model.progress import ENTRIES as ENTRIES_STEP
from composens.model.progress import SILENT, WIRING
from composens.model.report import ConditionsRow, Drift, ExecResult, InterfaceRow, LabStatus, LinkReport, NetnsRow
from composens.show import render
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


# ---------------------------------------------------------------- item 10: what `up -d` and `netns link` print

ENTRIES = [EntryChange(f"lab-r{i}", f"r{i}", Action.CREATE, f"/var/run/docker/netns/{i:012x}") for i in range(1, 61)]
WIRED = [f"ip -n lab-r{i} link set dev eth{j} up" for i in range(1, 61) for j in range(7)]


def ring_report(**changes: object) -> LinkReport:
    """What linking a ring of 60 services from nothing reports: 60 new entries and 420 wiring commands."""
    report = LinkReport(entries=list(ENTRIES), wired=list(WIRED), links=60, lans=0, seconds=1.94)
    for name, value in changes.items():
        setattr(report, name, value)
    return report


def test_up_on_a_terminal_ends_in_a_summary_not_the_plan() -> None:
    out, err = Terminal(), io.StringIO()
    Output(out=out, err=err).link_report(ring_report(), brief=True)
    assert out.getvalue().splitlines() == [
        "linked 60 services (60 new), wired 60 links: 420 changes in 1.9 s (--verbose lists them)"
    ]
    assert err.getvalue() == ""


def test_the_summary_names_what_failed_in_full() -> None:
    out, err = Terminal(), io.StringIO()
    report = ring_report(
        entries=[*ENTRIES[:2], EntryChange("lab-r3", "r3", Action.CONFLICT, "/x", "exists and was not made by us")],
        unwired=["r4:eth0 <-> r5:eth0: r5 not running"],
        execs=[ExecResult("r1", "true", 0, ""), ExecResult("r2", "false", 1, "it said no\n")],
        links=58,
        lans=1,
    )
    Output(out=out, err=err).link_report(report, brief=True)
    assert out.getvalue().splitlines() == [
        "lab-r3: conflict: exists and was not made by us",
        "linked 2 services (2 new), wired 58 links and 1 LAN (1 not wired); ran 2 exec commands (1 failed): "
        "420 changes in 1.9 s (--verbose lists them)",
    ]
    assert err.getvalue().splitlines() == [
        "composens: not wired: r4:eth0 <-> r5:eth0: r5 not running",
        "composens: exec r2: false: exit 1",
        "  it said no",
    ]


def test_a_run_that_changed_nothing_says_so_without_a_time_a_replay_could_not_keep() -> None:
    kept = [replace(e, action=Action.KEEP) for e in ENTRIES]
    out = Terminal()
    Output(out=out, err=io.StringIO()).link_report(ring_report(entries=kept, wired=[], lans=1), brief=True)
    assert out.getvalue() == "linked 60 services, wired 60 links and 1 LAN: nothing to change\n"


def test_to_a_pipe_every_entry_and_command_stays_a_line_of_its_own() -> None:
    output, out = piped()
    output.link_report(ring_report(), brief=True)
    lines = out.getvalue().splitlines()
    assert lines[0] == "lab-r1: /var/run/netns/lab-r1 -> /var/run/docker/netns/000000000001 link create"
    assert lines[60] == "wired: ip -n lab-r1 link set dev eth0 up"
    assert len(lines) == 480


def test_verbose_on_a_terminal_prints_what_a_pipe_gets() -> None:
    output, out = piped()
    output.link_report(ring_report())
    terminal = Terminal()
    Output(out=terminal, err=io.StringIO()).link_report(ring_report(), brief=False)
    assert terminal.getvalue() == out.getvalue()


def test_attached_up_on_a_terminal_says_only_the_passes_that_changed_something() -> None:
    out = Terminal()
    output = Output(out=out, err=io.StringIO())
    output.followed(ring_report(entries=[replace(e, action=Action.KEEP) for e in ENTRIES], wired=[]), brief=True)
    assert out.getvalue() == ""
    output.followed(ring_report(), brief=True)
    assert out.getvalue().startswith("linked 60 services (60 new)")


def test_the_progress_display_draws_each_step_from_many_threads_and_goes_away(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setattr(render, "PROGRESS_AFTER", 0.0)
    out = Terminal()
    output = Output(out=out, err=io.StringIO(), width=100)
    with output.link_progress(live=True) as progress:
        progress.expect(ENTRIES_STEP, 60)
        progress.advance(ENTRIES_STEP, 60)
        progress.expect(WIRING, 420)

        def wire_some() -> None:
            for _ in range(60):
                progress.advance(WIRING)

        threads = [threading.Thread(target=wire_some) for _ in range(7)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert isinstance(progress, render.LinkProgress)
        deadline = time.monotonic() + 10
        while progress.display is None and time.monotonic() < deadline:  # it appears once its timer runs
            time.sleep(0.01)
        assert progress.display is not None
    text = out.getvalue()
    assert "linking" in text
    assert "60/60" in text
    assert "420/420" in text  # the last drawing, made as it stops, counts every thread's changes
    raw = io.StringIO.getvalue(out)
    assert raw.endswith("\x1b[1A\x1b[2K" * 2), "both lines are erased at the end: the summary follows alone"


def test_no_progress_through_a_pipe_or_with_verbose() -> None:
    output, _ = piped()
    with output.link_progress(live=True) as progress:
        assert progress is SILENT
    with Output(out=Terminal(), err=io.StringIO()).link_progress(live=False) as progress:
        assert progress is SILENT


def test_an_attached_up_that_ends_says_what_it_unlinked() -> None:
    out = Terminal()
    removed = [replace(e, action=Action.REMOVE) for e in ENTRIES[:4]]
    Output(out=out, err=io.StringIO()).followed(LinkReport(entries=removed, seconds=0.04), brief=True)
    assert out.getvalue() == "unlinked 4 services: done in 0.0 s\n"
