"""Stable MACs: derived from the project and the end's name, declared where the file says, distinct in a project."""

from __future__ import annotations

import pytest

from composens.model import declared, macs, topology
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
        macs, "derive", lambda p, n, i, attempt=0: "02:00:00:00:00:01" if not attempt else real(p, n, i, attempt)
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
