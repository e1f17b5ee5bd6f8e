"""Streaming pcap / pcapng reader: TCP segments in bounded-memory batches.

>>> import fasttcp
>>> with fasttcp.open_capture(fasttcp.SAMPLE_CAPTURE) as capture:
...     segments = sum(len(batch.ipv4) + len(batch.ipv6) for batch in capture)
>>> segments == capture.stats.segments > 0
True

The file is read in chunks (`chunk_size` bytes) and each chunk is decoded by the compiled kernel
(`fasttcp._pcap`); only section headers and interface descriptions of pcapng files are read in
Python. Gzip-compressed captures are recognised by their magic bytes, whatever their name.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, NamedTuple, Optional, Union

import numpy as np

from fasttcp import _pcap
from fasttcp.dtypes import SEGMENT6_DTYPE, SEGMENT_DTYPE

__all__ = ["open_capture", "Capture", "CaptureBatch", "CaptureStats", "CaptureError",
           "SKIP_REASONS"]

#: Why a packet gave no TCP segment, as counted in `CaptureStats.skipped`.
SKIP_REASONS = tuple(name for name in _pcap.COUNT_NAMES if name not in ("packets", "ipv4", "ipv6"))

PathLike = Union[str, "os.PathLike[str]"]

_PCAP_MAGIC = {0xA1B2C3D4: 1000, 0xA1B23C4D: 1}   # -> nanoseconds per timestamp fraction unit
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BYTE_ORDER = 0x1A2B3C4D
_GZIP_MAGIC = b"\x1f\x8b"
# How a damaged gzip stream shows: a bad header (OSError), a cut (EOFError), bad deflate data
# (zlib.error, which is no OSError)
_GZIP_ERRORS = (OSError, EOFError, zlib.error)
_DEFAULT_CHUNK = 4 << 20
_ROWS_PER_BATCH = 1 << 17


class CaptureError(ValueError):
    """A capture that cannot be read: not a capture, an unknown link type, or corrupt or
    truncated at `offset` (a byte offset into the file, or into the decompressed data of a
    gzip file)."""

    def __init__(self, message: str, offset: Optional[int] = None):
        super().__init__(message)
        self.offset = offset


class CaptureBatch(NamedTuple):
    """The TCP segments of consecutive packets, by address family, each in capture order."""

    ipv4: np.ndarray    # SEGMENT_DTYPE
    ipv6: np.ndarray    # SEGMENT6_DTYPE


@dataclass
class CaptureStats:
    """What a reader has seen so far.

    `packets` counts every packet record; each one either gave a segment (`ipv4` / `ipv6`) or is
    counted once in `skipped` under its reason (SKIP_REASONS). With ``strict=False`` a corrupt or
    truncated file ends early: `error` says why and `unread_bytes` how much was left behind.
    """

    path: str
    format: str = ""
    linktypes: list[int] = field(default_factory=list)
    packets: int = 0
    ipv4: int = 0
    ipv6: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    bytes_read: int = 0
    error: Optional[str] = None
    unread_bytes: int = 0

    @property
    def segments(self) -> int:
        """TCP segments yielded (IPv4 and IPv6)."""
        return self.ipv4 + self.ipv6

    def add(self, counts: np.ndarray) -> None:
        for name, value in zip(_pcap.COUNT_NAMES, counts.tolist()):
            if name in self.skipped:
                self.skipped[name] += value
            else:
                setattr(self, name, getattr(self, name) + value)


class _Interfaces:
    """A pcapng section's interfaces: arrays the kernel fills in order, `n` rows so far. They
    grow by doubling, so a section of n interfaces costs O(n) in all."""

    def __init__(self) -> None:
        self.n = 0
        self.linktype = np.zeros(8, dtype=np.int64)
        self.tsresol = np.zeros(8, dtype=np.uint8)
        self.tsoffset = np.zeros(8, dtype=np.int64)    # s
        self.snaplen = np.zeros(8, dtype=np.int64)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.linktype, self.tsresol, self.tsoffset, self.snaplen

    def grow(self) -> None:
        size = min(2 * len(self.linktype), _pcap.MAX_INTERFACES)
        for name in ("linktype", "tsresol", "tsoffset", "snaplen"):
            old = getattr(self, name)
            grown = np.zeros(size, dtype=old.dtype)
            grown[:self.n] = old[:self.n]
            setattr(self, name, grown)


def open_capture(path: Union[PathLike, BinaryIO], *, strict: bool = True,
                 chunk_size: int = _DEFAULT_CHUNK) -> "Capture":
    """Opens a pcap or pcapng file (optionally gzip-compressed) for streaming.

    Parameters
    ----------
    path : str, path-like, or a binary stream
        A stream (anything with ``readinto``, such as ``io.BytesIO`` or ``sys.stdin.buffer``)
        is read from where it stands and left open; gzip needs it seekable.
    strict : bool
        If True (the default) a corrupt or truncated file raises `CaptureError` naming the byte
        offset, after the batches before it were yielded. If False, reading stops there and
        ``stats.error`` / ``stats.unread_bytes`` say what was left.
    chunk_size : int
        Bytes read per step; memory stays within a few chunks whatever the file's size.

    Returns
    -------
    Capture
        An iterator of `CaptureBatch` and a context manager.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        As `open` does.
    CaptureError
        When the file is not a pcap or pcapng capture, or a classic pcap's link type is not one
        of Ethernet, Linux cooked (SLL, SLL2), raw IP, BSD loopback, or Linux NFLOG. While
        iterating (if strict), at damage, and at a pcapng packet whose time (timestamp at its
        interface's resolution, plus the interface's offset) is before 1970 or past 2262: every
        timestamp yielded is exact, in int64 nanoseconds since the epoch. Also at a pcapng block
        past the reader's limits, which keep its time linear in the input: 64 MiB per block,
        128 KiB of options per section header or interface description, 65,536 interfaces per
        section (and 256 KiB per classic pcap record).

    >>> open_capture(__file__)
    Traceback (most recent call last):
    ...
    fasttcp.capture.CaptureError: ...capture.py: not a pcap or pcapng file (it starts with 22 22 22 53)
    """
    if chunk_size < 4096:
        raise ValueError(f"chunk_size must be at least 4096 bytes, not {chunk_size}")
    return Capture(path, strict=strict, chunk_size=chunk_size)


class Capture:
    """An open capture: iterate for `CaptureBatch` items; `stats` counts what was read.

    Use `open_capture` to make one. The file closes when the iteration ends (or on `close`);
    iterating a second time raises: open the file again.
    """

    def __init__(self, source: Union[PathLike, BinaryIO], *, strict: bool = True,
                 chunk_size: int = _DEFAULT_CHUNK):
        self.strict = strict
        self._started = False
        self._stream: Optional[BinaryIO] = None     # a caller's stream: read, never closed
        if hasattr(source, "readinto"):
            self._stream = source                   # type: ignore[assignment]
            self.path = str(getattr(source, "name", "<stream>"))
            self._file: Optional[BinaryIO] = self._stream
        else:
            self.path = os.fspath(source)           # type: ignore[arg-type]
            self._file = open(self.path, "rb")
        self.stats = CaptureStats(self.path)
        try:
            assert self._file is not None
            head = self._file.read(4)
            if head[:2] == _GZIP_MAGIC:
                self._file = self._gunzip(len(head))
                head = self._read_head()
            self._check_magic(head)
        except BaseException:
            self.close()
            raise
        self._buf = np.empty(chunk_size, dtype=np.uint8)
        self._buf[:len(head)] = np.frombuffer(head, dtype=np.uint8)
        self._end = len(head)       # bytes of _buf holding data
        self.stats.bytes_read = len(head)
        self._base = 0              # file offset of _buf[0]
        self._swapped = False           # pcapng: the current section's byte order
        self._interfaces = _Interfaces()
        self._last_ts = 0

    def _gunzip(self, consumed: int) -> BinaryIO:
        """The decompressed stream, read from the start again (`consumed` bytes ago)."""
        if self._stream is None:
            assert self._file is not None
            self._file.close()
            return gzip.open(self.path, "rb")           # type: ignore[return-value]
        if not self._stream.seekable():
            raise CaptureError(f"{self.path}: a gzip-compressed stream must be seekable")
        self._stream.seek(-consumed, os.SEEK_CUR)
        return gzip.GzipFile(fileobj=self._stream, mode="rb")   # type: ignore[return-value]

    def _read_head(self) -> bytes:
        assert self._file is not None
        try:
            return self._file.read(4)
        except _GZIP_ERRORS as error:
            raise CaptureError(f"{self.path}: unreadable gzip data ({error})") from None

    def _check_magic(self, head: bytes) -> None:
        if len(head) < 4:
            raise CaptureError(f"{self.path}: not a pcap or pcapng file "
                               f"({'empty' if not head else f'only {len(head)} bytes'})", 0)
        magic_le, = struct.unpack("<I", head)
        magic_be, = struct.unpack(">I", head)
        if magic_le in _PCAP_MAGIC or magic_be in _PCAP_MAGIC:
            self.stats.format = "pcap"
        elif magic_le == _PCAPNG_SHB:
            self.stats.format = "pcapng"
        else:
            raise CaptureError(f"{self.path}: not a pcap or pcapng file "
                               f"(it starts with {head.hex(' ')})", 0)

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the file (a stream passed in stays open); batches already yielded stay
        valid."""
        if self._file is not None and self._file is not self._stream:
            self._file.close()
        self._file = None

    def __repr__(self) -> str:
        return (f"Capture({self.path!r}, format={self.stats.format!r}, "
                f"packets={self.stats.packets}, segments={self.stats.segments})")

    # -- reading ---------------------------------------------------------------------------

    def _fill(self, pos: int) -> int:
        """Keeps _buf[pos:] and reads more after it; returns bytes read (0 at end of file).
        A record bigger than the buffer grows it (the kernels bound record sizes)."""
        keep = self._end - pos
        if pos:
            self._buf[:keep] = self._buf[pos:self._end]
            self._base += pos
        if keep == len(self._buf):
            grown = np.empty(2 * len(self._buf), dtype=np.uint8)
            grown[:keep] = self._buf[:keep]
            self._buf = grown
        self._end = keep
        if self._file is None:
            raise ValueError(f"{self.path}: I/O on a closed capture")
        try:
            got = self._file.readinto(self._buf.data[keep:])  # type: ignore[attr-defined]
        except _GZIP_ERRORS as error:
            raise CaptureError(f"{self.path}: unreadable data after byte offset "
                               f"{self._base + keep} ({error})", self._base + keep) from None
        self._end += got or 0
        self.stats.bytes_read += got or 0
        return got or 0

    def _need(self, pos: int, size: int) -> int:
        """Makes _buf hold `size` bytes from `pos`; returns where they start now, or -1 when
        the file ends first (after raising, if strict)."""
        if self._end - pos >= size:
            return pos
        self._fill(pos)
        while self._end < size:
            if not self._fill(0):
                self._fail(self._base, f"truncated capture: the file ends {self._end} bytes "
                                       f"into a block or header of {size} bytes")
                return -1
        return 0

    def _fail(self, offset: int, problem: str) -> None:
        """Raises (strict) or records why reading stops at `offset`, and how much is left."""
        message = f"{self.path}: {problem} at byte offset {offset}"
        if self.strict:
            raise CaptureError(message, offset)
        self.stats.error = message
        unread = self._end - (offset - self._base)
        while True:
            got = self._fill(self._end)
            if not got:
                break
            unread += got
        self.stats.unread_bytes = unread

    def __iter__(self) -> Iterator[CaptureBatch]:
        if self._started:
            raise ValueError(f"{self.path}: a capture can be iterated once; open it again")
        self._started = True
        try:
            yield from self._segments()
        finally:
            self.close()

    def _segments(self) -> Iterator[CaptureBatch]:
        if self.stats.format == "pcap":
            pos = self._pcap_header()
            status = _pcap.NEED_DATA
        else:
            pos, status = 0, _pcap.BLOCK
        out4: Optional[np.ndarray] = None
        out6: Optional[np.ndarray] = None
        while pos >= 0:
            if status == _pcap.BLOCK:
                pos = self._pcapng_block(pos)
                if pos < 0:
                    return
            if out4 is None or out6 is None:    # the last ones went out in a batch
                out4 = np.empty(_ROWS_PER_BATCH, dtype=SEGMENT_DTYPE)
                out6 = np.empty(_ROWS_PER_BATCH, dtype=SEGMENT6_DTYPE)
            counts = np.zeros(len(_pcap.COUNT_NAMES), dtype=np.int64)
            status, pos, n4, n6 = self._kernel(self._buf[:self._end], pos, out4.view(np.uint8),
                                               out6.view(np.uint8), counts)
            self.stats.add(counts)
            if n4 or n6:
                yield CaptureBatch(out4[:n4], out6[:n6])
                out4 = out6 = None
            if status == _pcap.NEED_DATA:
                if not self._fill(pos):
                    if self._end:
                        self._fail(self._base, f"truncated capture: the file ends "
                                               f"{self._end} bytes into a packet record")
                    return
                pos = 0
            elif status < 0:
                self._fail(self._base + pos, _pcap.ERRORS[status])
                return

    def _pcap_header(self) -> int:
        """Reads a classic pcap file header; sets the kernel; returns the first record's
        position (or -1)."""
        pos = self._need(0, 24)
        if pos < 0:
            return -1
        header = bytes(self._buf[pos:pos + 24])
        order = "<" if struct.unpack("<I", header[:4])[0] in _PCAP_MAGIC else ">"
        magic, _major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack(
            order + "IHHiIII", header)
        linktype = network & 0xFFFF   # the high bits carry FCS information
        self.stats.linktypes.append(linktype)
        if linktype not in _pcap.SUPPORTED_LINKTYPES:
            raise CaptureError(f"{self.path}: unknown link type {linktype}; fasttcp reads "
                               f"Ethernet, Linux cooked (SLL, SLL2), raw IP, BSD loopback and Linux "
                               f"NFLOG", 20)
        swapped, ts_unit = order == ">", _PCAP_MAGIC[magic]

        def kernel(buf, pos, out4, out6, counts):
            status, pos, n4, n6, _ = _pcap.read_pcap(buf, pos, swapped, ts_unit, linktype,
                                                     out4, out6, counts)
            return status, pos, n4, n6

        self._kernel = kernel
        return pos + 24

    def _pcapng_block(self, pos: int) -> int:
        """Reads the section header at `pos`, or grows the interface arrays for the interface
        description there; sets the kernel; returns where it goes on (or -1)."""
        pos = self._need(pos, 12)
        if pos < 0:
            return -1
        if struct.unpack_from("<I", self._buf, pos)[0] == _PCAPNG_SHB:
            order_mark, = struct.unpack_from("<I", self._buf, pos + 8)
            if order_mark not in (_PCAPNG_BYTE_ORDER, 0x4D3C2B1A):
                self._fail(self._base + pos, "section header without the byte-order magic")
                return -1
            self._swapped = order_mark != _PCAPNG_BYTE_ORDER
            length, = struct.unpack_from(">I" if self._swapped else "<I", self._buf, pos + 4)
            problem = None
            if length < 28 or length % 4:
                problem = "section header block length is not a multiple of 4 from 28 bytes"
            elif length > 28 + _pcap.MAX_OPTIONS:     # refused before it is buffered
                problem = _pcap.ERRORS[_pcap.ERR_OPTIONS]
            else:
                pos = self._need(pos, length)
                if pos < 0:
                    return -1
                trailer, = struct.unpack_from(">I" if self._swapped else "<I", self._buf,
                                              pos + length - 4)
                if trailer != length:
                    problem = _pcap.ERRORS[_pcap.ERR_BLOCK_TRAILER]
            if problem:
                self._fail(self._base + pos, problem)
                return -1
            self._interfaces = _Interfaces()
            pos += length
        else:
            self._interfaces.grow()
        swapped, interfaces = self._swapped, self._interfaces

        def kernel(buf, pos, out4, out6, counts):
            before = interfaces.n
            status, pos, n4, n6, self._last_ts, interfaces.n = _pcap.read_pcapng(
                buf, pos, swapped, *interfaces.arrays(), interfaces.n, self._last_ts, out4, out6,
                counts)
            self.stats.linktypes.extend(interfaces.linktype[before:interfaces.n].tolist())
            return status, pos, n4, n6

        self._kernel = kernel
        return pos
