"""`composens graph --live` on the real engine: the running lab drawn over its file."""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import Project, run
from tests.integration.test_wiring import seed_lab

pytestmark = pytest.mark.integration


def test_an_interface_set_down_by_hand_is_marked_and_nothing_else(project: Project) -> None:
    project.write(seed_lab(project))
    refused = project.cli("graph", "--live", check=False)
    assert refused.returncode == 1
    assert "is not running: `composens up -d` first, or drop --live" in refused.stderr
    project.cli("up", "-d")
    calm = project.cli("graph", "--live", "--format", "dot").stdout
    assert "<B>down</B>" not in calm
    assert "<B>missing</B>" not in calm
    run("ip", "-n", f"{project.name}-node1", "link", "set", "dev", "node1_router1", "down")
    drawn = project.cli("graph", "--live", "--format", "dot").stdout
    marked = re.findall(r'<FONT COLOR="#c62828">([^<]+)</FONT> <FONT COLOR="#c62828"><B>(\w+)</B>', drawn)
    assert marked == [("node1_router1", "down")]
    mermaid = project.cli("graph", "--live").stdout
    assert mermaid.count("DOWN") == 1
    assert "node1_router1 DOWN" in mermaid
    svg = project.cli("graph", "--live", "--format", "svg").stdout
    assert svg.lstrip().startswith("<?xml") or "<svg" in svg
