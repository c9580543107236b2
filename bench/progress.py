"""What the progress display and the summary of `up -d` / `netns link` cost (issue 26, item 10). Root and the engine.

    sudo .venv/bin/python bench/progress.py --services 60 --rounds 7 --before fb11860

A ring of N services is brought up once; before every timed run each of its links is deleted by hand, so that
`netns link` wires the whole ring again (N pairs, about 7 N changes: what `up -d` does after compose). Timed in
turns, round after round:

- this tree, stdout on a pseudo-terminal: the progress display (drawn once the work takes 0.25 s) and the summary;
- this tree, on a pseudo-terminal with --verbose: no display, every line;
- this tree, stdout to a pipe: every line (the lab reports to a Progress that draws nothing);
- REVISION (before this work), on a pseudo-terminal and to a pipe: every line.

Ratios are of medians measured in the same run; seconds move with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import COMPOSENS, checkout, ring_lab, sh, timed

DRAWN = b"\x1b[?25l"  # rich hides the cursor while its display is up


def on_terminal(argv: list[str], cwd: Path, env: dict[str, str]) -> bytes:
    """Run argv with stdout on a pseudo-terminal 120 columns wide; return what it wrote there."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        elif child.poll() is not None:
            break
    os.close(master)
    _, err = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({child.returncode}): {err.decode().strip()}")
    return shown


def unwire(lab_dir: Path, project: str, services: int) -> Callable[[], None]:
    def run() -> None:
        for i in range(services):
            subprocess.run(
                ["ip", "-n", f"{project}-s{i + 1}", "link", "del", f"r{i}a"], capture_output=True, check=False
            )

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=60, help="ring size (default 60)")
    parser.add_argument("--rounds", type=int, default=7, help="timed runs of each (default 7)")
    parser.add_argument("--before", default="fb11860", help="the revision to compare with (default fb11860)")
    options = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    sh(sys.executable, "-m", "compileall", "-q", str(repo / "composens"))
    with tempfile.TemporaryDirectory(prefix="composens-bench-progress-") as tmp:
        folder = Path(tmp)
        other = checkout(options.before, folder / "other")
        lab_dir = folder / "ring"
        lab_dir.mkdir()
        ring_lab(lab_dir, options.services)
        project = next(line.split()[1] for line in (lab_dir / "docker-compose.yml").read_text().splitlines())
        here = {**os.environ, "PYTHONPATH": str(repo), "TERM": "xterm-256color"}
        there = {**here, "PYTHONPATH": str(other)}
        drawn = []
        clear = unwire(lab_dir, project, options.services)
        try:
            sh(*COMPOSENS, "up", "-d", cwd=lab_dir, env=here)
            link = [*COMPOSENS, "netns", "link"]

            def tty_progress() -> None:
                drawn.append(DRAWN in on_terminal(link, lab_dir, here))

            def tty_verbose() -> None:
                on_terminal([*link, "--verbose"], lab_dir, here)

            def pipe_now() -> None:
                sh(*link, cwd=lab_dir, env=here)

            def tty_before() -> None:
                on_terminal(link, lab_dir, there)

            def pipe_before() -> None:
                sh(*link, cwd=lab_dir, env=there)

            actions = [tty_progress, tty_verbose, pipe_now, tty_before, pipe_before]
            names = [
                "this tree, terminal (progress, summary)",
                "this tree, terminal --verbose",
                "this tree, pipe",
                f"{options.before}, terminal",
                f"{options.before}, pipe",
            ]
            for action in actions:  # one untimed run of each: bytecode, page cache
                clear()
                action()
            load = os.getloadavg()[0]
            medians, cpu = rotated_after(options.rounds, clear, actions)
            load_after = os.getloadavg()[0]
            print(
                f"netns link rewiring a ring of {options.services} ({options.rounds} rounds in turns, "
                f"load {load:.1f} to {load_after:.1f}); progress drawn in {sum(drawn)} of {len(drawn)} runs"
            )
            print(f"  {'':45} {'wall':>8} {'CPU':>8}")
            for name, median, used in zip(names, medians, cpu, strict=True):
                print(f"  {name:45} {median:7.3f}s {used:7.3f}s")
            for label, a, b in (
                (f"terminal with progress / {options.before} on a terminal", 0, 3),
                ("terminal with progress / terminal --verbose", 0, 1),
                (f"pipe / {options.before} pipe", 2, 4),
            ):
                print(f"  {label:50} wall {medians[a] / medians[b]:.3f}, CPU {cpu[a] / cpu[b]:.3f}")
        finally:
            subprocess.run([*COMPOSENS, "down", "-t", "0"], cwd=lab_dir, env=here, capture_output=True, check=False)
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(other)], check=False)


def rotated_after(
    rounds: int, before: Callable[[], None], actions: list[Callable[[], None]]
) -> tuple[list[float], list[float]]:
    """Medians of the actions run in turns (as run.rotated), each timed after an untimed `before`: wall-clock
    seconds, and CPU seconds (user and system) of the processes it ran, which the machine's load moves less."""
    times: list[list[float]] = [[] for _ in actions]
    cpu: list[list[float]] = [[] for _ in actions]
    for round_ in range(rounds):
        for i in range(len(actions)):
            slot = (round_ + i) % len(actions)
            before()
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            times[slot].append(timed(actions[slot]))
            now = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[slot].append(now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime)
    return [statistics.median(t) for t in times], [statistics.median(c) for c in cpu]


if __name__ == "__main__":
    main()
