"""The sample capture bundled with fasttcp, the default input of ``fasttcp analyze``.

fasttcp made it itself, with its synthetic traffic generator, and `regenerate` makes it again
byte for byte (a test checks that):

    fasttcp generate fasttcp/data/sample.pcap.gz --connections 250 --seed 2026 --rate 100

250 scenario instances of the default mix over about two and a half seconds: clean
conversations, resets, rejected and unanswered SYNs, simultaneous opens and closes,
retransmissions, a SYN flood burst or two, scans and mid-stream pickups (see `fasttcp.synth`).

>>> import os
>>> os.path.isfile(SAMPLE_CAPTURE)
True
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["SAMPLE_CAPTURE", "SAMPLE_ARGUMENTS", "regenerate"]

#: Path of the bundled sample capture (gzip-compressed pcap).
SAMPLE_CAPTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                              "sample.pcap.gz")
#: The `fasttcp.synth.generate` arguments it was made with.
SAMPLE_ARGUMENTS: dict[str, Any] = {"connections": 250, "seed": 2026, "rate": 100.0}


def regenerate(path: str) -> int:
    """Writes the sample capture to `path` again; returns its packet count."""
    from fasttcp.synth import generate, write_pcap     # the generator is not needed to read
    return write_pcap(path, generate(**SAMPLE_ARGUMENTS))
