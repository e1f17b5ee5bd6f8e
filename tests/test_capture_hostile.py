"""The capture reader against crafted input: timestamps at the edges of every resolution and
offset the formats allow, and files built to cost time or memory. Every one ends in exact
segments or a CaptureError naming the byte offset; nothing else may leave `open_capture`."""
import gzip
import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fasttcp import capture as capture_module
from fasttcp._pcap import MAX_BLOCK, MAX_INTERFACES, MAX_OPTIONS
from fasttcp.capture import CaptureError, open_capture

from captures import enhanced, ethernet, interface, ipv4, pcap, section, tcp

FRAME = ethernet(ipv4(tcp()))


def read_ts_of(cap) -> list[int]:
    return [int(ts) for batch in cap for ts in batch.ipv4["ts"]]


def read_ts(data: bytes, **options) -> list[int]:
    with open_capture(io.BytesIO(data), **options) as cap:
        return read_ts_of(cap)


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


def test_decimal_resolutions_past_nanoseconds_do_not_kill_the_process(tmp_path):
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
    # away from the source tree, whose fasttcp/ has no compiled modules after `pip install .`
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
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


# -- cost: interface descriptions and options ---------------------------------------------------

def idb(options: bytes = b"", length: int = None) -> bytes:
    """An interface description (Ethernet) with raw option bytes; `length` overrides the
    declared block length (leading and trailing)."""
    length = 20 + len(options) if length is None else length
    return struct.pack("<IIHHI", 1, length, 1, 0, 0) + options + struct.pack("<I", length)


def counting_kernel(monkeypatch, limit: int) -> list:
    """Counts the calls into the pcapng kernel: each one is a round trip through Python, which
    once rebuilt the arrays of every interface before it. Fails at once past `limit`."""
    calls = []
    kernel = capture_module._pcap.read_pcapng

    def counted(*args):
        calls.append(1)
        assert len(calls) <= limit, "more kernel calls than the blocks' bytes justify"
        return kernel(*args)

    monkeypatch.setattr(capture_module._pcap, "read_pcapng", counted)
    return calls


def test_a_section_of_the_most_interfaces_is_read_in_linear_work(monkeypatch):
    """65,536 interface descriptions, then a packet on the last: each description once rebuilt
    the arrays of all before it (40k took 50 s). Now they are read in the kernel and the
    arrays grow by doubling: a handful of round trips, not one per block."""
    n = MAX_INTERFACES
    data = section() + idb() * n + enhanced(FRAME, 10**6, iface=n - 1)
    calls = counting_kernel(monkeypatch, 40)
    with open_capture(io.BytesIO(data)) as cap:
        assert read_ts_of(cap) == [10**9]
    assert len(cap.stats.linktypes) == n and len(calls) <= 2 * n.bit_length()


def test_one_interface_more_than_the_limit_is_refused():
    """200,000 descriptions gzip to a few KB; the reader stops at the first one over the
    limit, with its offset."""
    data = section() + idb() * 200_000 + enhanced(FRAME, 1)
    with pytest.raises(CaptureError, match="more than 65,536 interfaces") as error:
        read_ts(gzip.compress(data))
    assert error.value.offset == 28 + 20 * MAX_INTERFACES


def gzip_of_block(kind: int, head: bytes, length: int) -> bytes:
    """A gzip file: a section header, then a block of `kind` declaring `length` bytes whose
    body after `head` is empty options (code 2, size 0), compressed as it is made."""
    packer = zlib.compressobj(wbits=31)
    out = [packer.compress(section() + struct.pack("<II", kind, length) + head)]
    body = length - 12 - len(head)
    chunk = b"\x02\x00\x00\x00" * (1 << 18)
    for at in range(0, body, len(chunk)):
        out.append(packer.compress(chunk[:body - at]))
    out.append(packer.compress(struct.pack("<I", length)) + packer.flush())
    return b"".join(out)


@pytest.mark.parametrize("kind, head", [
    (1, struct.pack("<HHI", 1, 0, 0)),                          # interface description
    (0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),    # section header
], ids=["interface", "section"])
def test_a_64_mib_block_of_empty_options_is_refused_before_it_is_read(kind, head):
    """64 MiB of empty options (65 KB gzipped) took 15 s and 190 MB: the block was copied and
    walked in Python. Its declared length now refuses it after one chunk."""
    cap = open_capture(io.BytesIO(gzip_of_block(kind, head, MAX_BLOCK)), chunk_size=1 << 16)
    with pytest.raises(CaptureError, match="128 KiB of options") as error:
        with cap:
            list(cap)
    assert error.value.offset == 28
    assert cap.stats.bytes_read <= 2 << 16                   # a chunk or two, not 64 MiB


def test_option_bytes_up_to_the_limit_are_read():
    """Two if_name options of the largest size a 16-bit length allows fill 128 KiB exactly;
    one more option word is refused."""
    name = struct.pack("<HH", 2, 65532) + b"n" * 65532
    assert len(name * 2) == MAX_OPTIONS
    read = section() + idb(name * 2) + enhanced(FRAME, 1)
    assert read_ts(read) == [1000]
    with pytest.raises(CaptureError, match="128 KiB of options.*offset 28"):
        read_ts(section() + idb(name * 2 + struct.pack("<HH", 2, 0)) + enhanced(FRAME, 1))


def test_short_interface_description_is_refused():
    with pytest.raises(CaptureError, match="shorter than 20 bytes.*offset 28"):
        read_ts(section() + struct.pack("<III", 1, 16, 0) + struct.pack("<I", 16))
