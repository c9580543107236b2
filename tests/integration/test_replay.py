"""Replaying `ps --netns` and `netns link` (composens.replay) on the real engine and kernel: a replay is the answer
working it out gives, and anything a person or the engine changes is seen at once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Project, run

pytestmark = pytest.mark.integration

PAIR = """
x-composens:
  netns_prefix: {name}-
  links:
    - endpoints: ["a:e0", "b:e0"]
      netem: {{"a:e0": {{rate: 10mbit}}}}
services:
  a: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{e0: [198.18.9.1/30]}}}}}}
  b:
    image: IMAGE
    network_mode: none
    x-composens:
      addresses: {{e0: [198.18.9.2/30]}}
      routes: ["198.18.10.0/24 via 198.18.9.1"]
"""

LAN = """
x-composens:
  netns_prefix: {name}-
  hub: {name}-hub
  lans:
    lan1: {{endpoints: ["r1:eth1", "r2:eth1"]}}
services:
  r1: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.11.1/24]}}}}}}
  r2: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.11.2/24]}}}}}}
"""


class Notes:
    """What each run of composens said of replaying (COMPOSENS_REPLAY_NOTE): whether it was replayed or worked
    out, and why; and, when worked out, whether it was recorded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = 0

    def last(self) -> str:
        """What the last run said first (replayed, or why it was worked out)."""
        lines = self.path.read_text().splitlines()
        new, self.seen = lines[self.seen :], len(lines)
        return new[0]

    def recorded(self) -> bool:
        return self.path.read_text().splitlines()[-1].startswith("recorded")


@pytest.fixture
def notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Notes:
    monkeypatch.delenv("COMPOSENS_NO_REPLAY", raising=False)
    monkeypatch.setenv("COMPOSENS_REPLAY_NOTE", str(tmp_path / "notes"))
    return Notes(tmp_path / "notes")


def worked_out(project: Project, *args: str) -> str:
    """The answer composens gives by working it out, replaying nothing."""
    command = [sys.executable, "-m", "composens", "-p", project.name, *args]
    return run(*command, cwd=project.folder, env={**os.environ, "COMPOSENS_NO_REPLAY": "1"}).stdout


def test_ps_is_replayed_while_nothing_changed_and_a_hand_made_change_is_seen_at_once(
    project: Project, notes: Notes
) -> None:
    project.write(PAIR.format(name=project.name))
    project.cli("up", "-d")
    for fmt in (("--format", "json"), ()):
        first = project.cli("ps", "--netns", *fmt).stdout
        assert notes.last() == "worked out: not recorded before"
        assert notes.recorded()
        assert project.cli("ps", "--netns", *fmt).stdout == first
        assert notes.last() == "replayed"
        assert worked_out(project, "ps", "--netns", *fmt) == first
    a, b = f"{project.name}-a", f"{project.name}-b"
    changes = [
        ("ip", "-n", a, "addr", "del", "198.18.9.1/30", "dev", "e0"),
        ("ip", "-n", b, "link", "set", "dev", "e0", "address", "02:99:99:99:99:99"),
        ("tc", "-n", a, "qdisc", "change", "dev", "e0", "root", "tbf", "rate", "20mbit", "burst", "16384", "latency",
         "50ms"),
        ("ip", "-n", b, "route", "add", "198.18.12.0/24", "via", "198.18.9.1"),
        ("ip", "-n", b, "link", "set", "dev", "e0", "down"),
    ]  # fmt: skip
    answer = project.cli("ps", "--netns", "--format", "json").stdout
    assert notes.last() == "replayed"
    for change in changes:
        run(*change)
        before, answer = answer, project.cli("ps", "--netns", "--format", "json").stdout
        said = notes.last()
        assert said.startswith("worked out: namespace"), (change, said)
        assert answer != before, change
        assert answer == worked_out(project, "ps", "--netns", "--format", "json"), change
    # The engine's change: a restarted container has another namespace and pid.
    run("docker", "restart", "-t", "0", project.container("a"))
    answer = project.cli("ps", "--netns", "--format", "json").stdout
    assert notes.last().startswith("worked out: ")
    assert answer == worked_out(project, "ps", "--netns", "--format", "json")
    assert '"status": "stale"' in answer or '"status": "unlinked"' in answer


def test_an_edited_file_and_a_run_time_change_are_worked_out(project: Project, notes: Notes) -> None:
    project.write(PAIR.format(name=project.name))
    project.cli("up", "-d")
    project.cli("ps", "--netns", "--format", "json")
    assert notes.recorded()
    notes.last()
    project.cli("ps", "--netns", "--format", "json")
    assert notes.last() == "replayed"
    project.write(PAIR.format(name=project.name).replace("198.18.9.1/30]", "198.18.9.1/30, 198.18.13.1/24]"))
    answer = project.cli("ps", "--netns", "--format", "json").stdout
    assert notes.last().startswith("worked out: config")
    assert "198.18.13.1/24" in answer
    project.cli("link", "down", "a:e0")  # the record changes, not the file
    answer = project.cli("ps", "--netns", "--format", "json").stdout
    assert notes.last().startswith("worked out: ")  # the record and the namespace the link is in
    assert answer == worked_out(project, "ps", "--netns", "--format", "json")


def test_netns_link_is_replayed_only_while_there_is_nothing_to_do(project: Project, notes: Notes) -> None:
    project.write(PAIR.format(name=project.name))
    project.cli("up", "-d")
    first = project.cli("netns", "link")
    assert notes.last() == "worked out: not recorded before"
    assert notes.recorded()
    assert project.cli("netns", "link").stdout == first.stdout
    assert notes.last() == "replayed"
    run("ip", "-n", f"{project.name}-a", "link", "del", "e0")  # both ends go: a veth pair dies whole
    mended = project.cli("netns", "link")
    assert notes.last().startswith("worked out: namespace")
    assert not notes.recorded()  # it changed the lab
    assert "wired: ip -n" in mended.stdout
    run("ip", "-n", f"{project.name}-b", "link", "show", "e0")
    project.cli("netns", "link")
    assert notes.last().startswith("worked out")
    assert notes.recorded()  # nothing left to do
    project.cli("netns", "link")
    assert notes.last() == "replayed"
    # An entry removed by hand, and the record's folder loosened: each is put back, not replayed past.
    entry = Path(f"/var/run/netns/{project.name}-a")
    entry.unlink()
    project.cli("netns", "link")
    assert notes.last().startswith("worked out: entry")
    assert entry.is_symlink()
    state_dir = Path("/run/composens")
    state_dir.chmod(0o755)
    project.cli("netns", "link")
    assert notes.last().startswith("worked out: modes")
    assert state_dir.stat().st_mode & 0o777 == 0o700


def test_a_hub_sysctl_changed_by_hand_is_mended_not_replayed(project: Project, notes: Notes) -> None:
    project.write(LAN.format(name=project.name))
    project.cli("up", "-d")
    hub = f"{project.name}-hub"
    project.cli("netns", "link")
    assert notes.recorded()
    notes.last()
    project.cli("netns", "link")
    assert notes.last() == "replayed"
    rows = project.cli("ps", "--netns", "--format", "json").stdout
    notes.last()
    assert project.cli("ps", "--netns", "--format", "json").stdout == rows
    assert notes.last() == "replayed"  # the bridge's timers change its dumps: the hub is compared as parsed
    # Only for what the hub makes next: nothing else in the hub changes, the sysctl's reading does.
    run("ip", "netns", "exec", hub, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=0")
    project.cli("netns", "link")
    assert notes.last().startswith("worked out: sysctls")
    assert not notes.recorded()
    value = run("ip", "netns", "exec", hub, "cat", "/proc/sys/net/ipv6/conf/default/disable_ipv6").stdout.strip()
    assert value == "1"
    assert os.path.exists(f"/var/run/netns/{hub}")
