"""One compose file, two hosts: cross-host links and LANs over kernel VXLAN, on a simulated second host."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.conftest import run
from tests.integration.twohost import HOST1_UNDERLAY, SecondHost, second_host


@pytest.fixture(scope="module")
def host2() -> Iterator[SecondHost]:
    with second_host() as host:
        yield host


def test_second_host_is_a_host_of_its_own(host2: SecondHost) -> None:
    # Its own engine (not this machine's), its own /run, and the underlay between the two.
    assert host2.run("docker", "info", "-f", "{{.DockerRootDir}}").stdout.strip() == "/var/lib/docker"
    assert host2.run("docker", "ps", "-aq").stdout.strip() == ""
    assert host2.run("readlink", "/proc/self/ns/net").stdout != os.readlink("/proc/self/ns/net")
    assert host2.run("ls", "/run/netns").stdout == ""
    assert host2.run("docker", "image", "inspect", "busybox:1.36", check=False).returncode == 0
    host2.run("busybox", "ping", "-c", "1", "-W", "2", HOST1_UNDERLAY)
    run("ip", "link", "show", "dev", host2.host_if)
    assert host2.started_in < 20  # measured: 0.5 s here
