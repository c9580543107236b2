"""Read-only questions to the engine over its HTTP API on the unix socket.

A `docker ps` or `docker inspect` process spends 30 to 70 ms starting before it asks the engine
anything; the same questions over the socket cost about a millisecond each. composens asks only
read-only questions this way (list and inspect containers); everything that changes the engine
goes through the docker CLI. The docker SDK would add requests and urllib3 to every start-up,
more than the process it saves.

When the CLI would talk to some other engine (DOCKER_HOST not a unix socket, a docker context),
or the socket cannot be reached, `EngineUnavailable` sends the caller back to the CLI, whose error
messages composens already translates. So does any answer this module cannot read: a malformed or
over-large HTTP frame, or JSON of another shape than the engine's (robustness: the engine is trusted).

One exception to "read-only": a check's `exec` runs here (create, start, inspect an exec), since only
the API tells the command's own exit code from docker's failures (a paused container, a missing
executable) and names the exec's process, which probe.py stops when it outlives its timeout. The
docker CLI's `exec` gives neither; it remains the way where the API is not the CLI's engine.

HTTP is spoken by hand rather than through http.client: importing http.client (it pulls in email
and ssl) took 27 to 29 ms by `-X importtime` (Python 3.11, two cores), 28 ms of wall time over a
bare `python -c pass` (39 ms against 11), and still 13 to 15 ms after everything composens has
loaded by then; this module costs 2 ms there.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import quote

from composens.model.errors import EngineRefused, EngineUnavailable

DEFAULT_SOCKET = "/var/run/docker.sock"
PARALLEL_INSPECTS = 4  # connections: on two cores, 4 answered 50 inspects in 17 ms against 28 ms on one
IDS_PER_CONNECTION = 8

# Bounds on an answer, past which the CLI is asked instead. Lines and header counts as http.client
# bounds them. A body: an inspect document is 5 to 20 KiB and a /containers/json item 1 to 3 KiB, so
# 64 MiB holds thousands of containers' answers, yet is little to hold in memory for a moment.
MAX_LINE = 64 * 1024
MAX_HEADERS = 100
MAX_BODY = 64 * 1024 * 1024
FRAMING = (b"content-length", b"transfer-encoding")  # headers that must not disagree with themselves
DIGITS = {10: b"0123456789", 16: b"0123456789abcdefABCDEF"}

# The fields of an inspect document that compose.Container.from_inspect reads, with the JSON types the
# engine gives them. Each may be absent; null only where from_inspect reads it as empty (not NOT_NULL).
INSPECT_FIELDS: dict[str, dict[str, type]] = {
    "": {"Id": str, "Name": str, "Config": dict, "State": dict, "NetworkSettings": dict, "HostConfig": dict},
    "Config": {"Labels": dict},
    "State": {"Running": bool, "Restarting": bool, "Pid": int},
    "NetworkSettings": {"SandboxKey": str},
    "HostConfig": {"NetworkMode": str},
}
NOT_NULL = {"Id", "Name", "Config"}

# An exec's output is kept up to this much a stream (a check reads its stdout); the rest is read and dropped.
MAX_OUTPUT = 16 * 1024 * 1024
STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3  # the stream kinds of docker's framing (SYSTEMERR: API 1.42+)


def socket_path(environ: Mapping[str, str]) -> str | None:
    """Return the unix socket the docker CLI would use, or None when it would use anything else."""
    host = environ.get("DOCKER_HOST", "")
    if host:
        return host.removeprefix("unix://") if host.startswith("unix://") else None
    if environ.get("DOCKER_CONTEXT", "default") != "default":
        return None
    config_dir = Path(environ["DOCKER_CONFIG"]) if environ.get("DOCKER_CONFIG") else Path.home() / ".docker"
    try:
        current = json.loads((config_dir / "config.json").read_text()).get("currentContext", "default")
    except (OSError, ValueError, AttributeError):
        current = "default"
    return DEFAULT_SOCKET if current in ("", "default") else None


class EngineAPI:
    """One keep-alive HTTP/1.1 connection to the engine's unix socket, spoken by hand."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: BinaryIO | None = None

    def _open(self) -> tuple[socket.socket, BinaryIO]:
        if self._sock is None or self._reader is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
            self._sock, self._reader = sock, sock.makefile("rb")
        return self._sock, self._reader

    def _request(self, method: str, url: str, body: Any = None) -> tuple[int, bytes]:
        """Send one request (a JSON body, if any) and read its answer: (status, body)."""
        try:
            sock, reader = self._open()
            sock.sendall(_request_head(method, url, body))
            status, answer, keep = _read_response(reader)
        except (OSError, ValueError) as e:
            self.close()
            raise EngineUnavailable(f"{method} {url}: {e}") from e
        if not keep:
            self.close()
        return status, answer

    def _get(self, url: str) -> Any | None:
        """GET a JSON document; None when the engine answers 404."""
        status, body = self._request("GET", url)
        if status == 404:
            return None
        if status != 200:
            raise EngineUnavailable(f"GET {url}: HTTP {status}")
        return _document(f"GET {url}", body)

    def ping(self) -> bool:
        """Tell whether the engine answers (GET /_ping); EngineUnavailable when its socket does not."""
        status, _ = self._request("GET", "/_ping")
        return status == 200

    def container_ids(self, label: str) -> list[str]:
        """Ids of all containers, running or not, that carry `label` (key=value)."""
        url = f"/containers/json?all=1&filters={quote(json.dumps({'label': [label]}))}"
        found = self._get(url)
        if found is None:
            raise EngineUnavailable(f"GET {url}: HTTP 404")
        if not isinstance(found, list) or not all(
            isinstance(item, dict) and isinstance(item.get("Id"), str) for item in found
        ):
            raise EngineUnavailable(f"GET {url}: not a list of containers with ids")
        return [item["Id"] for item in found]

    def inspect(self, ids: Iterable[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """Inspect each container as `docker inspect` does; return the documents and the ids not found."""
        found, missing = [], []
        for container_id in ids:
            url = f"/containers/{quote(container_id, safe='')}/json"
            document = self._get(url)
            if document is None:
                missing.append(container_id)
            elif problem := _unreadable(document):
                raise EngineUnavailable(f"GET {url}: {problem}")
            else:
                found.append(document)
        return found, missing

    def inspect_many(self, ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """Inspect `ids` over several connections at once (the engine answers them in parallel), in order."""
        shares = min(PARALLEL_INSPECTS, len(ids) // IDS_PER_CONNECTION) or 1
        if shares == 1:
            return self.inspect(ids)
        apis = [self] + [EngineAPI(self.path, self.timeout) for _ in range(shares - 1)]
        answers: list[tuple[list[dict[str, Any]], list[str]] | BaseException] = [([], [])] * shares

        def ask(share: int) -> None:
            try:
                answers[share] = apis[share].inspect(ids[share::shares])
            except BaseException as e:  # handed back to the calling thread
                answers[share] = e

        threads = [threading.Thread(target=ask, args=(share,)) for share in range(1, shares)]
        for thread in threads:
            thread.start()
        ask(0)
        for thread in threads:
            thread.join()
        for api in apis[1:]:
            api.close()
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
            found.update((document["Id"], document) for document in answer[0])
            missing += answer[1]
        ordered = [found.pop(i) for i in ids if i in found]
        return ordered + list(found.values()), missing  # the rest: asked for by name or short id

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._reader = None

    # ------------------------------------------------------------------ exec

    def exec_create(self, container_id: str, command: Sequence[str]) -> str:
        """Make an exec of `command` in the container, without a TTY or stdin; return its id."""
        url = f"/containers/{quote(container_id, safe='')}/exec"
        spec = {"AttachStdin": False, "AttachStdout": True, "AttachStderr": True, "Tty": False, "Cmd": list(command)}
        status, body = self._request("POST", url, spec)
        if status != 201:
            raise EngineRefused(_engine_message(body, status))  # 404: no such container; 409: paused, not running
        document = _document(f"POST {url}", body)
        if not isinstance(document, dict) or not isinstance(document.get("Id"), str):
            raise EngineUnavailable(f"POST {url}: no exec id")
        return str(document["Id"])

    def exec_start(self, exec_id: str) -> ExecStream:
        """Start an exec on a connection of its own, which then carries the command's output until it ends."""
        url = f"/exec/{quote(exec_id, safe='')}/start"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
            # As the docker CLI asks: the engine answers 101 and hands the connection over to the stream.
            sock.sendall(_request_head("POST", url, {"Detach": False, "Tty": False}, upgrade=True))
        except OSError as e:
            sock.close()
            raise EngineUnavailable(f"POST {url}: {e}") from e
        return ExecStream(sock, url)

    def exec_inspect(self, exec_id: str) -> ExecState:
        """Whether an exec still runs, its exit code once it ended, and its process's pid on the host."""
        url = f"/exec/{quote(exec_id, safe='')}/json"
        found = self._get(url)
        if found is None:
            raise EngineRefused(f"no such exec: {exec_id}")
        running, code, pid = (found.get(k) if isinstance(found, dict) else None for k in ("Running", "ExitCode", "Pid"))
        if not isinstance(running, bool) or not isinstance(pid, int) or not isinstance(code, int | None):
            raise EngineUnavailable(f"GET {url}: not an exec's document")
        return ExecState(running, code, pid)

    def container_pid(self, container_id: str) -> int:
        """The host pid of a container's first process; 0 when it runs none."""
        documents, _ = self.inspect([container_id])
        return int(((documents[0].get("State") or {}).get("Pid") or 0) if documents else 0)


@dataclass(frozen=True)
class ExecState:
    running: bool
    exit_code: int | None  # None while it runs
    pid: int  # on the host; 0 when it never started (the runtime refused it: a missing executable, say)


class ExecStream:
    """A started exec's output: docker's framing of stdout and stderr (8-byte headers: kind, 0, 0, 0, size)."""

    def __init__(self, sock: socket.socket, url: str) -> None:
        self._sock = sock
        self._reader = sock.makefile("rb")
        self._url = url
        self._started = False
        self._head = b""  # the part of a frame header read so far
        self._kind, self._left = STDOUT, 0  # the current frame's stream and the bytes of it still to come
        self.stdout, self.stderr, self.system_error = bytearray(), bytearray(), bytearray()

    def read(self, until: float) -> bool:
        """Read output until the command ends (True) or the monotonic clock reaches `until` (False).

        After False the connection is spent (a timed-out socket file reads no more): ask exec_inspect instead.
        """
        try:
            if not self._started:
                self._settimeout(until)
                self._read_answer()
            while True:
                self._settimeout(until)
                data = self._reader.read1(65536)
                if not data:
                    if self._head or self._left:
                        raise ValueError("the stream ended inside a frame")
                    return True
                self._feed(data)
        except TimeoutError:
            return False
        except (OSError, ValueError) as e:
            raise EngineUnavailable(f"POST {self._url}: {e}") from e

    def _settimeout(self, until: float) -> None:
        left = until - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self._sock.settimeout(left)

    def _read_answer(self) -> None:
        status, headers = _read_head(self._reader)
        if status not in (101, 200):
            body, _ = _read_body(self._reader, headers)
            raise EngineRefused(_engine_message(body, status))
        self._started = True

    def _feed(self, data: bytes) -> None:
        while data:
            if not self._left:
                need = 8 - len(self._head)
                self._head, data = self._head + data[:need], data[need:]
                if len(self._head) < 8:
                    return
                kind, size = self._head[0], int.from_bytes(self._head[4:], "big")
                if kind > SYSTEMERR or any(self._head[1:4]):
                    raise ValueError(f"not docker's stream framing: {self._head!r}")
                self._head, self._kind, self._left = b"", kind, size
                continue
            part, data = data[: self._left], data[self._left :]
            self._left -= len(part)
            kept = {STDOUT: self.stdout, STDERR: self.stderr, SYSTEMERR: self.system_error}.get(self._kind)
            if kept is not None:
                kept += part[: max(0, MAX_OUTPUT - len(kept))]

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> ExecStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _request_head(method: str, url: str, body: Any = None, *, upgrade: bool = False) -> bytes:
    lines = [f"{method} {url} HTTP/1.1", "Host: docker"]
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    if upgrade:
        lines += ["Connection: Upgrade", "Upgrade: tcp"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def _document(what: str, body: bytes) -> Any:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than the parser goes
        raise EngineUnavailable(f"{what}: not JSON: {e}") from e
    if document is None:  # None is kept for 404; no question here is answered with null
        raise EngineUnavailable(f"{what}: null")
    return document


def _engine_message(body: bytes, status: int) -> str:
    """The engine's own words for an error ({"message": ...}), on one line."""
    try:
        message = json.loads(body).get("message")
    except (ValueError, RecursionError, AttributeError):
        message = None
    text = message if isinstance(message, str) and message.strip() else body.decode(errors="replace")
    return " ".join(text.split())[:500] or f"HTTP {status}"


def _unreadable(document: Any) -> str | None:
    """Say what composens could not read in an inspect document, if anything."""
    if not isinstance(document, dict) or "Id" not in document:
        return "not a container's document"
    for section, fields in INSPECT_FIELDS.items():
        part = document.get(section) if section else document
        if not isinstance(part, dict):
            continue  # a null or absent section: the top level's check said whether it may be
        for name, kind in fields.items():
            value = part.get(name)
            if not isinstance(value, kind) and (value is not None or (name in NOT_NULL and name in part)):
                return f"{f'{section}.' if section else ''}{name} is not a {kind.__name__}"
    labels = (document.get("Config") or {}).get("Labels") or {}
    if not all(isinstance(value, str) for value in labels.values()):
        return "Config.Labels holds a value that is not a str"
    return None


def _read_response(reader: BinaryIO) -> tuple[int, bytes, bool]:
    """Read one HTTP/1.1 response: (status, body, whether the connection stays open).

    Anything malformed or beyond the bounds raises ValueError, which sends the caller to the CLI.
    """
    status, headers = _read_head(reader)
    body, keep = _read_body(reader, headers)
    return status, body, keep


def _read_head(reader: BinaryIO) -> tuple[int, dict[bytes, bytes]]:
    """Read a response's status line and headers."""
    status_line = _read_line(reader, "status line")
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
    return int(parts[1]), _read_headers(reader)


def _read_body(reader: BinaryIO, headers: dict[bytes, bytes]) -> tuple[bytes, bool]:
    """Read a response's body: (body, whether the connection stays open)."""
    keep = headers.get(b"connection") != b"close"
    encoding = headers.get(b"transfer-encoding")
    if encoding == b"chunked":
        return _read_chunked(reader), keep
    if encoding is not None:
        raise ValueError(f"Transfer-Encoding {encoding[:80]!r} is not chunked")
    if b"content-length" in headers:
        return _read_exactly(reader, _size(headers[b"content-length"], 10, "Content-Length")), keep
    body = reader.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise ValueError(f"a body over {MAX_BODY} bytes")
    return body, False


def _read_line(reader: BinaryIO, what: str) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise ValueError(f"{what} longer than {MAX_LINE} bytes")
    if not line.endswith(b"\n"):
        raise ValueError("the engine closed the connection mid-response")
    return line


def _read_headers(reader: BinaryIO) -> dict[bytes, bytes]:
    """Read header lines (or a chunked body's trailers) up to the blank line; names and values lowercased."""
    headers: dict[bytes, bytes] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _read_line(reader, "header line")
        if line in (b"\r\n", b"\n"):
            return headers
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"not a header line: {line[:80]!r}")
        name, value = name.strip().lower(), value.strip().lower()
        if name in FRAMING and headers.get(name, value) != value:
            raise ValueError(f"two different {name.decode(errors='replace')} headers")
        headers[name] = value
    raise ValueError(f"more than {MAX_HEADERS} header lines")


def _read_chunked(reader: BinaryIO) -> bytes:
    chunks, total = [], 0
    while size := _size(_read_line(reader, "chunk size line").split(b";")[0], 16, "chunk size"):
        total += size
        if total > MAX_BODY:
            raise ValueError(f"a body over {MAX_BODY} bytes")
        chunks.append(_read_exactly(reader, size))
        if _read_line(reader, "chunk end") not in (b"\r\n", b"\n"):
            raise ValueError("a chunk longer than its size")
    _read_headers(reader)  # trailers
    return b"".join(chunks)


def _size(text: bytes, base: int, what: str) -> int:
    """Parse a Content-Length (base 10) or a chunk size (base 16): digits only, at most MAX_BODY."""
    text = text.strip()
    if not text or text.lstrip(DIGITS[base]):
        raise ValueError(f"{what} {text[:20]!r} is not a size")
    size = int(text, base) if len(text) <= 20 else MAX_BODY + 1  # spares int() thousands of digits
    if size > MAX_BODY:
        raise ValueError(f"{what} {text[:20]!r} is over the {MAX_BODY >> 20} MiB bound")
    return size


def _read_exactly(reader: BinaryIO, size: int) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise ValueError("the engine closed the connection mid-response")
    return data


def connect(environ: Mapping[str, str] = os.environ) -> EngineAPI:
    path = socket_path(environ)
    if path is None:
        raise EngineUnavailable("the docker CLI is set to another engine")
    return EngineAPI(path)
