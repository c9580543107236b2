"""Hostile input: nothing from a compose file reaches `ip -batch` or a printed command other than as planned."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from composens.model import declared
from composens.model.errors import ConfigError
from composens.plan import changes, converge
from tests import fuzz


def project(
    links: list[list[str]], addresses: dict[str, Any] | None = None, routes: list[str] | None = None
) -> dict[str, Any]:
    ext: dict[str, Any] = {}
    if addresses:
        ext["addresses"] = addresses
    if routes:
        ext["routes"] = routes
    return {
        "name": "p",
        "x-composens": {"links": [{"endpoints": ends} for ends in links]},
        "services": {"a": {"network_mode": "none", "x-composens": ext}, "b": {"network_mode": "none"}},
    }


def error_of(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        declared.parse(config, source="f")
    assert "\n" not in caught.value.message
    return caught.value.message


@pytest.mark.parametrize(
    ("addresses", "routes"),
    [
        ({"e1": ["fe80::1%x\necho INJECTED-AS-$(id -un) #/64"]}, None),
        ({"e1": ["2001:db8::1%eth0/64"]}, None),
        ({"e1": ["2001:db8::1/64"]}, ["default via fe80::1%e1"]),
        ({"e1": ["2001:db8::1/64"]}, ["fe80::%x/64 via 2001:db8::2"]),
    ],
)
def test_scope_ids_are_refused_everywhere(addresses: dict[str, Any], routes: list[str] | None) -> None:
    assert "scope id" in error_of(project([["a:e1", "b:e1"]], addresses, routes))


@pytest.mark.parametrize(
    "ifname",
    ["e$(id>&2)", "x#y", "a\x00b", "'q", "x\\", "éééééééé", "-x", "a b", "x\ny", "é", "a`id`", "sixteen_bytes_xx"],
)
def test_interface_names_outside_the_safe_set_are_refused(ifname: str) -> None:
    assert "is not a valid interface name" in error_of(project([[f"a:{ifname}", "b:e1"]]))


def test_a_route_dev_is_checked_like_an_interface_name() -> None:
    message = error_of(project([["a:e1", "b:e1"]], {"e1": ["10.0.0.1/24"]}, ["default via 10.0.0.2 dev e1#x"]))
    assert "dev 'e1#x' is not a valid interface name" in message


def test_a_link_local_gateway_needs_a_dev() -> None:
    message = error_of(project([["a:e1", "b:e1"]], {"e1": ["2001:db8::1/64"]}, ["default via fe80::1"]))
    assert "link-local" in message


def test_a_service_called_host_cannot_be_wired_and_host_endpoints_are_not_ambiguous() -> None:
    config = project([["a:e1", "host:up0"]])
    config["services"]["host"] = {"network_mode": "none"}
    assert "is ambiguous" in error_of(config)
    config = project([["a:e1", "b:e1"]])
    config["services"]["host"] = {"network_mode": "none", "x-composens": {"addresses": {"e1": ["10.0.0.1/24"]}}}
    assert "a service called host cannot be wired" in error_of(config)
    config["services"]["host"] = {"network_mode": "none"}  # a service called host that is not wired is fine
    declared.parse(config, source="f")


@pytest.mark.parametrize("scale", ["²", "3x", -1, True, None])
def test_odd_scales_count_as_one(scale: object) -> None:
    config = project([["a:e1", "b:e1"]])
    config["services"]["a"]["scale"] = scale
    assert declared.parse(config, source="f").services["a"].replicas == 1


def test_a_batch_line_with_an_unsafe_word_is_never_built() -> None:
    with pytest.raises(AssertionError, match="unsafe word"):
        changes.batch_line(changes.SetLink("a", "x#y", state="up"), lambda node: None)


def test_printed_commands_are_quoted_and_split_into_the_batch_words() -> None:
    config = project([["a:up", "b:mtu"], ["a:x@y.1", "host:p+1"]], {"up": ["10.0.0.1/24"], "x@y.1": ["2001:db8::1/64"]})
    config["x-composens"]["netns_prefix"] = "lab.1-"
    topo = declared.parse(config, source="f")
    found = converge.from_scratch(topo)
    assert found.changes
    for change in found.changes:
        words = change.words(lambda node: topo.node(node).netns)
        printed = shlex.split(changes.command(change, lambda node: topo.node(node).netns))
        assert printed[-len(words) :] == words


def test_hostile_fuzz_ends_in_an_error_or_a_safe_plan() -> None:
    """A few hundred examples here; `python -m tests.fuzz --examples 10000` is the long run."""
    outcomes = fuzz.run(300)
    # Both outcomes were reached, so both were checked.
    assert outcomes["error"] > 0
    assert outcomes["plan"] > 0
