"""The changes composens makes to interfaces, addresses, routes and sysctls, one command each.

Pure. A change knows the words of its `ip -batch` line, the command `composens plan` prints for
it (quoted for a shell: what is printed is what runs), how the kernel's state looks after it
(`simulate`, for planning routes), and whether it can be seen to have happened (`visible`, for
working out which lines of a batch ran when `ip` stopped early).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from composens.model.conditions import Conditions, LiveQdisc
from composens.model.topology import HOST, Endpoint, Route
from composens.plan import live
from composens.plan.live import LiveLink, LiveNamespace, LiveRoute

NetnsOf = Callable[[str], str | None]  # node -> its /var/run/netns entry (None: the host's namespace)
Live = Mapping[str, LiveNamespace]

# A bridge that switches like a plain Ethernet switch: no spanning tree, no IGMP/MLD snooping (routing
# protocols' multicast reaches every port), and every link-local group the kernel lets a bridge pass
# (LLDP's 01:80:c2:00:00:0e among them; STP, pause and LACP, bits 0-2, it never forwards).
BRIDGE_OPTIONS = (("stp_state", "0"), ("mcast_snooping", "0"), ("group_fwd_mask", "0xfff8"))


def marker(project: str) -> str:
    """The alias composens gives every interface it creates: how it knows them again."""
    return f"composens:{project}"


def _safe(words: list[str]) -> str:
    """Join words into an `ip -batch` line; every word was validated, so nothing needs quoting."""
    for word in words:
        # Belt and braces: a word that ip's batch reader would split, quote, comment or continue.
        if not word or any(c.isspace() or c in "\"'#\\\0" for c in word):
            raise AssertionError(f"unsafe word in a batch line: {word!r}")
    return " ".join(words)


@dataclass(frozen=True)
class CreatePair:
    a: Endpoint
    b: Endpoint
    mtu: int | None = None
    node: str = HOST  # made from the host's namespace, its two ends straight in theirs
    sign: str = "+"
    mac_a: str | None = None  # each end's hardware address, set as it is made
    mac_b: str | None = None

    def words(self, netns_of: NetnsOf) -> list[str]:
        def end(ep: Endpoint, mac: str | None) -> list[str]:
            netns = netns_of(ep.node)
            return [
                "name",
                ep.ifname,
                *(["mtu", str(self.mtu)] if self.mtu else []),
                *(["address", mac] if mac else []),
                *(["netns", netns] if netns else []),
            ]

        # `name` and `dev` everywhere: an interface may be called `up` or `mtu`.
        return ["link", "add", *end(self.a, self.mac_a), "type", "veth", "peer", *end(self.b, self.mac_b)]


@dataclass(frozen=True)
class CreateVxlan:
    """One end of a link (or a LAN's port) over VXLAN, made from the host's namespace straight in the end's.

    The kernel keeps a VXLAN device's UDP socket in the namespace the request came from, so the tunnel runs on
    the host's underlay while the interface lives in the service's namespace (or the hub) under its declared name.
    """

    end: Endpoint
    vni: int
    local: str  # this host's underlay address
    remote: str  # the far host's (a LAN's first remote; the others get all-zero FDB entries)
    port: int
    mtu: int | None = None
    mac: str | None = None
    node: str = HOST
    sign: str = "+"

    def words(self, netns_of: NetnsOf) -> list[str]:
        netns = netns_of(self.end.node)
        return [
            "link",
            "add",
            "name",
            self.end.ifname,
            *(["mtu", str(self.mtu)] if self.mtu else []),
            *(["address", self.mac] if self.mac else []),
            *(["netns", netns] if netns else []),
            "type",
            "vxlan",
            "id",
            str(self.vni),
            "local",
            self.local,
            "remote",
            self.remote,
            "dstport",
            str(self.port),
        ]


@dataclass(frozen=True)
class AppendFdb:
    """Head-end replication to one more remote host: an all-zero FDB entry on a LAN's VXLAN port (bridge, not ip)."""

    node: str
    ifname: str
    remote: str
    sign: str = "+"

    def words(self, netns_of: NetnsOf) -> list[str]:
        return ["fdb", "append", "00:00:00:00:00:00", "dev", self.ifname, "dst", self.remote]


@dataclass(frozen=True)
class CreateBridge:
    node: str
    name: str
    mtu: int | None = None
    sign: str = "+"

    def words(self, netns_of: NetnsOf) -> list[str]:
        options = [word for pair in BRIDGE_OPTIONS for word in pair]
        return [
            "link",
            "add",
            "name",
            self.name,
            *(["mtu", str(self.mtu)] if self.mtu else []),
            "type",
            "bridge",
            *options,
        ]


@dataclass(frozen=True)
class DeleteLink:
    node: str
    ifname: str
    peer: Endpoint | None = None  # a veth's other end, which goes with it
    restore: tuple[Change, ...] = ()  # what puts it back as it was, for a rollback
    sign: str = "-"

    def words(self, netns_of: NetnsOf) -> list[str]:
        return ["link", "del", "dev", self.ifname]


@dataclass(frozen=True)
class SetLink:
    node: str
    ifname: str
    mtu: int | None = None
    master: str | None = None
    alias: str | None = None
    state: str | None = None  # "up" or "down"
    sign: str = "~"
    mac: str | None = None

    def words(self, netns_of: NetnsOf) -> list[str]:
        words = ["link", "set", "dev", self.ifname]
        if self.mtu is not None:
            words += ["mtu", str(self.mtu)]
        if self.mac is not None:
            words += ["address", self.mac]
        if self.master is not None:
            words += ["master", self.master]
        if self.alias is not None:
            words += ["alias", self.alias]
        return words + ([self.state] if self.state else [])


@dataclass(frozen=True)
class AddAddress:
    node: str
    ifname: str
    address: str
    sign: str = "+"

    def words(self, netns_of: NetnsOf) -> list[str]:
        # nodad: the lab's addresses are planned, and DAD would hold IPv6 back for a second or two.
        nodad = ["nodad"] if ":" in self.address else []
        return ["addr", "add", self.address, "dev", self.ifname, *nodad]


@dataclass(frozen=True)
class DelAddress:
    node: str
    ifname: str
    address: str
    sign: str = "-"

    def words(self, netns_of: NetnsOf) -> list[str]:
        return ["addr", "del", self.address, "dev", self.ifname]


@dataclass(frozen=True)
class AddRoute:
    node: str
    route: Route
    replace: bool = False  # a route of composens' own to that destination and metric is there, going elsewhere
    sign: str = "+"

    def words(self, netns_of: NetnsOf) -> list[str]:
        return ["route", "replace" if self.replace else "add", *self.route.words()]


@dataclass(frozen=True)
class DelRoute:
    node: str
    route: LiveRoute
    sign: str = "-"

    def words(self, netns_of: NetnsOf) -> list[str]:
        return ["route", "del", *self.route.words()]


@dataclass(frozen=True)
class WriteSysctls:
    """Per-interface sysctls, written from a thread inside the namespace (no sysctl binary involved)."""

    node: str
    ifname: str
    family: int  # 4: net.ipv4.conf, 6: net.ipv6.conf
    values: tuple[tuple[str, str], ...]
    sign: str = "+"

    def keys(self) -> list[str]:
        # The slash form where the name has a dot, which the dotted form would split.
        sep = "/" if "." in self.ifname else "."
        conf = sep.join(("net", f"ipv{self.family}", "conf", self.ifname))
        return [f"{conf}{sep}{key}={value}" for key, value in self.values]

    def words(self, netns_of: NetnsOf) -> list[str]:
        return ["sysctl", "-qw", *self.keys()]


@dataclass(frozen=True)
class SetQdisc:
    """Conditions on an interface's egress: its root qdisc, replaced (tc, not ip)."""

    node: str
    ifname: str
    conditions: Conditions
    sign: str = "+"

    def words(self, netns_of: NetnsOf) -> list[str]:
        return ["qdisc", "replace", "dev", self.ifname, "root", *self.conditions.tc_words()]


@dataclass(frozen=True)
class DelQdisc:
    node: str
    ifname: str
    sign: str = "-"

    def words(self, netns_of: NetnsOf) -> list[str]:
        return ["qdisc", "del", "dev", self.ifname, "root"]


Change = (
    CreatePair
    | CreateVxlan
    | AppendFdb
    | CreateBridge
    | DeleteLink
    | SetLink
    | AddAddress
    | DelAddress
    | AddRoute
    | DelRoute
    | WriteSysctls
    | SetQdisc
    | DelQdisc
)
MAKES_INTERFACE = (CreatePair, CreateBridge, CreateVxlan)  # the changes that make an interface

# accept_dad first: no tentative link-local address; keep_addr_on_down: `composens link down` cuts a link, it
# does not unconfigure it (by default the kernel flushes an interface's IPv6 addresses when it goes down).
# ndisc_notify: an unsolicited neighbour advertisement for each address once the link is ready, as arp_notify
# (ANNOUNCE_IPV4) sends a gratuitous ARP when the interface comes up.
ENABLE_IPV6 = (("accept_dad", "0"), ("keep_addr_on_down", "1"), ("ndisc_notify", "1"), ("disable_ipv6", "0"))
ANNOUNCE_IPV4 = (("arp_notify", "1"),)
PROMOTE_SECONDARIES = (("promote_secondaries", "1"),)


# In the hub: IPv6 off for everything made there (its bridges and ports follow `default`), so the hub itself
# sends no ND, MLD or RA into the lab.
HUB_SYSCTLS = (("all", "disable_ipv6", "1"), ("default", "disable_ipv6", "1"))


def hub_commands(name: str) -> list[str]:
    """The commands that make a hub namespace, as `composens plan` prints them."""
    keys = [f"net.ipv6.conf.{conf}.{key}={value}" for conf, key, value in HUB_SYSCTLS]
    return [shlex.join(["ip", "netns", "add", name]), shlex.join(["ip", "netns", "exec", name, "sysctl", "-qw", *keys])]


def batch_line(change: Change, netns_of: NetnsOf) -> str:
    return _safe(change.words(netns_of))


def command(change: Change, netns_of: NetnsOf) -> str:
    """Write a change as the shell command that does the same: what `composens plan` prints."""
    netns = netns_of(change.node)
    words = change.words(netns_of)
    if isinstance(change, WriteSysctls):
        return shlex.join([*(["ip", "netns", "exec", netns] if netns else []), *words])
    return shlex.join([tool(change), *(["-n", netns] if netns else []), *words])


def tool(change: Change) -> str:
    """The iproute2 program a change's line is for: `tc` for conditions, `ip` for the rest."""
    if isinstance(change, AppendFdb):
        return "bridge"
    return "tc" if isinstance(change, SetQdisc | DelQdisc) else "ip"


# --------------------------------------------------------------------------- the kernel's answer


def simulate(state: Live, change: Change) -> dict[str, LiveNamespace]:
    """Return the namespaces as the kernel leaves them after `change`."""
    after = dict(state)

    def update(node: str, ns: LiveNamespace) -> None:
        after[node] = ns

    def get(node: str) -> LiveNamespace:
        return after.get(node, live.EMPTY)

    match change:
        case CreatePair(a, b, mtu, _, _, mac_a, mac_b):
            index_a, index_b = _fresh_index(get(a.node)), _fresh_index(get(b.node))
            if a.node == b.node:
                index_b = index_a + 1
            end_a = LiveLink(a.ifname, index_a, "veth", index_b, None, mtu or 1500, False, mac=mac_a)
            end_b = LiveLink(b.ifname, index_b, "veth", index_a, None, mtu or 1500, False, mac=mac_b)
            update(a.node, live.with_link(get(a.node), end_a))
            update(b.node, live.with_link(get(b.node), end_b))
        case CreateVxlan(end, vni, local, remote, port, mtu, mac):
            vxlan = live.Vxlan(vni, local, remote, port)
            made = LiveLink(end.ifname, _fresh_index(get(end.node)), "vxlan", None, None, mtu or 1500, False, mac=mac)
            update(end.node, live.with_link(get(end.node), replace(made, vxlan=vxlan)))
        case AppendFdb():
            pass  # no route or address depends on it
        case CreateBridge(node, name, mtu):
            link = LiveLink(
                name, _fresh_index(get(node)), "bridge", None, None, mtu or 1500, False, None, BRIDGE_OPTIONS
            )
            update(node, live.with_link(get(node), link))
        case DeleteLink(node, ifname, peer):
            update(node, live.without_link(get(node), ifname))
            if peer is not None:
                update(peer.node, live.without_link(get(peer.node), peer.ifname))
        case SetLink(node, ifname, mtu, master, alias, state_word, _, mac):
            ns = get(node)
            link = ns.links[ifname]
            link = replace(
                link,
                mtu=mtu if mtu is not None else link.mtu,
                mac=mac if mac is not None else link.mac,
                master=master if master is not None else link.master,
                alias=(alias or None) if alias is not None else link.alias,
                up=link.up if state_word is None else state_word == "up",
            )
            ns = live.with_link(ns, link)
            update(node, live.set_down(ns, ifname) if state_word == "down" else ns)
        case AddAddress(node, ifname, address):
            update(node, live.add_address(get(node), ifname, address))
        case DelAddress(node, ifname, address):
            update(node, live.delete_address(get(node), ifname, address))
        case AddRoute(node, route):
            ns = get(node)
            dev = route.dev or live.resolve_dev(ns, route.gateway)
            update(
                node,
                live.put_route(ns, LiveRoute(route.family, route.destination, route.gateway, dev, route.kernel_metric)),
            )
        case DelRoute(node, route):
            update(node, live.drop_route(get(node), route.key))
        case SetQdisc(node, ifname, conditions):
            ns = get(node)
            update(node, replace(ns, qdiscs={**ns.qdiscs, ifname: LiveQdisc(conditions.kind, conditions)}))
        case DelQdisc(node, ifname):
            ns = get(node)
            update(node, replace(ns, qdiscs={k: v for k, v in ns.qdiscs.items() if k != ifname}))
        case WriteSysctls(node, ifname, _, values):
            ns = get(node)
            settings = dict(values)
            if settings.get("promote_secondaries") == "1":
                ns = replace(ns, promoting=ns.promoting | {ifname})
            if settings.get("disable_ipv6") == "1":
                kept = tuple(a for a in ns.addresses_of(ifname) if a.family == 4)
                ns = replace(
                    ns,
                    addresses={**ns.addresses, ifname: kept},
                    routes=tuple(r for r in ns.routes if not (r.family == 6 and r.dev == ifname)),
                )
            update(node, ns)
    return after


def _fresh_index(ns: LiveNamespace) -> int:
    return max((link.index for link in ns.links.values()), default=1) + 1


def visible(change: Change, state: Live, project: str) -> bool:
    """Tell whether the namespaces show `change` done (used when `ip -batch` stopped before reporting)."""

    def link(node: str, ifname: str) -> LiveLink | None:
        return state.get(node, live.EMPTY).links.get(ifname)

    match change:
        case CreatePair(a, b):
            # Both ends, each the other's peer: an interface of end a's name alone may be someone else's that
            # appeared meanwhile, and a rollback of a pair judged made would delete it.
            end_a, end_b = link(a.node, a.ifname), link(b.node, b.ifname)
            return (
                end_a is not None
                and end_b is not None
                and end_a.kind == end_b.kind == "veth"
                and end_a.peer_index == end_b.index
                and end_b.peer_index == end_a.index
            )
        case CreateBridge(node, name):
            return link(node, name) is not None
        case CreateVxlan(end, vni, local, remote, port):
            # The device it makes, not a name: an interface of that name may be someone else's that appeared
            # meanwhile (and `ip` said it exists), and a rollback of a tunnel judged made would delete it.
            made = link(end.node, end.ifname)
            return made is not None and made.kind == "vxlan" and made.vxlan == live.Vxlan(vni, local, remote, port)
        case AppendFdb(node, ifname):
            return False  # FDB entries are not read back: a bridge batch that stopped early is taken as failed
        case DeleteLink(node, ifname):
            return link(node, ifname) is None
        case SetLink(node, ifname, mtu, master, alias, state_word, _, mac):
            found = link(node, ifname)
            return (
                found is not None
                and (mtu is None or found.mtu == mtu)
                and (mac is None or found.mac == mac)
                and (master is None or found.master == master)
                and (alias is None or (found.alias or "") == alias)
                and (state_word is None or found.up == (state_word == "up"))
            )
        case AddAddress(node, ifname, address):
            return any(a.address == address for a in state.get(node, live.EMPTY).addresses_of(ifname))
        case DelAddress(node, ifname, address):
            return not any(a.address == address for a in state.get(node, live.EMPTY).addresses_of(ifname))
        case AddRoute(node, route):
            found_route = next((r for r in state.get(node, live.EMPTY).routes if r.key == route.key), None)
            return found_route is not None and found_route.gateway == route.gateway
        case DelRoute(node, route):
            return all(r.key != route.key for r in state.get(node, live.EMPTY).routes)
        case SetQdisc(node, ifname, conditions):
            found_qdisc = state.get(node, live.EMPTY).qdiscs.get(ifname)
            return (
                found_qdisc is not None
                and found_qdisc.conditions is not None
                and conditions.same_as(found_qdisc.conditions)
            )
        case DelQdisc(node, ifname):
            return ifname not in state.get(node, live.EMPTY).qdiscs
        case WriteSysctls():
            return True  # written in-process: its outcome is known without looking
    raise AssertionError(change)
