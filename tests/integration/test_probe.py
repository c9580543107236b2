"""In-process ping across a veth pair between two namespaces of the test's own (no engine needed)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from composens.model.checks import Check, Ping
from composens.system.run import probe
from composens.system.run.probe import Target
from tests.integration.conftest import NETNS_DIR, run

pytestmark = pytest.mark.integration

# Benchmarking and documentation ranges only: nothing on a real network answers them.
A4, B4, NOBODY4 = "198.18.0.1", "198.18.0.2", "198.18.255.254"
A6, B6, NOWHERE6 = "2001:db8:c0de::1", "2001:db8:c0de::2", "2001:db8:dead::1"


@dataclass(frozen=True)
class Pair:
    a: str  # netns names, each end of the veth pair in one
    b: str

    @property
    def path_a(self) -> str:
        return str(NETNS_DIR / self.a)


@pytest.fixture
def pair() -> Iterator[Pair]:
    tag = uuid.uuid4().hex[:8]
    names = Pair(f"cnsprobe-{tag}a", f"cnsprobe-{tag}b")
    made: list[str] = []
    ends = ((names.a, f"cp{tag}a", A4, A6), (names.b, f"cp{tag}b", B4, B6))
    try:
        for name in (names.a, names.b):
            run("ip", "netns", "add", name)
            made.append(name)
        (_, if_a, _, _), (_, if_b, _, _) = ends
        run("ip", "link", "add", "name", if_a, "netns", names.a, "type", "veth", "peer", "name", if_b, "netns", names.b)
        for name, ifname, v4, v6 in ends:
            # DAD off before the link is up, as composens wires it, so IPv6 answers at once.
            run("ip", "netns", "exec", name, "sh", "-c", f"echo 0 > /proc/sys/net/ipv6/conf/{ifname}/accept_dad")
            run("ip", "-n", name, "addr", "add", f"{v4}/15", "dev", ifname)
            run("ip", "-n", name, "addr", "add", f"{v6}/64", "dev", ifname, "nodad")
            run("ip", "-n", name, "link", "set", "dev", ifname, "up")
        for name, ifname, _, _ in ends:
            wait_until_up(name, ifname)
        yield names
    finally:
        for name in made:
            run("ip", "netns", "delete", name, check=False)  # takes the veth pair with it


def wait_until_up(netns: str, ifname: str) -> None:
    """Wait for the kernel to report the link up: until then its first neighbour solicitation can be lost."""
    deadline = time.monotonic() + 10
    while True:
        (link,) = json.loads(run("ip", "-n", netns, "-json", "link", "show", "dev", ifname).stdout)
        if link.get("operstate") == "UP":
            return
        assert time.monotonic() < deadline, f"{ifname} in {netns} is still {link.get('operstate')}"
        time.sleep(0.01)


def own_namespace() -> int:
    return os.stat("/proc/self/ns/net").st_ino


@pytest.mark.parametrize("address", [B4, B6])
def test_ping_across_the_pair_gets_every_reply(pair: Pair, address: str) -> None:
    before = own_namespace()
    echo = probe.ping(pair.path_a, address, count=3, timeout=2)
    assert len(echo.rtts_ms) == 3, echo
    assert all(0 < rtt < 1000 for rtt in echo.rtts_ms)
    assert echo.problem is None
    assert own_namespace() == before  # only the probing thread moved


def test_unanswered_address_on_the_subnet_gets_no_reply(pair: Pair) -> None:
    echo = probe.ping(pair.path_a, NOBODY4, count=2, timeout=0.5)
    assert echo.rtts_ms == ()


def test_address_without_route_gets_no_reply_and_says_why(pair: Pair) -> None:
    echo = probe.ping(pair.path_a, NOWHERE6, count=2, timeout=0.5)
    assert echo == probe.Echo((), "Network is unreachable")


def test_run_checks_pings_side_by_side_in_one_namespace(pair: Pair) -> None:
    # Six pings share the namespace's echo replies: each must count only its own.
    reach = [Check(f"reach {i}", Ping("a", B4 if i % 2 else B6)) for i in range(6)]
    isolated = Check("isolated", Ping("a", NOBODY4, count=2, timeout=0.5, expect="failure"))
    from_b = Check("from b", Ping("b", A4))
    targets = {
        "a": Target("a", None, pair.path_a, running=True),
        "b": Target("b", None, str(NETNS_DIR / pair.b), running=True),
    }
    results = probe.run_checks([*reach, isolated, from_b], targets)
    assert [(r.name, r.result, r.reason) for r in results] == [
        (c.name, "pass", None) for c in [*reach, isolated, from_b]
    ]
    assert all(len(r.rtts_ms) == 3 for r in results if r.name != "isolated")


def test_vanished_namespace_is_an_error_result(pair: Pair) -> None:
    gone = str(NETNS_DIR / f"{pair.a}-gone")
    (result,) = probe.run_checks([Check("reach", Ping("a", B4))], {"a": Target("a", None, gone, running=True)})
    assert (result.result, result.reason) == ("error", f"ping from a failed: {gone}: No such file or directory")
