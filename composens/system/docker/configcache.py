"""Remember what `docker compose config` said, for as long as nothing it read has changed.

`docker compose config` is the only exact reading of a project (interpolation, profiles, merged
override files), and it costs 0.15 s: more than the rest of `composens netns link` together. The
key is everything that reading depends on, byte for byte: the compose binary, the working
directory, the global options, the whole environment, and the contents of every compose file and
.env file compose could pick (a name that could appear but does not is part of the key too).
Contents, not modification times, so an edit within the same clock tick is seen. An entry is
named by the BLAKE2 digest of its key: nothing of the environment is written down.

Projects whose files name other files (`include`, `extends`) or whose .env files choose the
compose files are not cached: compose reads files there that the key would not cover.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    from _blake2 import blake2b  # hashlib's own BLAKE2; hashlib itself loads OpenSSL first (4 to 15 ms)
except ImportError:  # pragma: no cover - an interpreter without it
    from hashlib import blake2b

if TYPE_CHECKING:
    from composens.system.docker.options import ComposeOptions

CACHE_DIR = Path("/run/composens/config-cache")
FORMAT = "composens-config-cache 1"
KEEP = 64  # entries kept; the oldest written go first

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_FILES = ("compose.override.yml", "compose.override.yaml", "docker-compose.override.yml",
                  "docker-compose.override.yaml")  # fmt: skip
PLUGIN_DIRS = ("/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
               "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins")  # fmt: skip
# Words that make compose read files the key does not cover.
NAMES_OTHER_FILES = (b"include", b"extends")
ENV_NAMES_COMPOSE_FILES = (b"COMPOSE_FILE", b"COMPOSE_ENV_FILES")
SHELL_BOOKKEEPING = ("_",)  # set by the shell to the command being run: different on every way of calling
# composens' own switches, which compose does not read: left out unless a file names them (interpolation could).
COMPOSENS_ONLY = (b"COMPOSENS_REPLAY_NOTE", b"COMPOSENS_NO_REPLAY")


class _Uncacheable(Exception):
    pass


def cache_key(options: ComposeOptions, cwd: Path, environ: Mapping[str, str]) -> str | None:
    """Return a digest of everything the resolved config depends on, or None when it cannot be known."""
    digest = blake2b(digest_size=32)

    def add(*parts: object) -> None:
        for part in parts:
            data = part if isinstance(part, bytes) else repr(part).encode(errors="surrogateescape")
            digest.update(len(data).to_bytes(8, "little") + data)

    try:
        plugin = _compose_plugin(environ)
        inputs = list(_read_inputs(options, cwd, environ))
        named = {name.decode() for name in COMPOSENS_ONLY if any(content and name in content for _, content in inputs)}
        left_out = set(SHELL_BOOKKEEPING) | ({name.decode() for name in COMPOSENS_ONLY} - named)
        environment = sorted(item for item in environ.items() if item[0] not in left_out)
        add(FORMAT, str(cwd), plugin, *_identity(plugin), options, environment)
        for path, content in inputs:
            add(str(path), content)
    except (_Uncacheable, OSError):
        return None
    return digest.hexdigest()


def _read_inputs(options: ComposeOptions, cwd: Path, environ: Mapping[str, str]) -> Iterator[tuple[Path, bytes | None]]:
    """Yield each file compose could read for the project, with its bytes (None: absent)."""
    named = options.files or tuple(f for f in environ.get("COMPOSE_FILE", "").split(_separator(environ)) if f)
    if "-" in named or environ.get("COMPOSE_ENV_FILES"):
        raise _Uncacheable
    start = cwd / options.project_directory if options.project_directory else cwd
    if named:
        compose_files, env_dirs = [cwd / name for name in named], {cwd, start, (cwd / named[0]).parent}
    else:
        compose_files, env_dirs = _discover(start)
        env_dirs.add(cwd)
    for path in compose_files:
        content = _content(path)
        if content is None and named:
            raise _Uncacheable  # compose will say what is wrong
        if content is not None and any(word in content for word in NAMES_OTHER_FILES):
            raise _Uncacheable
        yield path, content
    env_files = [cwd / name for name in options.env_files] or [folder / ".env" for folder in sorted(env_dirs)]
    for path in env_files:
        content = _content(path)
        if content is not None and any(word in content for word in ENV_NAMES_COMPOSE_FILES):
            raise _Uncacheable
        yield path, content


def _discover(start: Path) -> tuple[list[Path], set[Path]]:
    """Walk up from `start` as compose does; every candidate name of every folder passed counts, present or not."""
    seen: list[Path] = []
    folder = start
    while True:
        candidates = [folder / name for name in DEFAULT_FILES + OVERRIDE_FILES]
        seen += candidates
        if any(path.exists() for path in candidates[: len(DEFAULT_FILES)]):
            return seen, {start, folder}
        if folder.parent == folder:
            raise _Uncacheable  # no compose file: compose will say so
        folder = folder.parent


def _content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _Uncacheable from e


def _separator(environ: Mapping[str, str]) -> str:
    return environ.get("COMPOSE_PATH_SEPARATOR") or os.pathsep


def _compose_plugin(environ: Mapping[str, str]) -> Path:
    home = environ.get("DOCKER_CONFIG") or str(Path(environ.get("HOME", "/root")) / ".docker")
    for folder in (str(Path(home) / "cli-plugins"), *PLUGIN_DIRS):
        path = Path(folder) / "docker-compose"
        if path.exists():
            return path
    raise _Uncacheable


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class ConfigCache:
    """Cached configs, one JSON file per key, written whole or not at all."""

    def __init__(self, folder: Path = CACHE_DIR) -> None:
        self.folder = folder

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.folder / f"{key}.json").read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def put(self, key: str, config: Mapping[str, Any]) -> None:
        """Store `config` if JSON keeps it exactly; a cache that cannot be written is no cache."""
        try:
            text = json.dumps(config, sort_keys=True)
        except (TypeError, ValueError):
            return
        if json.loads(text) != config:
            return  # e.g. a YAML mapping with numbers as keys: read it through compose every time
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary = self.folder / f".{os.getpid()}.tmp"
            temporary.write_text(text)
            os.replace(temporary, self.folder / f"{key}.json")
            self._trim()
        except OSError:
            pass

    def _trim(self) -> None:
        entries = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        for old in entries[:-KEEP]:
            old.unlink(missing_ok=True)
