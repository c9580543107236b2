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
