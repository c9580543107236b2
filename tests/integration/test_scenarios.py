"""`composens scenario run` on the real engine and kernel: outages measured by the probes, every step undone.

One busybox lab for the module (a lab costs an `up`; every scenario must leave it as its file says, which each
test checks before the next uses it): a and b joined by a link, a, b and c on a LAN, b serving TCP.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import IMAGE, NETNS_DIR, Project, run

pytestmark = pytest.mark.integration

INTERVAL = 0.02  # s: the probes' interval; an outage agrees with the steps within two of them
LAB = {
    "x-composens": {
        "links": [{"endpoints": ["a:eth1", "b:eth1"]}],
        "lans": {"lan0": {"endpoints": ["a:lan0", "b:lan0", "c:lan0"]}},
        "checks": [{"name": "a reaches b", "ping": {"from": "a", "to": "198.18.71.2", "count": 1}}],
        "probes": {
            "a-b": {"ping": {"from": "a", "to": "198.18.71.2", "interval": "20ms"}},
            "a-b6": {"ping": {"from": "a", "to": "2001:db8:71::2", "interval": "20ms"}},
            "a-c": {"ping": {"from": "a", "to": "198.18.72.3", "interval": "20ms"}},
            "b-c": {"ping": {"from": "b", "to": "198.18.72.3", "interval": "20ms"}},
            "a-b-tcp": {"tcp": {"from": "a", "to": "198.18.71.2", "port": 8080, "interval": "50ms"}},
        },
    },
    "services": {
        "a": {
            "image": "IMAGE",
            "network_mode": "none",
            "x-composens": {"addresses": {"eth1": ["198.18.71.1/24", "2001:db8:71::1/64"], "lan0": ["198.18.72.1/24"]}},
        },
        "b": {
            "image": "IMAGE",
            "network_mode": "none",
            "x-composens": {
                "addresses": {"eth1": ["198.18.71.2/24", "2001:db8:71::2/64"], "lan0": ["198.18.72.2/24"]},
                "exec": ["httpd -p 198.18.71.2:8080 -h /tmp"],  # busybox's: a TCP service for the tcp probe
            },
        },
        "c": {
            "image": "IMAGE",
            "network_mode": "none",
            "x-composens": {"addresses": {"lan0": ["198.18.72.3/24"]}},
        },
    },
}


def with_scenarios(project: Project, scenarios: dict[str, Any], capture: dict[str, Any] | None = None) -> None:
    """Write the lab's file with these scenarios, and the flight recorder's settings (neither changes the wiring: the
    running lab stays as it is)."""
    lab = json.loads(json.dumps(LAB).replace("IMAGE", IMAGE))
    lab["x-composens"]["netns_prefix"] = f"{project.name}-"
    lab["x-composens"]["hub"] = f"{project.name}-hub"
    lab["x-composens"]["scenarios"] = scenarios
    if capture is not None:
        lab["x-composens"]["capture"] = capture
    project.write(yaml.safe_dump(lab, sort_keys=False))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    folder = tmp_path_factory.mktemp("scenarios")
    project = Project(f"cns{uuid.uuid4().hex[:8]}", folder)
    with_scenarios(project, {"nothing": {"steps": [{"sleep": "1ms"}]}})
    try:
        project.cli("up", "-d")
        yield project
    finally:
        project.cli("down", "-t", "0", check=False)
        ids = run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}", check=False)
        if ids.stdout.split():
            run("docker", "rm", "-f", *ids.stdout.split(), check=False)
        for entry in NETNS_DIR.glob(f"{project.name}*") if NETNS_DIR.exists() else ():
            if entry.is_symlink():
                entry.unlink()
            else:
                run("ip", "netns", "delete", entry.name, check=False)


def scenario(project: Project, *args: str, code: int | None = 0) -> dict[str, Any]:
    done = project.cli("scenario", "run", "--format", "json", *args, check=False, timeout=240)
    if code is not None:
        assert done.returncode == code, done.stderr
    (report,) = json.loads(done.stdout)
    return report  # type: ignore[no-any-return]


def assert_as_its_file_says(project: Project) -> None:
    """Nothing left down, impaired or paused: every declared interface up, no drift, no run-time conditions."""
    rows = project.ps()
    for row in rows:
        assert row["drift"] == [], row
        for interface in row["interfaces"]:  # type: ignore[attr-defined]
            assert interface["up"], (row, interface)
            assert not interface["set_down"], (row, interface)
            assert interface["conditions"] is None, (row, interface)
    conditions = json.loads(project.cli("netem", "show", "--format", "json").stdout)
    assert conditions == []
    for service in ("a", "b", "c"):
        state = run("docker", "inspect", "-f", "{{.State.Status}} {{.State.Paused}}", project.container(service))
        assert state.stdout.split() == ["running", "false"], service
    assert project.cli("plan", "--exit-code", check=False).returncode == 0


def probe_of(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in report["probes"] if p["name"] == name)


def step_of(report: dict[str, Any], text: str) -> dict[str, Any]:
    return next(s for s in report["steps"] if s["step"] == text)


def test_a_cut_link_gives_one_outage_as_long_as_the_cut(lab: Project, tmp_path: Path) -> None:
    with_scenarios(
        lab,
        {
            "cut": {
                "description": "the link a-b goes down for two seconds",
                "probes": ["a-b", "a-b6", "b-c", "a-b-tcp"],
                "steps": [
                    {"sleep": "1s"},
                    {"link": {"down": "a:eth1"}},
                    {"sleep": "2s"},
                    {"link": {"up": "a:eth1"}},
                    {"expect": {"probe": "a-b", "recovers_within": "1s", "outage": {"min": "1.5s", "max": "3s"}}},
                    {"expect": {"check": "a reaches b", "within": "5s"}},
                    # b-c does not cross the link: untouched (a lone request lost to the machine's load is allowed)
                    {"expect": {"probe": "b-c", "loss": {"max": "1%"}, "over": "scenario"}},
                ],
            }
        },
    )
    junit, timeline = tmp_path / "junit.xml", tmp_path / "timeline.svg"
    report = scenario(lab, "cut", "--junit", str(junit), "--timeline", str(timeline))
    assert report["result"] == "pass", report["expectations"]
    down, up = step_of(report, "link down a:eth1"), step_of(report, "link up a:eth1")
    cut = up["effective"] - down["effective"]
    for name in ("a-b", "a-b6"):
        (outage,) = probe_of(report, name)["outages"]  # one outage, no more
        assert abs(outage["duration"] - cut) <= 2 * INTERVAL, (name, outage, cut)
        assert abs(outage["start"] - down["effective"]) <= 2 * INTERVAL, (name, outage, down)
    (tcp_outage,) = probe_of(report, "a-b-tcp")["outages"]
    assert abs(tcp_outage["duration"] - cut) <= 2 * 0.05 + 0.2, tcp_outage  # a lost SYN is retried after 200 ms
    assert all(o["lost"] == 1 for o in probe_of(report, "b-c")["outages"]), probe_of(report, "b-c")["outages"]
    # JSON: every request, in schedule order; the verdicts with their windows.
    requests = probe_of(report, "a-b")["requests"]
    assert [r["seq"] for r in requests] == list(range(len(requests)))
    assert len(requests) == pytest.approx(report["seconds"] / INTERVAL, rel=0.1)
    expectations = {e["name"]: e for e in report["expectations"]}
    assert set(expectations) == {
        "a-b recovers within 1 s",
        "a-b outage >= 1.5 s",
        "a-b outage <= 3 s",
        "check 'a reaches b' within 5 s",
        "b-c loss <= 1 %",
    }
    recovered = expectations["a-b recovers within 1 s"]
    assert recovered["window"] == {"start": up["effective"], "end": pytest.approx(up["effective"] + 1, abs=1e-5)}
    assert recovered["wall_window"]["start"] == pytest.approx(report["started_at"] + up["effective"], abs=1e-5)
    # JUnit: a case per expectation; the timeline: a lane per probe.
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "0", "0")
    texts = [t.text for t in ET.parse(timeline).getroot().iter("{http://www.w3.org/2000/svg}text")]
    assert {"a-b", "a-b6", "b-c", "a-b-tcp", "2. link down a:eth1", "4. link up a:eth1"} <= set(texts)
    assert_as_its_file_says(lab)


def test_flap_gives_exactly_as_many_outages_as_flaps(lab: Project) -> None:
    with_scenarios(
        lab,
        {
            "flapping": {
                "probes": ["a-b"],
                "steps": [
                    {"sleep": "500ms"},
                    {
                        "flap": {
                            "link": "b:eth1",
                            "times": 4,
                            "down": {"min": "300ms", "max": "700ms"},
                            "up": "600ms",
                            "seed": 3,
                        }
                    },
                    {"expect": {"probe": "a-b", "loss": {"min": "10%", "max": "70%"}}},
                ],
            }
        },
    )
    report = scenario(lab, "flapping")
    assert report["result"] == "pass", report["expectations"]
    (flap,) = [s for s in report["steps"] if s["kind"] == "flap"]
    marks = flap["marks"]
    assert [m["what"] for m in marks] == ["down b:eth1", "up b:eth1"] * 4
    outages = probe_of(report, "a-b")["outages"]
    assert len(outages) == 4, outages
    for outage, (went_down, came_up) in zip(outages, zip(marks[::2], marks[1::2], strict=True), strict=True):
        assert abs(outage["duration"] - (came_up["at"] - went_down["at"])) <= 2 * INTERVAL, (outage, went_down, came_up)
    downs = [up["at"] - down["at"] for down, up in zip(marks[::2], marks[1::2], strict=True)]
    assert all(0.3 <= d <= 0.7 + 2 * INTERVAL for d in downs), downs  # drawn with the seed
    assert flap["detail"].startswith("4 of 4 flaps")
    assert_as_its_file_says(lab)


def test_partition_cuts_links_and_lan_ports_between_the_groups_and_heal_restores_them(lab: Project) -> None:
    with_scenarios(
        lab,
        {
            "split": {
                "probes": ["a-b", "a-c", "b-c"],
                "steps": [
                    {"sleep": "500ms"},
                    {"partition": [["a"], ["b", "c"]]},
                    {"sleep": "1.5s"},
                    {"expect": {"probe": "a-b", "outage": {"min": "1s"}}},
                    {"expect": {"probe": "a-c", "outage": {"min": "1s"}}},
                    {"expect": {"probe": "b-c", "loss": {"max": "1%"}}},
                    "heal",
                    {"sleep": "1s"},
                    {"expect": {"probe": "a-c", "loss": {"max": "1%"}}},
                ],
            }
        },
    )
    report = scenario(lab, "split")
    assert report["result"] == "pass", report["expectations"]
    partition, heal = step_of(report, "partition a | b, c"), step_of(report, "heal")
    assert partition["detail"] == "cut b:eth1, a:lan0"
    assert heal["detail"] == "restored b:eth1, a:lan0"
    for name in ("a-b", "a-c"):
        (outage,) = probe_of(report, name)["outages"]
        assert abs(outage["duration"] - (heal["effective"] - partition["effective"])) <= 0.5, (name, outage)
    assert all(o["lost"] == 1 for o in probe_of(report, "b-c")["outages"]), probe_of(report, "b-c")["outages"]
    assert_as_its_file_says(lab)


def test_a_paused_service_is_shown_kept_with_keep_and_unpaused_by_up(lab: Project) -> None:
    with_scenarios(
        lab,
        {
            "freeze": {
                "probes": ["a-c"],
                "steps": [
                    {"pause": "c"},
                    {"sleep": "1s"},
                    # docker pause freezes c's processes, not its kernel: its namespace still answers pings.
                    {"expect": {"probe": "a-c", "loss": {"max": "1%"}}},
                    {"exec": {"service": "c", "command": "true"}},
                ],
            }
        },
    )
    report = scenario(lab, "freeze", "--keep", code=1)  # the engine refuses an exec in a paused container
    assert report["result"] == "error"
    exec_step = step_of(report, "exec c: true")
    assert "paused" in exec_step["error"], exec_step
    assert report["expectations"][0]["result"] == "pass"
    assert report["kept"] is True
    state = run("docker", "inspect", "-f", "{{.State.Paused}}", lab.container("c")).stdout.strip()
    assert state == "true"
    (row,) = [r for r in lab.ps() if r["service"] == "c"]
    assert row["drift"] == [{"problem": "paused", "item": "container: `composens up -d` unpauses it", "ours": None}]
    up = lab.cli("up", "-d")
    assert "c: unpaused" in up.stdout
    assert_as_its_file_says(lab)
    report = scenario(lab, "freeze", code=1)  # without --keep: unpaused at the end
    assert "unpaused c" in report["restored"]
    assert_as_its_file_says(lab)


def test_everything_is_restored_after_a_failed_expectation(lab: Project) -> None:
    with_scenarios(
        lab,
        {
            "break-all": {
                "probes": ["a-b", "b-c"],
                "steps": [
                    {"link": {"down": "a:eth1"}},
                    {"netem": {"b:lan0": {"rate": "1mbit"}, "c:lan0": {"rate": "2mbit"}}},
                    {"pause": "c"},
                    {"partition": [["b"], ["c"]]},
                    {"sleep": "500ms"},
                    {"expect": {"probe": "a-b", "recovers_within": "500ms"}},
                    {"stop": "c"},
                ],
            }
        },
    )
    report = scenario(lab, "break-all", code=1)
    assert report["result"] == "fail"
    (verdict,) = report["expectations"]
    assert verdict["result"] == "fail"
    assert verdict["reason"].startswith("not recovered after 500 ms")
    assert set(report["restored"]) >= {"started c", "link up a:eth1", "conditions of b:lan0 back to the file"}
    assert_as_its_file_says(lab)


def test_the_recorder_writes_a_failed_expectations_packets_and_nothing_when_all_pass(
    lab: Project, tmp_path: Path
) -> None:
    # c's LAN port goes down: a keeps its carrier and its neighbour entry for c (seconds), so the probe's echo
    # requests go on leaving a:lan0, where the recorder watches, and none is answered.
    with_scenarios(
        lab,
        {
            "lan-calm": {
                "probes": ["a-c"],
                "steps": [{"sleep": "300ms"}, {"expect": {"probe": "a-c", "outage": {"max": "1s"}}}],
            },
            "lan-cut": {
                "probes": ["a-c"],
                "steps": [
                    {"link": {"down": "c:lan0"}},
                    {"sleep": "1s"},
                    {"expect": {"probe": "a-c", "outage": {"max": "200ms"}}},
                    {"link": {"up": "c:lan0"}},
                ],
            },
        },
        capture={"targets": ["a:lan0"], "keep": "5s"},
    )
    captures = tmp_path / "captures"
    junit = tmp_path / "junit.xml"
    report = scenario(lab, "lan-calm", "--captures", str(captures))
    assert report["expectations"][0]["capture"] is None
    assert not captures.exists()  # nothing written when every expectation passes

    report = scenario(lab, "lan-cut", "--captures", str(captures), "--junit", str(junit), code=1)
    (verdict,) = report["expectations"]
    assert verdict["result"] == "fail", verdict
    path = captures / "lan-cut_step_3_a-c_outage_200_ms.pcapng"
    assert verdict["capture"] == str(path)
    assert os.listdir(captures) == [path.name]
    assert f"[[ATTACHMENT|{path}]]" in junit.read_text()
    # Every request the probe lost is in the file, an echo request on a:lan0 with no reply; every other one has
    # its reply there too (the scenario is shorter than `keep`, so the window holds all of it).
    rows = tshark_rows(path, "frame.interface_name", "icmp.type", "ip.dst", "icmp.ident", "icmp.seq")
    assert {name for name, *_ in rows} == {"a:lan0"}
    requests = {(ident, int(seq)) for _, kind, dst, ident, seq in rows if kind == "8" and dst == "198.18.72.3"}
    replies = {(ident, int(seq)) for _, kind, _, ident, seq in rows if kind == "0"}
    (ident,) = {ident for ident, _ in requests}
    lost = {r["seq"] for r in probe_of(report, "a-c")["requests"] if r["rtt"] is None}
    assert len(lost) >= 1 / INTERVAL / 2, lost  # the link was down for a second
    assert {seq for _, seq in requests - replies} == lost
    assert {seq for _, seq in requests} == {r["seq"] for r in probe_of(report, "a-c")["requests"]}
    assert {seq for i, seq in replies if i == ident} == {seq for _, seq in requests} - lost
    assert_as_its_file_says(lab)


def tshark_rows(path: Path, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for field in fields:
        argv += ["-e", field]
    return [line.split("|") for line in run(*argv).stdout.splitlines()]


def read_until(child: subprocess.Popen[str], text: str, timeout: float) -> str:
    """Read the child's stderr until a line holds `text`."""
    assert child.stderr is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} within {timeout} s; stderr so far:\n{seen}"
        ready, _, _ = select.select([child.stderr], [], [], left)
        if ready:
            line = child.stderr.readline()
            assert line, f"stderr ended before {text!r}:\n{seen}"
            seen += line
    return seen


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_step_stops_the_scenario_and_restores_the_lab(lab: Project, sig: signal.Signals) -> None:
    with_scenarios(
        lab,
        {
            "long": {
                "probes": ["a-b"],
                "steps": [
                    {"netem": {"a:lan0": {"rate": "1mbit"}}},
                    {"pause": "c"},
                    {"partition": [["a", "b"], ["c"]]},
                    {"flap": {"link": "a:eth1", "times": 3, "down": "60s", "up": "1s"}},
                    {"expect": {"probe": "a-b", "loss": {"max": "0%"}}},
                ],
            }
        },
    )
    child = subprocess.Popen(
        [*lab_command(lab), "scenario", "run", "long", "--format", "json"],
        cwd=lab.folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        read_until(child, "3. partition a, b | c", 120)  # the partition is in; the flap begins: a:eth1 goes down
        time.sleep(1.0)
        os.kill(child.pid, sig)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 130, err
    assert f"stopped by {sig.name}; the lab was restored" in err
    (report,) = json.loads(out)
    assert report["stopped"] == f"stopped by {sig.name}"
    flap = step_of(report, "flap a:eth1 3 times (down 60 s, up 1 s)")
    assert [m["what"] for m in flap["marks"]] == ["down a:eth1"]
    assert {"unpaused c", "link up a:eth1", "link up c:lan0", "conditions of a:lan0 back to the file"} <= set(
        report["restored"]
    )
    assert_as_its_file_says(lab)


def lab_command(project: Project) -> list[str]:
    import sys

    return [sys.executable, "-m", "composens", "-p", project.name]


def test_restart_relinks_and_rewires_the_service(lab: Project) -> None:
    with_scenarios(
        lab,
        {
            "reboot": {
                "probes": ["a-b"],
                "steps": [
                    {"restart": "b"},
                    {"expect": {"probe": "a-b", "recovers_within": "5s"}},
                    {"expect": {"check": "a reaches b", "within": "5s"}},
                ],
            }
        },
    )
    started = run("docker", "inspect", "-f", "{{.State.StartedAt}}", lab.container("b")).stdout
    report = scenario(lab, "reboot")
    assert report["result"] == "pass", report["expectations"]
    # A new start (so a new namespace: not told by its inode, which the kernel hands out again once the old one
    # is gone), whose link the probe saw go and come back, linked and wired by the step itself.
    assert run("docker", "inspect", "-f", "{{.State.StartedAt}}", lab.container("b")).stdout != started
    assert probe_of(report, "a-b")["lost"] > 0
    assert step_of(report, "restart b")["detail"] == "relinked and rewired"
    assert_as_its_file_says(lab)


def test_unknown_names_are_refused_before_anything_runs(lab: Project) -> None:
    with_scenarios(lab, {"s": {"steps": [{"link": {"down": "a:eth1"}}]}})
    done = lab.cli("scenario", "run", "s", "nope", check=False)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        "composens: error: docker-compose.yml: no such scenario: 'nope' (declared: s)"
    ]
    listing = lab.cli("scenario", "list").stdout
    assert listing.splitlines()[:2] == ["s", "  probe a-b: ping a -> 198.18.71.2 every 20 ms"]
    assert_as_its_file_says(lab)
