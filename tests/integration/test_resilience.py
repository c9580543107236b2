"""Labs that survive restarts, crashes and misuse (issue: watch, prune, locking, fault and soak tests)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from composens.system.faults import POINTS
from tests.integration.conftest import NETNS_DIR, STATE, Project, run
from tests.integration.test_wiring import ping, seed_lab

pytestmark = pytest.mark.integration


def wait_until(condition: object, timeout: float = 30, step: float = 0.1) -> float:
    """Poll `condition` until it holds; return how long that took. Fails the test at the timeout."""
    start = time.monotonic()
    while True:
        if condition():  # type: ignore[operator]
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)


def lab_healthy(project: Project) -> bool:
    rows = project.ps()
    linked = all(r["status"] == "linked" for r in rows) and len(rows) == 4
    interfaces = all(i["present"] and i["up"] for r in rows for i in r["interfaces"])  # type: ignore[union-attr]
    return linked and interfaces


def leftovers(project: Project, host_prefix: str | None = None) -> list[str]:
    found = (
        [f"entry {p.name}" for p in NETNS_DIR.iterdir() if p.name.startswith(project.name)]
        if NETNS_DIR.exists()
        else []
    )
    ids = run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}").stdout.split()
    found += [f"container {i}" for i in ids]
    if host_prefix:
        links = run("ip", "-o", "link", "show").stdout
        found += [f"host interface {line.split(':')[1].strip()}" for line in links.splitlines() if host_prefix in line]
    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    found += [f"record {n}" for n, r in state.get("entries", {}).items() if r["project"] == project.name]
    found += [f"project record {p}" for p in state.get("projects", {}) if p == project.name]
    found += [f"hub record {n}" for n, h in state.get("hubs", {}).items() if h["project"] == project.name]
    mounts = Path("/proc/mounts").read_text()
    found += [f"mount {line.split()[1]}" for line in mounts.splitlines() if f"/netns/{project.name}" in line]
    return found


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_watch_survives_a_restart_storm(project: Project) -> None:
    project.write(seed_lab(project))
    project.cli("up", "-d")
    watch = project.spawn("watch")
    try:
        wait_until(lambda: lab_healthy(project))
        run("docker", "restart", "-t", "0", project.container("router1"))
        repair = wait_until(lambda: ping(project, "node1", "20.0.0.2").returncode == 0, timeout=20)
        print(f"repair after docker restart of router1: {repair:.2f} s until node1 reached node2")
        services = ("node1", "node2", "router1", "router2")
        restarts = 1
        for _ in range(3):
            for service in services:
                run("docker", "restart", "-t", "0", project.container(service))
                restarts += 1
        for _ in range(2):
            threads = [
                threading.Thread(target=run, args=("docker", "restart", "-t", "0", project.container(s)))
                for s in services
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            restarts += len(services)
        wait_until(lambda: lab_healthy(project), timeout=60)
        assert ping(project, "node1", "20.0.0.2").returncode == 0
        assert ping(project, "node1", "2001:2222:2222::2").returncode == 0
        print(f"restarts survived: {restarts}")
    except AssertionError as e:
        out, err = stop(watch)
        raise AssertionError(f"{e}\nwatch printed:\n{out}\n{err}\nps:\n{project.ps()}") from e
    out, err = stop(watch)
    assert watch.returncode == 0, err
    assert "stopped watching" in err
    assert "repaired: " in out
    assert all(line.split(" ", 2)[1] == "repaired:" for line in out.splitlines()), out


def test_watch_removes_a_dead_containers_entry_at_once_and_stops_on_a_double_ctrl_c(project: Project) -> None:
    project.write(seed_lab(project))
    project.cli("up", "-d")
    watch = project.spawn("watch")
    try:
        wait_until(lambda: lab_healthy(project))
        run("docker", "kill", project.container("node2"))
        wait_until(lambda: not (NETNS_DIR / f"{project.name}-node2").exists(), timeout=10)
        run("docker", "start", project.container("node2"))
        wait_until(lambda: ping(project, "node1", "2001:2222:2222::2").returncode == 0, timeout=20)
        # Two interrupts in a row, as an impatient Ctrl-C Ctrl-C sends: watch must still end cleanly.
        watch.send_signal(signal.SIGINT)
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=30)
        assert watch.returncode == 0, err
        assert "stopped watching" in err
    finally:
        stop(watch)


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_during_up_converges(project: Project, point: str) -> None:
    project.write(seed_lab(project))
    project.crash(point, "up", "-d")
    project.cli("up", "-d")
    assert ping(project, "node1", "20.0.0.2").returncode == 0
    assert ping(project, "node1", "2001:2222:2222::2").returncode == 0
    project.cli("down", "-t", "0")
    assert leftovers(project) == []


def test_prune_removes_only_what_no_running_container_owns(project: Project) -> None:
    project.write(seed_lab(project))
    project.cli("up", "-d")
    foreign = f"{project.name}-foreign"
    project.made_entries.append(foreign)
    run("ip", "netns", "add", foreign)
    run("docker", "rm", "-f", project.container("node2"))
    dry = project.cli("netns", "prune", "--dry-run")
    assert f"would remove entry {project.name}-node2 (project {project.name})" in dry.stdout
    assert (NETNS_DIR / f"{project.name}-node2").is_symlink()
    pruned = project.cli("netns", "prune")
    assert f"removed entry {project.name}-node2 (project {project.name})" in pruned.stdout
    assert not (NETNS_DIR / f"{project.name}-node2").exists()
    assert (NETNS_DIR / f"{project.name}-node1").is_symlink()
    assert (NETNS_DIR / foreign).exists()
    assert project.cli("netns", "prune").stdout == ""


def test_two_projects_up_and_down_in_parallel(project: Project, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = Project(project.name + "p", tmp_path_factory.mktemp("parallel"))
    projects = (project, other)
    for p in projects:
        p.write(seed_lab(p))
    cycles = int(os.environ.get("COMPOSENS_PARALLEL_CYCLES", "10"))
    try:
        for _ in range(cycles):
            for action in (("up", "-d"), ("down", "-t", "0")):
                results: list[subprocess.CompletedProcess[str]] = []

                def act(p: Project, action: tuple[str, ...] = action, results: list[object] = results) -> None:
                    results.append(p.cli(*action, check=False))

                threads = [threading.Thread(target=act, args=(p,)) for p in projects]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
                if action[0] == "up":
                    for p in projects:
                        assert ping(p, "node1", "20.0.0.2").returncode == 0
            assert leftovers(project) == []
            assert leftovers(other) == []
    finally:
        other.cli("down", "-t", "0", check=False)
    print(f"parallel up/down cycles of two projects: {cycles}")


def test_soak_up_down_cycles_leave_nothing(project: Project) -> None:
    services = 20
    host_if = f"{project.name[3:9]}h"
    lines = ["x-composens:", f"  netns_prefix: {project.name}-", "  links:"]
    lines += [f'    - endpoints: ["s{n}:to{n + 1}", "s{n + 1}:to{n}"]' for n in range(1, services)]
    lines += [f'    - endpoints: ["s1:up", "host:{host_if}"]', "services:"]
    for n in range(1, services + 1):
        lines += [f"  s{n}:", "    image: IMAGE", "    network_mode: none"]
    project.write("\n".join(lines) + "\n")
    cycles = int(os.environ.get("COMPOSENS_SOAK_CYCLES", "15"))
    times = []
    for _ in range(cycles):
        start = time.monotonic()
        project.cli("up", "-d")
        assert len([p for p in NETNS_DIR.iterdir() if p.name.startswith(project.name)]) == services
        project.cli("down", "-t", "0")
        times.append(time.monotonic() - start)
        assert leftovers(project, host_if) == []
    first, last = statistics.median(times[:5]), statistics.median(times[-5:])
    print(
        f"soak: {cycles} cycles of {services} services and {services} links; "
        f"median cycle first five {first:.2f} s, last five {last:.2f} s"
    )


def engine_pid() -> int:
    """The pid of the engine behind /var/run/docker.sock, from the pid file dockerd writes beside it."""
    pid = int(Path("/var/run/docker.pid").read_text().strip())
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd", f"pid {pid} is not dockerd"
    return pid


def restart_engine() -> None:
    """Stop dockerd and start it again the way this machine runs it."""
    if (
        subprocess.run(["systemctl", "is-active", "--quiet", "docker"], capture_output=True, check=False).returncode
        == 0
    ):
        run("systemctl", "restart", "docker", timeout=120)
        return
    # This engine only, by the pid it wrote: a second engine on the machine (a simulated host of a multi-host
    # test, with its own /run) must keep running.
    pid = engine_pid()
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=60)
    run("bash", str(Path(__file__).resolve().parents[2] / "scripts" / "bootstrap.sh"), timeout=120)


def test_engine_restart_under_a_running_lab(project: Project, tmp_path: Path) -> None:
    project.write(seed_lab(project))
    project.cli("up", "-d")
    # Another process called dockerd (as a second host's engine is) must outlive this engine's restart.
    decoy_path = tmp_path / "dockerd"
    decoy_path.write_bytes(Path("/bin/sleep").read_bytes())
    decoy_path.chmod(0o755)
    decoy = subprocess.Popen([str(decoy_path), "600"])
    try:
        restart_engine()
        assert decoy.poll() is None, "restarting the engine stopped another process called dockerd"
    finally:
        decoy.kill()
        decoy.wait()
    # The engine stopped the containers: ps tells the truth, and no entry enters anything.
    rows = project.ps()
    assert {r["status"] for r in rows} <= {"stale", "none"}
    for row in rows:
        assert run("ip", "netns", "exec", str(row["netns"]), "true", check=False).returncode != 0
    project.cli("up", "-d")
    assert lab_healthy(project)
    assert ping(project, "node1", "20.0.0.2").returncode == 0
    assert ping(project, "node1", "2001:2222:2222::2").returncode == 0
