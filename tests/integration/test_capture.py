"""`composens capture` and the flight recorder on the real engine, read back with tshark (Debian's package).

Each capture is started in a session of its own and awaited until it says it is capturing (its sockets are open
by then), so the packets a test sends are the ones it counts; it is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from composens.interop.pcapng import read_pcapng
from tests.integration.conftest import Project, run

pytestmark = pytest.mark.integration

PINGS = 5


def chain(project: Project, extra: str = "") -> str:
    """r1 - r2 - r3 over two links, r2 routing; `extra` goes into x-composens."""
    return f"""
x-composens:
  netns_prefix: {project.name}-
  hub: {project.name}-hub
  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
    - endpoints: ["r2:eth2", "r3:eth1"]
{extra}
services:
  r1: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.1.1/24]}}, routes: [198.18.2.0/24 via 198.18.1.2]}}}}
  r2:
    image: IMAGE
    network_mode: none
    sysctls: {{net.ipv4.ip_forward: "1"}}
    x-composens: {{addresses: {{eth1: [198.18.1.2/24], eth2: [198.18.2.2/24]}}}}
  r3: {{image: IMAGE, network_mode: none, x-composens: {{addresses: {{eth1: [198.18.2.3/24]}}, routes: [198.18.1.0/24 via 198.18.2.2]}}}}
"""


def ping(project: Project, service: str, address: str, count: int = PINGS) -> subprocess.CompletedProcess[str]:
    return run(
        "ip", "netns", "exec", f"{project.name}-{service}", "busybox", "ping", "-c", str(count), "-i", "0.1", "-W", "1",
        address, check=False,
    )  # fmt: skip


def start_capture(project: Project, *args: str, stdout: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Start `composens capture`, and return once it says it is capturing (every socket is open then)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "composens", "-p", project.name, "capture", *args],
        cwd=project.folder, stdout=stdout, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert process.stderr is not None
    first = process.stderr.readline().decode()
    assert first.startswith("composens: capturing on"), first + process.stderr.read().decode()
    return process


def wait_for(process: subprocess.Popen[bytes], text: str, times: int = 1) -> str:
    """Read the capture's stderr until `text` has come `times` times; return what was read."""
    assert process.stderr is not None
    said = ""
    while said.count(text) < times:
        line = process.stderr.readline().decode()
        assert line, f"the capture ended before saying {text!r} {times} times: {said}"
        said += line
    return said


def stop_capture(process: subprocess.Popen[bytes], how: signal.Signals = signal.SIGINT) -> str:
    """Stop a capture by its pid; return what it said on stderr after it started."""
    process.send_signal(how)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()
    return err.decode()


def tshark_rows(path: Path, *fields: str, display_filter: str = "") -> list[list[str]]:
    argv = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for field in fields:
        argv += ["-e", field]
    if display_filter:
        argv += ["-Y", display_filter]
    out = run(*argv).stdout
    return [line.split("|") for line in out.splitlines()]


def interface_names(path: Path) -> list[str]:
    """The interface descriptions of a capture file, in id order, as capinfos reads them."""
    report = run("capinfos", "-M", str(path)).stdout
    return [line.split("=", 1)[1].strip() for line in report.splitlines() if line.strip().startswith("Name =")]


def test_three_interfaces_across_two_links_hold_exactly_the_pings_each_under_its_name(project: Project) -> None:
    project.write(chain(project))
    project.cli("up", "-d")
    out = project.folder / "three.pcapng"
    capture = start_capture(project, "r1:eth1", "r2:eth2", "r3:eth1", "-w", str(out), "--", "icmp")
    assert ping(project, "r1", "198.18.2.3").returncode == 0
    said = stop_capture(capture)

    assert interface_names(out) == ["r1:eth1", "r2:eth2", "r3:eth1"]
    descriptions = {row[0]: row[1] for row in tshark_rows(out, "frame.interface_name", "frame.interface_description")}
    assert descriptions == {
        "r1:eth1": "r1:eth1 -> r2:eth1",
        "r2:eth2": "r2:eth2 -> r3:eth1",
        "r3:eth1": "r3:eth1 -> r2:eth2",
    }
    rows = tshark_rows(out, "frame.interface_name", "icmp.type", "icmp.seq", "frame.time_epoch", "ip.ttl")
    # Every echo request and reply, once on each of the three interfaces: nothing more, nothing less.
    seen = sorted((name, icmp_type, int(seq)) for name, icmp_type, seq, _, _ in rows)
    expected = sorted(
        (name, t, seq) for name in ("r1:eth1", "r2:eth2", "r3:eth1") for t in ("8", "0") for seq in range(PINGS)
    )
    assert seen == expected
    # r2 forwards: the request leaves r1 with TTL 64 and crosses r2:eth2 and r3:eth1 with 63.
    assert {(name, ttl) for name, t, _, _, ttl in rows if t == "8"} == {
        ("r1:eth1", "64"),
        ("r2:eth2", "63"),
        ("r3:eth1", "63"),
    }
    stamps = [int(stamp.replace(".", "")) for _, _, _, stamp, _ in rows]
    assert all(len(stamp.split(".")[1]) == 9 for _, _, _, stamp, _ in rows)  # nanoseconds
    assert stamps == sorted(stamps)  # merged in time order across the interfaces
    # Each request crosses r1:eth1, then r2:eth2, then r3:eth1: the merge puts them in the order they happened.
    requests = [name for name, t, _, _, _ in rows if t == "8"]
    assert requests == ["r1:eth1", "r2:eth2", "r3:eth1"] * PINGS
    # The counters at the end: what each socket's filter passed, none dropped; and the summary on stderr.
    contents = read_pcapng(out.read_bytes())
    assert [(s.interface_id, s.received, s.dropped) for s in contents.statistics] == [
        (i, 2 * PINGS, 0) for i in range(3)
    ]
    assert f"r2:eth2: {2 * PINGS} packets captured, {2 * PINGS} received by the kernel, 0 dropped" in said
    assert all(p.direction != 0 for p in contents.packets)  # each packet says which way it went


def test_all_on_a_lab_with_a_lan_lists_every_interface_once_and_sees_the_whole_segment(project: Project) -> None:
    lan = f"""  lans:
    lan1: {{endpoints: ["r1:lan", "r3:lan", "r4:lan"]}}
  host: {{addresses: {{{project.name[-8:]}h: [198.18.3.1/24]}}}}"""
    text = chain(project, lan).replace(
        '    - endpoints: ["r2:eth2", "r3:eth1"]\n',
        f'    - endpoints: ["r2:eth2", "r3:eth1"]\n    - endpoints: ["r4:up", "host:{project.name[-8:]}h"]\n',
    )
    text += "  r4: {image: IMAGE, network_mode: none, x-composens: {addresses: {lan: [198.18.9.4/24], up: [198.18.3.4/24]}}}\n"
    text = text.replace("eth1: [198.18.1.1/24]}", "eth1: [198.18.1.1/24], lan: [198.18.9.1/24]}")
    text = text.replace("eth1: [198.18.2.3/24]}", "eth1: [198.18.2.3/24], lan: [198.18.9.3/24]}")
    project.write(text)
    project.cli("up", "-d")
    out = project.folder / "all.pcapng"
    capture = start_capture(project, "--all", "-w", str(out), "--", "icmp")
    assert ping(project, "r1", "198.18.9.4", count=2).returncode == 0
    assert ping(project, "r4", "198.18.3.1", count=2).returncode == 0
    stop_capture(capture)

    host_end = f"host:{project.name[-8:]}h"
    names = interface_names(out)
    assert sorted(names) == sorted(
        ["r1:eth1", "r2:eth1", "r2:eth2", "r3:eth1", "r4:up", host_end, "r1:lan", "r3:lan", "r4:lan", "lan1"]
    )
    assert len(names) == len(set(names))
    rows = tshark_rows(out, "frame.interface_name", "icmp.type", "ip.src", "ip.dst")
    # r1 -> r4 over the LAN: on r1's end, on the bridge (the whole segment: what it forwards), on r4's end; not r3's.
    lan_pings = {(name, t) for name, t, src, dst in rows if {src, dst} == {"198.18.9.1", "198.18.9.4"}}
    assert lan_pings == {(n, t) for n in ("r1:lan", "lan1", "r4:lan") for t in ("8", "0")}
    host_pings = {name for name, _, src, dst in rows if {src, dst} == {"198.18.3.4", "198.18.3.1"}}
    assert host_pings == {"r4:up", host_end}


def test_a_pipe_gets_pcapng_and_count_stops_it(project: Project) -> None:
    project.write(chain(project))
    project.cli("up", "-d")
    capture = start_capture(project, "r1:eth1", "-c", "4", "--", "icmp", stdout=subprocess.PIPE)
    ping(project, "r1", "198.18.2.3")
    data, err = capture.communicate(timeout=30)
    assert capture.returncode == 0, err.decode()
    contents = read_pcapng(data)
    assert [i.name for i in contents.interfaces] == ["r1:eth1"]
    assert len(contents.packets) == 4
    assert [s.interface_id for s in contents.statistics] == [0]


def test_a_container_restarted_mid_capture_lets_its_namespace_go_and_is_captured_again(project: Project) -> None:
    project.write(chain(project))
    project.cli("up", "-d")
    out = project.folder / "restart.pcapng"
    capture = start_capture(project, "r1:eth1", "r2:eth1", "r3:eth1", "-w", str(out), "--", "icmp")
    assert ping(project, "r1", "198.18.1.2", count=2).returncode == 0
    run("docker", "restart", "-t", "0", project.container("r2"))
    # The capture holds no socket in r2's old namespace: it went with the container, and r1's end of the pair
    # with it (a capture that kept the namespace would keep r1:eth1 up, and the link could not be made again).
    said = wait_for(capture, "r1:eth1: its interface was deleted")
    links = json.loads(run("ip", "-n", f"{project.name}-r1", "-j", "link", "show").stdout)
    assert "eth1" not in {link["ifname"] for link in links}
    project.cli("netns", "link")  # rewires r2 and the pair
    said += wait_for(capture, "captured again", 3)
    assert ping(project, "r1", "198.18.1.2", count=2).returncode == 0
    said += stop_capture(capture)

    assert "r2:eth1: its container stopped" in said
    # r2's other link went too: r3:eth1's peer was r2:eth2.
    assert "r1:eth1: its interface was deleted" in said
    assert "r3:eth1: its interface was deleted" in said
    for name in ("r1:eth1", "r2:eth1", "r3:eth1"):
        assert said.count(f"{name}: captured again") == 1  # under the same interface of the file
    assert interface_names(out) == ["r1:eth1", "r2:eth1", "r3:eth1"]
    rows = tshark_rows(out, "frame.interface_name", "icmp.type")
    # Two pings before the restart and two after, on both ends of the link each time, none lost at the restart
    # (the block the ring was filling is taken before its socket is closed); nothing on r3.
    assert sorted((name, t) for name, t in rows) == sorted(
        (name, t) for name in ("r1:eth1", "r2:eth1") for t in ("8", "0") for _ in range(4)
    )


def test_nothing_captured_is_lost_when_a_container_stops_under_traffic(project: Project) -> None:
    project.write(chain(project))
    project.cli("up", "-d")
    capture = start_capture(project, "r1:eth1", "r2:eth1", "-w", str(project.folder / "busy.pcapng"), "--", "icmp")
    busy = subprocess.Popen(
        ["ip", "netns", "exec", f"{project.name}-r1", "busybox", "ping", "-i", "0.01", "-w", "3", "198.18.1.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1)  # traffic flowing: the rings are filling blocks when r2 stops
    run("docker", "stop", "-t", "0", project.container("r2"))
    said = wait_for(capture, "r1:eth1: its interface was deleted")
    busy.wait()
    said += stop_capture(capture)
    # Every packet the kernel put in a socket's ring was written, also those of the block it was still filling
    # when r2 stopped and r1:eth1 went with it.
    counts = {m[0]: (int(m[1]), int(m[2])) for m in COUNTS.findall(said)}
    assert set(counts) == {"r1:eth1", "r2:eth1"}
    assert all(captured == received > 0 for captured, received in counts.values()), counts


COUNTS = re.compile(r"composens: (\S+): (\d+) packets captured, (\d+) received by the kernel, 0 dropped")


def test_sigterm_and_a_vanished_container_end_it_with_a_valid_file(project: Project) -> None:
    project.write(chain(project))
    project.cli("up", "-d")
    out = project.folder / "term.pcapng"
    capture = start_capture(project, "r1:eth1", "-w", str(out))
    stop_capture(capture, signal.SIGTERM)
    assert interface_names(out) == ["r1:eth1"]
    assert len(read_pcapng(out.read_bytes()).statistics) == 1
    # Its only target's container removed: the capture ends by itself, its file whole.
    out2 = project.folder / "gone.pcapng"
    capture = start_capture(project, "r3:eth1", "-w", str(out2))
    run("docker", "rm", "-f", project.container("r3"))
    _, err = capture.communicate(timeout=30)
    assert capture.returncode == 0, err.decode()
    assert "r3:eth1: it is gone" in err.decode()
    contents = read_pcapng(out2.read_bytes())
    assert [i.name for i in contents.interfaces] == ["r3:eth1"]
    assert len(contents.statistics) == 1


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["r1:eth9"], "capture target 'r1:eth9': r1 has no interface 'eth9' of a link or LAN (it has: eth1)"),
        (["lan9"], "capture target 'lan9': no such LAN (expected SERVICE:IFNAME or a LAN's name)"),
        (["r3:eth1"], "capture target r3:eth1: service r3 is not running"),
        (["r1:eth1", "--", "port", "nonsense"], "capture filter 'port nonsense': "),
        (["r2:eth2"], "capture target r2:eth2: eth2 does not exist there now; `composens up -d` first"),
    ],
)
def test_bad_input_is_one_line_exit_3_and_leaves_nothing_running(project: Project, args: list[str], error: str) -> None:
    project.write(chain(project))
    project.cli("up", "-d")
    run("docker", "stop", "-t", "0", project.container("r3"))  # r2:eth2 went with it: declared, but missing now
    before = _capture_processes()
    done = project.cli("capture", "-w", str(project.folder / "x.pcapng"), *args, check=False)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert error in done.stderr
    assert _capture_processes() == before  # no tcpdump (the filter's compiler) or capture left behind
    assert not (project.folder / "x.pcapng").exists()  # checked before anything is written


def _capture_processes() -> set[int]:
    """Pids of tcpdump and composens capture processes on the machine now."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and (argv[0].endswith(b"tcpdump") or (b"capture" in argv and b"composens" in argv)):
                found.add(int(entry.name))
    return found


def test_the_recorder_writes_a_failing_checks_window_and_nothing_when_all_pass(project: Project) -> None:
    recorder = """  capture: {targets: [r1:eth1, r2:eth1], keep: 10s}
  checks:
    - name: r1 reaches r3
      ping: {from: r1, to: 198.18.2.3}
    - name: r1 reaches nobody
      ping: {from: r1, to: 198.18.2.99, count: 3}"""
    project.write(chain(project, recorder))
    project.cli("up", "-d")
    captures = project.folder / "captures"
    junit = project.folder / "junit.xml"

    done = project.cli("test", "r1 reaches r3", "--captures", str(captures), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not captures.exists()  # nothing written when everything passes

    done = project.cli(
        "test", "--format", "json", "--captures", str(captures), "--junit", str(junit), check=False, timeout=180
    )
    assert done.returncode == 1, done.stderr
    results = {r["name"]: r for r in json.loads(done.stdout)}
    assert results["r1 reaches r3"]["capture"] is None
    path = Path(str(results["r1 reaches nobody"]["capture"]))
    assert path == captures / "r1_reaches_nobody.pcapng"
    assert sorted(os.listdir(captures)) == ["r1_reaches_nobody.pcapng"]
    assert f"[[ATTACHMENT|{path}]]" in junit.read_text()
    # The window holds the failing check's requests, unanswered, on both ends of the link the recorder watches
    # (r2 finds no 198.18.2.99 to pass them to); and the passing check's pings to r3, which ran at the same time.
    rows = tshark_rows(path, "frame.interface_name", "icmp.type", "ip.dst", "icmp.seq")
    unanswered = sorted((name, int(seq)) for name, t, dst, seq in rows if t == "8" and dst == "198.18.2.99")
    assert unanswered == sorted((name, seq) for name in ("r1:eth1", "r2:eth1") for seq in range(3))
    assert tshark_rows(path, "frame.number", display_filter="ip.src == 198.18.2.99") == []
    assert any(t == "0" and dst == "198.18.1.1" for _, t, dst, _ in rows)  # r3's replies: the window is the lab's
    assert interface_names(path) == ["r1:eth1", "r2:eth1"]


def test_a_terminal_gets_one_line_per_packet_with_the_interface_in_front(project: Project) -> None:
    project.write(chain(project))
    project.cli("up", "-d")
    command = f"{sys.executable} -m composens -p {project.name} capture r1:eth1 r3:eth1 --duration 4 -- icmp"
    # script(1) gives the capture a terminal of its own; --duration ends it.
    terminal = subprocess.Popen(
        ["script", "-qfec", command, "/dev/null"], cwd=project.folder, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert terminal.stdout is not None
    said = ""
    while "capturing on" not in said:
        said += terminal.stdout.readline()
    assert ping(project, "r1", "198.18.2.3", count=2).returncode == 0
    out, _ = terminal.communicate(timeout=60)
    assert terminal.returncode == 0, said + out
    lines = [line.strip() for line in out.splitlines() if "ICMP" in line]
    assert [line.split()[0] for line in lines] == ["r1:eth1", "r3:eth1", "r3:eth1", "r1:eth1"] * 2
    assert [("request" in line, "198.18.1.1 → 198.18.2.3" in line) for line in lines[:2]] == [(True, True)] * 2
    assert "r3:eth1: 4 packets captured, 4 received by the kernel, 0 dropped" in out


def test_wireshark_lists_the_labs_interfaces_and_captures_them_through_extcap(project: Project) -> None:
    project.write(chain(project))
    project.cli("up", "-d")
    config = project.folder / "config"  # Wireshark's personal folders, this test's own
    environ = {**os.environ, "XDG_CONFIG_HOME": str(config), "PYTHONPATH": os.environ["PYTHONPATH"]}
    done = run(
        sys.executable, "-m", "composens", "-p", project.name, "extcap", "--install", cwd=project.folder, env=environ
    )
    assert str(config / "wireshark" / "extcap" / f"composens-{project.name}") in done.stdout
    listed = run("tshark", "-D", env=environ).stdout
    prefix = f"composens.{project.name}."
    assert f"{prefix}all (composens {project.name}: every interface of the lab)" in listed
    assert f"{prefix}r2:eth2 (composens {project.name}: r2:eth2 -> r3:eth1)" in listed
    out = project.folder / "wireshark.pcapng"
    tshark = subprocess.Popen(
        ["tshark", "-i", f"{prefix}all", "-f", "icmp", "-a", "duration:6", "-w", str(out)],
        env=environ, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert tshark.stderr is not None
    said = ""
    while "Capturing on" not in said:
        said += tshark.stderr.readline()
    # Wireshark says it captures once it started the extcap; the extcap opens its sockets just after.
    ping(project, "r1", "198.18.2.3", count=40)
    _, err = tshark.communicate(timeout=60)
    assert tshark.returncode == 0, said + err
    rows = tshark_rows(out, "frame.interface_name", "icmp.type")
    seen = {name for name, _ in rows}
    assert seen == {"r1:eth1", "r2:eth1", "r2:eth2", "r3:eth1"}  # each packet under its interface's lab name
    assert {t for _, t in rows} == {"8", "0"}
