"""A container as the engine describes it: what composens needs to link its namespace."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    project: str
    service: str
    number: int
    running: bool
    pid: int
    sandbox: str  # NetworkSettings.SandboxKey: docker's own mount of the container's netns
    network_mode: str
    labels: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    paused: bool = False  # `docker pause`: running (its namespace and links stay), its processes frozen

    @property
    def netns_owner(self) -> str | None:
        """Id of the container whose namespace this one joined (network_mode container:<id>)."""
        return self.network_mode.split(":", 1)[1] if self.network_mode.startswith("container:") else None

    @classmethod
    def from_inspect(cls, data: dict[str, Any]) -> Container:
        labels = data.get("Config", {}).get("Labels") or {}
        state = data.get("State") or {}
        number = labels.get(NUMBER_LABEL, "1")
        return cls(
            id=data["Id"],
            name=data.get("Name", "").lstrip("/"),
            project=labels.get(PROJECT_LABEL, ""),
            service=labels.get(SERVICE_LABEL, ""),
            number=int(number) if number.isdecimal() and len(number) < 10 else 1,  # "²" is a digit, not a decimal
            running=bool(state.get("Running")) and not state.get("Restarting"),
            pid=int(state.get("Pid") or 0),
            sandbox=(data.get("NetworkSettings") or {}).get("SandboxKey") or "",
            network_mode=(data.get("HostConfig") or {}).get("NetworkMode") or "",
            labels=labels,
            paused=bool(state.get("Paused")),
        )
