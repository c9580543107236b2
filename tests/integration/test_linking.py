"""Linking, status and cleanup against the real engine and kernel (issue: composens core)."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from tests.integration.conftest import NETNS_DIR, Project, entry_ns, ns_inode, run

pytestmark = pytest.mark.integration

FOUR = """
services:
  node1: {image: IMAGE, network_mode: none}
  node2: {image: IMAGE, network_mode: none}
  router1: {image: IMAGE, network_mode: none}
  router2: {image: IMAGE, network_mode: none}
"""


def prefixed(project: Project, text: str) -> str:
    """Give the project's entries a unique prefix so tests never collide with anything on the host."""
    return f"x-composens: {{netns_prefix: {project.name}-}}\n{text}"


def test_up_links_every_service_into_its_own_namespace(project: Project) -> None:
    project.write(prefixed(project, FOUR))
    done = project.cli("up", "-d")
    for service in ("node1", "node2", "router1", "router2"):
        name = f"{project.name}-{service}"
        assert f"{name}: /var/run/netns/{name} -> /var/run/docker/netns/" in done.stdout
        assert (NETNS_DIR / name).is_symlink()
        assert entry_ns(name) == project.container_ns(service)
    assert len({project.container_ns(s) for s in ("node1", "node2", "router1", "router2")}) == 4
    assert set(project.status().values()) == {"linked"}
    listed = run("ip", "netns", "list").stdout
    assert f"{project.name}-router2" in listed


def test_up_twice_changes_nothing_and_down_removes_everything(project: Project) -> None:
    project.write(prefixed(project, FOUR))
    project.cli("up", "-d")
    before = {p.name: os.readlink(p) for p in NETNS_DIR.iterdir() if p.name.startswith(project.name)}
    again = project.cli("up", "-d")
    assert "link create" not in again.stdout
    assert "link replace" not in again.stdout
    after = {p.name: os.readlink(p) for p in NETNS_DIR.iterdir() if p.name.startswith(project.name)}
    assert before == after
    assert len(after) == 4
    project.cli("down", "-t", "0")
    assert not [p for p in NETNS_DIR.iterdir() if p.name.startswith(project.name)]
    assert run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}").stdout == ""
    # down on a project that is already down succeeds
    project.cli("down", "-t", "0")


def test_restart_makes_entry_stale_and_up_repairs_it(project: Project) -> None:
    project.write(prefixed(project, FOUR))
    project.cli("up", "-d")
    name = f"{project.name}-router1"
    old_target = os.readlink(NETNS_DIR / name)
    run("docker", "restart", "-t", "0", project.container("router1"))
    new_ns = project.container_ns("router1")
    assert project.status()[name] == "stale"
    # The stale entry still names the old sandbox, which docker removed: it enters nothing.
    # (The kernel may give the new namespace the old one's inode number, so compare paths.)
    assert os.readlink(NETNS_DIR / name) == old_target
    assert entry_ns(name) is None
    project.cli("up", "-d")
    assert project.status()[name] == "linked"
    assert os.readlink(NETNS_DIR / name) != old_target
    assert entry_ns(name) == new_ns
    run("docker", "restart", "-t", "0", project.container("router1"))
    assert project.status()[name] == "stale"
    repaired = project.cli("netns", "link", "router1")
    assert "link replace" in repaired.stdout
    assert entry_ns(name) == project.container_ns("router1")


def test_stopped_container_entry_never_enters_another_namespace(project: Project) -> None:
    project.write(prefixed(project, FOUR))
    project.cli("up", "-d")
    name = f"{project.name}-node1"
    run("docker", "stop", "-t", "0", project.container("node1"))
    assert project.status()[name] == "stale"
    running = {project.container_ns(s) for s in ("node2", "router1", "router2")}
    reached = entry_ns(name)
    assert reached is None or (reached not in running and reached != ns_inode("/proc/self/ns/net"))
    # composens' own stop removes the entry first, so it cannot be entered at all
    project.cli("start", "node1")
    assert project.status()[name] == "linked"
    project.cli("stop", "-t", "0", "node1")
    assert not (NETNS_DIR / name).exists()
    assert entry_ns(name) is None
    assert project.status()[name] == "none"


def test_foreign_entry_is_never_touched(project: Project) -> None:
    project.write(prefixed(project, FOUR))
    foreign = f"{project.name}-node2"
    project.made_entries.append(foreign)
    run("ip", "netns", "add", foreign)
    foreign_ns = ns_inode(NETNS_DIR / foreign)
    refused = project.cli("up", "-d", check=False)
    assert refused.returncode == 6
    assert "was not made by composens" in refused.stderr
    assert "Traceback" not in refused.stderr
    # refused before compose ran: no container was created
    assert run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}").stdout == ""
    # the other services can still come up; the foreign entry is reported, not replaced
    project.cli("up", "-d", "node1", "router1")
    rows = {r["netns"]: r["status"] for r in project.ps()}
    assert rows[f"{project.name}-node1"] == "linked"
    project.cli("down", "-t", "0")
    assert ns_inode(NETNS_DIR / foreign) == foreign_ns


def test_service_names_compose_allows_are_recorded_and_read_back(project: Project) -> None:
    """`_r1` is a valid compose service name: a lab of it must not lock every later command out (exit 8)."""
    project.write(f"""
x-composens:
  netns_prefix: {project.name}
  links: [{{endpoints: ["_r1:eth1", ".r2:eth1"]}}]
services:
  _r1: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.9.1/30]}}}}}}
  .r2: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.9.2/30]}}}}}}
""")
    project.cli("up", "-d")
    assert project.status() == {f"{project.name}_r1": "linked", f"{project.name}.r2": "linked"}
    assert run("ip", "netns", "exec", f"{project.name}_r1", "busybox", "ping", "-c", "1", "-W", "2", "198.18.9.2")
    project.cli("netns", "prune", "--recover")
    project.cli("down", "-t", "0")
    assert not (NETNS_DIR / f"{project.name}_r1").exists()


def test_selected_services_only(project: Project) -> None:
    project.write(prefixed(project, FOUR))
    project.cli("up", "-d", "node1", "router2")
    entries = sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(project.name))
    assert entries == [f"{project.name}-node1", f"{project.name}-router2"]
    status = project.status()
    assert status[f"{project.name}-node1"] == "linked"
    project.cli("netns", "unlink", "node1")
    assert not (NETNS_DIR / f"{project.name}-node1").exists()
    assert (NETNS_DIR / f"{project.name}-router2").is_symlink()


def test_scaled_service_gets_numbered_entries(project: Project) -> None:
    project.write(prefixed(project, "services:\n  node: {image: IMAGE, network_mode: none}\n"))
    project.cli("up", "-d", "--scale", "node=3")
    for n in (1, 2, 3):
        assert entry_ns(f"{project.name}-node-{n}") == project.container_ns("node", n)
    project.cli("up", "-d", "--scale", "node=1")
    names = sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(project.name))
    assert names == [f"{project.name}-node"]
    assert entry_ns(f"{project.name}-node") == project.container_ns("node", 1)


def test_two_projects_side_by_side_and_a_name_collision(
    project: Project, tmp_path_factory: pytest.TempPathFactory
) -> None:
    project.write(prefixed(project, FOUR))
    project.cli("up", "-d")
    other = Project(project.name + "b", tmp_path_factory.mktemp("other"))
    try:
        other.write(f"x-composens: {{netns_prefix: {other.name}-}}\n{FOUR}")
        other.cli("up", "-d")
        assert entry_ns(f"{other.name}-node1") == other.container_ns("node1")
        assert entry_ns(f"{project.name}-node1") == project.container_ns("node1")
        # a third project whose names collide with the first one's is refused before it starts
        clash = Project(project.name + "c", tmp_path_factory.mktemp("clash"))
        clash.write(f"x-composens: {{netns_prefix: {project.name}-}}\n{FOUR}")
        refused = clash.cli("up", "-d", check=False)
        assert refused.returncode == 6
        assert f"in use by project {project.name}" in refused.stderr
        assert entry_ns(f"{project.name}-node1") == project.container_ns("node1")
    finally:
        other.cli("down", "-t", "0", check=False)


def test_host_network_and_shared_namespace(project: Project) -> None:
    project.write(
        prefixed(
            project,
            """
services:
  owner: {image: IMAGE, network_mode: none}
  sidecar: {image: IMAGE, network_mode: "service:owner"}
  hostnet: {image: IMAGE, network_mode: host}
""",
        )
    )
    project.cli("up", "-d")
    status = project.status()
    assert status[f"{project.name}-hostnet"] == "none"
    assert not (NETNS_DIR / f"{project.name}-hostnet").exists()
    assert status[f"{project.name}-sidecar"] == "linked"
    assert entry_ns(f"{project.name}-sidecar") == project.container_ns("sidecar") == project.container_ns("owner")


def test_passthrough_keeps_compose_exit_codes(project: Project) -> None:
    project.write(prefixed(project, FOUR))
    assert sorted(project.cli("config", "--services").stdout.split()) == ["node1", "node2", "router1", "router2"]
    project.cli("up", "-d", "node1")
    assert project.cli("exec", "-T", "node1", "sh", "-c", "exit 3", check=False).returncode == 3
    assert project.cli("ps", "--services").stdout.split() == ["node1"]
    assert project.cli("nosuchcommand", check=False).returncode != 0


def test_errors_are_one_line_with_documented_codes(project: Project) -> None:
    project.write("services:\n  a: {image: IMAGE, network_mode: none, x-composens: {netns: 'bad/name'}}\n")
    bad = project.cli("up", "-d", check=False)
    assert bad.returncode == 3
    assert bad.stderr.strip().count("\n") == 0
    assert "not a valid netns name" in bad.stderr
    project.write("services: [\n")
    broken = project.cli("up", "-d", check=False)
    assert broken.returncode == 3
    assert "Traceback" not in broken.stderr
    project.write(FOUR)
    unknown = project.cli("up", "-d", "nosuch", check=False)
    assert unknown.returncode == 3
    assert "no such service: nosuch" in unknown.stderr
    nobody = run(
        sys.executable,
        "-m",
        "composens",
        "--project-directory",
        str(project.folder),
        "-p",
        project.name,
        "ps",
        "--netns",
        check=False,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"},
    )
    assert nobody.returncode == 5
    assert "daemon is not reachable" in nobody.stderr


def test_attached_up_links_while_running_and_unlinks_on_stop(project: Project) -> None:
    project.write(prefixed(project, "services:\n  node1: {image: IMAGE, network_mode: none}\n"))
    name = f"{project.name}-node1"
    proc = project.spawn("up", merge_stderr=True)
    try:
        deadline = time.monotonic() + 60
        while not (NETNS_DIR / name).is_symlink() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert entry_ns(name) == project.container_ns("node1")
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C does: the whole foreground group
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (NETNS_DIR / name).exists(), out
    assert "link remove" in out
