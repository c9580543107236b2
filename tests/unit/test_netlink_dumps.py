"""netlink dumps that end in an error, stay interrupted or carry malformed messages: each is a reading failure
(netlink.NetlinkError, an OSError: reading.py falls back to `ip -json` on it), never a partial answer, never a crash.

The kernel's answers are built byte by byte and handed out by a socket stand-in (no kernel needed);
tests/integration/test_netlink.py checks on the kernel that the fallback reads what netlink reads.
"""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from composens.system.kernel import netlink as nl
from tests.unit.test_netlink_parse import attr, link, linkinfo, u32


def message(kind: int, payload: bytes, *, seq: int, flags: int = 0, length: int | None = None) -> bytes:
    size = nl.NLMSG.size + len(payload) if length is None else length
    raw = nl.NLMSG.pack(size, kind, flags, seq, 0) + payload
    return raw + b"\0" * ((4 - len(raw) % 4) % 4)


def done(seq: int, status: int = 0, *, flags: int = 0) -> bytes:
    return message(nl.NLMSG_DONE, struct.pack("=i", status), seq=seq, flags=flags)


class Answers:
    """A netlink socket stand-in: each request is answered by the next list of datagrams."""

    def __init__(self, *answers: list[bytes], truncated: bool = False) -> None:
        self.answers = list(answers)
        self.pending: list[bytes] = []
        self.requests = 0
        self.truncated = truncated  # every datagram flagged MSG_TRUNC, as the kernel flags one too big for the buffer

    def send(self, data: bytes) -> int:
        self.requests += 1
        self.pending = list(self.answers.pop(0)) if self.answers else []
        return len(data)

    def recvmsg(self, size: int) -> tuple[bytes, list[object], int, object]:
        if not self.pending:
            raise AssertionError("read past the end of the answer")
        return self.pending.pop(0), [], socket.MSG_TRUNC if self.truncated else 0, None

    def recv(self, size: int) -> bytes:
        return self.recvmsg(size)[0]


def lo(seq: int, *, flags: int = 0) -> bytes:
    return message(nl.RTM_NEWLINK, link(1, "lo"), seq=seq, flags=flags)


SEQ = nl.RTM_GETLINK  # the sequence number a link dump is asked with


def dump_links(sock: Answers) -> list[bytes]:
    return nl.dump(sock, nl.RTM_GETLINK, b"")  # type: ignore[arg-type]


def test_a_whole_dump_is_read() -> None:
    payloads = dump_links(Answers([lo(SEQ) + message(nl.RTM_NEWLINK, link(2, "eth1"), seq=SEQ), done(SEQ)]))
    assert [nl.parse(payloads, [], []).namespace.links[name].index for name in ("lo", "eth1")] == [1, 2]


def test_a_dump_that_ends_in_an_error_fails_as_ip_fails_it() -> None:
    """NLMSG_DONE carrying -EMSGSIZE: what came before it is not the whole namespace."""
    sock = Answers([lo(SEQ), done(SEQ, -errno.EMSGSIZE)])
    with pytest.raises(OSError, match="Message too long") as failed:
        dump_links(sock)
    assert failed.value.errno == errno.EMSGSIZE


def test_a_dump_end_without_its_status_fails() -> None:
    truncated_done = message(nl.NLMSG_DONE, b"", seq=SEQ)
    with pytest.raises(OSError, match="truncated"):
        dump_links(Answers([lo(SEQ), truncated_done]))


def test_an_error_message_without_its_code_fails() -> None:
    with pytest.raises(OSError, match="truncated"):
        dump_links(Answers([message(nl.NLMSG_ERROR, b"\0\0", seq=SEQ)]))


def test_an_interrupted_dump_is_asked_again_until_whole() -> None:
    interrupted = [lo(SEQ, flags=nl.NLM_F_DUMP_INTR), done(SEQ, flags=nl.NLM_F_DUMP_INTR)]
    whole = [lo(SEQ) + message(nl.RTM_NEWLINK, link(2, "eth1"), seq=SEQ), done(SEQ)]
    sock = Answers(*[interrupted] * (nl.TRIES - 1), whole)
    assert len(dump_links(sock)) == 2
    assert sock.requests == nl.TRIES


def test_a_dump_interrupted_every_time_fails_rather_than_passing_for_whole() -> None:
    interrupted = [lo(SEQ), done(SEQ, flags=nl.NLM_F_DUMP_INTR)]  # the flag on the last part only
    sock = Answers(*[interrupted] * nl.TRIES)
    with pytest.raises(OSError, match=f"interrupted {nl.TRIES} times"):
        dump_links(sock)
    assert sock.requests == nl.TRIES
    assert nl.TRIES >= 10  # retried more than the three tries that let an inconsistent dump through


def test_a_message_longer_than_what_came_fails() -> None:
    """An overlong message is not cut to what the datagram holds."""
    overlong = message(nl.RTM_NEWLINK, link(1, "lo"), seq=SEQ, length=nl.NLMSG.size + 400)
    with pytest.raises(OSError, match="416 bytes where 40 came"):
        dump_links(Answers([overlong, done(SEQ)]))


def test_a_message_shorter_than_its_header_fails() -> None:
    with pytest.raises(OSError, match="a message of 8 bytes"):
        dump_links(Answers([message(nl.RTM_NEWLINK, b"", seq=SEQ, length=8), done(SEQ)]))


def test_stray_bytes_after_the_last_message_fail() -> None:
    with pytest.raises(OSError, match="stray"):
        dump_links(Answers([lo(SEQ) + b"\1\0\0\0\0\0\0\0", done(SEQ)]))


def test_a_datagram_cut_by_the_receive_buffer_fails() -> None:
    with pytest.raises(OSError, match="buffer"):
        dump_links(Answers([lo(SEQ), done(SEQ)], truncated=True))


def test_answers_to_other_requests_are_skipped() -> None:
    """Another sequence number (a notification, say) is not part of the dump, but must still be well formed."""
    other = message(nl.RTM_NEWLINK, link(7, "x"), seq=0)
    assert len(dump_links(Answers([other + lo(SEQ), done(SEQ)]))) == 1


@pytest.mark.parametrize(
    ("links", "addresses", "routes"),
    [
        pytest.param([link(1, "lo", attr(nl.IFLA_MTU, b"\1\0"))], [], [], id="a u32 attribute of two bytes"),
        pytest.param([link(1, "lo") + struct.pack("=HH", 40, nl.IFLA_MTU) + u32(1500)], [], [], id="attr past end"),
        pytest.param([link(1, "lo") + struct.pack("=HH", 2, nl.IFLA_MTU)], [], [], id="attr shorter than its head"),
        pytest.param([b"\0" * 8], [], [], id="a link message shorter than ifinfomsg"),
        pytest.param(
            [link(1, "vx0", linkinfo("vxlan", attr(nl.IFLA_VXLAN_PORT, b"\1")))],
            [],
            [],
            id="a vxlan port of one byte",
        ),
        pytest.param(
            [link(1, "br0", linkinfo("bridge", attr(nl.IFLA_BR_MCAST_SNOOPING, b"")))],
            [],
            [],
            id="an empty bridge option",
        ),
        pytest.param(
            [link(2, "eth1")],
            [nl.IFADDRMSG.pack(socket.AF_INET, 24, 0, 0, 2) + attr(nl.IFA_LOCAL, b"\xc6\x12\0")],
            [],
            id="an IPv4 address of three bytes",
        ),
        pytest.param(
            [link(2, "eth1")],
            [],
            [nl.RTMSG.pack(socket.AF_INET6, 64, 0, 0, 254, 3, 0, 1, 0) + attr(nl.RTA_DST, b"\xfe\x80")],
            id="an IPv6 destination of two bytes",
        ),
        pytest.param([link(2, "eth1")], [], [b"\x02\x18"], id="a route message shorter than rtmsg"),
    ],
)
def test_a_malformed_message_is_a_reading_failure_not_a_crash(
    links: list[bytes], addresses: list[bytes], routes: list[bytes]
) -> None:
    with pytest.raises(OSError, match="malformed"):
        nl.parse(links, addresses, routes)


class Recorded(Answers):
    def __init__(self, *answers: list[bytes]) -> None:
        super().__init__(*answers)
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return super().send(data)


def test_sync_link_asks_for_one_link_by_name_and_takes_its_answer() -> None:
    sock = Recorded([message(nl.RTM_NEWLINK, link(2, "eth1"), seq=nl.SYNC_SEQ)])
    nl.sync_link(sock, "eth1")  # type: ignore[arg-type]
    (request,) = sock.sent
    length, kind, flags, seq, _ = nl.NLMSG.unpack_from(request)
    assert (length, kind, flags, seq) == (len(request), nl.RTM_GETLINK, nl.NLM_F_REQUEST, nl.SYNC_SEQ)  # no dump
    asked = nl.attributes(request, nl.NLMSG.size + nl.IFINFOMSG.size)
    assert asked[nl.IFLA_IFNAME] == b"eth1\0"
    assert sock.pending == []


def test_sync_link_of_a_link_that_is_not_there_fails() -> None:
    no_device = message(nl.NLMSG_ERROR, struct.pack("=i", -errno.ENODEV) + b"\0" * 16, seq=nl.SYNC_SEQ)
    with pytest.raises(OSError, match="No such device") as failed:
        nl.sync_link(Answers([no_device]), "eth9")  # type: ignore[arg-type]
    assert failed.value.errno == errno.ENODEV
