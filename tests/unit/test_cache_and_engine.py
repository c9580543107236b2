"""The config cache's key and store, and the engine API's HTTP reader: pure logic on files and bytes."""

from __future__ import annotations

import io
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from composens.model.containers import Container
from composens.model.errors import EngineRefused, EngineUnavailable
from composens.system.docker import engine
from composens.system.docker.compose import Compose
from composens.system.docker.configcache import KEEP, ConfigCache, cache_key
from composens.system.docker.options import ComposeOptions

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


# ------------------------------------------- engine API: malformed or over-large answers (issue 10, item 9)

Answering = Callable[..., engine.EngineAPI]


@pytest.fixture
def answering() -> Iterator[Answering]:
    """Make an EngineAPI whose connection already holds the engine's answers (raw bytes, in order)."""
    opened: list[tuple[engine.EngineAPI, socket.socket]] = []

    def make(*answers: bytes, timeout: float = 5.0, hang_up: bool = True) -> engine.EngineAPI:
        ours, theirs = socket.socketpair()
        ours.settimeout(timeout)
        theirs.sendall(b"".join(answers))
        if hang_up:
            theirs.shutdown(socket.SHUT_WR)  # as an engine that closed the connection after answering
        api = engine.EngineAPI("unused")
        api._sock, api._reader = ours, ours.makefile("rb")
        opened.append((api, theirs))
        return api

    yield make
    for api, theirs in opened:
        api.close()
        theirs.close()


def ok(document: Any) -> bytes:
    body = json.dumps(document).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


def read(raw: bytes) -> tuple[int, bytes, bool]:
    return engine._read_response(io.BufferedReader(io.BytesIO(raw)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "head",
    [
        "HTTP/1.1 200 OK\nContent-Length: 99999999999999999\n",
        "HTTP/1.1 200 OK\nContent-Length: " + "9" * 5000 + "\n",
        "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nffffffffffffff",
        "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n" + "f" * 5000,
    ],
)
def test_a_size_beyond_the_bound_is_refused_before_reading(head: str) -> None:
    with pytest.raises(ValueError, match="over the 64 MiB bound"):
        engine._read_response(response(head, b"[]"))


def test_a_huge_content_length_sends_the_caller_to_the_cli(answering: Answering) -> None:
    api = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999\r\n\r\n[]")
    with pytest.raises(EngineUnavailable, match="Content-Length"):
        api.container_ids("com.docker.compose.project=x")


def test_bodies_are_held_to_the_bound_however_they_come(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "MAX_BODY", 10)
    assert read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789") == (200, b"0123456789", True)
    with pytest.raises(ValueError, match="Content-Length b'11' is over"):
        read(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert read(chunked + b"5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n") == (200, b"0123456789", True)
    with pytest.raises(ValueError, match="a body over 10 bytes"):
        read(chunked + b"5\r\n01234\r\n6\r\n56789a\r\n0\r\n\r\n")
    assert read(b"HTTP/1.0 200 OK\r\n\r\n0123456789") == (200, b"0123456789", False)
    with pytest.raises(ValueError, match="a body over 10 bytes"):
        read(b"HTTP/1.0 200 OK\r\n\r\n0123456789a")


def test_a_negative_content_length_is_refused_at_once(answering: Answering) -> None:
    # The engine keeps the connection open: reading "to the end" would wait for the timeout.
    api = answering(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n[]", timeout=2.0, hang_up=False)
    with pytest.raises(EngineUnavailable, match=r"Content-Length b'-1' is not a size"):
        api.container_ids("com.docker.compose.project=x")


@pytest.mark.parametrize("length", [b"-1", b"+2", b"2_0", b"0x2", b"", b"2, 2", b"\xd9\xa2"])
def test_a_content_length_that_is_not_digits_is_refused(length: bytes) -> None:
    with pytest.raises(ValueError, match=r"Content-Length .* is not a size"):
        read(b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\n[]")


@pytest.mark.parametrize("size", [b"-1", b"-0", b"+2", b"0x2", b"2_0", b"", b"zz"])
def test_a_chunk_size_that_is_not_hex_digits_is_refused(size: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n" + size + b"\r\n[]\r\n0\r\n\r\n"
    with pytest.raises(ValueError, match=r"chunk size .* is not a size"):
        read(raw)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]]\r\n0\r\n\r\n", "longer than its size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n", "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n[]", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n[]]", "two different"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n[]", "not a header line"),
        (b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n[]", "not an HTTP response"),
    ],
)
def test_a_malformed_frame_is_refused(raw: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        read(raw)


def test_lines_and_header_counts_are_bounded() -> None:
    long = "x" * engine.MAX_LINE
    with pytest.raises(ValueError, match="status line longer than 65536 bytes"):
        engine._read_response(response(f"HTTP/1.1 200 {long}\nContent-Length: 2\n", b"[]"))
    with pytest.raises(ValueError, match="header line longer than 65536 bytes"):
        engine._read_response(response(f"HTTP/1.1 200 OK\nX-Long: {long}\nContent-Length: 2\n", b"[]"))
    with pytest.raises(ValueError, match="status line longer than 65536 bytes"):
        read(b"H" * 10 * engine.MAX_LINE)  # no line end at all
    many = "".join(f"X-{i}: {i}\n" for i in range(engine.MAX_HEADERS - 1))
    assert engine._read_response(response(f"HTTP/1.1 200 OK\n{many}Content-Length: 2\n", b"[]")) == (200, b"[]", True)
    with pytest.raises(ValueError, match="more than 100 header lines"):
        engine._read_response(response(f"HTTP/1.1 200 OK\n{many}X-Last: 1\nContent-Length: 2\n", b"[]"))


def test_trailers_are_bounded_too() -> None:
    trailers = "".join(f"X-{i}: {i}\r\n" for i in range(engine.MAX_HEADERS + 1)).encode()
    with pytest.raises(ValueError, match="more than 100 header lines"):
        read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + trailers + b"\r\n")


@pytest.mark.parametrize(
    "answer",
    [
        {"Id": "a"},
        [1, 2],
        ["a"],
        [{"Names": ["/a"]}],
        [{"Id": 7}],
        [{"Id": None}],
        "a",
    ],
)
def test_a_container_list_of_another_shape_sends_the_caller_to_the_cli(answering: Answering, answer: Any) -> None:
    api = answering(ok(answer))
    with pytest.raises(EngineUnavailable, match="not a list of containers"):
        api.container_ids("com.docker.compose.project=x")


def test_a_container_list_that_is_not_found_sends_the_caller_to_the_cli(answering: Answering) -> None:
    api = answering(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
    with pytest.raises(EngineUnavailable, match="404"):
        api.container_ids("com.docker.compose.project=x")


def test_a_null_answer_is_neither_an_empty_list_nor_a_missing_container(answering: Answering) -> None:
    api = answering(ok(None))
    with pytest.raises(EngineUnavailable, match="null"):
        api.container_ids("com.docker.compose.project=x")
    api = answering(ok(None))
    with pytest.raises(EngineUnavailable, match="null"):
        api.inspect(["a"])


def test_deeply_nested_json_sends_the_caller_to_the_cli(answering: Answering) -> None:
    body = b"[" * 3000 + b"]" * 3000  # the parser recurses once a level, 1000 deep at most
    api = answering(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    with pytest.raises(EngineUnavailable, match="not JSON"):
        api.container_ids("com.docker.compose.project=x")


MALFORMED_INSPECTS = [
    [{"Id": "a"}],
    "a",
    {"Name": "/a"},
    {"Id": 7},
    {"Id": None},
    {"Id": "a", "Name": None},
    {"Id": "a", "Name": 5},
    {"Id": "a", "Config": None},
    {"Id": "a", "Config": []},
    {"Id": "a", "Config": {"Labels": ["com.docker.compose.project=x"]}},
    {"Id": "a", "Config": {"Labels": {"com.docker.compose.container-number": 1}}},
    {"Id": "a", "State": []},
    {"Id": "a", "State": {"Pid": "12"}},
    {"Id": "a", "State": {"Pid": {}}},
    {"Id": "a", "State": {"Running": "yes"}},
    {"Id": "a", "NetworkSettings": "x"},
    {"Id": "a", "NetworkSettings": {"SandboxKey": 5}},
    {"Id": "a", "HostConfig": {"NetworkMode": ["container", "b"]}},
]


@pytest.fixture
def cli_asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the docker CLI is asked once the engine's API has given up (a reading makes its own Compose: the
    class is patched)."""
    asked: list[str] = []

    def capture(self: Compose, cmd: list[str], failure: Any = None) -> str:
        asked.append(cmd[1])
        return "cli-id\n"

    def inspect_with_cli(self: Compose, ids: list[str], *, missing_ok: bool) -> list[Container]:
        asked.extend(["inspect", *ids])
        return []

    monkeypatch.setattr(Compose, "_capture", capture)
    monkeypatch.setattr(Compose, "_inspect_with_cli", inspect_with_cli)
    return asked


@pytest.mark.parametrize("document", MALFORMED_INSPECTS)
def test_an_inspect_document_composens_cannot_read_sends_the_caller_to_the_cli(
    answering: Answering, monkeypatch: pytest.MonkeyPatch, document: Any, cli_asked: list[str]
) -> None:
    monkeypatch.setattr(engine, "connect", lambda: answering(ok(document)))
    assert Compose(ComposeOptions()).inspect(["a"]) == []
    assert cli_asked == ["inspect", "a"]
    cli_asked.clear()
    monkeypatch.setattr(engine, "connect", lambda: answering(ok([{"Id": "a"}]), ok(document)))
    assert Compose(ComposeOptions()).containers("x") == []
    assert cli_asked == ["ps", "inspect", "cli-id"]


def test_a_list_of_another_shape_lists_containers_with_the_cli(
    answering: Answering, monkeypatch: pytest.MonkeyPatch, cli_asked: list[str]
) -> None:
    monkeypatch.setattr(engine, "connect", lambda: answering(ok({"Id": "a"})))
    assert Compose(ComposeOptions()).containers("x") == []
    assert cli_asked == ["ps", "inspect", "cli-id"]


@pytest.mark.parametrize(
    "document",
    [
        {"Id": "a"},
        {"Id": "a", "Config": {"Labels": None}, "State": None, "NetworkSettings": None, "HostConfig": None},
        {"Id": "a", "State": {"Pid": None, "Running": None}, "NetworkSettings": {"SandboxKey": None}},
        {"Id": "a", "HostConfig": {"NetworkMode": None}, "Extra": {"Anything": [1, None]}},
    ],
)
def test_documents_with_empty_fields_are_read_from_the_engine(
    answering: Answering, monkeypatch: pytest.MonkeyPatch, document: Any, cli_asked: list[str]
) -> None:
    monkeypatch.setattr(engine, "connect", lambda: answering(ok(document)))
    [container] = Compose(ComposeOptions()).inspect(["a"])
    assert cli_asked == []
    assert (container.id, container.name, container.pid, container.sandbox, container.netns_owner) == (
        "a",
        "",
        0,
        "",
        None,
    )


def test_a_well_formed_document_is_read_whole(
    answering: Answering, monkeypatch: pytest.MonkeyPatch, cli_asked: list[str]
) -> None:
    document = {
        "Id": "a1",
        "Name": "/demo-r1-1",
        "Config": {"Labels": {"com.docker.compose.project": "demo", "com.docker.compose.service": "r1"}},
        "State": {"Running": True, "Restarting": False, "Pid": 42},
        "NetworkSettings": {"SandboxKey": "/var/run/docker/netns/abc"},
        "HostConfig": {"NetworkMode": "container:b2"},
    }
    monkeypatch.setattr(engine, "connect", lambda: answering(ok([{"Id": "a1"}]), ok(document)))
    [container] = Compose(ComposeOptions()).containers("demo")
    assert cli_asked == []
    assert container == Container(
        "a1", "demo-r1-1", "demo", "r1", 1, True, 42, "/var/run/docker/netns/abc", "container:b2"
    )
    assert container.netns_owner == "b2"


@pytest.mark.parametrize("number", ["²", "1" * 5000, "x"])
def test_a_container_number_that_is_not_a_small_decimal_reads_as_one(
    answering: Answering, monkeypatch: pytest.MonkeyPatch, number: str, cli_asked: list[str]
) -> None:
    document = {"Id": "a", "Config": {"Labels": {"com.docker.compose.container-number": number}}}
    monkeypatch.setattr(engine, "connect", lambda: answering(ok(document)))
    [container] = Compose(ComposeOptions()).inspect(["a"])
    assert container.number == 1


# ------------------------------------------- engine API: a check's exec (issue 21, item 2)


def answer(status: str, document: Any) -> bytes:
    body = json.dumps(document).encode()
    return b"HTTP/1.1 %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (
        status.encode(),
        len(body),
        body,
    )


def test_an_exec_is_made_without_a_tty_and_its_id_returned(answering: Answering) -> None:
    api = answering(answer("201 Created", {"Id": "e1"}))
    assert api.exec_create("c1", ["sh", "-c", "exit 1"]) == "e1"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("409 Conflict", "Container c1 is paused, unpause the container before exec"),
        ("409 Conflict", "Container c1 is not running"),
        ("404 Not Found", "No such container: c1"),
    ],
)
def test_the_engines_refusal_of_an_exec_is_its_own_words(answering: Answering, status: str, message: str) -> None:
    api = answering(answer(status, {"message": message}))
    with pytest.raises(EngineRefused, match=message):
        api.exec_create("c1", ["true"])


def test_an_execs_state_is_read_and_checked(answering: Answering) -> None:
    api = answering(answer("200 OK", {"Running": False, "ExitCode": 3, "Pid": 42}), answer("200 OK", {"Running": 1}))
    assert api.exec_inspect("e1") == engine.ExecState(False, 3, 42)
    with pytest.raises(EngineUnavailable, match="not an exec's document"):
        api.exec_inspect("e1")


UPGRADED = b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nUpgrade: tcp\r\n\r\n"


def frame(kind: int, data: bytes) -> bytes:
    return bytes([kind, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


@pytest.fixture
def streaming() -> Iterator[Callable[..., engine.ExecStream]]:
    """An ExecStream whose connection carries the given bytes, sent in pieces of `piece` bytes."""
    pairs: list[tuple[engine.ExecStream, socket.socket]] = []

    def make(raw: bytes, *, piece: int = 0, hang_up: bool = True) -> engine.ExecStream:
        ours, theirs = socket.socketpair()
        stream = engine.ExecStream(ours, "/exec/e1/start")
        for start in range(0, len(raw), piece or len(raw) or 1):
            theirs.sendall(raw[start : start + (piece or len(raw))])
        if hang_up:
            theirs.shutdown(socket.SHUT_WR)
        pairs.append((stream, theirs))
        return stream

    yield make
    for stream, theirs in pairs:
        stream.close()
        theirs.close()


@pytest.mark.parametrize("piece", [0, 1, 3, 9])
def test_the_streams_frames_are_told_apart_however_they_arrive(
    streaming: Callable[..., engine.ExecStream], piece: int
) -> None:
    raw = UPGRADED + frame(2, b"err\n") + frame(1, b"out\n") + frame(1, b"") + frame(1, b"more")
    stream = streaming(raw, piece=piece)
    assert stream.read(until=time.monotonic() + 5) is True
    assert (bytes(stream.stdout), bytes(stream.stderr)) == (b"out\nmore", b"err\n")


def test_an_old_engines_plain_200_answer_carries_the_stream_too(streaming: Callable[..., engine.ExecStream]) -> None:
    stream = streaming(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n" + frame(1, b"x"))
    assert stream.read(until=time.monotonic() + 5) is True
    assert bytes(stream.stdout) == b"x"


def test_output_beyond_the_bound_is_read_and_dropped(
    streaming: Callable[..., engine.ExecStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "MAX_OUTPUT", 5)
    stream = streaming(UPGRADED + frame(1, b"0123") + frame(1, b"456789") + frame(2, b"e"))
    assert stream.read(until=time.monotonic() + 5) is True
    assert (bytes(stream.stdout), bytes(stream.stderr)) == (b"01234", b"e")


def test_a_stream_still_open_at_the_deadline_says_so(streaming: Callable[..., engine.ExecStream]) -> None:
    stream = streaming(UPGRADED + frame(1, b"partial"), hang_up=False)
    started = time.monotonic()
    assert stream.read(until=started + 0.2) is False
    assert 0.15 < time.monotonic() - started < 2
    assert bytes(stream.stdout) == b"partial"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (UPGRADED + b"OCI runtime exec failed", "not docker's stream framing"),
        (UPGRADED + frame(1, b"cut short")[:-3], "inside a frame"),
        (UPGRADED + frame(1, b"x")[:5], "inside a frame"),
    ],
)
def test_a_stream_of_another_shape_is_an_engine_failure(
    streaming: Callable[..., engine.ExecStream], raw: bytes, problem: str
) -> None:
    with pytest.raises(EngineUnavailable, match=problem):
        streaming(raw).read(until=time.monotonic() + 5)


def test_an_exec_the_engine_will_not_start_is_refused_in_its_words(
    streaming: Callable[..., engine.ExecStream],
) -> None:
    stream = streaming(answer("409 Conflict", {"message": "Container c1 is paused, unpause the container before exec"}))
    with pytest.raises(EngineRefused, match="is paused"):
        stream.read(until=time.monotonic() + 5)
