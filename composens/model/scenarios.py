"""Fault scenarios: probes, steps, expectations and the verdicts computed from what the probes recorded.

Pure. parse_probes and parse_scenarios read `x-composens.probes` and `x-composens.scenarios` and return frozen
dataclasses, or raise a one-line ConfigError naming the file and the key (exit 3); placement_problem says whether
a scenario touches a service another host runs. The verdicts come from records: a probe's requests (when each was
sent, its round trip or None when it was lost), the windows the runner (composens.system.run.scenario) gives each
expectation, and the functions below (outages, judge_probe) that turn them into figures and verdicts.

Times in records and reports are seconds since the scenario started (a monotonic clock); ScenarioReport.started_at
is the wall-clock time of that start (each Verdict carries it too, as the runner gives it), so a window can be found
in a packet capture: a flight recorder notes a failed expectation at failure_at_ns, under capture_name, and
ScenarioReport.with_captures puts the files written in the report.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from composens.model.checks import global_address
from composens.model.conditions import Conditions, ConditionsError
from composens.model.conditions import parse as parse_conditions
from composens.model.errors import ConfigError
from composens.model.topology import EXTENSION, HOST, Endpoint, Topology

PING_KEYS = ("from", "to", "interval", "timeout")
TCP_KEYS = ("from", "to", "port", "interval", "timeout")
PROBE_KINDS = ("ping", "tcp")
SCENARIO_KEYS = ("description", "probes", "steps")
FLAP_KEYS = ("link", "times", "down", "up", "seed")
EXEC_KEYS = ("service", "command", "timeout")
EXPECT_PROBE_KEYS = ("probe", "recovers_within", "outage", "loss", "rtt", "over")
EXPECT_CHECK_KEYS = ("check", "within")
SERVICE_ACTIONS = ("pause", "unpause", "stop", "start", "kill", "restart")
STEP_KINDS = ("link", "flap", "netem", "partition", "heal", *SERVICE_ACTIONS, "exec", "sleep", "expect")

INTERVAL = 0.1  # s between a probe's requests, by default
INTERVAL_MIN = 0.001
INTERVAL_MAX = 60.0
PROBE_TIMEOUT = 1.0  # s after which a request counts as lost, by default (as ping -W)
TIMEOUT_MAX = 60.0
SEQUENCES = 65536  # ICMP sequence numbers: a request's is its number modulo this
EXEC_TIMEOUT = 60.0
FLAP_TIMES_MAX = 1000
DURATION_MAX = 86400.0
TCP_PORT_MAX = 65535

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(us|ms|s|m)")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]*")
_PLAIN_KEY = re.compile(r"[\w.:@+-]+")
_PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)")

Over = Literal["since-fault", "scenario"]


# --------------------------------------------------------------------------- the declarations


@dataclass(frozen=True)
class Probe:
    """Continuous traffic from a service's own namespace, measured while a scenario runs."""

    name: str
    kind: Literal["ping", "tcp"]
    service: str  # `from`
    to: str  # an IP address, normalised
    interval: float = INTERVAL  # s between requests, on a fixed schedule
    timeout: float = PROBE_TIMEOUT  # s after which a request with no answer counts as lost
    port: int | None = None  # tcp: the port connected to

    def __str__(self) -> str:
        target = f"{self.to} port {self.port}" if self.port is not None else self.to
        return f"{self.kind} {self.service} -> {target} every {seconds_text(self.interval)}"


@dataclass(frozen=True)
class Span:
    """A duration: fixed (low == high) or drawn from low to high by a seeded generator."""

    low: float
    high: float

    def draw(self, rng: random.Random) -> float:
        """The duration to use now, to the millisecond."""
        return self.low if self.low == self.high else round(rng.uniform(self.low, self.high), 3)

    def __str__(self) -> str:
        if self.low == self.high:
            return seconds_text(self.low)
        return f"{seconds_text(self.low)} to {seconds_text(self.high)}"


@dataclass(frozen=True)
class LinkStep:
    """Set an end down (its peer loses carrier) or up again, as `composens link down|up` does."""

    end: Endpoint
    down: bool

    @property
    def text(self) -> str:
        return f"link {'down' if self.down else 'up'} {self.end}"


@dataclass(frozen=True)
class FlapStep:
    """Down and up again `times` times; each period fixed, or drawn with the seed."""

    end: Endpoint
    times: int
    down: Span
    up: Span
    seed: int = 0

    @property
    def text(self) -> str:
        seed = f", seed {self.seed}" if (self.down.low != self.down.high or self.up.low != self.up.high) else ""
        return f"flap {self.end} {self.times} times (down {self.down}, up {self.up}{seed})"

    def periods(self) -> list[tuple[float, float]]:
        """The (down, up) durations of each flap, as the seed draws them."""
        rng = random.Random(self.seed)
        return [(self.down.draw(rng), self.up.draw(rng)) for _ in range(self.times)]


@dataclass(frozen=True)
class NetemStep:
    """Set conditions on ends at run time, as `netem set`; None puts an end back to its file.

    reset_all: every end this scenario set conditions on goes back to its file (`netem: reset`).
    """

    ends: tuple[tuple[Endpoint, Conditions | None], ...] = ()
    reset_all: bool = False

    @property
    def text(self) -> str:
        if self.reset_all:
            return "netem reset"
        return "; ".join(
            f"netem {end} {conditions}" if conditions else f"netem reset {end}" for end, conditions in self.ends
        )


@dataclass(frozen=True)
class PartitionStep:
    """Cut every link and LAN port between groups of services (`cut`: the ends set down)."""

    groups: tuple[tuple[str, ...], ...]
    cut: tuple[Endpoint, ...]

    @property
    def text(self) -> str:
        return "partition " + " | ".join(", ".join(group) for group in self.groups)


@dataclass(frozen=True)
class HealStep:
    """Restore what the partitions before it cut."""

    @property
    def text(self) -> str:
        return "heal"


@dataclass(frozen=True)
class ServiceStep:
    """pause, unpause, stop, start, kill or restart services through compose."""

    action: str
    services: tuple[str, ...]

    @property
    def text(self) -> str:
        return f"{self.action} {' '.join(self.services)}"


@dataclass(frozen=True)
class ExecStep:
    """Run a command in a service's container, as `docker compose exec -T`; it must exit 0."""

    service: str
    command: tuple[str, ...]
    timeout: float = EXEC_TIMEOUT

    @property
    def text(self) -> str:
        shown = self.command[2] if self.command[:2] == ("sh", "-c") else " ".join(self.command)
        return f"exec {self.service}: {shown}"


@dataclass(frozen=True)
class SleepStep:
    seconds: float

    @property
    def text(self) -> str:
        return f"sleep {seconds_text(self.seconds)}"


@dataclass(frozen=True)
class Criterion:
    """One figure a probe expectation judges: outage, loss or rtt bounded by `bound` (min, max, p99...)."""

    measure: Literal["outage", "loss", "rtt"]
    bound: str  # "max", "min", or "pNN" for rtt
    limit: float  # seconds, or percent for loss

    @property
    def text(self) -> str:
        limit = f"{self.limit:g} %" if self.measure == "loss" else seconds_text(self.limit)
        if self.measure == "rtt" and self.bound.startswith("p"):
            return f"rtt {self.bound} <= {limit}"
        return f"{self.measure} {'<=' if self.bound == 'max' else '>='} {limit}"


@dataclass(frozen=True)
class ExpectProbe:
    """Judge a probe over a window: from the previous fault step to recovers_within after it, or else to the next
    fault step (the scenario's end); `over: scenario` judges the whole scenario."""

    probe: str
    recovers_within: float | None = None
    criteria: tuple[Criterion, ...] = ()
    over: Over = "since-fault"

    @property
    def text(self) -> str:
        parts = [f"recovers within {seconds_text(self.recovers_within)}"] if self.recovers_within is not None else []
        parts += [c.text for c in self.criteria]
        over = " over the scenario" if self.over == "scenario" else ""
        return f"expect {self.probe} {', '.join(parts)}{over}"


@dataclass(frozen=True)
class ExpectCheck:
    """A declared check passes within `within` of the previous fault step (None: as the check is declared)."""

    check: str
    within: float | None = None

    @property
    def text(self) -> str:
        within = f" within {seconds_text(self.within)}" if self.within is not None else ""
        return f"expect check {self.check!r}{within}"


Step = (
    LinkStep
    | FlapStep
    | NetemStep
    | PartitionStep
    | HealStep
    | ServiceStep
    | ExecStep
    | SleepStep
    | ExpectProbe
    | ExpectCheck
)


def is_fault(step: Step) -> bool:
    """Tell whether a step changes the lab: expectations and sleeps do not."""
    return not isinstance(step, ExpectProbe | ExpectCheck | SleepStep)


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]
    probes: tuple[str, ...]  # the probes it runs: those it names, or every declared one
    description: str | None = None

    def services(self) -> set[str]:
        """The services whose containers a step pauses, stops, starts, kills or restarts."""
        return {s for step in self.steps if isinstance(step, ServiceStep) for s in step.services}

    def ends(self) -> set[Endpoint]:
        """Every end a step sets down, up or conditions on."""
        found: set[Endpoint] = set()
        for step in self.steps:
            if isinstance(step, LinkStep | FlapStep):
                found.add(step.end)
            elif isinstance(step, PartitionStep):
                found.update(step.cut)
            elif isinstance(step, NetemStep):
                found.update(end for end, _ in step.ends)
        return found

    def conditions(self) -> list[tuple[str, Conditions]]:
        """What its netem steps would set, and where (to check the kernel can before anything runs)."""
        return [
            (f"scenario {self.name}: netem {end}", conditions)
            for step in self.steps
            if isinstance(step, NetemStep)
            for end, conditions in step.ends
            if conditions is not None
        ]


@dataclass(frozen=True)
class Declared:
    """The probes and scenarios a file declares."""

    probes: Mapping[str, Probe] = field(default_factory=dict)
    scenarios: Mapping[str, Scenario] = field(default_factory=dict)


# --------------------------------------------------------------------------- durations


def seconds_text(seconds: float) -> str:
    """Say a duration the way a person reads it: `10 ms`, `1.5 s`, `250 us`."""
    if seconds >= 1 or seconds == 0:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + " s"
    if seconds >= 0.001:
        return f"{seconds * 1000:.3f}".rstrip("0").rstrip(".") + " ms"
    return f"{seconds * 1e6:.0f} us"


def parse_duration(value: Any) -> float:
    """Read a duration: `10ms`, `1.5s`, `500us`, `2m`, or a number of seconds; ValueError says why not."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (e.g. 10ms, 1.5s, 2m, or a number of seconds)")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r} is not a duration above 0")
    if seconds > DURATION_MAX:
        raise ValueError(f"{value!r} is longer than a day")
    return seconds


def parse_percent(value: Any) -> float:
    """Read a percentage: `15%`, `0.5 %`, or a number."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a percentage")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and (match := _PERCENT.fullmatch(value.strip())):
        number = float(match.group(1))
    else:
        raise ValueError(f"{value!r} is not a percentage (e.g. 15%)")
    if not math.isfinite(number) or not 0 <= number <= 100:
        raise ValueError(f"{value!r} is not a percentage from 0 to 100")
    return number


# --------------------------------------------------------------------------- parsing


class _Where:
    """Builds `file: x-composens.path.to.key: message` errors."""

    def __init__(self, source: str, path: str) -> None:
        self.source = source
        self.path = path

    def at(self, key: object) -> _Where:
        if isinstance(key, int):
            return _Where(self.source, f"{self.path}[{key}]")
        name = key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else repr(key)
        return _Where(self.source, f"{self.path}.{name}")

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.path}: {message}")


def _mapping(value: Any, where: _Where, allowed: Sequence[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.error(f"must be a mapping ({what})")
    for key in value:
        if key not in allowed:
            raise where.at(key).error(f"unknown key (expected one of: {', '.join(allowed)})")
    return value


def _name(value: Any, where: _Where, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise where.error(
            f"{value!r} is not a {what} name (letters, digits, '_', '.', '@', '+', '-'; "
            "starting with a letter or digit)"
        )
    return value


def _duration(value: Any, where: _Where) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise where.error(str(e)) from None


def parse(top: Mapping[str, Any], topo: Topology) -> Declared:
    """Validate `x-composens.probes` and `x-composens.scenarios` against the project (checks parsed already)."""
    probes = parse_probes(top.get("probes"), topo)
    scenarios = parse_scenarios(top.get("scenarios"), topo, probes)
    return Declared(probes, scenarios)


def parse_probes(value: Any, topo: Topology) -> dict[str, Probe]:
    """Validate `x-composens.probes`: a mapping of names to one probe each."""
    where = _Where(topo.source, f"{EXTENSION}.probes")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.error(
            "must be a mapping of probe names to probes, e.g. {west-east: {ping: {from: a, to: 192.0.2.1}}}"
        )
    probes = {}
    for raw_name, spec in value.items():
        at = where.at(raw_name)
        name = _name(raw_name, at, "probe")
        spec = _mapping(spec, at, PROBE_KINDS, "ping: {from: SERVICE, to: ADDRESS}, or tcp: {..., port: N}")
        if len(spec) != 1:
            raise at.error("needs exactly one of: ping, tcp")
        ((kind, body),) = spec.items()
        probes[name] = _parse_probe(name, kind, body, topo, at.at(kind))
    return probes


def _parse_probe(name: str, kind: str, body: Any, topo: Topology, where: _Where) -> Probe:
    keys = PING_KEYS if kind == "ping" else TCP_KEYS
    spec = _mapping(body, where, keys, ", ".join(keys))
    for key in ("from", "to") + (("port",) if kind == "tcp" else ()):
        if key not in spec:
            raise where.error(f"needs '{key}'")
    service = _probe_service(spec["from"], topo, where.at("from"))
    interval = _duration(spec["interval"], where.at("interval")) if "interval" in spec else INTERVAL
    if not INTERVAL_MIN <= interval <= INTERVAL_MAX:
        raise where.at("interval").error(
            f"{spec['interval']!r} is outside {seconds_text(INTERVAL_MIN)} to {seconds_text(INTERVAL_MAX)}"
        )
    timeout = _duration(spec["timeout"], where.at("timeout")) if "timeout" in spec else PROBE_TIMEOUT
    if timeout > TIMEOUT_MAX:
        raise where.at("timeout").error(f"{spec['timeout']!r} is longer than {seconds_text(TIMEOUT_MAX)}")
    if timeout >= SEQUENCES / 2 * interval:
        raise where.at("timeout").error(
            f"{spec['timeout']!r} is too long for an interval of {seconds_text(interval)}: requests would share "
            f"a sequence number; keep it under {seconds_text(SEQUENCES / 2 * interval)}"
        )
    port = None
    if kind == "tcp":
        raw_port = spec["port"]
        if isinstance(raw_port, bool) or not isinstance(raw_port, int) or not 1 <= raw_port <= TCP_PORT_MAX:
            raise where.at("port").error(f"{raw_port!r} is not a port (1 to {TCP_PORT_MAX})")
        port = raw_port
    return Probe(
        name,
        "ping" if kind == "ping" else "tcp",
        service,
        global_address(spec["to"], where.at("to"), users="probes", verb="use"),
        interval,
        timeout,
        port,
    )


def _probe_service(value: Any, topo: Topology, where: _Where) -> str:
    if not isinstance(value, str) or value not in topo.services:
        raise where.error(f"unknown service {value!r}")
    node = topo.services[value]
    if not node.has_own_netns:
        mode = node.network_mode
        hint = f"; probe from {mode.split(':', 1)[1]}, whose namespace it shares" if mode.startswith("service:") else ""
        raise where.error(f"service {value} has no network namespace of its own (network_mode: {mode}){hint}")
    if node.replicas != 1:
        raise where.error(f"service {value} is scaled to {node.replicas}; a probe needs exactly one container")
    return value


def parse_scenarios(value: Any, topo: Topology, probes: Mapping[str, Probe]) -> dict[str, Scenario]:
    """Validate `x-composens.scenarios`: a mapping of names to {description, probes, steps}."""
    where = _Where(topo.source, f"{EXTENSION}.scenarios")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.error("must be a mapping of scenario names to scenarios, e.g. {core-fails: {steps: [...]}}")
    scenarios = {}
    for raw_name, spec in value.items():
        at = where.at(raw_name)
        name = _name(raw_name, at, "scenario")
        spec = _mapping(spec, at, SCENARIO_KEYS, "description, probes, steps")
        description = spec.get("description")
        if description is not None and (not isinstance(description, str) or not description.isprintable()):
            raise at.at("description").error("must be one line of text")
        chosen = _scenario_probes(spec.get("probes"), probes, at.at("probes"))
        steps = _parse_steps(spec.get("steps"), topo, probes, chosen, at.at("steps"))
        scenarios[name] = Scenario(name, steps, chosen, description or None)
    return scenarios


def _scenario_probes(value: Any, probes: Mapping[str, Probe], where: _Where) -> tuple[str, ...]:
    if value is None:
        return tuple(probes)
    if not isinstance(value, list):
        raise where.error("must be a list of probe names")
    for i, name in enumerate(value):
        if name not in probes:
            raise where.at(i).error(_unknown("probe", name, probes))
    return tuple(dict.fromkeys(value))


def _unknown(what: str, name: Any, known: Iterable[str]) -> str:
    names = sorted(known)
    declared = f"declared: {', '.join(names)}" if names else f"no {what}s are declared"
    return f"unknown {what} {name!r} ({declared})"


def _parse_steps(
    value: Any, topo: Topology, probes: Mapping[str, Probe], chosen: tuple[str, ...], where: _Where
) -> tuple[Step, ...]:
    if not isinstance(value, list) or not value:
        raise where.error("must be a list of one or more steps")
    steps: list[Step] = []
    for i, raw in enumerate(value):
        at = where.at(i)
        if raw == "heal":
            steps.append(HealStep())
            continue
        if isinstance(raw, str) and raw in STEP_KINDS:
            raise at.error(f"{raw!r} needs a value ({raw}: ...)")
        if not isinstance(raw, dict) or len(raw) != 1:
            raise at.error(f"must be a mapping with one of: {', '.join(STEP_KINDS)}")
        ((kind, body),) = raw.items()
        if kind not in STEP_KINDS:
            raise at.at(kind).error(f"unknown step (expected one of: {', '.join(STEP_KINDS)})")
        steps.append(_parse_step(kind, body, topo, probes, chosen, at.at(kind)))
    return tuple(steps)


def _parse_step(
    kind: str, body: Any, topo: Topology, probes: Mapping[str, Probe], chosen: tuple[str, ...], where: _Where
) -> Step:
    if kind == "link":
        spec = _mapping(body, where, ("down", "up"), "down: SERVICE:IFNAME, or up: SERVICE:IFNAME")
        if len(spec) != 1:
            raise where.error("needs exactly one of: down, up")
        ((direction, end),) = spec.items()
        return LinkStep(_end(end, topo, where.at(direction)), down=direction == "down")
    if kind == "flap":
        return _parse_flap(body, topo, where)
    if kind == "netem":
        return _parse_netem(body, topo, where)
    if kind == "partition":
        return _parse_partition(body, topo, where)
    if kind == "heal":
        if body is not None:
            raise where.error("takes no value (write the step as `- heal`)")
        return HealStep()
    if kind in SERVICE_ACTIONS:
        names = body if isinstance(body, list) else [body]
        if not names:
            raise where.error("needs a service, or a list of them")
        for i, name in enumerate(names):
            _step_service(name, topo, where.at(i) if isinstance(body, list) else where)
        return ServiceStep(kind, tuple(dict.fromkeys(names)))
    if kind == "exec":
        return _parse_exec(body, topo, where)
    if kind == "sleep":
        return SleepStep(_duration(body, where))
    return _parse_expect(body, topo, probes, chosen, where)


def _end(value: Any, topo: Topology, where: _Where) -> Endpoint:
    if not isinstance(value, str) or value.count(":") != 1:
        raise where.error(f"{value!r} is not 'SERVICE:IFNAME'")
    service, ifname = value.split(":")
    if service == HOST or service not in topo.services:
        raise where.error(f"unknown service {service!r} (an end of a link or LAN of a service: SERVICE:IFNAME)")
    if ifname not in topo.interfaces_of(service):
        declared = ", ".join(topo.interfaces_of(service)) or "none"
        raise where.error(f"{service} has no interface {ifname!r} of a link or LAN (it has: {declared})")
    return Endpoint(service, ifname)


def _step_service(value: Any, topo: Topology, where: _Where) -> str:
    if not isinstance(value, str) or value not in topo.services:
        raise where.error(f"unknown service {value!r}")
    replicas = topo.services[value].replicas
    if replicas != 1:
        raise where.error(f"service {value} is scaled to {replicas}; a step needs exactly one container")
    return value


def _span(value: Any, where: _Where) -> Span:
    if isinstance(value, dict):
        spec = _mapping(value, where, ("min", "max"), "min: DURATION, max: DURATION")
        for key in ("min", "max"):
            if key not in spec:
                raise where.error(f"a random duration needs '{key}'")
        low, high = _duration(spec["min"], where.at("min")), _duration(spec["max"], where.at("max"))
        if low > high:
            raise where.error(f"min {seconds_text(low)} is above max {seconds_text(high)}")
        return Span(low, high)
    seconds = _duration(value, where)
    return Span(seconds, seconds)


def _parse_flap(body: Any, topo: Topology, where: _Where) -> FlapStep:
    spec = _mapping(body, where, FLAP_KEYS, "link: SERVICE:IFNAME, times: N, down: DURATION, up: DURATION")
    for key in ("link", "times", "down", "up"):
        if key not in spec:
            raise where.error(f"needs '{key}'")
    times = spec["times"]
    if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= FLAP_TIMES_MAX:
        raise where.at("times").error(f"{times!r} is not a count (a whole number from 1 to {FLAP_TIMES_MAX})")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise where.at("seed").error(f"{seed!r} is not a whole number")
    return FlapStep(
        _end(spec["link"], topo, where.at("link")),
        times,
        _span(spec["down"], where.at("down")),
        _span(spec["up"], where.at("up")),
        seed,
    )


def _parse_netem(body: Any, topo: Topology, where: _Where) -> NetemStep:
    if body == "reset":
        return NetemStep(reset_all=True)
    if not isinstance(body, dict) or not body:
        raise where.error("must be a mapping of SERVICE:IFNAME to conditions (or reset), or `reset`")
    ends: list[tuple[Endpoint, Conditions | None]] = []
    for raw_end, raw_conditions in body.items():
        at = where.at(raw_end)
        end = _end(raw_end, topo, at)
        if raw_conditions == "reset":
            ends.append((end, None))
            continue
        try:
            conditions = parse_conditions(raw_conditions)
        except ConditionsError as e:
            raise at.error(str(e)) from None
        ends.append((end, conditions))
    return NetemStep(tuple(ends))


def _parse_partition(body: Any, topo: Topology, where: _Where) -> PartitionStep:
    if not isinstance(body, list) or len(body) < 2:
        raise where.error("must be a list of two or more groups of services, e.g. [[a, b], [c]]")
    groups: list[tuple[str, ...]] = []
    group_of: dict[str, int] = {}
    for i, group in enumerate(body):
        members = group if isinstance(group, list) else [group]
        if not members:
            raise where.at(i).error("is an empty group")
        for j, name in enumerate(members):
            at = where.at(i).at(j) if isinstance(group, list) else where.at(i)
            _step_service(name, topo, at)
            if name in group_of:
                raise at.error(f"{name} is already in group {group_of[name]}")
            group_of[name] = i
        groups.append(tuple(members))
    cut = partition_cut(topo, group_of)
    if not cut:
        raise where.error("no link or LAN joins these groups: nothing to cut")
    return PartitionStep(tuple(groups), cut)


def partition_cut(topo: Topology, group_of: Mapping[str, int]) -> tuple[Endpoint, ...]:
    """The ends to set down so that no link or LAN joins two groups.

    A link whose ends are in two groups loses the end of the later group. A LAN is one segment: where its members
    fall in several groups, the group with most members there keeps it (the earliest on a tie) and the members
    of the others lose their end on it, so they no longer meet one another on that LAN either. Services in no
    group, and the host's ends, keep everything.
    """
    cut: list[Endpoint] = []
    for link in topo.links:
        a, b = group_of.get(link.a.node), group_of.get(link.b.node)
        if a is not None and b is not None and a != b:
            cut.append(link.a if a > b else link.b)
    for lan in topo.lans:
        by_group: dict[int, list[Endpoint]] = {}
        for member in lan.members:
            if member.node in group_of:
                by_group.setdefault(group_of[member.node], []).append(member)
        if len(by_group) < 2:
            continue
        keeper = max(sorted(by_group), key=lambda g: len(by_group[g]))
        cut += [member for g in sorted(by_group) if g != keeper for member in by_group[g]]
    return tuple(dict.fromkeys(cut))


def _parse_exec(body: Any, topo: Topology, where: _Where) -> ExecStep:
    spec = _mapping(body, where, EXEC_KEYS, "service: SERVICE, command: COMMAND")
    for key in ("service", "command"):
        if key not in spec:
            raise where.error(f"needs '{key}'")
    service = _step_service(spec["service"], topo, where.at("service"))
    command = spec["command"]
    at = where.at("command")
    if isinstance(command, str):
        if not command.strip() or "\0" in command:
            raise at.error("must be a command (not empty, no NUL character)")
        argv: tuple[str, ...] = ("sh", "-c", command)
    elif isinstance(command, list) and command and all(isinstance(w, str) and "\0" not in w for w in command):
        if not command[0]:
            raise at.at(0).error("the program name must not be empty")
        argv = tuple(command)
    else:
        raise at.error("must be a list of strings (run as they are) or a string (run by sh -c)")
    timeout = _duration(spec["timeout"], where.at("timeout")) if "timeout" in spec else EXEC_TIMEOUT
    return ExecStep(service, argv, timeout)


def _parse_expect(
    body: Any, topo: Topology, probes: Mapping[str, Probe], chosen: tuple[str, ...], where: _Where
) -> ExpectProbe | ExpectCheck:
    if isinstance(body, dict) and "check" in body:
        spec = _mapping(body, where, EXPECT_CHECK_KEYS, "check: NAME, within: DURATION")
        names = [c.name for c in topo.checks]
        if spec["check"] not in names:
            raise where.at("check").error(_unknown("check", spec["check"], names))
        within = _duration(spec["within"], where.at("within")) if "within" in spec else None
        return ExpectCheck(spec["check"], within)
    spec = _mapping(body, where, EXPECT_PROBE_KEYS, "probe: NAME and what to judge, or check: NAME")
    if "probe" not in spec:
        raise where.error("needs 'probe' or 'check'")
    probe = spec["probe"]
    if probe not in probes:
        raise where.at("probe").error(_unknown("probe", probe, probes))
    if probe not in chosen:
        raise where.at("probe").error(f"probe {probe} is not among this scenario's probes ({', '.join(chosen)})")
    over = spec.get("over", "since-fault")
    if over not in ("since-fault", "scenario"):
        raise where.at("over").error(f"{over!r} is neither since-fault nor scenario")
    recovers = _duration(spec["recovers_within"], where.at("recovers_within")) if "recovers_within" in spec else None
    if recovers is not None and over == "scenario":
        raise where.at("recovers_within").error("is measured from a fault step; it cannot go with over: scenario")
    criteria: list[Criterion] = []
    for measure in ("outage", "loss", "rtt"):
        if measure in spec:
            criteria += _criteria(measure, spec[measure], where.at(measure))
    if recovers is None and not criteria:
        raise where.error("needs at least one of: recovers_within, outage, loss, rtt")
    return ExpectProbe(probe, recovers, tuple(criteria), "scenario" if over == "scenario" else "since-fault")


def _criteria(measure: str, value: Any, where: _Where) -> list[Criterion]:
    if measure == "rtt":
        if not isinstance(value, dict) or not value:
            raise where.error("must be a mapping of max or a percentile (p50, p99, p99.9...) to a duration")
        found = []
        for key, limit in value.items():
            match = _PERCENTILE.fullmatch(str(key))
            if key != "max" and not (match and 0 < float(match.group(1)) <= 100):
                raise where.at(key).error("unknown key (expected max, or a percentile: p50, p99, p99.9...)")
            found.append(Criterion("rtt", str(key), _duration(limit, where.at(key))))
        return found
    spec = _mapping(value, where, ("min", "max"), "min and/or max")
    if not spec:
        raise where.error("needs min and/or max")
    found = []
    for key, limit in spec.items():
        at = where.at(key)
        if measure == "loss":
            try:
                number = parse_percent(limit)
            except ValueError as e:
                raise at.error(str(e)) from None
        else:
            number = _duration(limit, at)
        found.append(Criterion("loss" if measure == "loss" else "outage", key, number))
    return found


def placement_problem(scenario: Scenario, probes: Mapping[str, Probe], topo: Topology) -> str | None:
    """Say why a scenario cannot run on this host of a multi-host lab (a step or probe on another host), or None.

    topo is the view from this host (topo.this_host set) or a lab on one machine.
    """
    if topo.hosts is None or topo.this_host is None:
        return None
    placement: Mapping[str, str] = topo.hosts.placement
    elsewhere: list[str] = []
    for name in scenario.probes:
        service = probes[name].service
        if placement.get(service, topo.this_host) != topo.this_host:
            elsewhere.append(f"probe {name} (from {service}) is on host {placement[service]}")
    touched = set(scenario.services()) | {end.node for end in scenario.ends()}
    touched |= {s.service for s in scenario.steps if isinstance(s, ExecStep)}
    touched |= {name for s in scenario.steps if isinstance(s, PartitionStep) for group in s.groups for name in group}
    for service in sorted(touched):
        if placement.get(service, topo.this_host) != topo.this_host:
            elsewhere.append(f"service {service} is on host {placement[service]}")
    here = {c.name for c in topo.checks}  # the view keeps the checks of this host's services
    for step in scenario.steps:
        if isinstance(step, ExpectCheck) and step.check not in here:
            elsewhere.append(f"check {step.check!r} runs on another host")
    if not elsewhere:
        return None
    said = "; ".join(dict.fromkeys(elsewhere))
    return (
        f"{topo.source}: {EXTENSION}.scenarios.{scenario.name}: {said}, not on this host ({topo.this_host}); "
        "a scenario runs on the host of every service it touches (multi-host scenarios are not supported yet)"
    )


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Request:
    """One request of a probe: when it was sent and its round trip, or None when it was lost."""

    sent: float  # s since the scenario started
    rtt: float | None  # s; None: no answer within the probe's timeout
    error: str | None = None  # why it could not be sent (no route, say)

    @property
    def lost(self) -> bool:
        return self.rtt is None


@dataclass(frozen=True)
class ProbeRecord:
    """What a probe recorded: its requests in the order of its schedule (the sequence is the index)."""

    probe: Probe
    requests: tuple[Request, ...]
    scheduled: float = 0.0  # when its first request was due: request k was due at scheduled + k * interval

    def window(self, start: float, end: float) -> list[Request]:
        return [r for r in self.requests if start <= r.sent < end]


@dataclass(frozen=True)
class Outage:
    """A run of lost requests: from the send time of the first lost to that of the first answered after it."""

    start: float
    end: float | None  # None: no request was answered after it
    lost: int  # requests lost in the run

    def length(self, until: float) -> float:
        """Its duration; for one still going, up to `until`."""
        return (self.end if self.end is not None else until) - self.start


def outages(requests: Sequence[Request]) -> list[Outage]:
    """Every run of lost requests, in order."""
    found: list[Outage] = []
    first: Request | None = None
    count = 0
    for request in requests:
        if request.lost:
            if first is None:
                first, count = request, 0
            count += 1
        elif first is not None:
            found.append(Outage(first.sent, request.sent, count))
            first = None
    if first is not None:
        found.append(Outage(first.sent, None, count))
    return found


def overlapping(found: Sequence[Outage], start: float, end: float) -> list[Outage]:
    """The outages that overlap a window: begun before its end, not over before its start."""
    return [o for o in found if o.start < end and (o.end is None or o.end > start)]


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of values (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class StepRecord:
    """A step as it ran: when it began, when it took effect, when it ended, and what it did."""

    index: int
    text: str
    kind: str
    started: float
    effective: float | None  # when its change was in place; None: it failed first (or an expectation)
    ended: float
    marks: tuple[tuple[float, str], ...] = ()  # what took effect within it (each down and up of a flap)
    detail: str | None = None
    error: str | None = None


Result = Literal["pass", "fail"]


@dataclass(frozen=True)
class Verdict:
    """One judged expectation: its measured figure, whether or not it passed, and the window it judged."""

    step: int  # the expect step's index
    name: str  # what it expects: `west-east recovers within 10 s`
    subject: str  # the probe or check
    kind: str  # recovery, outage, loss, rtt, check
    figure: float | None  # seconds (percent for loss); None when there is nothing to measure
    unit: str  # "s" or "%"
    text: str  # the figure as a person reads it
    passed: bool
    reason: str | None  # why it did not pass
    window: tuple[float, float]  # s since the start: what was judged (a recorder keeps the packets around it)
    started_at: float | None = None  # wall-clock time (epoch s) of the scenario's start, stamped by the runner
    capture: str | None = None  # the flight recorder's pcapng of the packets around its failure

    @property
    def result(self) -> Result:
        return "pass" if self.passed else "fail"

    @property
    def wall_window(self) -> tuple[float, float] | None:
        """The window it judged on the wall clock (epoch seconds), once the runner stamped the start."""
        if self.started_at is None:
            return None
        return self.started_at + self.window[0], self.started_at + self.window[1]


def capture_name(scenario: str, verdict: Verdict) -> str:
    """The name a failed expectation's packets are written under: its scenario, step and expectation."""
    return f"{scenario} step {verdict.step + 1} {verdict.name}"


def failure_at_ns(verdict: Verdict) -> int | None:
    """When a recorder should note a failed expectation (time.time_ns()'s clock): its window's end, so the
    `keep` seconds before it cover the window judged (as much of it as fits); None before the runner stamped it."""
    wall = verdict.wall_window
    return None if wall is None else round(wall[1] * 1_000_000_000)


Outcome = Literal["pass", "fail", "error", "stopped"]


@dataclass(frozen=True)
class ScenarioReport:
    name: str
    description: str | None
    started_at: float  # wall-clock time (epoch seconds) of its start: time 0 of every figure
    seconds: float  # from the start to the last step's end
    steps: tuple[StepRecord, ...]
    verdicts: tuple[Verdict, ...]
    probes: tuple[ProbeRecord, ...]
    stopped: str | None = None  # why it ended early (SIGTERM, fail-fast, a failed step)
    restored: tuple[str, ...] = ()  # what undoing it did
    restore_errors: tuple[str, ...] = ()
    kept: bool = False  # --keep: left as the last step left it
    planned: tuple[str, ...] = ()  # every step's text, run or not (an expectation never reached is skipped)

    @property
    def outcome(self) -> Outcome:
        if any(step.error for step in self.steps) or self.restore_errors:
            return "error"
        if any(not v.passed for v in self.verdicts):
            return "fail"
        if self.stopped is not None:
            return "stopped"
        return "pass"

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    def wall(self, seconds: float) -> float:
        """The wall-clock time of a time in this report."""
        return self.started_at + seconds

    def with_captures(self, written: Mapping[str, str]) -> ScenarioReport:
        """The report with each failed expectation's capture file, from {capture_name: path} of those written."""
        verdicts = tuple(
            dataclasses.replace(v, capture=written[key]) if (key := capture_name(self.name, v)) in written else v
            for v in self.verdicts
        )
        return dataclasses.replace(self, verdicts=verdicts)


# --------------------------------------------------------------------------- verdicts


def judge_probe(
    step: int,
    expect: ExpectProbe,
    record: ProbeRecord,
    start: float,
    end: float,
    *,
    fault: float | None = None,
    begun: float | None = None,
) -> list[Verdict]:
    """Judge a probe expectation over the window [start, end) of its record.

    `fault` (for recovers_within) is when the fault step took effect; requests sent in the window must have had
    their timeout, so the caller judges once `end + timeout` has passed. `begun` is when that step began: an
    outage still going then counts, even when it ended before the step's stamp (a link that `link up` brings back
    carries traffic before the command that did it has returned).
    """
    window = (start, end)
    found = overlapping(outages(record.requests), min(start, begun) if begun is not None else start, end)
    sent = record.window(start, end)
    name = expect.probe
    verdicts = []
    if expect.recovers_within is not None:
        limit = expect.recovers_within
        title = f"{name} recovers within {seconds_text(limit)}"
        figure = _recovery(found, sent, fault if fault is not None else start, end, limit)
        verdicts.append(Verdict(step, title, name, "recovery", *figure, window))
    for criterion in expect.criteria:
        measure = {"outage": _outage, "loss": _loss, "rtt": _rtt}[criterion.measure]
        figure = measure(criterion, found, sent, end)
        verdicts.append(Verdict(step, f"{name} {criterion.text}", name, criterion.measure, *figure, window))
    return verdicts


# What each measure gives a verdict: its figure, unit, text, whether it passed, and why not.
Figure = tuple[float | None, str, str, bool, str | None]


def _recovery(found: list[Outage], sent: list[Request], since: float, end: float, limit: float) -> Figure:
    if not sent:
        return None, "s", "no request sent", False, "no request was sent in the window"
    last = found[-1] if found else None
    if last is None:
        return 0.0, "s", "no outage", True, None
    if last.end is None or last.end > end:
        text = f"not recovered after {seconds_text(end - since)}"
        lost = f"{last.lost} requests lost since {seconds_text(last.start)}"
        return None, "s", text, False, f"{text} ({lost})"
    took = max(0.0, last.end - since)
    text = f"recovered after {seconds_text(took)}"
    ok = took <= limit
    return took, "s", text, ok, None if ok else f"{text}, more than {seconds_text(limit)}"


def _outage(criterion: Criterion, found: list[Outage], sent: list[Request], end: float) -> Figure:
    if not sent:
        return None, "s", "no request sent", False, "no request was sent in the window"
    figure, text, going = 0.0, "no outage", False
    if found:
        longest = max(found, key=lambda o: o.length(end))
        figure = longest.length(end)
        going = longest.end is None or longest.end > end
        plural = "s" if len(found) != 1 else ""
        text = f"{'at least ' if going else ''}{seconds_text(figure)}, {longest.lost} lost"
        text += f" (longest of {len(found)} outage{plural})"
    if criterion.bound == "max":
        ok = figure <= criterion.limit and not going
        why = "not over when the window closed" if going else f"longer than {seconds_text(criterion.limit)}"
    else:
        ok = figure >= criterion.limit
        why = f"shorter than {seconds_text(criterion.limit)}"
    return figure, "s", text, ok, None if ok else f"{text}: {why}"


def _loss(criterion: Criterion, found: list[Outage], sent: list[Request], end: float) -> Figure:
    if not sent:
        return None, "%", "no request sent", False, "no request was sent in the window"
    lost = sum(1 for r in sent if r.lost)
    figure = 100.0 * lost / len(sent)
    text = f"{figure:.3g} % ({lost}/{len(sent)})"
    ok = figure <= criterion.limit if criterion.bound == "max" else figure >= criterion.limit
    why = f"{'more' if criterion.bound == 'max' else 'less'} than {criterion.limit:g} %"
    return figure, "%", text, ok, None if ok else f"{text}: {why}"


def _rtt(criterion: Criterion, found: list[Outage], sent: list[Request], end: float) -> Figure:
    rtts = [r.rtt for r in sent if r.rtt is not None]
    if not rtts:
        return None, "s", "no answer", False, "no request was answered in the window"
    figure = max(rtts) if criterion.bound == "max" else percentile(rtts, float(criterion.bound[1:]))
    text = f"{criterion.bound} {seconds_text(figure)} ({len(rtts)} answers)"
    ok = figure <= criterion.limit
    return figure, "s", text, ok, None if ok else f"{text}: more than {seconds_text(criterion.limit)}"


def judge_check(step: int, expect: ExpectCheck, passed: bool, reason: str | None, since: float, at: float) -> Verdict:
    """Judge a check expectation from its run: when it passed (or its last attempt ended), and since when."""
    title = f"check {expect.check!r}" + (f" within {seconds_text(expect.within)}" if expect.within is not None else "")
    took = max(0.0, at - since)
    if passed:
        text = f"passed after {seconds_text(took)}"
        return Verdict(step, title, expect.check, "check", took, "s", text, True, None, (since, at))
    text = f"not passed after {seconds_text(took)}"
    return Verdict(step, title, expect.check, "check", None, "s", text, False, reason or "did not pass", (since, at))


def probe_summary(record: ProbeRecord, until: float | None = None) -> dict[str, Any]:
    """The figures of a whole probe record: requests, lost, loss, round trips, outages."""
    requests = record.requests
    end = until if until is not None else (requests[-1].sent + record.probe.interval if requests else 0.0)
    rtts = [r.rtt for r in requests if r.rtt is not None]
    lost = sum(1 for r in requests if r.lost)
    return {
        "sent": len(requests),
        "lost": lost,
        "loss_percent": 100.0 * lost / len(requests) if requests else None,
        "rtt": {
            "min": min(rtts),
            "avg": sum(rtts) / len(rtts),
            "p99": percentile(rtts, 99),
            "max": max(rtts),
        }
        if rtts
        else None,
        "outages": [
            {"start": o.start, "end": o.end, "duration": o.length(end), "lost": o.lost, "over": o.end is not None}
            for o in outages(requests)
        ],
    }
