"""composens.system.kernel.netlink's parser against pyroute2's low-level one, on the same recorded dumps. Needs root.

    flock /tmp/composens-engine.lock .venv/bin/python bench/netlink_parsers.py

Makes one namespace shaped like a ring member (lo and two veths, each up with a /30, IPv6 link-local
addresses, a route through each), records the kernel's answers to the three dump requests, then
decodes them with each parser (median of 200) and times each import in a fresh interpreter
(median of 10, less `python -c pass`). Also times a whole read (socket in the namespace, three dumps,
parse) of that namespace. pyroute2 is not a dependency: `pip install pyroute2` for this script.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

from composens.system.kernel import netlink


def median_ms(rounds: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def import_ms(module: str) -> float:
    def start(code: str) -> float:
        return median_ms(10, lambda: subprocess.run([sys.executable, "-c", code], check=True))

    return start(f"import {module}") - start("pass")


def record(sock: socket.socket, kind: int, body: bytes) -> list[bytes]:
    """The raw buffers the kernel answers one dump with, up to and including NLMSG_DONE."""
    sock.send(netlink.NLMSG.pack(netlink.NLMSG.size + len(body), kind, 0x301, 1, 0) + body)
    buffers = []
    while True:
        data = sock.recv(netlink.RECEIVE)
        buffers.append(data)
        if netlink.NLMSG.unpack_from(data, len(data) - 20)[1] == netlink.NLMSG_DONE:
            return buffers


def payloads(buffers: list[bytes]) -> list[bytes]:
    found = []
    for data in buffers:
        offset = 0
        while offset < len(data):
            length, kind = netlink.NLMSG.unpack_from(data, offset)[:2]
            if kind >= 16:
                found.append(data[offset + 16 : offset + length])
            offset += (length + 3) & ~3
    return found


def main() -> None:
    name = f"cnparse{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        lines = (
            "link add r0a type veth peer name r0x\nlink add r1b type veth peer name r1x\n"
            "link set lo up\nlink set r0a up\nlink set r1b up\nlink set r0x up\nlink set r1x up\n"
            "addr add 198.18.0.1/30 dev r0a\naddr add 198.18.0.6/30 dev r1b\n"
            "route add 198.19.0.0/24 via 198.18.0.2\nroute add 198.19.1.0/24 via 198.18.0.5\n"
        )
        subprocess.run(["ip", "-n", name, "-batch", "-"], input=lines, text=True, check=True)
        time.sleep(0.1)  # the link-local addresses
        fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        try:
            with netlink.open_socket(fd) as sock:
                links = record(sock, netlink.RTM_GETLINK, netlink.IFINFOMSG.pack(0, 0, 0, 0, 0))
                addresses = record(sock, netlink.RTM_GETADDR, netlink.IFADDRMSG.pack(0, 0, 0, 0, 0))
                routes = record(sock, netlink.RTM_GETROUTE, netlink.RTMSG.pack(0, 0, 0, 0, 0, 0, 0, 0, 0))
            whole = median_ms(200, lambda: netlink.read_fd(fd))
        finally:
            os.close(fd)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    dumps = (payloads(links), payloads(addresses), payloads(routes))
    count = sum(len(d) for d in dumps)
    size = sum(len(b) for b in links + addresses + routes)
    print(f"one namespace: {count} messages, {size} bytes")
    ours = median_ms(200, lambda: netlink.parse(*dumps))
    print(f"netlink.parse: {ours:.3f} ms; a whole read (thread, socket, dumps, parse) {whole:.3f} ms")
    try:
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl
    except ImportError:
        print("pyroute2 is not installed: pip install pyroute2 to compare")
        return
    marshal = MarshalRtnl()

    def theirs() -> None:
        for data in links + addresses + routes:
            for message in marshal.parse(data):
                if "attrs" in message:  # NLMSG_DONE has none
                    message.get_attr("IFLA_IFNAME")

    print(f"pyroute2 MarshalRtnl.parse: {median_ms(200, theirs):.3f} ms")
    print(f"import composens.system.kernel.netlink: {import_ms('composens.system.kernel.netlink'):.1f} ms")
    print(f"import pyroute2.netlink.rtnl.marshal: {import_ms('pyroute2.netlink.rtnl.marshal'):.1f} ms")
    print(f"import pyroute2 (IPRoute): {import_ms('pyroute2; pyroute2.IPRoute'):.1f} ms")


if __name__ == "__main__":
    main()
