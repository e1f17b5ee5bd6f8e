"""The capture reader: every format, link type and encapsulation it claims, every skip reason,
and clear errors for damaged files. Captures are built byte by byte in `captures.py`."""
import gzip
import ipaddress
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fasttcp
from fasttcp import capture as capture_module
from fasttcp.capture import SKIP_REASONS, CaptureError, open_capture

from captures import (ACK, FIN, PSH, RST, SYN, enhanced, ethernet, interface, ipv4, ipv6, pcap,
                      section, simple, statistics, tcp)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "pcaps"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is not present")

SEGMENT = tcp(sport=40000, dport=80, flags=PSH | ACK, seq=7, ack=9, window=513, payload=b"x" * 5)
V4 = ipv4(SEGMENT)
V6 = ipv6(SEGMENT)


def read(tmp_path, data: bytes, name: str = "c.pcap", **options):
    path = tmp_path / name
    path.write_bytes(data)
    with open_capture(path, **options) as cap:
        batches = list(cap)
    ipv4_rows = np.concatenate([b.ipv4 for b in batches]) if batches else np.zeros(
        0, fasttcp.SEGMENT_DTYPE)
    ipv6_rows = np.concatenate([b.ipv6 for b in batches]) if batches else np.zeros(
        0, fasttcp.SEGMENT6_DTYPE)
    return ipv4_rows, ipv6_rows, cap.stats


def skipped(stats) -> dict:
    return {reason: n for reason, n in stats.skipped.items() if n}


def check_segment(row, src, dst):
    assert row["src"].tobytes() == src if isinstance(src, bytes) else row["src"] == src
    assert (row["sport"], row["dport"], row["flags"]) == (40000, 80, PSH | ACK)
    assert (row["length"], row["seq"], row["ack"], row["window"], row["wscale"]) == (5, 7, 9,
                                                                                     513, -1)


V4_SRC = int(ipaddress.IPv4Address("10.0.0.1"))
V6_SRC = ipaddress.IPv6Address("2001:db8::1").packed
DATA = Path(__file__).resolve().parent / "data"


def nflog_tlv(kind: int, value: bytes, order: str = "<") -> bytes:
    """One NFLOG TLV: length (counting its 4-byte header) and type in the writer's byte order,
    the value padded to 4 bytes."""
    return struct.pack(order + "HH", 4 + len(value), kind) + value + b"\x00" * (-len(value) % 4)


def nflog(packet: bytes, family: int = 2, order: str = "<", version: int = 0,
          tlvs: bytes = None) -> bytes:
    """A LINKTYPE_NFLOG frame as Linux writes it: the big-endian header, a packet header TLV,
    an odd-length prefix TLV (so padding is exercised), then the payload TLV."""
    if tlvs is None:
        tlvs = (nflog_tlv(1, struct.pack(">HBB", 0x0800, 3, 0), order)
                + nflog_tlv(10, b"log\x00\x01", order) + nflog_tlv(9, packet, order))
    return struct.pack(">BBH", family, version, 42) + tlvs

LINK_FRAMES = {
    "ethernet": (1, ethernet(V4), ethernet(V6, 0x86DD)),
    "802.1Q": (1, ethernet(V4, tags=[(0x8100, 7)]), ethernet(V6, 0x86DD, [(0x8100, 7)])),
    "QinQ": (1, ethernet(V4, tags=[(0x88A8, 3), (0x8100, 7)]),
             ethernet(V6, 0x86DD, [(0x9100, 3), (0x8100, 7)])),
    "MPLS": (1, ethernet(struct.pack(">II", 0x00010000, 0x00020100) + V4, 0x8847),
             ethernet(struct.pack(">I", 0x00020100) + V6, 0x8847)),
    "PPPoE": (1, ethernet(struct.pack(">BBHHH", 0x11, 0, 1, len(V4) + 2, 0x0021) + V4, 0x8864),
              ethernet(struct.pack(">BBHHH", 0x11, 0, 1, len(V6) + 2, 0x0057) + V6, 0x8864)),
    "linux SLL": (113, struct.pack(">HHH8sH", 0, 1, 6, b"", 0x0800) + V4,
                  struct.pack(">HHH8sH", 4, 1, 6, b"", 0x86DD) + V6),
    "linux SLL2": (276, struct.pack(">HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"") + V4,
                   struct.pack(">HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, b"") + V6),
    "raw": (101, V4, V6),
    "raw (DLT 12)": (12, V4, V6),
    "ipv4/ipv6": (228, V4, None),
    "ipv6 only": (229, None, V6),
    "null, little-endian": (0, struct.pack("<I", 2) + V4, struct.pack("<I", 30) + V6),
    "null, big-endian": (0, struct.pack(">I", 2) + V4, struct.pack(">I", 24) + V6),
    "loop": (108, struct.pack(">I", 2) + V4, struct.pack(">I", 28) + V6),
    "nflog": (239, nflog(V4), nflog(V6, family=10)),
}


@pytest.mark.parametrize("link", sorted(LINK_FRAMES))
def test_link_types(tmp_path, link):
    linktype, frame4, frame6 = LINK_FRAMES[link]
    frames = [(1_500_000_000, f) for f in (frame4, frame6) if f is not None]
    rows4, rows6, stats = read(tmp_path, pcap(frames, linktype))
    assert stats.packets == len(frames) and not skipped(stats)
    assert stats.linktypes == [linktype]
    if frame4 is not None:
        check_segment(rows4[0], V4_SRC, None)
        assert rows4[0]["ts"] == 1_500_000_000 and rows4[0]["dst"] == V4_SRC + 1
    if frame6 is not None:
        check_segment(rows6[0], V6_SRC, None)
        assert rows6[0]["dst"].tobytes() == ipaddress.IPv6Address("2001:db8::2").packed
    assert (len(rows4), len(rows6)) == (frame4 is not None, frame6 is not None)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, big_endian, nanosecond):
    frames = [(1_700_000_000_123_456_000, ethernet(V4)), (1_700_000_001_000_001_000, ethernet(V4))]
    rows, _, stats = read(tmp_path, pcap(frames, big_endian=big_endian, nanosecond=nanosecond))
    assert rows["ts"].tolist() == [1_700_000_000_123_456_000, 1_700_000_001_000_001_000]
    assert stats.format == "pcap"


def test_nanosecond_digits_are_kept(tmp_path):
    frames = [(0, ethernet(V4))]
    data = bytearray(pcap(frames, nanosecond=True))
    struct.pack_into("<I", data, 28, 123_456_789)   # the first record's fraction field
    rows, _, _ = read(tmp_path, bytes(data))
    assert rows["ts"].tolist() == [123_456_789]


def test_ipv4_options_and_payload_from_ip_length(tmp_path):
    options = b"\x07\x07\x04" + b"\x00" * 4 + b"\x01"      # record route + NOP: 8 bytes
    # Ethernet pads short frames; the payload length must come from the IP header, not the frame
    frame = ethernet(ipv4(tcp(flags=ACK), options=options)) + b"\x00" * 6
    rows, _, stats = read(tmp_path, pcap([(0, frame)]))
    assert rows["length"].tolist() == [0] and stats.ipv4 == 1


def test_header_only_capture_keeps_payload_length(tmp_path):
    full = ethernet(ipv4(tcp(payload=b"y" * 1000)))
    rows, _, stats = read(tmp_path, pcap([(0, full[:54])], snaplen=54))
    assert rows["length"].tolist() == [1000] and not skipped(stats)


def test_ipv6_extension_headers(tmp_path):
    hop = (0, b"\x00\x00" + b"\x01\x04\x00\x00\x00\x00")       # 8 bytes, PadN
    dest = (60, b"\x00\x01" + b"\x00" * 14)                     # 16 bytes
    routing = (43, b"\x00\x00\x00\x00" + b"\x00" * 4)
    first_fragment = (44, b"\x00\x00\x00\x01" + b"\x00\x00\x00\x09")   # offset 0, more follow
    later_fragment = (44, b"\x00\x00\x00\xa8" + b"\x00\x00\x00\x09")   # offset 21 * 8
    auth = (51, b"\x00\x04\x00\x00" + b"\x00" * 20)             # (4 + 2) * 4 = 24 bytes
    frames = [(0, ethernet(ipv6(SEGMENT, extensions=[hop, dest, routing]), 0x86DD)),
              (0, ethernet(ipv6(SEGMENT, extensions=[first_fragment]), 0x86DD)),
              (0, ethernet(ipv6(SEGMENT, extensions=[auth]), 0x86DD)),
              (0, ethernet(ipv6(SEGMENT, extensions=[later_fragment]), 0x86DD)),
              (0, ethernet(ipv6(b"\x00" * 8, proto=17), 0x86DD)),
              (0, ethernet(ipv6(b"", extensions=[dest], proto=59), 0x86DD))]
    _, rows, stats = read(tmp_path, pcap(frames))
    assert len(rows) == 3
    assert rows["length"].tolist() == [5, 5, 5]
    assert skipped(stats) == {"fragment": 1, "non_tcp": 2}


def test_every_skip_reason_is_counted(tmp_path):
    frames = [
        ethernet(b"\x00" * 28, 0x0806),                              # ARP: non_ip
        ethernet(ipv4(b"\x00" * 8, proto=17)),                        # UDP: non_tcp
        ethernet(ipv4(SEGMENT, frag=0x2000 | 100)),                   # later fragment
        ethernet(V4)[:14 + 20 + 12],                                   # TCP header cut short
        ethernet(b"\x45" + V4[1:])[:14 + 10],                          # IP header cut short
        ethernet(b"\x46" + V4[1:]),                                    # IP version 4 but
        ethernet(b"\x43" + V4[1:]),                                    # header length 12
        ethernet(ipv4(SEGMENT, total=30)),                            # IP length < headers
        ethernet(V4),                                                  # a good one
    ]
    rows, _, stats = read(tmp_path, pcap([(0, f) for f in frames]))
    assert len(rows) == 1 and stats.packets == len(frames)
    assert skipped(stats) == {"non_ip": 1, "non_tcp": 1, "fragment": 1, "truncated": 2,
                              "malformed": 3}
    assert stats.packets == stats.segments + sum(stats.skipped.values())
    assert set(stats.skipped) == set(SKIP_REASONS)


@pytest.mark.parametrize("big_endian", [False, True])
def test_nflog_tlvs_follow_the_files_byte_order(tmp_path, big_endian):
    """A big-endian writer writes big-endian TLV headers (libpcap and Wireshark read them in
    the file's byte order)."""
    order = ">" if big_endian else "<"
    frames = [(0, nflog(V4, order=order)), (0, nflog(V6, family=10, order=order))]
    rows4, rows6, stats = read(tmp_path, pcap(frames, 239, big_endian=big_endian))
    check_segment(rows4[0], V4_SRC, None)
    check_segment(rows6[0], V6_SRC, None)
    assert stats.packets == 2 and not skipped(stats)


def test_nflog_frames_without_a_tcp_segment_are_counted(tmp_path):
    meta = nflog_tlv(1, struct.pack(">HBB", 0x0800, 3, 0)) + nflog_tlv(10, b"drop\x00")
    frames = [
        nflog(V4, family=7),                                  # bridge family: non_ip
        nflog(V4, version=1),                                 # unknown header version
        nflog(V4, tlvs=meta),                                 # metadata only: no packet
        nflog(V4)[:4 + 8 + 2],                                # cut inside the TLVs
        nflog(V4, tlvs=struct.pack("<HH", 2, 9) + V4),        # TLV shorter than its header
        nflog(V6),                                            # IPv4 family, IPv6 packet
        nflog(V4)[:4 + 8 + 12 + 4 + 20 + 12],                 # payload cut in the TCP header
        nflog(ipv4(b"\x00" * 8, proto=17)),                   # UDP
        nflog(V4),                                            # a good one
    ]
    rows, _, stats = read(tmp_path, pcap([(0, f) for f in frames], 239))
    assert len(rows) == 1 and stats.packets == len(frames)
    assert skipped(stats) == {"non_ip": 1, "unsupported_link": 1, "truncated": 3,
                              "malformed": 2, "non_tcp": 1}


def zeek_log_rows(path: Path) -> list[dict]:
    """The rows of a Zeek TSV log, by the names of its #fields header line."""
    fields, rows = [], []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"))))
    return rows


def test_nflog_capture_gives_zeeks_connection():
    """Zeek's NFLOG capture: 13 packets, all one TCP connection, whose 4-tuple is the one in
    Zeek's http.log for it."""
    with open_capture(DATA / "zeek__nflog-http.pcap") as cap:
        rows = np.concatenate([b.ipv4 for b in cap])
    assert cap.stats.linktypes == [239] and cap.stats.packets == cap.stats.ipv4 == 13
    http, = zeek_log_rows(DATA / "zeek__nflog-http.http.log")
    orig = (int(ipaddress.IPv4Address(http["id.orig_h"])), int(http["id.orig_p"]))
    resp = (int(ipaddress.IPv4Address(http["id.resp_h"])), int(http["id.resp_p"]))
    ends = {((int(r["src"]), int(r["sport"])), (int(r["dst"]), int(r["dport"]))) for r in rows}
    assert ends == {(orig, resp), (resp, orig)}
    first = rows[0]
    assert first["flags"] == SYN and (int(first["src"]), int(first["sport"])) == orig


def test_first_fragment_is_read(tmp_path):
    rows, _, _ = read(tmp_path, pcap([(0, ethernet(ipv4(SEGMENT, frag=0x2000)))]))
    assert len(rows) == 1


def test_window_scale_from_syn_options(tmp_path):
    options = b"\x02\x04\x05\xb4" + b"\x01" + b"\x03\x03\x07" + b"\x04\x02"   # MSS, NOP, WS 7
    syn = tcp(flags=SYN, options=options)
    data = tcp(flags=ACK, options=options)   # options outside a SYN are not read
    huge = tcp(flags=SYN, options=b"\x03\x03\x20")
    broken = tcp(flags=SYN, options=b"\x02\x00\x03\x03\x07")    # zero-length option: stop
    frames = [(0, ethernet(ipv4(s))) for s in (syn, data, huge, broken)]
    rows, _, _ = read(tmp_path, pcap(frames))
    assert rows["wscale"].tolist() == [7, -1, 14, -1]


def test_pcapng_interfaces_resolutions_and_blocks(tmp_path):
    data = (section() + interface(1) + interface(101, tsresol=9) + interface(1, tsresol=0x80 | 20,
                                                                             tsoffset=100)
            + enhanced(ethernet(V4), 1_500_000)                 # microseconds by default
            + statistics()                                      # skipped
            + enhanced(V6, 2_000_000_123, iface=1)              # nanoseconds
            + enhanced(ethernet(V4), 3 << 20 | 1 << 19, iface=2)  # 2^-20 s units, +100 s
            + simple(ethernet(V4)))                              # no timestamp: previous one
    rows4, rows6, stats = read(tmp_path, data, "c.pcapng")
    assert stats.format == "pcapng" and stats.linktypes == [1, 101, 1]
    assert rows4["ts"].tolist() == [1_500_000_000, 103_500_000_000, 103_500_000_000]
    assert rows6["ts"].tolist() == [2_000_000_123]
    assert stats.packets == 4 and not skipped(stats)


def test_pcapng_sections_of_both_byte_orders(tmp_path):
    data = (section("<") + interface(1, order="<") + enhanced(ethernet(V4), 1, order="<")
            + section(">") + interface(101, order=">") + enhanced(V4, 2, order=">")
            + simple(V6, order=">"))
    rows4, rows6, stats = read(tmp_path, data, "c.pcapng")
    assert rows4["ts"].tolist() == [1000, 2000] and rows6["ts"].tolist() == [2000]
    assert stats.linktypes == [1, 101]


def test_pcapng_unsupported_interface_is_counted(tmp_path):
    data = section() + interface(147) + interface(1) + enhanced(b"\x00" * 60, 1) + enhanced(
        ethernet(V4), 2, iface=1)
    rows, _, stats = read(tmp_path, data, "c.pcapng")
    assert len(rows) == 1 and skipped(stats) == {"unsupported_link": 1}


def test_gzip_capture(tmp_path):
    frames = [(i, ethernet(V4)) for i in range(100)]
    rows, _, stats = read(tmp_path, gzip.compress(pcap(frames)), "c.pcap.gz")
    assert len(rows) == 100 and stats.format == "pcap"


def test_chunk_boundaries_do_not_matter(tmp_path):
    frames = [(i * 10**6, ethernet(ipv4(tcp(seq=i, payload=b"z" * (i % 1400))))) for i in
              range(2000)]
    frames.append((3 * 10**9, ethernet(ipv4(tcp(payload=b"j" * 9000)))))   # larger than a chunk
    data = pcap(frames)
    whole, _, _ = read(tmp_path, data)
    small, _, stats = read(tmp_path, data, chunk_size=4096)
    assert np.array_equal(whole, small) and len(whole) == 2001
    assert stats.bytes_read == len(data)


def test_batches_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(capture_module, "_ROWS_PER_BATCH", 7)
    path = tmp_path / "c.pcap"
    path.write_bytes(pcap([(i, ethernet(V4 if i % 3 else V6, 0x0800 if i % 3 else 0x86DD))
                           for i in range(100)]))
    with open_capture(path) as cap:
        sizes = [(len(b.ipv4), len(b.ipv6)) for b in cap]
    assert max(max(s) for s in sizes) <= 7
    assert sum(a + b for a, b in sizes) == 100


# -- damaged and wrong input ------------------------------------------------------------------

def test_truncated_pcap_names_the_offset(tmp_path):
    frames = [(i, ethernet(V4)) for i in range(3)]
    data = pcap(frames)
    cut = len(data) - 10
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:cut])
    batches = []
    with pytest.raises(CaptureError, match=r"truncated capture.*byte offset \d+") as error:
        with open_capture(path) as cap:
            for batch in cap:
                batches.append(batch)
    record = 24 + 2 * (16 + len(frames[0][1]))
    assert error.value.offset == record
    assert sum(len(b.ipv4) for b in batches) == 2


def test_truncated_pcap_not_strict(tmp_path):
    data = pcap([(i, ethernet(V4)) for i in range(3)])
    rows, _, stats = read(tmp_path, data[:-10], strict=False)
    assert len(rows) == 2
    assert "truncated" in stats.error and stats.unread_bytes == 16 + len(ethernet(V4)) - 10


@pytest.mark.parametrize("cut", [0, 3, 10, 23])
def test_truncated_file_header(tmp_path, cut):
    path = tmp_path / "c.pcap"
    path.write_bytes(pcap([])[:cut])
    with pytest.raises(CaptureError, match="not a pcap" if cut < 4 else "truncated"):
        list(open_capture(path))


def test_corrupt_record_length(tmp_path):
    data = bytearray(pcap([(0, ethernet(V4)), (1, ethernet(V4))]))
    second = 24 + 16 + len(ethernet(V4))
    struct.pack_into("<I", data, second + 8, 10**9)
    with pytest.raises(CaptureError, match=f"captured length.*offset {second}"):
        read(tmp_path, bytes(data))
    rows, _, stats = read(tmp_path, bytes(data), strict=False)
    assert len(rows) == 1 and stats.unread_bytes == len(data) - second


@pytest.mark.parametrize("damage, problem", [
    (lambda b, at: struct.pack_into("<I", b, at + 4, 13), "multiple of 4"),
    (lambda b, at: struct.pack_into("<I", b, at + 4, 8), "multiple of 4"),
    (lambda b, at: struct.pack_into("<I", b, len(b) - 4, 999), "trailing length"),
    (lambda b, at: struct.pack_into("<I", b, at + 8, 5), "interface"),
    (lambda b, at: struct.pack_into("<I", b, at + 20, 4000), "runs past the end"),
])
def test_corrupt_pcapng_blocks(tmp_path, damage, problem):
    head = section() + interface(1)
    data = bytearray(head + enhanced(ethernet(V4), 1))
    damage(data, len(head))
    with pytest.raises(CaptureError, match=f"{problem}.*offset {len(head)}"):
        read(tmp_path, bytes(data), "c.pcapng")


def test_corrupt_interface_block(tmp_path):
    data = bytearray(section() + interface(1, tsresol=9) + enhanced(ethernet(V4), 1))
    struct.pack_into("<H", data, 28 + 16 + 2, 200)    # the option's length
    with pytest.raises(CaptureError, match="option runs past"):
        read(tmp_path, bytes(data), "c.pcapng")


def test_not_a_capture(tmp_path):
    with pytest.raises(CaptureError, match="not a pcap or pcapng file.*empty"):
        read(tmp_path, b"")
    with pytest.raises(CaptureError, match="it starts with 47 45 54 20"):
        read(tmp_path, b"GET / HTTP/1.1\r\n")
    with pytest.raises(CaptureError, match="unreadable gzip"):
        read(tmp_path, b"\x1f\x8b\x08\x00garbage")


def test_unknown_link_type(tmp_path):
    with pytest.raises(CaptureError, match="unknown link type 147"):
        read(tmp_path, pcap([(0, b"\x00" * 40)], linktype=147))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_capture(tmp_path / "nope.pcap")


def test_iterating_twice_is_refused(tmp_path):
    path = tmp_path / "c.pcap"
    path.write_bytes(pcap([(0, ethernet(V4))]))
    with open_capture(path) as cap:
        list(cap)
        with pytest.raises(ValueError, match="iterated once"):
            list(cap)


def test_small_chunk_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="chunk_size"):
        open_capture(tmp_path / "c.pcap", chunk_size=100)


VALID = pcap([(i * 10**8, ethernet(ipv4(tcp(seq=i, payload=b"q" * i)))) for i in range(20)])


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, len(VALID)), flips=st.lists(st.tuples(
    st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6))
def test_damaged_captures_never_crash(tmp_path_factory, cut, flips):
    """Any truncation and byte damage ends in segments, or a CaptureError with an offset inside
    the file; never another exception. Not strict, it never raises past the header."""
    data = bytearray(VALID[:cut])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    path = tmp_path_factory.mktemp("fuzz") / "c.pcap"
    path.write_bytes(bytes(data))
    try:
        with open_capture(path) as cap:
            for _ in cap:
                pass
    except CaptureError as error:
        assert error.offset is None or 0 <= error.offset <= len(data)
    try:
        with open_capture(path, strict=False) as cap:
            list(cap)
        assert cap.stats.packets == cap.stats.segments + sum(cap.stats.skipped.values())
    except CaptureError as error:
        assert "not a pcap" in str(error) or "unknown link type" in str(error) or (
            "truncated" in str(error) and len(data) < 24)


# -- real captures ----------------------------------------------------------------------------

def index_rows():
    rows = {}
    for line in (SHARED / "INDEX.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 4 and cells[1].startswith("zeek__"):
            rows[cells[1]] = int(cells[3].replace(",", ""))
    return rows


@needs_shared
def test_shared_captures_read_with_the_indexed_packet_counts():
    expected = index_rows()
    assert len(expected) == len(list(SHARED.glob("*.pcap*")))
    for name, packets in expected.items():
        with open_capture(SHARED / name) as cap:
            segments = sum(len(b.ipv4) + len(b.ipv6) for b in cap)
        assert cap.stats.packets == packets, name
        assert cap.stats.error is None and segments == cap.stats.segments
    with open_capture(SHARED / "zeek__tcp__timeout-with-pings.pcap") as cap:
        list(cap)
    assert cap.stats.segments == 3 and cap.stats.skipped["non_tcp"] == 12   # the ICMP pings


def nflog_payload(frame: bytes, order: str) -> bytes:
    """The NFULA_PAYLOAD value of an NFLOG frame, found by walking its TLVs; dpkt has no NFLOG
    decoder, so this independent one hands dpkt the IP packet."""
    at = 4
    while at + 4 <= len(frame):
        length, kind = struct.unpack_from(order + "HH", frame, at)
        if kind == 9:
            return frame[at + 4:at + length]
        at += (length + 3) // 4 * 4
    return b""


@needs_shared
def test_agrees_with_dpkt():
    dpkt = pytest.importorskip("dpkt")
    for path in sorted(SHARED.glob("*.pcap*")):
        with open(path, "rb") as f:
            order = "<" if f.read(4) in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
            f.seek(0)
            reader = (dpkt.pcapng.Reader(f) if path.suffix == ".pcapng" else dpkt.pcap.Reader(f))
            link = reader.datalink()
            theirs = []
            for ts, buf in reader:
                if link == 239:
                    ip = dpkt.ip.IP(nflog_payload(buf, order))
                else:
                    ip = dpkt.ip.IP(buf) if link == 228 else dpkt.ethernet.Ethernet(buf).data
                if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) and isinstance(ip.data,
                                                                            dpkt.tcp.TCP):
                    theirs.append((ip.data.sport, ip.data.dport, ip.data.flags, ip.data.seq))
        with open_capture(path) as cap:
            rows = [row for b in cap for rows in (b.ipv4, b.ipv6) for row in rows]
        ours = sorted((int(r["sport"]), int(r["dport"]), int(r["flags"]), int(r["seq"]))
                      for r in rows)
        assert ours == sorted(theirs), path.name


@needs_shared
def test_segments_feed_a_tracker():
    tracker = fasttcp.Tracker()
    with open_capture(SHARED / "zeek__http__get.pcap") as cap:
        for batch in cap:
            tracker.update(batch.ipv4)
            tracker.update(batch.ipv6)
    assert len(tracker) == 1
    live = [state for state, n in tracker.histogram().items() if n]
    assert live == ["TIME_WAIT/CLOSED"]


@pytest.mark.parametrize("compress", [False, True])
def test_streams_are_read_and_left_open(compress):
    import io
    data = pcap([(i, ethernet(V4)) for i in range(5)])
    stream = io.BytesIO(gzip.compress(data) if compress else data)
    with open_capture(stream) as cap:
        rows = sum(len(b.ipv4) for b in cap)
    assert rows == 5 and not stream.closed and cap.path == "<stream>"
