"""Coverage-guided fuzzing of the capture reader (atheris).

    python fuzz/fuzz_capture.py fuzz/corpus/capture -max_total_time=60

Two kinds of input. Raw bytes are read as a capture: libFuzzer mutates the seed captures. An
input that starts with FIELDS (0xFF, which no pcap, pcapng or gzip magic starts with) instead
chooses the fields of a pcapng file that `build` writes: how many interface descriptions, the
if_tsresol and if_tsoffset of each, a run of empty options, and packets with 64-bit timestamps.
The deep corners of the timestamp arithmetic and of the reader's cost are a few bytes away
there, where random mutation of a capture would rarely reach them.

Any input must end in segments and counts that add up, with no timestamp below 0, or in a
CaptureError; strict=False must never raise past the file header. A built file must also give
exactly the timestamps integer arithmetic gives, up to the first block that cannot be read,
and fail there. Anything else (another exception, a crash, a hang: libFuzzer's -timeout) is a
finding: the input is written out by libFuzzer, and goes into tests/data/fuzz, where
tests/test_fuzz.py keeps it fixed.
"""
import io
import os
import struct
import sys
from typing import Optional

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_corpus import FIELDS, block  # noqa: E402  (the seeds' writer; imports no fasttcp)

with atheris.instrument_imports():
    from fasttcp._pcap import MAX_INTERFACES, MAX_OPTIONS
    from fasttcp.capture import CaptureError, open_capture

FRAME = (b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"                              # Ethernet
         + struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, b"\n\0\0\1", b"\n\0\0\2")
         + struct.pack(">HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x10, 512, 0, 0))  # TCP ACK


def check_capture(data: bytes) -> None:
    """Reads `data` both strict and not; checks what any input must satisfy."""
    for strict in (True, False):
        try:
            with open_capture(io.BytesIO(data), strict=strict, chunk_size=4096) as cap:
                segments = 0
                for batch in cap:
                    segments += len(batch.ipv4) + len(batch.ipv6)
                    assert (batch.ipv4["ts"] >= 0).all() and (batch.ipv6["ts"] >= 0).all()
        except CaptureError:
            continue
        stats = cap.stats
        assert segments == stats.segments
        assert stats.packets == stats.segments + sum(stats.skipped.values())
        assert not strict or stats.error is None


def exact_ns(raw: int, tsresol: int, offset: int) -> Optional[int]:
    """A pcapng time in integer arithmetic (None outside int64 ns since the epoch)."""
    k = tsresol & 0x7F
    ns = raw * 10**9 // (2**k if tsresol & 0x80 else 10**k) + offset * 10**9
    return ns if 0 <= ns < 2**63 else None


def build(fields: bytes) -> tuple[bytes, list[int], Optional[int]]:
    """The pcapng file `fields` describe, the timestamps it must give, and the offset of the
    first block that must be refused (None if none).

    Fields, zero-filled when short: byte order (bit 0: big-endian); a count of plain interface
    descriptions first (u16); a count of empty 4-byte options in the next one (u16); the number
    of described interfaces (1 + byte % 4), each with if_tsresol (u8) and if_tsoffset (i64);
    then packets, up to 64, each an interface index (u8) and a timestamp (u64).
    """
    fields += bytes(max(0, 6 - len(fields)))
    order = ">" if fields[0] & 1 else "<"
    plain, padding = struct.unpack_from(">HH", fields, 1)
    n = 1 + fields[5] % 4
    at = 6
    described = []
    for _ in range(n):
        fields += bytes(max(0, at + 9 - len(fields)))
        described.append(struct.unpack_from(">Bq", fields, at))
        at += 9
    out = [block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)]
    stamps: list[int] = []
    failure: Optional[int] = None

    def add(data: bytes, problem: bool) -> None:
        nonlocal failure
        if failure is None and problem:
            failure = sum(map(len, out))
        out.append(data)

    plain_idb = block(1, struct.pack(order + "HHI", 1, 0, 0), order)
    out.append(plain_idb * min(plain, MAX_INTERFACES))
    if plain > MAX_INTERFACES:
        add(plain_idb, True)
    for i, (tsresol, tsoffset) in enumerate(described):
        options = (struct.pack(order + "HH", 2, 0) * (padding if i == 0 else 0)
                   + struct.pack(order + "HHB3x", 9, 1, tsresol)
                   + struct.pack(order + "HHq", 14, 8, tsoffset))
        add(block(1, struct.pack(order + "HHI", 1, 0, 0) + options, order),
            plain + i >= MAX_INTERFACES or len(options) > MAX_OPTIONS)
    for j in range(min(64, (len(fields) - at) // 9)):
        index, raw = struct.unpack_from(">BQ", fields, at + 9 * j)
        tsresol, tsoffset = described[index % n]
        ts = exact_ns(raw, tsresol, tsoffset)
        epb = block(6, struct.pack(order + "IIIII", plain + index % n, raw >> 32,
                                   raw & 0xFFFFFFFF, len(FRAME), len(FRAME)) + FRAME, order)
        add(epb, ts is None)
        if failure is None:
            stamps.append(ts)
    return b"".join(out), stamps, failure


def check_built(fields: bytes) -> None:
    data, stamps, failure = build(fields)
    got = []
    try:
        with open_capture(io.BytesIO(data), chunk_size=4096) as cap:
            for batch in cap:
                got.extend(batch.ipv4["ts"].tolist())
        assert failure is None, f"no CaptureError at offset {failure}"
    except CaptureError as error:
        assert error.offset == failure, (error, failure)
    assert got == stamps
    check_capture(data)


def check(data: bytes) -> None:
    """One fuzzer input (or a finding kept in tests/data/fuzz): fields or a capture."""
    if data[:1] == FIELDS:
        check_built(data[1:])
    else:
        check_capture(data)


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
