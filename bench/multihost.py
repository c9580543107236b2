"""Making cross-host link ends (VXLAN) beside making local veth pairs, on one host, in the same run.

    sudo .venv/bin/python bench/multihost.py --links 100 --rounds 5

One lab on host h1 of two: s1 has N veth links to s2 (also on h1) and N links to s3 (on h2, not started:
each host makes its own ends alone). In turns, s1's veth pairs or its VXLAN ends are deleted and one
convergence (in process: the lock, reading every namespace, the diff, the batches, the record) makes them
again. The ratio is VXLAN over veth. The underlay address is this bench's own (198.18.201.1 on a dummy
veth it adds and removes), the UDP port a random one. Needs root and the engine; the lab is removed at
the end, also after a failure.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import IMAGE, delete_pairs, sh

UNDERLAY = "198.18.201.1"


def write_lab(folder: Path, links: int, port: int) -> str:
    name = f"cnmh{uuid.uuid4().hex[:6]}"
    lines = [
        f"name: {name}",
        "x-composens:",
        f"  netns_prefix: {name}-",
        f"  hosts: {{h1: {{underlay: {UNDERLAY}}}, h2: {{underlay: 198.18.201.2}}}}",
        f"  vxlan: {{port: {port}}}",
        "  links:",
    ]
    lines += [f'    - endpoints: ["s1:a{i}", "s2:b{i}"]' for i in range(links)]
    lines += [f'    - endpoints: ["s1:x{i}", "s3:y{i}"]' for i in range(links)]
    lines.append("services:")
    for n, host in ((1, "h1"), (2, "h1"), (3, "h2")):
        lines += [f"  s{n}:", f"    image: {IMAGE}", "    network_mode: none", "    command: sleep 86400"]
        lines += ["    x-composens:", f"      host: {host}", "      addresses:"]
        if n == 1:
            lines += [f"        a{i}: [10.{i // 256}.{i % 256}.1/24]" for i in range(links)]
            lines += [f"        x{i}: [10.{100 + i // 256}.{i % 256}.1/24]" for i in range(links)]
        else:
            side = "b" if n == 2 else "y"
            lines += [
                f"        {side}{i}: [10.{(0 if n == 2 else 100) + i // 256}.{i % 256}.2/24]" for i in range(links)
            ]
    (folder / "docker-compose.yml").write_text("\n".join(lines) + "\n")
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--links", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from composens.lab.lab import Lab
    from composens.system.docker.compose import Compose
    from composens.system.docker.options import ComposeOptions
    from composens.system.kernel import wiring

    dummy = f"cnmhu{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="composens-multihost-") as tmp:
        folder = Path(tmp)
        name = write_lab(folder, args.links, random.randint(5000, 5999))
        compose_file = str(folder / "docker-compose.yml")
        sh("ip", "link", "add", dummy, "type", "veth", "peer", "name", f"{dummy}b")  # this kernel has no dummy
        try:
            sh("ip", "addr", "add", f"{UNDERLAY}/32", "dev", dummy)
            sh("ip", "link", "set", dummy, "up")
            core = Lab(Compose(ComposeOptions(files=(compose_file,), project_name=name)))
            topo = core.load()
            if topo.this_host != "h1" or len(topo.tunnels) != args.links:
                raise SystemExit(f"the view from h1 has {len(topo.tunnels)} VXLAN ends, not {args.links}")
            sh("docker", "compose", "-f", compose_file, "up", "-d", "s1", "s2")
            core.link(topo, set(topo.services))
            _, _, _, running = core._running(topo)

            def converge() -> int:
                with core.store.locked() as state:
                    targets = core._targets(topo, state, running)
                    scope = core._scope(topo, state, targets, set(topo.services))
                    done = wiring.converge_lab(topo, scope, targets, state.project(topo.project), state.save)
                return len(done.done)

            times: dict[str, list[float]] = {"veth": [], "vxlan": []}
            commands: dict[str, int] = {}
            for kind in ["veth", "vxlan", "vxlan", "veth"] * ((args.rounds + 1) // 2):
                delete_pairs(f"{name}-s1", "a" if kind == "veth" else "x", args.links)
                start = time.perf_counter()
                commands[kind] = converge()
                times[kind].append(time.perf_counter() - start)
        finally:
            subprocess.run(
                ["docker", "compose", "-f", compose_file, "-p", name, "down", "-t", "0"],
                capture_output=True,
                check=False,
            )
            subprocess.run(
                [sys.executable, "-m", "composens", "-f", compose_file, "-p", name, "--host", "h1", "netns", "prune"],
                capture_output=True,
                check=False,
            )
            subprocess.run(["ip", "link", "del", dummy], capture_output=True, check=False)
    veth, vxlan = statistics.median(times["veth"]), statistics.median(times["vxlan"])
    print(f"making {args.links} ends of s1 again, in process ({len(times['veth'])} rounds each):")
    print(f"  veth pairs to s2 (same host): {veth:.3f} s ({commands['veth']} commands)")
    print(f"  VXLAN ends to s3 (other host): {vxlan:.3f} s ({commands['vxlan']} commands): ratio {vxlan / veth:.2f}")
    print(
        f"  rounds: veth {sorted(round(t, 3) for t in times['veth'])}, "
        f"vxlan {sorted(round(t, 3) for t in times['vxlan'])}"
    )


if __name__ == "__main__":
    main()
