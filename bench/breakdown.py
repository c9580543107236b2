"""Where `ps --netns` and an unchanged `netns link` spend their time, phase by phase. Needs root and the engine.

    flock /tmp/composens-engine.lock .venv/bin/python bench/breakdown.py --sizes 30,60 --rounds 5

Builds a ring of N services with a link per service (bench/run.py's ring_lab), brings it up, then
times, in this process and each the median of --rounds: the compose config (cached), listing and
inspecting the containers on the engine's socket, the record and the entries, reading every
namespace (by `ip -json -batch`, one process each, and by netlink where it is available), the
diff, and rendering the table and the JSON. Whole commands are timed beside `python -c pass`
and an import of the CLI, so start-up is known too. Removes the lab at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from run import COMPOSENS, REPLAY_IMPORTS, ring_lab, sh


def median_seconds(rounds: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def phases(folder: Path, rounds: int) -> list[tuple[str, float]]:
    """composens' phases of `ps --netns`, in this process."""
    from rich.console import Console

    from composens.lab.lab import Lab
    from composens.plan import converge
    from composens.show import render
    from composens.system.docker.compose import Compose
    from composens.system.docker.configcache import ConfigCache
    from composens.system.docker.options import ComposeOptions
    from composens.system.kernel import reading

    def by_ip(target: reading.Target) -> object:
        return reading._read_target_by_ip(target, qdiscs=False)

    os.chdir(folder)
    core = Lab(Compose(ComposeOptions(), cache=ConfigCache()))
    topo = core.load()
    _, _, _, running = core._running(topo)
    state = core.store.read()
    targets = core._targets(topo, state, running)
    scope = core._scope(topo, state, targets, set(topo.services))
    seen = reading.read_all(targets)
    rows = core.status(topo, set(topo.services)).rows
    found: list[tuple[str, float]] = [
        ("config (cached)", median_seconds(rounds, core.load)),
        ("list + inspect containers (engine socket)", median_seconds(rounds, lambda: core._running(topo))),
        ("record read", median_seconds(rounds, core.store.read)),
        ("entries probed, targets", median_seconds(rounds, lambda: core._targets(topo, state, running))),
    ]
    nodes = list(targets.values())
    found += [
        (
            f"read {len(nodes)} namespaces: ip -json -batch each, 8 at a time",
            median_seconds(rounds, lambda: reading.in_parallel(by_ip, nodes)),
        ),
        (
            f"read {len(nodes)} namespaces: netlink, 8 threads (reading.read_all)",
            median_seconds(rounds, lambda: reading.read_all(targets)),
        ),
        (
            f"read {len(nodes)} namespaces: netlink, one after another",
            median_seconds(rounds, lambda: [reading.read_target(t) for t in nodes]),
        ),
    ]
    records = core._records(state, topo.project, targets)
    found.append(("diff (drift)", median_seconds(rounds, lambda: converge.diff(topo, seen, records, scope))))
    found.append(("whole status() in process", median_seconds(rounds, lambda: core.status(topo, set(topo.services)))))

    def table() -> None:
        console = Console(file=io.StringIO(), width=160, color_system=None)
        console.print(render.netns_table(rows))

    found.append(("render table (rich)", median_seconds(rounds, table)))
    found.append(("render json", median_seconds(rounds, lambda: render.netns_json(rows))))
    return found


def replay_phases(rounds: int) -> list[tuple[str, float]]:
    """Making the readings of the last recorded run again, kind by kind, in this process (one after another)."""
    from collections import defaultdict

    from composens import replay

    newest = max(replay.REPLAY_DIR.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    readings = json.loads(newest.read_bytes())["readings"]
    by_kind: dict[str, list[tuple[object, ...]]] = defaultdict(list)
    for kind, args, _ in readings:
        by_kind[kind].append(tuple(args))
    found = []
    for kind, calls in sorted(by_kind.items()):
        seconds = median_seconds(rounds, lambda k=kind, c=calls: [replay._read(k, a) for a in c])  # type: ignore[misc]
        found.append((f"replay: {len(calls)} readings of {kind}", seconds))
    return found


def spawns(folder: Path, *args: str) -> int:
    """Programs a composens command starts (successful execve calls under strace -f), itself included."""
    done = subprocess.run(
        ["strace", "-f", "-qq", "-z", "-e", "trace=execve", "-o", "/dev/stdout", *COMPOSENS, *args],
        capture_output=True,
        text=True,
        cwd=folder,
        check=False,
    )
    return sum(1 for line in done.stdout.splitlines() if 'execve("' in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="30,60")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import composens

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(composens.__file__).parent)], check=True)
    print(f"load average: {os.getloadavg()}", flush=True)
    for size in (int(n) for n in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="composens-breakdown-") as tmp:
            ring_lab(Path(tmp), size)
            try:
                sh(*COMPOSENS, "up", "-d", cwd=Path(tmp))
                measure(Path(tmp), size, args.rounds)
            finally:
                os.chdir("/")
                subprocess.run([*COMPOSENS, "down", "-t", "0"], cwd=tmp, capture_output=True, check=False)


def measure(folder: Path, size: int, rounds: int) -> None:
    ids = sh("docker", "compose", "ps", "-q", cwd=folder).split()
    print(f"\n== ring of {size} services, {size} links; load {os.getloadavg()[0]:.1f}", flush=True)
    worked_out = {**os.environ, "COMPOSENS_NO_REPLAY": "1"}
    whole = [
        ("python -c pass", [sys.executable, "-c", "pass"], None),
        ("python -c 'import composens.cli.main'", [sys.executable, "-c", "import composens.cli.main"], None),
        ("python -c 'import' what a replay does", [sys.executable, "-c", f"import {','.join(REPLAY_IMPORTS)}"], None),
        ("composens ps --netns (replayed)", [*COMPOSENS, "ps", "--netns"], None),
        ("composens ps --netns --format json (replayed)", [*COMPOSENS, "ps", "--netns", "--format", "json"], None),
        ("composens netns link (unchanged, replayed)", [*COMPOSENS, "netns", "link"], None),
        ("composens ps --netns (worked out)", [*COMPOSENS, "ps", "--netns"], worked_out),
        ("composens ps --netns --format json (worked out)", [*COMPOSENS, "ps", "--netns", "--format=json"], worked_out),
        ("composens netns link (unchanged, worked out)", [*COMPOSENS, "netns", "link"], worked_out),
        ("docker compose ps", ["docker", "compose", "ps"], None),
        ("docker inspect (all containers)", ["docker", "inspect", *ids], None),
    ]
    for name, command, env in whole:
        sh(*command, cwd=folder, env=env)  # a first run records what the others replay
        seconds = median_seconds(rounds, lambda c=command, e=env: sh(*c, cwd=folder, env=e))  # type: ignore[misc]
        print(f"{name:<52} {seconds * 1000:8.1f} ms", flush=True)
    for name, seconds in replay_phases(rounds):
        print(f"  {name:<64} {seconds * 1000:8.1f} ms", flush=True)
    for name, seconds in phases(folder, rounds):
        print(f"  {name:<64} {seconds * 1000:8.1f} ms", flush=True)
    for what in (("ps", "--netns"), ("netns", "link")):
        print(f"  programs started by composens {' '.join(what)}: {spawns(folder, *what)}", flush=True)
    profile = subprocess.run(
        [sys.executable, "-m", "cProfile", "-s", "cumulative", "-m", "composens", "ps", "--netns"],
        capture_output=True,
        text=True,
        cwd=folder,
        check=False,
    ).stdout
    lines = profile[profile.find("   ncalls") :].splitlines()[:40]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
