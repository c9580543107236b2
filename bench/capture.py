"""`composens capture --all` on 8 interfaces under iperf3 load, against 8 plain tcpdumps on the same interfaces.

    sudo .venv/bin/python bench/capture.py [--seconds 10] [--rounds 2] [--loads udp-5kpps,udp-20kpps] [--dumpcap]
    sudo .venv/bin/python bench/capture.py --recorder [--seconds 20] [--memory 16MiB]

A composens lab of 8 busybox services in 4 pairs (`pN-a:eth1 <-> pN-b:eth1` on 198.18.N.0/24). Each round:
8 reference tcpdumps (`ip netns exec pN-x tcpdump -i eth1 -n -w /dev/null`) start, then the design under test
on the same 8 interfaces, then iperf3 at a fixed rate on every pair (Debian's iperf3, run in the services'
namespaces); 1 s after the load, both are stopped with SIGINT. Measured: packets per interface (design /
tcpdump; goal >= 0.99 on the worst interface) and CPU (user + system from wait4, design / the 8 tcpdumps;
goal <= 1.2x). Designs: `composens capture --all -w /dev/null` (the command itself, start-up included), and
with --dumpcap the alternative of a tcpdump per interface writing pcap into a FIFO and dumpcap merging them
(C all the way; its packets are counted from its file afterwards).

--recorder runs the flight recorder (lab.flight_recorder, `keep: 5s, memory: 16MiB`, or --memory) under the 20 kpps load
for --seconds, and reports the bytes its ring counts at the end and at most, against the bound, and the
process's resident memory before and at its peak (VmHWM), and its anonymous part (RssAnon: the Python heap, without
the kernel rings' mapped pages) before and at the end, when the ring is full.

Loads (iperf3 client options per pair): UDP with 64-byte payloads (106-byte frames) at 5,000 and 20,000 packets
a second per pair (each packet is seen on 2 of the 8 interfaces), TCP at 100 Mbit/s per pair, and idle (no load:
the capture's own cost, start-up included).
Needs root, the engine, tcpdump, iperf3 (and dumpcap for --dumpcap); removes its lab at the end, also after a
failure. On a shared machine run it under `flock /tmp/composens-engine.lock`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from composens.interop.pcapng import read_pcapng  # noqa: E402

IMAGE = "busybox:1.36"
PAIRS = 4
LOADS = {
    "udp-5kpps": ["-u", "-l", "64", "-b", str(5_000 * 64 * 8)],
    "udp-20kpps": ["-u", "-l", "64", "-b", str(20_000 * 64 * 8)],
    "tcp-100mbit": ["-b", "100M"],
    "idle": [],  # no load: what the capture costs by itself (start-up, the loop's 50 ms tick)
}
CAPTURED = re.compile(r"(\d+) packets? captured")
KERNEL_DROPPED = re.compile(r"(\d+) packets? dropped by kernel")
COMPOSENS_COUNT = re.compile(r"composens: (\S+): (\d+) packets captured, (\d+) received by the kernel, (\d+) dropped")


def lab_text(name: str, memory: str = "16MiB") -> str:
    lines = [
        f"name: {name}",
        "x-composens:",
        f"  netns_prefix: {name}-",
        f"  capture: {{targets: all, keep: 5s, memory: {memory}}}",
    ]
    lines.append("  links:")
    lines += [f"    - endpoints: [p{p}-a:eth1, p{p}-b:eth1]" for p in range(PAIRS)]
    lines.append("services:")
    for p in range(PAIRS):
        for side, host in (("a", 1), ("b", 2)):
            spec = f"addresses: {{eth1: [198.18.{p}.{host}/24]}}"
            lines.append(f"  p{p}-{side}: {{image: {IMAGE}, network_mode: none, x-composens: {{{spec}}}}}")
    return "\n".join(lines) + "\n"


def netns(name: str, p: int, side: str) -> str:
    return f"{name}-p{p}-{side}"


def interfaces(name: str) -> list[tuple[str, str]]:
    """(lab name, netns entry) of each interface, in the order `--all` lists them."""
    return [(f"p{p}-{side}:eth1", netns(name, p, side)) for p in range(PAIRS) for side in ("a", "b")]


def composens(folder: Path, name: str, *args: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(REPO / ".venv/bin/composens"), "-p", name, *args],
        cwd=folder,
        text=True,
        **kw,  # type: ignore[call-overload]
    )


def cpu_of(process: subprocess.Popen[str]) -> float:
    """Wait for a child; return the CPU seconds it and the children it waited for used."""
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def load(name: str, kind: str, seconds: float) -> None:
    """iperf3 on every pair at once, a fixed rate each; wait until it is done."""
    if kind == "idle":
        time.sleep(seconds + 1)
        return
    servers = [
        subprocess.Popen(["ip", "netns", "exec", netns(name, p, "b"), "iperf3", "-s", "-1", "-B", f"198.18.{p}.2"],
                         stdout=subprocess.DEVNULL)
        for p in range(PAIRS)
    ]  # fmt: skip
    time.sleep(1)
    clients = [
        subprocess.Popen(["ip", "netns", "exec", netns(name, p, "a"), "iperf3", "-c", f"198.18.{p}.2", "-t",
                          str(seconds), *LOADS[kind]], stdout=subprocess.DEVNULL)
        for p in range(PAIRS)
    ]  # fmt: skip
    for process in clients + servers:
        process.wait()


def start_references(name: str) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", "eth1", "-n", "-w", "/dev/null"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _, ns in interfaces(name)
    ]  # fmt: skip


def stop_references(references: list[subprocess.Popen[str]]) -> tuple[list[int], float]:
    for process in references:
        process.send_signal(signal.SIGINT)
    counts, cpu = [], 0.0
    for process in references:
        assert process.stderr is not None
        said = process.stderr.read()
        cpu += cpu_of(process)
        found = CAPTURED.search(said)
        counts.append(int(found[1]) if found else -1)
    return counts, cpu


def round_composens(folder: Path, name: str, kind: str, seconds: float) -> dict[str, object]:
    references = start_references(name)
    design = composens(folder, name, "capture", "--all", "-w", "/dev/null", stderr=subprocess.PIPE)
    assert design.stderr is not None
    first = design.stderr.readline()
    assert first.startswith("composens: capturing on"), first
    time.sleep(1)  # the tcpdumps are capturing by now too
    load(name, kind, seconds)
    time.sleep(1)
    design.send_signal(signal.SIGINT)
    reference_counts, reference_cpu = stop_references(references)
    said = design.stderr.read()
    design_cpu = cpu_of(design)
    by_name = {m[1]: (int(m[2]), int(m[3]), int(m[4])) for m in COMPOSENS_COUNT.finditer(said)}
    counts = [by_name[lab][0] for lab, _ in interfaces(name)]
    dropped = [by_name[lab][2] for lab, _ in interfaces(name)]
    return _row("composens capture --all", kind, counts, reference_counts, dropped, design_cpu, reference_cpu, None)


def round_dumpcap(folder: Path, name: str, kind: str, seconds: float) -> dict[str, object]:
    references = start_references(name)
    work = Path(tempfile.mkdtemp(prefix="capture-bench-"))
    out = work / "out.pcapng"
    argv = ["dumpcap", "-q", "-w", str(out)]
    for i, (lab, _) in enumerate(interfaces(name)):
        os.mkfifo(work / f"f{i}")
        argv += ["-i", str(work / f"f{i}"), "--ifname", lab]
    merger = subprocess.Popen(argv, stderr=subprocess.DEVNULL, text=True)
    feeders = [
        subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", "eth1", "-n", "-U", "-w", str(work / f"f{i}"),
                          "--time-stamp-precision", "nano"], stderr=subprocess.PIPE, text=True)
        for i, (_, ns) in enumerate(interfaces(name))
    ]  # fmt: skip
    time.sleep(2)
    load(name, kind, seconds)
    time.sleep(1)
    for feeder in feeders:
        feeder.send_signal(signal.SIGINT)
    feeder_dropped, feeder_captured = [], 0
    for feeder in feeders:
        assert feeder.stderr is not None
        said = feeder.stderr.read()
        found = KERNEL_DROPPED.search(said)
        feeder_dropped.append(int(found[1]) if found else 0)
        found = CAPTURED.search(said)
        feeder_captured += int(found[1]) if found else 0
    design_cpu = sum(cpu_of(feeder) for feeder in feeders)
    design_cpu += cpu_of(merger)  # it ends when every FIFO is closed
    reference_counts, reference_cpu = stop_references(references)
    contents = read_pcapng(out.read_bytes())
    counts = [0] * len(interfaces(name))
    late, newest = 0, 0
    for packet in contents.packets:
        counts[packet.interface_id] += 1
        late += packet.timestamp_ns < newest
        newest = max(newest, packet.timestamp_ns)
    if os.environ.get("CAPTURE_BENCH_KEEP"):  # a folder to keep dumpcap's file in, to look at it with capinfos
        out.rename(Path(os.environ["CAPTURE_BENCH_KEEP"]) / f"dumpcap-{kind}-{time.time_ns()}.pcapng")
    else:
        out.unlink()
    for fifo in work.iterdir():
        fifo.unlink()
    work.rmdir()
    name = "tcpdump FIFOs -> dumpcap"
    row = _row(name, kind, counts, reference_counts, feeder_dropped, design_cpu, reference_cpu, late)
    row["feeders_captured"] = feeder_captured  # what the tcpdumps wrote into the FIFOs, by their own count
    return row


def _row(design: str, kind: str, counts: list[int], references: list[int], dropped: list[int] | None,
         cpu: float, reference_cpu: float, late: int | None) -> dict[str, object]:  # fmt: skip
    worst = min(c / r if r > 0 else 1.0 for c, r in zip(counts, references, strict=True))
    return {
        "design": design,
        "load": kind,
        "worst_ratio": round(worst, 4),
        "packets": sum(counts),
        "reference_packets": sum(references),
        "dropped": sum(dropped) if dropped is not None else None,
        "cpu_s": round(cpu, 2),
        "reference_cpu_s": round(reference_cpu, 2),
        "cpu_ratio": round(cpu / reference_cpu, 1) if reference_cpu else None,
        "us_per_packet": round(cpu / max(1, sum(counts)) * 1e6, 2),
        "out_of_order": late,
    }


RECORDER_CHILD = """
import json, sys, time
from pathlib import Path
from composens.cli.app import App
from composens.system.docker.options import ComposeOptions
app = App(ComposeOptions(project_name=sys.argv[1]), debug=False)
lab = app.lab()
topo = lab.load()
def rss(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024
recorder = lab.flight_recorder(topo, Path("/nonexistent"), lambda *a: None)
before, anon_before = rss("VmRSS:"), rss("RssAnon:")
recorder.start()
print("started", flush=True)
time.sleep(float(sys.argv[2]))
ring_bytes, ring_packets = recorder.ring.bytes_held, len(recorder.ring)
anon_at_end = rss("RssAnon:")  # the Python heap: the kernel's rings are mapped pages, not anonymous memory
recorder.stop()
print(json.dumps({"bound": recorder.settings.memory, "ring_bytes_at_end": ring_bytes,
                  "ring_packets_at_end": ring_packets, "peak_bytes": recorder.peak_bytes,
                  "evicted_for_room": recorder.ring.evicted_for_room, "rss_before": before, "rss_peak": rss("VmHWM:"),
                  "rss_anon_before": anon_before, "rss_anon_at_end": anon_at_end}))
"""


def recorder_round(folder: Path, name: str, seconds: float) -> dict[str, object]:
    child = subprocess.Popen(
        [str(REPO / ".venv/bin/python"), "-c", RECORDER_CHILD, name, str(seconds + 4)],
        cwd=folder, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "started"
    load(name, "udp-20kpps", seconds)
    out, _ = child.communicate()
    return dict(json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--loads", default="idle,udp-5kpps,udp-20kpps,tcp-100mbit")
    parser.add_argument("--dumpcap", action="store_true", help="also measure tcpdump FIFOs merged by dumpcap")
    parser.add_argument("--recorder", action="store_true", help="measure the flight recorder's memory instead")
    parser.add_argument("--memory", default="16MiB", help="the recorder's bound (x-composens.capture.memory)")
    args = parser.parse_args()
    name = f"cbench{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "docker-compose.yml").write_text(lab_text(name, args.memory))
        try:
            up = composens(folder, name, "up", "-d", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if up.wait() != 0:
                raise SystemExit(f"up failed: {up.stderr.read() if up.stderr else ''}")
            load_avg = os.getloadavg()[0]
            print(f"# {name}: 8 interfaces, {args.seconds:g} s a round, load average {load_avg:.1f}", flush=True)
            if args.recorder:
                print(json.dumps(recorder_round(folder, name, args.seconds)), flush=True)
                return
            for _ in range(args.rounds):
                for kind in args.loads.split(","):
                    print(json.dumps(round_composens(folder, name, kind, args.seconds)), flush=True)
                    if args.dumpcap:
                        print(json.dumps(round_dumpcap(folder, name, kind, args.seconds)), flush=True)
            print(f"# load average at the end {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            composens(folder, name, "down", "-t", "0", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).wait()


if __name__ == "__main__":
    main()
