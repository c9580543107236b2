"""Probes that run for a whole scenario: requests on a fixed schedule, each matched to its answer, all recorded.

A ping probe sends ICMP or ICMPv6 echo requests from its service's namespace with the pinger of checks (probe.py:
the same packets, the same raw sockets, made by a thread that entered the namespace), request k due at
start + k * interval whatever happened before, and matches each reply to its request by sequence number; it records
when each left, its round trip, or that it was lost (no reply within the probe's timeout, or it could not be sent).

One thread runs every ping probe: it sends what is due, then waits in poll(2) for replies until the next request
is due, so 20 probes at 10 ms cost one thread, not twenty. Each socket carries a classic BPF filter that keeps
only replies with its own identifier (a raw socket otherwise sees every echo reply of its namespace: 20 probes in
one namespace would each read all 20 streams), and the kernel stamps each reply as it arrives (SO_TIMESTAMPNS), so
a round trip does not include the time the loop took to come round to it. Probes start staggered across their
interval so their requests do not all leave at once.

A tcp probe connects to a port on the same kind of schedule, from a thread of its own that stays in its service's
namespace (a connection's socket has to be made there): a request is answered when the connection is made
(refused or timed out: lost), and closed at once with a reset.
"""

from __future__ import annotations

import ctypes
import heapq
import ipaddress
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from composens.model.scenarios import SEQUENCES, Probe, ProbeRecord, Request
from composens.system.kernel.entering import CLONE_NEWNET
from composens.system.run.probe import echo_reply_sequence, echo_request, only_echo_replies

SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
POLL_MASK = select.POLLIN | select.POLLERR
RECEIVE_MAX = 2048


@dataclass
class _Requests:
    """A probe's requests so far (the loop thread appends; others copy under the lock)."""

    sent: list[float] = field(default_factory=list)  # monotonic
    rtts: list[float | None] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)


@dataclass
class _Ping:
    probe: Probe
    sock: socket.socket
    address: tuple[str, int]
    version: int
    ident: int
    token: bytes
    first_due: float
    requests: _Requests = field(default_factory=_Requests)
    sent_wall: list[float] = field(default_factory=list)  # wall clock at each send: kernel stamps are wall clock
    by_sequence: dict[int, int] = field(default_factory=dict)  # sequence number -> request index

    def due(self, k: int) -> float:
        return self.first_due + k * self.probe.interval


def ident_filter(version: int, ident: int) -> bytes:
    """A classic BPF program that keeps only ICMP messages with this identifier (an echo reply's, after the type
    filter): IPv4 raw sockets read from the IP header, ICMPv6 ones from the ICMPv6 header."""
    accept, drop = (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0)
    # IPv4: X = the IP header's length, A = the half-word at X + 4; ICMPv6: A = the half-word at 4.
    program = [(0xB1, 0, 0, 0), (0x48, 0, 0, 4)] if version == 4 else [(0x28, 0, 0, 4)]
    program += [(0x15, 0, 1, ident), accept, drop]  # A == ident: keep it, else drop it
    return b"".join(struct.pack("@HBBI", *instruction) for instruction in program)


def _attach(sock: socket.socket, program: bytes) -> None:
    buffer = ctypes.create_string_buffer(program)  # kept alive until the kernel has copied it
    sock.setsockopt(
        socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("@HP", len(program) // 8, ctypes.addressof(buffer))
    )


def _open_ping(probe: Probe, ident: int) -> socket.socket:
    """A raw echo socket for one probe, in the calling thread's namespace."""
    version = ipaddress.ip_address(probe.to).version
    family, proto = (socket.AF_INET6, socket.IPPROTO_ICMPV6) if version == 6 else (socket.AF_INET, socket.IPPROTO_ICMP)
    sock = socket.socket(family, socket.SOCK_RAW, proto)
    try:
        only_echo_replies(sock, version)
        _attach(sock, ident_filter(version, ident))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _in_namespace(netns_path: str, probe: Probe, ident: int) -> socket.socket:
    """A probe's raw echo socket, made by a thread that entered the namespace (the socket stays bound to it)."""
    from composens.system.kernel.entering import run_in_netns

    made: list[socket.socket] = []
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        run_in_netns(fd, lambda: made.append(_open_ping(probe, ident)))
    finally:
        os.close(fd)
    return made[0]


class Monitor:
    """Every probe of a scenario, from start() until stop(); times in records are seconds since `epoch`."""

    def __init__(self, probes: Sequence[tuple[Probe, str]], *, epoch: float) -> None:
        self.epoch = epoch
        self.wanted = list(probes)  # (probe, docker's mount of its service's namespace)
        self._lock = threading.Lock()
        self._pings: list[_Ping] = []
        self._tcps: list[_TcpProbe] = []
        self._thread: threading.Thread | None = None
        self._stop_at: float | None = None  # monotonic: no request is sent from then on
        self._failure: BaseException | None = None

    def start(self, at: float | None = None) -> None:
        """Open every probe's socket in its namespace and start sending (at `at`, monotonic, or now)."""
        begin = time.monotonic() if at is None else at
        count = len(self.wanted)
        try:
            for i, (probe, netns_path) in enumerate(self.wanted):
                offset = probe.interval * i / count  # staggered across the interval
                if probe.kind == "tcp":
                    self._tcps.append(_TcpProbe(probe, netns_path, begin + offset, self._lock))
                    continue
                ident = int.from_bytes(os.urandom(2), "big")
                sock = _in_namespace(netns_path, probe, ident)
                version = ipaddress.ip_address(probe.to).version
                self._pings.append(_Ping(probe, sock, (probe.to, 0), version, ident, os.urandom(8), begin + offset))
        except BaseException:
            self._close()
            raise
        self._thread = threading.Thread(target=self._run, name="composens-probes", daemon=True)
        self._thread.start()
        for tcp in self._tcps:
            tcp.start()

    def snapshot(self) -> dict[str, ProbeRecord]:
        """Every probe's requests sent so far whose outcome is known now."""
        now = time.monotonic()
        with self._lock:
            found = {}
            for probe, first_due, requests in self._all():
                found[probe.name] = self._record(probe, first_due, requests, now)
        return found

    def stop(self) -> dict[str, ProbeRecord]:
        """Send no more requests, wait for the answers still due, and return every probe's whole record."""
        with self._lock:
            self._stop_at = time.monotonic()
        for tcp in self._tcps:
            tcp.stop(self._stop_at)
        if self._thread is not None:
            self._thread.join()
        for tcp in self._tcps:
            tcp.join()
        self._close()
        if self._failure is not None:
            raise self._failure
        with self._lock:
            return {probe.name: self._record(probe, due, requests, None) for probe, due, requests in self._all()}

    def _all(self) -> list[tuple[Probe, float, _Requests]]:
        by_name = {p.probe.name: (p.probe, p.first_due, p.requests) for p in self._pings}
        by_name |= {t.probe.name: (t.probe, t.first_due, t.requests) for t in self._tcps}
        return [by_name[probe.name] for probe, _ in self.wanted]

    def _record(self, probe: Probe, first_due: float, requests: _Requests, now: float | None) -> ProbeRecord:
        """Requests as a record: up to the first whose outcome is not known yet (now: all are known)."""
        found = []
        for k, sent in enumerate(requests.sent):
            relative = sent - self.epoch
            rtt = requests.rtts[k]
            if rtt is None and now is not None and k not in requests.errors and now - sent < probe.timeout:
                break  # still waiting for its answer
            found.append(Request(relative, rtt, requests.errors.get(k)))
        return ProbeRecord(probe, tuple(found), first_due - self.epoch)

    def _close(self) -> None:
        for ping in self._pings:
            ping.sock.close()

    # ------------------------------------------------------------------ the loop thread

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # reported by stop(), in the caller's thread
            self._failure = e

    def _loop(self) -> None:
        poller = select.poll()
        by_fd = {}
        for ping in self._pings:
            poller.register(ping.sock.fileno(), POLL_MASK)
            by_fd[ping.sock.fileno()] = ping
        due = [(ping.first_due, i, 0) for i, ping in enumerate(self._pings)]  # (when, probe, request number)
        heapq.heapify(due)
        last_sent = time.monotonic()
        while True:
            now = time.monotonic()
            if self._stop_at is not None:
                due.clear()
                if now >= last_sent + self._longest_timeout() or not self._waiting(now):
                    return
            while due and due[0][0] <= now:
                _, i, k = heapq.heappop(due)
                self._send(self._pings[i], k)
                last_sent = time.monotonic()
                heapq.heappush(due, (self._pings[i].due(k + 1), i, k + 1))
                now = time.monotonic()
            wait = (due[0][0] if due else now + 0.05) - time.monotonic()
            if wait > 0.001:
                events = poller.poll(int(wait * 1000))  # whole milliseconds, rounded down: never late for a send
            elif wait > 0:
                time.sleep(wait)  # under a millisecond: nanosleep, then send
                events = poller.poll(0)
            else:
                events = poller.poll(0)
            for fd, _ in events:
                self._receive(by_fd[fd])

    def _longest_timeout(self) -> float:
        return max((p.probe.timeout for p in self._pings), default=0.0)

    def _waiting(self, now: float) -> bool:
        """Tell whether a request sent may still be answered (only the latest can be: the rest timed out)."""
        with self._lock:
            for ping in self._pings:
                requests = ping.requests
                recent = int(ping.probe.timeout / ping.probe.interval) + 2
                for k in range(max(0, len(requests.sent) - recent), len(requests.sent)):
                    unanswered = requests.rtts[k] is None and k not in requests.errors
                    if unanswered and now - requests.sent[k] < ping.probe.timeout:
                        return True
        return False

    def _send(self, ping: _Ping, k: int) -> None:
        packet = echo_request(ping.version, ping.ident, k % SEQUENCES, ping.token)
        wall = time.time()
        sent = time.monotonic()
        error = None
        try:
            ping.sock.sendto(packet, ping.address)
        except OSError as e:  # no route, say: the request is lost, and why is kept
            error = e.strerror or str(e)
        with self._lock:
            ping.requests.sent.append(sent)
            ping.requests.rtts.append(None)
            if error is not None:
                ping.requests.errors[k] = error
        ping.sent_wall.append(wall)
        ping.by_sequence[k % SEQUENCES] = k

    def _receive(self, ping: _Ping) -> None:
        while True:
            try:
                data, ancillary, _, source = ping.sock.recvmsg(RECEIVE_MAX, _ANCILLARY)
            except BlockingIOError:
                return
            except OSError:  # an ICMP error queued on the socket: the request times out as lost
                continue
            arrived_wall = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                    arrived_wall = seconds + nanoseconds / 1e9
            if source[0].split("%")[0] != ping.probe.to:
                continue
            sequence = echo_reply_sequence(data, ping.version, ping.ident, ping.token)
            k = ping.by_sequence.get(sequence) if sequence is not None else None
            if k is None:
                continue
            rtt = max(0.0, arrived_wall - ping.sent_wall[k])
            with self._lock:
                if ping.requests.rtts[k] is None and k not in ping.requests.errors and rtt <= ping.probe.timeout:
                    ping.requests.rtts[k] = rtt


class _TcpProbe:
    """Connections on a fixed schedule from a thread that stays in the probe's namespace."""

    def __init__(self, probe: Probe, netns_path: str, first_due: float, lock: threading.Lock) -> None:
        self.probe = probe
        self.netns_path = netns_path
        self.first_due = first_due
        self.lock = lock
        self.requests = _Requests()
        self._stop_at: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"composens-probe-{probe.name}", daemon=True)
        self.failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, at: float) -> None:
        self._stop_at = at

    def join(self) -> None:
        self._thread.join()
        if self.failure is not None:
            raise self.failure

    def _run(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(self.netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:  # this thread only
                    raise OSError(ctypes.get_errno(), f"setns {self.netns_path} failed")
            finally:
                os.close(fd)
            self._loop()
        except BaseException as e:
            self.failure = e

    def _loop(self) -> None:
        family = socket.AF_INET6 if ipaddress.ip_address(self.probe.to).version == 6 else socket.AF_INET
        assert self.probe.port is not None
        address = (self.probe.to, self.probe.port)
        pending: dict[int, tuple[socket.socket, float]] = {}  # request -> (socket, when it left)
        poller = select.poll()
        by_fd: dict[int, int] = {}
        k = 0
        linger = struct.pack("@ii", 1, 0)  # close with a reset: no TIME_WAIT left behind
        while True:
            now = time.monotonic()
            stopping = self._stop_at is not None
            if stopping and not pending:
                return
            if not stopping and now >= self.first_due + k * self.probe.interval:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                sent = time.monotonic()
                error = None
                try:
                    sock.connect(address)
                except BlockingIOError:
                    pass
                except OSError as e:
                    error = e.strerror or str(e)
                with self.lock:
                    self.requests.sent.append(sent)
                    self.requests.rtts.append(None)
                    if error is not None:
                        self.requests.errors[k] = error
                if error is None:
                    pending[k] = (sock, sent)
                    poller.register(sock.fileno(), select.POLLOUT | select.POLLERR)
                    by_fd[sock.fileno()] = k
                else:
                    sock.close()
                k += 1
            next_due = self.first_due + k * self.probe.interval
            deadlines = [sent + self.probe.timeout for _, sent in pending.values()]
            until = min([*deadlines, *([] if stopping else [next_due])], default=now + 0.05)
            wait = until - time.monotonic()
            events = poller.poll(max(0, int(wait * 1000)) if wait > 0.001 else 0)
            if 0 < wait <= 0.001 and not events:
                time.sleep(wait)
            answered = time.monotonic()
            for fd, _ in events:
                request = by_fd.pop(fd)
                sock, sent = pending.pop(request)
                poller.unregister(fd)
                problem = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                with self.lock:
                    if problem == 0 and answered - sent <= self.probe.timeout:
                        self.requests.rtts[request] = answered - sent
                    elif problem:
                        self.requests.errors[request] = os.strerror(problem)
                sock.close()
            for request, (sock, sent) in list(pending.items()):
                if time.monotonic() - sent > self.probe.timeout:
                    poller.unregister(sock.fileno())
                    by_fd.pop(sock.fileno(), None)
                    del pending[request]
                    sock.close()
