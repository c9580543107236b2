"""One error hierarchy, one exit code per kind of failure."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG = 3
    PERMISSION = 4
    ENGINE = 5
    CONFLICT = 6
    WIRING = 7
    RECORD = 8
    INTERRUPTED = 130


class ComposensError(Exception):
    """A failure the user can act on; its message is one line (or one line per item, when it names several)."""

    exit_code: int = ExitCode.FAILURE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(ComposensError):
    """The compose file, its x-composens section or a name in it is invalid."""

    exit_code = ExitCode.CONFIG


class PermissionProblem(ComposensError):
    exit_code = ExitCode.PERMISSION


class EngineError(ComposensError):
    """The docker CLI, its compose plugin or the daemon is unavailable."""

    exit_code = ExitCode.ENGINE


class ComposeFailed(ComposensError):
    """docker compose itself failed; its exit code is ours."""


class ConflictError(ComposensError):
    """Something composens did not create stands where it would write."""

    exit_code = ExitCode.CONFLICT


class WiringError(ComposensError):
    exit_code = ExitCode.WIRING


class RecordDamaged(ComposensError):
    """The record of what composens made cannot be trusted: nothing changes until it is rebuilt."""

    exit_code = ExitCode.RECORD


class EngineUnavailable(Exception):
    """Not for users: the engine's API cannot answer here, so the docker CLI is asked instead."""


class EngineRefused(Exception):
    """Not for users: the engine answered a request with an error (a paused container, no such container);
    its message is the engine's own, for the caller to put in its words."""
