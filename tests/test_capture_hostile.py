"""The capture reader against crafted input: timestamps at the edges of every resolution and
offset the formats allow, and files built to cost time or memory. Every one ends in exact
segments or a CaptureError naming the byte offset; nothing else may leave `open_capture`."""
import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fasttcp.capture import CaptureError, open_capture

from captures import enhanced, ethernet, interface, ipv4, pcap, section, tcp

FRAME = ethernet(ipv4(tcp()))
HEAD = section() + interface(1)


def read_ts(data: bytes, **options) -> list[int]:
    with open_capture(io.BytesIO(data), **options) as cap:
        return [int(ts) for batch in cap for ts in batch.ipv4["ts"]]


# -- timestamps ---------------------------------------------------------------------------------

def exact_ns(raw: int, tsresol: int, offset: int):
    """The pcapng time in integer arithmetic: `raw` units of 2^-k or 10^-k s (k the low 7 bits
    of if_tsresol) plus if_tsoffset seconds, rounded down to the ns; None outside int64 ns
    since the epoch."""
    k = tsresol & 0x7F
    ns = raw * 10**9 // (2**k if tsresol & 0x80 else 10**k) + offset * 10**9
    return ns if 0 <= ns < 2**63 else None


def one_packet(tsresol: int, tsoffset: int, raw: int) -> bytes:
    return section() + interface(1, tsresol=tsresol, tsoffset=tsoffset) + enhanced(FRAME, raw)


@settings(max_examples=500, deadline=None)
@given(tsresol=st.integers(0, 255), raw=st.integers(0, 2**64 - 1),
       offset=st.integers(-2**63, 2**63 - 1))
@example(tsresol=0x49, raw=2**64 - 1, offset=0)         # the power of ten wrapped to 0: SIGFPE
@example(tsresol=0x7F, raw=2**64 - 1, offset=0)
@example(tsresol=0x80 | 20, raw=2**64 - 1, offset=0)    # binary: wrapped to a negative time
@example(tsresol=0x80 | 40, raw=2**63, offset=0)
@example(tsresol=6, raw=10**6, offset=-2)               # negative if_tsoffset: before 1970
@example(tsresol=6, raw=5 * 10**6, offset=-2)           # ... and after it
@example(tsresol=9, raw=2**63 - 1, offset=1)            # past int64 by the offset
@example(tsresol=6, raw=0, offset=2**62)                # OverflowError in Python before
@example(tsresol=0, raw=2**63, offset=-2**63)           # both huge, the sum is 0: exact
def test_pcapng_timestamps_are_exact_or_refused(tsresol, raw, offset):
    """Every resolution (decimal and binary, k = 0..127), every 64-bit timestamp and every
    if_tsoffset: the exact ns, or a CaptureError at the packet's block, never a wrapped or
    negative time and never another exception."""
    expected = exact_ns(raw, tsresol, offset)
    data = one_packet(tsresol, offset, raw)
    block = len(data) - len(enhanced(FRAME, raw))
    if expected is None:
        with pytest.raises(CaptureError, match=f"timestamp.*offset {block}$") as error:
            read_ts(data)
        assert error.value.offset == block
    else:
        assert read_ts(data) == [expected]


def test_decimal_resolutions_past_nanoseconds_do_not_kill_the_process():
    """if_tsresol 10^-73 .. 10^-127 with the largest timestamp once divided by a power of ten
    that had wrapped to 0: SIGFPE killed the interpreter. A child process runs it, so a
    regression fails this test instead of killing the test run."""
    script = (
        "import io, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from captures import section, interface, enhanced, ethernet, ipv4, tcp\n"
        "from fasttcp.capture import open_capture\n"
        "frame = ethernet(ipv4(tcp()))\n"
        "for k in range(0x49, 0x80):\n"
        "    data = section() + interface(1, tsresol=k) + enhanced(frame, 2**64 - 1)\n"
        "    with open_capture(io.BytesIO(data)) as cap:\n"
        "        assert [int(t) for b in cap for t in b.ipv4['ts']] == [0], k\n"
        "print('read', k - 0x48)\n")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.split() == ["read", str(0x80 - 0x49)]


def test_offset_beyond_int64_is_a_capture_error_not_strict_too():
    """An if_tsoffset of 2^62 s raised OverflowError out of open_capture; now the packet's
    block is named, and strict=False records it."""
    data = one_packet(6, 2**62, 0) + enhanced(FRAME, 1)
    with open_capture(io.BytesIO(data), strict=False) as cap:
        assert list(cap) == []
    assert "timestamp" in cap.stats.error and cap.stats.packets == 0
    assert cap.stats.unread_bytes == 2 * len(enhanced(FRAME, 0))


def test_negative_offset_is_applied():
    """The pcapng spec allows a negative if_tsoffset: the time moves back, exactly."""
    data = one_packet(6, -1_000_000_000, 1_700_000_000_123_456)
    assert read_ts(data) == [1_700_000_000_123_456_000 - 10**18]


def test_pcap_fraction_of_a_second_or_more_carries():
    """Classic pcap: 32-bit seconds and fraction cannot overflow int64 ns; a fraction beyond a
    second (invalid) carries into the seconds, as libpcap passes it on."""
    for nanosecond, unit in ((False, 1000), (True, 1)):
        data = bytearray(pcap([(0, FRAME)], nanosecond=nanosecond))
        struct.pack_into("<II", data, 24, 2**32 - 1, 2**32 - 1)
        assert read_ts(bytes(data)) == [(2**32 - 1) * 10**9 + (2**32 - 1) * unit]
