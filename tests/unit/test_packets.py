"""Packets as data: the reorder buffer's merge across interfaces, and the flight recorder's bounded ring."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from composens.interop.pcapng import read_pcapng, write_pcapng
from composens.model.packets import PACKET_OVERHEAD_BYTES, CapturedPacket, Interface, PacketRing, ReorderBuffer

T0 = 1_735_689_600_123_456_789
SECOND = 1_000_000_000


def test_reorder_buffer_releases_in_stamp_order_after_the_hold() -> None:
    merge = ReorderBuffer(hold_ns=100)
    merge.push_many(CapturedPacket(i, stamp, b"", 0) for i, stamp in [(0, 10), (0, 30), (1, 20), (1, 200), (2, 20)])

    first = merge.release(now_ns=130)
    rest = merge.drain()

    assert [(p.interface_id, p.timestamp_ns) for p in first] == [(0, 10), (1, 20), (2, 20), (0, 30)]
    assert [p.timestamp_ns for p in rest] == [200]
    assert merge.late == 0
    assert len(merge) == 0


def test_reorder_buffer_counts_packets_that_came_after_their_turn() -> None:
    merge = ReorderBuffer(hold_ns=10)
    merge.push_many([CapturedPacket(0, 100, b"", 0)])
    merge.release(now_ns=200)

    merge.push_many([CapturedPacket(1, 50, b"", 0)])

    assert merge.late == 1
    assert [p.timestamp_ns for p in merge.drain()] == [50]


@given(runs=st.lists(st.lists(st.integers(min_value=0, max_value=10**6), max_size=30), min_size=1, max_size=5))
def test_whatever_each_interface_delivers_in_order_comes_out_merged_in_order(runs: list[list[int]]) -> None:
    merge = ReorderBuffer(hold_ns=0)
    for interface_id, stamps in enumerate(runs):
        merge.push_many(CapturedPacket(interface_id, stamp, b"", 0) for stamp in sorted(stamps))

    out = merge.release(now_ns=5 * 10**5) + merge.drain()

    assert [p.timestamp_ns for p in out] == sorted(stamp for stamps in runs for stamp in stamps)


def packet_at(stamp: int, size: int = 100) -> CapturedPacket:
    return CapturedPacket(0, stamp, bytes(size), size)


def test_ring_forgets_packets_older_than_its_span() -> None:
    ring = PacketRing(keep_ns=10 * SECOND, max_bytes=10**9)
    ring.add_many(packet_at(T0 + second * SECOND) for second in range(30))

    assert [p.timestamp_ns for p in ring.window()] == [T0 + s * SECOND for s in range(19, 30)]
    assert (ring.evicted_packets, ring.evicted_for_room) == (19, 0)


def test_ring_stays_within_its_byte_bound() -> None:
    per_packet = 1000 + PACKET_OVERHEAD_BYTES
    ring = PacketRing(keep_ns=3600 * SECOND, max_bytes=5 * per_packet)
    for index in range(8):
        ring.add_many([packet_at(T0 + index, 1000)])

    assert len(ring) == 5
    assert ring.bytes_held == 5 * per_packet
    assert ring.window()[0].timestamp_ns == T0 + 3
    assert ring.evicted_for_room == 3


def test_ring_expires_on_a_quiet_lab_too() -> None:
    ring = PacketRing(keep_ns=10 * SECOND, max_bytes=10**9)
    ring.add_many([packet_at(T0)])

    ring.expire(T0 + 11 * SECOND)

    assert len(ring) == 0
    assert ring.bytes_held == 0


def test_ring_window_is_inclusive_and_written_as_pcapng() -> None:
    ring = PacketRing(keep_ns=60 * SECOND, max_bytes=10**9)
    ring.add_many(packet_at(T0 + second * SECOND) for second in range(10))
    stream = io.BytesIO()

    write_pcapng(stream, [Interface("r1:eth1")], ring.window(T0 + 2 * SECOND, T0 + 4 * SECOND))

    assert [p.timestamp_ns for p in read_pcapng(stream.getvalue()).packets] == [T0 + s * SECOND for s in (2, 3, 4)]
