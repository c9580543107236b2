"""What to capture: targets as the lab names them, and the flight recorder's settings (`x-composens.capture`).

Pure. A target is `SERVICE:IFNAME` (a declared end of a link or a LAN, on a service or `host`), a LAN's name
(its whole segment: the bridge in the hub), or every interface of the lab on this host (`all`). Each becomes a
CaptureTarget that says which namespace (a service, the host, the hub), which interface there, and how a
capture file describes it (`r1:eth1 -> r2:eth1`).

    x-composens:
      capture:                 # the flight recorder of `composens test` and `scenario run`
        targets: [r1:eth1, lan1]    # or: all
        keep: 10s              # the last seconds kept in memory (a number is seconds; ms, s, m)
        memory: 64MiB          # at most this much memory for them (bytes, or KiB, MiB, GiB)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from composens.model.errors import ConfigError
from composens.model.topology import EXTENSION, HOST, HUB, Endpoint, Topology

ALL = "all"
RECORDER_KEYS = ("targets", "keep", "memory")
DEFAULT_KEEP_S = 10.0
MAX_KEEP_S = 3600.0
DEFAULT_MEMORY = 64 * 1024 * 1024
MIN_MEMORY = 1024 * 1024
MAX_MEMORY = 16 * 1024**3
AFTER_S = 2.0  # a failure's window goes on this long after it, so the replies that never came are seen missing

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_SIZE = re.compile(r"(\d+)(KiB|MiB|GiB)?")
_SIZE_BYTES = {None: 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


@dataclass(frozen=True)
class CaptureTarget:
    """One capture point: its name in the lab, the node whose namespace holds it, its interface there."""

    name: str  # `r1:eth1`, `host:lab-uplink`, or a LAN's name
    node: str  # a service, HOST, or HUB (a LAN's bridge)
    ifname: str
    description: str  # what it faces: `r1:eth1 -> r2:eth1`, `lan1: r1:eth1 r2:eth1 r3:eth1`


@dataclass(frozen=True)
class RecorderSettings:
    """x-composens.capture: what the flight recorder captures and how much of it it keeps."""

    targets: tuple[str, ...] | None  # None: every interface of the lab on this host
    keep_s: float = DEFAULT_KEEP_S
    memory: int = DEFAULT_MEMORY

    @property
    def keep_ns(self) -> int:
        return round(self.keep_s * 1_000_000_000)


def all_targets(topo: Topology) -> tuple[CaptureTarget, ...]:
    """Every interface of the lab on this host, each once: link ends, LAN members and segments, VXLAN ends."""
    found: dict[str, CaptureTarget] = {}
    for link in topo.links:
        for end in (link.a, link.b):
            found.setdefault(str(end), _end_target(topo, end))
    for lan in topo.lans:
        for member in lan.members:
            found.setdefault(str(member), _end_target(topo, member))
        found.setdefault(lan.name, _lan_target(topo, lan.name))
    for tunnel in topo.tunnels:
        if tunnel.lan is None:
            found.setdefault(str(tunnel.end), _end_target(topo, tunnel.end))
    return tuple(found.values())


def resolve(topo: Topology, names: Sequence[str]) -> tuple[CaptureTarget, ...]:
    """Turn target names into capture targets, each once, in the order given; an unknown one is an error."""
    found: dict[str, CaptureTarget] = {}
    for text in names:
        problem = target_problem(topo, text)
        if problem is not None:
            raise ConfigError(f"{topo.source}: capture target {text!r}: {problem}")
        target = _lan_target(topo, text) if ":" not in text else _end_target(topo, _endpoint(text))
        found.setdefault(target.name, target)
    return tuple(found.values())


def target_problem(topo: Topology, text: str) -> str | None:
    """Say what is wrong with a target name for this lab (None: it names an interface here)."""
    if ":" not in text:
        if any(lan.name == text for lan in topo.lans):
            return None
        lans = ", ".join(lan.name for lan in topo.lans)
        return f"no such LAN (expected SERVICE:IFNAME or a LAN's name{': ' + lans if lans else ''})"
    end = _endpoint(text)
    if end.node not in topo.services and end.node != HOST:
        placed = topo.hosts.placement if topo.hosts is not None else {}
        if end.node in placed:
            here = topo.this_host
            return f"{end.node} is placed on host {placed[end.node]}, not on this host ({here}): capture it there"
        return f"no such service: {end.node!r}"
    if end.ifname not in topo.interfaces_of(end.node):
        declared = ", ".join(topo.interfaces_of(end.node)) or "none"
        return f"{end.node} has no interface {end.ifname!r} of a link or LAN (it has: {declared})"
    return None


def _endpoint(text: str) -> Endpoint:
    node, _, ifname = text.partition(":")
    return Endpoint(node, ifname)


def _end_target(topo: Topology, end: Endpoint) -> CaptureTarget:
    return CaptureTarget(str(end), end.node, end.ifname, f"{end} -> {_faces(topo, end)}")


def _lan_target(topo: Topology, name: str) -> CaptureTarget:
    lan = next(lan for lan in topo.lans if lan.name == name)
    tunnel = next((t for t in topo.tunnels if t.lan == name), None)
    members = " ".join(str(m) for m in lan.members)
    elsewhere = f" and members on {', '.join(h.name for h in tunnel.remotes)}" if tunnel is not None else ""
    return CaptureTarget(name, HUB, name, f"{name}: {members}{elsewhere}")


def _faces(topo: Topology, end: Endpoint) -> str:
    """What is at the other end of an end's wire: its peer, its LAN, or a far host's end."""
    for link in topo.links:
        if end in (link.a, link.b):
            return str(link.b if end == link.a else link.a)
    for lan in topo.lans:
        if end in lan.members:
            return lan.name
    tunnel = next(t for t in topo.tunnels if t.end == end)
    return f"{tunnel.peer} (vxlan {tunnel.vni} to {tunnel.remotes[0].name})"


# --------------------------------------------------------------------------- the recorder's settings


def parse_recorder(value: Any, topo: Topology) -> RecorderSettings:
    """Validate `x-composens.capture` against the project's declared interfaces."""
    where = f"{topo.source}: {EXTENSION}.capture"
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping with targets (a list, or all) and keep")
    for key in value:
        if key not in RECORDER_KEYS:
            raise ConfigError(f"{where}.{key!s}: unknown key (expected one of: {', '.join(RECORDER_KEYS)})")
    if "targets" not in value:
        raise ConfigError(f"{where}: targets is missing (a list of SERVICE:IFNAME and LAN names, or all)")
    targets = _targets(value["targets"], topo, f"{where}.targets")
    keep = _duration(value.get("keep", DEFAULT_KEEP_S), f"{where}.keep")
    memory = _size(value.get("memory", DEFAULT_MEMORY), f"{where}.memory")
    return RecorderSettings(targets, keep, memory)


def _targets(value: Any, topo: Topology, where: str) -> tuple[str, ...] | None:
    if value == ALL:
        return None
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: must be all, or a list of SERVICE:IFNAME and LAN names")
    seen: set[str] = set()
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise ConfigError(f"{where}[{i}]: {text!r} is not a name; write SERVICE:IFNAME or a LAN's name")
        problem = target_problem(topo, text)
        if problem is not None:
            raise ConfigError(f"{where}[{i}]: {text!r}: {problem}")
        if text in seen:
            raise ConfigError(f"{where}[{i}]: {text!r} is named twice")
        seen.add(text)
    return tuple(value)


def parse_duration(value: Any, *, limit: float | None = None) -> float:
    """Read a duration: a number of seconds, or a number with ms, s or m (`10s`, `500ms`, `2m`); ValueError if not."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match[1]) * _DURATION_SECONDS[match[2]]
    elif isinstance(value, str) and re.fullmatch(r"\d+(?:\.\d+)?", value.strip()):
        seconds = float(value)
    if seconds is None or seconds <= 0 or (limit is not None and seconds > limit):
        at_most = " and at most 1 hour" if limit == MAX_KEEP_S else ""
        raise ValueError(f"{value!r} is not a duration above 0{at_most} (e.g. 10s, 500ms, 2m)")
    return seconds


def _duration(value: Any, where: str) -> float:
    try:
        return parse_duration(value, limit=MAX_KEEP_S)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def _size(value: Any, where: str) -> int:
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        size = int(match[1]) * _SIZE_BYTES[match[2]]
    if size is None or not MIN_MEMORY <= size <= MAX_MEMORY:
        raise ConfigError(f"{where}: {value!r} is not a size from 1MiB to 16GiB (bytes, or KiB, MiB, GiB)")
    return size


def recorder_targets(topo: Topology, settings: RecorderSettings) -> tuple[CaptureTarget, ...]:
    """The recorder's targets on this host: all of them, or those named that are here."""
    if settings.targets is None:
        return all_targets(topo)
    return resolve(topo, [t for t in settings.targets if target_problem(topo, t) is None])
