"""`x-composens.exec`: commands run in a service's container once it is wired, once per start of it.

After the first `up` and after each restart, once the new namespace is wired (by `up`, `netns link` or a `watch`
repair), each command runs in order as `docker compose exec -T` would run it (a string through `sh -c`, a list as
the argv), and what it said is kept, keyed like the start gate's flags (startwait.flag_name) so that a start's
commands run once, whoever wires it, and a later start runs them again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

from composens.model import startwait
from composens.model.progress import EXEC, SILENT, Progress
from composens.model.report import ExecResult
from composens.model.topology import Command, Topology
from composens.system.kernel.processes import started_at
from composens.system.world import WORLD, reader

TIMEOUT = 60.0  # s a command may run before it counts as failed
KEPT = 2000  # characters of a command's output kept for the report


def shown(command: Command) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def argv(command: Command) -> list[str]:
    return ["sh", "-c", command] if isinstance(command, str) else list(command)


def folder(state_dir: Path, project: str) -> Path:
    return state_dir / "exec" / project


def run_pending(
    state_dir: Path,
    topo: Topology,
    wired: Iterable[tuple[str, str, int, int]],
    present: Iterable[tuple[int, int]],
    docker: Sequence[str],
    *,
    listed_at: float,
    use_api: bool = True,
    progress: Progress = SILENT,
) -> list[ExecResult]:
    """Run the commands of each wired start (service, container id, namespace inode, pid) that has not had them;
    forget the results of starts that were gone when the containers were listed (at `listed_at`). Return what
    ran now."""
    place = folder(state_dir, topo.project)
    WORLD.witness("folder", str(place))
    keep = {_key(inode, pid) for inode, pid in present} - {None}
    ran: list[ExecResult] = []
    for service, container, inode, pid in wired:
        commands = topo.services[service].exec
        key = _key(inode, pid)
        if not commands or key is None:
            continue
        place.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _claim(place / f"{key}.json"):
            continue
        progress.expect(EXEC, len(commands))
        results: list[ExecResult] = []
        try:
            for command in commands:
                results.append(_run(service, container, command, docker, use_api))
                progress.advance(EXEC)
        finally:  # even when interrupted: what ran is known, and the start is not claimed by a dead run for good
            done = [[r.command, r.exit_code, r.output] for r in results]
            missing = [[shown(c), None, "not run: composens was interrupted"] for c in commands[len(results) :]]
            _write(place / f"{key}.json", {"owner": None, "results": done + missing})
        ran += results
    with WORLD.derived():  # the folder's names, which its "folder" reading holds
        found = sorted(place.iterdir()) if place.is_dir() else []
    if found:
        for old in found:
            # A result written since the listing is a start this run did not see (another run's): kept.
            if old.stem not in keep and old.suffix == ".json" and _mtime(old) >= listed_at:
                WORLD.refuse(f"exec results {old} newer than the listing")  # kept by the clock, not by a reading
            elif old.stem not in keep and old.suffix == ".json":
                WORLD.changed(f"the exec results {old}")
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
    return ran


def _claim(path: Path) -> bool:
    """Claim a start's commands for this run: one run of composens runs them, whichever gets here first. A claim
    whose owner died without writing its results (killed midway) is taken over."""
    for _ in range(2):
        try:
            with WORLD.derived():  # a file of the exec folder, which the "folder" reading holds
                text: str | None = path.read_text()
        except FileNotFoundError:
            text = None
        except OSError:
            text = ""
        if text is None:
            WORLD.changed(f"the exec claim {path}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue  # another run claimed it this very moment: read its claim
            with os.fdopen(fd, "w") as f:
                json.dump({"owner": [os.getpid(), started_at(os.getpid())], "results": None}, f)
            return True
        try:
            owner = json.loads(text).get("owner")
        except (ValueError, AttributeError):
            WORLD.refuse("an exec claim being written")
            return False  # being written by its claimer this very moment: left to it
        if owner is None:  # done
            return False
        if _alive(owner):  # still running: whether it ends well is not for a replay to take for granted
            WORLD.refuse("an exec claim in progress")
            return False
        WORLD.changed(f"the exec claim {path}")
        path.unlink(missing_ok=True)
    return False


def _alive(owner: list[int | None]) -> bool:
    pid, started = owner
    return isinstance(pid, int) and started_at(pid) == started


def _write(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")


def results_of(state_dir: Path, project: str, service: str, inode: int | None, pid: int | None) -> list[ExecResult]:
    """What a start's commands said, once they ran."""
    found: list[ExecResult] = WORLD.read("exec-results", str(state_dir), project, service, inode, pid)
    return found


@reader("exec-results")
def _results_of(state_dir: str, project: str, service: str, inode: int | None, pid: int | None) -> list[ExecResult]:
    key = _key(inode, pid) if inode is not None and pid is not None else None
    if key is None:
        return []
    try:
        data = json.loads((folder(Path(state_dir), project) / f"{key}.json").read_text())
    except (OSError, ValueError):
        return []
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        return []  # still running
    return [ExecResult(service, str(c), e if isinstance(e, int) else None, str(o)) for c, e, o in results]


def forget(state_dir: Path, project: str) -> None:
    import shutil  # only down needs it

    shutil.rmtree(folder(state_dir, project), ignore_errors=True)


def _key(inode: int, pid: int) -> str | None:
    started = started_at(pid)
    return startwait.flag_name(inode, started) if started is not None else None


def _run(service: str, container: str, command: Command, docker: Sequence[str], use_api: bool) -> ExecResult:
    # The checks' exec (probe.py): the engine's API tells docker's own failures from the command's exit code,
    # and a command that runs out of time is stopped in the container, not only its client.
    from composens.system.run.probe import ProbeError, run_exec

    try:
        done = run_exec(container, argv(command), timeout=TIMEOUT, docker=docker, use_api=use_api)
    except ProbeError as e:
        return ExecResult(service, shown(command), None, str(e))
    output = (done.stdout + done.stderr).strip()
    if done.exit_code is None:
        stopped = f"; {done.left_running}" if done.left_running else ""
        output = f"{output}\ndid not finish within {TIMEOUT:.0f} s{stopped}".strip()
    return ExecResult(service, shown(command), done.exit_code, output[-KEPT:])
