"""A hypothesis fuzz of x-composens with hostile strings in every field.

Each generated project must end in a one-line error with exit code 3, or in a plan whose every
printed command splits (as a shell splits it) into exactly the words `ip -batch` is given, none of
them holding a newline, '#', a quote, a backslash or NUL. The unit suite runs a few hundred
examples; the long run is separate:

    .venv/bin/python -m tests.fuzz --examples 10000
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composens.model import declared
from composens.model.errors import ConfigError, ExitCode
from composens.plan import changes, converge

HOSTILE = [
    "\n",
    "\r",
    "\x00",
    "#",
    "'",
    '"',
    "\\",
    "%",
    "$(id)",
    "`id`",
    ";",
    "&",
    "|",
    " ",
    "\t",
    "é",
    "\u202e",
    "\x1c",
    "*",
    "-",
    "/",
    ":",
    "..",
]
VALID_BASES = ["eth1", "10.0.0.1/24", "2001:db8::1/64", "fe80::1", "default", "10.0.0.0/24", "r1", "lab", "192.0.2.1"]

hostile_text = st.one_of(
    st.lists(st.sampled_from([*HOSTILE, "a", "1", "_", "."]), max_size=12).map("".join),
    st.builds(
        lambda base, bad, tail: base + bad + tail,
        st.sampled_from(VALID_BASES),
        st.sampled_from(HOSTILE),
        st.text(max_size=6),
    ),
    st.builds(lambda bad, base: bad + base, st.sampled_from(HOSTILE), st.sampled_from(VALID_BASES)),
    st.text(max_size=40),
    st.text(min_size=15, max_size=80),  # over-long
    st.sampled_from(VALID_BASES),
)
scalar = st.one_of(st.none(), st.integers(-5, 70000), hostile_text, st.booleans())
value = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)
names = st.sampled_from(["a", "b", "r1", "host", "x/y", "", "a-2"])
ifname = st.one_of(hostile_text, st.sampled_from(["eth1", "e2", "up", "mtu", "a.b", "x@y", "p+1"]))
endpoint = st.one_of(st.builds(lambda n, i: f"{n}:{i}", names, ifname), hostile_text, value)
address = st.one_of(st.sampled_from(["10.0.0.1/24", "10.0.0.2/24", "2001:db8::1/64", "fe80::1/64"]), hostile_text)
route = st.one_of(
    st.builds(
        lambda dest, gw, extra: f"{dest} via {gw}{extra}",
        st.sampled_from(["default", "10.9.0.0/16", "2001:db8:9::/48"]) | hostile_text,
        st.sampled_from(["10.0.0.9", "2001:db8::9", "fe80::9"]) | hostile_text,
        st.sampled_from(["", " dev eth1", " metric 5", " dev eth1 metric 7"]) | hostile_text.map(lambda t: " " + t),
    ),
    hostile_text,
)
link = st.fixed_dictionaries({"endpoints": st.lists(endpoint, max_size=3)}, optional={"mtu": value})
lan = st.fixed_dictionaries({"endpoints": st.lists(endpoint, max_size=4)}, optional={"mtu": value})
top_level = st.fixed_dictionaries(
    {},
    optional={
        "links": st.lists(link, max_size=3) | value,
        "lans": st.dictionaries(ifname, lan, max_size=2) | value,
        "netns_prefix": st.one_of(hostile_text, value),
        "hub": st.one_of(hostile_text, value),
        "host": st.fixed_dictionaries(
            {},
            optional={
                "addresses": st.dictionaries(ifname, st.lists(address, max_size=2)),
                "routes": st.lists(route, max_size=2),
            },
        )
        | value,
    },
)
service_ext = st.fixed_dictionaries(
    {},
    optional={
        "addresses": st.dictionaries(ifname, st.lists(address, max_size=2) | value, max_size=3),
        "routes": st.lists(route, max_size=3) | value,
        "netns": st.one_of(hostile_text, value),
    },
)
services = st.dictionaries(
    names,
    st.fixed_dictionaries(
        {"network_mode": st.sampled_from(["none", "host", "service:a", "bridge"])},
        optional={"x-composens": service_ext, "scale": st.one_of(st.integers(0, 3), hostile_text)},
    ),
    max_size=4,
)
projects = st.builds(lambda top, svcs: {"name": "p", "x-composens": top, "services": svcs}, top_level, services)

UNSAFE = ("\n", "\r", "#", "\x00", "'", '"', "\\")


def check_project(config: dict[str, Any]) -> str:
    """Parse and plan one project; raise AssertionError on anything but the two allowed outcomes."""
    try:
        topo = declared.parse(config, source="f")
    except ConfigError as e:
        error = e
    else:
        error = None
    if error is not None:
        assert error.exit_code == ExitCode.CONFIG
        assert "\n" not in error.message, error.message
        assert "\r" not in error.message, error.message
        return "error"
    found = converge.from_scratch(topo)

    def netns_of(node: str) -> str | None:
        return topo.node(node).netns

    for change in found.changes:
        words = change.words(netns_of)
        line = changes.batch_line(change, netns_of)
        assert line.split() == words, line  # what ip -batch reads is the words, no more, no fewer
        for word in words:
            assert word
            assert not any(c in word for c in UNSAFE), repr(word)
            assert not any(c.isspace() for c in word), repr(word)
        netns = netns_of(change.node)
        if isinstance(change, changes.WriteSysctls):
            expected = [*(["ip", "netns", "exec", netns] if netns else []), *words]
        else:
            expected = ["ip", *(["-n", netns] if netns else []), *words]
        assert shlex.split(changes.command(change, netns_of)) == expected
    return "plan"


def run(examples: int) -> dict[str, int]:
    outcomes = {"error": 0, "plan": 0}

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(projects)
    def fuzz(config: dict[str, Any]) -> None:
        outcomes[check_project(config)] += 1

    fuzz()
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    args = parser.parse_args()
    outcomes = run(args.examples)
    total = sum(outcomes.values())
    print(f"{total} examples: {outcomes['error']} one-line errors (exit 3), {outcomes['plan']} plans, all safe")
    sys.exit(0)


if __name__ == "__main__":
    main()
