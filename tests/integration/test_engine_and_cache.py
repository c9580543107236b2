"""The engine API and the config cache against the real engine and compose (issue: performance)."""

from __future__ import annotations

import pytest

from composens.model.containers import Container
from composens.model.errors import EngineError
from composens.system.docker.compose import Compose
from composens.system.docker.configcache import CACHE_DIR
from composens.system.docker.options import ComposeOptions
from tests.integration.conftest import Project, run
from tests.integration.test_wiring import seed_lab

pytestmark = pytest.mark.integration

MANY = """
x-composens: {netns_prefix: PREFIX-}
services:
  one: {image: IMAGE, network_mode: none}
  two: {image: IMAGE, network_mode: none}
  many: {image: IMAGE, network_mode: none, scale: 14}
"""


def test_engine_api_and_docker_cli_see_the_same_containers(project: Project) -> None:
    project.write(MANY.replace("PREFIX", project.name))
    project.cli("up", "-d")
    run("docker", "stop", "-t", "0", project.container("two"))
    options = ComposeOptions(project_name=project.name)
    api, cli = Compose(options), Compose(options, use_api=False)

    by_api = sorted(api.containers(project.name), key=lambda c: c.name)
    by_cli = sorted(cli.containers(project.name), key=lambda c: c.name)
    assert by_api == by_cli  # ids, names, numbers, running, pids, sandboxes, network modes
    assert len(by_api) == 16
    assert [c.running for c in by_api if c.service == "two"] == [False]
    assert all(c.sandbox.startswith("/var/run/docker/netns/") for c in by_api if c.running)

    gone = "0" * 64
    ids = [c.id for c in by_api] + [gone]
    assert api.inspect(ids, missing_ok=True) == cli.inspect(ids, missing_ok=True) == by_api_order(ids, by_api)
    for adapter in (api, cli):
        with pytest.raises(EngineError, match="No such container"):
            adapter.inspect(ids)


def by_api_order(ids: list[str], containers: list[Container]) -> list[Container]:
    by_id = {c.id: c for c in containers}
    return [by_id[i] for i in ids if i in by_id]


def test_the_cached_config_follows_every_edit(project: Project) -> None:
    project.write(seed_lab(project))
    before = set(CACHE_DIR.glob("*.json")) if CACHE_DIR.exists() else set()
    first = project.cli("plan").stdout
    assert "addr add 10.0.0.1/24 dev node1_router1" in first
    assert set(CACHE_DIR.glob("*.json")) - before, "the first read is cached"
    assert project.cli("plan").stdout == first

    text = (project.folder / "docker-compose.yml").read_text()
    project.write(text.replace("10.0.0.1/24", "10.0.0.9/24"))  # same size, maybe the same mtime
    edited = project.cli("plan").stdout
    assert "addr add 10.0.0.9/24 dev node1_router1" in edited
    assert "10.0.0.1/24" not in edited

    (project.folder / "docker-compose.override.yml").write_text(
        "services:\n  node1:\n    x-composens: {netns: renamed}\n"
    )
    assert f"netns {project.name}-renamed" in project.cli("plan").stdout
