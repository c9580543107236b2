"""containerlab's node `exec` lines, read as composens' declared state where they are plain `ip` configuration.

containerlab runs a node's lines in order once its container has started and the node's own link ends exist,
each split into words by shlex and run with no shell, as root; a line that fails is logged and the next one runs
(core/clab.go scheduleNodes, nodes/default_node.go RunExecFromConfig, exec/exec.go). composens sets declared
addresses and routes from outside the container before it runs any command, so:

- `ip address add A/P dev IF` and `ip route add DEST via GW [dev IF] [metric N]` (also `ip addr`, `ip a`, `ip r`,
  `-4`/`-6`) become `addresses` and `routes`, for declared interfaces and gateways on a declared subnet;
- `ip link set [dev] IF up` of a declared interface is dropped: composens sets every declared end up;
- a default route of a family the node's management network gives it a default route of stays a command, in
  its place, and so does an `ip route del default` before it: docker's route is the container's, and the lines
  replace it in the container as they do under containerlab (a declared one would meet docker's, a conflict);
  a lone `ip route add default` then fails as it fails under containerlab, and the import says so;
- `ip route del default` on a node with no management network has nothing to delete, and is dropped;
- every other line is a command, in order.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from composens.interop.clab.keys import PLAIN_WORD
from composens.model import topology

ADDRESS, ROUTE, COMMAND, DROPPED = "address", "route", "command", "dropped"
_DEFAULTS = ("default", "0.0.0.0/0", "::/0")
DOCKER_METRIC = {4: 0, 6: 1024}  # the metric of the default route docker gives a container, per family


@dataclass
class Placed:
    """Where each of a node's exec lines went."""

    addresses: dict[str, list[str]] = field(default_factory=dict)  # by interface, in order
    routes: list[topology.Route] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # the lines kept as commands, as written
    kinds: list[str] = field(default_factory=list)  # per line: ADDRESS, ROUTE, COMMAND or DROPPED
    notes: list[str] = field(default_factory=list)  # one line each, without the node's name

    @property
    def reordered(self) -> bool:
        """Whether a command comes before an address or route line: composens sets those before any command."""
        state = [i for i, kind in enumerate(self.kinds) if kind in (ADDRESS, ROUTE)]
        commands = [i for i, kind in enumerate(self.kinds) if kind == COMMAND]
        return bool(state and commands) and commands[0] < state[-1]


def place(
    lines: Sequence[str],
    declared: Iterable[str],
    addresses: Iterable[str],
    default_families: frozenset[int],
) -> Placed:
    """Place a node's exec lines: `declared` are its interfaces, `addresses` those it has besides its lines (from
    link `ipv4`/`ipv6`), `default_families` the families its management network gives it a default route of."""
    interfaces = set(declared)
    placed = Placed()
    words = [split(line) for line in lines]
    kinds: list[str | None] = [None] * len(lines)
    for i, line_words in enumerate(words):
        address = _address_line(line_words)
        if address and address[0] in interfaces:
            placed.addresses.setdefault(address[0], []).append(address[1])
            kinds[i] = ADDRESS
        elif _link_up_line(line_words) in interfaces:
            kinds[i] = DROPPED
    known = [*addresses, *(a for found in placed.addresses.values() for a in found)]
    subnets = [ipaddress.ip_interface(a).network for a in known if _is_address(a)]
    keys: set[tuple[int, str, int]] = set()
    deleted: set[int] = set()  # families whose default route an earlier line deletes
    for i, line_words in enumerate(words):
        if kinds[i] is not None:
            continue
        kinds[i] = COMMAND
        family = _deleted_default(line_words)
        if family is not None:
            if family in default_families:
                deleted.add(family)
            else:
                kinds[i] = DROPPED
                placed.notes.append(
                    f"exec: {lines[i]!r}: the node has no management network, so no default "
                    "route to delete; not carried"
                )
            continue
        route = _route_line(line_words, interfaces, subnets)
        if route is None or route.key in keys:
            continue
        if route.family in default_families and route.key == (route.family, "default", DOCKER_METRIC[route.family]):
            if route.family not in deleted:
                placed.notes.append(
                    f"exec: {lines[i]!r}: stays a command, which fails (File exists) as it does under containerlab: "
                    "the management network gives the node docker's default route; `ip route del default` before "
                    "it replaces that route"
                )
            continue
        keys.add(route.key)
        placed.routes.append(route)
        kinds[i] = ROUTE
    placed.kinds = [k or COMMAND for k in kinds]
    placed.commands = [line for line, kind in zip(lines, placed.kinds, strict=True) if kind == COMMAND]
    return placed


def split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return []


def command(line: str) -> str | list[str]:
    """A containerlab exec line as a composens command that runs the same argv: a string when `sh -c` would split
    it into the same words, the words otherwise; `sh -c 'X'` becomes X."""
    words = split(line)
    if len(words) == 3 and words[:2] == ["sh", "-c"]:
        return words[2]
    if words and all(PLAIN_WORD.fullmatch(w) for w in words):
        return " ".join(words)
    return words or line


def _ip_words(words: list[str]) -> tuple[list[str], int | None]:
    """The words of an `ip` command after `ip` and a family option, and that family; [] for anything else."""
    if not words or words[0] != "ip":
        return [], None
    rest = words[1:]
    family = None
    while rest and rest[0] in ("-4", "-6"):
        family = int(rest[0][1])
        rest = rest[1:]
    return rest, family


def _address_line(words: list[str]) -> tuple[str, str] | None:
    rest, _ = _ip_words(words)
    if len(rest) != 5 or rest[0] not in ("a", "addr", "address") or rest[1] not in ("a", "add") or rest[3] != "dev":
        return None
    if _is_address(rest[2]) and "/" in rest[2]:
        return rest[4], str(ipaddress.ip_interface(rest[2]))
    return None


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return "%" not in text


def _link_up_line(words: list[str]) -> str | None:
    rest, _ = _ip_words(words)
    if rest[:2] in (["l", "set"], ["link", "set"]):
        target = rest[2:]
        if target[:1] == ["dev"]:
            target = target[1:]
        if len(target) == 2 and target[1] == "up":
            return target[0]
    return None


def _deleted_default(words: list[str]) -> int | None:
    """The family of the default route an `ip route del default ...` line deletes; None for any other line."""
    rest, family = _ip_words(words)
    if len(rest) < 3 or rest[0] not in ("r", "ro", "route") or rest[1] not in ("d", "del", "delete"):
        return None
    if rest[2] not in _DEFAULTS:
        return None
    if rest[2] == "::/0" or family == 6:
        return 6
    via = rest[rest.index("via") + 1] if "via" in rest[:-1] else ""
    return 6 if ":" in via else 4


def _route_line(
    words: list[str], declared: set[str], subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> topology.Route | None:
    rest, _ = _ip_words(words)
    if len(rest) < 2 or rest[0] not in ("r", "ro", "route") or rest[1] not in ("a", "add"):
        return None
    try:
        route = topology.parse_route(" ".join(rest[2:]))
    except ValueError:
        return None
    if route.dev is not None and route.dev not in declared:
        return None
    gateway = ipaddress.ip_address(route.gateway)
    on_link = any(gateway in net for net in subnets) or (gateway.is_link_local and route.dev is not None)
    return route if on_link else None
