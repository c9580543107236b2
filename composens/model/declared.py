"""What a compose project declares for composens: its topology, hosts, MACs, checks and flight recorder."""

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
    if "capture" in top:
        from composens.model import capture

        topo = replace(topo, capture=capture.parse_recorder(top["capture"], topo))
    return topo
