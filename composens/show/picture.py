"""Draw a topology as a picture: Graphviz DOT with one row per interface, or Mermaid for Markdown.

Pure: a Topology (and, for `--live`, a LiveOverlay of what the lab looks like now) in, text out.
Both formats are written from one scene of boxes (services, the host) and wires (links), so a new
kind of box, a LAN say, is one more builder and both pictures show it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from composens.model.report import HOST_ROW, HUB_ROW, NetnsRow
from composens.model.topology import HOST, HUB, Endpoint, Lan, Link, Topology

STATES = ("up", "down", "missing")
DRIFT_MARK = "≠"


@dataclass(frozen=True)
class LiveOverlay:
    """What a running lab looks like next to its declaration; all fields empty: as declared."""

    stopped: frozenset[str] = frozenset()  # services with no running container
    interfaces: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (node, ifname) -> a STATE; absent: up
    drift: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # e.g. ("extra 10.0.0.1/24",)
    conditions: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (node, ifname) -> "delay 40ms"
    extra_interfaces: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # node -> undeclared ifnames
    extra_nodes: tuple[str, ...] = ()  # containers of the project whose service the file no longer declares

    def __post_init__(self) -> None:
        for (node, ifname), state in self.interfaces.items():
            if state not in STATES:
                raise ValueError(f"{node}:{ifname}: state {state!r} is not one of {', '.join(STATES)}")


_STATIC = LiveOverlay()


def overlay_of(topo: Topology, rows: Sequence[NetnsRow]) -> LiveOverlay:
    """Build the live overlay from `ps --netns`'s rows: interface states, conditions, drift, stopped services."""
    node_of = {HOST_ROW: HOST, HUB_ROW: HUB}
    interfaces: dict[tuple[str, str], str] = {}
    conditions: dict[tuple[str, str], str] = {}
    drift: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        node = node_of.get(row.service, row.service)
        for i in row.interfaces:
            interfaces[node, i.ifname] = "up" if i.up else ("down" if i.present else "missing")
            if i.conditions:
                conditions[node, i.ifname] = i.conditions
        for d in row.drift:
            if d.ifname is not None:
                drift.setdefault((node, d.ifname), []).append(f"{d.problem} {d.item.split(' on ')[0]}")
    running = {r.service for r in rows if r.pid is not None}
    return LiveOverlay(
        stopped=frozenset(set(topo.services) - running),
        interfaces=interfaces,
        drift={key: tuple(notes) for key, notes in drift.items()},
        conditions=conditions,
    )


_Kind = Literal["service", "host", "extra", "lan"]  # "extra": a container running for a service the file lacks


# --------------------------------------------------------------------------- the scene


@dataclass(frozen=True)
class _Row:
    """One interface of a box."""

    port: str  # "p1", "p2", ...: positional, so no interface name has to be escaped into an id; "" for none
    ifname: str
    addresses: tuple[str, ...] = ()
    state: str = "up"
    notes: tuple[str, ...] = ()  # drift, shown after DRIFT_MARK


@dataclass(frozen=True)
class _Box:
    key: str  # the id in both formats: positional too ("n1", "host", "e1"), so no name is escaped into one
    title: str
    kind: _Kind
    rows: tuple[_Row, ...] = ()
    stopped: bool = False


@dataclass(frozen=True)
class _End:
    box: str
    port: str | None  # None: the box as a whole, as a LAN's end will be
    ifname: str
    condition: str = ""


@dataclass(frozen=True)
class _Wire:
    tail: _End  # the end drawn on the left
    head: _End
    mtu: int | None = None


@dataclass(frozen=True)
class _Scene:
    boxes: tuple[_Box, ...]
    wires: tuple[_Wire, ...]


HOST_KEY = "host"


def _scene(topo: Topology, live: LiveOverlay) -> _Scene:
    """Build the boxes and wires both formats draw."""
    keys = {name: f"n{i}" for i, name in enumerate(topo.services, 1)}
    boxes = [_service_box(topo, name, keys[name], live) for name in topo.services]
    if any(ep.node == HOST for link in topo.links for ep in (link.a, link.b)):
        boxes.append(_node_box(topo, HOST, HOST_KEY, "host", live))
    boxes += [_Box(f"l{i}", lan.name, "lan") for i, lan in enumerate(topo.lans, 1)]
    boxes += [_Box(f"e{i}", name, "extra") for i, name in enumerate(live.extra_nodes, 1)]
    ends = {**keys, HOST: HOST_KEY}  # in an endpoint "host" is always the host, never a service of that name
    ends |= {_lan_node(lan): f"l{i}" for i, lan in enumerate(topo.lans, 1)}
    order = _left_to_right(topo)
    ports = _ports(topo)
    wires = [_link_wire(link, order, ends, ports, live) for link in (*topo.links, *_lan_links(topo))]
    return _Scene(tuple(boxes), tuple(wires))


def _clusters(topo: Topology, scene: _Scene) -> list[tuple[str, str, list[str]]]:
    """A lab over several hosts: each host's boxes (its services, and the LANs wholly on it), with its label."""
    if topo.hosts is None:
        return []
    keys = {name: f"n{i}" for i, name in enumerate(topo.services, 1)}
    on: dict[str, list[str]] = {host: [] for host in topo.hosts.hosts}
    for service, host in topo.hosts.placement.items():
        if service in keys:
            on[host].append(keys[service])
    for i, lan in enumerate(topo.lans, 1):
        machines = {topo.hosts.placement.get(m.node) for m in lan.members} - {None}
        if len(machines) == 1:
            on[str(machines.pop())].append(f"l{i}")
    drawn = {box.key for box in scene.boxes}
    return [
        (host, f"{host} ({topo.hosts.hosts[host].underlay})", [k for k in members if k in drawn])
        for host, members in on.items()
        if members
    ]


def _lan_node(lan: Lan) -> str:
    """The LAN as a node of the picture: a name no service or host can have (':' is not allowed in either)."""
    return f"lan:{lan.name}"


def _lan_links(topo: Topology) -> list[Link]:
    """Each LAN member joined to its LAN's box, as a link whose far end is the box as a whole."""
    return [
        Link(member, box, lan.mtu, {box: lan.conditions} if lan.conditions else {})
        for lan in topo.lans
        for member in lan.members
        for box in [Endpoint(_lan_node(lan), "")]  # the ports' conditions: what the LAN sends each member
    ]


def _service_box(topo: Topology, name: str, key: str, live: LiveOverlay) -> _Box:
    if name == HOST:
        # An endpoint "host:..." is the host's namespace, never this service: it has no interfaces.
        return _Box(key, name, "service", stopped=name in live.stopped)
    return _node_box(topo, name, key, "service", live)


def _node_box(topo: Topology, name: str, key: str, kind: _Kind, live: LiveOverlay) -> _Box:
    node = topo.node(name)
    declared = [
        _Row(
            port=f"p{i}",
            ifname=ifname,
            # A MAC the file declares is part of what the interface is; a derived one is not worth the room.
            addresses=(
                *node.addresses.get(ifname, ()),
                *((f"mac {node.macs[ifname]}",) if ifname in node.macs else ()),
            ),
            state=live.interfaces.get((name, ifname), "up"),
            notes=live.drift.get((name, ifname), ()),
        )
        for i, ifname in enumerate(topo.interfaces_of(name), 1)
    ]
    undeclared = [
        _Row(port="", ifname=ifname, notes=("not declared", *live.drift.get((name, ifname), ())))
        for ifname in live.extra_interfaces.get(name, ())
    ]
    return _Box(key, name, kind, (*declared, *undeclared), stopped=name in live.stopped)


def _ports(topo: Topology) -> dict[Endpoint, str]:
    """Name each link end's row as _node_box does: by its place among its node's interfaces."""
    nodes = dict.fromkeys(ep.node for link in topo.pairs() for ep in (link.a, link.b))
    return {Endpoint(n, ifname): f"p{i}" for n in nodes for i, ifname in enumerate(topo.interfaces_of(n), 1)}


def _link_wire(
    link: Link,
    order: Mapping[str, tuple[int, int]],
    keys: Mapping[str, str],
    ports: Mapping[Endpoint, str],
    live: LiveOverlay,
) -> _Wire:
    left, right = (link.a, link.b) if order[link.a.node] <= order[link.b.node] else (link.b, link.a)

    def end(ep: Endpoint) -> _End:
        # What the lab has now (--live), else what the file declares.
        declared = link.conditions.get(ep)
        condition = live.conditions.get((ep.node, ep.ifname)) or (str(declared) if declared else "")
        return _End(keys[ep.node], ports.get(ep), ep.ifname, condition)

    return _Wire(end(left), end(right), link.mtu)


def _left_to_right(topo: Topology) -> dict[str, tuple[int, int]]:
    """Order the nodes by hops from the host (or else the first service), then by file order.

    Drawing each link from the lower node to the higher makes a chain read left to right
    (node1, the routers, node2) instead of folding back, and never makes a cycle for dot to break.
    """
    names = [HOST, *topo.services, *(_lan_node(lan) for lan in topo.lans)]
    neighbours: dict[str, list[str]] = {name: [] for name in names}
    for link in (*topo.links, *_lan_links(topo)):
        neighbours[link.a.node].append(link.b.node)
        neighbours[link.b.node].append(link.a.node)
    hops: dict[str, int] = {}
    for start in names:
        if start not in hops:
            hops.update(_hops_from(start, neighbours))
    return {name: (hops[name], i) for i, name in enumerate(names)}


def _hops_from(start: str, neighbours: Mapping[str, list[str]]) -> dict[str, int]:
    """Count the links from start to each node it reaches (breadth first)."""
    hops = {start: 0}
    frontier = [start]
    while frontier:
        reached = [(n, hops[here] + 1) for here in frontier for n in neighbours[here]]
        frontier = []
        for n, count in reached:
            if n not in hops:
                hops[n] = count
                frontier.append(n)
    return hops


# --------------------------------------------------------------------------- Graphviz DOT

_INK = "#2b3a4a"
_LINE = "#5b7083"
_PALE = "#dde7f1"
_ADDRESS = "#4d5b69"
_GREY = "#a0a0a0"
_GREY_PALE = "#efefef"
_RED = "#c62828"
_ORANGE = "#d9730d"
_CONDITION = "#6a3d9a"
_HEAD = {"service": _PALE, "host": "#e9e9e9", "extra": "#fff1e0", "lan": "#e3efdc"}
_BORDER_STYLE = {"service": "ROUNDED", "host": "DASHED", "extra": "DASHED", "lan": "ROUNDED"}


def dot(topo: Topology, live: LiveOverlay | None = None) -> str:
    """Write the topology as Graphviz DOT: a box per service, a row per interface, a line per link."""
    scene = _scene(topo, live or _STATIC)
    lines = [
        "graph composens {",
        '  graph [rankdir=LR, ranksep=0.25, nodesep=0.15, pad=0.08, bgcolor="white"];',
        '  node [shape=plain, fontname="Helvetica", fontsize=11];',
        f'  edge [color="{_LINE}", penwidth=1.4, fontname="Helvetica", fontsize=8];',
    ]
    for box in scene.boxes:
        lines += _dot_node(box)
    for i, (_, label, keys) in enumerate(_clusters(topo, scene), 1):
        lines.append(
            f'  subgraph cluster_h{i} {{ label="{_html(label)}"; style="rounded,dashed"; {"; ".join(keys)}; }}'
        )
    lines += [f"  {_dot_edge(wire)};" for wire in scene.wires]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_node(box: _Box) -> list[str]:
    """Write one box as a node with an HTML-like table label: title row, then one row per interface."""
    ink = _GREY if box.stopped else _INK
    border = _GREY if box.stopped else _LINE
    head = _GREY_PALE if box.stopped else _HEAD[box.kind]
    style = _BORDER_STYLE[box.kind]
    table = (
        f'<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" STYLE="{style}" COLOR="{border}"'
        f' BGCOLOR="{head}">'
    )
    rows = [f"<TR><TD>{_dot_title(box, ink)}</TD></TR>"]
    rows += [f"<HR/>{_dot_row(row, ink, stopped=box.stopped)}" for row in box.rows]
    return [f"  {box.key} [label=<", f"    {table}", *(f"      {r}" for r in rows), "    </TABLE>>];"]


def _dot_title(box: _Box, ink: str) -> str:
    words = [f'<FONT COLOR="{ink}"><B>{_html(box.title)}</B></FONT>']
    if box.stopped:
        words.append(f'<FONT POINT-SIZE="8" COLOR="{ink}">stopped</FONT>')
    if box.kind == "extra":
        words.append(f'<FONT POINT-SIZE="8" COLOR="{_ORANGE}">{DRIFT_MARK} not declared</FONT>')
    if box.kind == "lan":
        words.append(f'<FONT POINT-SIZE="8" COLOR="{_ADDRESS}">LAN</FONT>')
    return "<BR/>".join(words)


def _dot_row(row: _Row, ink: str, *, stopped: bool) -> str:
    """Write one interface: its name (and state when not up), then addresses and drift in small type."""
    faulty = row.state != "up"
    name = f'<FONT COLOR="{_RED if faulty else ink}">{_html(row.ifname)}</FONT>'
    if faulty:
        name += f' <FONT COLOR="{_RED}"><B>{row.state}</B></FONT>'
    # The name and the details sit in a table of their own: as lines of one text an underscore in
    # the name would touch the address below it.
    cells = f'<TR><TD ALIGN="LEFT">{name}</TD></TR>'
    details = [
        _dot_lines(row.addresses, _GREY if stopped else _ADDRESS),
        _dot_lines([f"{DRIFT_MARK} {note}" for note in row.notes], _ORANGE),
    ]
    if any(details):
        cells += f'<TR><TD ALIGN="LEFT" BALIGN="LEFT">{"<BR/>".join(d for d in details if d)}</TD></TR>'
    inner = f'<TABLE BORDER="0" CELLSPACING="2" CELLPADDING="0">{cells}</TABLE>'
    port = f' PORT="{row.port}"' if row.port else ""
    # White rows under a coloured table: a coloured title cell would show its corners outside the
    # rounded border, a white one on the page does not.
    return f'<TR><TD{port} ALIGN="LEFT" BGCOLOR="white">{inner}</TD></TR>'


def _dot_lines(lines: Iterable[str], colour: str) -> str:
    text = "<BR/>".join(_html(line) for line in lines)
    return f'<FONT POINT-SIZE="8" COLOR="{colour}">{text}</FONT>' if text else ""


def _dot_edge(wire: _Wire) -> str:
    """Write one link from row to row, leaving the left box on its right side and entering the other's left."""
    attributes = [f'tailport="{_dot_port(wire.tail, "e")}"', f'headport="{_dot_port(wire.head, "w")}"']
    label = _dot_edge_label(wire)
    if label:
        attributes.append(f"label={label}")
    return f"{wire.tail.box} -- {wire.head.box} [{', '.join(attributes)}]"


def _dot_edge_label(wire: _Wire) -> str:
    """Write the link's label: each end's conditions on its own side (arrows point the way they act), mtu between."""
    # A label, unlike taillabel and headlabel, takes room in the layout, so it never covers a box.
    cells = []
    if wire.tail.condition:
        cells.append(_dot_cell(f"{wire.tail.condition} →", _CONDITION))
    if wire.mtu:
        cells.append(_dot_cell(f"mtu {wire.mtu}", _ADDRESS))
    if wire.head.condition:
        cells.append(_dot_cell(f"← {wire.head.condition}", _CONDITION))
    if not cells:
        return ""
    return f'<<TABLE BORDER="0" CELLSPACING="4" CELLPADDING="0"><TR>{"".join(cells)}</TR></TABLE>>'


def _dot_cell(text: str, colour: str) -> str:
    return f'<TD><FONT POINT-SIZE="8" COLOR="{colour}">{_html(text)}</FONT></TD>'


def _dot_port(end: _End, side: str) -> str:
    return f"{end.port}:{side}" if end.port else side


def _html(text: str) -> str:
    """Escape text for a Graphviz HTML-like label."""
    replacements = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}
    return "".join(replacements.get(c, c) for c in text)


# --------------------------------------------------------------------------- Mermaid


def mermaid(topo: Topology, live: LiveOverlay | None = None) -> str:
    """Write the topology as a Mermaid flowchart: addresses inside the boxes, interface names on the links."""
    scene = _scene(topo, live or _STATIC)
    lines = ["flowchart LR"]
    lines += [f'  {box.key}["{_mermaid_label(box)}"]' for box in scene.boxes]
    for i, (_, label, keys) in enumerate(_clusters(topo, scene), 1):
        lines += [f'  subgraph h{i}["{_mermaid_text(label)}"]', *(f"    {key}" for key in keys), "  end"]
    lines += [f'  {w.tail.box} ---|"{_mermaid_text(_mermaid_wire_label(w))}"| {w.head.box}' for w in scene.wires]
    lines += _mermaid_classes(scene)
    return "\n".join(lines) + "\n"


def _mermaid_label(box: _Box) -> str:
    title = f"<b>{_mermaid_text(box.title)}</b>"
    if box.stopped:
        title += " (stopped)"
    if box.kind == "extra":
        title += f" {DRIFT_MARK} not declared"
    if box.kind == "lan":
        title += " (LAN)"
    lines = [title]
    for row in box.rows:
        lines.append(_mermaid_text(_row_text(row)))
        lines += [_mermaid_text(f"{DRIFT_MARK} {note}") for note in row.notes]
    return "<br/>".join(lines)


def _row_text(row: _Row) -> str:
    name = row.ifname if row.state == "up" else f"{row.ifname} {row.state.upper()}"
    return f"{name}: {', '.join(row.addresses)}" if row.addresses else name


def _mermaid_wire_label(wire: _Wire) -> str:
    ends = [_mermaid_end(end) for end in (wire.tail, wire.head) if end.ifname]  # a LAN's box has no interface
    mtu = f" (mtu {wire.mtu})" if wire.mtu else ""
    return " — ".join(ends) + mtu


def _mermaid_end(end: _End) -> str:
    return f"{end.ifname} [{end.condition}]" if end.condition else end.ifname


def _mermaid_classes(scene: _Scene) -> list[str]:
    """Style boxes by class; a class is defined only when a box uses it, so the static picture stays plain."""
    styles = {
        "host": "fill:#f4f4f4,stroke:#777777,stroke-dasharray:4 3",
        "lan": "fill:#e3efdc,stroke:#5b7083",
        "extra": f"fill:#fff1e0,stroke:{_ORANGE},stroke-dasharray:4 3",
        "stopped": f"fill:{_GREY_PALE},stroke:{_GREY},color:#888888",
        "fault": f"stroke:{_RED},stroke-width:2px",
        "drift": f"stroke:{_ORANGE},stroke-width:2px",
    }
    members: dict[str, list[str]] = {name: [] for name in styles}
    for box in scene.boxes:
        for name in _mermaid_box_classes(box):
            members[name].append(box.key)
    lines = []
    for name, keys in members.items():
        if keys:
            lines += [f"  classDef {name} {styles[name]}", f"  class {','.join(keys)} {name}"]
    return lines


def _mermaid_box_classes(box: _Box) -> list[str]:
    # Mermaid cannot colour one line of a label, so the box says it and the row carries the word.
    names: list[str] = [box.kind] if box.kind != "service" else []
    if box.stopped:
        names.append("stopped")
    if any(row.state != "up" for row in box.rows):
        names.append("fault")
    elif any(row.notes for row in box.rows):
        names.append("drift")
    return names


def _mermaid_text(text: str) -> str:
    """Escape text for a quoted Mermaid label with Mermaid's own entity codes."""
    replacements = {'"': "#quot;", "#": "#35;", "<": "#lt;", ">": "#gt;", "&": "#amp;", "`": "#96;"}
    return "".join(replacements.get(c, c) for c in text)
