"""Pictures of a topology: golden DOT and Mermaid, the live overlay, and rendering through Graphviz."""

from __future__ import annotations

import difflib
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from composens.model import declared, topology
from composens.model.errors import ComposensError
from composens.show import graphviz, picture

CASES = Path(__file__).resolve().parents[1] / "topology"
PICTURED = sorted(p.parent for p in CASES.glob("*/graph.dot"))
SEED = CASES / "seed" / "docker-compose.yml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load(path: Path) -> topology.Topology:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return declared.parse(data, source="docker-compose.yml")


def assert_same_text(expected: str, got: str, what: str) -> None:
    diff = "\n".join(difflib.unified_diff(expected.splitlines(), got.splitlines(), "expected", what, lineterm=""))
    assert got == expected, diff


@pytest.fixture
def dot_program() -> None:
    """Skip a test that needs graphviz's dot when it is missing, except in CI, where that fails it."""
    if shutil.which("dot") is None:
        if os.environ.get("CI"):
            pytest.fail("CI requires graphviz's dot for the picture tests (apt-get install graphviz)")
        pytest.skip("graphviz's dot is not installed (apt-get install graphviz)")


def svg_texts(svg: bytes) -> set[str]:
    root = ET.fromstring(svg)
    return {"".join(e.itertext()).strip() for e in root.iter() if e.tag.endswith("}text")}


# --------------------------------------------------------------------------- golden pictures


def test_the_seed_host_uplink_and_options_cases_have_pictures() -> None:
    assert {p.name for p in PICTURED} >= {"seed", "host-uplink", "options"}


@pytest.mark.parametrize("case", PICTURED, ids=lambda p: p.name)
def test_dot_matches_golden(case: Path) -> None:
    got = picture.dot(load(case / "docker-compose.yml"))
    assert_same_text((case / "graph.dot").read_text(), got, "picture.dot")


@pytest.mark.parametrize("case", PICTURED, ids=lambda p: p.name)
def test_mermaid_matches_golden(case: Path) -> None:
    got = picture.mermaid(load(case / "docker-compose.yml"))
    assert_same_text((case / "graph.mmd").read_text(), got, "picture.mermaid")


def test_links_are_drawn_left_to_right_from_node1_through_the_routers() -> None:
    edges = [line.split("[")[0].strip() for line in picture.dot(load(SEED)).splitlines() if " -- " in line]
    # node1 is n1, node2 n2, router1 n3, router2 n4: node2's links are turned to end at node2.
    assert edges == ["n1 -- n3", "n3 -- n2", "n1 -- n4", "n4 -- n2"]


def test_names_and_notes_are_escaped() -> None:
    topo = declared.parse(
        {
            "name": "odd",
            "services": {
                "_web.1-a_b": {
                    "network_mode": "none",
                    "x-composens": {"netns": "web1", "addresses": {"e@1+x.y-z_w": ["2001:db8::1/64"]}},
                },
                "b": {"network_mode": "none"},
            },
            "x-composens": {"links": [{"endpoints": ["_web.1-a_b:e@1+x.y-z_w", "b:eth0"]}]},
        },
        source="f",
    )
    live = picture.LiveOverlay(drift={("b", "eth0"): ('extra <x> & "y" #1',)})
    dot_text = picture.dot(topo, live)
    assert "<B>_web.1-a_b</B>" in dot_text
    assert ">e@1+x.y-z_w<" in dot_text
    assert "≠ extra &lt;x&gt; &amp; &quot;y&quot; #1" in dot_text
    mermaid_text = picture.mermaid(topo, live)
    assert "e@1+x.y-z_w: 2001:db8::1/64" in mermaid_text
    assert "≠ extra #lt;x#gt; #amp; #quot;y#quot; #35;1" in mermaid_text


@pytest.mark.usefixtures("dot_program")
def test_escaped_names_come_out_of_dot_as_written() -> None:
    topo = load(SEED)
    live = picture.LiveOverlay(drift={("node1", "node1_router1"): ('extra <x> & "y"',)})
    assert '≠ extra <x> & "y"' in svg_texts(graphviz.render(picture.dot(topo, live), "svg"))


# --------------------------------------------------------------------------- the live overlay


def changed_lines(static: str, live: str) -> list[int]:
    before, after = static.splitlines(), live.splitlines()
    assert len(before) == len(after), "the overlay adds or drops lines of the static picture"
    return [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]


def node_lines(dot_text: str, key: str) -> range:
    lines = dot_text.splitlines()
    start = lines.index(f"  {key} [label=<")
    end = next(i for i in range(start, len(lines)) if lines[i].endswith("</TABLE>>];"))
    return range(start, end + 1)


def test_live_overlay_marks_a_down_interface_and_greys_a_stopped_service_and_nothing_else() -> None:
    topo = load(SEED)
    live = picture.LiveOverlay(stopped=frozenset({"node2"}), interfaces={("router1", "router1_node2"): "down"})
    static, drawn = picture.dot(topo), picture.dot(topo, live)
    lines = drawn.splitlines()
    down_row = next(i for i, line in enumerate(lines) if ">router1_node2<" in line)
    node2 = node_lines(drawn, "n2")
    assert set(changed_lines(static, drawn)) == {down_row, *node2[1:-1]}  # all but its first and last line
    assert f'<FONT COLOR="{picture._RED}"><B>down</B></FONT>' in lines[down_row]
    assert f'<FONT COLOR="{picture._RED}">router1_node2</FONT>' in lines[down_row]
    assert not any("down</B>" in lines[i] for i in range(len(lines)) if i != down_row)
    assert f'COLOR="{picture._GREY}"' in lines[node2[1]]  # the border
    assert ">stopped<" in lines[node2[2]]  # under the name
    assert not any(picture._GREY in lines[i] for i in range(len(lines)) if i not in node2)


def test_live_overlay_in_mermaid_says_it_in_words() -> None:
    topo = load(SEED)
    live = picture.LiveOverlay(stopped=frozenset({"node2"}), interfaces={("router1", "router1_node2"): "down"})
    static, drawn = picture.mermaid(topo).splitlines(), picture.mermaid(topo, live).splitlines()
    changed = {i for i, (a, b) in enumerate(zip(static, drawn, strict=False)) if a != b}
    assert changed == {2, 3}  # the boxes of node2 and router1; the links stay as they were
    assert drawn[2].startswith('  n2["<b>node2</b> (stopped)<br/>')
    assert "router1_node2 DOWN: 20.0.0.10/24" in drawn[3]
    assert drawn[len(static) :] == [
        "  classDef stopped fill:#efefef,stroke:#a0a0a0,color:#888888",
        "  class n2 stopped",
        "  classDef fault stroke:#c62828,stroke-width:2px",
        "  class n3 fault",
    ]


def test_live_overlay_puts_conditions_on_their_link_and_drift_on_its_row() -> None:
    topo = load(SEED)
    live = picture.LiveOverlay(
        drift={("node1", "node1_router1"): ("extra 10.0.0.99/24",)},
        conditions={("node2", "node2_router1"): "delay 40ms loss 1%"},
    )
    lines = picture.dot(topo, live).splitlines()
    (drift_row,) = (line for line in lines if "≠" in line)
    assert ">node1_router1<" in drift_row
    assert "≠ extra 10.0.0.99/24" in drift_row
    (conditioned,) = (line for line in lines if "delay" in line)
    # node2 is on the right of router1: its end's conditions are the right-hand cell, arrow pointing back.
    assert conditioned.startswith('  n3 -- n2 [tailport="p2:e", headport="p1:w", label=<')
    assert "← delay 40ms loss 1%" in conditioned
    assert "node2_router1 [delay 40ms loss 1%]" in picture.mermaid(topo, live)


def test_live_overlay_shows_undeclared_interfaces_and_containers() -> None:
    topo = load(SEED)
    live = picture.LiveOverlay(extra_interfaces={"router2": ("eth9",)}, extra_nodes=("old",))
    drawn = picture.dot(topo, live)
    assert "≠ not declared" in drawn.splitlines()[node_lines(drawn, "n4")[-2]]
    assert "  e1 [label=<" in drawn
    assert '  e1["<b>old</b> ≠ not declared"]' in picture.mermaid(topo, live)


def test_live_overlay_refuses_an_unknown_interface_state() -> None:
    with pytest.raises(ValueError, match="'sideways' is not one of up, down, missing"):
        picture.LiveOverlay(interfaces={("node1", "node1_router1"): "sideways"})


# --------------------------------------------------------------------------- rendering through dot


@pytest.mark.usefixtures("dot_program")
def test_svg_of_the_seed_lab_names_every_service_interface_and_address() -> None:
    topo = load(SEED)
    texts = svg_texts(graphviz.render(picture.dot(topo), "svg"))
    wanted = {*topo.services}
    for name, node in topo.services.items():
        wanted |= set(topo.interfaces_of(name))
        wanted |= {address for addresses in node.addresses.values() for address in addresses}
    assert len(wanted) == 4 + 8 + 8
    assert wanted <= texts, sorted(wanted - texts)


@pytest.mark.usefixtures("dot_program")
def test_png_of_the_seed_lab_is_a_png() -> None:
    png = graphviz.render(picture.dot(load(SEED)), "png")
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 1000


def test_render_without_dot_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ComposensError) as caught:
        graphviz.render("graph { a }", "svg")
    assert "apt-get install graphviz" in caught.value.message
    assert "\n" not in caught.value.message


def test_render_failure_gives_dots_last_error_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "dot"
    fake.write_text(
        "#!/bin/sh\necho 'Warning: something' >&2\necho 'Error: <stdin>: syntax error in line 1' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ComposensError) as caught:
        graphviz.render("graph {", "png")
    assert caught.value.message == "dot -Tpng failed: Error: <stdin>: syntax error in line 1"


@pytest.mark.usefixtures("dot_program")
def test_render_failure_of_the_real_dot_is_one_line() -> None:
    with pytest.raises(ComposensError) as caught:
        graphviz.render("graph {", "svg")
    assert caught.value.message.startswith("dot -Tsvg failed: ")
    assert "\n" not in caught.value.message
