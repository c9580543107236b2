"""Link conditions: parsing and its errors, the tc words, the spelling, and reading back what the kernel says.

The kernel samples are real: `tc -json qdisc show` of iproute2 6.1 on Debian's kernel 6.1.0-57-amd64, captured
in the guest of tests/integration/test_netem_kernel.py after composens' own `tc qdisc replace` lines (the
foreign ones after hand-written tc lines). That test proves them again on every CI run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from composens.model.conditions import (
    MAX_DELAY_US,
    MAX_JITTER_US,
    MAX_LIMIT,
    Conditions,
    ConditionsError,
    LiveQdisc,
    parse,
    parse_qdiscs,
)

EVERY_KEY = {
    "delay": "10ms",
    "jitter": "2ms",
    "loss": "0.5%",
    "corrupt": "0.1%",
    "duplicate": "0.2%",
    "reorder": "25%",
    "rate": "100mbit",
    "limit": 2000,
}
KEYS = "delay, jitter, loss, corrupt, duplicate, reorder, rate, limit"

# --------------------------------------------------------------------------- reading what people write


def test_parse_reads_every_key() -> None:
    assert parse(EVERY_KEY) == Conditions(
        delay_us=10_000,
        jitter_us=2_000,
        loss=0.5,
        corrupt=0.1,
        duplicate=0.2,
        reorder=25.0,
        rate_bit=100_000_000,
        limit=2000,
    )


@pytest.mark.parametrize(
    ("text", "us"), [("40ms", 40_000), ("1.5ms", 1_500), ("7us", 7), ("1.5us", 2), ("60s", MAX_DELAY_US)]
)
def test_parse_reads_times_in_microseconds(text: str, us: int) -> None:
    assert parse({"delay": text}).delay_us == us


@pytest.mark.parametrize(
    ("text", "bits"), [("1001bit", 1001), ("1.5kbit", 1500), ("10mbit", 10**7), ("40gbit", 4 * 10**10)]
)
def test_parse_reads_rates_in_bits(text: str, bits: int) -> None:
    assert parse({"rate": text}).rate_bit == bits


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("40ms", f"must be a mapping of {KEYS}"),
        ({"latency": "1ms"}, f"latency: unknown key (expected one of: {KEYS})"),
        ({"delay": "40 msec"}, "delay: '40 msec' is not a time (a number with us, ms or s: 40ms)"),
        ({"delay": 40}, "delay: '40' is not a time (a number with us, ms or s: 40ms)"),
        ({"delay": "61s"}, "delay: '61s' is over a minute"),
        ({"delay": True}, "delay: True is not a value"),
        ({"delay": [1]}, "delay: [1] is not a value"),
        ({"loss": "120%"}, "loss: '120%' is not a percentage (0% to 100%, written with %: 1%)"),
        ({"corrupt": "1"}, "corrupt: '1' is not a percentage (0% to 100%, written with %: 1%)"),
        ({"rate": "10mbps"}, "rate: '10mbps' is not a rate (a number with bit, kbit, mbit or gbit: 10mbit)"),
        ({"rate": "7bit"}, "rate: '7bit' is below a byte a second"),
        ({"limit": 0}, "limit: 0 is not a number of packets (1 to 1000000)"),
        ({"limit": "ten"}, "limit: 'ten' is not a number of packets (1 to 1000000)"),
        ({"limit": "1e3"}, "limit: '1e3' is not a number of packets (1 to 1000000)"),
        ({"limit": "0"}, "limit: '0' is not a number of packets (1 to 1000000)"),
        ({"limit": 10.0}, "limit: 10.0 is not a number of packets (1 to 1000000)"),
        ({"limit": True}, "limit: True is not a number of packets (1 to 1000000)"),
        ({"limit": MAX_LIMIT + 1}, "limit: 1000001 is not a number of packets (1 to 1000000)"),
        ({"jitter": "5ms"}, "jitter: needs a delay (jitter varies it)"),
        ({"delay": "10ms", "jitter": "3s"}, "jitter: '3s' is over 2.147483s, the most netem takes"),
        ({"reorder": "25%"}, "reorder: needs a delay (reordered packets skip it)"),
        ({}, f"names no condition (one of: {KEYS})"),
        ({"delay": None}, f"names no condition (one of: {KEYS})"),
    ],
)
def test_parse_errors(value: Any, message: str) -> None:
    with pytest.raises(ConditionsError) as caught:
        parse(value)
    assert str(caught.value) == message


def test_limit_is_read_as_spelled_reads_it() -> None:
    assert parse({"limit": "2000"}).limit == 2000  # the record keeps `spelled()`, and reads it back with parse


def test_jitter_up_to_netems_cap_is_taken() -> None:
    assert parse({"delay": "10ms", "jitter": "2.147483s"}).jitter_us == MAX_JITTER_US


# --------------------------------------------------------------------------- what composens says and runs


def test_tc_words_for_netem_with_every_key() -> None:
    conditions = parse(EVERY_KEY)
    assert conditions.kind == "netem"
    assert conditions.tc_words() == [
        "netem", "limit", "2000", "delay", "10ms", "2ms", "loss", "0.5%", "corrupt", "0.1%",
        "duplicate", "0.2%", "reorder", "25%", "rate", "100mbit",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"delay": "1.5ms"}, ["netem", "delay", "1500us"]),
        ({"delay": "2s", "jitter": "0ms"}, ["netem", "delay", "2s"]),
        ({"loss": "33.333333%"}, ["netem", "loss", "33.333333%"]),
        ({"loss": "0.00001%"}, ["netem", "loss", "0.00001%"]),
        ({"rate": "1mbit", "delay": "1ms"}, ["netem", "delay", "1ms", "rate", "1mbit"]),
        ({"rate": "1mbit", "limit": 10}, ["netem", "limit", "10", "rate", "1mbit"]),
    ],
)
def test_tc_words_for_netem(value: dict[str, Any], words: list[str]) -> None:
    assert parse(value).tc_words() == words


@pytest.mark.parametrize(
    ("rate", "burst"), [("1mbit", "16384"), ("1001bit", "16384"), ("100mbit", "125000"), ("40gbit", "50000000")]
)
def test_tc_words_for_a_rate_alone_are_a_token_bucket(rate: str, burst: str) -> None:
    conditions = parse({"rate": rate})
    assert conditions.kind == "tbf"
    assert conditions.tc_words() == ["tbf", "rate", rate, "burst", burst, "latency", "200ms"]


def test_str_says_them_as_the_file_does() -> None:
    assert str(parse(EVERY_KEY)) == (
        "delay 10ms jitter 2ms loss 0.5% corrupt 0.1% duplicate 0.2% reorder 25% rate 100mbit limit 2000"
    )
    assert str(parse({"rate": "1.5kbit"})) == "rate 1500bit"
    assert str(Conditions()) == "none"


def test_spelled_is_the_files_spelling() -> None:
    assert parse(EVERY_KEY).spelled() == {**EVERY_KEY, "limit": "2000"}
    assert parse({"delay": "2s", "jitter": "0ms", "loss": "100%"}).spelled() == {"delay": "2s", "loss": "100%"}


_percents = st.one_of(
    st.none(),
    st.integers(0, 100).map(float),
    st.decimals(0, 100, places=6).map(float),
    st.decimals(0, 1, places=12).map(float),
)


@st.composite
def _conditions(draw: st.DrawFn) -> Conditions:
    delay = draw(st.one_of(st.none(), st.integers(0, MAX_DELAY_US)))
    with_delay = delay is not None
    found = Conditions(
        delay_us=delay,
        jitter_us=draw(st.one_of(st.none(), st.integers(1, MAX_JITTER_US))) if with_delay else None,
        loss=draw(_percents),
        corrupt=draw(_percents),
        duplicate=draw(_percents),
        reorder=draw(_percents) if with_delay else None,
        rate_bit=draw(st.one_of(st.none(), st.integers(8, 10**11))),
        limit=draw(st.one_of(st.none(), st.integers(1, MAX_LIMIT))),
    )
    return found if not found.empty else Conditions(limit=1)


@given(_conditions())
def test_spelled_reads_back_as_it_was(conditions: Conditions) -> None:
    assert parse(conditions.spelled()) == conditions


# --------------------------------------------------------------------------- reading what the kernel says

LO = {"kind": "noqueue", "handle": "0:", "dev": "lo", "root": True, "refcnt": 2, "options": {}}


def qdisc(kind: str, options: dict[str, Any], dev: str = "va") -> list[dict[str, Any]]:
    return [LO, {"kind": kind, "handle": "8001:", "dev": dev, "root": True, "refcnt": 2, "options": options}]


def part(key: str, value: float) -> dict[str, float]:
    return {key: value, "correlation": 0}


RATE_125K = {"rate": 125000, "packetoverhead": 0, "cellsize": 0, "celloverhead": 0}

# Whole answers, exactly as tc printed them.
DELAY_50MS = json.loads(
    '[{"kind":"noqueue","handle":"0:","dev":"lo","root":true,"refcnt":2,"options":{}},{"kind":"netem","handle":"8001:",'
    '"dev":"va","root":true,"refcnt":2,"options":{"limit":1000,"delay":{"delay":0.05,"jitter":0,"correlation":0},'
    '"ecn":false,"gap":0}}]'
)
EVERY_KEY_JSON = json.loads(
    '[{"kind":"netem","handle":"8006:","dev":"va","root":true,"refcnt":2,"options":{"limit":2000,"delay":{"delay":0.01,'
    '"jitter":0.002,"correlation":0},"loss-random":{"loss":0.005,"correlation":0},"duplicate":{"duplicate":0.002,'
    '"correlation":0},"reorder":{"reorder":0.25,"correlation":0},"corrupt":{"corrupt":0.001,"correlation":0},'
    '"rate":{"rate":12500000,"packetoverhead":0,"cellsize":0,"celloverhead":0},"ecn":false,"gap":1}}]'
)
RESET = json.loads(
    '[{"kind":"noqueue","handle":"0:","dev":"lo","root":true,"refcnt":2,"options":{}},'
    '{"kind":"noqueue","handle":"0:","dev":"va","root":true,"refcnt":2,"options":{}}]'
)
# delay 50ms set by a replace over EVERY_KEY: netem kept corrupt, rate and (idle, with a gap of 0) reorder.
REPLACED = json.loads(
    '[{"kind":"netem","handle":"800f:","dev":"va","root":true,"refcnt":2,"options":{"limit":1000,"delay":{"delay":0.05,'
    '"jitter":0,"correlation":0},"reorder":{"reorder":0.25,"correlation":0},"corrupt":{"corrupt":0.001,'
    '"correlation":0},"rate":{"rate":12500000,"packetoverhead":0,"cellsize":0,"celloverhead":0},"ecn":false,"gap":0}}]'
)

# (what composens set, the options tc printed for it)
READ_BACK = {
    "delay": ({"delay": "50ms"}, {"limit": 1000, "delay": part("delay", 0.05) | {"jitter": 0}, "ecn": False, "gap": 0}),
    "loss": ({"loss": "100%"}, {"limit": 1000, "loss-random": part("loss", 1), "ecn": False, "gap": 0}),
    "odd-values": (
        {"delay": "1.5ms", "jitter": "7us", "loss": "33.333333%", "rate": "1001bit"},
        {
            "limit": 1000,
            "delay": {"delay": 0.001499, "jitter": 6e-06, "correlation": 0},
            "loss-random": part("loss", 0.333333),
            "rate": {**RATE_125K, "rate": 125},
            "ecn": False,
            "gap": 0,
        },
    ),
    "extremes": (
        {"delay": "60s", "jitter": "2.147483s", "reorder": "0.0001%", "limit": 1_000_000},
        {
            "limit": 1000000,
            "delay": {"delay": 60, "jitter": 2.14748, "correlation": 0},
            "reorder": part("reorder", 1.00001e-06),
            "ecn": False,
            "gap": 1,
        },
    ),
    "fast-netem": (
        {"delay": "1ms", "rate": "40gbit"},
        {
            "limit": 1000,
            "delay": {"delay": 0.001, "jitter": 0, "correlation": 0},
            "rate": {**RATE_125K, "rate": 5000000000},
            "ecn": False,
            "gap": 0,
        },
    ),
    "zero-loss": (
        {"loss": "0%", "duplicate": "100%"},
        {"limit": 1000, "duplicate": part("duplicate", 1), "ecn": False, "gap": 0},
    ),
    "netem-rate": (
        {"rate": "1mbit", "delay": "1ms"},
        {
            "limit": 1000,
            "delay": {"delay": 0.001, "jitter": 0, "correlation": 0},
            "rate": RATE_125K,
            "ecn": False,
            "gap": 0,
        },
    ),
    "tbf": ({"rate": "1mbit"}, {"rate": 125000, "burst": 16384, "lat": 200000}),
    "tbf-odd": ({"rate": "1001bit"}, {"rate": 125, "burst": 16384, "lat": 199999}),
    "tbf-fast": ({"rate": "40gbit"}, {"rate": 5000000000, "burst": 49995000, "lat": 200001}),
}

# Settings made by hand that Conditions cannot say: (tc words, the options tc printed).
FOREIGN = {
    "correlation": ("netem", {"limit": 1000, "delay": {"delay": 0.01, "jitter": 0.002, "correlation": 0.25}}),
    "slot": (
        "netem",
        {
            "limit": 1000,
            "delay": {"delay": 0.01, "jitter": 0, "correlation": 0},
            "slot": {"min-delay": 0.001, "max-delay": 0.002, "packets": 0, "bytes": 0},
        },
    ),
    "ecn": ("netem", {"limit": 1000, "loss-random": part("loss", 0.01), "ecn": True}),
    "loss-model": ("netem", {"limit": 1000, "loss-gemodel": {"p": 0.01, "r": 0.1, "1-h": 0.7, "1-k": 0.001}}),
    "gap": (
        "netem",
        {
            "limit": 1000,
            "delay": {"delay": 0.01, "jitter": 0, "correlation": 0},
            "reorder": part("reorder", 0.25),
            "gap": 5,
        },
    ),
    "overhead": ("netem", {"limit": 1000, "rate": {**RATE_125K, "packetoverhead": 20}}),
    "peakrate": ("tbf", {"rate": 125000, "burst": 16384, "minburst": 1514, "lat": 200000}),
}


def live_options(kind: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    if kind == "netem":
        options = {"ecn": False, "gap": 0, **options}
    return qdisc(kind, options)


@pytest.mark.parametrize("name", READ_BACK)
def test_kernel_reading_is_what_was_set(name: str) -> None:
    value, options = READ_BACK[name]
    wanted = parse(value)
    found = parse_qdiscs(qdisc(wanted.kind, options))["va"]
    assert found.kind == wanted.kind
    assert found.conditions is not None
    assert wanted.same_as(found.conditions), f"set {wanted}, read {found.conditions}"


def test_kernel_reading_has_the_kernels_own_values() -> None:
    odd = parse_qdiscs(qdisc("netem", READ_BACK["odd-values"][1]))["va"].conditions
    assert odd == Conditions(delay_us=1499, jitter_us=6, loss=33.3333, rate_bit=1000, limit=1000)
    assert parse_qdiscs(EVERY_KEY_JSON) == {"va": LiveQdisc("netem", parse(EVERY_KEY))}
    assert parse_qdiscs(DELAY_50MS) == {"va": LiveQdisc("netem", Conditions(delay_us=50_000, limit=1000))}


def test_a_random_seed_is_not_a_condition() -> None:
    options = {**READ_BACK["delay"][1], "seed": 8147245391294337561}  # newer kernels report their generator's seed
    assert parse_qdiscs(qdisc("netem", options)) == {"va": LiveQdisc("netem", Conditions(delay_us=50_000, limit=1000))}


def test_kernel_default_qdiscs_are_not_conditions() -> None:
    assert parse_qdiscs(RESET) == {}
    assert parse_qdiscs([{**DELAY_50MS[1], "root": False, "parent": "1:1"}]) == {}


@pytest.mark.parametrize("name", FOREIGN)
def test_settings_conditions_cannot_say_are_never_a_match(name: str) -> None:
    kind, options = FOREIGN[name]
    assert parse_qdiscs(live_options(kind, options)) == {"va": LiveQdisc(kind, None)}


def test_other_qdiscs_are_read_as_their_kind() -> None:
    htb = {"kind": "htb", "handle": "1:", "dev": "eth0", "root": True, "options": {"r2q": 10, "default": "0x1"}}
    assert parse_qdiscs([htb]) == {"eth0": LiveQdisc("htb", None)}


@pytest.mark.parametrize(
    "options",
    [
        None,
        [],
        {"limit": "1000"},
        {"limit": 1000, "delay": 0.05},
        {"limit": 1000, "delay": {"delay": "50ms"}},
        {"limit": 1000, "delay": {"delay": -1}},
        {"limit": 1000, "loss-random": {"loss": True}},
        {"limit": 1000.5},
        {"limit": 1000, "rate": {"rate": 1.5}},
    ],
)
def test_malformed_netem_answers_are_unread_not_a_crash(options: Any) -> None:
    item = {"kind": "netem", "dev": "va", "root": True, "options": options}
    assert parse_qdiscs([item]) == {"va": LiveQdisc("netem", None)}


def test_replace_leftovers_show_in_the_reading() -> None:
    found = parse_qdiscs(REPLACED)["va"].conditions
    assert found == Conditions(delay_us=50_000, corrupt=0.1, rate_bit=100_000_000, limit=1000)  # reorder idle
    assert not parse({"delay": "50ms"}).same_as(found)


# --------------------------------------------------------------------------- same_as


@pytest.mark.parametrize(
    ("wanted", "found", "same"),
    [
        # tc prints times in whole microseconds from 64 ns ticks, to six significant digits
        (Conditions(delay_us=1500), Conditions(delay_us=1499, limit=1000), True),
        (Conditions(delay_us=1500), Conditions(delay_us=1497, limit=1000), False),
        (Conditions(delay_us=1_234_567), Conditions(delay_us=1_234_570, limit=1000), True),
        (Conditions(delay_us=1_234_567), Conditions(delay_us=1_234_600, limit=1000), False),
        # the kernel keeps whole bytes a second
        (Conditions(rate_bit=1001), Conditions(rate_bit=1000), True),
        (Conditions(rate_bit=1008), Conditions(rate_bit=1000), False),
        # percentages to six digits of the fraction; 0% is none
        (Conditions(loss=33.333333), Conditions(loss=33.3333, limit=1000), True),
        (Conditions(loss=33.34), Conditions(loss=33.3333, limit=1000), False),
        (Conditions(loss=0.0, duplicate=1.0), Conditions(duplicate=1.0, limit=1000), True),
        (Conditions(delay_us=1000, jitter_us=0), Conditions(delay_us=1000, limit=1000), True),
        (Conditions(delay_us=1000), Conditions(delay_us=1000, corrupt=0.1, limit=1000), False),
        # the kernel always has a limit: none asked for is netem's default of 1000 packets
        (Conditions(delay_us=1000, limit=10), Conditions(delay_us=1000, limit=10), True),
        (Conditions(delay_us=1000, limit=10), Conditions(delay_us=1000, limit=1000), False),
        (Conditions(delay_us=1000), Conditions(delay_us=1000, limit=1000), True),
        (Conditions(delay_us=1000, limit=1000), Conditions(delay_us=1000, limit=1000), True),
        (Conditions(delay_us=1000), Conditions(delay_us=1000, limit=10), False),  # a limit no longer wanted
        (Conditions(delay_us=1000), Conditions(delay_us=1000, limit=5000), False),
        # a rate alone is a tbf: a netem carrying the same rate is not it, nor the other way round
        (Conditions(rate_bit=10**6), Conditions(rate_bit=10**6, limit=1000), False),
        (Conditions(rate_bit=10**6, limit=1000), Conditions(rate_bit=10**6), False),
    ],
)
def test_same_as(wanted: Conditions, found: Conditions, same: bool) -> None:
    assert wanted.same_as(found) is same


# --------------------------------------------------------------------------- kernels without a qdisc (issue 21, 11)


def test_conditions_the_kernel_lacks_are_named_and_the_kernel_asked_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from composens.lab import lab
    from composens.model import declared
    from composens.model.errors import ConfigError
    from composens.model.record import State
    from composens.system.kernel import reading

    asked: list[set[str]] = []

    def missing(kinds: Any) -> set[str]:
        asked.append(set(kinds))
        return {"netem"} & set(kinds)

    monkeypatch.setattr(reading, "missing_qdisc_kinds", missing)
    links = [{"endpoints": [f"s{i}:a", f"s{i + 1}:b"], "netem": {"delay": f"{i + 1}ms"}} for i in range(3)]
    links.append({"endpoints": ["s0:r", "s1:r"], "netem": {"rate": "1mbit"}})
    config = {
        "name": "k",
        "x-composens": {"links": links, "lans": {"lan1": {"endpoints": ["s0:l", "s1:l"], "netem": {"loss": "1%"}}}},
        "services": {f"s{i}": {"image": "x"} for i in range(4)},
    }
    topo = declared.parse(config, source="f.yml")
    the_lab = lab.Lab(None, lab.Paths(tmp_path / "netns", tmp_path / "state"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as refused:
        the_lab.check_kernel(topo, State())
    assert str(refused.value) == (
        "this kernel has no sch_netem, which link end s0:a (delay 1ms), link end s1:b (delay 1ms), link end s1:a "
        "(delay 2ms), link end s2:b (delay 2ms) and 3 more need; modprobe sch_netem, or use a kernel built with "
        "it; a rate alone needs only tbf"
    )
    assert asked == [{"netem", "tbf"}]
    the_lab._check_qdiscs([("link end s0:r", parse({"rate": "1mbit"}))])
    assert asked == [{"netem", "tbf"}]  # tbf is known to be there: not asked again
