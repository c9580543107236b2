"""Packet capture on a lab interface: tcpdump, run in the interface's namespace, becomes composens' process.

composens only says where to capture (the lab checks that the entry reaches the service's namespace
now); tcpdump itself writes pcap to a file, or to stdout when stdout is not a terminal (so
`composens capture r1:eth1 | wireshark -k -i -` works), or readable lines on a terminal. Its
process replaces composens', so Ctrl-C, its summary and its exit code are tcpdump's own.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from composens.model.errors import ComposensError

INSTALL_HINT = "tcpdump is not installed: apt-get install tcpdump (scripts/bootstrap.sh does it)"


def tcpdump_argv(
    netns: str, ifname: str, *, write: str | None, count: int | None, extra: Sequence[str], to_terminal: bool
) -> list[str]:
    """The command that captures on `ifname` in `netns`: pcap to a file or a pipe, lines on a terminal."""
    argv = ["ip", "netns", "exec", netns, "tcpdump", "-i", ifname, "-n"]
    if count is not None:
        argv += ["-c", str(count)]
    if write is not None:
        argv += ["-w", write]
    elif not to_terminal:
        argv += ["-U", "-w", "-"]  # packet by packet, so a reader on the pipe sees each at once
    return [*argv, *extra]


def run(argv: list[str]) -> NoReturn:
    """Become the capture."""
    if shutil.which("tcpdump") is None:
        raise ComposensError(INSTALL_HINT)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)
