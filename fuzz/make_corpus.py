"""Writes the fuzzers' seed corpus from fasttcp's own generated traffic (reproducibly).

    python fuzz/make_corpus.py            # writes fuzz/corpus/{capture,batch,snapshot}

Captures: small synthetic pcaps (microsecond and nanosecond, plain and gzip), the same packets
as pcapng, and a truncated one. Batches: byte strings the batch harness reads as dtypes,
lengths and values. Snapshots: byte strings the snapshot harness reads as mutations.
"""
import gzip
import os
import struct
import sys

import numpy as np

from fasttcp.synth import generate, write_pcap

HERE = os.path.dirname(os.path.abspath(__file__))


def pcapng(pcap: bytes) -> bytes:
    """The packets of a little-endian microsecond pcap as one pcapng section."""
    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

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
                       ("normal.pcapng", pcapng(plain)), ("truncated.pcap", plain[:-7])):
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
