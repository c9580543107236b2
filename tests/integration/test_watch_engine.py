"""`watch` outlives its engine, and runs as a systemd service (issue 26, item 11).

The engine restarted is the test's own: host 2 of twohost.py, a dockerd this test starts and stops by its pid.
The main engine is never stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import IMAGE, Project, run
from tests.integration.twohost import SecondHost, second_host

pytestmark = pytest.mark.integration

LAB = """\
services:
  a:
    image: IMAGE
    network_mode: none
    command: sleep 3600
    restart: always
    x-composens:
      addresses: {e1: [198.18.7.1/24, "2001:db8:7::1/64"]}
  b:
    image: IMAGE
    network_mode: none
    command: sleep 3600
    restart: always
    x-composens:
      addresses: {e1: [198.18.7.2/24, "2001:db8:7::2/64"]}
x-composens:
  netns_prefix: PREFIX-
  links:
    - endpoints: ["a:e1", "b:e1"]
"""


@pytest.fixture(scope="module")
def host2() -> Iterator[SecondHost]:
    with second_host((IMAGE,)) as host:
        yield host


def ps(host: SecondHost, project: Project) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(
        host.composens(project.name, project.folder, "ps", "--netns", "--format", "json").stdout
    )
    return rows


def wired(host: SecondHost, project: Project) -> bool:
    rows = ps(host, project)
    linked = len(rows) == 2 and all(r["status"] == "linked" for r in rows)
    return linked and all(i["present"] and i["up"] for r in rows for i in r["interfaces"])  # type: ignore[union-attr]


def pings(host: SecondHost, project: Project, address: str) -> bool:
    done = host.run(
        "ip", "netns", "exec", f"{project.name}-a", "busybox", "ping", "-c", "1", "-W", "2", address, check=False
    )
    return done.returncode == 0


def wait_until(what: str, condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def test_watch_waits_for_its_engine_and_rewires_what_came_back(host2: SecondHost, project: Project) -> None:
    project.write(LAB.replace("PREFIX", project.name))
    host2.composens(project.name, project.folder, "up", "-d")
    watch = subprocess.Popen(
        host2.enter("sh", "-c", 'cd "$0" && exec "$@"', str(project.folder),
                    sys.executable, "-m", "composens", "-p", project.name, "watch"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until("the lab wired under watch", lambda: wired(host2, project), 30)
        before = {str(r["netns"]): r["target"] for r in ps(host2, project)}
        for round_ in range(2):  # twice: each outage is waited out and said once
            away = host2.restart_engine()
            assert watch.poll() is None, f"watch ended with its engine: {watch.communicate()}"
            wait_until(f"round {round_}: the lab rewired", lambda: wired(host2, project), 60)
            assert pings(host2, project, "198.18.7.2")
            assert pings(host2, project, "2001:db8:7::2")
            after = {str(r["netns"]): r["target"] for r in ps(host2, project)}
            assert all(after[name] != before[name] for name in before), "the containers came back in new namespaces"
            before = after
            print(f"round {round_}: engine away {away:.1f} s; lab rewired")
    finally:
        if watch.poll() is None:
            watch.send_signal(signal.SIGTERM)
        out, err = watch.communicate(timeout=60)
        host2.composens(project.name, project.folder, "down", "-t", "0", check=False)
    assert watch.returncode == 0, err
    notes = [line for line in err.splitlines() if "docker engine" in line]
    assert (
        notes
        == [
            "composens: the docker engine stopped answering; waiting for it to come back",
            "composens: the docker engine is back; repairing the lab",
        ]
        * 2
    ), err
    assert "not reachable" not in err  # the outage is said once, by watch, not by each repair it cut short
    assert "stopped watching" in err
    assert "repaired: " in out


def test_ps_says_running_containers_with_stale_entries_are_not_linked(host2: SecondHost, project: Project) -> None:
    """The issue's `a, b not running` for two running containers: their engine restarted and nothing watched."""
    project.write(LAB.replace("PREFIX", project.name))
    host2.composens(project.name, project.folder, "up", "-d")
    holder = subprocess.Popen(host2.enter("sleep", "600"))
    try:
        host2.restart_engine()
        wait_until(
            "both containers running again",
            lambda: all(r["pid"] for r in ps(host2, project)) and len(ps(host2, project)) == 2,
            60,
        )
        shown = host2.composens(project.name, project.folder, "ps", "--netns").stdout
        assert "not running" not in shown, shown
        assert "not wired: a:e1 <-> b:e1: a, b running, not linked (stale netns entry)" in shown.splitlines()
        assert {str(r["status"]) for r in ps(host2, project)} == {"stale"}
        host2.composens(project.name, project.folder, "netns", "link")
        assert wired(host2, project)
    finally:
        holder.kill()
        holder.wait()
        host2.composens(project.name, project.folder, "down", "-t", "0", check=False)


def test_the_watch_unit_verifies_and_is_ours_to_remove(project: Project, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: scripts/bootstrap.sh installs Debian's systemd"
    project.write(LAB.replace("PREFIX", project.name))
    units = tmp_path / "units"
    done = project.cli("watch", "b", "--install-unit", "--unit-dir", str(units))
    path = units / f"composens-watch-{project.name}.service"
    assert done.stdout.splitlines() == [
        f"wrote {path}",
        f"to run it where systemd runs: systemctl daemon-reload && systemctl enable --now {path.name}",
    ]
    text = path.read_text()
    assert f"ExecStart={sys.executable} -m composens -p {project.name} watch b" in text.splitlines()
    assert f"WorkingDirectory={project.folder}" in text.splitlines()
    verified = run(analyze, "verify", str(path), check=False)
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")
    # The command it runs is this composens, and works from the unit's folder: its --help answers there.
    argv = text.split("ExecStart=", 1)[1].splitlines()[0].split()
    assert run(*argv[:-2], "watch", "--help", cwd=project.folder).returncode == 0
    assert project.cli("watch", "--remove-unit", "--unit-dir", str(units)).stdout == f"removed {path}\n"
    assert not path.exists()
    assert not os.listdir(units)
