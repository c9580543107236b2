"""Routing daemons on the real engine: FRR's OSPF over composens' links and LANs.

The image is built from Debian's packages by scripts/frr-image.sh (three to four minutes here, nothing pulled
from a registry). These tests run when COMPOSENS_FRR=1; elsewhere, CI included, they are skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import REPO, Project, run
from tests.integration.test_hardware import first_ping

pytestmark = pytest.mark.integration

FRR_IMAGE = os.environ.get("COMPOSENS_FRR_IMAGE", "composens-frr:bookworm")
CLAB_LAB = REPO / "tests" / "clab" / "import" / "frr-ospf" / "lab"


@pytest.fixture(scope="session")
def frr_image() -> str:
    if not os.environ.get("COMPOSENS_FRR"):
        pytest.skip("opt-in: COMPOSENS_FRR=1 builds an FRR image from Debian's packages (scripts/frr-image.sh)")
    run("bash", str(REPO / "scripts" / "frr-image.sh"), FRR_IMAGE, timeout=900)
    return FRR_IMAGE


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(1)
    raise AssertionError(f"{what} not within {timeout:.0f} s")


def vtysh(project: Project, service: str, command: str) -> str:
    return run("docker", "exec", project.container(service), "vtysh", "-c", command, check=False).stdout


OSPF_WIRING = """\
  lans:
    core: {{endpoints: ["r1:eth1", "r2:eth1", "r3:eth1"]}}
  links:
    - endpoints: ["r1:eth2", "h1:eth1"]
    - endpoints: ["r3:eth2", "h3:eth1"]
"""
# Three routers on a LAN, a host behind r1 and one behind r3. {r1} ... {h3}: what each service's x-composens
# says besides its addresses (start_after_wiring, or where it is placed).
OSPF_SERVICES = """\
x-router: &router
  image: {image}
  network_mode: none
  cap_add: [NET_ADMIN, NET_RAW, SYS_ADMIN]  # zebra's and ospfd's
  sysctls: {{net.ipv4.ip_forward: "1"}}
services:
  r1:
    <<: *router
    volumes: ["{folder}/r1.conf:/etc/frr/frr.conf"]
    x-composens: {{{r1}addresses: {{eth1: [198.18.20.1/24], eth2: [198.18.21.1/24]}}}}
  r2:
    <<: *router
    volumes: ["{folder}/r2.conf:/etc/frr/frr.conf"]
    x-composens: {{{r2}addresses: {{eth1: [198.18.20.2/24]}}}}
  r3:
    <<: *router
    volumes: ["{folder}/r3.conf:/etc/frr/frr.conf"]
    x-composens: {{{r3}addresses: {{eth1: [198.18.20.3/24], eth2: [198.18.23.1/24]}}}}
  h1:
    image: IMAGE
    network_mode: none
    x-composens: {{{h1}addresses: {{eth1: [198.18.21.2/24]}}, routes: [198.18.0.0/15 via 198.18.21.1]}}
  h3:
    image: IMAGE
    network_mode: none
    x-composens: {{{h3}addresses: {{eth1: [198.18.23.2/24]}}, routes: [198.18.0.0/15 via 198.18.23.1]}}
"""
ROUTER_INTERFACES = (("r1", ["eth1", "eth2"]), ("r2", ["eth1"]), ("r3", ["eth1", "eth2"]))


def ospf_lab(image: str, folder: Path | str, **extra: str) -> str:
    """The lab's wiring and services; `extra` per service (missing: nothing besides its addresses)."""
    services = {name: extra.get(name, "") for name in ("r1", "r2", "r3", "h1", "h3")}
    return OSPF_WIRING.format() + OSPF_SERVICES.format(image=image, folder=folder, **services)


def write_frr_confs(folder: Path) -> None:
    for router, interfaces in ROUTER_INTERFACES:
        (folder / f"{router}.conf").write_text(frr_conf(router, interfaces))


def frr_conf(router: str, interfaces: list[str]) -> str:
    # `interface` stanzas before `router ospf`: FRR arms an interface's wait timer with the dead interval it
    # knows when `network` brings the interface in.
    stanzas = "".join(f"interface {i}\n ip ospf hello-interval 1\n ip ospf dead-interval 4\n" for i in interfaces)
    return f"frr defaults traditional\nhostname {router}\n{stanzas}router ospf\n network 198.18.0.0/15 area 0\n"


def test_ospf_over_a_lan_of_routers_that_start_once_wired(project: Project, frr_image: str) -> None:
    wait = "start_after_wiring: true, "
    head = f"x-composens:\n  netns_prefix: {project.name}-\n  hub: {project.name}-hub\n"
    project.write(head + ospf_lab(frr_image, ".", r1=wait, r2=wait, r3=wait))
    write_frr_confs(project.folder)
    project.cli("up", "-d")
    wait_for(lambda: vtysh(project, "r2", "show ip ospf neighbor").count("Full") == 2, 60, "two Full adjacencies")
    wait_for(lambda: first_ping(project, "h1", "198.18.23.2"), 60, "h1 reaching h3 through r1 and r3")
    # FRR saw its interfaces, addresses in place, from the start: no wait for them in its log.
    assert "198.18.20.2/24" in vtysh(project, "r2", "show interface eth1")


def test_an_imported_containerlab_frr_lab_routes_end_to_end_and_reruns_exec_after_a_restart(
    project: Project, frr_image: str, tmp_path: Path
) -> None:
    lab = tmp_path / "clab"
    shutil.copytree(CLAB_LAB, lab)
    topology = (lab / "frr.clab.yml").read_text().replace("quay.io/frrouting/frr:10.2.1", frr_image)
    topology = topology.replace("busybox:1.36", os.environ.get("COMPOSENS_DEMO_IMAGE", "busybox:1.36"))
    topology = topology.replace("cmd: sleep infinity", "cmd: sleep 86400")
    topology = topology.replace(
        "        - ip route add 198.18.0.0/15 via 198.19.1.1\n",
        "        - ip route add 198.18.0.0/15 via 198.19.1.1\n        - sh -c 'echo ran >> /tmp/exec-runs'\n",
    )
    (lab / "frr.clab.yml").write_text(topology)
    # --compose-names: the test's own project and container names, so that runs never meet (test_clab.py runs a lab
    # under containerlab's names).
    imported = run(
        sys.executable, "-m", "composens", "import", str(lab / "frr.clab.yml"), "--no-mgmt", "--compose-names",
        "-o", str(project.folder / "docker-compose.yml"), cwd=project.folder,
    )  # fmt: skip
    assert imported.returncode == 0
    compose_file = project.folder / "docker-compose.yml"
    config = yaml.safe_load(compose_file.read_text())
    del config["name"]  # the test's own project name
    config["x-composens"]["netns_prefix"] = f"{project.name}-"
    for service in config["services"].values():
        # containerlab runs its nodes privileged; this machine grants no container every capability.
        service.pop("privileged", None)
        service["cap_add"] = ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]
    compose_file.write_text(yaml.safe_dump(config, sort_keys=False))
    project.cli("up", "-d")
    wait_for(lambda: first_ping(project, "PC1", "198.19.3.2"), 90, "PC1 reaching PC3 over OSPF")
    assert run("docker", "exec", project.container("PC1"), "cat", "/tmp/exec-runs").stdout == "ran\n"
    run("docker", "restart", "-t", "0", project.container("PC1"))
    project.cli("netns", "link")
    assert run("docker", "exec", project.container("PC1"), "cat", "/tmp/exec-runs").stdout == "ran\nran\n"
    wait_for(lambda: first_ping(project, "PC1", "198.19.3.2"), 60, "PC1 reaching PC3 again")


def test_ospf_across_two_hosts_on_a_lan_that_spans_them(project: Project, frr_image: str, tmp_path: Path) -> None:
    from tests.integration.test_multihost import TwoHosts
    from tests.integration.twohost import second_host

    # Both hosts read the configs from one folder that each can see (host 2's mount namespace shares /tmp).
    configs = tmp_path / "frr"
    configs.mkdir()
    write_frr_confs(configs)
    with second_host((os.environ.get("COMPOSENS_DEMO_IMAGE", "busybox:1.36"), frr_image)) as host2:
        lab = TwoHosts(project, host2)
        try:
            on1, on2 = "host: h1, ", "host: h2, "
            lab.write(ospf_lab(frr_image, configs, r1=on1, r2=on1, r3=on2, h1=on1, h3=on2))
            lab.on1("up", "-d")
            lab.on2("up", "-d")
            wait_for(
                lambda: vtysh(project, "r2", "show ip ospf neighbor").count("Full") == 2, 90, "two Full on host 1's r2"
            )
            wait_for(lambda: first_ping(project, "h1", "198.18.23.2"), 60, "h1 (host 1) reaching h3 (host 2)")
            route = run("ip", "netns", "exec", f"{project.name}-r1", "ip", "route", "show", "198.18.23.0/24").stdout
            assert "via 198.18.20.3 dev eth1" in route, route  # learnt over the LAN, through host 2's r3
            assert "proto ospf" in route, route
        finally:
            lab.cleanup_host2()
