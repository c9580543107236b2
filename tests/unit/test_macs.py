"""Stable MACs: derived from the project and the end's name, declared where the file says, distinct in a project."""

from __future__ import annotations

import pytest

from composens.model import declared, macs, topology
from composens.model.errors import ConfigError, ExitCode
from composens.model.topology import HUB, Endpoint
from composens.plan import converge
from tests.unit.simlab import PaperLab


def lan_lab(**r2: object) -> topology.Topology:
    return declared.parse(
        {
            "name": "maclab",
            "x-composens": {
                "links": [{"endpoints": ["r1:eth2", "host:up0"]}],
                "lans": {"lan1": {"endpoints": ["r1:eth1", "r2:eth1", "r3:eth1"]}},
            },
            "services": {
                "r1": {"network_mode": "none"},
                "r2": {"network_mode": "none", "x-composens": r2},
                "r3": {"network_mode": "none"},
            },
        },
        source="f",
    )


def test_every_end_composens_makes_gets_a_stable_unicast_locally_administered_mac() -> None:
    topo = lan_lab()
    ends = {ep for pair in topo.pairs() for ep in (pair.a, pair.b)}
    assert set(topo.macs) == ends  # members, hub ports and the host end alike
    assert Endpoint(HUB, "r2.eth1") in topo.macs
    assert Endpoint("host", "up0") in topo.macs
    assert len(set(topo.macs.values())) == len(ends)
    for mac in topo.macs.values():
        first = int(mac[:2], 16)
        assert first & 0b10, mac  # locally administered
        assert not first & 0b01, mac  # unicast
    assert lan_lab().macs == topo.macs  # the same on every run
    other = declared.parse({**_config_of(topo), "name": "otherlab"}, source="f")
    assert set(other.macs.values()).isdisjoint(topo.macs.values())  # another project, other MACs


def _config_of(topo: topology.Topology) -> dict[str, object]:
    return {
        "x-composens": {
            "links": [{"endpoints": ["r1:eth2", "host:up0"]}],
            "lans": {"lan1": {"endpoints": ["r1:eth1", "r2:eth1", "r3:eth1"]}},
        },
        "services": {name: {"network_mode": "none"} for name in topo.services},
    }


def test_a_declared_mac_is_used_as_written_and_others_stay_as_they_were() -> None:
    declared = lan_lab(macs={"eth1": "02:00:5E:10:00:03"})
    plain = lan_lab()
    assert declared.mac_of(Endpoint("r2", "eth1")) == "02:00:5e:10:00:03"
    assert {e: m for e, m in declared.macs.items() if e != Endpoint("r2", "eth1")} == {
        e: m for e, m in plain.macs.items() if e != Endpoint("r2", "eth1")
    }


def test_a_derived_mac_that_collides_is_derived_again_the_same_way_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    real = macs.derive
    monkeypatch.setattr(
        macs,
        "derive",
        lambda p, n, i, attempt=0, salt="": "02:00:00:00:00:01" if not attempt else real(p, n, i, attempt, salt),
    )
    first = macs.assign("p", [("a", "x"), ("b", "y")], {}, source="f")
    assert first[("a", "x")] == "02:00:00:00:00:01"
    assert first[("b", "y")] == real("p", "b", "y", 1)
    assert macs.assign("p", [("b", "y"), ("a", "x")], {}, source="f") == first
    # A declared MAC wins over a derived one that happens to equal it.
    declared = macs.assign("p", [("a", "x"), ("b", "y")], {("b", "y"): "02:00:00:00:00:01"}, source="f")
    assert declared[("b", "y")] == "02:00:00:00:00:01"
    assert declared[("a", "x")] != "02:00:00:00:00:01"


@pytest.mark.parametrize("text", ["02:00:5e:10:00", "02-00-5e-10-00-0g", "", "0200.5e10.0003", "00:00:00:00:00:00"])
def test_malformed_macs_are_refused(text: str) -> None:
    with pytest.raises(macs.MacError):
        macs.parse_mac(text)


def test_a_differing_mac_is_drift_and_converges_in_place() -> None:
    from dataclasses import replace

    topo = lan_lab()
    lab = PaperLab()
    lab.converge(topo)
    ns = lab.state["r2"]
    lab.state["r2"] = replace(ns, links={**ns.links, "eth1": replace(ns.links["eth1"], mac="02:aa:bb:cc:dd:ee")})
    lines, found = lab.converge(topo)
    wanted = topo.mac_of(Endpoint("r2", "eth1"))
    assert lines == [f"~ ip -n r2 link set dev eth1 address {wanted}"]
    assert [str(d) for d in found.drift] == [f"differs interface eth1: mac 02:aa:bb:cc:dd:ee, wanted {wanted}"]
    assert lab.converge(topo)[0] == []
    assert isinstance(found, converge.Diff)


# --------------------------------------------------------------------------- the salt (issue 26, item 9)

MACHINE_A, MACHINE_B = "3d1219c7c4c5404aaa1f6d2a48adfda4", "9f0c1e27a4b84c3f8d2b6e5a7c0d1e2f"


def salted(config: dict[str, object], machine: str | None) -> topology.Topology:
    return declared.parse(config, source="f", machine=machine)


def test_two_machines_running_one_project_derive_different_macs() -> None:
    """Two copies of a folder-named project `lab` whose host ends share a physical LAN repeated every MAC."""
    config = {**_config_of(lan_lab()), "name": "lab"}
    here, there = salted(config, MACHINE_A), salted(config, MACHINE_B)
    assert set(here.macs) == set(there.macs)
    assert set(here.macs.values()).isdisjoint(there.macs.values())
    # Stable on each machine: the file and the machine's id decide, nothing a restart or a reboot changes.
    assert salted(config, MACHINE_A).macs == here.macs
    for end, mac in here.macs.items():
        assert mac == macs.derive("lab", end.node, end.ifname, salt=f"machine {MACHINE_A}")
        first = int(mac[:2], 16)
        assert first & 0b10, mac  # still locally administered
        assert not first & 0b01, mac  # and unicast
    # A machine without an id derives them from the project alone, as before there was a salt.
    assert salted(config, None).macs == {e: macs.derive("lab", e.node, e.ifname) for e in here.macs}


def test_a_declared_salt_gives_the_same_macs_on_every_machine_and_declared_macs_stay() -> None:
    config = {**_config_of(lan_lab()), "name": "lab"}
    config["x-composens"] = {**config["x-composens"], "mac_salt": "rack-7"}  # type: ignore[dict-item]
    here, there = salted(config, MACHINE_A), salted(config, MACHINE_B)
    assert here.macs == there.macs
    assert here.macs[Endpoint("r1", "eth1")] == macs.derive("lab", "r1", "eth1", salt="rack-7")
    config["x-composens"]["mac_salt"] = ""  # type: ignore[index]
    assert salted(config, MACHINE_A).macs == salted(config, None).macs  # empty: the project alone
    config["services"]["r2"] = {"network_mode": "none", "x-composens": {"macs": {"eth1": "02:00:5e:10:00:03"}}}  # type: ignore[index]
    assert salted(config, MACHINE_A).mac_of(Endpoint("r2", "eth1")) == "02:00:5e:10:00:03"


def test_a_salt_that_is_not_a_string_is_refused() -> None:
    config = {**_config_of(lan_lab()), "name": "lab"}
    config["x-composens"] = {**config["x-composens"], "mac_salt": ["a"]}  # type: ignore[dict-item]
    with pytest.raises(ConfigError) as caught:
        salted(config, MACHINE_A)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert str(caught.value) == (
        "f: x-composens.mac_salt: ['a'] is not a salt (a string; empty for MACs from the project alone)"
    )


def multihost(underlays: tuple[str, str] = ("198.18.200.1", "198.18.200.2")) -> dict[str, object]:
    return {
        "name": "lab",
        "x-composens": {
            "hosts": {"h1": {"underlay": underlays[0]}, "h2": {"underlay": underlays[1]}},
            "links": [{"endpoints": ["r1:eth1", "r2:eth1"]}, {"endpoints": ["r1:up", "host:lab-up"]}],
            "lans": {"core": {"endpoints": ["r1:lan0", "r2:lan0", "r3:lan0"]}},
        },
        "services": {
            "r1": {"network_mode": "none", "x-composens": {"host": "h1"}},
            "r2": {"network_mode": "none", "x-composens": {"host": "h2"}},
            "r3": {"network_mode": "none", "x-composens": {"host": "h2"}},
        },
    }


def test_over_several_hosts_every_host_derives_every_end_alike() -> None:
    """Each end's MAC is derived on its own host; the hosts differ in machine id but must agree on every MAC."""
    from composens.model import hosts

    on_h1, on_h2 = salted(multihost(), MACHINE_A), salted(multihost(), MACHINE_B)
    assert on_h1.macs == on_h2.macs
    # Salted with the underlay of the host the end is on: r1's and its host end's with h1's, r2's with h2's ...
    assert on_h1.macs[Endpoint("r1", "eth1")] == macs.derive("lab", "r1", "eth1", salt="underlay 198.18.200.1")
    assert on_h1.macs[Endpoint("host", "lab-up")] == macs.derive("lab", "host", "lab-up", salt="underlay 198.18.200.1")
    assert on_h1.macs[Endpoint("r2", "eth1")] == macs.derive("lab", "r2", "eth1", salt="underlay 198.18.200.2")
    # ... so another host joining the lab leaves them as they are, and another copy of the lab (other machines,
    # other underlay addresses) has MACs of its own.
    three = multihost()
    three["x-composens"]["hosts"]["h3"] = {"underlay": "198.18.200.3"}  # type: ignore[index]
    assert salted(three, MACHINE_A).macs == on_h1.macs
    copy = salted(multihost(("198.18.201.1", "198.18.201.2")), MACHINE_A)
    assert set(copy.macs.values()).isdisjoint(on_h1.macs.values())
    # A LAN's VXLAN port is salted alike: the same on both copies' views only where the underlays are.
    views = [hosts.view(t, t.hosts, t.hosts.hosts["h1"]) for t in (on_h1, on_h2, copy)]
    ports = [v.mac_of(Endpoint(HUB, "vx.core")) for v in views]
    assert ports[0] == ports[1] != ports[2]
