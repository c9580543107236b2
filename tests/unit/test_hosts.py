"""Several machines: hosts, placement, VNIs, which host this is, and the view from one host (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from composens.model import declared, hosts, topology
from composens.model.errors import ConfigError, ExitCode
from composens.model.topology import HUB, Endpoint


def lab(**top: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "lab",
        "x-composens": {
            "hosts": {"h1": {"underlay": "198.18.200.1"}, "h2": {"underlay": "198.18.200.2"}},
            "links": [{"endpoints": ["r1:eth1", "r2:eth1"]}, {"endpoints": ["r1:eth2", "r3:eth2"]}],
            "lans": {"core": {"endpoints": ["r1:lan0", "r3:lan0", "r2:lan0"]}},
        },
        "services": {
            "r1": {"network_mode": "none", "x-composens": {"host": "h1", "addresses": {"eth1": ["198.19.1.1/30"]}}},
            "r2": {"network_mode": "none", "x-composens": {"host": "h2", "addresses": {"eth1": ["198.19.1.2/30"]}}},
            "r3": {"network_mode": "none", "x-composens": {"host": "h1"}},
        },
    }
    config["x-composens"].update(top)
    return config


def parse(config: dict[str, Any]) -> topology.Topology:
    return declared.parse(config, source="lab.yml")


def error_of(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(config)
    assert caught.value.exit_code == ExitCode.CONFIG
    return str(caught.value)


def test_a_file_without_hosts_has_none() -> None:
    config = lab()
    del config["x-composens"]["hosts"]
    for spec in config["services"].values():
        del spec["x-composens"]["host"]
    assert parse(config).hosts is None


def test_hosts_placement_and_port_are_read() -> None:
    found = parse(lab(vxlan={"port": 4790})).hosts
    assert found.placement == {"r1": "h1", "r2": "h2", "r3": "h1"}
    assert found.hosts["h2"].underlay == "198.18.200.2"
    assert found.port == 4790
    assert parse(lab()).hosts.port == 4789


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["services"]["r3"]["x-composens"].update(host="h9"),
         "lab.yml: services.r3.x-composens.host: 'h9' is not a declared host (declared: h1, h2)"),
        (lambda c: c["services"]["r3"]["x-composens"].pop("host"),
         "lab.yml: services.r3.x-composens.host: missing; with x-composens.hosts every service is placed on one "
         "(h1, h2); not placed: r3"),
        (lambda c: c["x-composens"].pop("hosts"),
         "lab.yml: services.r1.x-composens.host: 'h1' is not a declared host (declare the machines in x-composens.hosts)"),
        (lambda c: c["x-composens"]["hosts"]["h2"].update(underlay="198.18.200.1"),
         "lab.yml: x-composens.hosts.h2.underlay: 198.18.200.1 is already the underlay of host h1"),
        (lambda c: c["x-composens"]["hosts"]["h2"].update(underlay="not-an-address"),
         "lab.yml: x-composens.hosts.h2.underlay: 'not-an-address' is not an IPv4 or IPv6 address"),
        (lambda c: c["x-composens"]["hosts"]["h2"].update(address="x"),
         "lab.yml: x-composens.hosts.h2.address: unknown key (expected one of: underlay, mtu)"),
        (lambda c: c["x-composens"]["hosts"]["h2"].update(mtu=117),
         "lab.yml: x-composens.hosts.h2.mtu: 117 is not an underlay MTU (118 to 65535 over IPv4"),
        (lambda c: c["x-composens"]["hosts"]["h2"].update(mtu="1500"),
         "lab.yml: x-composens.hosts.h2.mtu: '1500' is not an underlay MTU"),
        (lambda c: (c["x-composens"]["hosts"]["h2"].update(mtu=1400), c["x-composens"]["links"][0].update(mtu=1400)),
         "lab.yml: x-composens.links[0].mtu: 1400 does not fit the underlay of host h2 (MTU 1400, "
         "x-composens.hosts.h2.mtu; VXLAN over IPv4 takes 50 bytes), so at most 1350"),
        (lambda c: c["x-composens"]["lans"]["core"].update(mtu=1451),
         "lab.yml: x-composens.lans.core.mtu: 1451 does not fit the underlay of host h1 (MTU 1500"),
        (lambda c: c["x-composens"]["hosts"]["h2"].update(underlay="2001:db8::2"),
         "lab.yml: x-composens.hosts: the underlay addresses mix IPv4 and IPv6"),
        (lambda c: c["x-composens"].update(vxlan={"port": 0}),
         "lab.yml: x-composens.vxlan.port: 0 is not a UDP port (1 to 65535)"),
        (lambda c: c["x-composens"]["links"][0].update(vni=2**24),
         "lab.yml: x-composens.links[0].vni: 16777216 is not a VNI (a whole number from 1 to 16777215)"),
        (lambda c: (c["x-composens"]["links"][0].update(vni=5), c["x-composens"]["lans"]["core"].update(vni=5)),
         "lab.yml: x-composens.lans.core.vni: VNI 5 is already the VNI of links[0]"),
        (lambda c: c["x-composens"]["lans"]["core"]["endpoints"].append("host:lab-h"),
         "lab.yml: x-composens.lans.core.endpoints[3]: host:lab-h is a host's own namespace, but this LAN has "
         "members on hosts h1, h2"),
    ],
)  # fmt: skip
def test_invalid_placements_say_file_and_key(edit: Any, message: str) -> None:
    config = lab()
    edit(config)
    assert error_of(config).startswith(message)


def test_a_vni_without_hosts_is_an_error() -> None:
    config = lab()
    del config["x-composens"]["hosts"]
    for spec in config["services"].values():
        del spec["x-composens"]["host"]
    config["x-composens"]["links"][0]["vni"] = 5
    assert error_of(config) == "lab.yml: x-composens.links[0].vni: a VNI needs x-composens.hosts"


def test_vnis_are_stable_unique_and_independent_of_file_order() -> None:
    first = parse(lab()).hosts
    config = lab()
    config["x-composens"]["links"].reverse()
    config["x-composens"]["links"][1]["endpoints"].reverse()
    again = parse(config).hosts
    assert first.link_vnis == tuple(reversed(again.link_vnis))
    assert first.lan_vnis == again.lan_vnis
    every = [*first.link_vnis, *first.lan_vnis.values()]
    assert len(set(every)) == len(every)
    assert all(1 <= v <= hosts.VNI_MAX for v in every)
    other = lab()
    other["name"] = "another"
    assert parse(other).hosts.link_vnis != first.link_vnis  # derived from the project


def test_a_declared_vni_is_kept_and_a_derived_one_that_collides_moves_on() -> None:
    derived = parse(lab()).hosts.link_vnis
    config = lab()
    config["x-composens"]["links"][1]["vni"] = derived[0]  # take the VNI links[0] would have derived
    found = parse(config).hosts
    assert found.link_vnis[1] == derived[0]
    assert found.link_vnis[0] not in (derived[0], 0)
    assert found.link_vnis[0] == hosts.derive_vni("lab", "link\0r1:eth1\0r2:eth1", {derived[0]})
    # and deterministically so: a second parse agrees
    assert parse(copy.deepcopy(config)).hosts.link_vnis == found.link_vnis


def test_derive_vni_skips_taken_values() -> None:
    first = hosts.derive_vni("p", "k", set())
    second = hosts.derive_vni("p", "k", {first})
    assert second != first
    assert hosts.derive_vni("p", "k", {first}) == second


def test_which_host_by_assigned_address_or_choice() -> None:
    found = parse(lab()).hosts
    assert hosts.which_host(found, ["127.0.0.1", "198.18.200.2"], None, "lab.yml").name == "h2"
    assert hosts.which_host(found, ["198.18.200.2"], "h1", "lab.yml").name == "h1"
    with pytest.raises(
        ConfigError,
        match=r"no declared host's underlay address is assigned on this machine "
        r"\(h1 \(198.18.200.1\), h2 \(198.18.200.2\)\); choose one with --host NAME or COMPOSENS_HOST",
    ):
        hosts.which_host(found, ["127.0.0.1"], None, "lab.yml")
    with pytest.raises(ConfigError, match=r"several hosts are assigned on this machine \(h1, h2\)"):
        hosts.which_host(found, ["198.18.200.1", "198.18.200.2"], None, "lab.yml")
    with pytest.raises(ConfigError, match=r"--host h7: not a declared host \(declared: h1, h2\)"):
        hosts.which_host(found, [], "h7", "lab.yml")  # fmt: skip


def view(config: dict[str, Any], name: str, mtu: int | None = 1500) -> topology.Topology:
    topo = parse(config)
    return hosts.view(topo, topo.hosts, topo.hosts.hosts[name], mtu, "eth0")


def test_the_view_from_host_1() -> None:
    mine = view(lab(), "h1")
    assert set(mine.services) == {"r1", "r3"}
    assert [(str(link.a), str(link.b)) for link in mine.links] == [("r1:eth2", "r3:eth2")]
    (core,) = mine.lans
    assert core.members == (Endpoint("r1", "lan0"), Endpoint("r3", "lan0"))
    assert core.mtu == 1450  # every port of a LAN spanning hosts fits the underlay
    link_end, lan_port = mine.tunnels
    vnis = parse(lab()).hosts
    assert (link_end.end, link_end.peer, link_end.vni) == (
        Endpoint("r1", "eth1"),
        Endpoint("r2", "eth1"),
        vnis.link_vnis[0],
    )
    assert (link_end.local, [h.underlay for h in link_end.remotes], link_end.port, link_end.mtu) == (
        "198.18.200.1",
        ["198.18.200.2"],
        4789,
        1450,
    )
    assert (lan_port.end, lan_port.lan, lan_port.vni) == (Endpoint(HUB, "vx.core"), "core", vnis.lan_vnis["core"])
    assert mine.interfaces_of("r1") == ("eth2", "lan0", "eth1")
    assert mine.interfaces_of(HUB) == ("r1.lan0", "r3.lan0", "vx.core")
    assert mine.this_host == "h1"  # fmt: skip


def test_the_view_from_host_2_mirrors_it() -> None:
    theirs = view(lab(), "h2")
    assert set(theirs.services) == {"r2"}
    assert theirs.links == ()
    (core,) = theirs.lans
    assert core.members == (Endpoint("r2", "lan0"),)
    mine = view(lab(), "h1")
    for here, there in zip(mine.tunnels, theirs.tunnels, strict=True):
        assert here.vni == there.vni
        assert (here.local, there.local) == (there.remotes[0].underlay, here.remotes[0].underlay)


def test_a_lan_on_one_host_and_links_elsewhere_stay_out_of_the_view() -> None:
    config = lab()
    config["x-composens"]["lans"]["core"]["endpoints"] = ["r1:lan0", "r3:lan0"]
    theirs = view(config, "h2")
    assert theirs.lans == ()
    assert theirs.hub is None
    assert [t.end for t in theirs.tunnels] == [Endpoint("r2", "eth1")]


def mtus(mine: topology.Topology) -> dict[str, int]:
    """Each VXLAN end's MTU, and each LAN port's (on the hub's side too), by name."""
    found = {str(t.end): t.mtu for t in mine.tunnels}
    for lan in mine.lans:
        assert lan.mtu is not None
        found.update({f"{m}": lan.mtu for m in lan.members})
    return found


def test_both_ends_of_a_cross_host_link_agree_whatever_each_hosts_underlay() -> None:
    """Issue 26, item 2: with h1's underlay at 1400 and h2's at 1500, h1 gave r1:eth1 1350 and h2 gave r2:eth1 1450."""
    config = lab()
    # Undeclared, the file says 1500: a host whose underlay is smaller is refused, not given an MTU of its own.
    with pytest.raises(ConfigError) as caught:
        view(config, "h1", 1400)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert str(caught.value) == (
        "lab.yml: x-composens.hosts.h1.mtu: host h1's underlay is smaller than the file says: eth0 on this machine "
        "has MTU 1400, the file 1500 (1500 when not declared); declare mtu: 1400 for h1, and every host gives the "
        "links and LANs that cross it at most 1350"
    )
    assert mtus(view(config, "h2", 1500)) == {"r2:eth1": 1450, "@hub:vx.core": 1450, "r2:lan0": 1450}
    # Declared: both hosts derive the same MTUs from the file, the smallest underlay's share, on every end.
    config["x-composens"]["hosts"]["h1"]["mtu"] = 1400
    h1, h2 = view(config, "h1", 1400), view(config, "h2", 1500)
    assert mtus(h1) == {"r1:eth1": 1350, "@hub:vx.core": 1350, "r1:lan0": 1350, "r3:lan0": 1350}
    assert mtus(h2) == {"r2:eth1": 1350, "@hub:vx.core": 1350, "r2:lan0": 1350}
    assert h1.links[0].mtu is None  # r1 <-> r3, both on h1: a veth, the underlay does not matter
    # A larger underlay than the file says is fine (the file's is what every host counts with), and so is a
    # host that does not have its underlay address here (--host): the file is taken at its word.
    assert mtus(view(config, "h1", 9000)) == mtus(h1)
    assert mtus(view(config, "h1", None)) == mtus(h1)


def test_a_host_with_no_tunnel_does_not_care_about_its_underlay() -> None:
    config = lab()
    config["x-composens"]["links"] = [{"endpoints": ["r1:eth1", "r3:eth2"]}]
    config["x-composens"]["lans"] = {}
    del config["services"]["r2"]["x-composens"]["addresses"]
    assert view(config, "h1", 1280).tunnels == ()


def test_mtu_over_ipv6_and_declared_mtus() -> None:
    config = lab()
    config["x-composens"]["hosts"] = {"h1": {"underlay": "2001:db8:200::1"}, "h2": {"underlay": "2001:db8:200::2"}}
    # Undeclared: what a 1500 underlay carries over IPv6, whatever this host's (when at least the file's).
    assert view(config, "h1", 9000).tunnels[0].mtu == 1430
    config["x-composens"]["hosts"]["h1"]["mtu"] = 9000
    config["x-composens"]["hosts"]["h2"]["mtu"] = 9000
    assert view(config, "h1", 9000).tunnels[0].mtu == 8930  # jumbo underlays declared on both hosts
    config["x-composens"]["links"][0]["mtu"] = 8930  # declared: as large as every underlay carries
    assert view(config, "h1", 9000).tunnels[0].mtu == 8930
    config = lab()
    config["x-composens"]["links"][0]["mtu"] = 1400
    assert view(config, "h1").tunnels[0].mtu == 1400
    assert view(config, "h2").tunnels[0].mtu == 1400
    config["x-composens"]["links"][0]["mtu"] = 9000
    assert error_of(config) == (
        "lab.yml: x-composens.links[0].mtu: 9000 does not fit the underlay of host h1 (MTU 1500, "
        "x-composens.hosts.h1.mtu; VXLAN over IPv4 takes 50 bytes), so at most 1450"
    )


def test_checks_run_where_their_service_is() -> None:
    config = lab(checks=[{"ping": {"from": "r1", "to": "198.19.1.2"}}, {"ping": {"from": "r2", "to": "198.19.1.1"}}])
    assert [c.service for c in view(config, "h1").checks] == ["r1"]
    assert [c.service for c in view(config, "h2").checks] == ["r2"]


def test_the_vxlan_port_name_avoids_member_ports() -> None:
    config = lab()
    config["x-composens"]["lans"] = {"verylongname12": {"endpoints": ["r1:lan0", "r2:lan0"]}}
    (port,) = [t for t in view(config, "h1").tunnels if t.lan]
    assert port.end.ifname.startswith("v")
    assert len(port.end.ifname) == 11


# --------------------------------------------------------------------------- wiring a host's view (pure)


def test_the_plan_from_scratch_makes_vxlan_ends_from_the_hosts_namespace() -> None:
    from composens.plan import converge

    mine = view(lab(vxlan={"port": 4790}), "h1")
    lines, unwired = converge.full_plan(mine)
    vnis = parse(lab()).hosts
    mac = mine.mac_of(Endpoint("r1", "eth1"))
    assert (
        f"ip link add name eth1 mtu 1450 address {mac} netns r1 type vxlan id {vnis.link_vnis[0]} "
        "local 198.18.200.1 remote 198.18.200.2 dstport 4790"
    ) in lines
    port = next(line for line in lines if "vx.core" in line and "link add" in line)
    assert port.startswith("ip link add name vx.core mtu 1450 address ")
    assert port.endswith(
        f"netns lab type vxlan id {vnis.lan_vnis['core']} local 198.18.200.1 remote 198.18.200.2 dstport 4790"
    )
    assert "ip -n r1 link set dev eth1 alias composens:lab up" in lines
    assert "ip -n lab link set dev vx.core master core alias composens:lab up" in lines
    assert "ip -n r1 addr add 198.19.1.1/30 dev eth1" in lines
    assert unwired == []


def test_a_lan_over_three_hosts_replicates_to_each_other_host() -> None:
    config = lab()
    config["x-composens"]["hosts"]["h3"] = {"underlay": "198.18.200.3"}
    config["services"]["r4"] = {"network_mode": "none", "x-composens": {"host": "h3"}}
    config["x-composens"]["lans"]["core"]["endpoints"].append("r4:lan0")
    from composens.plan import converge

    lines, _ = converge.full_plan(view(config, "h1"))
    assert any("vx.core" in line and line.endswith("remote 198.18.200.2 dstport 4789") for line in lines)
    assert "bridge -n lab fdb append 00:00:00:00:00:00 dev vx.core dst 198.18.200.3" in lines


def test_a_vxlan_end_whose_vni_differs_is_made_again_and_an_intact_one_is_left() -> None:
    from composens.model.record import Claim, NodeRecord
    from composens.plan import changes as ch
    from composens.plan import converge, live
    from composens.plan.live import LiveLink, LiveNamespace, Vxlan

    config = lab()
    config["x-composens"]["lans"] = {}
    mine = view(config, "h1")
    (tunnel,) = mine.tunnels
    mac = mine.mac_of(tunnel.end)

    def r1_with(vni: int) -> LiveNamespace:
        link = LiveLink("eth1", 7, "vxlan", None, "composens:lab", 1450, True, mac=mac,
                        vxlan=Vxlan(vni, "198.18.200.1", "198.18.200.2", 4789))  # fmt: skip
        return live.add_address(live.with_link(live.EMPTY, link), "eth1", "198.19.1.1/30")

    records = {"r1": NodeRecord("x", interfaces={"eth1": Claim(7)}, addresses={"eth1": {"198.19.1.1/30"}})}
    scope = converge.Scope(frozenset({"r1", "r3", "host"}))
    state = {"r1": r1_with(tunnel.vni), "r3": live.EMPTY, "host": live.EMPTY}

    def on_eth1(found: converge.Diff) -> list[str]:
        return [type(c).__name__ for c in found.changes if getattr(c, "ifname", None) == "eth1" or
                getattr(getattr(c, "end", None), "ifname", None) == "eth1"]  # fmt: skip

    assert on_eth1(converge.diff(mine, state, records, scope)) == []
    state["r1"] = r1_with(4242)
    found = converge.diff(mine, state, records, scope)
    assert on_eth1(found)[:2] == ["DeleteLink", "CreateVxlan"]
    made = next(c for c in found.creations if isinstance(c, ch.CreateVxlan))
    assert (made.vni, made.remote) == (tunnel.vni, "198.18.200.2")
    assert any(d.problem == "differs" and "vxlan 4242 from 198.18.200.1" in d.item for d in found.drift)
    # A rollback would make the old one again, as it was.
    deleted = next(c for c in found.removals if isinstance(c, ch.DeleteLink))
    assert isinstance(deleted.restore[0], ch.CreateVxlan)
    assert deleted.restore[0].vni == 4242


def test_the_picture_draws_a_cluster_per_host() -> None:
    from composens.show import picture

    text = picture.dot(parse(lab()))
    assert 'subgraph cluster_h1 { label="h1 (198.18.200.1)"' in text
    assert 'subgraph cluster_h2 { label="h2 (198.18.200.2)"' in text
    assert 'subgraph h2["h2 (198.18.200.2)"]' in picture.mermaid(parse(lab()))


def test_a_lan_port_whose_other_hosts_change_is_made_again() -> None:
    from composens.model.record import Claim, NodeRecord
    from composens.plan import changes as ch
    from composens.plan import converge, live
    from composens.plan.live import LiveLink, Vxlan

    three = lab()
    three["x-composens"]["hosts"]["h3"] = {"underlay": "198.18.200.3"}
    three["services"]["r4"] = {"network_mode": "none", "x-composens": {"host": "h3"}}
    three["x-composens"]["lans"]["core"]["endpoints"].append("r4:lan0")
    before, after = view(three, "h1"), view(lab(), "h1")
    (old,), (new,) = ([t for t in v.tunnels if t.lan] for v in (before, after))
    assert old.vni == new.vni  # the LAN's VNI does not depend on its members
    assert before.mac_of(old.end) != after.mac_of(new.end)
    port = LiveLink("vx.core", 9, "vxlan", None, "composens:lab", 1450, True, "core", mac=before.mac_of(old.end),
                    vxlan=Vxlan(old.vni, "198.18.200.1", "198.18.200.2", 4789))  # fmt: skip
    hub = live.with_link(live.EMPTY, port)
    hub = live.with_link(hub, LiveLink("core", 8, "bridge", None, "composens:lab", 1450, True,
                                       bridge_options=ch.BRIDGE_OPTIONS))  # fmt: skip
    records = {"@hub": NodeRecord("h", interfaces={"vx.core": Claim(9), "core": Claim(8)})}
    state = {"@hub": hub, "host": live.EMPTY}
    scope = converge.Scope(frozenset({"@hub", "host"}), frozenset({"r3"}))
    kept = converge.diff(before, state, records, scope)
    assert not [c for c in kept.changes if getattr(c, "ifname", None) == "vx.core" or isinstance(c, ch.CreateVxlan)]
    found = converge.diff(after, state, records, scope)
    assert [type(c).__name__ for c in found.removals if isinstance(c, ch.DeleteLink)] == ["DeleteLink"]
    assert any(isinstance(c, ch.CreateVxlan) and c.end.ifname == "vx.core" for c in found.creations)
    assert not any(isinstance(c, ch.AppendFdb) for c in found.creations)  # only h2 is left to replicate to
    assert any("replicates to other hosts than h2 (198.18.200.2)" in d.item for d in found.drift)


def test_a_dependency_on_a_service_of_another_host_is_refused() -> None:
    """compose up of this host's services would start the other host's too, and the next up remove it again."""
    config = lab()
    config["services"]["r1"]["depends_on"] = {"r2": {"condition": "service_started"}}
    assert error_of(config) == (
        "lab.yml: services.r1.depends_on.r2: r2 is placed on h2 and r1 on h1; compose would start r2 on h1 too: "
        "place them on one host, or drop the dependency"
    )
    config = lab()
    config["services"]["r1"]["depends_on"] = ["r3"]  # on the same host: fine
    assert parse(config).hosts is not None
    config = lab()
    config["services"]["w"] = {"network_mode": "service:r2", "x-composens": {"host": "h1"}}
    assert error_of(config).startswith("lab.yml: services.w.network_mode: r2 is placed on h2 and w on h1")
