"""Throughput over a cross-host VXLAN link beside a local veth link, on the simulated pair of hosts.

    sudo .venv/bin/python bench/throughput.py --seconds 5

Host 2 is tests/integration/twohost.py's (its own netns, /run, /var/lib/docker and dockerd, joined to this
machine by an underlay veth). r1 (host 1) has a VXLAN link to r2 (host 2) and a veth link to r3 (host 1);
iperf3 (Debian's, run in the namespaces with `ip netns exec`) measures TCP from r1 to each. Both paths
are one kernel here: the figure is the encapsulation's cost, not a network's. Needs root, the engine and
iperf3; everything is removed at the end, also after a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.twohost import HOST1_UNDERLAY, HOST2_UNDERLAY, second_host  # noqa: E402

IMAGE = "busybox:1.36"


def lab_text(name: str) -> str:
    service = "    image: {image}\n    command: sleep 3600\n    network_mode: none\n    x-composens: {{{spec}}}\n"
    return (
        f"name: {name}\nx-composens:\n  netns_prefix: {name}-\n"
        f"  hosts: {{h1: {{underlay: {HOST1_UNDERLAY}}}, h2: {{underlay: {HOST2_UNDERLAY}}}}}\n"
        "  vxlan: {port: 4791}\n"
        "  links:\n    - endpoints: [r1:eth1, r2:eth1]\n    - endpoints: [r1:eth2, r3:eth2]\n"
        "services:\n"
        + "  r1:\n"
        + service.format(image=IMAGE, spec="host: h1, addresses: {eth1: [198.19.1.1/30], eth2: [198.19.2.1/30]}")
        + "  r2:\n" + service.format(image=IMAGE, spec="host: h2, addresses: {eth1: [198.19.1.2/30]}")
        + "  r3:\n" + service.format(image=IMAGE, spec="host: h1, addresses: {eth2: [198.19.2.2/30]}")
    )  # fmt: skip


def iperf(client: list[str], server: list[str], address: str, seconds: int) -> float:
    """Bits per second from the client to the server (one TCP stream)."""
    daemon = subprocess.Popen([*server, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = subprocess.run(
            [*client, "iperf3", "-c", address, "-t", str(seconds), "-J"], capture_output=True, text=True, check=True
        ).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
    finally:
        daemon.kill()
        daemon.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    name = f"cntp{uuid.uuid4().hex[:6]}"
    composens = [sys.executable, "-m", "composens", "-p", name]
    with tempfile.TemporaryDirectory(prefix="composens-throughput-") as tmp, second_host((IMAGE,)) as host2:
        folder = Path(tmp)
        (folder / "docker-compose.yml").write_text(lab_text(name))
        env = os.environ  # host 2's runs inherit it too: this checkout's composens on both hosts
        env["PYTHONPATH"] = str(REPO)
        try:
            subprocess.run([*composens, "up", "-d"], cwd=folder, env=env, check=True, capture_output=True)
            host2.composens(name, folder, "up", "-d")
            in1 = ["ip", "netns", "exec", f"{name}-r1"]
            vxlan = iperf(in1, host2.enter("ip", "netns", "exec", f"{name}-r2"), "198.19.1.2", args.seconds)
            veth = iperf(in1, ["ip", "netns", "exec", f"{name}-r3"], "198.19.2.2", args.seconds)
        finally:
            host2.composens(name, folder, "down", "-t", "0", check=False)
            subprocess.run([*composens, "down", "-t", "0"], cwd=folder, env=env, capture_output=True, check=False)
    print(f"TCP, one stream, {args.seconds} s each, r1 to:")
    print(f"  r3 over a local veth:           {veth / 1e9:.2f} Gbit/s")
    print(f"  r2 over VXLAN (MTU 1450):       {vxlan / 1e9:.2f} Gbit/s ({vxlan / veth:.0%} of the veth's)")


if __name__ == "__main__":
    main()
