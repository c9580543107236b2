"""A systemd unit that runs `composens watch` for one project, so that its lab comes back linked and wired after a
reboot or an engine restart without a person: ordered after docker.service, restarted when it fails.

Pure: the unit's name and text. composens.system.run.units writes it, and knows one it made by MARK.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from composens.model.errors import ConfigError

MARK = "# Made by composens"  # a unit file's first line when composens wrote it: the only ones it replaces or removes
# Which of the environment `watch` carries into the unit: what chooses the compose files, the engine and the host.
CARRIED = re.compile(r"(COMPOSE_[A-Z_]+|DOCKER_[A-Z_]+|COMPOSENS_HOST)")
_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
RESTART_SECONDS = 5
# Exit codes a restart cannot mend (README: usage, an invalid file, not root): systemd stops trying on these.
GIVE_UP_ON = (2, 3, 4)


def unit_name(project: str) -> str:
    """The unit's name: `composens-watch-PROJECT.service` (a compose project name is valid in a unit name)."""
    return f"composens-watch-{project}.service"


def watch_unit(project: str, argv: Sequence[str], directory: str, environment: Mapping[str, str]) -> str:
    """The unit's text: `argv` (an absolute program first) run in `directory` with the carried `environment`."""
    for text in (*argv, directory, *environment.keys(), *environment.values()):
        if "\n" in text or "\r" in text or "\0" in text:
            raise ConfigError(f"cannot write a systemd unit with a line break or NUL in {text!r}")
    carried = [f'Environment="{_escaped(f"{k}={v}")}"' for k, v in sorted(environment.items()) if CARRIED.fullmatch(k)]
    return "\n".join(
        [
            f"{MARK} for project {project}: `composens watch --remove-unit` removes it.",
            "[Unit]",
            f"Description=composens watch: keep lab {project} linked and wired",
            "After=docker.service network-online.target",
            "Wants=docker.service",
            "",
            "[Service]",
            "Type=exec",
            f"WorkingDirectory={_specifiers(directory)}",
            *carried,
            f"ExecStart={' '.join(_argument(a) for a in argv)}",
            "Restart=on-failure",
            f"RestartSec={RESTART_SECONDS}",
            f"RestartPreventExitStatus={' '.join(str(code) for code in GIVE_UP_ON)}",
            "TimeoutStopSec=30",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def _specifiers(text: str) -> str:
    """`%` is the start of a specifier in every unit setting: written `%%`."""
    return text.replace("%", "%%")


def _escaped(text: str) -> str:
    """The inside of a double-quoted unit value: backslashes and quotes escaped, `%` doubled."""
    return _specifiers(text.replace("\\", "\\\\").replace('"', '\\"'))


def _argument(text: str) -> str:
    """One ExecStart word: as is when plain, else double-quoted; `$` doubled (no variable is meant)."""
    word = text.replace("$", "$$")
    if _PLAIN.fullmatch(text):
        return _specifiers(word)
    return f'"{_escaped(word)}"'


@dataclass(frozen=True)
class UnitChange:
    """What installing or removing a project's watch unit did."""

    name: str  # composens-watch-PROJECT.service
    path: str
    action: str  # "written", "removed", or "absent" (nothing to remove)
    systemd: bool  # systemd runs here, so systemctl was told (enabled and started, or stopped and disabled)
