"""A second host on this machine, honest about everything but the kernel.

"Host 2" is a network namespace joined to this machine's own by an underlay veth, with a mount
namespace of its own: a fresh tmpfs on /run (so its own /run/docker.sock, /run/netns and
/run/composens) and its own /var/lib/docker (a temporary folder bind-mounted), and its own dockerd
started there with every default. It is entered with `nsenter -t PID -m -n` (not `ip netns exec`,
which remounts /sys and so loses the cgroup mounts dockerd needs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST1_UNDERLAY = "198.18.200.1"
HOST2_UNDERLAY = "198.18.200.2"
UNDERLAY_PREFIX = 24
UNDERLAY6_PREFIX = "2001:db8:200::"
START_TIMEOUT = 60.0

# Runs inside `unshare --mount --net --propagation private`: its own /run and /var/lib/docker, then dockerd.
_INIT = """
set -e
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/netns /run/lock
mount --bind "$1" /var/lib/docker
ip link set lo up
exec dockerd >"$2" 2>&1
"""


@dataclass
class SecondHost:
    """A running host 2: its dockerd's pid (the handle to enter it), its underlay, and where it keeps things."""

    pid: int
    host_if: str  # the underlay veth's end in this machine's namespace
    folder: Path  # its /var/lib/docker, its log
    far_if: str = ""  # the underlay veth's end in host 2's namespace
    underlay: str = HOST2_UNDERLAY
    peer_underlay: str = HOST1_UNDERLAY
    started_in: float = 0.0  # seconds from nothing to an engine with its images
    engine: subprocess.Popen[bytes] | None = None  # its dockerd (pid is its pid), stopped by that pid only

    def enter(self, *args: str) -> list[str]:
        """The command line that runs `args` on host 2."""
        return ["nsenter", "-t", str(self.pid), "-m", "-n", *args]

    def run(
        self, *args: str, check: bool = True, timeout: float = 120, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        # Entering a mount namespace moves to its root, and nsenter's own --wd opens the folder before it enters
        # (a directory of this mount namespace, which getcwd cannot name there): change to it once inside.
        inside = args if cwd is None else ("sh", "-c", 'cd "$0" && exec "$@"', str(cwd), *args)
        command = self.enter(*inside)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(
                f"on host 2: {' '.join(args)} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def restart_engine(self) -> float:
        """Stop host 2's dockerd (by its pid: its containers stop with it) and start a new one in the same namespaces,
        as `systemctl restart docker` would; return how long the engine was away. Some other process must hold host
        2's namespaces meanwhile (a `watch` entered there): they end with their last process."""
        assert self.engine is not None
        holder = subprocess.Popen(self.enter("sleep", "600"))  # and this one, in case the caller's ends first
        try:
            _wait_for("the holder in its namespaces", lambda: _in_namespaces_of(holder.pid, self.pid), 10)
            stopped = time.monotonic()
            self.engine.send_signal(signal.SIGTERM)
            self.engine.wait(timeout=60)
            log = self.folder / "dockerd.log"
            with log.open("ab") as out:  # nsenter execs dockerd: the pid is the engine's
                self.engine = subprocess.Popen(
                    ["nsenter", "-t", str(holder.pid), "-m", "-n", "dockerd"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.pid = self.engine.pid
            _wait_for(
                "dockerd answering again",
                lambda: (
                    self.engine is not None
                    and self.engine.poll() is None
                    and self.run("docker", "info", check=False, timeout=10).returncode == 0
                ),
                START_TIMEOUT,
            )
            return time.monotonic() - stopped
        finally:
            holder.kill()
            holder.wait()

    def composens(self, project: str, folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run composens on host 2 exactly as on host 1 (this checkout's code, the same interpreter)."""
        return self.run(sys.executable, "-m", "composens", "-p", project, *args, check=check, cwd=folder)


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def _in_namespaces_of(pid: int, other: int) -> bool:
    return all(
        os.readlink(f"/proc/{pid}/ns/{kind}") == os.readlink(f"/proc/{other}/ns/{kind}") for kind in ("mnt", "net")
    )


def _wait_for(what: str, condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"host 2: {what} did not happen within {timeout:.0f} s")


@contextlib.contextmanager
def second_host(images: Sequence[str] = ("busybox:1.36",)) -> Iterator[SecondHost]:
    """Start host 2, yield it, and take it all down again (its dockerd by pid, the veth, the folders)."""
    tag = uuid.uuid4().hex[:6]
    host_if, far_if = f"cnu{tag}a", f"cnu{tag}b"  # unlike any lab's names; unique per run
    folder = Path(tempfile.mkdtemp(prefix=f"composens-host2-{tag}-"))
    (folder / "docker").mkdir()
    log = folder / "dockerd.log"
    process = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--net",
            "--propagation",
            "private",
            "sh",
            "-c",
            _INIT,
            "init",
            str(folder / "docker"),
            str(log),
        ],
        start_new_session=True,
    )
    started = time.monotonic()
    host = SecondHost(process.pid, host_if, folder, far_if, engine=process)
    try:
        # The shell execs dockerd, so the pid stays the engine's once it is running.
        _wait_for(
            "its namespaces", lambda: os.readlink(f"/proc/{process.pid}/ns/net") != os.readlink("/proc/self/ns/net"), 10
        )
        _run("ip", "link", "add", "name", host_if, "type", "veth", "peer", "name", far_if, "netns", str(process.pid))
        _run("ip", "addr", "add", f"{HOST1_UNDERLAY}/{UNDERLAY_PREFIX}", "dev", host_if)
        _run("ip", "link", "set", "dev", host_if, "up")
        host.run("ip", "addr", "add", f"{HOST2_UNDERLAY}/{UNDERLAY_PREFIX}", "dev", far_if)
        host.run("ip", "link", "set", "dev", far_if, "up")
        _wait_for(
            "dockerd answering",
            lambda: process.poll() is None and host.run("docker", "info", check=False, timeout=10).returncode == 0,
            START_TIMEOUT,
        )
        for image in images:
            save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
            load = subprocess.run(
                host.enter("docker", "load", "-q"), stdin=save.stdout, capture_output=True, check=False
            )
            save.wait()
            if load.returncode != 0 or save.returncode != 0:
                raise AssertionError(f"host 2: cannot copy image {image}: {load.stderr.decode().strip()}")
        host.started_in = time.monotonic() - started
        yield host
    except BaseException:
        if log.exists():
            sys.stderr.write(f"host 2's dockerd log:\n{log.read_text()[-4000:]}\n")
        raise
    finally:
        _stop(host.engine or process, host_if, folder)


def _stop(process: subprocess.Popen[bytes], host_if: str, folder: Path) -> None:
    """Stop host 2's engine by its own pid only, then remove its veth and folders."""
    if process.poll() is None:
        # Its containers first, so their shims do not outlive the engine (they would keep the mounts busy).
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            ids = subprocess.run(
                ["nsenter", "-t", str(process.pid), "-m", "-n", "docker", "ps", "-aq"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.split()
            if ids:
                subprocess.run(
                    ["nsenter", "-t", str(process.pid), "-m", "-n", "docker", "rm", "-f", *ids],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    _run("ip", "link", "del", "dev", host_if, check=False)  # its peer went with host 2's namespace anyway
    # The mounts were in host 2's mount namespace, which ended with its last process: nothing to unmount here.
    shutil.rmtree(folder, ignore_errors=True)
