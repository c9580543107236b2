"""`composens test` through the CLI, with a fake compose and probes standing in for the lab."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from composens.model.checks import Check, CheckResult
from composens.show import render
from composens.system.run import probe
from composens.system.run.probe import Attempt
from tests.unit.test_cli_and_render import FakeCompose, invoke

CONFIG: dict[str, Any] = {
    "name": "checklab",
    "x-composens": {
        "checks": [
            {"name": "a reaches b", "ping": {"from": "a", "to": "192.0.2.2"}},
            {"name": "b answers", "exec": {"service": "b", "command": ["true"]}},
        ]
    },
    "services": {"a": {"network_mode": "none"}, "b": {"network_mode": "none"}},
}


def fake_attempt(check: Check, target: probe.Target, **kw: object) -> Attempt:
    return Attempt(None, (0.05, 0.07)) if check.kind == "ping" else Attempt("exit code 1, expected 0: nope")


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both services run (as far as the runner knows) and the probes answer at once."""

    def targets(checks: Any, known: Any, **kw: Any) -> tuple[CheckResult, ...]:
        up = {s: probe.Target(s, f"{s}-id", f"/run/{s}", True) for s in ("a", "b")}
        return real_run(checks, up, **{**kw, "probe": fake_attempt})

    real_run = probe.run_checks
    monkeypatch.setattr(probe, "run_checks", targets)


def test_results_as_json_and_exit_1_when_one_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], running: None, tmp_path: Path
) -> None:
    report = tmp_path / "junit.xml"
    code, out, err = invoke(
        monkeypatch, capsys, FakeCompose(CONFIG), "test", "--format", "json", "--junit", str(report)
    )
    assert code == 1
    rows = json.loads(out)
    assert [(r["name"], r["result"], r["attempts"]) for r in rows] == [
        ("a reaches b", "pass", 1),
        ("b answers", "fail", 1),
    ]
    assert rows[0]["rtts_ms"] == [0.05, 0.07]
    assert rows[1]["reason"] == "exit code 1, expected 0: nope"
    assert "composens: check 'b answers': fail after 1 attempt" in err
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")


def test_a_named_check_alone_and_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], running: None
) -> None:
    code, out, _ = invoke(monkeypatch, capsys, FakeCompose(CONFIG), "test", "a reaches b")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["CHECK", "SERVICE", "RESULT", "ATTEMPTS", "TIME", "DETAIL"]
    assert lines[1].startswith("a reaches b  a        pass    1")
    assert lines[1].endswith("2 replies, rtt min/avg/max 0.05/0.06/0.07 ms")
    assert lines[-1] == "1/1 checks passed"


def test_unknown_check_or_none_declared_is_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = invoke(monkeypatch, capsys, FakeCompose(CONFIG), "test", "nope")
    assert code == 3
    assert err == "composens: error: docker-compose.yml: no such check: 'nope'\n"
    bare = {**CONFIG, "x-composens": {}}
    code, _, err = invoke(monkeypatch, capsys, FakeCompose(bare), "test")
    assert code == 3
    assert "no checks are declared" in err


def test_a_service_that_is_not_running_fails_its_checks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = invoke(monkeypatch, capsys, FakeCompose(CONFIG), "test", "--format", "json")
    assert code == 1
    assert {r["reason"] for r in json.loads(out)} == {"service a is not running", "service b is not running"}


def test_the_results_table_renders_exactly() -> None:
    import io

    from rich.console import Console

    results = [
        CheckResult("v4", "node1", "ping", "pass", 1, 0.41, None, (0.1, 0.2, 0.3)),
        CheckResult("ospf", "router1", "exec", "fail", 12, 61.0, "stdout lacks 'Full': Neighbor ID  Pri"),
    ]
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None).print(render.checks_table(results))
    assert [line.rstrip() for line in buffer.getvalue().splitlines()] == [
        "CHECK  SERVICE  RESULT  ATTEMPTS  TIME    DETAIL",
        "v4     node1    pass    1         0.4 s   3 replies, rtt min/avg/max 0.10/0.20/0.30 ms",
        "ospf   router1  fail    12        61.0 s  stdout lacks 'Full': Neighbor ID  Pri",
    ]
