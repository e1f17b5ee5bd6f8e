"""Writes the fuzzers' seed corpus from fasttcp's own generated traffic (reproducibly).

    python fuzz/make_corpus.py            # writes fuzz/corpus/{capture,batch,snapshot}

Captures: small synthetic pcaps (microsecond and nanosecond, plain and gzip), the same packets
as pcapng, and a truncated one; and field inputs (FIELDS, then what fuzz_capture.build reads)
at the edges of timestamp resolutions and offsets, interface counts and option bytes. Batches:
byte strings the batch harness reads as dtypes, lengths and values. Snapshots: byte strings
the snapshot harness reads as mutations.
"""
import gzip
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIELDS = b"\xff"       # the first byte of a capture fuzzer input that `build` reads as fields


def block(kind: int, body: bytes, order: str = "<") -> bytes:
    """A pcapng block of `kind` around `body` (padded to 4 bytes), in byte order `order`."""
    body += bytes(-len(body) % 4)
    return struct.pack(order + "II", kind, len(body) + 12) + body + struct.pack(
        order + "I", len(body) + 12)


def fields(big_endian: bool = False, plain: int = 0, padding: int = 0,
           interfaces: tuple = ((6, 0),), packets: tuple = ()) -> bytes:
    """A field input for fuzz_capture.build: interfaces are (if_tsresol, if_tsoffset),
    packets (interface index, raw timestamp)."""
    out = FIELDS + struct.pack(">BHHB", big_endian, plain, padding, len(interfaces) - 1)
    out += b"".join(struct.pack(">Bq", tsresol, offset) for tsresol, offset in interfaces)
    return out + b"".join(struct.pack(">BQ", index, raw) for index, raw in packets)


FIELD_SEEDS = {
    "fields-usec": fields(packets=((0, 1_700_000_000_123_456),)),
    # the largest timestamp at decimal 10^-73 (once SIGFPE) and at binary 2^-40 (once wrapped
    # negative); an offset of 2^62 s (once OverflowError); a negative offset, before 1970
    "fields-edges": fields(interfaces=((0x49, 0), (0x80 | 40, -5), (0x7F, 0)),
                           packets=((0, 2**64 - 1), (1, 2**64 - 1), (2, 2**64 - 1))),
    "fields-offset-overflow": fields(interfaces=((9, 1 << 62),), packets=((0, 0),)),
    "fields-before-1970": fields(interfaces=((6, -2),), packets=((0, 3 * 10**6), (0, 10**6))),
    "fields-big-endian": fields(True, interfaces=((0x80 | 20, 100), (3, -100)),
                                packets=((0, 1 << 40), (1, 10**12))),
    "fields-interfaces": fields(plain=5000, packets=((0, 10**6),)),
    "fields-options": fields(padding=40_000, packets=((0, 10**6),)),
}


def pcapng(pcap: bytes) -> bytes:
    """The packets of a little-endian microsecond pcap as one pcapng section."""
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 1, 0, 96))
    at = 24
    while at + 16 <= len(pcap):
        sec, usec, caplen, length = struct.unpack_from("<IIII", pcap, at)
        ticks = sec * 10**6 + usec
        out += block(6, struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, caplen, length)
                     + pcap[at + 16:at + 16 + caplen])
        at += 16 + caplen
    return out


def main() -> int:
    # here, not at the top: fuzz_capture imports this module before it instruments fasttcp
    from fasttcp.synth import generate, write_pcap

    captures = os.path.join(HERE, "corpus", "capture")
    batches = os.path.join(HERE, "corpus", "batch")
    snapshots = os.path.join(HERE, "corpus", "snapshot")
    for directory in (captures, batches, snapshots):
        os.makedirs(directory, exist_ok=True)
    for kind in ("normal", "reset", "scan", "syn_flood", "simultaneous_close", "midstream"):
        path = os.path.join(captures, f"{kind}.pcap")
        write_pcap(path, generate(2, seed=1, mix={kind: 1.0}))
    write_pcap(os.path.join(captures, "mix-ns.pcap"), generate(3, seed=2), nanosecond=True)
    with open(os.path.join(captures, "normal.pcap"), "rb") as f:
        plain = f.read()
    for name, data in (("normal.pcap.gz", gzip.compress(plain, mtime=0)),
                       ("normal.pcapng", pcapng(plain)), ("truncated.pcap", plain[:-7]),
                       *FIELD_SEEDS.items()):
        with open(os.path.join(captures, name), "wb") as f:
            f.write(data)
    rng = np.random.default_rng(0)
    for i in range(4):
        with open(os.path.join(batches, f"random-{i}"), "wb") as f:
            f.write(rng.integers(0, 256, 64 * (i + 1), dtype=np.uint8).tobytes())
    for i in range(4):          # mutation choices for the valid snapshot fuzz_snapshot.py makes
        with open(os.path.join(snapshots, f"random-{i}"), "wb") as f:
            f.write(rng.integers(0, 256, 32 * (i + 1), dtype=np.uint8).tobytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
