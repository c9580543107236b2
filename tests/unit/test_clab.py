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
import sys
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
           "user", "network_mode", "mem_limit", "cpus", "container_name", "depends_on", "dns", "dns_search",
           "dns_opt", "healthcheck", "pull_policy", "cgroup_parent", "privileged", "shm_size", "pid", "restart",
           "hostname", "networks")  # fmt: skip


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
    """Parse as composens does."""
    return declared.parse(topology.essentials(config), source="f")


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


@pytest.mark.parametrize("case", [c for c in IMPORTS if (c / "expected-no-mgmt.yml").exists()], ids=lambda p: p.name)
def test_import_without_mgmt_gives_every_node_no_network(case: Path) -> None:
    converted = imported(case, mgmt=False)
    same_text(files.dump(converted, header=f"imported by composens from {topology_file(case).name}"),
              (case / "expected-no-mgmt.yml").read_text())  # fmt: skip
    assert "networks" not in converted.document
    assert {s["network_mode"] for s in converted.document["services"].values()} == {"none"}


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_topology_gives_its_exact_error(path: Path) -> None:
    """The file's leading `# error: ` lines are the error, a line each (one per node, for kinds)."""
    lines = path.read_text().splitlines()
    expected = [line.removeprefix("# error: ") for line in lines if line.startswith("# error: ")]
    assert expected
    assert lines[: len(expected)] == [f"# error: {e}" for e in expected]
    with pytest.raises(ConfigError) as caught:
        importing.import_topology(files.load(path.read_text()), source=path.name, topology_dir="/t", output_dir="/t")
    assert caught.value.message.splitlines() == expected
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
    assert {"endpoints": ["r3:eth3", "host:r3-eth3"], "mtu": 9500} in links  # a node of kind host
    assert doc["services"]["r2"]["x-composens"]["macs"] == {"eth2": "02:00:00:00:02:02"}
    assert doc["services"]["r1"]["networks"] == {"mgmt": {"ipv4_address": "198.18.250.11"}}


def test_links_without_an_mtu_get_containerlabs_9500_on_every_kind_of_link() -> None:
    """links/link_veth.go, link_host.go: an unset (or 0) MTU is DefaultLinkMTU, 9500, for veth links (brief and
    extended), links to bridge nodes and host links alike."""
    doc = {"name": "m", "topology": {"nodes": {"a": {"kind": "linux", "image": "i"}, "b": {"kind": "linux", "image": "i"},
           "br": {"kind": "bridge"}}, "links": [{"endpoints": ["a:e1", "b:e1"]}, {"endpoints": ["a:e2", "b:e2"], "mtu": 0},
           {"type": "veth", "endpoints": [{"node": "a", "interface": "e3"}, {"node": "b", "interface": "e3"}]},
           {"endpoints": ["a:e4", "host:a-e4"]}, {"endpoints": ["a:e5", "br:p1"]}, {"endpoints": ["a:e6", "b:e6"],
           "mtu": 1500}]}}  # fmt: skip
    ext = importing.import_topology(doc, source="t", topology_dir="/t", output_dir="/t").document["x-composens"]
    assert [link["mtu"] for link in ext["links"]] == [9500, 9500, 9500, 9500, 1500]
    assert ext["lans"] == {"br": {"endpoints": ["a:e5"], "mtu": 9500}}


def test_bridges_become_lans_of_their_linked_nodes_one_link_too() -> None:
    lans = imported(CASES / "import" / "bridge").document["x-composens"]["lans"]
    assert lans == {
        "br-lan": {"endpoints": ["a:eth1", "b:eth1", "c:eth1"], "mtu": 9500},
        "ovs1": {"endpoints": ["a:eth2", "c:eth2"], "mtu": 9500},
        "lonely": {"endpoints": ["b:eth2"], "mtu": 9500},  # containerlab makes a bridge's one link like any other
    }


def test_dollars_are_written_so_compose_gives_what_containerlab_substitutes() -> None:
    doc = {"topology": {"nodes": {"a": {"kind": "linux", "image": "i", "cmd": "echo $$x ${A:=b} $B $( ) $"}}}}
    got = importing.import_topology(doc, source="t", topology_dir="/t", output_dir="/t")
    assert got.document["services"]["a"]["command"] == "echo $$x ${A:-b} ${B:-$$B} $$( ) $$"


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
    """The lab as the kernel gets it: commands as the argv they run, and a link with no MTU at the kernel's 1500
    (which the export writes out, containerlab's own default being 9500)."""
    services = {name: replace(node, exec=tuple(argv(c) for c in node.exec)) for name, node in topo.services.items()}
    links = tuple(replace(link, mtu=link.mtu or 1500) for link in topo.links)
    lans = tuple(replace(lan, mtu=lan.mtu or 1500) for lan in topo.lans)
    return replace(topo, source="", services=services, links=links, lans=lans)


def round_trip_equal(compose: list[str], original: Path, tmp_path: Path, *, compose_lab: bool = False) -> None:
    """import(export(x)) is x again: the same lab (topology.parse's view) and the same containers. A compose lab
    comes back with compose's container names (--compose-names) and with each container's hostname its service's
    name, which containerlab gives every node."""
    before = compose_config(compose, original)
    back_out = exporting.export_topology(before, parse(before), output_dir=str(original.parent))
    validator = schema_validator()
    validator.validate(back_out.document)
    text = files.dump(back_out, header="round trip")
    again = importing.import_topology(
        files.load(text),
        source="rt.clab.yml",
        topology_dir=str(original.parent),
        output_dir=str(original.parent),
        container_names=not compose_lab,
    )
    # Beside the original (the same relative paths), under a name no other run of the suite uses at the same time.
    written = original.parent / f".round-trip-{os.getpid()}-{tmp_path.name}.yml"
    try:
        written.write_text(files.dump(again, header="round trip"))
        after = compose_config(compose, written)
    finally:
        written.unlink(missing_ok=True)
    assert comparable(parse(after)) == comparable(parse(before))
    for name, spec in before["services"].items():
        got = after["services"][name]
        for key in CARRIED:
            if compose_lab and key == "hostname" and "hostname" not in spec:
                shares = str(spec.get("network_mode", "")).startswith("service:")  # has its owner's hostname
                assert got.get(key) == (None if shares else name)
                continue
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
    round_trip_equal(compose, path, tmp_path, compose_lab=True)


def test_every_export_line_is_one_containerlab_splits_back(compose: list[str]) -> None:
    """containerlab splits exec lines with shlex and no shell: each exported line gives the argv back."""
    config = yaml.safe_load((CASES / "export" / "lab1" / "docker-compose.yml").read_text())
    lines = exported(config, Path("/srv/lab1")).document["topology"]["nodes"]["r1"]["exec"]
    assert lines[-3:] == ["vtysh -b", "sh -c 'echo $$HOSTNAME > /tmp/name'", "sh -c 'echo ready | tee /tmp/ready'"]
    assert all(re.fullmatch(r"[^\n]+", line) for line in lines)


# --------------------------------------------------------------------------- as containerlab deploys


def lab(nodes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "lab1", **top, "topology": {"nodes": nodes}}


def import_doc(doc: dict[str, Any], **options: Any) -> files.Converted:
    return importing.import_topology(doc, source="t.clab.yml", topology_dir="/t", output_dir="/t", **options)


@pytest.mark.parametrize(
    ("top", "names"),
    [
        ({}, ["clab-lab1-r1", "clab-lab1-h1"]),  # core/config.go nodeLongName: prefix absent is "clab"
        ({"prefix": ""}, ["r1", "h1"]),
        ({"prefix": "__lab-name"}, ["lab1-r1", "lab1-h1"]),
        ({"prefix": "acme"}, ["acme-lab1-r1", "acme-lab1-h1"]),
    ],
)
def test_containers_are_named_as_containerlab_names_them(top: dict[str, Any], names: list[str]) -> None:
    doc = lab({"r1": {"kind": "linux", "image": "i"}, "h1": {"kind": "linux", "image": "i"}}, **top)
    services = import_doc(doc).document["services"]
    assert [s["container_name"] for s in services.values()] == names


def test_compose_names_leave_compose_its_own_and_a_lab_without_a_name_says_so() -> None:
    doc = lab({"r1": {"kind": "linux", "image": "i"}})
    assert "container_name" not in import_doc(doc, container_names=False).document["services"]["r1"]
    del doc["name"]
    unnamed = import_doc(doc)
    assert "container_name" not in unnamed.document["services"]["r1"]
    assert unnamed.warnings == ("name: the topology has none (containerlab's schema asks for one); containers keep "
                                "compose's names",)  # fmt: skip


@pytest.mark.parametrize(
    ("names", "name", "prefix", "lost"),
    [
        ({"a": "clab-Lab.One-a", "b": "clab-Lab.One-b"}, "Lab.One", None, 0),
        ({"a": "a", "b": "b"}, "p", "", 0),
        ({"a": "x-a", "b": "x-b"}, "x", "__lab-name", 0),
        ({"a": "acme-x-a", "b": "acme-x-b"}, "acme-x", "__lab-name", 0),  # the same containers' names
        ({"a": "clab-x-a", "b": "other"}, "p", None, 2),
        ({"a": "clab-x-a"}, "p", None, 1),  # b has compose's name: no one name fits both
        ({}, "p", None, 0),
    ],
)
def test_export_names_the_lab_so_that_containerlab_names_the_containers_alike(
    names: dict[str, str], name: str, prefix: str | None, lost: int
) -> None:
    services: dict[str, Any] = {s: {"image": "i", "network_mode": "none"} for s in ("a", "b")}
    for service, container in names.items():
        services[service]["container_name"] = container
    config = {"name": "p", "services": services}
    converted = exported(config, Path("/srv"))
    assert converted.document["name"] == name
    assert converted.document.get("prefix") == prefix
    assert len([w for w in converted.warnings if "container_name" in w]) == lost


def test_the_management_network_has_containerlabs_defaults() -> None:
    """core/config.go: network clab, 172.20.20.0/24 and 3fff:172:20:20::/64 when neither subnet is given; docker
    takes each subnet's first address as its gateway, as containerlab leaves it to."""
    doc = import_doc(lab({"r1": {"kind": "linux", "image": "i", "mgmt-ipv4": "172.20.20.11"}})).document
    assert doc["networks"] == {"clab": {"enable_ipv6": True, "ipam": {"config": [
        {"subnet": "172.20.20.0/24"}, {"subnet": "3fff:172:20:20::/64"}]}}}  # fmt: skip
    assert doc["services"]["r1"]["networks"] == {"clab": {"ipv4_address": "172.20.20.11"}}


@pytest.mark.parametrize(
    ("mgmt", "network"),
    [
        ({"ipv4-subnet": "198.19.1.0/24", "ipv6-subnet": ""}, {"ipam": {"config": [{"subnet": "198.19.1.0/24"}]}}),
        (
            {"ipv6-subnet": "2001:db8:9::/64"},
            {"enable_ipv6": True, "ipam": {"config": [{"subnet": "2001:db8:9::/64"}]}},
        ),
        ({"ipv4_subnet": "198.19.2.0/24"}, {"ipam": {"config": [{"subnet": "198.19.2.0/24"}]}}),  # the old spelling
        ({"ipv4-subnet": "auto"}, {}),  # docker picks the pool
        (
            {"ipv4-subnet": "auto", "ipv6-subnet": "auto"},
            {"enable_ipv6": True, "ipam": {"config": [{"subnet": "fd79:c2d2:2398:c0fa::/64"}]}},
        ),  # the lab's own ULA
        (
            {
                "network": "oob",
                "mtu": 1400,
                "bridge": "br-oob",
                "driver-opts": {"com.docker.network.driver.mtu": "1300"},
            },
            {
                "enable_ipv6": True,
                "ipam": {"config": [{"subnet": "172.20.20.0/24"}, {"subnet": "3fff:172:20:20::/64"}]},
                "driver_opts": {"com.docker.network.driver.mtu": "1300", "com.docker.network.bridge.name": "br-oob"},
            },
        ),
    ],
)
def test_the_management_networks_keys(mgmt: dict[str, Any], network: dict[str, Any]) -> None:
    doc = import_doc(lab({"r1": {"kind": "linux", "image": "i"}}, mgmt=mgmt)).document
    assert doc["networks"] == {mgmt.get("network", "clab"): network}


def test_network_bridge_is_dockers_own_default_bridge() -> None:
    doc = lab({"r1": {"kind": "linux", "image": "i", "mgmt-ipv4": "172.17.0.9", "aliases": ["x"]}},
              mgmt={"network": "bridge", "ipv4-subnet": "198.19.3.0/24"})  # fmt: skip
    converted = import_doc(doc)
    assert "networks" not in converted.document
    assert converted.document["services"]["r1"]["network_mode"] == "bridge"
    assert converted.warnings == (
        "mgmt: ipv4-subnet: docker's default bridge network is used as it is; not carried",
        "r1: mgmt-ipv4/mgmt-ipv6: docker's default bridge takes no fixed address; not carried",
        "r1: aliases: only a management network of the lab's own has them; not carried",
    )
    back = exported({"name": "lab1", "services": converted.document["services"]}, Path("/t"))
    assert back.document["mgmt"] == {"network": "bridge"}
    assert "network-mode" not in back.document["topology"]["nodes"]["r1"]


def test_a_link_subnet_over_the_management_subnet_is_named() -> None:
    doc = lab({"r1": {"kind": "linux", "image": "i", "exec": ["ip addr add 172.20.20.1/30 dev eth1"]},
               "r2": {"kind": "linux", "image": "i"}})  # fmt: skip
    doc["topology"]["links"] = [{"endpoints": ["r1:eth1", "r2:eth1"]}]
    assert import_doc(doc).warnings == (
        "r1: eth1: 172.20.20.1/30 overlaps the management network clab (172.20.20.0/24): docker may give a node "
        "that address",
    )
    assert import_doc(doc, mgmt=False).warnings == ()  # no management network, nothing to overlap


def test_exported_management_addresses_come_back() -> None:
    case = CASES / "export" / "lab-one"
    config = yaml.safe_load((case / "docker-compose.yml").read_text())
    converted = exported(config, Path("/srv/lab-one"))
    back = importing.import_topology(
        files.load(files.dump(converted, header="x")),
        source="t",
        topology_dir="/srv/lab-one",
        output_dir="/srv/lab-one",
    ).document
    assert back["services"]["db"]["networks"] == {
        "labnet": {"ipv4_address": "198.19.5.10", "ipv6_address": "2001:db8:5::10", "aliases": ["database"]}
    }
    assert back["networks"]["labnet"] == {
        "enable_ipv6": True,
        "ipam": {"config": [{"subnet": "198.19.5.0/24", "gateway": "198.19.5.254", "ip_range": "198.19.5.0/25"},
                            {"subnet": "2001:db8:5::/64"}]},
        "driver_opts": {"com.docker.network.driver.mtu": "1400", "com.docker.network.bridge.name": "br-labone",
                        "com.docker.network.bridge.enable_icc": "true"},
    }  # fmt: skip


def test_wait_for_becomes_depends_on_and_the_start_gate() -> None:
    """stages.py: create -> service_started, healthy -> service_healthy, exit -> service_completed_successfully; a
    wait for links (create-links, configure) starts the waiter once the lab is wired; startup-delay is start_delay
    (a node's own 0 is unset, so its group's 3 holds); nodes without a fixed address wait for those with one."""
    services = imported(CASES / "import" / "stages").document["services"]
    assert services["router"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["app"]["depends_on"] == {
        "router": {"condition": "service_started"},
        "init": {"condition": "service_completed_successfully"},
        "db": {"condition": "service_started"},
    }
    assert services["app"]["x-composens"] == {"start_after_wiring": True, "start_delay": 3}
    assert services["client"]["depends_on"]["app"] == {"condition": "service_started"}
    assert services["client"]["x-composens"] == {"start_after_wiring": True, "start_delay": 3}
    assert "depends_on" not in services["db"]
    assert "depends_on" not in services["init"]


def test_a_wait_for_health_without_a_healthcheck_is_named() -> None:
    doc = lab({"a": {"kind": "linux", "image": "i", "network-mode": "none"},
               "b": {"kind": "linux", "image": "i", "network-mode": "none",
                     "stages": {"create": {"wait-for": [{"node": "a", "stage": "healthy"}]}}}})  # fmt: skip
    assert import_doc(doc).warnings == (
        "b: stages: waits for a to be healthy, which has no healthcheck: compose refuses to start it (containerlab "
        "waits for ever)",
    )


def test_default_routes_on_a_management_network_stay_commands_in_their_place() -> None:
    case = CASES / "import" / "default-route"
    services = imported(case).document["services"]
    pc1 = services["pc1"]["x-composens"]
    assert pc1["exec"] == ["ip route del default", "ip route add default via 198.18.1.1", "ip -6 route del default",
                           "ip -6 route add default via 2001:db8:1::1"]  # fmt: skip
    assert pc1["routes"] == ["198.18.0.0/16 via 198.18.1.1"]
    assert services["dhcp"]["x-composens"]["routes"] == ["default via 198.18.2.1 metric 100"]  # docker's is metric 0
    assert services["dhcp"]["x-composens"]["exec"] == ["ip route add default via 198.18.2.1"]
    assert services["isolated"]["x-composens"]["routes"] == ["default via 198.18.3.1"]
    assert "exec" not in services["isolated"]["x-composens"]  # nothing to delete: no management network
    without = imported(case, mgmt=False).document["services"]
    assert without["pc1"]["x-composens"]["routes"] == [
        "default via 198.18.1.1", "default via 2001:db8:1::1", "198.18.0.0/16 via 198.18.1.1"]  # fmt: skip
    assert "exec" not in without["pc1"]["x-composens"]


def test_exec_lines_merge_once_with_containerlabs_magic_variables() -> None:
    doc = lab({"r1": {"kind": "linux", "image": "i", "user": "1000",
                      "exec": ["sleep 1", "sleep 1", "echo __clabNodeName__ __clabLabName__ __clabNodeDir__"]}},
              )  # fmt: skip
    doc["topology"]["defaults"] = {"exec": ["sleep 1"]}
    converted = import_doc(doc)
    assert converted.document["services"]["r1"]["x-composens"]["exec"] == [
        "sleep 1", "echo r1 clab-lab1 /t/clab-lab1/r1"]  # fmt: skip
    assert converted.warnings == ("r1: exec: containerlab runs these as root; composens as the service's user 1000",)


def test_binds_under_the_lab_folder_point_at_the_same_folder(tmp_path: Path) -> None:
    case = CASES / "import" / "binds"
    services = imported(case).document["services"]
    assert services["r1"]["volumes"] == [
        "./lab/clab-frrlab/r1/frr.conf:/etc/frr/frr.conf",
        "./lab/clab-frrlab/r1/daemons:/etc/frr/daemons:ro",
        "./lab/clab-frrlab/shared:/shared:rw",
        "./lab/configs/r1.cfg:/config.cfg",
    ]
    assert services["r1"]["x-composens"]["exec"] == ["echo r1 of clab-frrlab"]
    elsewhere = imported(case, output_dir=tmp_path)  # the compose file elsewhere: the same folders still
    relative = os.path.relpath(case / "lab" / "clab-frrlab" / "r2" / "frr.conf", tmp_path)
    assert elsewhere.document["services"]["r2"]["volumes"][0] == f"{relative}:/etc/frr/frr.conf"


def test_node_keys_of_another_shape() -> None:
    services = imported(CASES / "import" / "node-keys").document["services"]
    web = services["web"]
    assert web["networks"] == {"clab": {"aliases": ["www", "web.lab"]}}  # defaults' aliases are not inherited
    assert web["healthcheck"] == {"test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1/"], "interval": "5s",
                                  "timeout": "2s", "start_period": "10s", "retries": 3}  # fmt: skip
    assert (web["dns"], web["dns_search"], web["dns_opt"]) == (["192.0.2.53"], ["lab.example"], ["ndots:2"])
    assert (web["pull_policy"], services["puller"]["pull_policy"], services["odd"]["pull_policy"]) == (
        "missing", "always", "missing")  # fmt: skip
    assert (web["privileged"], services["puller"]["privileged"]) == (False, True)  # "no", yes: YAML 1.1 booleans
    assert (web["mem_limit"], web["shm_size"]) == (512_000_000, 64 * 2**20)  # humanize: MB decimal, mib binary
    assert web["cgroup_parent"] == "lab.slice"
    assert web["volumes"][1:] == ["./lab/web/logs:/var/log/httpd:rw", "./lab/web/cache:/cache:rw,z"]
    sidecar = services["sidecar"]
    assert (sidecar["network_mode"], sidecar["pid"]) == ("service:web", "service:web")
    assert "hostname" not in sidecar
    assert "dns" not in sidecar
    assert services["outside"]["network_mode"] == "container:some-running-container"  # not a node: kept as such


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512m", 512 * 10**6),
        ("512MB", 512 * 10**6),
        ("512mib", 512 * 2**20),
        ("1GiB", 2**30),
        ("1.5 GB", 15 * 10**8),
        ("268435456b", 268435456),
        ("1,000", 1000),
        (2048, 2048),
    ],
)
def test_sizes_are_read_as_containerlab_reads_them(text: str | int, size: int) -> None:
    doc = lab({"a": {"kind": "linux", "image": "i", "memory": text}})
    assert import_doc(doc).document["services"]["a"]["mem_limit"] == size


def test_export_keeps_containerlabs_exec_order_and_falls_back_when_the_file_changed(compose: list[str]) -> None:
    case = CASES / "import" / "exec-order"
    config = compose_config(compose, case / "expected.yml")
    nodes = exported(config, case).document["topology"]["nodes"]
    assert nodes["r1"]["exec"] == [
        "ip address add 198.18.8.1/24 dev eth1",  # a link's ipv4, which the lines do not hold
        "apk add --no-cache iproute2",
        "ip addr add 198.18.7.1/24 dev eth1",
        "ip route add 198.18.70.0/24 via 198.18.7.2",
        "ip link set eth1 up",
    ]
    config["services"]["r1"]["x-composens"]["routes"] = ["198.18.71.0/24 via 198.18.7.2"]  # edited since
    changed = exported(config, case)
    assert changed.document["topology"]["nodes"]["r1"]["exec"][-2:] == [
        "ip route add 198.18.71.0/24 via 198.18.7.2", "apk add --no-cache iproute2"]  # fmt: skip
    assert "r1: x-containerlab.exec: no longer says what x-composens declares; the exec lines are written in " \
           "composens' order (addresses, routes, commands)" in changed.warnings  # fmt: skip


def test_healthcheck_durations_and_bind_modes_on_export() -> None:
    config = yaml.safe_load((CASES / "export" / "lab-one" / "docker-compose.yml").read_text())
    nodes = exported(config, Path("/srv/lab-one")).document["topology"]["nodes"]
    assert nodes["db"]["healthcheck"] == {"test": ["CMD", "true"], "interval": 90, "timeout": 2, "retries": 3}
    assert nodes["app"]["binds"] == ["data:/data:rw", "ctx:/ctx:rw,z", "/elsewhere/ro:/ro:ro"]


def test_unset_variables_stay_as_written_and_the_round_trip_bakes_no_blank(compose: list[str]) -> None:
    case = CASES / "import" / "variables"
    env = {k: v for k, v in os.environ.items() if "UNSET_IN_TESTS" not in k and k != "IMAGE"}
    done = subprocess.run([*compose, "-f", str(case / "expected.yml"), "config", "--format", "yaml"],
                          capture_output=True, text=True, env=env, check=True)  # fmt: skip
    config = yaml.safe_load(done.stdout)
    environment = config["services"]["a"]["environment"]
    # compose's config writes a literal '$' as '$$'
    assert environment == {
        "GREETING": "hello $$USER_NAME_UNSET_IN_TESTS",
        "BRACED": "$$BRACED_UNSET_IN_TESTS",  # envsubst drops the braces of an unset ${NAME}
        "DEFAULTED": "router",
        "DASHED": "x",
        "PLUS": "",
        "PRICE": "$$5 and $$1",
    }
    assert "not set" not in done.stderr  # compose blanks nothing, so says nothing
    back = exported(config, case).document["topology"]["nodes"]["a"]["env"]
    assert back["GREETING"] == "hello $$USER_NAME_UNSET_IN_TESTS"  # containerlab's literal '$': no blank baked in
    given = subprocess.run([*compose, "-f", str(case / "expected.yml"), "config", "--format", "yaml"],
                           capture_output=True, text=True, check=True,
                           env={**env, "USER_NAME_UNSET_IN_TESTS": "ada", "BRACED_UNSET_IN_TESTS": ""})  # fmt: skip
    environment = yaml.safe_load(given.stdout)["services"]["a"]["environment"]
    assert (environment["GREETING"], environment["BRACED"]) == ("hello ada", "$$BRACED_UNSET_IN_TESTS")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "composens", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)  # fmt: skip


def test_a_file_name_cannot_inject_yaml_and_every_warning_is_one_line(tmp_path: Path) -> None:
    name = "lab\ninclude: [evil.yml]\n\u2028x: 1.clab.yml"
    (tmp_path / name).write_text('name: l\ntopology:\n  nodes:\n    a: {kind: linux, image: i, "bad\\nkey": 1}\n')
    done = cli("import", name, "-o", "out.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "out.yml").read_text()
    assert text.splitlines()[0] == r"# imported by composens from lab\ninclude: [evil.yml]\n\u2028x: 1.clab.yml"
    assert set(yaml.safe_load(text)) == {"name", "services", "networks"}
    assert done.stderr.splitlines() == [r"composens: warning: a: bad\nkey: has no compose equivalent; not carried"]


def test_a_wait_for_links_from_a_shared_namespace_waits_for_the_start_and_says_so() -> None:
    doc = lab({"a": {"kind": "linux", "image": "i", "network-mode": "container:b",
                     "stages": {"create": {"wait-for": [{"node": "c", "stage": "configure"}]}}},
               "b": {"kind": "linux", "image": "i"}, "c": {"kind": "linux", "image": "i"}})  # fmt: skip
    converted = import_doc(doc)
    a = converted.document["services"]["a"]
    assert a["depends_on"] == {"c": {"condition": "service_started"}}
    assert "x-composens" not in a  # no start gate: it needs the container's own namespaces
    assert converted.warnings == (
        "a: stages: waits for another node's links, which composens waits for only in a container with namespaces "
        "of its own; it waits for that node's start",
    )


def test_an_error_naming_what_the_file_holds_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "t.clab.yml").write_text('name: l\ntopology:\n  nodes:\n    "a\\nb": {kind: linux, image: i}\n'
                                         '    "c\\nd": {kind: srl}\n')  # fmt: skip
    done = cli("import", "t.clab.yml", cwd=tmp_path)
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        r"composens: error: t.clab.yml: topology.nodes.c\nd: kind srl needs containerlab's own start-up (composens "
        "runs linux nodes, and bridge, ovs-bridge and host ones as LANs and host ends)"
    ]
    (tmp_path / "t.clab.yml").write_text('name: l\ntopology:\n  nodes:\n    "a\\nb": {kind: linux, image: i}\n')
    done = cli("import", "t.clab.yml", cwd=tmp_path)
    assert done.stderr.splitlines() == [
        r"composens: error: t.clab.yml: topology.nodes.a\nb: not a compose service name (letters, digits, '._-')"
    ]


def test_nodes_without_a_fixed_address_wait_only_where_docker_hands_out_addresses() -> None:
    doc = lab({"a": {"kind": "linux", "image": "i", "mgmt-ipv4": "172.20.20.3"}, "b": {"kind": "linux", "image": "i"}})
    assert import_doc(doc).document["services"]["b"]["depends_on"] == {"a": {"condition": "service_started"}}
    assert "depends_on" not in import_doc(doc, mgmt=False).document["services"]["b"]  # --no-mgmt: no addresses
