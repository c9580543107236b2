"""Capture targets as the lab names them, and the flight recorder's settings: parsing and every error."""

from __future__ import annotations

from typing import Any

import pytest

from composens.model import declared
from composens.model.capture import (
    CaptureTarget,
    RecorderSettings,
    all_targets,
    parse_duration,
    recorder_targets,
    resolve,
)
from composens.model.errors import ConfigError
from composens.model.topology import HOST, HUB, Topology

SERVICES = {name: {"image": "i", "network_mode": "none"} for name in ("r1", "r2", "r3", "r4")}
WIRING = {
    "links": [{"endpoints": ["r1:eth1", "r2:eth1"]}, {"endpoints": ["r2:eth2", "host:up0"]}],
    "lans": {"lan1": {"endpoints": ["r1:lan", "r3:lan", "r4:lan"]}},
}


def lab(capture: Any = None) -> Topology:
    extension: dict[str, Any] = dict(WIRING)
    if capture is not None:
        extension["capture"] = capture
    return declared.parse({"name": "lab", "services": SERVICES, "x-composens": extension}, source="compose.yml")


def test_all_lists_every_interface_of_the_lab_once_with_what_it_faces() -> None:
    assert all_targets(lab()) == (
        CaptureTarget("r1:eth1", "r1", "eth1", "r1:eth1 -> r2:eth1"),
        CaptureTarget("r2:eth1", "r2", "eth1", "r2:eth1 -> r1:eth1"),
        CaptureTarget("r2:eth2", "r2", "eth2", "r2:eth2 -> host:up0"),
        CaptureTarget("host:up0", HOST, "up0", "host:up0 -> r2:eth2"),
        CaptureTarget("r1:lan", "r1", "lan", "r1:lan -> lan1"),
        CaptureTarget("r3:lan", "r3", "lan", "r3:lan -> lan1"),
        CaptureTarget("r4:lan", "r4", "lan", "r4:lan -> lan1"),
        CaptureTarget("lan1", HUB, "lan1", "lan1: r1:lan r3:lan r4:lan"),
    )


def test_named_targets_keep_their_order_and_come_once() -> None:
    assert [t.name for t in resolve(lab(), ["lan1", "r2:eth1", "lan1", "host:up0"])] == ["lan1", "r2:eth1", "host:up0"]


@pytest.mark.parametrize(
    ("name", "error"),
    [
        (
            "r1:eth9",
            "compose.yml: capture target 'r1:eth9': r1 has no interface 'eth9' of a link or LAN (it has: eth1, lan)",
        ),
        ("r9:eth1", "compose.yml: capture target 'r9:eth1': no such service: 'r9'"),
        ("lan2", "compose.yml: capture target 'lan2': no such LAN (expected SERVICE:IFNAME or a LAN's name: lan1)"),
        ("hub:r1.lan", "compose.yml: capture target 'hub:r1.lan': no such service: 'hub'"),
        (
            "host:nope",
            "compose.yml: capture target 'host:nope': host has no interface 'nope' of a link or LAN (it has: up0)",
        ),
    ],
)
def test_an_unknown_target_is_one_line_naming_it(name: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(lab(), [name])
    assert caught.value.message == error


def test_the_recorder_takes_targets_or_all_keep_and_memory() -> None:
    assert lab({"targets": "all"}).capture == RecorderSettings(None)
    assert lab({"targets": ["lan1", "r1:eth1"], "keep": "500ms", "memory": "8MiB"}).capture == RecorderSettings(
        ("lan1", "r1:eth1"), 0.5, 8 * 2**20
    )
    assert lab({"targets": ["r1:eth1"], "keep": 2, "memory": 2**21}).capture == RecorderSettings(
        ("r1:eth1",), 2.0, 2**21
    )
    assert lab({"targets": ["r1:eth1"], "keep": "1m"}).capture.keep_ns == 60 * 10**9
    assert lab().capture is None


def test_the_recorder_captures_its_targets_or_all() -> None:
    topo = lab({"targets": ["lan1"]})
    assert [t.name for t in recorder_targets(topo, topo.capture)] == ["lan1"]
    topo = lab({"targets": "all"})
    assert len(recorder_targets(topo, topo.capture)) == 8


@pytest.mark.parametrize(
    ("capture", "error"),
    [
        ([], "compose.yml: x-composens.capture: must be a mapping with targets (a list, or all) and keep"),
        (
            {"keep": "1s"},
            "compose.yml: x-composens.capture: targets is missing (a list of SERVICE:IFNAME and LAN names, or all)",
        ),
        (
            {"targets": "r1:eth1"},
            "compose.yml: x-composens.capture.targets: must be all, or a list of SERVICE:IFNAME and LAN names",
        ),
        (
            {"targets": []},
            "compose.yml: x-composens.capture.targets: must be all, or a list of SERVICE:IFNAME and LAN names",
        ),
        (
            {"targets": [3]},
            "compose.yml: x-composens.capture.targets[0]: 3 is not a name; write SERVICE:IFNAME or a LAN's name",
        ),
        ({"targets": ["r1:eth1", "r1:eth1"]}, "compose.yml: x-composens.capture.targets[1]: 'r1:eth1' is named twice"),
        (
            {"targets": ["r1:x"]},
            "compose.yml: x-composens.capture.targets[0]: 'r1:x': r1 has no interface 'x' of a link or LAN (it has: eth1, lan)",
        ),
        ({"targets": "all", "keep": "10"}, None),
        (
            {"targets": "all", "keep": "10 parsecs"},
            "compose.yml: x-composens.capture.keep: '10 parsecs' is not a duration above 0 and at most 1 hour (e.g. 10s, 500ms, 2m)",
        ),
        (
            {"targets": "all", "keep": 0},
            "compose.yml: x-composens.capture.keep: 0 is not a duration above 0 and at most 1 hour (e.g. 10s, 500ms, 2m)",
        ),
        (
            {"targets": "all", "keep": "2h"},
            "compose.yml: x-composens.capture.keep: '2h' is not a duration above 0 and at most 1 hour (e.g. 10s, 500ms, 2m)",
        ),
        (
            {"targets": "all", "keep": True},
            "compose.yml: x-composens.capture.keep: True is not a duration above 0 and at most 1 hour (e.g. 10s, 500ms, 2m)",
        ),
        (
            {"targets": "all", "memory": "1KiB"},
            "compose.yml: x-composens.capture.memory: '1KiB' is not a size from 1MiB to 16GiB (bytes, or KiB, MiB, GiB)",
        ),
        (
            {"targets": "all", "memory": "lots"},
            "compose.yml: x-composens.capture.memory: 'lots' is not a size from 1MiB to 16GiB (bytes, or KiB, MiB, GiB)",
        ),
        (
            {"targets": "all", "size": 1},
            "compose.yml: x-composens.capture.size: unknown key (expected one of: targets, keep, memory)",
        ),
    ],
)
def test_a_bad_recorder_setting_is_one_line_naming_the_key(capture: Any, error: str | None) -> None:
    if error is None:
        assert lab(capture).capture is not None
        return
    with pytest.raises(ConfigError) as caught:
        lab(capture)
    assert caught.value.message == error


def test_durations_read_as_a_person_writes_them() -> None:
    assert [parse_duration(text) for text in ("10s", "500ms", "2m", "1.5", 3)] == [10.0, 0.5, 120.0, 1.5, 3.0]
    for bad in ("", "-1s", "1h", "s", None, float("nan")):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(bad)


def test_the_capture_commands_snap_length_is_the_packet_models() -> None:
    from composens.cli import runtime
    from composens.model import packets

    assert runtime.DEFAULT_SNAPLEN == packets.DEFAULT_SNAPLEN
