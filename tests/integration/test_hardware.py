"""A lab that behaves like hardware across restarts and start-up: stable MACs, services that start wired."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import STATE, Project, run

STATE_DIR = STATE.parent

pytestmark = pytest.mark.integration


def mac(project: Project, service: str, ifname: str) -> str:
    out = run("ip", "-n", f"{project.name}-{service}", "-j", "link", "show", "dev", ifname).stdout
    return str(json.loads(out)[0]["address"])


def first_ping(project: Project, service: str, address: str) -> bool:
    """One echo request, three seconds to answer (room for a loaded machine): a neighbour entry pointing at an
    old MAC loses it for 23 to 35 s."""
    done = run(
        "ip", "netns", "exec", f"{project.name}-{service}",
        "busybox", "ping", "-c", "1", "-W", "3", address, check=False,
    )  # fmt: skip
    return done.returncode == 0


def reaches(project: Project, service: str, address: str) -> bool:
    """Reachable within a few tries (a fresh link's first neighbour discovery may lose one)."""
    return any(first_ping(project, service, address) for _ in range(3))


LAN = """
x-composens:
  netns_prefix: {name}-
  hub: {name}-hub
  lans:
    lan1: {{endpoints: ["r1:eth1", "r2:eth1", "r3:eth1"]}}
services:
  r1: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.3.1/24, "2001:db8:3::1/64"]}}}}}}
  r2: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.3.2/24, "2001:db8:3::2/64"]}}}}}}
  r3:
    image: IMAGE
    network_mode: none
    x-composens:
      addresses: {{eth1: [198.18.3.3/24, "2001:db8:3::3/64"]}}
      macs: {{eth1: "02:00:5e:10:00:03"}}
"""


def test_a_restarted_lan_member_keeps_its_mac_and_is_reached_on_the_first_packet(project: Project) -> None:
    project.write(LAN.format(name=project.name))
    project.cli("up", "-d")
    assert mac(project, "r3", "eth1") == "02:00:5e:10:00:03"  # declared
    before = {s: mac(project, s, "eth1") for s in ("r1", "r2", "r3")}
    # The neighbours learn r2's MAC (REACHABLE entries), as a running lab's would.
    for source in ("r1", "r3"):
        assert reaches(project, source, "198.18.3.2")
        assert reaches(project, source, "2001:db8:3::2")
    run("docker", "restart", "-t", "0", project.container("r2"))
    project.cli("netns", "link")
    assert {s: mac(project, s, "eth1") for s in ("r1", "r2", "r3")} == before
    for source in ("r1", "r3"):
        assert first_ping(project, source, "198.18.3.2"), source
        assert first_ping(project, source, "2001:db8:3::2"), source
    rows = {r["service"]: r for r in project.ps()}
    assert [i["mac"] for i in rows["r3"]["interfaces"]] == ["02:00:5e:10:00:03"]
    assert [i["mac"] for i in rows["r1"]["interfaces"]] == [None]  # derived: not shown


def test_a_pair_made_again_after_a_restart_has_both_old_macs_and_a_hand_set_one_is_put_back(project: Project) -> None:
    project.write(f"""
x-composens:
  netns_prefix: {project.name}-
  links: [{{endpoints: ["a:eth1", "b:eth1"]}}]
services:
  a: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.4.1/30]}}}}}}
  b: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.4.2/30]}}}}}}
""")
    project.cli("up", "-d")
    before = (mac(project, "a", "eth1"), mac(project, "b", "eth1"))
    run("docker", "restart", "-t", "0", project.container("a"))
    project.cli("netns", "link")
    assert (mac(project, "a", "eth1"), mac(project, "b", "eth1")) == before
    run("ip", "-n", f"{project.name}-b", "link", "set", "dev", "eth1", "address", "02:99:99:99:99:99")
    drift = {r["service"]: r["drift"] for r in project.ps()}["b"]
    assert drift == [
        {"problem": "differs", "item": f"interface eth1: mac 02:99:99:99:99:99, wanted {before[1]}", "ours": None}
    ]
    assert project.cli("plan", "--exit-code", check=False).returncode == 2
    project.cli("up", "-d")
    assert mac(project, "b", "eth1") == before[1]
    assert first_ping(project, "a", "198.18.4.2")


SALTED = """
x-composens:
  netns_prefix: {name}-
  {salt}
  links: [{{endpoints: ["a:eth1", "host:{name}h"]}}]
services:
  a: {{image: IMAGE, network_mode: none}}
"""


def test_derived_macs_are_salted_with_this_machines_id_unless_the_file_says(project: Project) -> None:
    """Issue 26, item 9: a project of the same name on another machine derived the very same MACs."""
    from composens.model import macs

    project.write(SALTED.format(name=project.name, salt="# mac_salt: the machine's id"))
    project.cli("up", "-d")
    machine = Path("/etc/machine-id").read_text().strip()
    host_end = json.loads(run("ip", "-j", "link", "show", f"{project.name}h").stdout)[0]["address"]
    # Not what the project alone gives (what every machine derived before), but salted with this machine's id.
    assert mac(project, "a", "eth1") != macs.derive(project.name, "a", "eth1")
    assert host_end != macs.derive(project.name, "host", f"{project.name}h")
    assert mac(project, "a", "eth1") == macs.derive(project.name, "a", "eth1", salt=f"machine {machine}")
    assert host_end == macs.derive(project.name, "host", f"{project.name}h", salt=f"machine {machine}")
    # Declared: an empty salt derives them from the project alone (the same on every machine), changed in place.
    project.write(SALTED.format(name=project.name, salt="mac_salt: ''"))
    assert project.cli("plan", "--exit-code", check=False).returncode == 2
    project.cli("up", "-d")
    assert mac(project, "a", "eth1") == macs.derive(project.name, "a", "eth1")
    assert project.cli("plan", "--exit-code").returncode == 0


WAITING = """
x-composens:
  netns_prefix: {name}-
  links: [{{endpoints: ["w:eth1", "peer:eth1"]}}]
services:
  w:
    image: IMAGE
    network_mode: none
    command: ["sh", "-c", "echo start; ip -o -4 addr show dev eth1; ip route; exec sleep 3600"]
    x-composens:
      start_after_wiring: true
      addresses: {{eth1: [198.18.5.1/24]}}
      routes: [198.18.6.0/24 via 198.18.5.2]
  peer: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.5.2/24]}}}}}}
"""


def logs_after(project: Project, service: str, starts: int, timeout: float = 20) -> list[str]:
    """The service's log once it shows `starts` starts of its command."""
    deadline = time.monotonic() + timeout
    while True:
        lines = run("docker", "logs", project.container(service)).stdout.splitlines()
        if lines.count("start") >= starts or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def test_a_service_that_starts_after_wiring_sees_its_address_and_route_from_its_first_line(project: Project) -> None:
    project.write(WAITING.format(name=project.name))
    project.cli("up", "-d")
    lines = logs_after(project, "w", 1)
    assert lines[0] == "start", lines
    assert "inet 198.18.5.1/24" in lines[1], lines
    assert "198.18.6.0/24 via 198.18.5.2 dev eth1" in "\n".join(lines), lines
    # Again after a restart: the new namespace is wired by netns link (or watch) before the command runs.
    run("docker", "restart", "-t", "0", project.container("w"))
    time.sleep(1)
    assert run("docker", "logs", project.container("w")).stdout.splitlines().count("start") == 1  # still waiting
    project.cli("netns", "link")
    lines = logs_after(project, "w", 2)
    second = lines[lines.index("start", 1) :]
    assert "inet 198.18.5.1/24" in second[1], lines
    assert "198.18.6.0/24 via 198.18.5.2 dev eth1" in "\n".join(second), lines
    project.cli("down", "-t", "0")
    assert not list((STATE_DIR / "wired").glob(f"{project.name}*"))


DEPENDENT = """
x-composens:
  netns_prefix: {name}-
  links: [{{endpoints: ["r1:eth1", "r3:eth1"]}}]
services:
  r1:
    image: IMAGE
    command: sleep 3600
    network_mode: none
    depends_on: {{r3: {{condition: service_started, restart: true}}}}
    x-composens: {{addresses: {{eth1: [198.18.5.1/24]}}}}
  r3:
    image: IMAGE
    network_mode: none
    command: ["sh", "-c", "echo start; ip -o -4 addr show dev eth1; exec sleep 3600"]
    x-composens:
      start_after_wiring: true
      addresses: {{eth1: [198.18.5.3/24]}}
"""


def test_up_of_one_service_links_and_wires_what_compose_starts_with_it(project: Project) -> None:
    """Issue 26, item 3: `up -d r1` started r1's dependency r3 too, but left it unlinked and its gate shut."""
    project.write(DEPENDENT.format(name=project.name))
    project.cli("up", "-d", "r1")
    lines = logs_after(project, "r3", 1)
    assert lines[:1] == ["start"], lines  # its gate opened: it was wired
    assert "inet 198.18.5.3/24" in lines[1], lines
    assert project.status() == {f"{project.name}-r1": "linked", f"{project.name}-r3": "linked"}
    assert reaches(project, "r1", "198.18.5.3")
    # Restarting r3 restarts r1 too (restart: true): both new namespaces are linked and wired again.
    started = ["docker", "inspect", "-f", "{{.State.StartedAt}}", project.container("r1")]
    before = run(*started).stdout
    project.cli("restart", "-t", "0", "r3")
    assert run(*started).stdout != before
    assert logs_after(project, "r3", 2).count("start") == 2
    assert project.status() == {f"{project.name}-r1": "linked", f"{project.name}-r3": "linked"}
    assert reaches(project, "r1", "198.18.5.3")
    assert project.cli("plan", "--exit-code", check=False).returncode == 0


ROLLED_BACK = """
x-composens:
  netns_prefix: {name}-
  links:
    - endpoints: ["r1:eth1", "r3:eth1"]
    - endpoints: ["r3:eth2", "r4:eth2"]
services:
  r1: {{image: IMAGE, command: sleep 3600, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.5.1/30]}}}}}}
  r3:
    image: IMAGE
    network_mode: none
    command: ["sh", "-c", "echo start; exec sleep 3600"]
    x-composens:
      start_after_wiring: true
      addresses: {{eth1: [198.18.5.2/30], eth2: [198.18.5.5/30]}}
      exec: ["touch /tmp/exec-ran"]
  r4:
    image: IMAGE
    command: sleep 3600
    networks: [lab]
    x-composens:
      addresses: {{eth2: [198.18.5.6/30]}}
      routes: [{route}]
networks:
  lab: {{ipam: {{config: [{{subnet: 198.19.79.0/24}}]}}}}
"""
REFUSED_ROUTE = "198.18.7.0/24 via 198.19.79.200 dev eth2"  # on r4's docker network: the kernel refuses it on eth2


def test_a_later_run_opens_no_gate_of_a_service_whose_wiring_was_rolled_back(project: Project) -> None:
    """Issue 26, item 4: after a failed `up -d`, `netns link r1` opened r3's gate and ran its exec commands."""
    project.write(ROLLED_BACK.format(name=project.name, route=REFUSED_ROUTE))
    failed = project.cli("up", "-d", check=False)
    assert failed.returncode == 7, failed.stderr
    assert f"route add {REFUSED_ROUTE}` failed" in failed.stderr
    assert failed.stderr.rstrip().endswith("the lab is as it was before"), failed.stderr
    assert project.status()[f"{project.name}-r3"] == "linked"  # its entry stays
    project.cli("netns", "link", "r1")  # wires r1 <-> r3; r3 <-> r4 is left as it is: not there
    r3 = f"{project.name}-r3"
    names = run("ip", "-n", r3, "-o", "link", "show").stdout
    assert " eth1@" in names
    assert " eth2@" not in names
    # r3 is not wired: its gate stays shut (no flag for its start) and its exec commands did not run.
    assert list((STATE_DIR / "wired" / project.name).iterdir()) == []
    assert run("docker", "exec", project.container("r3"), "test", "-e", "/tmp/exec-ran", check=False).returncode == 1
    assert not list((STATE_DIR / "exec" / project.name).glob("*.json"))
    # The file fixed (a gateway on eth2's subnet): r3 is wired, then its commands run and its gate opens.
    project.write(ROLLED_BACK.format(name=project.name, route="198.18.7.0/24 via 198.18.5.5"))
    done = project.cli("netns", "link")
    assert "exec r3: touch /tmp/exec-ran: ok" in done.stdout
    assert logs_after(project, "r3", 1)[:1] == ["start"]
    assert run("docker", "exec", project.container("r3"), "test", "-e", "/tmp/exec-ran", check=False).returncode == 0


def test_a_wait_that_is_never_released_starts_the_command_after_its_limit(project: Project) -> None:
    project.write(WAITING.format(name=project.name).replace("start_after_wiring: true", "start_after_wiring: 2"))
    # Only w: its peer is not running, so its link cannot be wired and the gate stays shut until its limit.
    project.cli("up", "-d", "w")
    assert "not running: peer" in project.cli("ps", "--netns").stdout
    lines = logs_after(project, "w", 1, timeout=15)
    assert "start" in lines
    waited = run("docker", "logs", project.container("w")).stderr.splitlines()  # the container's stderr
    assert "composens: not wired after 2 s (composens up -d, netns link or watch wires it); starting anyway" in waited


def test_an_image_without_a_shell_cannot_wait(project: Project, tmp_path: Path) -> None:
    image = f"{project.name}-noshell:1"
    root = tmp_path / "root"
    root.mkdir()
    (root / "true").write_bytes(Path("/bin/true").read_bytes())
    tar = subprocess.run(["tar", "-C", str(root), "-cf", "-", "."], capture_output=True, check=True).stdout
    subprocess.run(["docker", "import", "-c", 'CMD ["/true"]', "-", image], input=tar, capture_output=True, check=True)
    try:
        project.write(f"""
x-composens:
  netns_prefix: {project.name}-
services:
  s: {{image: {image}, network_mode: none, x-composens: {{start_after_wiring: true}}}}
""")
        refused = project.cli("up", "-d", check=False)
        assert refused.returncode == 3, refused.stderr
        assert f"services.s.x-composens.start_after_wiring: its image {image} has no /bin/sh" in refused.stderr
        assert run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}").stdout == ""
    finally:
        run("docker", "image", "rm", "-f", image, check=False)


def test_exec_commands_run_once_wired_again_after_a_restart_and_a_failure_shows(project: Project) -> None:
    project.write(f"""
x-composens:
  netns_prefix: {project.name}-
  links: [{{endpoints: ["a:eth1", "b:eth1"]}}]
services:
  a:
    image: IMAGE
    network_mode: none
    x-composens:
      addresses: {{eth1: [198.18.7.1/30]}}
      exec:
        - echo run >> /tmp/runs; ip -o -4 addr show dev eth1 >> /tmp/runs
        - [sh, -c, "ping -c 1 -W 2 198.18.7.2 > /dev/null && echo reached"]
  b:
    image: IMAGE
    network_mode: none
    x-composens: {{addresses: {{eth1: [198.18.7.2/30]}}, exec: ["exit 3"]}}
""")
    up = project.cli("up", "-d", check=False)
    assert up.returncode == 1, up.stderr
    assert "exec a: sh -c 'ping -c 1 -W 2 198.18.7.2 > /dev/null && echo reached': ok\n  reached" in up.stdout
    assert "composens: exec b: exit 3: exit 3" in up.stderr
    runs = run("docker", "exec", project.container("a"), "cat", "/tmp/runs").stdout
    assert runs.count("run") == 1
    assert "inet 198.18.7.1/30" in runs
    drift = {r["service"]: r["drift"] for r in project.ps()}
    assert drift["b"] == [{"problem": "failed", "item": "exec `exit 3`: exit 3", "ours": None}]
    again = project.cli("netns", "link", check=False)  # the same starts: nothing runs again
    assert again.returncode == 0
    assert "exec" not in again.stdout
    run("docker", "restart", "-t", "0", project.container("a"))
    project.cli("netns", "link")
    assert run("docker", "exec", project.container("a"), "cat", "/tmp/runs").stdout.count("run") == 2
