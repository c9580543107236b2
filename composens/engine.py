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

HTTP is spoken by hand, GET only, rather than through http.client: importing http.client (it pulls
in email and ssl) took 27 to 29 ms by `-X importtime` (Python 3.11, two cores), 28 ms of wall time
over a bare `python -c pass` (39 ms against 11), and still 13 to 15 ms after everything composens
has loaded by then; this module costs 2 ms there.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from composens.errors import EngineUnavailable

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
    """One keep-alive HTTP/1.1 connection to the engine's unix socket, spoken by hand (GET only)."""

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

    def _get(self, url: str) -> Any | None:
        """GET a JSON document; None when the engine answers 404."""
        try:
            sock, reader = self._open()
            sock.sendall(f"GET {url} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
            status, body, keep = _read_response(reader)
        except (OSError, ValueError) as e:
            self.close()
            raise EngineUnavailable(f"GET {url}: {e}") from e
        if not keep:
            self.close()
        if status == 404:
            return None
        if status != 200:
            raise EngineUnavailable(f"GET {url}: HTTP {status}")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than the parser goes
            raise EngineUnavailable(f"GET {url}: not JSON: {e}") from e
        if document is None:  # None is kept for 404; no question here is answered with null
            raise EngineUnavailable(f"GET {url}: null")
        return document

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
    status_line = _read_line(reader, "status line")
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
    status = int(parts[1])
    headers = _read_headers(reader)
    keep = headers.get(b"connection") != b"close"
    encoding = headers.get(b"transfer-encoding")
    if encoding == b"chunked":
        return status, _read_chunked(reader), keep
    if encoding is not None:
        raise ValueError(f"Transfer-Encoding {encoding[:80]!r} is not chunked")
    if b"content-length" in headers:
        return status, _read_exactly(reader, _size(headers[b"content-length"], 10, "Content-Length")), keep
    body = reader.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise ValueError(f"a body over {MAX_BODY} bytes")
    return status, body, False


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
