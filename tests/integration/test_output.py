"""What composens prints on a terminal and through a pipe, on the real engine (issue 26, items 10 and 12)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.integration.conftest import Project, run

pytestmark = pytest.mark.integration

LONG = "a-long-service-name"
# The lab: two services linked by e1; one slow exec command, so that linking takes long enough to draw
# (render.PROGRESS_AFTER, a second).
LAB = """\
services:
  a-long-service-name:
    image: IMAGE
    network_mode: none
    command: sleep 3600
    x-composens:
      addresses: {e1: [198.18.7.1/24]}
      exec: ["sleep 2"]
  b:
    image: IMAGE
    network_mode: none
    command: sleep 3600
    x-composens:
      addresses: {e1: [198.18.7.2/24]}
x-composens:
  netns_prefix: PREFIX-
  links:
    - endpoints: ["a-long-service-name:e1", "b:e1"]
"""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_terminal(project: Project, *args: str, columns: int = 120) -> tuple[str, str, int]:
    """Run composens with its stdout on a pseudo-terminal `columns` wide (stderr to a pipe): what it wrote
    there, raw, and its stderr and exit code."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    child = subprocess.Popen(
        [sys.executable, "-m", "composens", "-p", project.name, *args],
        cwd=project.folder,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)},
    )
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child and everything it started closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        elif child.poll() is not None:
            break
    os.close(master)
    _, err = child.communicate(timeout=60)
    return shown.decode(errors="replace").replace("\r\n", "\n"), err.decode(), child.returncode


def lines_of(raw: str) -> list[str]:
    """The lines a terminal is left showing: escape sequences dropped, lines a transient display erased gone."""
    kept: list[str] = []
    for line in raw.split("\n"):
        erased = line.count("\x1b[1A")  # each cursor-up of rich's erase takes a drawn line back
        del kept[len(kept) - min(erased, len(kept)) :]
        text = ANSI.sub("", line.split("\r")[-1]).rstrip()
        if text:
            kept.append(text)
    return kept


def test_up_on_a_terminal_draws_progress_then_a_summary_and_a_pipe_gets_every_line(project: Project) -> None:
    project.write(LAB.replace("PREFIX", project.name))
    raw, err, code = on_terminal(project, "up", "-d")
    assert code == 0, err
    # Drawn while the exec command ran (it takes two seconds): the steps, with counts.
    assert "running exec commands" in raw
    assert re.search(r"wiring\s.*\d+/\d+", ANSI.sub("", raw))
    summary = lines_of(raw)
    assert len(summary) == 1, summary
    assert re.fullmatch(
        r"linked 2 services \(2 new\), wired 1 link; ran 1 exec command: \d+ changes in \d+\.\d s "
        r"\(--verbose lists them\)",
        summary[0],
    ), summary
    assert "wired:" not in raw
    assert "/var/run/netns/" not in raw

    # Nothing to change: no time (the answer may be replayed), and nothing drawn.
    raw, err, code = on_terminal(project, "netns", "link")
    assert code == 0, err
    assert lines_of(raw) == ["linked 2 services, wired 1 link: nothing to change"]
    assert "\x1b[?25l" not in raw  # no display was started (rich hides the cursor while it draws)

    # The pair deleted by hand: through a pipe, every entry in the seed's format and every command, as before.
    run("ip", "-n", f"{project.name}-b", "link", "del", "e1")
    piped = project.cli("netns", "link").stdout.splitlines()
    assert piped[:2] == [
        f"{project.name}-{LONG}: /var/run/netns/{project.name}-{LONG} -> {target(project, LONG)} linked",
        f"{project.name}-b: /var/run/netns/{project.name}-b -> {target(project, 'b')} linked",
    ]
    assert piped[2].startswith("wired: ip link add name e1 address ")
    assert all(line.startswith("wired: ") for line in piped[2:])
    assert not any(line.startswith("linked ") for line in piped)

    # --verbose on a terminal: what the pipe got.
    run("ip", "-n", f"{project.name}-b", "link", "del", "e1")
    raw, err, code = on_terminal(project, "netns", "link", "--verbose")
    assert code == 0, err
    verbose = lines_of(raw)
    assert verbose[:2] == piped[:2]
    assert sorted(verbose[2:]) == sorted(piped[2:])  # namespaces are wired side by side: in either order
    # up's own --verbose: composens' (compose has none, and would refuse it).
    raw, err, code = on_terminal(project, "up", "-d", "--verbose")
    assert code == 0, err
    assert lines_of(raw) == piped[:2]  # every entry, already right: nothing else to say


def target(project: Project, service: str) -> str:
    return os.readlink(f"/var/run/netns/{project.name}-{service}")


def test_ps_netns_through_a_pipe_keeps_every_column(project: Project) -> None:
    """The issue's reproduction: six addresses added by hand on one end, then `composens ps --netns | cat`."""
    project.write(LAB.replace("PREFIX", project.name))
    project.cli("up", "-d")
    for i in range(1, 7):
        run("ip", "-n", f"{project.name}-b", "addr", "add", f"198.18.9.{i}/24", "dev", "e1")
    shown = run(
        "sh", "-c", f"{sys.executable} -m composens -p {project.name} ps --netns | cat", cwd=project.folder
    ).stdout.splitlines()
    assert shown[0].split() == ["SERVICE", "CONTAINER", "PID", "NETNS", "TARGET", "STATUS", "INTERFACES", "DRIFT"]
    rows = {line.split()[0]: line.split() for line in shown[1:3]}
    assert rows[LONG][1] == project.container(LONG)
    assert rows[LONG][3] == f"{project.name}-{LONG}"
    assert rows[LONG][5:7] == ["linked", "e1"]
    assert rows["b"][5:7] == ["linked", "e1"]
    drift = shown[2].split("e1 up", 1)[1].strip()
    assert drift == "; ".join(f"extra address 198.18.9.{i}/24 on e1 (not made by composens)" for i in range(1, 7))
    linked = run(
        "sh",
        "-c",
        f"{sys.executable} -m composens -p {project.name} ps --netns | grep -c ' linked '",
        cwd=project.folder,
    )
    assert linked.stdout.strip() == "2"
