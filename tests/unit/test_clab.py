"""containerlab import and export: golden files, exact errors, the schema, and the round trip.

Golden imports live in tests/clab/import/<case>/ (lab/*.clab.yml in, expected.yml and warnings.txt out;
expected-no-mgmt.yml for --no-mgmt where present); golden exports in tests/clab/export/<case>/
(docker-compose.yml, written as `docker compose config` prints it, in; expected.clab.yml and warnings.txt
out); invalid topologies in tests/clab/invalid/, each with its exact error on the first line.

The tests that run `docker compose config` (no daemon needed) skip where the compose plugin is missing,
and fail instead when CI is set.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from composens.interop.clab import exporting, files, importing
from composens.model import declared, topology
from composens.model.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "clab"
IMPORTS = sorted(p for p in (CASES / "import").iterdir() if p.is_dir())
EXPORTS = sorted(p for p in (CASES / "export").iterdir() if p.is_dir())
INVALID = sorted((CASES / "invalid").glob("*.clab.yml"))
SCHEMA = CASES / "schema" / "clab.schema.json"  # containerlab's own, BSD-3: see tests/clab/schema/README.md
# The compose keys the round trip compares, beside the parsed topology.
CARRIED = ("image", "command", "entrypoint", "environment", "volumes", "ports", "labels", "sysctls", "cap_add",
           "user", "network_mode", "mem_limit", "cpus")  # fmt: skip


def topology_file(case: Path) -> Path:
    (found,) = (case / "lab").glob("*.clab.yml")
    return found


def imported(case: Path, *, mgmt: bool = True, output_dir: Path | None = None) -> files.Converted:
    path = topology_file(case)
    return importing.import_topology(
        files.load(path.read_text()),
        source=path.name,
        topology_dir=str(path.parent),
        output_dir=str(output_dir or case),
        mgmt=mgmt,
    )


def same_text(got: str, expected: str) -> None:
    diff = "\n".join(difflib.unified_diff(expected.splitlines(), got.splitlines(), "expected", "got", lineterm=""))
    assert got == expected, diff


def warnings_of(case: Path) -> list[str]:
    return (case / "warnings.txt").read_text().splitlines()


@pytest.fixture(scope="module")
def compose() -> list[str]:
    """The docker compose command, for `config` (which reads files and needs no daemon)."""
    docker = shutil.which("docker")
    works = docker is not None and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    if not works:
        if os.environ.get("CI"):
            pytest.fail("CI requires docker compose for the containerlab tests")
        pytest.skip("docker compose is not installed")
    assert docker is not None
    return [docker, "compose"]


def compose_config(compose: list[str], path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [*compose, "-f", str(path), "config", "--format", "yaml"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"docker compose config refused {path}: {done.stderr}"
    data: dict[str, Any] = yaml.safe_load(done.stdout)
    return data


def parse(config: dict[str, Any]) -> topology.Topology:
    """Parse as composens does (x-composens.macs set aside while topology does not read it: issue 18)."""
    return declared.parse(importing._without_unknown_keys(topology.essentials(config)), source="f")


def schema_validator() -> jsonschema.Draft7Validator:
    # One pattern (ports) uses \p{N}\p{L}, which Python's re lacks; \w is its nearest spelling there.
    text = SCHEMA.read_text().replace(r"\\p{N}\\p{L}", r"\\w")
    return jsonschema.Draft7Validator(json.loads(text))


# --------------------------------------------------------------------------- import


@pytest.mark.parametrize("case", IMPORTS, ids=lambda p: p.name)
def test_import_matches_golden(case: Path) -> None:
    converted = imported(case)
    same_text(files.dump(converted, header=f"imported by composens from {topology_file(case).name}"),
              (case / "expected.yml").read_text())  # fmt: skip
    assert list(converted.warnings) == warnings_of(case)


def test_import_without_mgmt_gives_every_node_no_network() -> None:
    case = CASES / "import" / "exec"
    converted = imported(case, mgmt=False)
    same_text(files.dump(converted, header="imported by composens from exec.clab.yml"),
              (case / "expected-no-mgmt.yml").read_text())  # fmt: skip
    assert "networks" not in converted.document
    assert {s["network_mode"] for s in converted.document["services"].values()} == {"none"}


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_topology_gives_its_exact_error(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# error: ")
    with pytest.raises(ConfigError) as caught:
        importing.import_topology(files.load(path.read_text()), source=path.name, topology_dir="/t", output_dir="/t")
    assert caught.value.message == first.removeprefix("# error: ")
    assert caught.value.exit_code == 3


def test_suites_are_not_empty() -> None:
    assert len(IMPORTS) >= 5
    assert len(EXPORTS) >= 1
    assert len(INVALID) >= 5


def test_inheritance_follows_containerlab() -> None:
    services = imported(CASES / "import" / "inheritance").document["services"]
    spine, leaf = services["spine1"], services["leaf1"]
    assert spine["environment"]["LEVEL"] == "node"  # node > group > kind > defaults, key by key
    assert leaf["environment"]["LEVEL"] == "kind"  # leaf1's group sets no env
    assert spine["environment"]["ON"] == "yes"  # YAML 1.2, as containerlab reads it: a string
    assert spine["volumes"] == ["./lab/spine/motd:/etc/motd:ro", "./lab/shared/hosts:/etc/hosts.lab"]
    assert leaf["volumes"][-1] == "/srv/leaf1:/data"  # absolute paths stay
    assert spine["cap_add"] == ["NET_ADMIN", "NET_RAW"]
    assert leaf["ports"] == ["127.0.0.1:2222:22/tcp", "5353:53/udp"]  # the node's list replaces the defaults'
    assert leaf["image"] == "busybox:1.36-leaf"  # the group's image beats the defaults'
    assert services["leaf2"]["network_mode"] == "service:leaf1"


def test_exec_lines_become_addresses_routes_and_commands() -> None:
    r1 = imported(CASES / "import" / "exec").document["services"]["r1"]["x-composens"]
    assert r1["addresses"] == {"eth1": ["198.18.0.1/30", "2001:db8::1/64"]}
    assert r1["routes"] == ["198.18.8.0/24 via 198.18.0.2", "2001:db8:8::/48 via 2001:db8::2 dev eth1 metric 10"]
    assert "ip link set dev eth1 up" not in r1["exec"]  # composens sets every declared end up
    assert "ip addr add 198.18.255.1/32 dev lo" in r1["exec"]  # lo is no declared interface
    assert "ip route add 198.18.10.0/24 via 172.20.20.1" in r1["exec"]  # gateway on no declared subnet
    assert "echo $$HOSTNAME ready > /tmp/ready" in r1["exec"]  # sh -c unwrapped; '$$' stays literal for compose
    assert ["touch", "/tmp/a file"] in r1["exec"]  # containerlab splits words without a shell: so does the argv


def test_binds_relative_to_the_topology_are_relative_to_the_compose_file(tmp_path: Path) -> None:
    case = CASES / "import" / "exec"
    elsewhere = imported(case, output_dir=tmp_path / "out")
    relative = os.path.relpath(case / "configs" / "r2", tmp_path / "out")
    assert elsewhere.document["services"]["r2"]["volumes"] == [f"{relative}:/etc/r2"]
    assert imported(case).document["services"]["r2"]["volumes"] == ["./configs/r2:/etc/r2"]


def test_link_forms_macs_and_host_ends() -> None:
    doc = imported(CASES / "import" / "links").document
    links = doc["x-composens"]["links"]
    assert {"endpoints": ["r2:eth2", "r3:eth2"], "mtu": 1400} in links  # the extended form
    assert {"endpoints": ["r2:eth3", "host:r2-eth3"], "mtu": 1500} in links  # type: host
    assert {"endpoints": ["r3:eth3", "host:r3-eth3"]} in links  # a node of kind host
    assert doc["services"]["r2"]["x-composens"]["macs"] == {"eth2": "02:00:00:00:02:02"}
    assert doc["services"]["r1"]["networks"] == {"mgmt": {"ipv4_address": "198.18.250.11"}}


def test_bridges_become_lans_of_their_linked_nodes() -> None:
    lans = imported(CASES / "import" / "bridge").document["x-composens"]["lans"]
    assert lans == {
        "br-lan": {"endpoints": ["a:eth1", "b:eth1", "c:eth1"], "mtu": 9000},
        "ovs1": {"endpoints": ["a:eth2", "c:eth2"]},
    }


def test_dollars_containerlab_substitutes_stay_and_others_are_escaped() -> None:
    doc = {"topology": {"nodes": {"a": {"kind": "linux", "image": "i", "cmd": "echo $$x ${A:=b} $B $( ) $"}}}}
    got = importing.import_topology(doc, source="t", topology_dir="/t", output_dir="/t")
    assert got.document["services"]["a"]["command"] == "echo $$x ${A:-b} $B $$( ) $$"


@pytest.mark.parametrize("case", IMPORTS, ids=lambda p: p.name)
def test_docker_compose_and_composens_accept_every_import(case: Path, compose: list[str]) -> None:
    for expected in sorted(case.glob("expected*.yml")):
        topo = parse(compose_config(compose, expected))
        assert topo.services


# --------------------------------------------------------------------------- export


def exported(config: dict[str, Any], output_dir: Path) -> files.Converted:
    return exporting.export_topology(config, parse(config), output_dir=str(output_dir))


@pytest.mark.parametrize("case", EXPORTS, ids=lambda p: p.name)
def test_export_matches_golden(case: Path) -> None:
    config = yaml.safe_load((case / "docker-compose.yml").read_text())
    converted = exported(config, Path("/srv") / case.name)
    same_text(files.dump(converted, header=f"exported by composens from project {case.name}"),
              (case / "expected.clab.yml").read_text())  # fmt: skip
    assert list(converted.warnings) == warnings_of(case)
    schema_validator().validate(converted.document)


def test_schema_check_can_fail() -> None:
    with pytest.raises(jsonschema.ValidationError):
        schema_validator().validate({"name": "x", "topology": {"nodes": {"a": {"kind": "linux", "bogus": 1}}}})


def argv(command: topology.Command) -> tuple[str, ...]:
    """What a command runs: a string is `sh -c STRING`, which for plain words is those words themselves."""
    if isinstance(command, tuple):
        return argv(command[2]) if len(command) == 3 and command[:2] == ("sh", "-c") else command
    words = command.split()
    plain = all(re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", w) for w in words)
    return tuple(words) if plain else ("sh", "-c", command)


def comparable(topo: topology.Topology) -> topology.Topology:
    services = {name: replace(node, exec=tuple(argv(c) for c in node.exec)) for name, node in topo.services.items()}
    return replace(topo, source="", services=services)


def round_trip_equal(compose: list[str], original: Path, tmp_path: Path) -> None:
    """import(export(x)) is x again: the same lab (topology.parse's view) and the same containers."""
    before = compose_config(compose, original)
    back_out = exporting.export_topology(before, parse(before), output_dir=str(original.parent))
    validator = schema_validator()
    validator.validate(back_out.document)
    text = files.dump(back_out, header="round trip")
    again = importing.import_topology(
        files.load(text), source="rt.clab.yml", topology_dir=str(original.parent), output_dir=str(original.parent)
    )
    written = original.parent / f".round-trip-{tmp_path.name}.yml"  # beside the original: same relative paths
    try:
        written.write_text(files.dump(again, header="round trip"))
        after = compose_config(compose, written)
    finally:
        written.unlink(missing_ok=True)
    assert comparable(parse(after)) == comparable(parse(before))
    for name, spec in before["services"].items():
        got = after["services"][name]
        for key in CARRIED:
            assert got.get(key) == spec.get(key), f"{name}.{key}"
        macs = (spec.get("x-composens") or {}).get("macs")
        assert (got.get("x-composens") or {}).get("macs") == macs


@pytest.mark.parametrize("case", IMPORTS, ids=lambda p: p.name)
def test_round_trip_of_every_import(case: Path, compose: list[str], tmp_path: Path) -> None:
    round_trip_equal(compose, case / "expected.yml", tmp_path)


def test_round_trip_of_a_compose_lab(compose: list[str], tmp_path: Path) -> None:
    lab = copy.deepcopy(yaml.safe_load((CASES / "export" / "lab1" / "docker-compose.yml").read_text()))
    del lab["services"]["pc2"]["build"]  # export names the image compose would build; compose has none here
    lab["services"]["pc2"]["image"] = "lab1-pc2"
    del lab["services"]["r1"]["healthcheck"]  # not carried (a warning), so not compared
    for link in lab["x-composens"]["links"]:
        link.pop("netem", None)
    lab["x-composens"].pop("checks")
    lab["x-composens"].pop("host")
    lab["services"]["r2"]["x-composens"].pop("netns")
    lab["services"]["r1"]["volumes"] = [v for v in lab["services"]["r1"]["volumes"] if v["type"] == "bind"]
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(lab, sort_keys=False))
    round_trip_equal(compose, path, tmp_path)


def test_every_export_line_is_one_containerlab_splits_back(compose: list[str]) -> None:
    """containerlab splits exec lines with shlex and no shell: each exported line gives the argv back."""
    config = yaml.safe_load((CASES / "export" / "lab1" / "docker-compose.yml").read_text())
    lines = exported(config, Path("/srv/lab1")).document["topology"]["nodes"]["r1"]["exec"]
    assert lines[-3:] == ["vtysh -b", "sh -c 'echo $$HOSTNAME > /tmp/name'", "sh -c 'echo ready | tee /tmp/ready'"]
    assert all(re.fullmatch(r"[^\n]+", line) for line in lines)
