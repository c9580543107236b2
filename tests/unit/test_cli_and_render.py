"""The CLI with a fake compose adapter, and exact rendering."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from composens.cli import arguments
from composens.cli import main as cli
from composens.cli.app import App
from composens.model.containers import Container
from composens.model.declared import parse
from composens.model.entries import Action, EntryChange, Status
from composens.model.errors import ConfigError, EngineError
from composens.model.report import Drift, InterfaceRow, LabStatus, NetnsRow
from composens.show import render
from composens.system import world
from composens.system.docker.options import ComposeOptions

SEED = Path(__file__).resolve().parents[1] / "topology" / "seed" / "docker-compose.yml"


class FakeCompose:
    """Stands in for the docker CLI: a fixed config, no containers, a recorded command line."""

    def __init__(self, config: dict[str, Any] | Exception, code: int = 0) -> None:
        self._config = config
        self.code = code
        self.ran: list[list[str]] = []
        self.options = ComposeOptions(files=("docker-compose.yml",))
        self.docker = ["docker"]
        self.use_api = False

    def config(self) -> dict[str, Any]:
        if isinstance(self._config, Exception):
            raise self._config
        return self._config

    def essentials(self) -> dict[str, Any]:
        return self.config()

    def containers(self, project: str) -> list[Container]:
        return []

    def inspect(self, ids: Sequence[str], *, missing_ok: bool = False) -> list[Container]:
        return []

    def project_exists(self, project: str) -> bool:
        return False

    def run(self, args: Sequence[str]) -> int:
        self.ran.append(list(args))
        return self.code


def invoke(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fake: FakeCompose, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(App, "compose", lambda self: fake)
    # No machine id: derived MACs from the project alone, the same on every machine that runs these tests.
    monkeypatch.setattr(world, "MACHINE_ID_FILES", ())
    with pytest.raises(SystemExit) as ended:
        cli.main(list(args))
    out, err = capsys.readouterr()
    return int(ended.value.code or 0), out, err


@pytest.fixture
def seed() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SEED.read_text())
    data["name"] = "unitseed"
    return data


def test_plan_prints_the_ip_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], seed: dict[str, Any]
) -> None:
    code, out, err = invoke(monkeypatch, capsys, FakeCompose(seed), "plan", "node1")
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == (
        "ip link add name node1_router1 address 3a:1c:23:84:04:d4 netns node1 type veth "
        "peer name router1_node1 address b2:5f:1a:83:f0:34 netns router1"
    )
    assert "ip -n node1 route add 20.0.0.0/24 via 10.0.0.10" in lines
    assert not any("node2_router1 netns node2" in line for line in lines)


def test_config_error_is_one_line_with_exit_code_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCompose(ConfigError("docker-compose.yml: services must be a mapping"))
    code, out, err = invoke(monkeypatch, capsys, fake, "up", "-d")
    assert (code, out) == (3, "")
    assert err == "composens: error: docker-compose.yml: services must be a mapping\n"
    assert fake.ran == []


def test_engine_error_exit_code_5_and_debug_shows_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCompose(EngineError("the docker daemon is not reachable"))
    code, _, err = invoke(monkeypatch, capsys, fake, "ps", "--netns")
    assert code == 5
    assert "Traceback" not in err
    code, _, err = invoke(monkeypatch, capsys, fake, "--debug", "ps", "--netns")
    assert code == 5
    assert "Traceback" in err


def test_unknown_service_is_refused_before_compose_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], seed: dict[str, Any]
) -> None:
    fake = FakeCompose(seed)
    code, _, err = invoke(monkeypatch, capsys, fake, "up", "-d", "node9")
    assert code == 3
    assert err == "composens: error: docker-compose.yml: no such service: node9\n"
    assert fake.ran == []


def test_unknown_commands_pass_through_with_their_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCompose({}, code=7)
    code, _, _ = invoke(monkeypatch, capsys, fake, "logs", "-f", "--tail", "5", "node1")
    assert code == 7
    assert fake.ran == [["logs", "-f", "--tail", "5", "node1"]]
    code, _, _ = invoke(monkeypatch, capsys, fake, "ps", "--format", "json")
    assert fake.ran[-1] == ["ps", "--format", "json"]


def test_graph_mermaid_and_dot(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], seed: dict[str, Any]
) -> None:
    from composens.show import picture

    topo = parse(seed, source="docker-compose.yml")
    code, out, _ = invoke(monkeypatch, capsys, FakeCompose(seed), "graph")
    assert code == 0
    assert out == picture.mermaid(topo) + "\n"
    code, out, _ = invoke(monkeypatch, capsys, FakeCompose(seed), "graph", "--format", "dot")
    assert out == picture.dot(topo) + "\n"


@pytest.mark.parametrize(
    ("command", "args", "services"),
    [
        ("up", ["-d", "--scale", "node=3", "-t", "5", "node", "router"], ["node", "router"]),
        ("up", ["--exit-code-from", "node1", "router1"], ["router1"]),
        ("stop", ["-t", "0", "a"], ["a"]),
        ("kill", ["-s", "SIGHUP", "a", "b"], ["a", "b"]),
        ("rm", ["-f", "-s"], []),
    ],
)
def test_service_args(command: str, args: list[str], services: list[str]) -> None:
    assert arguments.service_args(command, args) == services


@pytest.mark.parametrize(
    ("args", "detached"),
    [(["-d"], True), (["--detach"], True), (["-dV"], True), (["--wait"], True), (["--build"], False), ([], False)],
)
def test_is_detached(args: list[str], detached: bool) -> None:
    assert arguments.is_detached(args) is detached


ROWS = [
    NetnsRow(
        "node1",
        "lab-node1-1",
        4242,
        "node1",
        "/var/run/netns/node1",
        "/var/run/docker/netns/abc",
        Status.LINKED,
        (InterfaceRow("node1_router1", True, True), InterfaceRow("node1_router2", True, False)),
        (
            Drift("node1", "down", "interface node1_router2", ifname="node1_router2"),
            Drift("node1", "extra", "address 10.9.9.9/24 on node1_router1", ours=False, ifname="node1_router1"),
        ),
    ),
    NetnsRow("router1", "lab-router1-1", None, "router1", "/var/run/netns/router1", None, Status.NONE),
]


def test_table_renders_exactly() -> None:
    buffer = io.StringIO()
    from rich.console import Console

    Console(file=buffer, width=250, color_system=None).print(render.netns_table(ROWS))
    assert [line.rstrip() for line in buffer.getvalue().splitlines()] == [
        "SERVICE  CONTAINER      PID   NETNS    TARGET                     STATUS  INTERFACES                            DRIFT",
        "node1    lab-node1-1    4242  node1    /var/run/docker/netns/abc  linked  node1_router1 up, node1_router2 down  down interface node1_router2; extra address 10.9.9.9/24 on node1_router1 (not made by composens)",
        "router1  lab-router1-1  -     router1  -                          none    -                                     -",
    ]
    # The foreign address is shown and left alone: as for `plan --exit-code`, no difference.
    assert render.drift_summary(LabStatus(tuple(ROWS))) == (
        "1 difference from the file: `composens plan` lists the changes, `composens up -d` makes them"
    )


def test_the_summary_counts_what_plan_counts_and_never_claims_a_match_it_cannot_see() -> None:
    linked = replace(ROWS[0], drift=())
    assert render.drift_summary(LabStatus((linked, ROWS[1]))) == "the lab matches its file"
    stale = replace(linked, status=Status.STALE)
    assert render.drift_summary(LabStatus((stale,))).startswith("1 difference from the file")
    unwired = LabStatus((linked,), ("node1:a <-> router1:b: router1 not running",), ("router1",))
    assert render.drift_summary(unwired).startswith("2 differences from the file")
    assert render.status_notes(unwired) == [
        "not running: router1",
        "not wired: node1:a <-> router1:b: router1 not running",
    ]
    assert render.drift_summary(LabStatus((ROWS[1],), (), ("node1", "router1"))) == (
        "nothing of the lab is running: `composens up -d` starts it"
    )


def test_json_has_the_documented_keys() -> None:
    rows = json.loads(render.netns_json(ROWS))
    assert [list(r) for r in rows] == [list(render.JSON_KEYS)] * 2
    assert rows[0]["interfaces"] == [
        {
            "ifname": "node1_router1",
            "present": True,
            "up": True,
            "set_down": False,
            "conditions": None,
            "mac": None,
            "remote": None,
        },
        {
            "ifname": "node1_router2",
            "present": True,
            "up": False,
            "set_down": False,
            "conditions": None,
            "mac": None,
            "remote": None,
        },
    ]
    assert rows[1]["pid"] is None
    assert rows[1]["target"] is None
    assert rows[1]["status"] == "none"
    assert rows[0]["drift"] == [
        {"problem": "down", "item": "interface node1_router2", "ours": None},
        {"problem": "extra", "item": "address 10.9.9.9/24 on node1_router1", "ours": False},
    ]
    assert rows[1]["drift"] == []


def test_entry_change_lines_follow_the_seed() -> None:
    assert render.entry_change_line(EntryChange("node1", "node1", Action.CREATE, "/var/run/docker/netns/abc")) == (
        "node1: /var/run/netns/node1 -> /var/run/docker/netns/abc link create"
    )
    assert render.entry_change_line(EntryChange("n", "n", Action.CONFLICT, None, "exists")) == "n: conflict: exists"


def test_parse_fuzz_never_escapes_config_error() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    scalar = st.one_of(st.none(), st.integers(-5, 70000), st.text(max_size=20), st.booleans())
    value = st.recursive(
        scalar,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
        max_leaves=10,
    )
    names = st.sampled_from(["a", "b", "host", "r1", "x/y", "", "a-2"])
    endpoint = st.one_of(st.builds(lambda n, i: f"{n}:{i}", names, st.text(max_size=17)), value)
    link = st.fixed_dictionaries({"endpoints": st.lists(endpoint, max_size=3)}, optional={"mtu": value})
    ext = st.fixed_dictionaries(
        {}, optional={"links": st.lists(link, max_size=3) | value, "netns_prefix": value, "host": value}
    )
    service_ext = st.fixed_dictionaries(
        {},
        optional={
            "addresses": st.dictionaries(st.text(max_size=16), st.lists(st.text(max_size=20) | value, max_size=2)),
            "routes": st.lists(st.text(max_size=40), max_size=2) | value,
            "netns": value,
        },
    )
    services = st.dictionaries(
        names,
        st.fixed_dictionaries(
            {"network_mode": st.sampled_from(["none", "host", "service:a", "bridge"])},
            optional={"x-composens": service_ext},
        ),
        max_size=3,
    )

    @settings(max_examples=500, deadline=None)
    @given(ext, services)
    def check(top: Any, svcs: Any) -> None:
        message = ""
        try:
            parse({"name": "p", "x-composens": top, "services": svcs}, source="f")
        except ConfigError as e:  # the only exception parse may raise: anything else fails the test
            message = e.message
        assert "\n" not in message

    check()


def test_repair_line_is_one_line_or_nothing() -> None:
    from composens.model.report import LinkReport

    assert render.repair_line(LinkReport(entries=[EntryChange("n", "n", Action.KEEP, "/t")])) is None
    line = render.repair_line(
        LinkReport(entries=[EntryChange("r1", "r1", Action.REPLACE, "/t")], wired=["ip link add ...", "ip addr ..."])
    )
    assert line is not None
    assert line.split(" ", 1)[1] == "repaired: r1 link replace; 2 wiring changes"


def test_up_dry_run_prints_the_plan_and_runs_compose_dry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], seed: dict[str, Any]
) -> None:
    fake = FakeCompose(seed)
    code, out, _ = invoke(monkeypatch, capsys, fake, "up", "--dry-run", "-d")
    assert code == 0
    assert fake.ran == [["up", "--dry-run", "-d"]]
    assert out.splitlines()[-1] == "ip -n node2 route add 2001:1111:1111::/64 via 2001:2222:2222::10"


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("docker: 'compose' is not a docker command.\nSee 'docker --help'", "docker compose v2 is missing"),
        (
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
            "the docker daemon is not reachable",
        ),
        (
            "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock",
            "no permission to talk to the docker daemon",
        ),
    ],
)
def test_engine_failures_become_one_clear_line(stderr: str, expected: str) -> None:
    from composens.system.docker.compose import _translate

    error = _translate(stderr, ConfigError)
    assert isinstance(error, EngineError)
    assert error.message.startswith(expected)
    assert "\n" not in error.message


def test_not_root_is_exit_4_before_compose_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], seed: dict[str, Any]
) -> None:
    monkeypatch.setattr("composens.system.kernel.netns.os.access", lambda path, mode: False)
    fake = FakeCompose(seed)
    code, _, err = invoke(monkeypatch, capsys, fake, "up", "-d")
    assert code == 4
    assert err == "composens: error: cannot write /var/run/netns: composens needs root (run it with sudo)\n"
    assert fake.ran == []


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["logs", "-f"], "logs"),
        (["-f", "a.yml", "-p", "lab", "exec", "node1", "sh"], "exec"),
        (["--file=a.yml", "--compatibility", "config"], "config"),
        (["ps", "--format", "json"], "ps"),
        (["ps", "--netns"], None),
        (["export", "-o", "r1.tar", "r1"], "export"),
        (["export", "--format", "containerlab"], None),
        (["export", "--format=containerlab", "-o", "lab.clab.yml"], None),
        (["import", "lab.clab.yml"], None),
        (["up", "-d"], None),
        (["-p", "lab", "netns", "show"], None),
        (["--debug", "logs"], None),
        (["--help"], None),
        ([], None),
    ],
)
def test_passthrough_command_skips_typer_only_for_compose_commands(args: list[str], command: str | None) -> None:
    from composens.cli.arguments import passthrough_command

    assert passthrough_command(args) == command


CLAB = Path(__file__).resolve().parents[1] / "clab"


def test_import_writes_the_compose_file_and_names_what_it_drops_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    case = CLAB / "import" / "bridge"
    monkeypatch.chdir(case)
    code, out, err = invoke(monkeypatch, capsys, FakeCompose(RuntimeError("import needs no compose")), "import",
                            "lab/bridge.clab.yml")  # fmt: skip
    assert code == 0
    assert out == (case / "expected.yml").read_text()
    assert err.splitlines() == [f"composens: warning: {w}" for w in (case / "warnings.txt").read_text().splitlines()]
    written = tmp_path / "lab.yml"
    code, out, _ = invoke(monkeypatch, capsys, FakeCompose({}), "import", "lab/bridge.clab.yml", "-o", str(written))
    assert (code, out) == (0, "")
    assert yaml.safe_load(written.read_text())["x-composens"]["lans"]["ovs1"] == {
        "endpoints": ["a:eth2", "c:eth2"],
        "mtu": 9500,
    }


def test_import_refuses_kinds_it_cannot_run_a_line_each(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = CLAB / "invalid" / "unsupported-kinds.clab.yml"
    monkeypatch.chdir(path.parent)
    code, out, err = invoke(monkeypatch, capsys, FakeCompose({}), "import", path.name)
    assert (code, out) == (3, "")
    expected = [line.removeprefix("# error: ") for line in path.read_text().splitlines() if line.startswith("# err")]
    assert len(expected) == 4
    assert err.splitlines() == [f"composens: error: {line}" for line in expected]


def test_import_of_a_missing_or_broken_file_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = invoke(monkeypatch, capsys, FakeCompose({}), "import", str(tmp_path / "none.clab.yml"))
    assert (code, err) == (
        3,
        f"composens: error: {tmp_path / 'none.clab.yml'}: cannot be read: No such file or directory\n",
    )
    broken = tmp_path / "broken.clab.yml"
    broken.write_text("topology: [\n")
    code, _, err = invoke(monkeypatch, capsys, FakeCompose({}), "import", str(broken))
    assert code == 3
    assert err.startswith(f"composens: error: {broken}: not YAML (line ")
    assert err.count("\n") == 1


def test_export_reads_the_full_config_and_writes_a_topology(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCompose(yaml.safe_load(SEED.read_text()))
    code, out, err = invoke(monkeypatch, capsys, fake, "export", "--format", "containerlab")
    assert (code, err) == (0, "")
    nodes = yaml.safe_load(out)["topology"]["nodes"]
    assert nodes["node1"]["exec"][0].startswith("ip address add ")
    assert fake.ran == []


def test_export_without_format_is_composes_own(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCompose({})
    code, _, _ = invoke(monkeypatch, capsys, fake, "export", "-o", "r1.tar", "r1")
    assert code == 0
    assert fake.ran == [["export", "--output", "r1.tar", "r1"]]
