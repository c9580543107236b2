"""The pcapng writer, read back by its own minimal reader and by tshark, capinfos and tcpdump."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from composens.interop.pcapng import (
    EPB_TYPE,
    IDB_TYPE,
    ISB_TYPE,
    SHB_TYPE,
    PcapngFormatError,
    PcapngWriter,
    read_pcapng,
    write_pcapng,
)
from composens.model.packets import LINKTYPE_RAW, CapturedPacket, Direction, Interface, InterfaceStatistics

# 2025-01-01T00:00:00.123456789Z: a stamp whose nanoseconds and high 32 bits both matter.
T0 = 1_735_689_600_123_456_789
SECOND = 1_000_000_000

R1_ETH1 = Interface("r1:eth1", description="r1:eth1 -> r2:eth1", filter="icmp or arp")
LAN1 = Interface("lan1", linktype=LINKTYPE_RAW, snaplen=96)


def ethernet_frame(payload_length: int, marker: int = 0) -> bytes:
    """Build a broadcast frame of an unassigned ethertype, so that dissectors take it as data."""
    return b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes([marker % 256]) * payload_length


def sample_capture() -> bytes:
    """Write two interfaces, three packets (one cut to its snaplen) and their statistics."""
    stream = io.BytesIO()
    write_pcapng(
        stream,
        [R1_ETH1, LAN1],
        [
            CapturedPacket(0, T0, ethernet_frame(47), 61, Direction.OUTBOUND),
            CapturedPacket(1, T0 + 1, b"\x45" + b"\0" * 95, 1500),
            CapturedPacket(0, T0 + SECOND, ethernet_frame(50, 1), 64, Direction.INBOUND),
        ],
        [
            InterfaceStatistics(
                0, T0 + 2 * SECOND, received=2, dropped=0, start_ns=T0 - SECOND, end_ns=T0 + 2 * SECOND
            ),
            InterfaceStatistics(1, T0 + 2 * SECOND, received=5, dropped=3),
        ],
    )
    return stream.getvalue()


def blocks(data: bytes) -> list[tuple[int, int]]:
    """List (type, total length) of each block, checking that both copies of the length agree."""
    found = []
    offset = 0
    while offset < len(data):
        block_type, total = struct.unpack_from("<II", data, offset)
        assert total % 4 == 0
        assert struct.unpack_from("<I", data, offset + total - 4)[0] == total
        found.append((block_type, total))
        offset += total
    assert offset == len(data)
    return found


# --- the writer, read back by the minimal reader ---


def test_blocks_are_whole_and_in_order() -> None:
    assert [block_type for block_type, _ in blocks(sample_capture())] == [
        SHB_TYPE,
        IDB_TYPE,
        IDB_TYPE,
        EPB_TYPE,
        EPB_TYPE,
        EPB_TYPE,
        ISB_TYPE,
        ISB_TYPE,
    ]


def test_interfaces_keep_lab_names_descriptions_and_nanosecond_resolution() -> None:
    contents = read_pcapng(sample_capture())

    assert contents.application == "composens"
    assert [(i.name, i.description, i.tsresol, i.linktype, i.snaplen, i.filter) for i in contents.interfaces] == [
        ("r1:eth1", "r1:eth1 -> r2:eth1", 9, 1, 262144, "icmp or arp"),
        ("lan1", None, 9, LINKTYPE_RAW, 96, None),
    ]


def test_packets_keep_nanosecond_stamps_lengths_and_direction() -> None:
    packets = read_pcapng(sample_capture()).packets

    assert [(p.interface_id, p.timestamp_ns, len(p.data), p.original_length, p.direction) for p in packets] == [
        (0, T0, 61, 61, Direction.OUTBOUND),
        (1, T0 + 1, 96, 1500, Direction.UNKNOWN),
        (0, T0 + SECOND, 64, 64, Direction.INBOUND),
    ]
    assert packets[0].data == ethernet_frame(47)


def test_statistics_keep_counters_and_capture_span() -> None:
    statistics = read_pcapng(sample_capture()).statistics

    assert statistics == [
        InterfaceStatistics(0, T0 + 2 * SECOND, 2, 0, T0 - SECOND, T0 + 2 * SECOND),
        InterfaceStatistics(1, T0 + 2 * SECOND, 5, 3, None, None),
    ]


def test_a_packet_on_an_undescribed_interface_is_refused() -> None:
    writer = PcapngWriter(io.BytesIO())
    writer.add_interface(LAN1)

    with pytest.raises(ValueError, match="interface 1, but 1 are described"):
        writer.write_packets([CapturedPacket(1, T0, b"x", 1)])


def test_reader_refuses_what_is_not_pcapng_and_a_cut_stream() -> None:
    with pytest.raises(PcapngFormatError, match="section header"):
        read_pcapng(b"\xd4\xc3\xb2\xa1" + bytes(20))  # a classic pcap header
    with pytest.raises(PcapngFormatError, match="claims"):
        read_pcapng(sample_capture()[:-1])


# --- what real tools read ---

# scripts/bootstrap.sh installs both; in CI a missing one is a failure, never a skip.
needs_tshark = pytest.mark.skipif(
    shutil.which("tshark") is None and not os.environ.get("CI"), reason="tshark is not installed"
)
needs_tcpdump = pytest.mark.skipif(
    shutil.which("tcpdump") is None and not os.environ.get("CI"), reason="tcpdump is not installed"
)


def run(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


@needs_tshark
def test_tshark_reads_names_descriptions_and_nanosecond_stamps(tmp_path: Path) -> None:
    capture = tmp_path / "lab.pcapng"
    capture.write_bytes(sample_capture())

    fields = run(
        "tshark",
        "-r",
        capture,
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "frame.interface_name",
        "-e",
        "frame.interface_description",
        "-e",
        "frame.time_epoch",
        "-e",
        "frame.len",
        "-e",
        "frame.cap_len",
    )

    assert fields.splitlines() == [
        "r1:eth1|r1:eth1 -> r2:eth1|1735689600.123456789|61|61",
        "lan1||1735689600.123456790|1500|96",
        "r1:eth1|r1:eth1 -> r2:eth1|1735689601.123456789|64|64",
    ]


@needs_tshark
def test_capinfos_sees_interfaces_and_statistics(tmp_path: Path) -> None:
    capture = tmp_path / "lab.pcapng"
    capture.write_bytes(sample_capture())

    report = run("capinfos", "-M", capture)

    assert "Number of packets:   3" in report
    assert "Number of interfaces in file: 2" in report
    assert "Name = r1:eth1" in report
    assert "Description = r1:eth1 -> r2:eth1" in report
    assert "Time precision = nanoseconds (9)" in report
    assert "Number of stat entries = 1" in report


@needs_tshark
def test_tshark_reads_statistics_and_directions(tmp_path: Path) -> None:
    capture = tmp_path / "lab.pcapng"
    capture.write_bytes(sample_capture())
    option = "pcapng.options.option.data."

    # Read as a file of blocks (Wireshark's pcapng file dissector), not as packets: ISBs show only there.
    fields = run(
        "tshark",
        "-X",
        "read_format:MIME Files Format",
        "-r",
        capture,
        "-T",
        "fields",
        "-e",
        option + "interface.received",
        "-e",
        option + "interface.dropped",
        "-e",
        option + "packet.flags.direction",
    )

    assert fields.split("\t") == ["2,5", "0,3", "0x0002,0x0001\n"]


@needs_tcpdump
def test_tcpdump_reads_our_pcapng_back(tmp_path: Path) -> None:
    capture = tmp_path / "lab.pcapng"
    packets = [CapturedPacket(0, T0, ethernet_frame(47), 61), CapturedPacket(1, T0 + SECOND, ethernet_frame(50), 64)]
    with capture.open("wb") as stream:
        # libpcap reads a pcapng only while every interface has the first one's link type.
        write_pcapng(stream, [R1_ETH1, Interface("r2:eth1")], packets)

    lines = run("tcpdump", "-r", capture, "-n", "-e", "-q", "--time-stamp-precision", "nano", "-tt").splitlines()
    heads = [line for line in lines if not line.startswith("\t")]  # unknown ethertypes come with a hex dump

    assert [line.split()[0] for line in heads] == ["1735689600.123456789", "1735689601.123456789"]
    assert [line.split("length ")[-1] for line in heads] == ["61: ", "64: "]
