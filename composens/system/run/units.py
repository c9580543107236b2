"""The systemd unit that runs `composens watch` for a project (model/unit.py): written, enabled, removed.

A unit file is composens' when its first line is unit.MARK: no other file is replaced or removed. Where systemd
runs (it made /run/systemd/system, as sd_booted(3) checks), the unit is enabled and started, or stopped and
disabled, with systemctl; elsewhere it is only written, and the caller says what to run where systemd does.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from composens.model import unit
from composens.model.errors import ComposensError, ConflictError, PermissionProblem

UNIT_DIR = Path("/etc/systemd/system")
BOOTED_MARK = Path("/run/systemd/system")


def systemd_runs() -> bool:
    """Tell whether systemd is this machine's init (sd_booted)."""
    return BOOTED_MARK.is_dir()


def ours(path: Path) -> bool:
    """Tell whether the unit file at `path` is one composens wrote."""
    try:
        with path.open() as f:
            return f.readline().startswith(unit.MARK)
    except (FileNotFoundError, UnicodeDecodeError):
        return False


def write(directory: Path, name: str, text: str) -> Path:
    """Write (or rewrite) a unit of composens' own, whole, 0644; refuse to replace anyone else's (exit 6)."""
    path = directory / name
    if path.exists() and not ours(path):
        raise ConflictError(f"{path} exists and was not written by composens; remove or rename it first")
    temporary = directory / f".{name}.composens-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(temporary, 0o644)  # whatever the umask: systemd reads it as any unit
        os.replace(temporary, path)
    except PermissionError as e:
        raise PermissionProblem(f"cannot write {path}: {e.strerror}; run as root") from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


def remove(directory: Path, name: str) -> Path | None:
    """Remove a unit composens wrote; None when there is none. Anyone else's is refused (exit 6)."""
    path = directory / name
    if not path.exists():
        return None
    if not ours(path):
        raise ConflictError(f"{path} was not written by composens; it is left alone")
    try:
        path.unlink()
    except PermissionError as e:
        raise PermissionProblem(f"cannot remove {path}: {e.strerror}; run as root") from None
    return path


def systemctl(*args: str) -> None:
    """Run systemctl; its failure is composens' (exit 1), with systemctl's own words."""
    try:
        done = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False, timeout=120)
    except FileNotFoundError:
        raise ComposensError("systemctl not found, though systemd runs here") from None
    except subprocess.TimeoutExpired:
        raise ComposensError(f"systemctl {' '.join(args)} did not finish in 120 s") from None
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ComposensError(f"systemctl {' '.join(args)} failed: {message}")
