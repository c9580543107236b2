"""composens' wiring at this revision beside another revision's, in the same run: what a change costs.

    .venv/bin/python bench/against.py --revision 9e8bb99 --links 100 --rounds 5

Both revisions wire the same lab (two services, N links with an address on each end) from nothing, in
process (the record's lock, reading every namespace, the diff, the batches that read back, the record), in
turns, each after the lab's pairs were deleted. The ratio is this revision over that one. Needs root and the
engine; the lab and the other revision's checkout are removed at the end, also after a failure.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Lab, delete_pairs

REPO = Path(__file__).resolve().parents[1]

# Run in a child whose composens is the given tree's: link the entries, then time one convergence.
ONE_RUN = """
import sys, time
sys.path.insert(0, sys.argv[1])
try:
    from composens.system.kernel import wiring
    from composens.system.docker.compose import Compose
    from composens.system.docker.options import ComposeOptions
    from composens.lab.lab import Lab
except ImportError:  # a revision from before the layers (fac05d2)
    from composens import wiring
    from composens.compose import Compose, ComposeOptions
    from composens.lab import Lab
core = Lab(Compose(ComposeOptions(files=(sys.argv[2],))))
topo = core.load()
core.link(topo, set(topo.services), wire=False)
_, _, _, running = core._running(topo)
start = time.perf_counter()
with core.store.locked() as state:
    targets = core._targets(topo, state, running)
    scope = core._scope(topo, state, targets, set(topo.services))
    done = wiring.converge_lab(topo, scope, targets, state.project(topo.project), state.save)
print(time.perf_counter() - start, len(done.done))
"""


def one_run(tree: Path, compose_file: Path) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", ONE_RUN, str(tree), str(compose_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--revision", required=True, help="the revision to compare against (a commit)")
    parser.add_argument("--links", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="composens-against-") as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(other), args.revision], check=True)
        folder = Path(tmp) / "lab"
        folder.mkdir()
        lab = Lab(folder, 2, args.links)
        try:
            lab.compose("up", "-d")
            times: dict[Path, list[float]] = {REPO: [], other: []}
            commands: dict[Path, int] = {}
            order = [REPO, other, other, REPO] * ((args.rounds + 1) // 2)
            for tree in order:
                delete_pairs(f"{lab.name}-s1", "a", args.links)
                seconds, count = one_run(tree, folder / "docker-compose.yml")
                times[tree].append(seconds)
                commands[tree] = count
        finally:
            lab.destroy()
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(other)], check=False)
    ours, theirs = statistics.median(times[REPO]), statistics.median(times[other])
    print(
        f"wiring {args.links} links from nothing, in process: this revision {ours:.3f} s ({commands[REPO]} commands),"
    )
    print(f"  {args.revision} {theirs:.3f} s ({commands[other]} commands): ratio {ours / theirs:.2f}")
    print(
        f"  rounds: this {sorted(round(t, 3) for t in times[REPO])}, that {sorted(round(t, 3) for t in times[other])}"
    )


if __name__ == "__main__":
    main()
