"""The names composens writes down: one rule each, used when parsing a file and when reading the record back.

A name the parser accepts must be one the record's reader accepts, or a lab could be brought up that every
later command refuses to read (exit 8). So both sides ask these functions.
"""

from __future__ import annotations

import re

NETNS_NAME_MAX = 64
IFNAMSIZ = 16  # the kernel's limit includes the trailing NUL: 15 bytes

# Compose allows `[a-zA-Z0-9._-]+`; composens also passes service names to `docker compose` as arguments, so
# one starting with '-' would be read as an option.
SERVICE = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
HUB_NODE = "@hub"  # '@' is not allowed in a compose service name, so no service can be the hub
# Compose's own rule for project names.
PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]*")
NETNS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Letters, digits and `_ . - @ +`, not starting with '-': nothing a shell, `ip -batch` (quotes, '#', '\') or the
# kernel (which counts bytes) reads differently from what is printed.
IFNAME = re.compile(r"[A-Za-z0-9_.@+][A-Za-z0-9_.@+-]*")


def valid_service(name: object) -> bool:
    return isinstance(name, str) and SERVICE.fullmatch(name) is not None


def valid_node(name: object) -> bool:
    """A node of the record: a service, the host ('host' is a valid service name too) or the hub."""
    return name == HUB_NODE or valid_service(name)


def valid_project(name: object) -> bool:
    return isinstance(name, str) and PROJECT.fullmatch(name) is not None


def valid_netns_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= NETNS_NAME_MAX and NETNS.fullmatch(name) is not None


def valid_ifname(name: object) -> bool:
    return (
        isinstance(name, str)
        and IFNAME.fullmatch(name) is not None
        and len(name.encode()) < IFNAMSIZ
        and name not in (".", "..")
    )
