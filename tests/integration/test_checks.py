"""`composens test` on the real engine: the demo lab's checks, broken routes, a stopped router, a check that waits."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

import pytest
import yaml

from tests.integration.conftest import Project, run
from tests.integration.test_wiring import seed_lab

pytestmark = pytest.mark.integration


def results(project: Project, *args: str) -> tuple[int, dict[str, dict[str, object]]]:
    done = project.cli("test", "--format", "json", *args, check=False, timeout=180)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, {str(r["name"]): r for r in json.loads(done.stdout)}


def test_the_demo_labs_checks_pass_and_fail_for_the_right_reasons(project: Project) -> None:
    project.write(seed_lab(project))
    project.cli("up", "-d")
    report = project.folder / "junit.xml"
    code, found = results(project, "--junit", str(report))
    assert code == 0, found
    assert set(found) == {
        "node1 reaches node2 over IPv4 (router1)",
        "node1 reaches node2 over IPv6 (router2)",
        "node2 reaches node1 over IPv4",
        "node1 has no way to 198.18.255.1",
    }
    assert all(r["result"] == "pass" for r in found.values())
    assert found["node1 reaches node2 over IPv4 (router1)"]["rtts_ms"]  # round trips reported
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "0", "0")
    # A broken route fails the IPv4 check only, with the reason; IPv6 (via router2) still passes.
    run("ip", "-n", f"{project.name}-node1", "route", "del", "20.0.0.0/24")
    code, found = results(project)
    assert code == 1
    assert found["node1 reaches node2 over IPv4 (router1)"]["result"] == "fail"
    assert str(found["node1 reaches node2 over IPv4 (router1)"]["reason"]).startswith("0/3 replies")
    assert found["node1 reaches node2 over IPv6 (router2)"]["result"] == "pass"
    project.cli("up", "-d")  # converges: the route is back
    # A stopped router: its checks' paths fail; a check from a stopped service fails with that reason.
    run("docker", "stop", "-t", "0", project.container("router2"))
    code, found = results(project)
    assert code == 1
    assert found["node1 reaches node2 over IPv6 (router2)"]["result"] == "fail"
    assert found["node1 reaches node2 over IPv4 (router1)"]["result"] == "pass"
    assert found["node1 has no way to 198.18.255.1"]["result"] == "pass"  # expect: failure
    run("docker", "stop", "-t", "0", project.container("node2"))
    code, found = results(project, "node2 reaches node1 over IPv4")
    assert found["node2 reaches node1 over IPv4"]["reason"] == "service node2 is not running"


def test_a_waiting_check_passes_once_the_link_is_wired(project: Project) -> None:
    lab = yaml.safe_load(seed_lab(project))
    lab["x-composens"]["checks"] = [
        {"name": "late", "ping": {"from": "node1", "to": "20.0.0.2", "count": 1}, "wait": 30}
    ]
    project.write(yaml.safe_dump(lab))
    project.cli("up", "-d")
    run("ip", "-n", f"{project.name}-node1", "route", "del", "20.0.0.0/24")
    waiting = project.spawn("test", "late", "--format", "json")
    time.sleep(3)
    project.cli("netns", "link")  # wires the route back while the check waits
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    [late] = json.loads(out)
    assert late["result"] == "pass"
    assert int(late["attempts"]) >= 2


# --------------------------------------------------------------------------- exec through the engine's API (issue 21)


def exec_lab(project: Project, checks: list[dict[str, object]]) -> None:
    """One service with an init that reaps (so a killed command leaves no zombie behind) and the checks."""
    lab = {
        "services": {"a": {"image": "IMAGE", "command": ["sleep", "600"], "init": True, "network_mode": "none"}},
        "x-composens": {"checks": checks},
    }
    project.write(yaml.safe_dump(lab))
    project.cli("up", "-d")


def processes_in(project: Project, service: str) -> list[str]:
    """The command lines of the container's live processes, its init and main command left out."""
    out = run("docker", "top", project.container(service), "-o", "pid,stat,args").stdout.splitlines()[1:]
    rows = [line.split(None, 2) for line in out]
    return [args for _, stat, args in rows if not stat.startswith("Z") and args not in INIT_AND_MAIN]


INIT_AND_MAIN = {"/sbin/docker-init -- sleep 600", "sleep 600"}


def test_an_exec_check_reads_the_commands_own_exit_code_and_the_engines_refusals(project: Project) -> None:
    exec_lab(
        project,
        [
            {"name": "says hello", "exec": {"service": "a", "command": "echo hello; exit 3"}, "exit_code": 3,
             "stdout_contains": "hello"},
            {"name": "exits 1", "exec": {"service": "a", "command": "exit 1"}, "exit_code": 1},
            {"name": "no such program", "exec": {"service": "a", "command": ["no-such-program"]}, "exit_code": 126},
        ],
    )  # fmt: skip
    code, found = results(project)
    assert found["says hello"]["result"] == "pass", found
    assert found["exits 1"]["result"] == "pass", found
    # docker exec exits 126 here: the check would pass; the engine says the runtime never started it.
    assert found["no such program"]["result"] == "error", found
    assert "executable file not found" in str(found["no such program"]["reason"])
    assert code == 1
    run("docker", "pause", project.container("a"))
    try:
        code, found = results(project, "exits 1")
    finally:
        run("docker", "unpause", project.container("a"))
    # docker exec exits 1 on a paused container, which an `exit_code: 1` check took for a pass.
    assert code == 1
    assert found["exits 1"]["result"] == "error", found
    assert "is paused" in str(found["exits 1"]["reason"])


def test_an_exec_check_that_times_out_leaves_nothing_running(project: Project) -> None:
    exec_lab(project, [{"name": "hangs", "exec": {"service": "a", "command": "sleep 300; echo never", "timeout": 1}}])
    started = time.monotonic()
    code, found = results(project)
    assert code == 1
    assert found["hangs"]["result"] == "fail"
    assert found["hangs"]["reason"] == "timed out after 1 s"
    assert time.monotonic() - started < 30
    # The shell and the sleep it started are gone, not only the client.
    assert processes_in(project, "a") == []


def test_a_waiting_check_that_keeps_timing_out_runs_one_command_at_a_time(project: Project) -> None:
    exec_lab(
        project, [{"name": "hangs", "exec": {"service": "a", "command": ["sleep", "300"], "timeout": 1}, "wait": 6}]
    )
    checking = project.spawn("test", "--format", "json")
    most = 0
    while checking.poll() is None:
        most = max(most, len([args for args in processes_in(project, "a") if args == "sleep 300"]))
        time.sleep(0.1)
    out, err = checking.communicate(timeout=60)
    [hangs] = json.loads(out)
    assert hangs["result"] == "fail", err
    assert int(hangs["attempts"]) >= 3
    assert most == 1  # seen running, and never two at once
    assert processes_in(project, "a") == []
