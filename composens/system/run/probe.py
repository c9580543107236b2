"""Run checks: ping from a service's own network namespace, exec in its container, retry, report.

ping is done in-process: a thread enters the service's namespace through docker's mount of it
(entering.run_in_netns) and sends ICMP or ICMPv6 echo requests on a raw socket, so the image needs
no ping binary. It is written here (about 100 lines) rather than taken from icmplib 3.0.4, which
also works from such a thread and would save about 75 of them. Measured here: importing icmplib
took 45 ms cold, 16 ms more than this module's own imports (it loads asyncio); its ping() waits
for each reply before sending the next request, so 3 unanswered requests with a 1 s timeout
took 3.4 s against 1.4 s here (requests go out 0.2 s apart, replies are read as they come);
answered pings took 0.4 s with both. icmplib also drops why a request could not be sent
("Network is unreachable", which this module reports), times round trips on the wall clock,
has no type information for mypy --strict, and is LGPL-3.0.

exec runs the command in the container through the engine's API without a TTY (what `docker
compose exec -T` does): create an exec, start it and read its output, then ask the engine for the
command's own exit code. What the engine refuses (a paused or stopped container, one that is gone,
an executable that is not there) is the check's error, never its exit code. After the check's
timeout the command and what it started are killed on the host (processes.py), checked first to be
in the container's pid namespace, and the attempt ends only once the engine says the exec ended: a
`wait` check that keeps timing out has at most one command running. Where the CLI talks to another
engine (DOCKER_HOST, a context) it runs `docker exec`, whose own failures are told from the
command's by their message; there a command that times out is left running (only the client dies).

run_checks runs every check at once in a bounded thread pool. A check with `wait` is tried
about every second until it passes or its time is up; an attempt starts only while time is
left, so a check may end up to one attempt after its wait. With fail_fast, the first check
that fails or errs stops the rest: checks not yet tried end "skipped", checks waiting for their
next try end "fail" with their last reason, and attempts under way finish.
"""

from __future__ import annotations

import errno
import heapq
import ipaddress
import os
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

from composens.model.checks import (
    Check,
    CheckResult,
    CheckState,
    CheckUpdate,
    Exec,
    Ping,
    Result,
    evaluate_exec,
    evaluate_ping,
    tail,
)

if TYPE_CHECKING:
    from composens.system.docker.engine import EngineAPI, ExecState

INTERVAL = 0.2  # seconds between echo requests
RETRY_EVERY = 1.0  # seconds between the starts of a waiting check's attempts
PARALLEL = 16


@dataclass(frozen=True)
class Target:
    """Where a service's checks run: its container and docker's mount of its network namespace."""

    service: str
    container_id: str | None
    netns_path: str | None
    running: bool


@dataclass(frozen=True)
class Attempt:
    """What one try of a check gave."""

    reason: str | None  # None: it passed
    rtts_ms: tuple[float, ...] = ()


class ProbeError(Exception):
    """A check could not be run; its result is "error" with this one-line message."""


Probe = Callable[[Check, Target], Attempt]


# --------------------------------------------------------------------------- ping


@dataclass(frozen=True)
class Echo:
    rtts_ms: tuple[float, ...]  # one per reply, in the order of the requests
    problem: str | None = None  # why a request could not be sent, when one could not


ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
SOL_RAW = 255
ICMP_FILTER = 1  # on SOL_RAW: a mask of ICMP types to drop
ICMP6_FILTER = 1  # on IPPROTO_ICMPV6: 256 bits, a set bit drops that type
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
PAYLOAD_PAD = bytes(48)  # with the 8-byte token, ping's usual 56 bytes of data


def ping(netns_path: str, address: str, *, count: int, timeout: float, interval: float = INTERVAL) -> Echo:
    """Send echo requests from the network namespace at netns_path and collect the replies."""
    # Loaded on the first ping only: a suite of exec checks has no use for it.
    from composens.system.kernel.entering import run_in_netns

    echoes: list[Echo] = []
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        run_in_netns(fd, lambda: echoes.append(echo(address, count=count, timeout=timeout, interval=interval)))
    finally:
        os.close(fd)
    return echoes[0]


def echo(address: str, *, count: int, timeout: float, interval: float = INTERVAL) -> Echo:
    """Send echo requests from the calling thread's network namespace and collect the replies."""
    target = ipaddress.ip_address(address)
    family, proto = (
        (socket.AF_INET6, socket.IPPROTO_ICMPV6) if target.version == 6 else (socket.AF_INET, socket.IPPROTO_ICMP)
    )
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        session = _Echoes(sock, target, timeout)
        start = time.monotonic()
        for sequence in range(count):
            session.listen(until=start + sequence * interval, early=False)
            session.send(sequence)
        session.listen(until=max(session.sent.values(), default=0.0) + timeout, early=True)
    return Echo(tuple(session.rtts[s] for s in sorted(session.rtts)), session.problem)


class _Echoes:
    """One ping's requests and the replies that match them."""

    def __init__(
        self, sock: socket.socket, target: ipaddress.IPv4Address | ipaddress.IPv6Address, timeout: float
    ) -> None:
        self.sock = sock
        self.target = target
        self.timeout = timeout
        self.version = target.version
        self.ident = int.from_bytes(os.urandom(2), "big")
        # A raw socket sees every echo reply in the namespace: the token tells ours from another
        # ping's that happens to use the same identifier.
        self.token = os.urandom(8)
        self.sent: dict[int, float] = {}  # sequence: when it left
        self.rtts: dict[int, float] = {}  # sequence: milliseconds
        self.problem: str | None = None
        only_echo_replies(sock, self.version)

    def send(self, sequence: int) -> None:
        try:
            self.sock.sendto(echo_request(self.version, self.ident, sequence, self.token), (str(self.target), 0))
        except OSError as e:  # no route, say: the request counts as unanswered
            self.problem = e.strerror or str(e)
            return
        self.sent[sequence] = time.monotonic()

    def listen(self, *, until: float, early: bool) -> None:
        """Read replies until the time given, or (early) until every request sent is answered."""
        while not (early and len(self.rtts) == len(self.sent)):
            left = until - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)  # poll(2) underneath: no limit on the descriptor's number
            try:
                data, source = self.sock.recvfrom(2048)
            except TimeoutError:
                return
            except OSError as e:  # an ICMP error queued on the socket: note it, keep listening
                self.problem = e.strerror or str(e)
                continue
            self._match(data, source[0], time.monotonic())

    def _match(self, data: bytes, source: str, arrived: float) -> None:
        if source.split("%")[0] != str(self.target):
            return
        sequence = echo_reply_sequence(data, self.version, self.ident, self.token)
        if sequence is None:
            return
        sent = self.sent.get(sequence)
        if sent is not None and sequence not in self.rtts and arrived - sent <= self.timeout:
            self.rtts[sequence] = (arrived - sent) * 1000


def only_echo_replies(sock: socket.socket, version: int) -> None:
    """Have the kernel drop the rest of the namespace's ICMP before it reaches this raw socket."""
    reply = ECHO_REPLY[version]
    if version == 4:
        sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", ~(1 << reply) & 0xFFFFFFFF))
        return
    words = [0xFFFFFFFF] * 8
    words[reply >> 5] &= ~(1 << (reply & 31))
    sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *words))


def echo_request(version: int, ident: int, sequence: int, token: bytes) -> bytes:
    """An ICMP (or ICMPv6) echo request carrying the token and ping's usual 56 bytes of data."""
    payload = token + PAYLOAD_PAD
    header = _HEADER.pack(ECHO_REQUEST[version], 0, 0, ident, sequence)
    if version == 4:  # the kernel computes ICMPv6 checksums itself
        header = _HEADER.pack(ECHO_REQUEST[4], 0, checksum(header + payload), ident, sequence)
    return header + payload


def echo_reply_sequence(data: bytes, version: int, ident: int, token: bytes) -> int | None:
    """The sequence number of an echo reply to our requests (this identifier and token), or None."""
    # IPv4 raw sockets read the IP header too; its length is in the first byte.
    icmp = data[(data[0] & 0x0F) * 4 :] if version == 4 and data else data
    if len(icmp) < _HEADER.size + len(token):
        return None
    kind, code, _, their_ident, sequence = _HEADER.unpack_from(icmp)
    if (kind, code, their_ident) != (ECHO_REPLY[version], 0, ident) or icmp[8 : 8 + len(token)] != token:
        return None
    return int(sequence)


def checksum(data: bytes) -> int:
    """Compute the internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# --------------------------------------------------------------------------- exec


@dataclass(frozen=True)
class ExecOutput:
    exit_code: int | None  # None: it timed out and was killed
    stdout: str
    stderr: str
    left_running: str | None = None  # after a timeout: why the command could not be stopped, if it could not


ExecRunner = Callable[[str, Sequence[str], float], ExecOutput]
STOP_WAIT = 5.0  # s for the engine to see a killed command end, or a finished one as finished


def run_exec(
    container_id: str, command: Sequence[str], *, timeout: float, docker: Sequence[str] = ("docker",), use_api: bool
) -> ExecOutput:
    """Run a command in a container without a TTY: through the engine's API where it is the CLI's engine."""
    from composens.model.errors import EngineUnavailable
    from composens.system.docker import engine

    if use_api:
        try:
            api = engine.connect()
        except EngineUnavailable:
            pass
        else:
            try:
                return engine_exec(api, container_id, command, timeout=timeout)
            except _NotCreated:
                pass  # the socket did not answer before anything ran: the CLI may reach the engine
            finally:
                api.close()
    return docker_exec(container_id, command, timeout=timeout, docker=docker)


class _NotCreated(Exception):
    """The engine's API could not be reached to make the exec: nothing ran."""


def engine_exec(api: EngineAPI, container_id: str, command: Sequence[str], *, timeout: float) -> ExecOutput:
    """Run a command through the engine's API; stop it and what it started after timeout seconds."""
    from composens.model.errors import EngineRefused, EngineUnavailable

    try:
        exec_id = api.exec_create(container_id, command)
    except EngineRefused as e:
        raise ProbeError(f"docker refused the exec: {e}") from e
    except EngineUnavailable as e:
        raise _NotCreated from e
    deadline = time.monotonic() + timeout
    try:
        with api.exec_start(exec_id) as stream:
            ended = stream.read(until=deadline)
            if not ended:
                left_running = _stop_exec(api, exec_id, container_id)
                return ExecOutput(None, _decode(stream.stdout), _decode(stream.stderr), left_running)
        state = _ended(api, exec_id)
    except EngineRefused as e:
        raise ProbeError(f"docker could not run the exec: {e}") from e
    except EngineUnavailable as e:
        raise ProbeError(f"the engine's API failed during the exec: {e}") from e
    out, err = _decode(stream.stdout), _decode(stream.stderr)
    if state.pid == 0 or state.exit_code is None or stream.system_error:
        # It never started: the engine wrote its reason into the stream (a missing executable, say).
        said = _decode(stream.system_error) or err or out
        raise ProbeError(f"docker could not run {command[0]!r}: {tail(said)}")
    return ExecOutput(state.exit_code, out, err)


def _ended(api: EngineAPI, exec_id: str) -> ExecState:
    """The exec's state once the engine has seen it end (its output closes a moment before)."""
    limit = time.monotonic() + STOP_WAIT
    while (state := api.exec_inspect(exec_id)).running and time.monotonic() < limit:
        time.sleep(0.005)
    if state.running:
        raise ProbeError("the engine still reports the exec running after its output ended")
    return state


def _stop_exec(api: EngineAPI, exec_id: str, container_id: str) -> str | None:
    """Kill a timed-out exec's process and its children; say why not, if they could not be stopped."""
    from composens.system.kernel import processes

    limit = time.monotonic() + STOP_WAIT
    while (state := api.exec_inspect(exec_id)).running and state.pid == 0 and time.monotonic() < limit:
        time.sleep(0.01)  # started, but the engine does not know its process yet
    if not state.running:
        return None
    if state.pid == 0:
        return "the engine never named its process"
    try:
        namespace = processes.pid_namespace(api.container_pid(container_id))
        processes.stop_tree(state.pid, namespace)
    except OSError as e:
        return f"process {state.pid} could not be stopped: {e.strerror or e}"
    while api.exec_inspect(exec_id).running:
        if time.monotonic() >= limit:
            return f"process {state.pid} is still running"
        time.sleep(0.01)
    return None


def docker_exec(
    container_id: str, command: Sequence[str], *, timeout: float, docker: Sequence[str] = ("docker",)
) -> ExecOutput:
    """Run a command with `docker exec`, without a TTY; kill the client after timeout seconds."""
    argv = [*docker, "exec", container_id, *command]
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as e:
        raise ProbeError(f"{e.filename or argv[0]} not found: install docker") from e
    with child:
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            return ExecOutput(None, _decode(out), _decode(err), "left running: docker exec cannot stop it")
    stdout, stderr = _decode(out), _decode(err)
    if failure := _docker_failure(child.returncode, stderr):
        raise ProbeError(f"docker exec failed: {failure}")
    return ExecOutput(child.returncode, stdout, stderr)


def _docker_failure(code: int, stderr: str) -> str | None:
    """docker's own failure (not the command's), from its exit code and its last words on stderr.

    docker exec exits 1 when the engine refuses (a paused, stopped or missing container: "Error response
    from daemon: ..."), and 126 or 127 when the runtime cannot start the command; a command of that exit
    code is told apart by those words, which it would have to print last on its stderr to be mistaken.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if code == 0:
        return None
    if last.startswith("Error response from daemon:") or "Cannot connect to the Docker daemon" in last:
        return last.removeprefix("Error response from daemon:").strip()
    if code in (126, 127) and last.startswith("OCI runtime exec failed"):
        return last  # the runtime could not start the command: missing, or not executable
    return None


def _decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- one attempt


def attempt(check: Check, target: Target, *, docker: Sequence[str] = ("docker",), use_api: bool = True) -> Attempt:
    """Try a check once against its service's container."""
    probe = check.probe
    if isinstance(probe, Ping):
        return _attempt_ping(probe, target)
    return _attempt_exec(
        probe, target, lambda cid, argv, timeout: run_exec(cid, argv, timeout=timeout, docker=docker, use_api=use_api)
    )


def _attempt_ping(probe: Ping, target: Target) -> Attempt:
    if target.netns_path is None:
        raise ProbeError(f"service {target.service} has no network namespace to ping from")
    try:
        result = ping(target.netns_path, probe.to, count=probe.count, timeout=probe.timeout)
    except OSError as e:
        raise ProbeError(f"ping from {target.service} failed: {_os_message(e)}") from e
    return Attempt(evaluate_ping(probe, len(result.rtts_ms), result.problem), result.rtts_ms)


def _attempt_exec(probe: Exec, target: Target, execute: ExecRunner) -> Attempt:
    if target.container_id is None:
        raise ProbeError(f"service {target.service} has no container")
    out = execute(target.container_id, probe.command, probe.timeout)
    if out.exit_code is None:
        left = f" ({out.left_running})" if out.left_running else ""
        return Attempt(f"timed out after {probe.timeout:g} s{left}")
    return Attempt(evaluate_exec(probe, out.exit_code, out.stdout, out.stderr))


def _os_message(e: OSError) -> str:
    text = e.strerror or str(e)
    if e.filename:
        return f"{e.filename}: {text}"
    if e.errno in (errno.EPERM, errno.EACCES):
        return f"{text} (raw ICMP sockets need root)"
    return text


def one_line(e: BaseException) -> str:
    """Say what went wrong in one line."""
    if isinstance(e, ProbeError):
        return str(e)
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# --------------------------------------------------------------------------- the runner


def run_checks(
    checks: Sequence[Check],
    targets: Mapping[str, Target],
    *,
    fail_fast: bool = False,
    parallel: int = PARALLEL,
    on_update: Callable[[CheckUpdate], None] | None = None,
    probe: Probe = attempt,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    retry_every: float = RETRY_EVERY,
) -> tuple[CheckResult, ...]:
    """Run the checks, at most `parallel` attempts at a time; return their results in their order.

    on_update is called after every attempt, and for checks that end without one, always from
    the calling thread and one call at a time.
    """
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    runner = _Runner(checks, targets, fail_fast, parallel, on_update, probe, clock, retry_every)
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="composens-check") as pool:
        while runner.due or runner.running:
            runner.start_due(pool)
            runner.wait_for_one(sleep)
    return runner.results()


@dataclass
class _Progress:
    attempts: int = 0
    first_start: float | None = None
    last_end: float = 0.0
    last: Attempt | None = None


class _Runner:
    """The scheduler of run_checks: only the calling thread touches it."""

    def __init__(
        self,
        checks: Sequence[Check],
        targets: Mapping[str, Target],
        fail_fast: bool,
        parallel: int,
        on_update: Callable[[CheckUpdate], None] | None,
        probe: Probe,
        clock: Callable[[], float],
        retry_every: float,
    ) -> None:
        self.checks = list(checks)
        self.targets = targets
        self.fail_fast = fail_fast
        self.parallel = parallel
        self.on_update = on_update
        self.probe = probe
        self.clock = clock
        self.retry_every = retry_every
        self.progress = [_Progress() for _ in self.checks]
        self.final: dict[int, CheckResult] = {}
        now = clock()
        self.due: list[tuple[float, int]] = [(now, i) for i in range(len(self.checks))]  # a heap
        self.running: dict[Future[Attempt], tuple[int, float]] = {}  # attempt: (check, when it started)
        self.stopped = False

    def results(self) -> tuple[CheckResult, ...]:
        return tuple(self.final[i] for i in range(len(self.checks)))

    def start_due(self, pool: ThreadPoolExecutor) -> None:
        now = self.clock()
        while self.due and self.due[0][0] <= now and len(self.running) < self.parallel:
            _, i = heapq.heappop(self.due)
            check = self.checks[i]
            target = self.targets.get(check.service)
            if target is None or not target.running:
                self.finish(i, "fail", f"service {check.service} is not running")
                continue
            self.running[pool.submit(self.probe, check, target)] = (i, now)

    def wait_for_one(self, sleep: Callable[[float], None]) -> None:
        """Wait until an attempt ends or the next one is due, and record what ended."""
        next_due = self.due[0][0] if self.due else None
        if not self.running:
            if next_due is not None:
                sleep(max(0.0, next_due - self.clock()))
            return
        room = len(self.running) < self.parallel
        timeout = max(0.0, next_due - self.clock()) if room and next_due is not None else None
        done, _ = wait(self.running, timeout=timeout, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=lambda f: self.running[f][0]):
            i, started = self.running.pop(future)
            self.record(i, started, future)

    def record(self, i: int, started: float, future: Future[Attempt]) -> None:
        progress = self.progress[i]
        progress.attempts += 1
        progress.first_start = started if progress.first_start is None else progress.first_start
        progress.last_end = self.clock()
        try:
            outcome = future.result()
        except Exception as e:  # any failure to run the check is its result, never the run's
            self.finish(i, "error", one_line(e))
            return
        progress.last = outcome
        if outcome.reason is None:
            self.finish(i, "pass", None)
            return
        wait_for = self.checks[i].wait
        deadline = progress.first_start + wait_for if wait_for is not None else None
        next_start = max(started + self.retry_every, progress.last_end)
        if deadline is None or next_start >= deadline:
            self.finish(i, "fail", outcome.reason)
            return
        if self.stopped:
            self.finish(i, "fail", f"{outcome.reason} (not retried: fail-fast)")
            return
        heapq.heappush(self.due, (next_start, i))
        self.update(i, "waiting", outcome.reason, deadline - progress.last_end)

    def finish(self, i: int, result: Result, reason: str | None) -> None:
        check, progress = self.checks[i], self.progress[i]
        seconds = progress.last_end - progress.first_start if progress.first_start is not None else 0.0
        rtts = progress.last.rtts_ms if progress.last else ()
        self.final[i] = CheckResult(
            check.name, check.service, check.kind, result, progress.attempts, seconds, reason, rtts
        )
        self.update(i, result, reason, None)
        if self.fail_fast and result in ("fail", "error") and not self.stopped:
            self.stop(check.name)

    def stop(self, failed: str) -> None:
        """Fail fast: end every check that waits to be tried, first or again."""
        self.stopped = True
        waiting = sorted(i for _, i in self.due)
        self.due.clear()
        for i in waiting:
            last = self.progress[i].last
            if last is None:
                self.finish(i, "skipped", f"not run: fail-fast after {failed!r} failed")
            else:
                self.finish(i, "fail", f"{last.reason} (not retried: fail-fast)")

    def update(self, i: int, state: CheckState, reason: str | None, remaining: float | None) -> None:
        if self.on_update is None:
            return
        progress = self.progress[i]
        seconds = progress.last_end - progress.first_start if progress.first_start is not None else 0.0
        self.on_update(CheckUpdate(i, self.checks[i].name, state, progress.attempts, seconds, reason, remaining))
