"""docker compose's global options, as composens passes them on and as the config cache keys them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


@dataclass(frozen=True)
class ComposeOptions:
    """Global options of docker compose, given before the command."""

    files: tuple[str, ...] = ()
    project_name: str | None = None
    profiles: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    project_directory: str | None = None
    extra: tuple[str, ...] = ()  # other global flags, passed on as given

    def global_args(self) -> list[str]:
        args: list[str] = []
        for f in self.files:
            args += ["--file", f]
        if self.project_name:
            args += ["--project-name", self.project_name]
        for p in self.profiles:
            args += ["--profile", p]
        for e in self.env_files:
            args += ["--env-file", e]
        if self.project_directory:
            args += ["--project-directory", self.project_directory]
        return args + list(self.extra)

    def source_label(self) -> str:
        """Name the compose file(s) the way error messages should."""
        if self.files:
            return ", ".join(self.files)
        env_files = os.environ.get("COMPOSE_FILE")
        if env_files:
            return env_files.replace(os.pathsep, ", ")
        folder = Path(self.project_directory or ".")
        for name in COMPOSE_FILE_NAMES:
            if (folder / name).exists():
                return name
        return "compose file"
