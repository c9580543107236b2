"""Declared against live: the changes that bring a lab to exactly what its file says, and its drift.

Pure. Given the topology, what each namespace has now (live.py) and what composens recorded making
there (state.NodeRecord), `diff` says what to remove, create, change and route, in the order
wiring.py runs it, and what differs (drift) for `ps --netns`. Only what composens made is removed
or changed: an interface is composens' when it carries the project's alias *and* the record knows
it (by ifindex, or as claimed just before a run that ended before it could mark it). Addresses and
routes are composens' when the record says it added them; anything else a person added by hand on
a composens interface is left alone and reported as extra.

Runs in three phases: removals, then creations and changes of interfaces and addresses, then routes,
which the kernel drops with an interface, with the last IPv4 address on it, or when it goes down.
wiring.py reads the routes again before the third phase; `plan` predicts them with changes.simulate.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from composens.model.conditions import Conditions
from composens.model.conditions import parse as parse_conditions
from composens.model.record import Claim, NodeRecord
from composens.model.report import Drift
from composens.model.topology import HOST, HUB, Endpoint, Link, Route, Topology, parse_route
from composens.plan import changes as ch
from composens.plan import live
from composens.plan.changes import Change
from composens.plan.live import LiveAddress, LiveLink, LiveNamespace, LiveRoute

if TYPE_CHECKING:
    from composens.model.hosts import Tunnel

VETH_MTU = 1500  # what a veth gets when no MTU is declared


@dataclass(frozen=True)
class Want:
    """An interface the file declares, as composens should find it."""

    end: Endpoint
    kind: str  # "veth" or "bridge"
    peer: Endpoint | None
    mtu: int | None
    master: str | None
    addresses: tuple[str, ...]
    up: bool
    conditions: Conditions | None = None  # on its egress: set at run time, or else declared
    mac: str | None = None  # declared, or derived from the project and the end's name
    tunnel: Tunnel | None = None  # kind "vxlan": the tunnel it is this host's end of


@dataclass
class Diff:
    removals: list[Change] = field(default_factory=list)
    creations: list[Change] = field(default_factory=list)
    routes: list[Change] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # declared things the live lab cannot take (exit 3)
    drift: list[Drift] = field(default_factory=list)
    unwired_pairs: list[tuple[Link, str]] = field(default_factory=list)  # declared pairs not reachable, and why
    unwired_tunnels: list[tuple[str, str]] = field(default_factory=list)  # VXLAN ends not made (node, why)

    @property
    def unwired(self) -> list[str]:
        return [reason for _, reason in self.unwired_pairs] + [reason for _, reason in self.unwired_tunnels]

    @property
    def changes(self) -> list[Change]:
        return self.removals + self.creations + self.routes


@dataclass(frozen=True)
class Scope:
    """What a run may touch: the namespaces it can reach now and the services it was asked about."""

    available: frozenset[str]  # nodes with a namespace to read and change (services, HOST, HUB)
    chosen: frozenset[str] | None = None  # services; None: all of them, and the host and hub
    down: frozenset[Endpoint] = frozenset()  # ends set down at run time (`composens link down`)
    conditions: Mapping[Endpoint, Conditions] = field(default_factory=dict)  # set at run time (`netem set`)
    qdiscs: bool = False  # whether the namespaces' qdiscs were read (only then are conditions compared)
    # Why a node has no namespace to reach, where it is not that it does not run (a running container whose entry
    # is stale, say): what a pair it cannot wire is reported with.
    absent: Mapping[str, str] = field(default_factory=dict)

    def why_absent(self, nodes: Iterable[str], name: Callable[[str], str]) -> str:
        """`a, b not running`, or each reason with its nodes: `a running, not linked (stale netns entry); b not
        running`."""
        by_reason: dict[str, list[str]] = {}
        for node in dict.fromkeys(nodes):
            by_reason.setdefault(self.absent.get(node, "not running"), []).append(name(node))
        return "; ".join(f"{', '.join(names)} {reason}" for reason, names in by_reason.items())

    def full(self, node: str) -> bool:
        """Tell whether everything composens made in `node` is converged, not only what touches the chosen."""
        return node in self.available and (self.chosen is None or node in self.chosen)

    def touches(self, ends: Iterable[Endpoint]) -> bool:
        chosen = self.chosen
        return chosen is None or any(ep.node in chosen for ep in ends)


def diff(
    topo: Topology,
    state: Mapping[str, LiveNamespace],
    records: Mapping[str, NodeRecord],
    scope: Scope,
    *,
    check_gateways: bool = False,
) -> Diff:
    """Compare the declared wiring with the live namespaces; say what to change, in order, and what drifts."""
    work = _Work(topo, state, records, scope)
    work.interfaces()
    work.out.removals = _in_waves(work.out.removals)
    work.out.creations = _in_waves(work.out.creations)
    after = dict(state)
    for change in work.out.removals + work.out.creations:
        after = ch.simulate(after, change)
    work.routes(after, check_gateways=check_gateways, drift=False)
    work.routes(state, check_gateways=False, drift=True, changes=False)
    return work.out


def from_scratch(topo: Topology, services: frozenset[str] | None = None) -> Diff:
    """The whole wiring as if nothing existed yet: what `composens plan --full` prints."""
    from composens.plan import live

    nodes = {HOST, *topo.services} | ({HUB} if topo.hub is not None else set())
    return diff(topo, dict.fromkeys(nodes, live.EMPTY), {}, Scope(frozenset(nodes), services))


def in_line(
    topo: Topology, state: Mapping[str, LiveNamespace], records: Mapping[str, NodeRecord], scope: Scope, service: str
) -> bool:
    """Tell whether every pair and VXLAN end of `service` is found as the file declares it: both ends' namespaces
    there, nothing to make, change or remove for it. (A service whose wiring a failed run rolled back is not.)"""
    found = diff(topo, state, records, replace(scope, chosen=frozenset({service})))
    return not (found.changes or found.unwired or found.conflicts or found.problems)


def full_plan(topo: Topology, services: frozenset[str] | None = None) -> tuple[list[str], list[str]]:
    """What `composens plan --full` prints: the hub's making, then every change from scratch; and what cannot be
    planned (links to services not chosen are simply left out)."""
    found = from_scratch(topo, services)
    hub = topo.hub.netns if topo.hub is not None and topo.lans else None
    lines = ch.hub_commands(hub) if hub else []
    lines += [ch.command(c, lambda node: topo.node(node).netns) for c in found.changes]
    return lines, found.unwired


def route_diff(
    topo: Topology, state: Mapping[str, LiveNamespace], records: Mapping[str, NodeRecord], scope: Scope
) -> Diff:
    """The route phase alone, against namespaces read again after the interfaces changed."""
    work = _Work(topo, state, records, scope)
    work.routes(state, check_gateways=False, drift=False)
    return work.out


class _Work:
    def __init__(
        self, topo: Topology, state: Mapping[str, LiveNamespace], records: Mapping[str, NodeRecord], scope: Scope
    ) -> None:
        self.topo = topo
        self.state = state
        self.records = records
        self.scope = scope
        self.mark = ch.marker(topo.project)
        self.out = Diff()
        self.declared = _declared(topo)
        self.wants = self._wants()
        self.fresh: set[Endpoint] = set()  # ends this run creates
        self.gone: set[Endpoint] = set()  # ends this run deletes

    # ------------------------------------------------------------------ what is wanted

    def _wants(self) -> dict[Endpoint, Want]:
        wants: dict[Endpoint, Want] = {}
        available = self.scope.available
        for pair in self.topo.pairs():
            ends = (pair.a, pair.b)
            if not self.scope.touches(ends):
                continue
            missing = [ep.node for ep in ends if ep.node not in available]
            if any(self.topo.node(node).replicas == 0 for node in missing):
                continue  # scaled to 0: the file asks for no container, so no pair either
            if missing:
                why = self.scope.why_absent(missing, self._name)
                self.out.unwired_pairs.append((pair, f"{pair.a} <-> {pair.b}: {why}"))
                continue
            for end, peer in ((pair.a, pair.b), (pair.b, pair.a)):
                wants[end] = Want(
                    end,
                    "veth",
                    peer,
                    pair.mtu,
                    self._bridge_of(end),
                    self.topo.node(end.node).addresses.get(end.ifname, ()) if end.node != HUB else (),
                    end not in self.scope.down,
                    self.scope.conditions.get(end) or self.topo.conditions_of(end),
                    self.topo.mac_of(end),
                )
        for tunnel in self.topo.tunnels:
            if not self.scope.touches(self._tunnel_members(tunnel)):
                continue
            end = tunnel.end
            if end.node not in available:
                far = f"{tunnel.peer} on {tunnel.remotes[0].name}" if tunnel.peer else f"LAN {tunnel.lan}'s other hosts"
                reason = f"{end} <-> {far} (vxlan {tunnel.vni}): {self.scope.why_absent([end.node], self._name)}"
                self.out.unwired_tunnels.append((end.node, reason))
                continue
            wants[end] = Want(
                end,
                "vxlan",
                None,
                tunnel.mtu,
                tunnel.lan,
                self.topo.node(end.node).addresses.get(end.ifname, ()) if end.node != HUB else (),
                end not in self.scope.down,
                self.scope.conditions.get(end) or self.topo.conditions_of(end),
                self.topo.mac_of(end),
                tunnel,
            )
        if HUB in available:
            for lan in self.topo.lans:
                if self.scope.touches(lan.members):
                    bridge = Endpoint(HUB, lan.name)
                    wants[bridge] = Want(bridge, "bridge", None, lan.mtu, None, (), True)
        return wants

    def _tunnel_members(self, tunnel: Tunnel) -> tuple[Endpoint, ...]:
        """The service ends a tunnel serves: its own, or its LAN's members on this host."""
        if tunnel.lan is None:
            return (tunnel.end,)
        return next(lan.members for lan in self.topo.lans if lan.name == tunnel.lan)

    def _bridge_of(self, end: Endpoint) -> str | None:
        if end.node != HUB:
            return None
        return next(lan.name for lan in self.topo.lans if end.ifname in lan.ports)

    def _name(self, node: str) -> str:
        return "the hub" if node == HUB else node

    # ------------------------------------------------------------------ ownership

    def link(self, end: Endpoint) -> LiveLink | None:
        ns = self.state.get(end.node)
        return ns.links.get(end.ifname) if ns else None

    def record(self, node: str) -> NodeRecord:
        return self.records.get(node) or NodeRecord(netns="")

    def owned(self, end: Endpoint) -> bool:
        link, claim = self.link(end), self.record(end.node).interfaces.get(end.ifname)
        if owned(link, claim, self.mark):
            return True
        # Claimed just before a run that ended (killed, say) before it could mark it: taken as composens' only
        # when it is still paired with the peer the claim names (or is a bridge in the project's own hub).
        if link is None or claim is None or link.alias is not None or claim.index is not None:
            return False
        if claim.peer is None:
            return (end.node == HUB and link.kind == "bridge") or link.kind == "vxlan"
        node, ifname = claim.peer.split(":", 1)
        peer = self.state.get(node, LiveNamespace()).links.get(ifname)
        return peer is not None and peer.index == link.peer_index and peer.peer_index == link.index

    def _conflict(self, end: Endpoint, link: LiveLink) -> None:
        where = self._where(end.node)
        owner = link.alias.removeprefix("composens:") if link.alias and link.alias.startswith("composens:") else None
        if owner and owner != self.topo.project:
            message = f"interface {end.ifname} in {where} belongs to project {owner}; rename it in one of the projects"
        elif owner:
            message = (
                f"interface {end.ifname} in {where} carries this project's mark but the record does not know it; "
                "remove it (ip link del) or run composens netns prune --recover"
            )
        else:
            message = f"interface {end.ifname} already exists in {where} and was not created by composens"
            message += "; remove or rename it"
        self.out.conflicts.append(message)
        self._drift(end.node, end.ifname, "conflict", f"interface {end.ifname}: {message}")

    def _drift(self, node: str, ifname: str | None, problem: str, item: str, ours: bool | None = None) -> None:
        self.out.drift.append(Drift(node, problem, item, ours, ifname))

    def _where(self, node: str) -> str:
        if node == HOST:
            return "the host's namespace"
        netns = self.topo.node(node).netns
        return f"netns {netns}"

    # ------------------------------------------------------------------ interfaces and addresses

    def interfaces(self) -> None:
        done: set[Endpoint] = set()
        for end, want in self.wants.items():
            if end in done:
                continue
            if want.kind == "bridge":
                self._bridge(want)
                done.add(end)
                continue
            if want.kind == "vxlan":
                self._vxlan(want)
                done.add(end)
                continue
            assert want.peer is not None
            done |= {end, want.peer}
            self._pair(want, self.wants[want.peer])
        self._undeclared()
        for end, want in self.wants.items():
            if end not in self.fresh and self.link(end) is not None and end not in self.gone:
                self._attributes(want, self.link(end))  # type: ignore[arg-type]
            self._addresses(want)

    def _pair(self, a: Want, b: Want) -> None:
        links = {want.end: self.link(want.end) for want in (a, b)}
        foreign = [(end, link) for end, link in links.items() if link is not None and not self.owned(end)]
        for end, link in foreign:
            self._conflict(end, link)
        if foreign:
            return
        la, lb = links[a.end], links[b.end]
        if la is not None and lb is not None and self._intact(a.end, la, b.end, lb):
            return
        for want in (a, b):
            found = links[want.end]
            if found is None:
                self._drift(want.end.node, want.end.ifname, "missing", f"interface {want.end.ifname}")
            elif want.end not in self.gone:
                self._drift(
                    want.end.node,
                    want.end.ifname,
                    "differs",
                    f"interface {want.end.ifname}: its peer is not {want.peer}",
                )
                self._delete(want.end, found)
        self.out.creations.append(ch.CreatePair(a.end, b.end, a.mtu, mac_a=a.mac, mac_b=b.mac))
        self.fresh |= {a.end, b.end}

    def _intact(self, a: Endpoint, la: LiveLink, b: Endpoint, lb: LiveLink) -> bool:
        claims = (self.record(a.node).interfaces[a.ifname], self.record(b.node).interfaces[b.ifname])
        return (
            la.kind == lb.kind == "veth"
            and la.peer_index == lb.index
            and lb.peer_index == la.index
            and all(claim.peer in (None, str(other)) for claim, other in zip(claims, (b, a), strict=True))
        )

    def _bridge(self, want: Want) -> None:
        link = self.link(want.end)
        if link is not None and not self.owned(want.end):
            self._conflict(want.end, link)
            return
        if link is not None and link.kind == "bridge":
            return
        if link is not None:
            self._delete(want.end, link)
        self._drift(HUB, want.end.ifname, "missing", f"bridge {want.end.ifname}")
        self.out.creations.append(ch.CreateBridge(HUB, want.end.ifname, want.mtu))
        self.fresh.add(want.end)

    def _vxlan(self, want: Want) -> None:
        """Make this host's end of a tunnel, or make it again when its VNI, ends or port differ."""
        tunnel = want.tunnel
        assert tunnel is not None
        end, link = want.end, self.link(want.end)
        if link is not None and not self.owned(end):
            self._conflict(end, link)
            return
        wanted = live.Vxlan(tunnel.vni, tunnel.local, tunnel.remotes[0].underlay, tunnel.port)
        # A LAN's port is also its FDB entries towards the other hosts: its MAC stands for them (hosts.view), and so
        # do the entries the record says composens appended (where it knows them), which a rollback puts back.
        appended = self.record(end.node).interfaces.get(end.ifname)
        further = sorted(host.underlay for host in tunnel.remotes[1:])
        same_port = (
            tunnel.lan is None
            or link is None
            or (link.mac == want.mac and (appended is None or appended.fdb is None or sorted(appended.fdb) == further))
        )
        if link is not None and link.kind == "vxlan" and link.vxlan == wanted and same_port:
            return
        if link is None:
            self._drift(end.node, end.ifname, "missing", f"interface {end.ifname}")
        elif end not in self.gone:
            now = _tunnel_text(link.vxlan) if link.vxlan else f"a {link.kind or 'device'}"
            item = f"interface {end.ifname}: {now}, declared {_tunnel_text(wanted)}"
            if link.vxlan == wanted:
                item = f"interface {end.ifname}: replicates to other hosts than {_hosts_text(tunnel)}"
            self._drift(end.node, end.ifname, "differs", item)
            self._delete(end, link)
        self.out.creations.append(
            ch.CreateVxlan(end, tunnel.vni, tunnel.local, wanted.remote or "", tunnel.port, want.mtu, want.mac)
        )
        # Head-end replication to every further host with members (the first is the device's own remote).
        self.out.creations += [ch.AppendFdb(end.node, end.ifname, host.underlay) for host in tunnel.remotes[1:]]
        self.fresh.add(end)

    def _undeclared(self) -> None:
        """Remove what composens made in a fully converged namespace that the file no longer declares."""
        order = [*self.topo.services, HOST, HUB]
        for node in sorted(self.state, key=lambda n: (order.index(n) if n in order else len(order), n)):
            if not self.scope.full(node):
                continue
            for ifname, link in sorted(self.state[node].links.items()):
                end = Endpoint(node, ifname)
                if end in self.declared or end in self.gone:
                    continue
                if self.owned(end):
                    self._drift(node, ifname, "extra", f"interface {ifname}", True)
                    self._delete(end, link)
                elif link.alias == self.mark:
                    self._drift(
                        node, ifname, "extra", f"interface {ifname} (marked as this project's, not in the record)"
                    )

    def _delete(self, end: Endpoint, link: LiveLink) -> None:
        peer = self._peer(end, link)
        self.gone.add(end)
        if peer is not None:
            self.gone.add(peer)
        self.out.removals.append(ch.DeleteLink(end.node, end.ifname, peer, self._restore(end, link, peer)))

    def _peer(self, end: Endpoint, link: LiveLink) -> Endpoint | None:
        """The other end of a veth of composens': the record names it; the kernel's indexes confirm it."""
        claim = self.record(end.node).interfaces.get(end.ifname)
        if link.kind != "veth" or claim is None or claim.peer is None:
            return None
        node, ifname = claim.peer.split(":", 1)
        other = self.state.get(node, LiveNamespace()).links.get(ifname)
        if other is not None and other.index == link.peer_index and other.peer_index == link.index:
            return Endpoint(node, ifname)
        return None

    def _restore(self, end: Endpoint, link: LiveLink, peer: Endpoint | None) -> tuple[Change, ...]:
        """The changes that would put a deleted interface (and its peer) back as they were."""
        links = [(end, link)]
        if peer is not None:
            peer_link = self.link(peer)
            assert peer_link is not None
            links.append((peer, peer_link))
        restore: list[Change] = []
        if link.kind == "bridge":
            restore.append(ch.CreateBridge(end.node, end.ifname, link.mtu))
        elif link.vxlan is not None and link.vxlan.local is not None and link.vxlan.remote is not None:
            vni, local, remote, port = link.vxlan.vni, link.vxlan.local, link.vxlan.remote, link.vxlan.port
            restore.append(ch.CreateVxlan(end, vni, local, remote, port, link.mtu, link.mac))
            # Its head-end replication to the third and further hosts: the FDB entries composens appended to it.
            claim = self.record(end.node).interfaces.get(end.ifname)
            appended = claim.fdb if claim is not None else None
            restore += [ch.AppendFdb(end.node, end.ifname, host) for host in appended or ()]
        elif peer is not None:
            peer_mac = links[1][1].mac
            mtu = link.mtu if link.mtu != VETH_MTU else None
            restore.append(ch.CreatePair(end, peer, mtu, mac_a=link.mac, mac_b=peer_mac))
        else:
            return ()  # one end of a broken pair: nothing worth putting back
        for ep, ln in links:
            restore.append(
                ch.SetLink(ep.node, ep.ifname, master=ln.master, alias=ln.alias, state="up" if ln.up else None)
            )
            qdisc = self.state[ep.node].qdiscs.get(ep.ifname)
            if qdisc is not None and qdisc.conditions is not None:
                restore.append(ch.SetQdisc(ep.node, ep.ifname, qdisc.conditions))
            addresses = [a.address for a in self.state[ep.node].addresses_of(ep.ifname) if not a.link_local]
            if any(":" in a for a in addresses):
                restore.append(ch.WriteSysctls(ep.node, ep.ifname, 6, ch.ENABLE_IPV6))
            restore += [ch.AddAddress(ep.node, ep.ifname, a) for a in addresses]
        for ep, _ in links:
            for route in self.state[ep.node].routes_via(ep.ifname):
                if route.gateway:
                    restore.append(ch.AddRoute(ep.node, as_route(route)))
        return tuple(restore)

    def _attributes(self, want: Want, link: LiveLink) -> None:
        end = want.end
        mtu = want.mtu if want.mtu is not None else (VETH_MTU if want.kind == "veth" else None)
        change_mtu = mtu if mtu is not None and link.mtu != mtu else None
        change_master = want.master if want.master is not None and link.master != want.master else None
        change_alias = self.mark if link.alias != self.mark else None
        change_state = None if link.up == want.up else ("up" if want.up else "down")
        change_mac = want.mac if want.mac is not None and link.mac != want.mac else None
        if change_mtu is not None:
            self._drift(end.node, end.ifname, "differs", f"interface {end.ifname}: mtu {link.mtu}, declared {mtu}")
        if change_mac is not None:
            self._drift(end.node, end.ifname, "differs", f"interface {end.ifname}: mac {link.mac}, wanted {want.mac}")
        if change_master is not None:
            self._drift(end.node, end.ifname, "differs", f"interface {end.ifname}: not a port of bridge {want.master}")
        if change_state == "up":
            self._drift(end.node, end.ifname, "down", f"interface {end.ifname}")
        elif change_state == "down":
            self._drift(
                end.node,
                end.ifname,
                "differs",
                f"interface {end.ifname} is up; it was set down with composens link down",
            )
        if (change_mtu, change_master, change_alias, change_state, change_mac) != (None, None, None, None, None):
            self.out.creations.append(
                ch.SetLink(end.node, end.ifname, change_mtu, change_master, change_alias, change_state, mac=change_mac)
            )

    def _addresses(self, want: Want) -> None:
        end = want.end
        record = self.record(end.node)
        recorded = record.addresses.get(end.ifname, set())
        fresh = end in self.fresh
        # A new end goes up once its addresses are on, as a host's interface does: up, it announces them (arp_notify,
        # and ndisc_notify once its link is ready), so neighbours that knew this address learn its MAC at once.
        bring_up = ch.SetLink(
            end.node, end.ifname, master=want.master, alias=self.mark, state="up" if want.up else None, sign="+"
        )
        self._qdisc(want, record)
        if end.node == HUB:
            if fresh:
                self.out.creations.append(bring_up)
            return
        present = [] if fresh else list(self._present(end, want, recorded))
        present_set = {a.address for a in present}
        adds = [a for a in want.addresses if a not in present_set]
        dels = [a for a in present if a.address in recorded and a.address not in want.addresses]
        extras = [a for a in present if a.address not in recorded and a.address not in want.addresses]
        for a in adds if not fresh else []:  # a new interface is missing as a whole, not address by address
            self._drift(end.node, end.ifname, "missing", f"address {a} on {end.ifname}")
        for address, ours in [*((d, True) for d in dels), *((x, False) for x in extras)]:
            self._drift(end.node, end.ifname, "extra", f"address {address.address} on {end.ifname}", ours)
        previous = record.sysctls.get(f"6:{end.ifname}")
        wants_ipv6 = any(":" in a for a in want.addresses)
        reverting = bool(previous) and not wants_ipv6 and not any(a.family == 6 for a in extras) and not fresh
        if reverting:
            assert previous is not None
            self.out.removals.append(
                ch.WriteSysctls(end.node, end.ifname, 6, tuple(sorted(previous.items())), sign="-")
            )
            dels = [d for d in dels if d.family == 4]  # IPv6 switched off takes its addresses with it
        kept = [a for a in present if a not in dels]
        if any(
            not d.secondary and any(k.family == 4 and k.network == d.network for k in kept)
            for d in dels
            if d.family == 4
        ):
            # Deleting a primary IPv4 address would take the others on its subnet with it.
            self.out.removals.append(ch.WriteSysctls(end.node, end.ifname, 4, ch.PROMOTE_SECONDARIES, sign="~"))
        self.out.removals += [ch.DelAddress(end.node, end.ifname, a.address) for a in dels]
        if fresh and any(":" not in a for a in adds):
            self.out.creations.append(ch.WriteSysctls(end.node, end.ifname, 4, ch.ANNOUNCE_IPV4))
        if any(":" in a for a in adds):
            self.out.creations.append(ch.WriteSysctls(end.node, end.ifname, 6, ch.ENABLE_IPV6))
        self.out.creations += [ch.AddAddress(end.node, end.ifname, a) for a in adds]
        if fresh:
            self.out.creations.append(bring_up)

    def _qdisc(self, want: Want, record: NodeRecord) -> None:
        """Set the conditions wanted on an interface's egress; take off those composens set that are no longer."""
        end, wanted = want.end, want.conditions
        if end in self.fresh:
            if wanted is not None:
                self.out.creations.append(ch.SetQdisc(end.node, end.ifname, wanted))
            return
        if not self.scope.qdiscs:
            return
        found = self.state[end.node].qdiscs.get(end.ifname)
        if wanted is not None:
            if found is None or found.conditions is None or not wanted.same_as(found.conditions):
                now = str(found.conditions) if found and found.conditions else (found.kind if found else "none")
                item = f"conditions on {end.ifname}: {now}, wanted {wanted}"
                self._drift(end.node, end.ifname, "differs" if found else "missing", item)
                # `tc qdisc replace` on a netem keeps whatever the new line does not name (corruption, a
                # rate, correlations, seen on Debian's 6.1): a netem that differs is taken off first.
                renew = found is not None and found.kind == "netem" and wanted.kind == "netem"
                if renew:
                    self.out.removals.append(ch.DelQdisc(end.node, end.ifname))
                sign = "+" if found is None or renew else "~"
                self.out.creations.append(ch.SetQdisc(end.node, end.ifname, wanted, sign=sign))
        elif found is not None:
            spelled = record.qdiscs.get(end.ifname)
            # composens' only if it is what composens set: a person may have replaced it since.
            ours = (
                spelled is not None
                and found.conditions is not None
                and parse_conditions(spelled).same_as(found.conditions)
            )
            what = str(found.conditions) if found.conditions else f"a {found.kind} qdisc"
            self._drift(end.node, end.ifname, "extra", f"conditions on {end.ifname}: {what}", ours)
            if ours:
                self.out.removals.append(ch.DelQdisc(end.node, end.ifname))

    def _present(self, end: Endpoint, want: Want, recorded: set[str]) -> Iterable[LiveAddress]:
        """The addresses on an interface that count: all but the kernel's own, its IPv6 link-local one and those
        it makes from router advertisements (dynamic: they come and go with the RAs, as a daemon's routes do)."""
        for address in self.state[end.node].addresses_of(end.ifname):
            kernels = address.link_local or address.dynamic
            if not kernels or address.address in want.addresses or address.address in recorded:
                yield address

    # ------------------------------------------------------------------ routes

    def routes(
        self, state: Mapping[str, LiveNamespace], *, check_gateways: bool, drift: bool, changes: bool = True
    ) -> None:
        for node in self._routed_nodes(state):
            ns = state[node]
            record = self.record(node)
            reach = self._reachable_interfaces(node)
            wanted = [r for r in self.topo.node(node).routes if self._through(node, r, reach)]
            declared_keys = {r.key for r in self.topo.node(node).routes}
            by_key = {r.key: r for r in ns.routes}
            for route in wanted:
                found = by_key.get(route.key)
                if found is None:
                    if drift:
                        self._drift(node, route.dev, "missing", f"route {route}")
                    if changes:
                        if check_gateways:
                            self._check_gateway(node, route, ns)
                        self.out.routes.append(ch.AddRoute(node, route))
                elif found.gateway == route.gateway and (route.dev is None or found.dev == route.dev):
                    continue
                elif route_ours(record, found):
                    if drift:
                        self._drift(
                            node, found.dev, "differs", f"route {route}: now via {found.gateway} dev {found.dev}"
                        )
                    if changes:
                        self.out.routes.append(ch.AddRoute(node, route, replace=True, sign="~"))
                else:
                    message = (
                        f"route to {route.destination} metric {route.kernel_metric} in {self._where(node)} exists "
                        f"(via {found.gateway} dev {found.dev}) and was not made by composens; remove it or give the "
                        "declared route another metric"
                    )
                    if drift:
                        self._drift(node, found.dev, "conflict", f"route {route}: {message}")
                    if changes:
                        self.out.conflicts.append(message)
            ours = self._managed_interfaces(node)
            for live_route in ns.routes:
                if live_route.key in declared_keys:
                    continue
                if route_ours(record, live_route) and (self.scope.full(node) or live_route.dev in ours):
                    if drift:
                        self._drift(node, live_route.dev, "extra", f"route {_route_text(live_route)}", True)
                    if changes:
                        self.out.routes.append(ch.DelRoute(node, live_route))
                elif drift and live_route.dev in ours and live_route.protocol in ("boot", "static"):
                    self._drift(node, live_route.dev, "extra", f"route {_route_text(live_route)}", False)

    def _routed_nodes(self, state: Mapping[str, LiveNamespace]) -> list[str]:
        nodes = [n for n in (*self.topo.services, HOST) if n in state]
        return [n for n in nodes if self.scope.full(n) or any(w.end.node == n for w in self.wants.values())]

    def _reachable_interfaces(self, node: str) -> set[str]:
        """The interfaces of a node this run wires and that are up: routes through them are wanted."""
        return {w.end.ifname for w in self.wants.values() if w.end.node == node and w.up}

    def _managed_interfaces(self, node: str) -> set[str]:
        """The interfaces whose routes this run may touch in a node it does not fully converge: its wanted ones."""
        wanted = {w.end.ifname for w in self.wants.values() if w.end.node == node}
        return wanted | set(self.record(node).interfaces) if self.scope.full(node) else wanted

    def _through(self, node: str, route: Route, reach: set[str]) -> bool:
        """Tell whether a declared route is wanted now: it leaves through an interface this run wires and is up,
        or through none the file declares (a docker network's) when the node is fully converged."""
        declared = set(self.topo.interfaces_of(node))
        if route.dev is not None:
            return route.dev in reach or (route.dev not in declared and self.scope.full(node))
        gateway = ipaddress.ip_address(route.gateway)
        addresses = self.topo.node(node).addresses
        via = {i for i in declared if any(gateway in ipaddress.ip_interface(a).network for a in addresses.get(i, ()))}
        if via:
            return bool(via & reach)
        if gateway.is_link_local:
            return False
        return self.scope.full(node)

    def _check_gateway(self, node: str, route: Route, ns: LiveNamespace) -> None:
        gateway = ipaddress.ip_address(route.gateway)
        if gateway.is_link_local:
            return
        networks = [a.network for addrs in ns.addresses.values() for a in addrs]
        if not any(gateway in net for net in networks):
            self.out.problems.append(
                f"{self.topo.source}: route {route} of {self._name(node)}: gateway {route.gateway} is on none of "
                f"its subnets (declared, or its docker networks'); add an address on that subnet or fix the gateway"
            )


def _in_waves(found: list[Change]) -> list[Change]:
    """Order changes as wiring runs them: interfaces made first, then each namespace's sysctls, then its ip
    batch (in the order found), then its tc batch, and interfaces deleted last, once nothing else needs them."""

    def wave(change: Change) -> int:
        if isinstance(change, ch.MAKES_INTERFACE):
            return 0
        if isinstance(change, ch.WriteSysctls):
            return 1
        if isinstance(change, ch.SetQdisc | ch.DelQdisc):
            return 3  # tc's batch runs after ip's
        return 4 if isinstance(change, ch.DeleteLink) else 2

    return sorted(found, key=wave)


def owned(link: LiveLink | None, claim: Claim | None, mark: str) -> bool:
    """Tell whether an interface is one composens made: its mark and the record's claim agree."""
    if link is None or claim is None or link.alias != mark:
        return False
    return claim.index is None or claim.index == link.index


def route_ours(record: NodeRecord, found: LiveRoute) -> bool:
    """Tell whether a live route is the one composens recorded adding: the same key, gateway and device."""
    text = record.routes.get(found.key)
    if text is None:
        return False
    added = parse_route(text)
    return added.gateway == found.gateway and added.dev in (None, found.dev)


def _declared(topo: Topology) -> set[Endpoint]:
    ends = {ep for pair in topo.pairs() for ep in (pair.a, pair.b)} | {t.end for t in topo.tunnels}
    return ends | {Endpoint(HUB, lan.name) for lan in topo.lans}


def _hosts_text(tunnel: Tunnel) -> str:
    return ", ".join(f"{h.name} ({h.underlay})" for h in tunnel.remotes)


def _tunnel_text(tunnel: live.Vxlan) -> str:
    return f"vxlan {tunnel.vni} from {tunnel.local} to {tunnel.remote} port {tunnel.port}"


def as_route(route: LiveRoute) -> Route:
    """The declared form of a live route with a gateway, to add it back."""
    assert route.gateway is not None
    return Route(route.destination, route.gateway, route.dev, route.metric)


def _route_text(route: LiveRoute) -> str:
    return " ".join(route.words())
