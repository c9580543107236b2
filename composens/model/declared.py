"""What a compose project declares for composens: its topology, the hosts it spans, its MACs, its checks, probes,
scenarios and flight recorder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from composens.model import hosts, topology
from composens.model.macs import salt_for
from composens.model.topology import HUB, Endpoint, Topology


def parse(config: Mapping[str, Any], *, source: str, machine: str | None = None) -> Topology:
    """Turn `docker compose config` output into a validated Topology; `machine` is this machine's id (the salt of
    derived MACs on one machine; None: not known, so derived from the project alone)."""
    topo, top = topology.parse_declared(config, source=source)
    topo = replace(topo, hosts=hosts.parse(config, top, topo))  # None without x-composens.hosts
    topo = topology.with_hub_and_macs(topo, top, _mac_salts(topo, machine))
    if "checks" in top:
        from composens.model import checks  # only projects that declare checks pay for reading them

        topo = replace(topo, checks=checks.parse_checks(top["checks"], topo))
    if "probes" in top or "scenarios" in top:
        from composens.model import scenarios  # only projects that declare scenarios pay for reading them

        topo = replace(topo, scenarios=scenarios.parse(top, topo))

    if "capture" in top:
        from composens.model import capture

        topo = replace(topo, capture=capture.parse_recorder(top["capture"], topo))
    return topo


def _mac_salts(topo: Topology, machine: str | None) -> dict[Endpoint, str]:
    """The salt of each end's derived MAC: that of the machine the end is on (macs.salt_for). Over several hosts
    an end is on its service's host; a `host:` end and a hub port are on the host of the service they face (a
    `host:` member's, of its LAN's services, which a LAN with a `host:` member has on one host only)."""
    placed = topo.hosts.placement if topo.hosts is not None else {}
    lan_hosts: dict[str, str] = {}
    for lan in topo.lans:
        machines = {placed[m.node] for m in lan.members if m.node in placed}
        if len(machines) == 1:
            lan_hosts.update(dict.fromkeys(lan.ports, machines.pop()))
    found: dict[Endpoint, str] = {}
    for pair in topo.pairs():
        others = [placed[end.node] for end in (pair.a, pair.b) if end.node in placed]
        others += [lan_hosts[end.ifname] for end in (pair.a, pair.b) if end.node == HUB and end.ifname in lan_hosts]
        for end in (pair.a, pair.b):
            host_name = placed.get(end.node) or next(iter(others), None)
            underlay = topo.hosts.hosts[host_name].underlay if topo.hosts is not None and host_name else None
            found[end] = salt_for(topo.mac_salt, underlay, machine)
    return found
