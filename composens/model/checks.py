"""Checks declared in `x-composens.checks`: the model, its validation and the verdicts.

Everything here is pure: parse_checks reads the list the compose file gives and returns frozen
dataclasses; evaluate_ping and evaluate_exec turn what a probe saw into a verdict, and CheckResult holds it.
composens/system/run/probe.py runs the checks.
"""

from __future__ import annotations

import ipaddress
import math
import re
import shlex
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from composens.model.errors import ConfigError
from composens.model.topology import EXTENSION, Topology

CHECK_KEYS = ("name", "ping", "exec", "stdout_contains", "stdout_matches", "exit_code", "wait")
PING_KEYS = ("from", "to", "count", "timeout", "expect")
EXEC_KEYS = ("service", "command", "timeout")
EXEC_ONLY_KEYS = ("stdout_contains", "stdout_matches", "exit_code")

PING_COUNT = 3
PING_COUNT_MAX = 1000
PING_TIMEOUT = 1.0  # seconds to wait for each reply, as `ping -W`
EXEC_TIMEOUT = 10.0
TAIL_LINES = 2
TAIL_CHARS = 160

Expect = Literal["success", "failure"]
_PLAIN_KEY = re.compile(r"[\w.:@+-]+")


@dataclass(frozen=True)
class Ping:
    """Echo requests from a service's own network namespace."""

    service: str  # `from` in the file
    to: str  # an IP address, normalised
    count: int = PING_COUNT
    timeout: float = PING_TIMEOUT
    expect: Expect = "success"
    kind: ClassVar[str] = "ping"


@dataclass(frozen=True)
class Exec:
    """A command run inside a service's container, and what its result must be."""

    service: str
    command: tuple[str, ...]  # argv; a string in the file becomes ("sh", "-c", string)
    timeout: float = EXEC_TIMEOUT
    exit_code: int = 0
    stdout_contains: str | None = None
    stdout_matches: str | None = None  # a regular expression, searched with re.MULTILINE
    kind: ClassVar[str] = "exec"


@dataclass(frozen=True)
class Check:
    name: str
    probe: Ping | Exec
    wait: float | None = None  # retry until it passes or this many seconds pass; None: one try

    @property
    def service(self) -> str:
        return self.probe.service

    @property
    def kind(self) -> str:
        return self.probe.kind


# --------------------------------------------------------------------------- parsing


class _At:
    """Builds `file: x-composens.checks[i] (name): key.path: message` errors."""

    def __init__(self, check: str, path: str = "") -> None:
        self.check = check
        self.path = path

    def at(self, key: object) -> _At:
        # A key with odd characters (a newline, say) is quoted so the message stays one line.
        name = str(key) if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else repr(key)
        return _At(self.check, f"{self.path}.{name}" if self.path else name)

    def item(self, index: int) -> _At:
        return _At(self.check, f"{self.path}[{index}]")

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.check}: {self.path}: {message}" if self.path else f"{self.check}: {message}")


def parse_checks(value: Any, topo: Topology) -> tuple[Check, ...]:
    """Validate the `x-composens.checks` list against the project's services."""
    where = f"{topo.source}: {EXTENSION}.checks"
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list of checks")
    checks: list[Check] = []
    first_index: dict[str, int] = {}
    for i, raw in enumerate(value):
        check = _parse_check(raw, topo, f"{where}[{i}]")
        if check.name in first_index:
            first = first_index[check.name]
            at = _At(f"{where}[{i}] ({check.name})", "name")
            raise at.error(f"{check.name!r} is already the name of checks[{first}]; give one of them another name")
        first_index[check.name] = i
        checks.append(check)
    return tuple(checks)


def _parse_check(raw: Any, topo: Topology, label: str) -> Check:
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: must be a mapping with a name and a ping or an exec")
    name = _name(raw.get("name"), _At(label, "name")) if "name" in raw else None
    where = _At(f"{label} ({name})" if name else label)
    for key in raw:
        if key not in CHECK_KEYS:
            raise where.at(key).error(f"unknown key (expected one of: {', '.join(CHECK_KEYS)})")
    if ("ping" in raw) == ("exec" in raw):
        raise where.error("has both ping and exec; make it two checks" if "ping" in raw else "needs a ping or an exec")
    probe: Ping | Exec
    if "ping" in raw:
        for key in EXEC_ONLY_KEYS:
            if key in raw:
                raise where.at(key).error("only an exec check has this key")
        probe = _parse_ping(raw["ping"], topo, where.at("ping"))
    else:
        probe = _parse_exec(raw, topo, where)
    wait = _seconds(raw["wait"], where.at("wait")) if "wait" in raw else None
    return Check(name or _default_name(probe), probe, wait)


def _name(value: Any, where: _At) -> str:
    if not isinstance(value, str):
        raise where.error(f"{value!r} is not a string; quote it")
    if not value.strip():
        raise where.error("must not be empty")
    if not value.isprintable():
        raise where.error(f"{value!r} must be one line of printable text")
    return value


def _default_name(probe: Ping | Exec) -> str:
    if isinstance(probe, Ping):
        return f"{probe.service}: ping {probe.to}"
    shown = probe.command[2] if probe.command[:2] == ("sh", "-c") else shlex.join(probe.command)
    return f"{probe.service}: {shown}"


def _mapping(value: Any, where: _At, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.error(f"must be a mapping with the keys {', '.join(allowed)}")
    for key in value:
        if key not in allowed:
            raise where.at(key).error(f"unknown key (expected one of: {', '.join(allowed)})")
    return value


def _parse_ping(value: Any, topo: Topology, where: _At) -> Ping:
    spec = _mapping(value, where, PING_KEYS)
    for key in ("from", "to"):
        if key not in spec:
            raise where.error(f"needs '{key}'")
    service = _service(spec["from"], topo, where.at("from"), own_netns=True)
    expect = spec.get("expect", "success")
    if expect not in ("success", "failure"):
        raise where.at("expect").error(f"{expect!r} is neither success nor failure")
    return Ping(
        service=service,
        to=global_address(spec["to"], where.at("to"), users="checks", verb="ping"),
        count=_count(spec["count"], where.at("count")) if "count" in spec else PING_COUNT,
        timeout=_seconds(spec["timeout"], where.at("timeout")) if "timeout" in spec else PING_TIMEOUT,
        expect=expect,
    )


def _parse_exec(raw: dict[str, Any], topo: Topology, where: _At) -> Exec:
    spec = _mapping(raw["exec"], where.at("exec"), EXEC_KEYS)
    for key in ("service", "command"):
        if key not in spec:
            raise where.at("exec").error(f"needs '{key}'")
    exit_code = raw.get("exit_code", 0)
    if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not 0 <= exit_code <= 255:
        raise where.at("exit_code").error(f"{exit_code!r} is not an exit code (a whole number from 0 to 255)")
    return Exec(
        service=_service(spec["service"], topo, where.at("exec").at("service"), own_netns=False),
        command=_command(spec["command"], where.at("exec").at("command")),
        timeout=_seconds(spec["timeout"], where.at("exec").at("timeout")) if "timeout" in spec else EXEC_TIMEOUT,
        exit_code=exit_code,
        stdout_contains=_text(raw["stdout_contains"], where.at("stdout_contains"))
        if "stdout_contains" in raw
        else None,
        stdout_matches=_pattern(raw["stdout_matches"], where.at("stdout_matches")) if "stdout_matches" in raw else None,
    )


def _service(value: Any, topo: Topology, where: _At, *, own_netns: bool) -> str:
    if not isinstance(value, str) or value not in topo.services:
        raise where.error(f"unknown service {value!r}")
    node = topo.services[value]
    if own_netns and not node.has_own_netns:
        mode = node.network_mode
        hint = f"; ping from {mode.split(':', 1)[1]}, whose namespace it shares" if mode.startswith("service:") else ""
        raise where.error(f"service {value} has no network namespace of its own (network_mode: {mode}){hint}")
    if node.replicas > 1:
        raise where.error(f"service {value} is scaled to {node.replicas}; a check needs exactly one container")
    return value


class _Located(Protocol):
    """Where a value sits in the file: makes the one-line error that names it."""

    def error(self, message: str) -> ConfigError: ...


def global_address(value: Any, where: _Located, *, users: str, verb: str) -> str:
    """An address a check or a probe sends to from a namespace: IPv4 or IPv6, global (no scope, not link-local)."""
    text = str(value)
    if "%" in text:
        raise where.error(f"{value!r} has a scope id, which {users} do not support; {verb} a global address")
    try:
        address = ipaddress.ip_address(text)  # a YAML number becomes digits, never a packed integer
    except ValueError:
        raise where.error(f"{value!r} is not an IP address") from None
    if address.version == 6 and address.is_link_local:
        raise where.error(f"{value!r} is link-local, which needs an interface; {verb} a global address")
    return str(address)


def _count(value: Any, where: _At) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= PING_COUNT_MAX:
        raise where.error(f"{value!r} is not a count (a whole number from 1 to {PING_COUNT_MAX})")
    return value


def _seconds(value: Any, where: _At) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise where.error(f"{value!r} is not a number of seconds above 0")
    return float(value)


def _command(value: Any, where: _At) -> tuple[str, ...]:
    if isinstance(value, str):
        if not value.strip():
            raise where.error("must not be empty")
        if "\0" in value:
            raise where.error("must not contain a NUL character")
        return ("sh", "-c", value)
    if not isinstance(value, list):
        raise where.error("must be a list of strings (run as they are) or a string (run by sh -c)")
    if not value:
        raise where.error("must not be empty")
    for i, word in enumerate(value):
        if not isinstance(word, str):
            raise where.item(i).error(f"{word!r} is not a string; quote it")
        if "\0" in word:
            raise where.item(i).error("must not contain a NUL character")
    if not value[0]:
        raise where.item(0).error("the program name must not be empty")
    return tuple(value)


def _text(value: Any, where: _At) -> str:
    if not isinstance(value, str):
        raise where.error(f"{value!r} is not a string; quote it")
    if not value:
        raise where.error("must not be empty (it would match any output)")
    return value


def _pattern(value: Any, where: _At) -> str:
    text = _text(value, where)
    try:
        re.compile(text, re.MULTILINE)
    except re.error as e:
        raise where.error(f"{text!r} is not a regular expression: {e}") from None
    return text


# --------------------------------------------------------------------------- verdicts


def evaluate_ping(ping: Ping, replies: int, problem: str | None = None) -> str | None:
    """Judge a ping by its replies, as ping(8) does: None when it passed, else why it failed.

    success needs a reply to any request, failure none at all; `problem` (why requests could
    not be sent, say) is added to the reason.
    """
    if ping.expect == "success":
        if replies:
            return None
        return f"0/{ping.count} replies" + (f": {problem}" if problem else "")
    return None if replies == 0 else f"{replies}/{ping.count} replies, expected none"


def evaluate_exec(check: Exec, exit_code: int, stdout: str, stderr: str = "") -> str | None:
    """Judge a command by its exit code and output: None when it passed, else why it failed."""
    if exit_code != check.exit_code:
        return f"exit code {exit_code}, expected {check.exit_code}: {tail(stderr) if stderr.strip() else tail(stdout)}"
    if check.stdout_contains is not None and check.stdout_contains not in stdout:
        return f"stdout lacks {check.stdout_contains!r}: {tail(stdout)}"
    if check.stdout_matches is not None and not re.search(check.stdout_matches, stdout, re.MULTILINE):
        return f"stdout does not match {check.stdout_matches!r}: {tail(stdout)}"
    return None


def tail(text: str) -> str:
    """Shorten output to its last line or two, on one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()][-TAIL_LINES:]
    if not lines:
        return "(no output)"
    short = " | ".join(lines)
    return short if len(short) <= TAIL_CHARS else "…" + short[-(TAIL_CHARS - 1) :]


# --------------------------------------------------------------------------- results

Result = Literal["pass", "fail", "error", "skipped"]
CheckState = Literal["waiting", "pass", "fail", "error", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    service: str
    kind: str  # "ping" or "exec"
    result: Result
    attempts: int
    seconds: float  # from the start of the first attempt to the end of the last
    reason: str | None  # why it did not pass; None when it passed
    rtts_ms: tuple[float, ...] = ()  # the last attempt's round trips, for a ping
    capture: str | None = None  # the flight recorder's pcapng of the packets around its failure


@dataclass(frozen=True)
class CheckUpdate:
    """A check's state after an attempt, for a live view."""

    index: int  # the check's position in the checks given
    name: str
    state: CheckState  # "waiting": it failed so far and will be tried again
    attempts: int
    seconds: float
    reason: str | None  # the last attempt's, while waiting
    remaining: float | None  # seconds of its wait left, while waiting
