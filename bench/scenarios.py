"""Scenarios: what the probes cost and how well they keep time, and how long a step takes to act.

    sudo .venv/bin/python bench/scenarios.py --seconds 60 --rounds 10
    (on a shared machine: flock /tmp/composens-engine.lock ...)

1. Probes: a LAN of five busybox nodes, 20 ping probes (each node to each other) at 10 ms for --seconds, on the
   unimpaired lab, through `composens scenario run` (one `sleep` step). Reported: requests sent and lost, how late
   each left against its fixed schedule (p50, p99, max), and the CPU the composens process used; beside it the
   baseline, 20 busybox `ping -i 0.01` processes on the same pairs for the same time, run right after: their CPU
   and their loss.
2. Steps: on a link a-b, the time from a step's command to its effect (b:eth1 loses carrier, seen by a netlink
   socket in b's namespace) for `link down a:eth1` done as a scenario step does it (the lab's hold, in process),
   against `ip -n NS link set dev eth1 down` alone (a process, as a script would); rounds in turns. Also how far the
   step's stamp (when its batch had run) is from the carrier going.

Needs root and the engine; every lab it makes is removed at the end, also after a failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
IMAGE = os.environ.get("COMPOSENS_DEMO_IMAGE", "busybox:1.36")
NODES = 5
RTM_NEWLINK = 16
RTM_GETLINK = 18
NLM_F_REQUEST = 1
IFF_LOWER_UP = 0x10000


def composens(name: str, folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "composens", "-p", name, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=check,
    )


def lan_lab(name: str, seconds: int) -> str:
    addresses = {f"n{i}": f"198.18.90.{i}" for i in range(1, NODES + 1)}
    probes = {
        f"{a}-{b}": {"ping": {"from": a, "to": addresses[b], "interval": "10ms"}}
        for a in addresses
        for b in addresses
        if a != b
    }
    lab = {
        "name": name,
        "x-composens": {
            "netns_prefix": f"{name}-",
            "hub": f"{name}-hub",
            "lans": {"lan0": {"endpoints": [f"{n}:eth1" for n in addresses]}},
            "links": [{"endpoints": ["n1:eth2", "n2:eth2"]}],
            "probes": probes,
            "scenarios": {"steady": {"steps": [{"sleep": f"{seconds}s"}]}},
        },
        "services": {
            n: {
                "image": IMAGE,
                "network_mode": "none",
                "x-composens": {
                    "addresses": {
                        "eth1": [f"{a}/24"],
                        **({"eth2": [f"198.18.91.{n[1]}/24"]} if n in ("n1", "n2") else {}),
                    }
                },
            }
            for n, a in addresses.items()
        },
    }
    return json.dumps(lab)  # JSON is YAML


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]  # nearest rank


def bench_probes(name: str, folder: Path, seconds: int) -> None:
    before = children_cpu()
    started = time.monotonic()
    done = composens(name, folder, "scenario", "run", "steady", "--format", "json")
    wall = time.monotonic() - started
    cpu = children_cpu() - before
    (report,) = json.loads(done.stdout)
    sent = lost = 0
    late: list[float] = []
    for probe in report["probes"]:
        requests = probe["requests"]
        sent += len(requests)
        lost += sum(1 for r in requests if r["rtt"] is None)
        late += [max(0.0, r["sent"] - (probe["scheduled"] + k * probe["interval"])) for k, r in enumerate(requests)]
    rtts = [r["rtt"] for p in report["probes"] for r in p["requests"] if r["rtt"] is not None]
    print(f"composens: {len(report['probes'])} probes at 10 ms for {report['seconds']:.1f} s (process: {wall:.1f} s)")
    print(f"  requests sent {sent}, lost {lost}")
    print(
        f"  lateness against the schedule: p50 {percentile(late, 50) * 1000:.3f} ms, "
        f"p99 {percentile(late, 99) * 1000:.3f} ms, max {max(late) * 1000:.3f} ms"
    )
    print(f"  rtt p50 {percentile(rtts, 50) * 1000:.3f} ms, p99 {percentile(rtts, 99) * 1000:.3f} ms")
    print(f"  CPU of the composens process (and compose, none here): {cpu:.2f} s = {100 * cpu / wall:.1f} % of a core")
    # Baseline: 20 ping processes on the same pairs, for the same time.
    count = int(seconds / 0.01)
    before = children_cpu()
    started = time.monotonic()
    pings = [
        subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                f"{name}-{p['from']}",
                "busybox",
                "ping",
                "-q",
                "-i",
                "0.01",
                "-W",
                "1",
                "-c",
                str(count),
                p["to"],
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in report["probes"]
    ]
    transmitted = received = 0
    for ping in pings:
        out, _ = ping.communicate()
        for line in out.splitlines():
            if "packets transmitted" in line:
                words = line.split()
                transmitted += int(words[0])
                received += int(words[3])
    wall = time.monotonic() - started
    cpu = children_cpu() - before
    print(f"baseline: {len(pings)} busybox ping -i 0.01 processes, {wall:.1f} s")
    print(f"  requests sent {transmitted}, lost {transmitted - received}")
    print(f"  CPU of the ping processes (and ip netns exec): {cpu:.2f} s = {100 * cpu / wall:.1f} % of a core")


class CarrierWatch:
    """When an interface's carrier goes and comes (monotonic), as the kernel has it: asked over netlink every
    0.2 ms from a socket in its namespace. Not from link notifications: the kernel may hold a carrier change back
    by up to a second before it says so (linkwatch batches the events of a veth whose ifindex is its peer's, which
    two ends of one name in fresh namespaces often are), while the carrier itself, and the traffic, change at once.
    """

    def __init__(self, netns_path: str, ifindex: int) -> None:
        from composens.system.kernel.entering import run_in_netns

        made: list[socket.socket] = []
        fd = os.open(netns_path, os.O_RDONLY)
        try:
            run_in_netns(
                fd, lambda: made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE))
            )
        finally:
            os.close(fd)
        self.sock = made[0]
        self.request = struct.pack("=IHHII", 32, RTM_GETLINK, NLM_F_REQUEST, 1, 0) + struct.pack(
            "=BBHiII", 0, 0, 0, ifindex, 0, 0
        )
        self.events: list[tuple[float, bool]] = []  # (when, carrier)
        self.stopped = False
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stopped:
            self.sock.send(self.request)
            data = self.sock.recv(65536)
            seen = time.monotonic()
            _, kind = struct.unpack_from("=IH", data)
            if kind == RTM_NEWLINK:
                flags = struct.unpack_from("=BBHiII", data, 16)[4]
                carrier = bool(flags & IFF_LOWER_UP)
                if not self.events or self.events[-1][1] != carrier:
                    self.events.append((seen, carrier))
            time.sleep(0.0002)

    def wait_for(self, carrier: bool, after: float, timeout: float = 10) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [t for t, c in list(self.events) if c == carrier and t >= after]
            if found:
                return found[0]
            time.sleep(0.001)
        raise TimeoutError(f"carrier {'on' if carrier else 'off'} not seen")

    def close(self) -> None:
        self.stopped = True
        self.thread.join()
        self.sock.close()


def bench_steps(name: str, folder: Path, rounds: int) -> None:
    from composens.lab.lab import Lab
    from composens.model.topology import Endpoint
    from composens.system.docker.compose import Compose
    from composens.system.docker.options import ComposeOptions

    os.chdir(folder)
    lab = Lab(Compose(ComposeOptions(project_name=name)))
    topo = lab.load()
    b_ns = f"{name}-n2"
    ifindex = json.loads(
        subprocess.run(
            ["ip", "-n", b_ns, "-j", "link", "show", "dev", "eth2"], capture_output=True, text=True, check=True
        ).stdout
    )[0]["ifindex"]
    watch = CarrierWatch(f"/var/run/netns/{b_ns}", ifindex)
    end = Endpoint("n1", "eth2")
    step, alone, stamp_error = [], [], []
    for _ in range(rounds):
        for way in ("step", "alone") if len(step) <= len(alone) else ("alone", "step"):
            t0 = time.monotonic()
            if way == "step":
                report = lab.hold(topo, end, down=True)
                off = watch.wait_for(False, t0)
                step.append(off - t0)
                assert report.changed_at is not None
                stamp_error.append(report.changed_at - off)
                lab.hold(topo, end, down=False)
            else:
                subprocess.run(["ip", "-n", f"{name}-n1", "link", "set", "dev", "eth2", "down"], check=True)
                off = watch.wait_for(False, t0)
                alone.append(off - t0)
                subprocess.run(["ip", "-n", f"{name}-n1", "link", "set", "dev", "eth2", "up"], check=True)
            watch.wait_for(True, off)
    watch.close()
    print(f"steps: link down n1:eth2 until n2:eth2 loses carrier, {rounds} rounds each, in turns")
    s, a = statistics.median(step), statistics.median(alone)

    def spread(values: list[float]) -> str:
        low, middle, high = (x * 1000 for x in (min(values), statistics.median(values), max(values)))
        return f"median {middle:.1f} ms (min {low:.1f}, max {high:.1f})"

    print(f"  as a scenario step (the lab's hold, in process): {spread(step)}")
    print(f"  ip link set alone (a process):                  {spread(alone)}")
    print(f"  ratio step / ip alone: {s / a:.2f}")
    print(f"  the step's stamp minus the carrier going: {spread(stamp_error)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", choices=("probes", "steps"))
    args = parser.parse_args()
    name = f"cnsb{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="composens-scenarios-") as tmp:
        folder = Path(tmp)
        (folder / "docker-compose.yml").write_text(lan_lab(name, args.seconds))
        try:
            composens(name, folder, "up", "-d")
            with open("/proc/loadavg") as f:
                print(f"load average before: {' '.join(f.read().split()[:3])}")
            if args.only in (None, "probes"):
                bench_probes(name, folder, args.seconds)
            if args.only in (None, "steps"):
                bench_steps(name, folder, args.rounds)
            with open("/proc/loadavg") as f:
                print(f"load average after: {' '.join(f.read().split()[:3])}")
        finally:
            composens(name, folder, "down", "-t", "0", check=False)


if __name__ == "__main__":
    main()
