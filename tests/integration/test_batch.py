"""ip stopping midway: which lines ran is read off the kernel, never assumed (namespaces of the test's own)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from composens.model import declared, topology
from composens.model.errors import WiringError
from composens.model.record import ProjectRecord
from composens.plan.converge import Scope
from composens.system.kernel import reading, wiring
from tests.integration.conftest import run

pytestmark = pytest.mark.integration

# Passes the first STOP_AFTER lines of a batch that adds addresses to the real ip, then dies as ip does
# on an argument it cannot parse: a message, no "Command failed", exit 255.
SHIM = """#!/bin/sh
case "$*" in
  *-batch*)
    lines=$(cat)
    if printf '%s\\n' "$lines" | grep -q '^addr add'; then
      printf '%s\\n' "$lines" | head -n "$STOP_AFTER" | /usr/sbin/ip "$@"
      echo 'Error: argument "x" is wrong: stopped here by the test' >&2
      exit 255
    fi
    printf '%s\\n' "$lines" | exec /usr/sbin/ip "$@";;
  *) exec /usr/sbin/ip "$@";;
esac
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[topology.Topology, dict[str, reading.Target]]]:
    prefix = f"cnsb{uuid.uuid4().hex[:6]}-"
    for node in ("a", "b"):
        run("ip", "netns", "add", f"{prefix}{node}")
    try:
        topo = declared.parse(
            {
                "name": "batchtest",
                "x-composens": {"netns_prefix": prefix, "links": [{"endpoints": ["a:e1", "b:e1"]}]},
                "services": {
                    "a": {
                        "network_mode": "none",
                        "x-composens": {"addresses": {"e1": ["192.0.2.1/30", "198.18.9.1/24"]}},
                    },
                    "b": {"network_mode": "none", "x-composens": {"addresses": {"e1": ["192.0.2.2/30"]}}},
                },
            },
            source="f",
        )
        targets = {n: reading.Target(f"{prefix}{n}", f"/var/run/netns/{prefix}{n}", f"{prefix}{n}") for n in ("a", "b")}
        yield topo, targets
    finally:
        for node in ("a", "b"):
            run("ip", "netns", "delete", f"{prefix}{node}", check=False)


def test_lines_after_ip_stopped_are_not_done_and_the_failing_one_is_named(
    lab: tuple[topology.Topology, dict[str, reading.Target]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topo, targets = lab
    shim = tmp_path / "ip"
    shim.write_text(SHIM)
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("STOP_AFTER", "2")  # a's batch: addr add 192.0.2.1/30, addr add 198.18.9.1/24 | link set ... up
    record = ProjectRecord()
    saves: list[int] = []
    with pytest.raises(WiringError) as caught:
        wiring.converge_lab(topo, Scope(frozenset(targets)), targets, record, lambda: saves.append(1))
    a = targets["a"].netns
    assert caught.value.message.startswith(
        f'`ip -n {a} link set dev e1 alias composens:batchtest up` failed: Error: argument "x" is wrong: '
        "stopped here by the test"
    )
    assert caught.value.message.endswith("undid what this run had done: the lab is as it was before")
    assert saves  # claims were written before the pair was made
    for node in ("a", "b"):
        assert "e1" not in run("ip", "-n", targets[node].netns or "", "-o", "link", "show").stdout
    # Nothing that did not run (or was undone) is left claimed.
    assert all(not node.interfaces and not any(node.addresses.values()) for node in record.nodes.values())
    # Without the shim the same run succeeds, from the same record.
    monkeypatch.setenv("PATH", os.environ["PATH"].split(":", 1)[1])
    report = wiring.converge_lab(topo, Scope(frozenset(targets)), targets, record, lambda: None)
    assert f"ip -n {a} addr add 198.18.9.1/24 dev e1" in report.done
    assert record.nodes["a"].interfaces["e1"].index is not None
