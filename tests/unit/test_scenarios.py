"""Scenarios: parsing and every validation error, the verdicts from records, the runner with fake actions and probes,
and the reports (JSON, JUnit, timeline)."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import yaml

from composens.interop.junit import scenarios_junit
from composens.model import declared, scenarios
from composens.model.conditions import Conditions
from composens.model.errors import ConfigError
from composens.model.scenarios import (
    Criterion,
    ExpectCheck,
    ExpectProbe,
    FlapStep,
    HealStep,
    LinkStep,
    NetemStep,
    PartitionStep,
    Probe,
    ProbeRecord,
    Request,
    ScenarioReport,
    ServiceStep,
    SleepStep,
    Span,
    StepRecord,
    Verdict,
)
from composens.model.topology import Endpoint
from composens.show.render import scenario_json, scenario_tables
from composens.show.timeline import timeline_svg
from composens.system.run.scenario import Done, Runner, StepFailed

BASE = """
name: lab
x-composens:
  links:
    - endpoints: ["a:eth1", "b:eth1"]
    - endpoints: ["b:eth2", "c:eth1"]
  lans:
    lan1: {endpoints: ["a:lan0", "b:lan0", "c:lan0", "d:lan0"]}
  checks:
    - {name: a reaches c, ping: {from: a, to: 198.18.2.2}}
  probes:
    a-c: {ping: {from: a, to: 198.18.2.2, interval: 10ms}}
    b-c: {ping: {from: b, to: "2001:db8::2"}}
  scenarios:
    s1:
      steps:
        - link: {down: "a:eth1"}
services:
  a: {image: i, network_mode: none}
  b: {image: i, network_mode: none}
  c: {image: i, network_mode: none}
  d: {image: i, network_mode: none}
  side: {image: i, network_mode: "service:a"}
  hostnet: {image: i, network_mode: host}
  web: {image: i, scale: 2}
"""


def config(*, probes: Any = None, scenarios_: Any = None, steps: Any = None) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(BASE)
    if probes is not None:
        data["x-composens"]["probes"] = probes
    if scenarios_ is not None:
        data["x-composens"]["scenarios"] = scenarios_
    if steps is not None:
        data["x-composens"]["scenarios"] = {"s1": {"steps": steps}}
    return data


def parse(data: dict[str, Any]) -> scenarios.Declared:
    topo = declared.parse(data, source="docker-compose.yml")
    assert topo.scenarios is not None
    return topo.scenarios  # type: ignore[no-any-return]


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(data)
    return caught.value.message


# --------------------------------------------------------------------------- parsing


def test_the_issues_example_parses() -> None:
    data = config(
        probes={"west-east": {"ping": {"from": "a", "to": "198.18.2.2", "interval": "10ms"}}},
        scenarios_={
            "core-a-fails": {
                "description": "core-a's control plane dies silently; traffic moves to core-b",
                "steps": [
                    {"pause": "b"},
                    {"expect": {"probe": "west-east", "recovers_within": "10s", "outage": {"max": "5s"}}},
                    {"expect": {"check": "a reaches c", "within": "15s"}},
                    {"unpause": "b"},
                ],
            },
            "flapping-uplink": {
                "steps": [
                    {"flap": {"link": "a:eth1", "times": 5, "down": "1s", "up": "3s"}},
                    {"expect": {"probe": "west-east", "loss": {"max": "15%"}}},
                ]
            },
        },
    )
    found = parse(data)
    assert found.probes["west-east"] == Probe("west-east", "ping", "a", "198.18.2.2", 0.01, 1.0)
    core = found.scenarios["core-a-fails"]
    assert core.description == "core-a's control plane dies silently; traffic moves to core-b"
    assert core.probes == ("west-east",)
    assert core.steps == (
        ServiceStep("pause", ("b",)),
        ExpectProbe("west-east", 10.0, (Criterion("outage", "max", 5.0),)),
        ExpectCheck("a reaches c", 15.0),
        ServiceStep("unpause", ("b",)),
    )
    flap = found.scenarios["flapping-uplink"]
    assert flap.steps == (
        FlapStep(Endpoint("a", "eth1"), 5, Span(1.0, 1.0), Span(3.0, 3.0)),
        ExpectProbe("west-east", None, (Criterion("loss", "max", 15.0),)),
    )
    assert [step.text for step in flap.steps] == [
        "flap a:eth1 5 times (down 1 s, up 3 s)",
        "expect west-east loss <= 15 %",
    ]


def test_every_step_kind_parses() -> None:
    steps = [
        {"link": {"down": "a:eth1"}},
        {"link": {"up": "a:eth1"}},
        {"flap": {"link": "b:eth2", "times": 3, "down": {"min": "100ms", "max": "1s"}, "up": 2, "seed": 7}},
        {"netem": {"a:eth1": {"delay": "40ms", "loss": "1%"}, "b:eth1": "reset"}},
        {"netem": "reset"},
        {"partition": [["a", "b"], ["c"]]},
        "heal",
        {"heal": None},
        {"pause": ["a", "b"]},
        {"unpause": "a"},
        {"stop": "c"},
        {"start": "c"},
        {"kill": "d"},
        {"restart": "d"},
        {"exec": {"service": "a", "command": "ip link", "timeout": "5s"}},
        {"exec": {"service": "hostnet", "command": ["true"]}},
        {"sleep": "2.5s"},
        {"expect": {"probe": "a-c", "rtt": {"max": "5ms", "p99.9": "2ms"}, "over": "scenario"}},
        {"expect": {"probe": "a-c", "outage": {"min": "1s", "max": "3s"}, "loss": {"min": 10}}},
        {"expect": {"check": "a reaches c"}},
    ]
    found = parse(config(steps=steps)).scenarios["s1"]
    assert [step.text for step in found.steps] == [
        "link down a:eth1",
        "link up a:eth1",
        "flap b:eth2 3 times (down 100 ms to 1 s, up 2 s, seed 7)",
        "netem a:eth1 delay 40ms loss 1%; netem reset b:eth1",
        "netem reset",
        "partition a, b | c",
        "heal",
        "heal",
        "pause a b",
        "unpause a",
        "stop c",
        "start c",
        "kill d",
        "restart d",
        "exec a: ip link",
        "exec hostnet: true",
        "sleep 2.5 s",
        "expect a-c rtt <= 5 ms, rtt p99.9 <= 2 ms over the scenario",
        "expect a-c outage >= 1 s, outage <= 3 s, loss >= 10 %",
        "expect check 'a reaches c'",
    ]
    flap = found.steps[2]
    assert isinstance(flap, FlapStep)
    periods = flap.periods()
    assert periods == flap.periods()  # seeded: the same every run
    assert all(0.1 <= down <= 1.0 and up == 2.0 for down, up in periods)
    assert len({down for down, _ in periods}) == 3
    partition = found.steps[5]
    # a-b stays, b-c loses c's end; on lan1 the group of a and b keeps it, c loses its end; d is in no group.
    assert partition == PartitionStep((("a", "b"), ("c",)), (Endpoint("c", "eth1"), Endpoint("c", "lan0")))
    assert found.services() == {"a", "b", "c", "d"}
    assert found.ends() == {
        Endpoint("a", "eth1"),
        Endpoint("b", "eth2"),
        Endpoint("b", "eth1"),
        Endpoint("c", "eth1"),
        Endpoint("c", "lan0"),
    }


def test_a_lan_partition_keeps_the_largest_group_and_probes_default_to_all() -> None:
    found = parse(config(steps=[{"partition": [["a"], ["b", "c"]]}])).scenarios["s1"]
    (partition,) = found.steps
    assert isinstance(partition, PartitionStep)
    # a-b loses b's end (b's group is the later); lan1: b and c outnumber a, so a loses its end.
    assert partition.cut == (Endpoint("b", "eth1"), Endpoint("a", "lan0"))
    assert found.probes == ("a-c", "b-c")


def test_durations_and_percentages() -> None:
    assert scenarios.parse_duration("10ms") == pytest.approx(0.01)
    assert scenarios.parse_duration("1.5s") == 1.5
    assert scenarios.parse_duration("250us") == pytest.approx(0.00025)
    assert scenarios.parse_duration("2m") == 120
    assert scenarios.parse_duration(3) == 3.0
    for bad in ("fast", "-1s", 0, True, "1h", "nan", float("inf"), "2 days"):
        with pytest.raises(ValueError, match=r"duration|longer than a day"):
            scenarios.parse_duration(bad)
    assert scenarios.parse_percent("15%") == 15.0
    assert scenarios.parse_percent(0.5) == 0.5
    for bad in ("15", "150%", -1, True):
        with pytest.raises(ValueError, match="percentage"):
            scenarios.parse_percent(bad)
    assert [scenarios.seconds_text(s) for s in (0, 0.00025, 0.01, 0.0125, 1, 2.5, 61.25)] == [
        "0 s",
        "250 us",
        "10 ms",
        "12.5 ms",
        "1 s",
        "2.5 s",
        "61.25 s",
    ]


W = "docker-compose.yml: x-composens"
S = f"{W}.scenarios.s1.steps[0]"
INVALID: list[tuple[str, dict[str, Any], str]] = [
    # probes
    ("probes-not-a-mapping", {"probes": ["a"]}, f"{W}.probes: must be a mapping of probe names to probes, e.g. {{west-east: {{ping: {{from: a, to: 192.0.2.1}}}}}}"),
    ("probe-bad-name", {"probes": {"-x": {"ping": {"from": "a", "to": "198.18.2.2"}}}}, f"{W}.probes.-x: '-x' is not a probe name (letters, digits, '_', '.', '@', '+', '-'; starting with a letter or digit)"),
    ("probe-not-a-mapping", {"probes": {"p": "ping a"}}, f"{W}.probes.p: must be a mapping (ping: {{from: SERVICE, to: ADDRESS}}, or tcp: {{..., port: N}})"),
    ("probe-no-kind", {"probes": {"p": {}}}, f"{W}.probes.p: needs exactly one of: ping, tcp"),
    ("probe-two-kinds", {"probes": {"p": {"ping": {}, "tcp": {}}}}, f"{W}.probes.p: needs exactly one of: ping, tcp"),
    ("probe-unknown-kind", {"probes": {"p": {"icmp": {}}}}, f"{W}.probes.p.icmp: unknown key (expected one of: ping, tcp)"),
    ("probe-unknown-key", {"probes": {"p": {"ping": {"from": "a", "to": "198.18.2.2", "count": 3}}}}, f"{W}.probes.p.ping.count: unknown key (expected one of: from, to, interval, timeout)"),
    ("probe-without-to", {"probes": {"p": {"ping": {"from": "a"}}}}, f"{W}.probes.p.ping: needs 'to'"),
    ("probe-unknown-service", {"probes": {"p": {"ping": {"from": "z", "to": "198.18.2.2"}}}}, f"{W}.probes.p.ping.from: unknown service 'z'"),
    ("probe-from-a-shared-namespace", {"probes": {"p": {"ping": {"from": "side", "to": "198.18.2.2"}}}}, f"{W}.probes.p.ping.from: service side has no network namespace of its own (network_mode: service:a); probe from a, whose namespace it shares"),
    ("probe-from-the-host-network", {"probes": {"p": {"ping": {"from": "hostnet", "to": "198.18.2.2"}}}}, f"{W}.probes.p.ping.from: service hostnet has no network namespace of its own (network_mode: host)"),
    ("probe-from-a-scaled-service", {"probes": {"p": {"ping": {"from": "web", "to": "198.18.2.2"}}}}, f"{W}.probes.p.ping.from: service web is scaled to 2; a probe needs exactly one container"),
    ("probe-bad-interval", {"probes": {"p": {"ping": {"from": "a", "to": "198.18.2.2", "interval": "fast"}}}}, f"{W}.probes.p.ping.interval: 'fast' is not a duration (e.g. 10ms, 1.5s, 2m, or a number of seconds)"),
    ("probe-interval-below-1ms", {"probes": {"p": {"ping": {"from": "a", "to": "198.18.2.2", "interval": "500us"}}}}, f"{W}.probes.p.ping.interval: '500us' is outside 1 ms to 60 s"),
    ("probe-zero-timeout", {"probes": {"p": {"ping": {"from": "a", "to": "198.18.2.2", "timeout": 0}}}}, f"{W}.probes.p.ping.timeout: 0 is not a duration above 0"),
    ("probe-timeout-over-a-minute", {"probes": {"p": {"ping": {"from": "a", "to": "198.18.2.2", "timeout": "2m"}}}}, f"{W}.probes.p.ping.timeout: '2m' is longer than 60 s"),
    ("probe-timeout-wraps-sequences", {"probes": {"p": {"ping": {"from": "a", "to": "198.18.2.2", "interval": "1ms", "timeout": "40s"}}}}, f"{W}.probes.p.ping.timeout: '40s' is too long for an interval of 1 ms: requests would share a sequence number; keep it under 32.768 s"),
    ("probe-bad-address", {"probes": {"p": {"ping": {"from": "a", "to": "198.18.2"}}}}, f"{W}.probes.p.ping.to: '198.18.2' is not an IP address"),
    ("probe-link-local", {"probes": {"p": {"ping": {"from": "a", "to": "fe80::1"}}}}, f"{W}.probes.p.ping.to: 'fe80::1' is link-local, which needs an interface; use a global address"),
    ("probe-scope-id", {"probes": {"p": {"ping": {"from": "a", "to": "fe80::1%eth1"}}}}, f"{W}.probes.p.ping.to: 'fe80::1%eth1' has a scope id, which probes do not support; use a global address"),
    ("tcp-without-port", {"probes": {"p": {"tcp": {"from": "a", "to": "198.18.2.2"}}}}, f"{W}.probes.p.tcp: needs 'port'"),
    ("tcp-bad-port", {"probes": {"p": {"tcp": {"from": "a", "to": "198.18.2.2", "port": 70000}}}}, f"{W}.probes.p.tcp.port: 70000 is not a port (1 to 65535)"),
    # scenarios
    ("scenarios-not-a-mapping", {"scenarios": ["s1"]}, f"{W}.scenarios: must be a mapping of scenario names to scenarios, e.g. {{core-fails: {{steps: [...]}}}}"),
    ("scenario-bad-name", {"scenarios": {"a b": {"steps": ["heal"]}}}, f"{W}.scenarios.'a b': 'a b' is not a scenario name (letters, digits, '_', '.', '@', '+', '-'; starting with a letter or digit)"),
    ("scenario-unknown-key", {"scenarios": {"s1": {"steps": ["heal"], "repeat": 2}}}, f"{W}.scenarios.s1.repeat: unknown key (expected one of: description, probes, steps)"),
    ("scenario-without-steps", {"scenarios": {"s1": {"description": "x"}}}, f"{W}.scenarios.s1.steps: must be a list of one or more steps"),
    ("scenario-empty-steps", {"scenarios": {"s1": {"steps": []}}}, f"{W}.scenarios.s1.steps: must be a list of one or more steps"),
    ("scenario-two-line-description", {"scenarios": {"s1": {"description": "a\nb", "steps": ["heal"]}}}, f"{W}.scenarios.s1.description: must be one line of text"),
    ("scenario-unknown-probe", {"scenarios": {"s1": {"probes": ["nope"], "steps": ["heal"]}}}, f"{W}.scenarios.s1.probes[0]: unknown probe 'nope' (declared: a-c, b-c)"),
    ("scenario-probes-not-a-list", {"scenarios": {"s1": {"probes": "a-c", "steps": ["heal"]}}}, f"{W}.scenarios.s1.probes: must be a list of probe names"),
    # steps
    ("step-not-a-mapping", {"steps": [5]}, f"{S}: must be a mapping with one of: link, flap, netem, partition, heal, pause, unpause, stop, start, kill, restart, exec, sleep, expect"),
    ("step-with-two-kinds", {"steps": [{"pause": "a", "sleep": 1}]}, f"{S}: must be a mapping with one of: link, flap, netem, partition, heal, pause, unpause, stop, start, kill, restart, exec, sleep, expect"),
    ("step-unknown-kind", {"steps": [{"reboot": "a"}]}, f"{S}.reboot: unknown step (expected one of: link, flap, netem, partition, heal, pause, unpause, stop, start, kill, restart, exec, sleep, expect)"),
    ("step-kind-without-value", {"steps": ["pause"]}, f"{S}: 'pause' needs a value (pause: ...)"),
    ("link-sideways", {"steps": [{"link": {"sideways": "a:eth1"}}]}, f"{S}.link.sideways: unknown key (expected one of: down, up)"),
    ("link-down-and-up", {"steps": [{"link": {"down": "a:eth1", "up": "a:eth1"}}]}, f"{S}.link: needs exactly one of: down, up"),
    ("link-not-an-end", {"steps": [{"link": {"down": "a"}}]}, f"{S}.link.down: 'a' is not 'SERVICE:IFNAME'"),
    ("link-unknown-service", {"steps": [{"link": {"down": "z:eth1"}}]}, f"{S}.link.down: unknown service 'z' (an end of a link or LAN of a service: SERVICE:IFNAME)"),
    ("link-host-end", {"steps": [{"link": {"down": "host:up0"}}]}, f"{S}.link.down: unknown service 'host' (an end of a link or LAN of a service: SERVICE:IFNAME)"),
    ("link-unknown-interface", {"steps": [{"link": {"down": "a:eth9"}}]}, f"{S}.link.down: a has no interface 'eth9' of a link or LAN (it has: eth1, lan0)"),
    ("flap-without-times", {"steps": [{"flap": {"link": "a:eth1", "down": 1, "up": 1}}]}, f"{S}.flap: needs 'times'"),
    ("flap-zero-times", {"steps": [{"flap": {"link": "a:eth1", "times": 0, "down": 1, "up": 1}}]}, f"{S}.flap.times: 0 is not a count (a whole number from 1 to 1000)"),
    ("flap-min-above-max", {"steps": [{"flap": {"link": "a:eth1", "times": 2, "down": {"min": "2s", "max": "1s"}, "up": 1}}]}, f"{S}.flap.down: min 2 s is above max 1 s"),
    ("flap-random-without-max", {"steps": [{"flap": {"link": "a:eth1", "times": 2, "down": {"min": "2s"}, "up": 1}}]}, f"{S}.flap.down: a random duration needs 'max'"),
    ("flap-bad-seed", {"steps": [{"flap": {"link": "a:eth1", "times": 2, "down": 1, "up": 1, "seed": "x"}}]}, f"{S}.flap.seed: 'x' is not a whole number"),
    ("flap-bad-duration", {"steps": [{"flap": {"link": "a:eth1", "times": 2, "down": "1 hour", "up": 1}}]}, f"{S}.flap.down: '1 hour' is not a duration (e.g. 10ms, 1.5s, 2m, or a number of seconds)"),
    ("netem-not-a-mapping", {"steps": [{"netem": ["a:eth1"]}]}, f"{S}.netem: must be a mapping of SERVICE:IFNAME to conditions (or reset), or `reset`"),
    ("netem-bad-condition", {"steps": [{"netem": {"a:eth1": {"delay": "fast"}}}]}, f"{S}.netem.a:eth1: delay: 'fast' is not a time (a number with us, ms or s: 40ms)"),
    ("netem-no-condition", {"steps": [{"netem": {"a:eth1": {}}}]}, f"{S}.netem.a:eth1: names no condition (one of: delay, jitter, loss, corrupt, duplicate, reorder, rate, limit)"),
    ("netem-unknown-end", {"steps": [{"netem": {"a:eth7": {"delay": "1ms"}}}]}, f"{S}.netem.a:eth7: a has no interface 'eth7' of a link or LAN (it has: eth1, lan0)"),
    ("partition-one-group", {"steps": [{"partition": [["a", "b"]]}]}, f"{S}.partition: must be a list of two or more groups of services, e.g. [[a, b], [c]]"),
    ("partition-empty-group", {"steps": [{"partition": [["a"], []]}]}, f"{S}.partition[1]: is an empty group"),
    ("partition-service-twice", {"steps": [{"partition": [["a", "b"], ["b"]]}]}, f"{S}.partition[1][0]: b is already in group 0"),
    ("partition-unknown-service", {"steps": [{"partition": [["a"], ["zz"]]}]}, f"{S}.partition[1][0]: unknown service 'zz'"),
    ("partition-nothing-to-cut", {"steps": [{"partition": [["a"], ["hostnet"]]}]}, f"{S}.partition: no link or LAN joins these groups: nothing to cut"),
    ("heal-with-a-value", {"steps": [{"heal": "all"}]}, f"{S}.heal: takes no value (write the step as `- heal`)"),
    ("pause-unknown-service", {"steps": [{"pause": "zz"}]}, f"{S}.pause: unknown service 'zz'"),
    ("pause-scaled-service", {"steps": [{"pause": "web"}]}, f"{S}.pause: service web is scaled to 2; a step needs exactly one container"),
    ("restart-empty-list", {"steps": [{"restart": []}]}, f"{S}.restart: needs a service, or a list of them"),
    ("kill-unknown-in-list", {"steps": [{"kill": ["a", "zz"]}]}, f"{S}.kill[1]: unknown service 'zz'"),
    ("exec-without-command", {"steps": [{"exec": {"service": "a"}}]}, f"{S}.exec: needs 'command'"),
    ("exec-empty-command", {"steps": [{"exec": {"service": "a", "command": " "}}]}, f"{S}.exec.command: must be a command (not empty, no NUL character)"),
    ("exec-command-not-words", {"steps": [{"exec": {"service": "a", "command": [1]}}]}, f"{S}.exec.command: must be a list of strings (run as they are) or a string (run by sh -c)"),
    ("exec-unknown-key", {"steps": [{"exec": {"service": "a", "command": "true", "user": "x"}}]}, f"{S}.exec.user: unknown key (expected one of: service, command, timeout)"),
    ("sleep-negative", {"steps": [{"sleep": "-1s"}]}, f"{S}.sleep: '-1s' is not a duration (e.g. 10ms, 1.5s, 2m, or a number of seconds)"),
    ("sleep-over-a-day", {"steps": [{"sleep": 100000}]}, f"{S}.sleep: 100000 is longer than a day"),
    # expectations
    ("expect-neither-probe-nor-check", {"steps": [{"expect": {"loss": {"max": "1%"}}}]}, f"{S}.expect: needs 'probe' or 'check'"),
    ("expect-unknown-probe", {"steps": [{"expect": {"probe": "zz", "loss": {"max": "1%"}}}]}, f"{S}.expect.probe: unknown probe 'zz' (declared: a-c, b-c)"),
    ("expect-probe-not-run", {"scenarios": {"s1": {"probes": ["b-c"], "steps": [{"expect": {"probe": "a-c", "loss": {"max": "1%"}}}]}}}, f"{S}.expect.probe: probe a-c is not among this scenario's probes (b-c)"),
    ("expect-nothing-to-judge", {"steps": [{"expect": {"probe": "a-c"}}]}, f"{S}.expect: needs at least one of: recovers_within, outage, loss, rtt"),
    ("expect-unknown-key", {"steps": [{"expect": {"probe": "a-c", "jitter": "1ms"}}]}, f"{S}.expect.jitter: unknown key (expected one of: probe, recovers_within, outage, loss, rtt, over)"),
    ("expect-loss-over-100", {"steps": [{"expect": {"probe": "a-c", "loss": {"max": "150%"}}}]}, f"{S}.expect.loss.max: '150%' is not a percentage from 0 to 100"),
    ("expect-loss-without-bound", {"steps": [{"expect": {"probe": "a-c", "loss": {}}}]}, f"{S}.expect.loss: needs min and/or max"),
    ("expect-outage-mean", {"steps": [{"expect": {"probe": "a-c", "outage": {"mean": "1s"}}}]}, f"{S}.expect.outage.mean: unknown key (expected one of: min, max)"),
    ("expect-rtt-bad-percentile", {"steps": [{"expect": {"probe": "a-c", "rtt": {"p101": "1ms"}}}]}, f"{S}.expect.rtt.p101: unknown key (expected max, or a percentile: p50, p99, p99.9...)"),
    ("expect-rtt-not-a-mapping", {"steps": [{"expect": {"probe": "a-c", "rtt": "1ms"}}]}, f"{S}.expect.rtt: must be a mapping of max or a percentile (p50, p99, p99.9...) to a duration"),
    ("expect-bad-over", {"steps": [{"expect": {"probe": "a-c", "loss": {"max": 1}, "over": "step"}}]}, f"{S}.expect.over: 'step' is neither since-fault nor scenario"),
    ("expect-recovery-over-the-scenario", {"steps": [{"expect": {"probe": "a-c", "recovers_within": "1s", "over": "scenario"}}]}, f"{S}.expect.recovers_within: is measured from a fault step; it cannot go with over: scenario"),
    ("expect-unknown-check", {"steps": [{"expect": {"check": "nope", "within": "1s"}}]}, f"{S}.expect.check: unknown check 'nope' (declared: a reaches c)"),
    ("expect-check-with-loss", {"steps": [{"expect": {"check": "a reaches c", "loss": {"max": 1}}}]}, f"{S}.expect.loss: unknown key (expected one of: check, within)"),
    ("expect-check-bad-within", {"steps": [{"expect": {"check": "a reaches c", "within": "soon"}}]}, f"{S}.expect.within: 'soon' is not a duration (e.g. 10ms, 1.5s, 2m, or a number of seconds)"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "message"), INVALID, ids=[case for case, _, _ in INVALID])
def test_every_invalid_declaration_is_one_line_naming_file_and_key(
    case: str, change: dict[str, Any], message: str
) -> None:
    data = config(probes=change.get("probes"), scenarios_=change.get("scenarios"), steps=change.get("steps"))
    got = error_of(data)
    assert got == message
    assert "\n" not in got


def test_unknown_top_level_key_lists_probes_and_scenarios() -> None:
    data = config()
    data["x-composens"]["scenario"] = {}
    assert error_of(data).endswith("probes, scenarios, capture)")


def test_a_scenario_on_another_host_is_refused_saying_where() -> None:
    from composens.model import hosts

    data = config()
    data["x-composens"]["hosts"] = {"h1": {"underlay": "198.18.200.1"}, "h2": {"underlay": "198.18.200.2"}}
    for name, spec in data["services"].items():
        if name in ("a", "b", "c", "d", "side"):
            spec["x-composens"] = {"host": "h1" if name in ("a", "b", "side") else "h2"}
    del data["services"]["web"], data["services"]["hostnet"]
    data["x-composens"]["scenarios"] = {
        "here": {"probes": ["a-c"], "steps": [{"link": {"down": "a:eth1"}}]},
        "there": {"probes": ["a-c"], "steps": [{"pause": "c"}, {"expect": {"check": "a reaches c"}}]},
    }
    topo = declared.parse(data, source="docker-compose.yml")
    assert topo.hosts is not None
    view = hosts.view(topo, topo.hosts, topo.hosts.hosts["h1"], 1500, "eth0")
    found = view.scenarios
    assert scenarios.placement_problem(found.scenarios["here"], found.probes, view) is None
    assert scenarios.placement_problem(found.scenarios["there"], found.probes, view) == (
        "docker-compose.yml: x-composens.scenarios.there: service c is on host h2, not on this host (h1); a scenario "
        "runs on the host of every service it touches (multi-host scenarios are not supported yet)"
    )
    view2 = hosts.view(topo, topo.hosts, topo.hosts.hosts["h2"], 1500, "eth0")
    assert scenarios.placement_problem(view2.scenarios.scenarios["there"], found.probes, view2) == (
        "docker-compose.yml: x-composens.scenarios.there: probe a-c (from a) is on host h1; check 'a reaches c' runs "
        "on another host, not on this host (h2); a scenario runs on the host of every service it touches "
        "(multi-host scenarios are not supported yet)"
    )


# --------------------------------------------------------------------------- verdicts


def record(pattern: str, interval: float = 0.1, *, start: float = 0.0, rtt: float = 0.001) -> ProbeRecord:
    """A probe record from a pattern: `.` answered, `x` lost, one request per interval from `start`."""
    probe = Probe("p", "ping", "a", "198.18.2.2", interval, 1.0)
    requests = tuple(Request(round(start + k * interval, 6), None if c == "x" else rtt) for k, c in enumerate(pattern))
    return ProbeRecord(probe, requests, start)


def test_outages_are_runs_of_lost_requests_from_first_lost_to_first_answered() -> None:
    found = scenarios.outages(record("..xxx...x..xx").requests)
    assert [(o.start, o.end, o.lost) for o in found] == [(0.2, 0.5, 3), (0.8, 0.9, 1), (1.1, None, 2)]
    assert found[0].length(10) == pytest.approx(0.3)
    assert found[2].length(1.3) == pytest.approx(0.2)
    assert scenarios.outages(record("....").requests) == []


def test_an_outage_going_when_the_fault_step_began_counts_though_it_ended_before_its_stamp() -> None:
    # The link comes back at 2.0 s while `link up` (begun 1.98 s) is still running; its stamp says 2.05 s.
    rec = record("." * 10 + "x" * 10 + "." * 20)  # lost from 1.0 s; answered again from 2.0 s
    expect = ExpectProbe("p", recovers_within=1.0, criteria=(Criterion("outage", "min", 0.5),))
    recovered, outage = scenarios.judge_probe(5, expect, rec, 2.05, 3.05, fault=2.05, begun=1.98)
    assert (outage.passed, outage.figure) == (True, pytest.approx(1.0))
    assert (recovered.passed, recovered.figure) == (True, 0.0)
    unaware = scenarios.judge_probe(5, expect, rec, 2.05, 3.05, fault=2.05)[1]
    assert (unaware.passed, unaware.text) == (False, "no outage")  # what the stamp alone would judge


def test_recovery_is_from_the_fault_to_the_end_of_the_last_outage_in_the_window() -> None:
    rec = record("." * 10 + "x" * 20 + "." * 10 + "xx" + "." * 20)  # outages 1.0-3.0 and 4.0-4.2
    expect = ExpectProbe("p", recovers_within=5.0, criteria=(Criterion("outage", "max", 2.5),))
    recovered, outage = scenarios.judge_probe(3, expect, rec, 0.9, 5.9, fault=0.9)
    assert (recovered.kind, recovered.passed, recovered.text) == ("recovery", True, "recovered after 3.3 s")
    assert recovered.figure == pytest.approx(3.3)
    assert recovered.window == (0.9, 5.9)
    assert recovered.name == "p recovers within 5 s"
    assert (outage.passed, outage.text) == (True, "2 s, 20 lost (longest of 2 outages)")
    late = scenarios.judge_probe(3, replace(expect, recovers_within=3.0), rec, 0.9, 3.9, fault=0.9)[0]
    assert (late.passed, late.figure, late.text) == (True, pytest.approx(2.1), "recovered after 2.1 s")
    tight = scenarios.judge_probe(3, replace(expect, recovers_within=2.0), rec, 0.9, 2.9, fault=0.9)[0]
    assert (tight.passed, tight.figure) == (False, None)
    assert tight.reason == "not recovered after 2 s (20 requests lost since 1 s)"
    quiet = scenarios.judge_probe(0, ExpectProbe("p", recovers_within=1.0), record("." * 30), 0.5, 1.5, fault=0.5)[0]
    assert (quiet.passed, quiet.figure, quiet.text) == (True, 0.0, "no outage")


def test_outage_loss_and_rtt_bounds() -> None:
    rec = record("....xxxxx.....x.........", rtt=0.002)  # 24 requests, 6 lost: 25 %
    judged = scenarios.judge_probe(
        1,
        ExpectProbe(
            "p",
            criteria=(
                Criterion("outage", "max", 0.4),
                Criterion("outage", "min", 0.4),
                Criterion("loss", "max", 20.0),
                Criterion("loss", "min", 20.0),
                Criterion("rtt", "max", 0.002),
                Criterion("rtt", "p50", 0.001),
            ),
        ),
        rec,
        0.0,
        2.4,
    )
    assert [(v.name, v.passed, v.text) for v in judged] == [
        ("p outage <= 400 ms", False, "500 ms, 5 lost (longest of 2 outages)"),
        ("p outage >= 400 ms", True, "500 ms, 5 lost (longest of 2 outages)"),
        ("p loss <= 20 %", False, "25 % (6/24)"),
        ("p loss >= 20 %", True, "25 % (6/24)"),
        ("p rtt <= 2 ms", True, "max 2 ms (18 answers)"),
        ("p rtt p50 <= 1 ms", False, "p50 2 ms (18 answers)"),
    ]
    assert judged[0].reason == "500 ms, 5 lost (longest of 2 outages): longer than 400 ms"
    assert judged[2].reason == "25 % (6/24): more than 20 %"


def test_an_outage_still_going_at_the_windows_end_fails_a_maximum_and_counts_for_a_minimum() -> None:
    rec = record("....xxxxxxxxxx")
    at_most, at_least = scenarios.judge_probe(
        0, ExpectProbe("p", criteria=(Criterion("outage", "max", 5.0), Criterion("outage", "min", 0.5))), rec, 0, 1.0
    )
    assert (at_most.passed, at_most.text) == (False, "at least 600 ms, 10 lost (longest of 1 outage)")
    assert at_most.reason == "at least 600 ms, 10 lost (longest of 1 outage): not over when the window closed"
    assert at_least.passed


def test_a_window_without_requests_fails_saying_so() -> None:
    (empty,) = scenarios.judge_probe(
        0, ExpectProbe("p", criteria=(Criterion("loss", "max", 1.0),)), record("...."), 5, 6
    )
    assert (empty.passed, empty.reason) == (False, "no request was sent in the window")


def test_a_check_verdict_counts_from_the_fault() -> None:
    passed = scenarios.judge_check(2, ExpectCheck("c", 15.0), True, None, 1.0, 4.5)
    assert (passed.name, passed.figure, passed.text, passed.window) == (
        "check 'c' within 15 s",
        3.5,
        "passed after 3.5 s",
        (1.0, 4.5),
    )
    failed = scenarios.judge_check(2, ExpectCheck("c", 1.0), False, "0/3 replies", 1.0, 2.2)
    assert (failed.passed, failed.reason, failed.figure) == (False, "0/3 replies", None)


# --------------------------------------------------------------------------- the runner, with fakes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeActions:
    """Records what the runner asks; the probe goes dark while an end is down."""

    def __init__(self, clock: Clock, probes: FakeProbes, fail: str | None = None) -> None:
        self.clock = clock
        self.probes = probes
        self.fail = fail
        self.done: list[str] = []

    def hold(self, ends: Any, *, down: bool) -> Done:
        self.clock.now += 0.01  # the change is made 10 ms in, and the action returns 5 ms later
        changed = self.clock.now
        self.clock.now += 0.005
        self.done.append(f"{'down' if down else 'up'} {','.join(map(str, ends))}")
        self.probes.dark = down
        return Done(changed)

    def conditions(self, ends: Any) -> Done:
        self.done.append("netem " + ",".join(f"{e}={c}" for e, c in ends))
        return Done()

    def services(self, action: str, services: Any) -> Done:
        if self.fail == action:
            raise StepFailed(f"compose {action} failed")
        self.done.append(f"{action} {' '.join(services)}")
        return Done()

    def exec(self, service: str, command: Any, timeout: float) -> Done:
        self.done.append(f"exec {service}")
        return Done(detail="ok")

    def check(self, name: str) -> tuple[bool, str | None]:
        self.done.append(f"check {name}")
        return True, None


class FakeProbes:
    """A 100 ms probe whose requests are lost while `dark`; it answers as the clock moves."""

    def __init__(self, clock: Clock, probe: Probe) -> None:
        self.clock = clock
        self.probe = probe
        self.dark = False
        self.epoch = 0.0
        self.requests: list[Request] = []
        self.last = -1

    def _advance(self) -> None:
        k = int((self.clock.now - self.epoch) / self.probe.interval + 1e-9)
        while self.last < k:
            self.last += 1
            self.requests.append(Request(self.last * self.probe.interval, None if self.dark else 0.001))

    def start(self, at: float | None = None) -> None:
        self.epoch = at or self.clock.now

    def snapshot(self) -> dict[str, ProbeRecord]:
        self._advance()
        return {self.probe.name: ProbeRecord(self.probe, tuple(self.requests))}

    def stop(self) -> dict[str, ProbeRecord]:
        return self.snapshot()


def run(
    steps: list[Any],
    *,
    fail: str | None = None,
    fail_fast: bool = False,
    stop_after: float | None = None,
    on_verdict: Callable[[Verdict], None] = lambda verdict: None,
    on_step: Callable[[StepRecord], None] = lambda step: None,
) -> tuple[ScenarioReport, FakeActions]:
    data = config(steps=steps)
    found = parse(data)
    clock = Clock()
    probe = found.probes["a-c"]
    fake = FakeProbes(clock, replace(probe, interval=0.1))
    actions = FakeActions(clock, fake, fail)

    def sleep(seconds: float) -> None:
        # the probe records what happened up to now before time moves on
        fake._advance()
        clock.sleep(seconds)

    stop = (lambda: "stopped by SIGTERM" if clock.now - 100 >= stop_after else None) if stop_after else (lambda: None)
    scenario = replace(found.scenarios["s1"], probes=("a-c",))
    runner = Runner(
        scenario,
        found.probes,
        actions,
        lambda epoch: fake,
        fail_fast=fail_fast,
        stop=stop,
        clock=clock,
        sleep=sleep,
        wall=lambda: 1_700_000_000.0,
        on_verdict=on_verdict,
        on_step=on_step,
    )
    return runner.run(), actions


def test_the_runner_stamps_steps_and_judges_windows() -> None:
    report, actions = run(
        [
            {"sleep": "1s"},
            {"link": {"down": "a:eth1"}},
            {"sleep": "2s"},
            {"link": {"up": "a:eth1"}},
            {"expect": {"probe": "a-c", "recovers_within": "1s", "outage": {"max": "2.5s"}}},
            {"expect": {"check": "a reaches c", "within": "5s"}},
            {"pause": "b"},
            {"sleep": "1s"},
            {"expect": {"probe": "a-c", "loss": {"max": "0%"}}},
            {"unpause": "b"},
            {"expect": {"probe": "a-c", "outage": {"max": "3s"}, "over": "scenario"}},
        ]
    )
    assert actions.done == ["down a:eth1", "up a:eth1", "check a reaches c", "pause b", "unpause b"]
    steps = {s.index: s for s in report.steps}
    assert steps[1].started == pytest.approx(1.0)
    assert steps[1].effective == pytest.approx(1.01)  # when the change was made, not when the action returned
    assert steps[1].ended == pytest.approx(1.015)
    assert steps[3].effective == pytest.approx(3.02, abs=0.06)
    assert steps[4].effective is None  # an expectation changes nothing
    by_name = {v.name: v for v in report.verdicts}
    recovered = by_name["a-c recovers within 1 s"]
    assert recovered.passed
    assert recovered.window == (pytest.approx(steps[3].effective), pytest.approx(steps[3].effective + 1))
    assert by_name["a-c outage <= 2.5 s"].passed
    check = by_name["check 'a reaches c' within 5 s"]  # tried from the link's return, not from its own step
    assert (check.passed, check.window[0]) == (True, pytest.approx(steps[3].effective))
    assert check.figure is not None
    assert check.figure < 0.5
    loss = by_name["a-c loss <= 0 %"]  # window: from the pause to the unpause
    assert loss.passed
    assert loss.window == (pytest.approx(steps[6].effective), pytest.approx(steps[9].started))
    assert by_name["a-c outage <= 3 s"].window[0] == 0.0
    assert report.outcome == "pass"
    assert report.started_at == 1_700_000_000.0
    assert [v.step for v in report.verdicts] == sorted(v.step for v in report.verdicts)


def test_each_verdict_is_given_as_it_comes_with_the_scenarios_start_on_the_wall_clock() -> None:
    given: list[Verdict] = []
    events: list[str] = []

    def on_verdict(verdict: Verdict) -> None:
        given.append(verdict)
        events.append(verdict.name)

    report, _ = run(
        [
            {"link": {"down": "a:eth1"}},
            {"expect": {"probe": "a-c", "recovers_within": "500ms", "rtt": {"max": "1s"}}},
            {"link": {"up": "a:eth1"}},
        ],
        on_verdict=on_verdict,
        on_step=lambda step: events.append(step.text),
    )
    failed = next(v for v in report.verdicts if v.name == "a-c recovers within 500 ms")
    assert not failed.passed
    # Given before the next step ran (so a recorder notes it while its packets are still in the ring), stamped
    # with the start as the report has it.
    assert events == [
        "link down a:eth1",
        "a-c recovers within 500 ms",
        "a-c rtt <= 1 s",
        "expect a-c recovers within 500 ms, rtt <= 1 s",
        "link up a:eth1",
    ]
    assert given == list(report.verdicts)
    assert failed.started_at == report.started_at == 1_700_000_000.0
    assert failed.wall_window == (report.wall(failed.window[0]), report.wall(failed.window[1]))
    # The recorder notes it at its window's end: `keep` before that covers the window judged.
    assert scenarios.failure_at_ns(failed) == round(report.wall(failed.window[1]) * 1e9)
    assert scenarios.failure_at_ns(replace(failed, started_at=None)) is None


def test_a_failed_step_stops_the_scenario_and_is_an_error() -> None:
    report, actions = run(
        [{"pause": "b"}, {"sleep": "1s"}, {"expect": {"probe": "a-c", "loss": {"max": "0%"}}}], fail="pause"
    )
    assert actions.done == []
    (step,) = report.steps
    assert (step.error, report.stopped, report.outcome) == ("compose pause failed", "step 1 failed", "error")


def test_fail_fast_stops_at_the_first_failed_verdict() -> None:
    steps = [
        {"link": {"down": "a:eth1"}},
        {"sleep": "1s"},
        {"expect": {"probe": "a-c", "loss": {"max": "0%"}}},
        {"link": {"up": "a:eth1"}},
        {"expect": {"check": "a reaches c"}},
    ]
    report, actions = run(steps, fail_fast=True)
    assert actions.done == ["down a:eth1"]
    assert report.stopped == "fail-fast: a-c loss <= 0 % failed"
    assert report.outcome == "fail"
    report, actions = run(steps)
    assert actions.done == ["down a:eth1", "up a:eth1", "check a reaches c"]
    assert not report.verdicts[0].passed


def test_a_stop_request_ends_a_flap_and_skips_the_rest() -> None:
    report, actions = run(
        [{"flap": {"link": "a:eth1", "times": 5, "down": "1s", "up": "1s"}}, {"expect": {"check": "a reaches c"}}],
        stop_after=2.5,
    )
    assert actions.done == ["down a:eth1", "up a:eth1", "down a:eth1"]
    assert report.stopped == "stopped by SIGTERM"
    (flap,) = report.steps
    assert [what for _, what in flap.marks] == ["down a:eth1", "up a:eth1", "down a:eth1"]
    assert flap.detail == "1 of 5 flaps (down/up s: 1/1, 1/1, 1/1, 1/1, 1/1)"
    assert report.outcome == "stopped"


def test_partition_and_heal_cut_and_restore_only_what_the_partition_cut() -> None:
    report, actions = run(
        [
            {"link": {"down": "c:eth1"}},
            {"partition": [["a", "b"], ["c"]]},
            "heal",
            {"netem": {"a:eth1": {"rate": "1mbit"}}},
            {"netem": "reset"},
        ]
    )
    assert actions.done == ["down c:eth1", "down c:lan0", "up c:lan0", "netem a:eth1=rate 1mbit", "netem a:eth1=None"]
    assert report.steps[1].detail == "cut c:eth1, c:lan0"
    assert report.steps[2].detail == "restored c:lan0"


# --------------------------------------------------------------------------- reports


def sample_report() -> ScenarioReport:
    rec = record("....xxxx....", interval=0.1)
    steps = (
        StepRecord(0, "link down a:eth1", "link", 0.35, 0.39, 0.39, ((0.39, "link down a:eth1"),)),
        StepRecord(1, "expect p outage <= 100 ms", "expect", 0.39, None, 1.2),
    )
    verdict = Verdict(
        1, "p outage <= 100 ms", "p", "outage", 0.4, "s", "400 ms, 4 lost", False, "too long", (0.39, 1.2)
    )
    return ScenarioReport(
        "cut",
        "the link goes",
        1_700_000_000.5,
        1.2,
        steps,
        (verdict,),
        (rec,),
        planned=("link down a:eth1", "expect p outage <= 100 ms", "expect p loss <= 1 %"),
    )


def test_json_has_steps_expectations_windows_and_every_request() -> None:
    found = json.loads(json.dumps(scenario_json(sample_report())))
    assert found["result"] == "fail"
    assert found["steps"][0] == {
        "index": 1, "kind": "link", "step": "link down a:eth1", "started": 0.35, "effective": 0.39, "ended": 0.39,
        "marks": [{"at": 0.39, "what": "link down a:eth1"}], "detail": None, "error": None,
    }  # fmt: skip
    (expectation,) = found["expectations"]
    assert expectation["window"] == {"start": 0.39, "end": 1.2}
    assert expectation["wall_window"] == {"start": 1700000000.89, "end": 1700000001.7}
    (probe,) = found["probes"]
    assert (probe["sent"], probe["lost"], probe["loss_percent"]) == (12, 4, pytest.approx(33.333333))
    assert probe["outages"] == [{"start": 0.4, "end": 0.8, "duration": 0.4, "lost": 4, "over": True}]
    assert probe["requests"][4] == {"seq": 4, "sent": 0.4, "rtt": None}
    assert probe["requests"][0] == {"seq": 0, "sent": 0.0, "rtt": 0.001}


def test_a_failed_expectations_capture_is_named_after_it_and_shown_in_the_table_json_and_junit() -> None:
    report = sample_report()
    (verdict,) = report.verdicts
    name = scenarios.capture_name(report.name, verdict)
    assert name == "cut step 2 p outage <= 100 ms"
    assert report.with_captures({}) == report  # nothing written: nothing shown
    path = "/caps/cut_step_2_p_outage_100_ms.pcapng"
    captured = report.with_captures({name: path, "other step 1 p outage <= 100 ms": "/caps/other.pcapng"})
    assert [v.capture for v in captured.verdicts] == [path]
    assert json.loads(json.dumps(scenario_json(report)))["expectations"][0]["capture"] is None
    assert json.loads(json.dumps(scenario_json(captured)))["expectations"][0]["capture"] == path
    shown = [part for part in scenario_tables(captured) if isinstance(part, str)]
    assert f"packets around 'p outage <= 100 ms' (step 2): {path}" in shown
    assert not any("packets around" in part for part in scenario_tables(report) if isinstance(part, str))
    root = ET.fromstring(scenarios_junit([captured], "composens lab"))
    out = root.find("testsuite/testcase/system-out")
    assert out is not None
    assert (out.text or "").splitlines()[-1] == f"[[ATTACHMENT|{path}]]"
    assert "ATTACHMENT" not in scenarios_junit([report], "composens lab")


def test_junit_has_a_case_per_expectation_and_skips_those_never_judged() -> None:
    root = ET.fromstring(scenarios_junit([sample_report()], "composens lab"))
    (suite,) = root.findall("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (
        "composens lab.cut",
        "2",
        "1",
        "1",
    )
    judged, skipped = suite.findall("testcase")
    assert (judged.get("classname"), judged.get("name")) == ("composens lab.cut", "p outage <= 100 ms")
    failure = judged.find("failure")
    assert failure is not None
    assert failure.get("message") == "too long"
    out = judged.find("system-out")
    assert out is not None
    assert "window 0.390 to 1.200 s" in (out.text or "")
    assert skipped.get("name") == "expect p loss <= 1 %"
    assert skipped.find("skipped") is not None
    assert root.get("failures") == "1"


def test_the_timeline_is_svg_with_a_lane_per_probe_and_the_steps_marked() -> None:
    svg = timeline_svg([sample_report(), replace(sample_report(), name="again", verdicts=())])
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "cut: fail (1.2 s)" in texts
    assert "again: pass (1.2 s)" in texts
    assert "1. link down a:eth1" in texts
    assert texts.count("p") == 2  # a lane per probe per scenario
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert "outage 400 ms to 800 ms: 400 ms, 4 lost" in titles
    assert "p outage <= 100 ms: 400 ms, 4 lost" in titles


def test_the_timeline_breaks_the_rtt_line_at_an_outage_and_keeps_labels_inside() -> None:
    report = sample_report()
    late = StepRecord(2, "unpause a-long-service-name", "unpause", 1.19, 1.19, 1.2, ((1.19, "unpause"),))
    root = ET.fromstring(timeline_svg([replace(report, steps=(*report.steps, late))]))
    svg = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f".//{svg}polyline")
    assert len(lines) == 2  # answered before the outage, and after it: no slope drawn across the four lost
    label = next(t for t in root.iter(f"{svg}text") if t.text == "3. unpause a-long-service-name")
    assert label.get("text-anchor") == "end"  # near the right edge: it ends at its mark instead of running past
    first = next(t for t in root.iter(f"{svg}text") if t.text == "1. link down a:eth1")
    assert first.get("text-anchor") == "start"
    children = list(next(root.iter(f"{svg}g")))
    lane = next(i for i, c in enumerate(children) if c.tag == f"{svg}rect")
    mark = next(i for i, c in enumerate(children) if c.tag == f"{svg}line" and c.get("stroke-dasharray"))
    assert mark > lane  # the step marks are drawn over the lanes, not hidden under them


def test_a_large_probe_record_draws_a_bounded_picture() -> None:
    rec = record("." * 3000 + "x" * 100 + "." * 2900, interval=0.01)
    report = replace(sample_report(), probes=(rec,), seconds=60.0)
    assert len(timeline_svg([report])) < 120_000


def test_netem_step_conditions_are_validated_with_the_netem_model() -> None:
    (step,) = parse(config(steps=[{"netem": {"a:eth1": {"rate": "1mbit"}}}])).scenarios["s1"].steps
    assert isinstance(step, NetemStep)
    assert step.ends == ((Endpoint("a", "eth1"), Conditions(rate_bit=1_000_000)),)
    scenario = parse(config(steps=[{"netem": {"a:eth1": {"rate": "1mbit"}}}])).scenarios["s1"]
    assert [(where, c.kind) for where, c in scenario.conditions()] == [("scenario s1: netem a:eth1", "tbf")]


def test_the_declarations_survive_a_copy() -> None:
    found = parse(
        config(
            steps=[{"link": {"down": "a:eth1"}}, {"sleep": 1}, "heal", {"expect": {"probe": "a-c", "loss": {"max": 1}}}]
        )
    )
    assert copy.deepcopy(found) == found
    assert [type(s) for s in found.scenarios["s1"].steps] == [LinkStep, SleepStep, HealStep, ExpectProbe]
