"""Builders for small captures, byte by byte, straight from the format specifications
(pcap: tcpdump.org/manpages/pcap-savefile.5; pcapng: IETF draft-ietf-opsawg-pcapng), so the
reader is tested against files it did not write."""
from __future__ import annotations

import ipaddress
import struct
from typing import Iterable, Optional

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def tcp(sport: int = 40000, dport: int = 80, flags: int = ACK, seq: int = 1000, ack: int = 0,
        window: int = 65535, payload: bytes = b"", options: bytes = b"") -> bytes:
    options += b"\x00" * (-len(options) % 4)
    offset = (20 + len(options)) // 4
    return struct.pack(">HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, window, 0,
                       0) + options + payload


def ipv4(segment: bytes, src: str = "10.0.0.1", dst: str = "10.0.0.2", proto: int = 6,
         options: bytes = b"", frag: int = 0, total: Optional[int] = None) -> bytes:
    header_len = 20 + len(options)
    total = header_len + len(segment) if total is None else total
    return struct.pack(">BBHHHBBH4s4s", 0x40 | header_len // 4, 0, total, 1, frag, 64, proto, 0,
                       ipaddress.IPv4Address(src).packed,
                       ipaddress.IPv4Address(dst).packed) + options + segment


def ipv6(segment: bytes, src: str = "2001:db8::1", dst: str = "2001:db8::2",
         extensions: Iterable[tuple[int, bytes]] = (), proto: int = 6) -> bytes:
    """`extensions`: (header type, header bytes whose first byte is overwritten with the next
    header) in order."""
    extensions = list(extensions)
    chain = b""
    types = [kind for kind, _ in extensions] + [proto]
    for (kind, body), next_header in zip(extensions, types[1:]):
        chain += bytes([next_header]) + body[1:]
    payload = chain + segment
    return struct.pack(">IHBB16s16s", 6 << 28, len(payload), types[0], 64,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def ethernet(packet: bytes, ethertype: int = 0x0800,
             tags: Iterable[tuple[int, int]] = ()) -> bytes:
    """An Ethernet II frame; `tags` are (TPID, TCI) pairs, outermost first (802.1Q, QinQ)."""
    shims = b"".join(struct.pack(">HH", tpid, tci) for tpid, tci in tags)
    return b"\x02" * 6 + b"\x04" * 6 + shims + struct.pack(">H", ethertype) + packet


def pcap(frames: Iterable[tuple[float, bytes]], linktype: int = 1, big_endian: bool = False,
         nanosecond: bool = False, snaplen: int = 65535) -> bytes:
    """A classic pcap file; each frame is (timestamp in nanoseconds, bytes)."""
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)
    unit = 10**9 if nanosecond else 10**6
    for ts, frame in frames:
        ticks = ts // (10**9 // unit)
        out += struct.pack(order + "IIII", ticks // unit, ticks % unit, len(frame), len(frame))
        out += frame
    return out


def _block(kind: int, body: bytes, order: str) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack(order + "II", kind, length) + body + struct.pack(order + "I", length)


def _option(code: int, value: bytes, order: str) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def section(order: str = "<") -> bytes:
    return _block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)


def interface(linktype: int = 1, tsresol: Optional[int] = None, tsoffset: int = 0,
              snaplen: int = 0, order: str = "<") -> bytes:
    options = b""
    if tsresol is not None:
        options += _option(9, bytes([tsresol]), order)
    if tsoffset:
        options += _option(14, struct.pack(order + "q", tsoffset), order)
    if options:
        options += _option(0, b"", order)
    return _block(1, struct.pack(order + "HHI", linktype, 0, snaplen) + options, order)


def enhanced(frame: bytes, ticks: int, iface: int = 0, order: str = "<") -> bytes:
    return _block(6, struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF,
                                 len(frame), len(frame)) + frame, order)


def simple(frame: bytes, order: str = "<") -> bytes:
    return _block(3, struct.pack(order + "I", len(frame)) + frame, order)


def statistics(order: str = "<") -> bytes:
    return _block(5, struct.pack(order + "III", 0, 0, 0), order)
