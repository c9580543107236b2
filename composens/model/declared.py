"""What a compose project declares for composens: its topology, the hosts it spans, its MACs, its checks, probes and
scenarios."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from composens.model import hosts, topology
from composens.model.topology import Topology


def parse(config: Mapping[str, Any], *, source: str) -> Topology:
    """Turn `docker compose config` output into a validated Topology."""
    topo, top = topology.parse_declared(config, source=source)
    topo = replace(topo, hosts=hosts.parse(config, top, topo))  # None without x-composens.hosts
    topo = topology.with_hub_and_macs(topo, top)
    if "checks" in top:
        from composens.model import checks  # only projects that declare checks pay for reading them

        topo = replace(topo, checks=checks.parse_checks(top["checks"], topo))
    if "probes" in top or "scenarios" in top:
        from composens.model import scenarios  # only projects that declare scenarios pay for reading them

        topo = replace(topo, scenarios=scenarios.parse(top, topo))
    return topo
