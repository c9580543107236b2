"""Real engine, real namespaces. Every project gets a unique name and is torn down even on failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from composens.system.docker.configcache import CACHE_DIR

# Every composens these tests start runs the code beside them (a worktree's, say), not whatever the venv installed.
REPO = Path(__file__).resolve().parents[2]
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)

NETNS_DIR = Path("/var/run/netns")
STATE = Path("/run/composens/state.json")
IMAGE = os.environ.get("COMPOSENS_DEMO_IMAGE", "busybox:1.36")


def _engine_problem() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root"
    if shutil.which("docker") is None:
        return "docker CLI not found"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "docker daemon not reachable"
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False).returncode != 0:
        return f"image {IMAGE} missing (scripts/bootstrap.sh seeds it)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problem = _engine_problem()
    if problem is None:
        return
    for item in items:
        if "integration" in str(item.path):
            if os.environ.get("CI"):
                # In CI these tests must run: a missing engine is a failure, never a skip.
                item.user_properties.append(("engine", problem))
            else:
                item.add_marker(pytest.mark.skip(reason=problem))


@pytest.fixture(autouse=True)
def _fail_in_ci_without_engine(request: pytest.FixtureRequest) -> None:
    for key, problem in request.node.user_properties:
        if key == "engine":
            pytest.fail(f"CI requires the integration tests to run: {problem}")


def run(*args: str, check: bool = True, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done  # type: ignore[no-any-return]


def ns_inode(path: str) -> int:
    return os.stat(path).st_ino


@dataclass
class Project:
    """A compose project in its own folder, driven through the composens CLI."""

    name: str
    folder: Path
    made_entries: list[str] = field(default_factory=list)

    def write(self, text: str) -> None:
        (self.folder / "docker-compose.yml").write_text(text.replace("IMAGE", IMAGE))

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run(
            sys.executable, "-m", "composens", "-p", self.name, *args, check=check, timeout=timeout, cwd=self.folder
        )

    def spawn(self, *args: str, merge_stderr: bool = False) -> subprocess.Popen[str]:
        """Start composens in the background, in a session of its own so a test can signal its group."""
        return subprocess.Popen(
            [sys.executable, "-m", "composens", "-p", self.name, *args],
            cwd=self.folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def crash(self, point: str, *args: str) -> None:
        """Run composens with the crash hook set, and check it died there as `kill -9` would have it."""
        crashed = run(
            sys.executable, "-m", "composens", "-p", self.name, *args,
            check=False, cwd=self.folder, env={**os.environ, "COMPOSENS_TEST_CRASH_AT": point},
        )  # fmt: skip
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    def ps(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = json.loads(self.cli("ps", "--netns", "--format", "json").stdout)
        return rows

    def status(self) -> dict[str, str]:
        return {str(r["netns"]): str(r["status"]) for r in self.ps()}

    def container(self, service: str, number: int = 1) -> str:
        return f"{self.name}-{service}-{number}"

    def pid(self, service: str, number: int = 1) -> int:
        return int(run("docker", "inspect", "-f", "{{.State.Pid}}", self.container(service, number)).stdout)

    def container_ns(self, service: str, number: int = 1) -> int:
        return ns_inode(f"/proc/{self.pid(service, number)}/ns/net")


def entry_ns(name: str) -> int | None:
    """The namespace `ip netns exec NAME` enters, as seen from inside it, or None if it fails."""
    done = run("ip", "netns", "exec", name, "busybox", "stat", "-L", "-c", "%i", "/proc/self/ns/net", check=False)
    return int(done.stdout) if done.returncode == 0 else None


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    name = f"cnt{uuid.uuid4().hex[:8]}"
    proj = Project(name, tmp_path)
    cached_before = set(CACHE_DIR.glob("*.json")) if CACHE_DIR.exists() else set()
    yield proj
    # Tear down with composens, then make sure, directly, that nothing of this project is left.
    if (tmp_path / "docker-compose.yml").exists():
        proj.cli("down", "-t", "0", check=False)
    ids = run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={name}", check=False).stdout.split()
    if ids:
        run("docker", "rm", "-f", *ids, check=False)
    run("docker", "network", "prune", "-f", "--filter", f"label=com.docker.compose.project={name}", check=False)
    for cached in set(CACHE_DIR.glob("*.json")) - cached_before if CACHE_DIR.exists() else ():
        cached.unlink(missing_ok=True)  # configs this test's runs cached: nobody will ask for them again
    # Whatever is left under the project's unique name (a test that failed before its down, a hub):
    # symlinks are unlinked, real namespaces (`ip netns add`) deleted.
    names = {*proj.made_entries, *(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(name))}
    for entry in sorted(names) if NETNS_DIR.exists() else ():
        path = NETNS_DIR / entry
        if path.is_symlink():
            path.unlink()
        elif path.exists():
            run("ip", "netns", "delete", entry, check=False)
