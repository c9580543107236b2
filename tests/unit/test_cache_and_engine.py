"""The config cache's key and store, and the engine API's HTTP reader: pure logic on files and bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from composens import engine
from composens.compose import Compose, ComposeOptions
from composens.configcache import KEEP, ConfigCache, cache_key
from composens.errors import EngineUnavailable

COMPOSE = "name: demo\nservices:\n  a: {image: busybox, network_mode: none}\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder inside a folder tree, and a docker config folder holding a compose plugin."""
    plugins = tmp_path / "docker" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").write_text("#!/bin/sh\n")
    folder = tmp_path / "top" / "lab"
    folder.mkdir(parents=True)
    (folder / "compose.yaml").write_text(COMPOSE)
    return folder


def env(project: Path, **extra: str) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(project.parents[1] / "docker"), "PATH": "/usr/bin", **extra}


def key(project: Path, options: ComposeOptions | None = None, cwd: Path | None = None, **extra: str) -> str | None:
    return cache_key(options or ComposeOptions(), cwd or project, env(project, **extra))


def test_key_is_stable_and_ignores_the_shells_last_command(project: Path) -> None:
    first = key(project)
    assert first is not None
    assert key(project) == first
    assert key(project, _="/usr/bin/time") == first


def test_key_follows_content_even_when_size_and_mtime_stay(project: Path) -> None:
    path = project / "compose.yaml"
    before = key(project)
    stat = path.stat()
    path.write_text(COMPOSE.replace("busybox", "busyboy"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert key(project) != before


@pytest.mark.parametrize(
    "change",
    [
        lambda p: (p / "compose.override.yml").write_text("services: {a: {x-composens: {netns: z}}}\n"),
        lambda p: (p / ".env").write_text("TAG=1\n"),
        lambda p: (p / "docker-compose.yml").write_text(COMPOSE),
        lambda p: (p.parents[1] / "docker" / "cli-plugins" / "docker-compose").write_text("#!/bin/sh\n# v2\n"),
    ],
    ids=["override file appears", ".env appears", "second compose file appears", "compose plugin changes"],
)
def test_key_changes_with_each_input(project: Path, change: Any) -> None:
    before = key(project)
    change(project)
    assert key(project) != before


def test_key_changes_with_environment_options_and_folder(project: Path) -> None:
    base = key(project)
    assert key(project, TAG="2") != base
    assert key(project, ComposeOptions(profiles=("x",))) != base
    assert key(project, ComposeOptions(project_name="other")) != base
    sub = project / "sub"
    sub.mkdir()
    assert key(project, cwd=sub) not in (None, base)  # compose walks up to the same file; the folder differs


def test_files_found_by_walking_up_are_keyed(project: Path) -> None:
    sub = project / "deeper"
    sub.mkdir()
    before = key(project, cwd=sub)
    (project / "compose.yaml").write_text(COMPOSE + "  b: {image: busybox}\n")
    assert key(project, cwd=sub) != before


@pytest.mark.parametrize(
    "setup",
    [
        lambda p: (p / "compose.yaml").write_text(COMPOSE + "include:\n  - other.yaml\n"),
        lambda p: (p / "compose.yaml").write_text(COMPOSE + "  b:\n    extends: {file: base.yaml, service: x}\n"),
        lambda p: (p / ".env").write_text("COMPOSE_FILE=a.yaml:b.yaml\n"),
        lambda p: (p / "compose.yaml").unlink(),
    ],
    ids=["include", "extends", ".env chooses the files", "no compose file"],
)
def test_projects_compose_reads_beyond_the_key_are_not_cached(project: Path, setup: Any) -> None:
    setup(project)
    assert key(project) is None


def test_named_files_and_env_files_are_keyed(project: Path) -> None:
    (project / "lab.yml").write_text(COMPOSE)
    (project / "lab.env").write_text("A=1\n")
    options = ComposeOptions(files=("lab.yml",), env_files=("lab.env",))
    before = key(project, options)
    assert before is not None
    assert before != key(project)
    (project / "lab.env").write_text("A=2\n")
    assert key(project, options) != before
    assert key(project, ComposeOptions(files=("missing.yml",))) is None
    assert key(project, ComposeOptions(files=("-",))) is None
    assert key(project, COMPOSE_FILE="lab.yml") == key(project, COMPOSE_FILE="lab.yml") is not None


def test_store_round_trips_refuses_what_json_would_change_and_keeps_the_newest(tmp_path: Path) -> None:
    cache = ConfigCache(tmp_path / "cache")
    assert cache.get("k") is None
    cache.put("k", {"name": "demo\nline", "services": {"a": {"scale": 2}}})
    assert cache.get("k") == {"name": "demo\nline", "services": {"a": {"scale": 2}}}
    cache.put("numbers", {"services": {1: {}}})  # JSON would turn the key into "1"
    assert cache.get("numbers") is None
    for i in range(KEEP + 5):
        cache.put(f"n{i}", {"i": i})
    assert len(list((tmp_path / "cache").glob("*.json"))) == KEEP
    assert cache.get(f"n{KEEP + 4}") == {"i": KEEP + 4}


def test_nothing_of_the_environment_is_written_down(project: Path, tmp_path: Path) -> None:
    found = key(project, API_TOKEN="s3cr3t-value")
    assert found is not None
    ConfigCache(tmp_path / "cache").put(found, {"name": "demo"})
    for path in (tmp_path / "cache").iterdir():
        assert b"s3cr3t" not in path.read_bytes()
        assert "s3cr3t" not in path.name


class CountingCompose(Compose):
    def __init__(self, options: ComposeOptions, cache: ConfigCache) -> None:
        super().__init__(options, cache=cache)
        self.asked = 0

    def config(self) -> dict[str, Any]:
        self.asked += 1
        return {"name": "demo", "services": {"a": {"image": "busybox", "environment": {"A": "1"}}}}


def test_compose_asks_compose_once_while_the_files_stay(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env(project).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(project)
    compose = CountingCompose(ComposeOptions(), ConfigCache(tmp_path / "cache"))
    assert compose.essentials() == {"name": "demo", "services": {"a": {}}}
    assert compose.essentials() == {"name": "demo", "services": {"a": {}}}
    assert compose.asked == 1
    (project / "compose.yaml").write_text(COMPOSE + "# edited\n")
    compose.essentials()
    assert compose.asked == 2


# ---------------------------------------------------------------- engine API


def response(head: str, body: bytes) -> io.BufferedReader:
    return io.BufferedReader(io.BytesIO(head.replace("\n", "\r\n").encode() + b"\r\n" + body))  # type: ignore[arg-type]


def test_reads_a_response_with_content_length() -> None:
    reader = response("HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: 7\n", b'{"a":1}rest')
    assert engine._read_response(reader) == (200, b'{"a":1}', True)


def test_reads_a_chunked_response_and_leaves_the_connection_open() -> None:
    body = b"4\r\n[1, \r\n3\r\n2]\n\r\n0\r\n\r\nnext"
    reader = response("HTTP/1.1 404 Not Found\nTransfer-Encoding: chunked\n", body)
    assert engine._read_response(reader) == (404, b"[1, 2]\n", True)
    assert reader.read() == b"next"


def test_reads_to_the_end_when_the_engine_closes_the_connection() -> None:
    reader = response("HTTP/1.0 200 OK\nConnection: close\n", b"[]")
    assert engine._read_response(reader) == (200, b"[]", False)


@pytest.mark.parametrize("raw", [b"", b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"])
def test_anything_else_is_an_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match=r"not an HTTP response|closed the connection"):
        engine._read_response(io.BufferedReader(io.BytesIO(raw)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("environ", "config", "expected"),
    [
        ({}, None, "/var/run/docker.sock"),
        ({"DOCKER_HOST": "unix:///run/other.sock"}, None, "/run/other.sock"),
        ({"DOCKER_HOST": "tcp://127.0.0.1:2375"}, None, None),
        ({"DOCKER_CONTEXT": "remote"}, None, None),
        ({"DOCKER_CONTEXT": "default"}, None, "/var/run/docker.sock"),
        ({}, '{"currentContext": "remote"}', None),
        ({}, '{"currentContext": "default"}', "/var/run/docker.sock"),
        ({}, "not json", "/var/run/docker.sock"),
    ],
)
def test_the_socket_is_the_one_the_cli_would_use(
    tmp_path: Path, environ: dict[str, str], config: str | None, expected: str | None
) -> None:
    if config is not None:
        (tmp_path / "config.json").write_text(config)
    assert engine.socket_path({"DOCKER_CONFIG": str(tmp_path), **environ}) == expected


def test_an_unreachable_socket_sends_the_caller_to_the_cli(tmp_path: Path) -> None:
    api = engine.EngineAPI(str(tmp_path / "no.sock"))
    with pytest.raises(EngineUnavailable):
        api.container_ids("com.docker.compose.project=x")
