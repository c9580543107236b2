"""Packet capture on lab interfaces: a packet socket per interface, opened in its namespace, all read by this process.

For each target a thread enters the namespace (entering.run_in_netns), makes `socket(AF_PACKET, SOCK_RAW, 0)`
(protocol 0 receives nothing, so no packet gets in before the filter), attaches a classic BPF program (the one
`tcpdump -ddd` compiles for the filter, or `ret #snaplen`), asks for a TPACKET_V3 ring (what libpcap uses: the
kernel fills blocks of packets with their headers and nanosecond stamps, and hands a block over when it is full
or 50 ms after its first packet), binds to the interface, turns promiscuous mode on for itself (as tcpdump does)
and ends. The socket stays in that namespace wherever it is read from; this process never moves. One selector
loop reads every ring.

Why not a tcpdump per interface, merged (bench/README.md, "the whole lab in one capture"; the design research's
figures in bench/capture-design.md): on 8 interfaces, tcpdump pipes merged in Python cost as much CPU a
packet as these rings, dropped more at 20 kpps per link, lose the packets of libpcap's last block (up to 1 s) when
stopped, cannot say a packet's direction, and every tcpdump keeps its namespace alive; dumpcap merging tcpdump FIFOs
(C all the way, a well-kept tool) cost 0.8 to 1.4x these rings' CPU, wrote 66-85% of the packets out of time
order and kept 0.59-0.73 of them. Neither meets the 1.2x-of-plain-tcpdump CPU goal (these rings: 17-24x at
small-packet UDP load, with every packet captured); nothing that looks at each packet in Python does.

Lifecycle. A socket keeps its namespace, and so the veths in it, alive after the container stops: the peer would
still see its end up, and a restart could not make the link again. So each target's container is watched through
a pidfd on its first process, and when it exits the socket is closed at once. A socket whose interface is deleted
(the peer's container restarted, say) gets ENETDOWN and no further packet; one whose interface only went down
(`composens link down`) gets the same error but stays bound and captures again once it is up, so the two are told
apart by whether the socket still has its interface. A closed target is looked for again about every second
(`locate`), and captured again, under the same interface id, once its interface exists again.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import selectors
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from composens.model.errors import ComposensError, ConfigError
from composens.model.packets import LINKTYPE_ETHERNET, LINKTYPE_RAW, CapturedPacket, Direction
from composens.system.kernel.entering import run_in_netns

# Linux ABI numbers the socket module of Python 3.11 does not name.
SO_ATTACH_FILTER = 26
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
ETH_P_ALL = 0x0003
BPF_RET_K = 0x06
# The ring: blocks of 1 MiB, handed over when full or 50 ms after their first packet (which bounds how late a
# packet reaches us, and so how long the merge must hold packets).
RING_BLOCK_SIZE = 1 << 20
DEFAULT_RING_BLOCKS = 4  # 4 MiB of kernel memory per interface (libpcap's default is 2 MiB)
RING_FRAME_SIZE = 2048  # TPACKET_V3 packs frames of any size; the kernel only checks this divides the block
RING_RETIRE_MS = 50
HOLD_NS = 200_000_000  # how long the merge holds a packet for a later-read one with an earlier stamp
# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1's status, num_pkts, offset_to_first_pkt.
BLOCK_HEAD = struct.Struct("<III")
BLOCK_STATUS_OFFSET = 8
# struct tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac offset; hv1's vlan_tci and vlan_tpid at 36.
PACKET_HEAD = struct.Struct("<IIIIIIH")
VLAN_HEAD = struct.Struct("<IH")
VLAN_OFFSET = 36
PKTTYPE_OFFSET = 48 + 10  # sll_pkttype in the struct sockaddr_ll that follows the 48-byte header
ARPHRD_LINKTYPES = {1: LINKTYPE_ETHERNET, 772: LINKTYPE_ETHERNET, 0xFFFE: LINKTYPE_RAW}  # ether, loopback, none
REOPEN_EVERY = 1.0  # s between looks for a target that went away
GONE_ERRNOS = (errno.ENETDOWN, errno.ENXIO, errno.ENODEV)

INSTALL_HINT = (
    "a capture filter needs tcpdump, which compiles it: apt-get install tcpdump (scripts/bootstrap.sh does it)"
)


@dataclass(frozen=True)
class CapturePoint:
    """Where a target is now: a path that opens its namespace, its interface there, the process it lives by."""

    netns: str  # docker's mount of a container's namespace, the hub's entry, or /proc/self/ns/net for the host
    ifname: str
    pid: int | None = None  # the container's first process: when it exits, the namespace is let go; None: no watch


class Gone:
    """What `locate` answers for a target that will not come back (its container or hub no longer exists)."""


GONE = Gone()
Locate = Callable[[int], "CapturePoint | Gone | None"]  # interface id -> where it is now, GONE, or None: not now


class InterfaceMissing(ComposensError):
    """A target's interface does not exist now."""


# --------------------------------------------------------------------------- the filter


def take_all(snaplen: int) -> bytes:
    """Return the program that takes every packet, cut to the snaplen (so the kernel copies no more)."""
    return struct.pack("@HBBI", BPF_RET_K, 0, 0, snaplen)


def compile_filter(point: CapturePoint, expression: str, snaplen: int) -> bytes:
    """Return the classic BPF program tcpdump compiles for an interface (struct sock_filter[]); none: take all."""
    if not expression:
        return take_all(snaplen)
    # -i: compiled for the live interface, as libpcap attaches it (`vlan` uses the kernel's ancillary VLAN loads).
    argv = ["nsenter", f"--net={point.netns}", "tcpdump", "-i", point.ifname, "-s", str(snaplen), "-ddd"]
    try:
        done = subprocess.run([*argv, "--", expression], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ComposensError(INSTALL_HINT) from None
    if done.returncode != 0:
        if "tcpdump: not found" in done.stderr or "No such file" in done.stderr:
            raise ComposensError(INSTALL_HINT)
        if "No such device" in done.stderr:
            raise InterfaceMissing(f"{point.ifname} does not exist there now")
        said = [line for line in done.stderr.splitlines() if line.strip()]
        reason = said[-1].removeprefix("tcpdump: ") if said else f"tcpdump exited {done.returncode}"
        raise ConfigError(f"capture filter {expression!r}: {reason}")
    lines = done.stdout.split("\n")
    count = int(lines[0])
    return b"".join(struct.pack("@HBBI", *map(int, line.split())) for line in lines[1 : 1 + count])


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    """Attach a classic BPF program: SO_ATTACH_FILTER takes a struct sock_fprog, a length and a pointer."""
    import ctypes

    instructions = ctypes.create_string_buffer(program)  # the kernel copies it during the call
    fprog = struct.pack("@HP", len(program) // 8, ctypes.addressof(instructions))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


# --------------------------------------------------------------------------- one interface


def open_socket(point: CapturePoint, program: bytes, ring_blocks: int) -> socket.socket:
    """Open a packet socket with its ring on the point's interface, from a thread inside its namespace.

    An interface that does not exist there now is InterfaceMissing; a namespace that cannot be opened, too.
    """
    made: list[socket.socket] = []

    def in_namespace() -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            _attach_filter(sock, program)
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frames = RING_BLOCK_SIZE * ring_blocks // RING_FRAME_SIZE
            request = struct.pack("7I", RING_BLOCK_SIZE, ring_blocks, RING_FRAME_SIZE, frames, RING_RETIRE_MS, 0, 0)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
            sock.bind((point.ifname, ETH_P_ALL))
            # Promiscuous, as tcpdump is: a LAN's bridge passes up the frames it forwards between its ports only
            # then. A membership of this socket's: the kernel drops it with the socket, so nothing lingers.
            index = socket.if_nametoindex(point.ifname)  # in this thread's namespace: the interface's
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, struct.pack("@iHH8s", index, PACKET_MR_PROMISC, 0, b""))
        except BaseException:
            sock.close()
            raise
        made.append(sock)

    try:
        fd = os.open(point.netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise InterfaceMissing(f"its namespace {point.netns} cannot be opened: {e.strerror}") from None
    try:
        run_in_netns(fd, in_namespace)
    except OSError as e:
        if e.errno in GONE_ERRNOS:
            raise InterfaceMissing(f"{point.ifname} does not exist there now") from None
        raise ComposensError(f"cannot capture on {point.ifname}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    return made[0]


@dataclass
class _Source:
    """One target's socket, its ring, and its counters over every socket it had."""

    interface_id: int
    point: CapturePoint | None = None
    sock: socket.socket | None = None
    ring: mmap.mmap | None = None
    pidfd: int | None = None
    blocks: int = DEFAULT_RING_BLOCKS
    next_block: int = 0
    received: int = 0
    dropped: int = 0
    gone: bool = False  # it will not come back
    next_look: float = 0.0
    ending: float | None = None  # when to take its last block and close it (its container stopped, say)
    ending_why: str = ""

    @property
    def open(self) -> bool:
        return self.sock is not None


@dataclass
class CaptureNote:
    """Something a capture has to say while it runs: a target that ended, or that is captured again."""

    interface_id: int
    text: str


@dataclass
class PacketCapture:
    """Packet sockets on many interfaces of many namespaces, read by one selector loop.

    read() waits for packets and returns those the rings handed over, in each interface's order (merge them with
    composens.model.packets.ReorderBuffer); close() takes what is left and gives every interface's counters.
    """

    program: bytes  # the filter every socket gets (compile_filter): lab interfaces are all Ethernet
    ring_blocks: int = DEFAULT_RING_BLOCKS
    locate: Locate | None = None  # where a target that went away is now; None: it stays closed
    notes: list[CaptureNote] = field(default_factory=list)
    linktypes: list[int] = field(default_factory=list)
    _sources: list[_Source] = field(default_factory=list)
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    _closed: bool = False

    def add(self, point: CapturePoint | None) -> int:
        """Capture on one more target (None: not there now; looked for with `locate`); return its interface id.

        InterfaceMissing when the interface cannot be opened now.
        """
        source = _Source(len(self._sources), blocks=self.ring_blocks)
        self._sources.append(source)
        self.linktypes.append(LINKTYPE_ETHERNET)
        if point is not None:
            try:
                self._open(source, point)
            except BaseException:
                self._sources.pop()
                self.linktypes.pop()
                raise
        return source.interface_id

    @property
    def all_gone(self) -> bool:
        """Say whether no target is open and none will come back."""
        return bool(self._sources) and all(s.gone for s in self._sources)

    def read(self, timeout: float) -> list[CapturedPacket]:
        """Wait up to `timeout` s for blocks of packets, and return their packets; handle targets that went away."""
        packets: list[CapturedPacket] = []
        endings = [s.ending for s in self._sources if s.ending is not None]
        if endings:
            timeout = max(0.0, min(timeout, min(endings) - time.monotonic()))
        for key, _ in self._selector.select(timeout=timeout):
            source, is_exit = key.data
            if not source.open:
                continue  # closed by an earlier event of this round
            if is_exit:
                self._selector.unregister(key.fd)
                self._ending(source, "its container stopped")
                continue
            try:
                self._take(source, packets, budget=2)
            except OSError as e:
                if e.errno not in GONE_ERRNOS:
                    raise
                self._lost_interface(source)
        now = time.monotonic()
        for source in self._sources:
            if source.open and source.ending is not None and now >= source.ending:
                with contextlib.suppress(OSError):
                    self._take(source, packets, budget=source.blocks)
                self._end(source, source.ending_why)
        self._look_again()
        return packets

    def counters(self) -> list[tuple[int, int]]:
        """Return each interface's (received, dropped) so far, as the kernel counted them."""
        for source in self._sources:
            _read_counters(source)
        return [(s.received, s.dropped) for s in self._sources]

    def close(self) -> tuple[list[CapturedPacket], list[tuple[int, int]]]:
        """Stop: take the packets still in the rings, close every socket; return them and (received, dropped) each.

        Closing again returns no packet and the same counters."""
        if self._closed:
            return [], [(s.received, s.dropped) for s in self._sources]
        self._closed = True
        for source in self._sources:
            _freeze(source)
        time.sleep(RING_RETIRE_MS / 1000 + 0.01)  # the block being filled is handed over by then: take it too
        packets: list[CapturedPacket] = []
        for source in self._sources:
            if source.open:
                with contextlib.suppress(OSError):  # gone meanwhile: its counters still count
                    self._take(source, packets, budget=source.blocks)
            self._close(source)
        self._selector.close()
        return packets, [(s.received, s.dropped) for s in self._sources]

    # ------------------------------------------------------------------ inside

    def _open(self, source: _Source, point: CapturePoint) -> None:
        pidfd = None
        if point.pid is not None:
            # Opened before the socket: if this process is gone already, the namespace is not the container's now.
            try:
                pidfd = os.pidfd_open(point.pid)
                same = os.stat(f"/proc/{point.pid}/ns/net").st_ino == os.stat(point.netns).st_ino
            except (ProcessLookupError, FileNotFoundError):
                same = False
            if not same:
                if pidfd is not None:
                    os.close(pidfd)
                raise InterfaceMissing("its container is not running, or restarted meanwhile")
        try:
            sock = open_socket(point, self.program, source.blocks)
        except BaseException:
            if pidfd is not None:
                os.close(pidfd)
            raise
        try:
            sock.setblocking(False)
            source.ring = mmap.mmap(sock.fileno(), RING_BLOCK_SIZE * source.blocks)
        except BaseException:
            sock.close()
            if pidfd is not None:
                os.close(pidfd)
            raise
        source.sock, source.point, source.pidfd, source.next_block = sock, point, pidfd, 0
        self.linktypes[source.interface_id] = ARPHRD_LINKTYPES.get(sock.getsockname()[3], LINKTYPE_ETHERNET)
        self._selector.register(sock, selectors.EVENT_READ, (source, False))
        if pidfd is not None:
            self._selector.register(pidfd, selectors.EVENT_READ, (source, True))

    def _take(self, source: _Source, packets: list[CapturedPacket], budget: int) -> None:
        """Take the packets of up to `budget` blocks the kernel handed over, and hand the blocks back."""
        ring, sock = source.ring, source.sock
        assert ring is not None
        assert sock is not None
        interface_id = source.interface_id
        append = packets.append
        unpack_packet, unpack_vlan = PACKET_HEAD.unpack_from, VLAN_HEAD.unpack_from
        outgoing, inbound, outbound = socket.PACKET_OUTGOING, Direction.INBOUND, Direction.OUTBOUND
        for _ in range(budget):
            block = source.next_block * RING_BLOCK_SIZE
            status, count, offset = BLOCK_HEAD.unpack_from(ring, block + BLOCK_STATUS_OFFSET)
            if not status & TP_STATUS_USER:
                # Woken with no block: an error (ENETDOWN) only SO_ERROR tells, since a ring reader never calls
                # recv; reading it clears it, else the selector would keep waking us for it.
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, os.strerror(error))
                return
            offset += block
            for _ in range(count):
                next_offset, seconds, nanoseconds, captured, length, status, mac = unpack_packet(ring, offset)
                data = ring[offset + mac : offset + mac + captured]
                if status & TP_STATUS_VLAN_VALID:
                    # The kernel took the 802.1Q tag out of the frame; put it back where it was, as libpcap does.
                    tci, tpid = unpack_vlan(ring, offset + VLAN_OFFSET)
                    tag = struct.pack("!HH", tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100, tci & 0xFFFF)
                    data, length = data[:12] + tag + data[12:], length + 4
                direction = outbound if ring[offset + PKTTYPE_OFFSET] == outgoing else inbound
                append(CapturedPacket(interface_id, seconds * 1_000_000_000 + nanoseconds, data, length, direction))
                offset += next_offset
            struct.pack_into("<I", ring, block + BLOCK_STATUS_OFFSET, TP_STATUS_KERNEL)
            source.next_block = (source.next_block + 1) % source.blocks

    def _lost_interface(self, source: _Source) -> None:
        """ENETDOWN: the interface went down (the socket stays bound and resumes) or was deleted (close it)."""
        assert source.sock is not None
        try:
            still_bound = bool(source.sock.getsockname()[0])  # its interface's name; "" once it is unregistered
        except OSError:
            still_bound = False
        if not still_bound:
            self._ending(source, "its interface was deleted")

    def _ending(self, source: _Source, why: str) -> None:
        """Close a source once the kernel has handed over the block it was filling (RING_RETIRE_MS), so the
        packets it holds are not lost; its namespace is let go that much later. Frozen first: a packet that came
        after that block would go into one never handed over, counted by the kernel and never seen."""
        if source.ending is None:
            _freeze(source)
            source.ending = time.monotonic() + RING_RETIRE_MS / 1000 + 0.01
            source.ending_why = why

    def _end(self, source: _Source, why: str) -> None:
        source.ending = None
        self._close(source)
        self.notes.append(CaptureNote(source.interface_id, why))
        source.next_look = time.monotonic() + REOPEN_EVERY / 2
        if self.locate is None:
            source.gone = True

    def _close(self, source: _Source) -> None:
        """Keep a socket's final counters, then close it: its namespace is free to go."""
        if source.sock is not None:
            _read_counters(source)
            self._selector.unregister(source.sock)
            if source.ring is not None:
                source.ring.close()
            source.sock.close()
        if source.pidfd is not None:
            with contextlib.suppress(KeyError):  # unregistered already when it fired
                self._selector.unregister(source.pidfd)
            os.close(source.pidfd)
        source.sock, source.ring, source.pidfd = None, None, None

    def _look_again(self) -> None:
        """Look for targets that went away, about every second each, and capture again those that are back."""
        if self.locate is None:
            return
        now = time.monotonic()
        for source in self._sources:
            if source.open or source.gone or now < source.next_look:
                continue
            source.next_look = now + REOPEN_EVERY
            found = self.locate(source.interface_id)
            if isinstance(found, Gone):
                source.gone = True
                self.notes.append(CaptureNote(source.interface_id, "it is gone"))
            elif found is not None:
                try:
                    self._open(source, found)
                except InterfaceMissing:
                    continue  # not wired again yet
                self.notes.append(CaptureNote(source.interface_id, "captured again"))


def _read_counters(source: _Source) -> None:
    """Add what the kernel counted on a source's socket since the last read (reading resets the counters)."""
    if source.sock is None:
        return
    try:
        packets, drops = struct.unpack_from("II", source.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
    except OSError:
        return
    source.received += packets  # tp_packets counts the dropped ones too, as libpcap's ps_recv does
    source.dropped += drops


def _freeze(source: _Source) -> None:
    """Let no more packets into a source's ring (a filter that takes none), so that what it has can be drained."""
    if source.sock is not None:
        with contextlib.suppress(OSError):
            _attach_filter(source.sock, take_all(0))
