"""How long services that start once wired wait: `up -d` to the last one's command starting, beside plain `up -d`.

    .venv/bin/python bench/gate.py --services 50 --rounds 3

A ring of N services (a link to the next, an address on each end). With start_after_wiring each command logs
the kernel's uptime when it starts; the figure is from before `composens up -d` to the last such start. The
baseline is `composens up -d` of the same ring without the gate, to its return (its commands start before the
wiring, which is what the gate is for). Needs root and the engine; the labs are removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import COMPOSENS, IMAGE, sh


def ring(folder: Path, size: int, *, gated: bool) -> str:
    name = f"cngate{uuid.uuid4().hex[:6]}"
    lines = [f"name: {name}", "x-composens:", f"  netns_prefix: {name}-", "  links:"]
    lines += [f'    - endpoints: ["s{i}:r", "s{(i + 1) % size}:l"]' for i in range(size)]
    lines.append("services:")
    command = '["sh", "-c", "read up idle < /proc/uptime; echo started $$up; exec sleep 86400"]'
    for i in range(size):
        right, left = f"198.18.{i}.1/30", f"198.18.{(i - 1) % size}.2/30"
        gate = "start_after_wiring: true, " if gated else ""
        lines.append(
            f"  s{i}: {{image: {IMAGE}, network_mode: none, command: {command}, "
            f"x-composens: {{{gate}addresses: {{r: [{right}], l: [{left}]}}}}}}"
        )
    (folder / "docker-compose.yml").write_text("\n".join(lines) + "\n")
    return name


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def last_start(folder: Path, size: int, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = sh("docker", "compose", "logs", "--no-log-prefix", cwd=folder)
        starts = [float(line.split()[1]) for line in out.splitlines() if line.startswith("started ")]
        if len(starts) >= size:
            return max(starts)
        time.sleep(0.2)
    raise SystemExit("not every gated service started")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    gated_times, plain_times = [], []
    with tempfile.TemporaryDirectory(prefix="composens-gate-") as tmp:
        for round_ in range(args.rounds):
            for gated in (True, False) if round_ % 2 == 0 else (False, True):
                folder = Path(tmp) / f"{round_}{gated}"
                folder.mkdir()
                ring(folder, args.services, gated=gated)
                try:
                    start = uptime()
                    sh(*COMPOSENS, "up", "-d", cwd=folder)
                    returned = uptime()
                    if gated:
                        gated_times.append(last_start(folder, args.services) - start)
                    else:
                        plain_times.append(returned - start)
                finally:
                    subprocess.run([*COMPOSENS, "down", "-t", "0"], cwd=folder, capture_output=True, check=False)
    gated_s, plain_s = statistics.median(gated_times), statistics.median(plain_times)
    print(f"{args.services} services: up -d to the last gated command starting {gated_s:.2f} s,")
    print(f"  plain composens up -d {plain_s:.2f} s: ratio {gated_s / plain_s:.2f}")
    print(
        f"  rounds: gated {sorted(round(t, 2) for t in gated_times)}, plain {sorted(round(t, 2) for t in plain_times)}"
    )


if __name__ == "__main__":
    main()
