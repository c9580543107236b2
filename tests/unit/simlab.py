"""A lab on paper: converge a topology against namespaces modelled by changes.simulate, keeping a record as wiring does.

Used by the pure convergence tests; the integration tests prove the same on the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from composens.model.record import Claim, ProjectRecord
from composens.model.topology import HOST, HUB, Topology
from composens.plan import changes, converge, live
from composens.plan.changes import Change
from composens.plan.live import LiveNamespace, LiveRoute


@dataclass
class PaperLab:
    """Namespaces (by node), which namespace each node is now, and the project's record."""

    state: dict[str, LiveNamespace] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)
    record: ProjectRecord = field(default_factory=ProjectRecord)

    def nodes(self, topo: Topology) -> set[str]:
        return {HOST, *topo.services} | ({HUB} if topo.hub is not None else set())

    def restart(self, node: str) -> None:
        """A container restarted: a new, empty namespace; its veth pairs died, peers' ends with them."""
        gone = set(self.state.get(node, live.EMPTY).links)
        for other, ns in self.state.items():
            if other == node:
                continue
            for ifname in list(ns.links):
                claim = self.record.nodes.get(other, None)
                peer = claim.interfaces.get(ifname).peer if claim and ifname in claim.interfaces else None
                if peer and peer.split(":", 1)[0] == node and peer.split(":", 1)[1] in gone:
                    ns = live.without_link(ns, ifname)
            self.state[other] = ns
        self.state[node] = live.EMPTY
        self.identity[node] = self.identity.get(node, node) + "'"

    def add_address(self, node: str, ifname: str, address: str) -> None:
        self.state[node] = live.add_address(self.state[node], ifname, address)

    def add_route(self, node: str, route: LiveRoute) -> None:
        self.state[node] = live.put_route(self.state[node], route)

    def converge(self, topo: Topology, chosen: frozenset[str] | None = None) -> tuple[list[str], converge.Diff]:
        """Run one convergence as wiring.converge_lab does; return the commands with their signs, and the diff."""
        nodes = self.nodes(topo)
        for node in nodes:
            self.state.setdefault(node, live.EMPTY)
            self.identity.setdefault(node, node)
        records = {n: self.record.node(n, self.identity[n]) for n in nodes}
        scope = converge.Scope(frozenset(nodes), chosen, frozenset(), qdiscs=True)
        found = converge.diff(topo, self.state, records, scope)
        assert not found.conflicts, found.conflicts
        lines = []
        for change in found.removals + found.creations:
            lines.append(self._run(topo, change, records))
        routes = converge.route_diff(topo, self.state, records, scope)
        assert not routes.conflicts, routes.conflicts
        for change in routes.routes:
            lines.append(self._run(topo, change, records))
        self._settle(records)
        return lines, found

    def _run(self, topo: Topology, change: Change, records: Mapping[str, object]) -> str:
        rec = self.record.nodes
        match change:
            case changes.CreatePair(a, b):
                rec[a.node].interfaces[a.ifname] = Claim(None, str(b))
                rec[b.node].interfaces[b.ifname] = Claim(None, str(a))
            case changes.CreateBridge(node, name):
                rec[node].interfaces[name] = Claim(None)
            case changes.DeleteLink(node, ifname, peer):
                rec[node].forget(ifname)
                if peer is not None:
                    rec[peer.node].forget(peer.ifname)
            case changes.AddAddress(node, ifname, address):
                rec[node].addresses.setdefault(ifname, set()).add(address)
            case changes.DelAddress(node, ifname, address):
                rec[node].addresses.get(ifname, set()).discard(address)
            case changes.AddRoute(node, route):
                rec[node].routes[route.key] = str(route)
            case changes.DelRoute(node, route):
                rec[node].routes.pop(route.key, None)
            case changes.SetQdisc(node, ifname, conditions):
                rec[node].qdiscs[ifname] = conditions.spelled()
            case changes.DelQdisc(node, ifname):
                rec[node].qdiscs.pop(ifname, None)
            case changes.WriteSysctls(node, ifname, family, values, sign) if sign == "+":
                # What a container's namespace has before: docker's defaults.
                defaults = {
                    "accept_dad": "1",
                    "keep_addr_on_down": "0",
                    "disable_ipv6": "1",
                    "promote_secondaries": "0",
                    "arp_notify": "0",
                    "ndisc_notify": "0",
                }
                rec[node].sysctls.setdefault(f"{family}:{ifname}", {key: defaults[key] for key, _ in values})
            case changes.WriteSysctls(node, ifname, family, values, sign) if sign == "-":
                rec[node].sysctls.pop(f"{family}:{ifname}", None)
        self.state = changes.simulate(self.state, change)
        return f"{change.sign} {changes.command(change, lambda node: topo.node(node).netns)}"

    def _settle(self, records: Mapping[str, object]) -> None:
        for node, ns in self.state.items():
            record = self.record.nodes.get(node)
            if record is None:
                continue
            for ifname, claim in list(record.interfaces.items()):
                link = ns.links.get(ifname)
                if link is None:
                    record.forget(ifname)
                elif claim.index is None and link.alias:
                    claim.index = link.index

    def picture(self) -> dict[str, tuple[object, ...]]:
        """The namespaces as a comparable value: interfaces, addresses and routes, ifindexes left out."""
        return {
            node: (
                tuple(sorted((k.ifname, k.kind, k.mtu, k.up, k.alias, k.master) for k in ns.links.values())),
                tuple(
                    sorted((i, tuple(sorted(a.address for a in addrs))) for i, addrs in ns.addresses.items() if addrs)
                ),
                tuple(sorted(str(r) for r in ns.routes)),
            )
            for node, ns in sorted(self.state.items())
            if ns.links or ns.addresses or ns.routes  # a service gone from the file leaves nothing behind
        }
