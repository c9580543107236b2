"""Link conditions: delay, jitter, loss, corruption, duplication, reordering, a rate limit and a queue limit.

Pure: the model, the validation of what a compose file or the command line says, the `tc` words that
set it on an interface's egress, and the reading of what `tc -json qdisc show` says is there. A rate
alone is a token bucket (tbf), the kernel's own shaper, present in every kernel that has traffic
control; anything else is netem (sch_netem), which carries the rate too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any

KEYS = ("delay", "jitter", "loss", "corrupt", "duplicate", "reorder", "rate", "limit")
PERCENT_KEYS = ("loss", "corrupt", "duplicate", "reorder")
_TIME = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)")
_TIME_US = {"us": 1, "ms": 1000, "s": 1_000_000}
_RATE_BIT = {"bit": 1, "kbit": 1000, "mbit": 1_000_000, "gbit": 1_000_000_000}
MAX_DELAY_US = 60_000_000  # a minute: netem keeps every delayed packet in memory
MAX_JITTER_US = 2_147_483  # netem caps jitter at 2^31 - 1 ns, silently: seen on Debian's 6.1 kernel
MAX_LIMIT = 1_000_000
NETEM_LIMIT = 1000  # packets: the queue netem has when no limit is given (tc's default too)
TBF_LATENCY = "200ms"  # how long a packet may wait for tokens before the bucket drops it
TBF_MIN_BURST = 16 * 1024  # bytes: at least a jumbo frame, and smooth at low rates


class ConditionsError(ValueError):
    """A condition that cannot be set; the message names the key."""


@dataclass(frozen=True)
class Conditions:
    delay_us: int | None = None
    jitter_us: int | None = None
    loss: float | None = None  # percent
    corrupt: float | None = None
    duplicate: float | None = None
    reorder: float | None = None
    rate_bit: int | None = None  # bits per second
    limit: int | None = None  # packets queued

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    @property
    def kind(self) -> str:
        """The qdisc that carries them: tbf for a rate alone, netem for anything else."""
        rate_only = self.rate_bit is not None and replace(self, rate_bit=None).empty
        return "tbf" if rate_only else "netem"

    def tc_words(self) -> list[str]:
        """The qdisc's kind and parameters, as `tc qdisc replace dev X root ...` takes them."""
        if self.kind == "tbf":
            assert self.rate_bit is not None
            burst = max(TBF_MIN_BURST, self.rate_bit // 8 // 100)  # 10 ms of traffic
            return ["tbf", "rate", _rate(self.rate_bit), "burst", str(burst), "latency", TBF_LATENCY]
        words = ["netem"]
        if self.limit is not None:
            words += ["limit", str(self.limit)]
        if self.delay_us is not None:
            words += ["delay", _time(self.delay_us)]
            if self.jitter_us:
                words.append(_time(self.jitter_us))
        for key in PERCENT_KEYS:
            value = getattr(self, key)
            if value is not None:
                words += [key, _percent(value)]
        if self.rate_bit is not None:
            words += ["rate", _rate(self.rate_bit)]
        return words

    def __str__(self) -> str:
        """Say them as the file does: `delay 40ms jitter 5ms loss 1% rate 10mbit`."""
        words = []
        if self.delay_us is not None:
            words.append(f"delay {_time(self.delay_us)}")
        if self.jitter_us:
            words.append(f"jitter {_time(self.jitter_us)}")
        words += [f"{key} {_percent(getattr(self, key))}" for key in PERCENT_KEYS if getattr(self, key) is not None]
        if self.rate_bit is not None:
            words.append(f"rate {_rate(self.rate_bit)}")
        if self.limit is not None:
            words.append(f"limit {self.limit}")
        return " ".join(words) or "none"

    def spelled(self) -> dict[str, str]:
        """The file's own spelling (read back with `parse`): for the record and for JSON."""
        return _spelled(self)

    def same_as(self, other: Conditions) -> bool:
        """Compare with what `tc -json` reports: the same qdisc and values, to the precision it prints them."""
        if self.kind != other.kind:
            return False  # a rate alone is a tbf, and a netem with a rate is not one
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "limit":
                # The kernel always reports a netem's limit; none asked for is netem's default, which a
                # limit set before and no longer wanted must go back to.
                if (mine or NETEM_LIMIT) != (theirs or NETEM_LIMIT):
                    return False
            elif f.name == "rate_bit":
                if (mine is None) != (theirs is None) or (mine is not None and mine // 8 != theirs // 8):
                    return False  # the kernel keeps whole bytes a second
            elif f.name.endswith("_us"):
                if not _close_us(mine or 0, theirs or 0):
                    return False
            elif not math.isclose(mine or 0.0, theirs or 0.0, abs_tol=1e-4):
                return False  # a percentage; 0% is none at all
        return True


def _close_us(mine: int, theirs: int) -> bool:
    """netem keeps times in 64 ns ticks and tc prints them in whole microseconds, to six significant digits."""
    return abs(mine - theirs) <= 1 + max(mine, theirs) * 1e-5


def _spelled(conditions: Conditions) -> dict[str, str]:
    spelled = {}
    if conditions.delay_us is not None:
        spelled["delay"] = _time(conditions.delay_us)
    if conditions.jitter_us:
        spelled["jitter"] = _time(conditions.jitter_us)
    for key in PERCENT_KEYS:
        value = getattr(conditions, key)
        if value is not None:
            spelled[key] = _percent(value)
    if conditions.rate_bit is not None:
        spelled["rate"] = _rate(conditions.rate_bit)
    if conditions.limit is not None:
        spelled["limit"] = str(conditions.limit)
    return spelled


def _time(us: int) -> str:
    if us % 1_000_000 == 0 and us:
        return f"{us // 1_000_000}s"
    if us % 1000 == 0:
        return f"{us // 1000}ms"
    return f"{us}us"


def _percent(value: float) -> str:
    """Every digit it was given, never an exponent: `parse` reads it back as it was (33.333333%, 0.00001%)."""
    text = format(Decimal(repr(value)), "f")
    return (text.rstrip("0").rstrip(".") if "." in text else text) + "%"


def _rate(bits: int) -> str:
    for unit in ("gbit", "mbit", "kbit"):
        size = _RATE_BIT[unit]
        if bits % size == 0:
            return f"{bits // size}{unit}"
    return f"{bits}bit"


# --------------------------------------------------------------------------- reading what people write


def parse(value: Any) -> Conditions:
    """Read `{delay: 40ms, jitter: 5ms, loss: 1%, ...}` (the file's, or the command line's); raise ConditionsError."""
    if not isinstance(value, Mapping):
        raise ConditionsError(f"must be a mapping of {', '.join(KEYS)}")
    unknown = [str(key) for key in value if key not in KEYS]
    if unknown:
        raise ConditionsError(f"{unknown[0]}: unknown key (expected one of: {', '.join(KEYS)})")
    found = Conditions(
        delay_us=_parse_time(value, "delay"),
        jitter_us=_parse_time(value, "jitter"),
        loss=_parse_percent(value, "loss"),
        corrupt=_parse_percent(value, "corrupt"),
        duplicate=_parse_percent(value, "duplicate"),
        reorder=_parse_percent(value, "reorder"),
        rate_bit=_parse_rate(value),
        limit=_parse_limit(value),
    )
    if found.jitter_us is not None and found.delay_us is None:
        raise ConditionsError("jitter: needs a delay (jitter varies it)")
    if found.jitter_us is not None and found.jitter_us > MAX_JITTER_US:
        raise ConditionsError(f"jitter: {value['jitter']!r} is over 2.147483s, the most netem takes")
    if found.reorder is not None and found.delay_us is None:
        raise ConditionsError("reorder: needs a delay (reordered packets skip it)")
    if found.empty:
        raise ConditionsError(f"names no condition (one of: {', '.join(KEYS)})")
    return found


def _text(value: Mapping[str, Any], key: str) -> str | None:
    raw = value.get(key)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ConditionsError(f"{key}: {raw!r} is not a value")
    return str(raw).strip()


def _parse_time(value: Mapping[str, Any], key: str) -> int | None:
    text = _text(value, key)
    if text is None:
        return None
    match = _TIME.fullmatch(text)
    if match is None:
        raise ConditionsError(f"{key}: {text!r} is not a time (a number with us, ms or s: 40ms)")
    us = round(float(match[1]) * _TIME_US[match[2]])
    if us > MAX_DELAY_US:
        raise ConditionsError(f"{key}: {text!r} is over a minute")
    return us


def _parse_percent(value: Mapping[str, Any], key: str) -> float | None:
    text = _text(value, key)
    if text is None:
        return None
    match = _PERCENT.fullmatch(text)
    if match is None or float(match[1]) > 100:
        raise ConditionsError(f"{key}: {text!r} is not a percentage (0% to 100%, written with %: 1%)")
    return float(match[1])


def _parse_rate(value: Mapping[str, Any]) -> int | None:
    text = _text(value, "rate")
    if text is None:
        return None
    match = _RATE.fullmatch(text)
    if match is None:
        raise ConditionsError(f"rate: {text!r} is not a rate (a number with bit, kbit, mbit or gbit: 10mbit)")
    bits = round(float(match[1]) * _RATE_BIT[match[2]])
    if bits < 8:
        raise ConditionsError(f"rate: {text!r} is below a byte a second")
    return bits


def _parse_limit(value: Mapping[str, Any]) -> int | None:
    raw = value.get("limit")
    if raw is None:
        return None
    number = int(raw) if isinstance(raw, str) and raw.isascii() and raw.isdigit() else raw  # as `spelled` writes it
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_LIMIT:
        raise ConditionsError(f"limit: {raw!r} is not a number of packets (1 to {MAX_LIMIT})")
    return number


# --------------------------------------------------------------------------- reading what the kernel says


@dataclass(frozen=True)
class LiveQdisc:
    kind: str  # "netem", "tbf", or another qdisc someone set ("htb", ...)
    # For netem and tbf; None for other kinds and for settings that Conditions cannot say (a correlation,
    # a slot, ecn, a loss model, a peak rate, ...): those never match what composens wants.
    conditions: Conditions | None


DEFAULT_KINDS = ("noqueue", "pfifo_fast", "mq", "fq_codel", "pfifo", "bfifo", "noop")


def parse_qdiscs(items: list[dict[str, Any]]) -> dict[str, LiveQdisc]:
    """Read `tc -json qdisc show`: each interface's root qdisc, when it is not the kernel's default."""
    found: dict[str, LiveQdisc] = {}
    for item in items:
        if not item.get("root") or item.get("kind") in DEFAULT_KINDS:
            continue
        kind = str(item.get("kind"))
        options = item.get("options")
        conditions = _from_kernel(kind, options) if isinstance(options, Mapping) else None
        found[str(item.get("dev"))] = LiveQdisc(kind, conditions)
    return found


# What tc 6.1 prints for the qdiscs composens sets, read on Debian's kernel 6.1 (tests/unit/test_conditions.py
# keeps the samples). Times are seconds, shares are fractions and rates are bytes a second:
#   tbf:   {"rate": 125000, "burst": 16384, "lat": 200000}
#   netem: {"limit": 1000, "delay": {"delay": 0.05, "jitter": 0.002, "correlation": 0},
#           "loss-random": {"loss": 0.01, "correlation": 0}, "duplicate": {"duplicate": 0.002, "correlation": 0},
#           "reorder": {"reorder": 0.25, "correlation": 0}, "corrupt": {"corrupt": 0.001, "correlation": 0},
#           "rate": {"rate": 125000, "packetoverhead": 0, "cellsize": 0, "celloverhead": 0}, "ecn": false, "gap": 1}
# Parts are left out when they are zero (no "delay" without one); "gap" is 1 when there is reordering.
_TBF_KEYS = {"rate", "burst", "lat", "limit"}  # tc prints the limit instead of lat when lat would be negative
# "seed" is the random generator's (newer kernels and tc report one always): not a condition.
_NETEM_KEYS = {"limit", "delay", "loss-random", "duplicate", "reorder", "corrupt", "rate", "ecn", "gap", "seed"}
_NETEM_SHARES = {"loss-random": "loss", "duplicate": "duplicate", "reorder": "reorder", "corrupt": "corrupt"}


class _Unsaid(Exception):
    """A setting Conditions cannot say, or an answer tc would not give."""


def _from_kernel(kind: str, options: Mapping[str, Any]) -> Conditions | None:
    try:
        if kind == "tbf":
            if set(options) - _TBF_KEYS:
                return None  # a peak rate, an overhead: not composens' token bucket
            return Conditions(rate_bit=_int(options, "rate") * 8)
        if kind == "netem":
            return _netem(options)
    except _Unsaid:
        return None
    return None


def _netem(options: Mapping[str, Any]) -> Conditions:
    if set(options) - _NETEM_KEYS or options.get("ecn", False) is not False:
        raise _Unsaid  # a slot, a loss model (gemodel, state), ecn, ...
    shares = {name: _part(options, key) for key, name in _NETEM_SHARES.items()}
    percent = {name: round(_float(part, name) * 100, 6) if part else None for name, part in shares.items()}
    gap = options.get("gap", 0)
    if gap not in (0, 1):
        raise _Unsaid  # reordering every nth packet
    if gap == 0:
        percent["reorder"] = None  # idle: tc sets a gap of 1 with a reorder, and a replace without one keeps it
    rate = _part(options, "rate")
    if any(rate.get(key, 0) != 0 for key in ("packetoverhead", "cellsize", "celloverhead")):
        raise _Unsaid
    delay_us = jitter_us = None
    if delay := _part(options, "delay"):
        delay_us, jitter_us = _micro(_float(delay, "delay")), _micro(_float(delay, "jitter", 0.0)) or None
    return Conditions(
        delay_us=delay_us,
        jitter_us=jitter_us,
        loss=percent["loss"],
        corrupt=percent["corrupt"],
        duplicate=percent["duplicate"],
        reorder=percent["reorder"],
        rate_bit=_int(rate, "rate") * 8 if rate else None,
        limit=_int(options, "limit"),
    )


def _part(options: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """One of netem's parts, {} when it is left out; a correlation is a setting Conditions cannot say."""
    part = options.get(key) or {}
    if not isinstance(part, Mapping) or part.get("correlation", 0) != 0:
        raise _Unsaid
    return part


def _float(holder: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = holder.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _Unsaid
    return float(value)


def _int(holder: Mapping[str, Any], key: str) -> int:
    value = holder.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Unsaid
    return value


def _micro(seconds: float) -> int:
    return round(seconds * 1_000_000)
