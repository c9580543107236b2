"""The gate in front of the services that start only once wired (startwait.py): its effects on disk.

For `up`, the project's resolved config is written with those services' commands behind the wait, and compose
runs from it; after each wiring, a flag is written for every start of a container that is now wired, and the
flags of starts that are gone are removed. Everything lives in composens' own folder under /run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from composens.model import startwait
from composens.model.errors import ConfigError
from composens.model.topology import Topology
from composens.system.docker.compose import Compose
from composens.system.docker.options import COMPOSE_FILE_NAMES
from composens.system.kernel.processes import started_at
from composens.system.world import WORLD

GATED_LABEL = startwait.GATED_LABEL


def waiting(topo: Topology) -> dict[str, int]:
    """The services that start only once wired, with how long each waits at most."""
    return {name: node.start_after_wiring for name, node in topo.services.items() if node.start_after_wiring}


def delayed(topo: Topology) -> dict[str, int]:
    """The services whose command starts some seconds after their container, with that delay."""
    return {name: node.start_delay for name, node in topo.services.items() if node.start_delay}


def wired_dir(state_dir: Path, project: str) -> Path:
    return state_dir / "wired" / project


def gated_compose(compose: Compose, topo: Topology, state_dir: Path) -> Compose:
    """The compose that runs `up`: reading the resolved config, with the waiting (and delayed) services' commands
    behind the gate. Refuses (exit 3) such a service whose image has no shell to wait in, or whose image cannot be
    had."""
    import yaml

    limits = waiting(topo)
    delays = delayed(topo)
    gated = [*limits, *(name for name in delays if name not in limits)]
    config = compose.config()
    services = config.get("services") or {}
    for name in gated:  # a service that is only built has the image compose names after project and service
        services[name].setdefault("image", f"{config.get('name')}-{name}")
    images = _image_configs(compose, {name: services[name] for name in gated})
    commands = {}
    for name in gated:
        image_name = services[name]["image"]
        image = images[image_name]
        key = "start_after_wiring" if name in limits else "start_delay"
        if _has_shell(image) is False:
            raise ConfigError(
                f"{topo.source}: services.{name}.x-composens.{key}: its image {image_name} has no "
                f"{startwait.SHELL} (and sleep) to wait in; use an image with a shell, or drop {key}"
            )
        commands[name] = startwait.command_of(services[name], image.get("Config") or {})
        if not commands[name]:
            raise ConfigError(
                f"{topo.source}: services.{name}: neither the service nor its image {image_name} says what to run "
                f"(entrypoint, command); {key} needs a command to start"
            )
    flags = wired_dir(state_dir, topo.project)
    flags.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(flags, 0o755)  # readable in the containers, whatever the umask
    path = state_dir / "up" / f"{topo.project}.yml"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(yaml.safe_dump(startwait.wrap(config, limits, commands, str(flags), delays), sort_keys=False))
    options = replace(compose.options, files=(str(path),), project_directory=_project_directory(compose))
    return Compose(options, compose.docker, use_api=compose.use_api)


def _project_directory(compose: Compose) -> str:
    """Where compose would have put the project: the directory option, or the first file's folder, or here."""
    options = compose.options
    if options.project_directory:
        return str(Path(options.project_directory).resolve())
    first = options.files[0] if options.files else (os.environ.get("COMPOSE_FILE", "").split(os.pathsep)[0] or "")
    if first and first != "-":
        return str(Path(first).resolve().parent)
    here = Path.cwd()
    for folder in (here, *here.parents):  # compose looks for its file here, then in each parent folder
        if any((folder / name).is_file() for name in COMPOSE_FILE_NAMES):
            return str(folder)
    return str(here)


def _image_configs(compose: Compose, services: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The engine's inspect of each waiting service's image; built or pulled first when it is not there yet."""
    names = sorted({str(spec.get("image") or "") for spec in services.values()})
    found = compose.image_inspect(names)
    missing = [name for name, spec in services.items() if str(spec.get("image") or "") not in found]
    if missing:
        build = [name for name in missing if services[name].get("build")]
        pull = [name for name in missing if not services[name].get("build")]
        for verb, chosen in (("build", build), ("pull", pull)):
            if chosen and compose.run([verb, *chosen]) != 0:
                raise ConfigError(
                    f"docker compose {verb} {' '.join(chosen)} failed; the start gate (start_after_wiring, "
                    "start_delay) needs the image"
                )
        found = compose.image_inspect(names)
    for name, spec in services.items():
        if str(spec.get("image") or "") not in found:
            raise ConfigError(f"services.{name}: image {spec.get('image')!r} is not available")
    return found


_BIN = (("bin",), ("usr", "bin"))


def _has_shell(image: Mapping[str, Any]) -> bool | None:
    """Whether the image's layers hold sh and sleep, the wait's shell and its pause between looks (None: the
    engine's storage does not say, so it is tried)."""
    driver = image.get("GraphDriver") or {}
    data = driver.get("Data") or {}
    if driver.get("Name") != "overlay2" or not data.get("UpperDir"):
        return None
    layers = [data["UpperDir"], *(d for d in str(data.get("LowerDir") or "").split(":") if d)]
    if not all(os.path.isdir(layer) for layer in layers):
        return None

    def found(name: str) -> bool:
        return any(os.path.lexists(os.path.join(layer, *where, name)) for layer in layers for where in _BIN)

    return found("sh") and found("sleep")


def release(
    state_dir: Path,
    project: str,
    wired: Iterable[tuple[int, int]],
    present: Iterable[tuple[int, int]],
    listed_at: float,
) -> None:
    """Open the gate for each start that is wired (namespace inode, pid of its first process); remove the flags of
    starts no container had when they were listed (at `listed_at`: a flag written since is another run's)."""
    folder = wired_dir(state_dir, project)
    WORLD.witness("folder", str(folder))
    if not folder.is_dir():
        return
    keep = set()
    for inode, pid in present:
        started = started_at(pid)
        if started is not None:
            keep.add(startwait.flag_name(inode, started))
    for inode, pid in wired:
        started = started_at(pid)
        if started is not None:
            flag = folder / startwait.flag_name(inode, started)
            if not flag.exists():
                WORLD.changed(f"the gate {flag}")
                flag.touch(mode=0o644)
    with WORLD.derived():  # the folder's names, which its "folder" reading holds
        found = sorted(folder.iterdir())
    for old in found:
        with contextlib.suppress(FileNotFoundError):
            if old.name in keep:
                continue
            if old.stat().st_mtime >= listed_at:
                WORLD.refuse(f"a gate {old} newer than the listing")  # kept by the clock, not by a reading
            else:
                WORLD.changed(f"the gate {old}")
                old.unlink()


def forget(state_dir: Path, project: str) -> None:
    """Remove the project's gate: its flags and the config `up` ran from."""
    import shutil  # only down needs it

    shutil.rmtree(wired_dir(state_dir, project), ignore_errors=True)
    (state_dir / "up" / f"{project}.yml").unlink(missing_ok=True)
