"""Capture parsing kernels: pcap records and pcapng blocks in, TCP segments out.

The Python layer (`fasttcp.capture`) reads a file in chunks and hands each chunk here. A kernel
walks the records of the chunk in one `nogil` loop, decodes each frame down to the TCP header
(link layer, VLAN/MPLS/PPPoE shims, IPv4 options, IPv6 extension headers) and writes one
SEGMENT_DTYPE or SEGMENT6_DTYPE row per TCP segment. It stops at the first record the chunk does
not hold whole (the caller reads more and calls again), when an output array is full, at a
pcapng section header (it may change the byte order) or an interface description the interface
arrays have no room for, or at a record that cannot be valid (a negative status; nothing after
it is trusted).

Every frame that yields no segment is counted under one reason (`COUNT_NAMES`); nothing is dropped
silently. Every read is checked against the captured length first: a frame never makes the parser
look past its own bytes.
"""
import numpy as np

from fasttcp._typedefs cimport int8_t, int64_t, intp_t, uint8_t, uint16_t, uint32_t, uint64_t
from fasttcp._pcap cimport progress_t, seg4_t, seg6_t, u128_t

from libc.string cimport memcpy

# Counter slots, in the order of COUNT_NAMES. A frame lands in exactly one of them besides
# "packets": ipv4/ipv6 when it gave a segment, else the reason it did not.
cdef enum:
    K_PACKETS = 0
    K_IPV4 = 1
    K_IPV6 = 2
    K_NON_IP = 3          # a link-layer payload that is neither IPv4 nor IPv6 (ARP, LLDP, ...)
    K_NON_TCP = 4         # IP, but not TCP (UDP, ICMP, ESP, no next header)
    K_FRAGMENT = 5        # a non-first IP fragment: no TCP header in it
    K_TRUNCATED = 6       # captured bytes end before the TCP header does
    K_MALFORMED = 7       # a header that cannot be valid (IP version, header or data lengths)
    K_UNSUPPORTED_LINK = 8  # a frame from an interface whose link type is not decoded
    N_COUNTS = 9

COUNT_NAMES = ("packets", "ipv4", "ipv6", "non_ip", "non_tcp", "fragment", "truncated",
               "malformed", "unsupported_link")

# Kernel outcomes. Non-negative: where it stopped and why; negative: the record at `pos` is
# corrupt (the Python layer names the problem from ERRORS).
cdef enum:
    S_NEED_DATA = 0       # the record at pos is not whole in this chunk
    S_OUT_FULL = 1        # an output array is full
    S_BLOCK = 2           # pcapng: a section header, or an interface with no room, at pos
    E_RECORD_LENGTH = -1  # pcap: captured length beyond any sane snapshot length
    E_BLOCK_LENGTH = -2   # pcapng: total length under 12 bytes, not a multiple of 4, or huge
    E_BLOCK_TRAILER = -3  # pcapng: the trailing copy of the length differs
    E_INTERFACE = -4      # pcapng: a packet names an interface not described before it
    E_PACKET_LENGTH = -5  # pcapng: captured length runs past the end of its block
    E_TIMESTAMP = -6      # pcapng: the time is before 1970 or beyond int64 nanoseconds
    E_INTERFACE_LENGTH = -7  # pcapng: an interface description under 20 bytes
    E_OPTION_LENGTH = -8  # pcapng: an option runs past the end of its block
    E_OPTIONS = -9        # pcapng: more than C_MAX_OPTIONS bytes of options in one block
    E_INTERFACES = -10    # pcapng: more than C_MAX_INTERFACES interfaces in one section

NEED_DATA = S_NEED_DATA
OUT_FULL = S_OUT_FULL
BLOCK = S_BLOCK
# the damage the Python layer also finds (in section headers)
ERR_BLOCK_TRAILER = E_BLOCK_TRAILER
ERR_OPTIONS = E_OPTIONS
ERRORS = {
    E_RECORD_LENGTH: "record's captured length is larger than any snapshot length",
    E_BLOCK_LENGTH: "block length is not a multiple of 4 between 12 bytes and 64 MiB",
    E_BLOCK_TRAILER: "block's trailing length does not match its leading length",
    E_INTERFACE: "packet refers to an interface that no earlier block described",
    E_PACKET_LENGTH: "packet's captured length runs past the end of its block",
    E_TIMESTAMP: ("packet's timestamp, after its interface's if_tsoffset, is before 1970 or "
                  "past 2262 (int64 nanoseconds)"),
    E_INTERFACE_LENGTH: "interface description block shorter than 20 bytes",
    E_OPTION_LENGTH: "option runs past the end of its block",
    E_OPTIONS: "block holds more than 128 KiB of options",
    E_INTERFACES: "section describes more than 65,536 interfaces",
}

# Link types (tcpdump.org/linktypes.html) the frame decoder understands.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239
LINKTYPE_LINUX_SLL2 = 276
# Before LINKTYPE_RAW existed, some systems wrote their DLT_RAW value (12 or 14) into files.
SUPPORTED_LINKTYPES = frozenset({0, 1, 12, 14, 101, 108, 113, 228, 229, 239, 276})

cdef enum:
    # The largest pcap record length accepted: libpcap's MAXIMUM_SNAPLEN.
    C_MAX_RECORD = 262_144
    # The largest pcapng block accepted (Wireshark's limit is 16 MiB; jumbo frames are far
    # smaller).
    C_MAX_BLOCK = 64 << 20
    # Option bytes accepted in a section header or interface description. Real ones hold tens
    # of bytes; one option can hold at most 65,535 (a 16-bit length), a compiled if_filter at
    # most 32 KiB (BPF_MAXINSNS = 4096 instructions of 8 bytes): twice the largest option.
    C_MAX_OPTIONS = 128 << 10
    # Interfaces per section: the obsolete packet block's interface id has 16 bits; capture
    # tools write one description per interface captured on, and real files hold a handful.
    # At the limit the interface arrays take 1.6 MB.
    C_MAX_INTERFACES = 1 << 16
MAX_RECORD = C_MAX_RECORD
MAX_BLOCK = C_MAX_BLOCK
MAX_OPTIONS = C_MAX_OPTIONS
MAX_INTERFACES = C_MAX_INTERFACES

cdef enum:
    NS_PER_S = 1_000_000_000
# Timestamps are int64 ns since the epoch: 1970 to 2262-04-11.
cdef int64_t C_MAX_NS = 0x7FFFFFFFFFFFFFFF
# 10^j, and the largest raw timestamp of 10^-(9-j) s units that fits in int64 ns, for j <= 9:
# the common resolutions (microseconds, nanoseconds) without offset take one checked multiply
cdef uint64_t[10] POW10 = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000,
                           100_000_000, 1_000_000_000]
cdef uint64_t[10] MAX_RAW = [0x7FFFFFFFFFFFFFFF // 10**j for j in range(10)]

SEG4_SIZE = sizeof(seg4_t)
SEG6_SIZE = sizeof(seg6_t)

ctypedef fused seg_t:
    seg4_t
    seg6_t


cdef list seg_offsets(const seg_t* s):
    """Byte offsets of the segment fields, in SEGMENT_FIELDS order."""
    cdef intp_t base = <intp_t>s
    return [<intp_t>&s.ts - base, <intp_t>&s.src - base, <intp_t>&s.dst - base,
            <intp_t>&s.sport - base, <intp_t>&s.dport - base, <intp_t>&s.flags - base,
            <intp_t>&s.length - base, <intp_t>&s.seq - base, <intp_t>&s.ack - base,
            <intp_t>&s.window - base, <intp_t>&s.wscale - base]


cdef seg4_t _dummy4
cdef seg6_t _dummy6

SEGMENT_FIELDS = ("ts", "src", "dst", "sport", "dport", "flags", "length", "seq", "ack",
                  "window", "wscale")
# native byte order, as the kernels write the rows; the C types of the fields after the addresses
_SEGMENT_TAIL_FORMATS = ["u2", "u2", "u1", "u4", "u4", "u4", "u2", "i1"]


def _segment_dtype(address, list offsets, intp_t itemsize):
    return np.dtype({"names": list(SEGMENT_FIELDS),
                     "formats": ["i8", address, address] + _SEGMENT_TAIL_FORMATS,
                     "offsets": offsets, "itemsize": itemsize})


#: The rows the kernels write (seg4_t / seg6_t): field names, offsets and size read off the
#: structs, as _engine derives CONN4_DTYPE from conn4_t. fasttcp.dtypes re-exports them.
SEGMENT_DTYPE = _segment_dtype("u4", seg_offsets(&_dummy4), sizeof(seg4_t))
SEGMENT6_DTYPE = _segment_dtype(("u1", (16,)), seg_offsets(&_dummy6), sizeof(seg6_t))

cdef enum:
    ETH_IPV4 = 0x0800
    ETH_IPV6 = 0x86DD
    ETH_VLAN = 0x8100
    ETH_QINQ = 0x88A8
    ETH_QINQ_OLD = 0x9100
    ETH_MPLS = 0x8847
    ETH_MPLS_MC = 0x8848
    ETH_PPPOE = 0x8864
    PROTO_TCP = 6
    TCP_SYN = 0x02
    NFPROTO_IPV4 = 2          # NFLOG address families (AF_INET, AF_INET6)
    NFPROTO_IPV6 = 10
    NFULA_PAYLOAD = 9         # the NFLOG TLV that holds the packet
    NLA_TYPE_MASK = 0x3FFF    # netlink's type bits, without the nested/byte-order flags

cdef inline uint16_t be16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]

cdef inline uint32_t be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline uint32_t le32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]

cdef inline uint32_t rd32(const uint8_t* p, bint swapped) noexcept nogil:
    """A 32-bit field of the file's own byte order: little-endian unless `swapped`."""
    return be32(p) if swapped else le32(p)

cdef inline uint16_t rd16(const uint8_t* p, bint swapped) noexcept nogil:
    return be16(p) if swapped else <uint16_t>((<uint16_t>p[1] << 8) | p[0])


cdef inline int8_t window_scale(const uint8_t* opt, intp_t n) noexcept nogil:
    """The window-scale option (kind 3) among `n` bytes of TCP options; -1 if absent."""
    cdef intp_t i = 0
    cdef uint8_t kind
    while i < n:
        kind = opt[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n or opt[i + 1] < 2:
            break
        if kind == 3 and opt[i + 1] == 3 and i + 2 < n:
            return <int8_t>(opt[i + 2] if opt[i + 2] <= 14 else 14)   # RFC 7323 caps it at 14
        i += opt[i + 1]
    return -1


cdef inline int read_tcp(const uint8_t* p, intp_t avail, intp_t ip_payload, uint8_t* out_ports,
                         uint8_t* flags, uint32_t* length, uint32_t* seq, uint32_t* ack,
                         uint16_t* window, int8_t* wscale) noexcept nogil:
    """Decodes the TCP header at `p`: `avail` bytes captured, `ip_payload` bytes by the IP
    header's own length (-1: unknown, use what was captured). Returns 0 or a counter slot."""
    cdef intp_t header
    if avail < 20:
        return K_TRUNCATED
    header = (p[12] >> 4) * 4
    if header < 20:
        return K_MALFORMED
    if ip_payload < 0:
        ip_payload = avail
    if ip_payload < header:
        return K_MALFORMED
    memcpy(out_ports, p, 4)
    seq[0] = be32(p + 4)
    ack[0] = be32(p + 8)
    flags[0] = p[13]
    window[0] = be16(p + 14)
    length[0] = <uint32_t>(ip_payload - header)
    wscale[0] = -1
    if p[13] & TCP_SYN:
        wscale[0] = window_scale(p + 20, (header if header < avail else avail) - 20)
    return 0


cdef int decode_ipv4(const uint8_t* p, intp_t avail, int64_t ts, seg4_t* out) noexcept nogil:
    """An IPv4 packet at `p`; writes `out` and returns K_IPV4, or returns the skip reason."""
    cdef intp_t header, total, rc
    cdef uint8_t ports[4]
    if avail < 20:
        return K_TRUNCATED
    if p[0] >> 4 != 4:
        return K_MALFORMED
    header = (p[0] & 0x0F) * 4
    total = be16(p + 2)
    if header < 20:
        return K_MALFORMED
    if be16(p + 6) & 0x1FFF:
        return K_FRAGMENT
    if p[9] != PROTO_TCP:
        return K_NON_TCP
    if avail < header:
        return K_TRUNCATED
    # a zero total length is what segmentation offload leaves in locally captured packets
    if total != 0 and total < header:
        return K_MALFORMED
    rc = read_tcp(p + header, avail - header, total - header if total else -1, ports,
                  &out.flags, &out.length, &out.seq, &out.ack, &out.window, &out.wscale)
    if rc:
        return rc
    out.ts = ts
    out.src = be32(p + 12)
    out.dst = be32(p + 16)
    out.sport = be16(ports)
    out.dport = be16(ports + 2)
    return K_IPV4


cdef int decode_ipv6(const uint8_t* p, intp_t avail, int64_t ts, seg6_t* out) noexcept nogil:
    """An IPv6 packet at `p`, its extension headers walked to TCP; as decode_ipv4."""
    cdef intp_t off = 40, ext, payload, rc
    cdef uint8_t next_header
    cdef uint8_t ports[4]
    if avail < 40:
        return K_TRUNCATED
    if p[0] >> 4 != 6:
        return K_MALFORMED
    payload = be16(p + 4)          # 0: a jumbogram or offloaded packet, length unknown
    next_header = p[6]
    while next_header != PROTO_TCP:
        if next_header in (0, 43, 60, 135, 139, 140):   # hop-by-hop, routing, destination, ...
            if avail < off + 2:
                return K_TRUNCATED
            ext = (<intp_t>p[off + 1] + 1) * 8
        elif next_header == 44:                          # fragment header
            if avail < off + 8:
                return K_TRUNCATED
            if be16(p + off + 2) & 0xFFF8:
                return K_FRAGMENT
            ext = 8
        elif next_header == 51:                          # authentication header
            if avail < off + 2:
                return K_TRUNCATED
            ext = (<intp_t>p[off + 1] + 2) * 4
        else:                                            # UDP, ICMPv6, ESP, no next header...
            return K_NON_TCP
        next_header = p[off]
        off += ext
        if payload and off - 40 > payload:
            return K_MALFORMED
    if avail < off:
        return K_TRUNCATED
    rc = read_tcp(p + off, avail - off, payload - (off - 40) if payload else -1, ports,
                  &out.flags, &out.length, &out.seq, &out.ack, &out.window, &out.wscale)
    if rc:
        return rc
    out.ts = ts
    memcpy(out.src, p + 8, 16)
    memcpy(out.dst, p + 24, 16)
    out.sport = be16(ports)
    out.dport = be16(ports + 2)
    return K_IPV6


cdef int decode_ip(const uint8_t* p, intp_t avail, int64_t ts, seg4_t* out4,
                   seg6_t* out6) noexcept nogil:
    """An IP packet of either version, told apart by its first nibble."""
    if avail < 1:
        return K_TRUNCATED
    if p[0] >> 4 == 4:
        return decode_ipv4(p, avail, ts, out4)
    if p[0] >> 4 == 6:
        return decode_ipv6(p, avail, ts, out6)
    return K_NON_IP


cdef int decode_ethertype(const uint8_t* p, intp_t caplen, intp_t off, uint16_t ethertype,
                          int64_t ts, seg4_t* out4, seg6_t* out6) noexcept nogil:
    """The payload at `off` of a frame whose link header named `ethertype`: strips VLAN tags,
    MPLS labels and PPPoE session headers on the way to IP."""
    while True:
        if ethertype == ETH_IPV4:
            return decode_ipv4(p + off, caplen - off, ts, out4)
        if ethertype == ETH_IPV6:
            return decode_ipv6(p + off, caplen - off, ts, out6)
        if ethertype == ETH_VLAN or ethertype == ETH_QINQ or ethertype == ETH_QINQ_OLD:
            if caplen < off + 4:
                return K_TRUNCATED
            ethertype = be16(p + off + 2)
            off += 4
        elif ethertype == ETH_MPLS or ethertype == ETH_MPLS_MC:
            # labels until the bottom-of-stack bit; MPLS does not say what it carries, the
            # IP version nibble does
            while True:
                if caplen < off + 4:
                    return K_TRUNCATED
                off += 4
                if p[off - 2] & 1:
                    break
            return decode_ip(p + off, caplen - off, ts, out4, out6)
        elif ethertype == ETH_PPPOE:
            if caplen < off + 8:
                return K_TRUNCATED
            ethertype = be16(p + off + 6)
            off += 8
            if ethertype == 0x0021:
                ethertype = ETH_IPV4
            elif ethertype == 0x0057:
                ethertype = ETH_IPV6
            else:
                return K_NON_IP
        else:
            return K_NON_IP


cdef int decode_nflog(const uint8_t* p, intp_t caplen, bint swapped, int64_t ts,
                      seg4_t* out4, seg6_t* out6) noexcept nogil:
    """A Linux NFLOG frame (tcpdump.org's LINKTYPE_NFLOG): a 4-byte header (address family,
    version 0, resource id), then TLVs. A TLV's 16-bit length and type are in the byte order
    of the host that wrote the file, which is the file's own (libpcap and Wireshark read them
    so); the length counts the 4-byte TLV header, and each TLV is padded to 4 bytes. The
    NFULA_PAYLOAD TLV holds the IP packet."""
    cdef intp_t off = 4, size, avail
    if caplen < 4:
        return K_TRUNCATED
    if p[1] != 0:
        return K_UNSUPPORTED_LINK       # a header version this decoder does not know
    if p[0] != NFPROTO_IPV4 and p[0] != NFPROTO_IPV6:
        return K_NON_IP                 # bridge, ARP, ... families
    while True:
        if caplen - off < 4:
            # the TLVs end, or the snapshot length cut them, before any payload: none of the
            # packet was captured (NFLOG's metadata-only copy mode writes such records)
            return K_TRUNCATED
        size = rd16(p + off, swapped)
        if size < 4:
            return K_MALFORMED          # a TLV shorter than its own header
        if rd16(p + off + 2, swapped) & NLA_TYPE_MASK == NFULA_PAYLOAD:
            avail = caplen - off - 4
            if size - 4 < avail:
                avail = size - 4
            if p[0] == NFPROTO_IPV4:
                return decode_ipv4(p + off + 4, avail, ts, out4)
            return decode_ipv6(p + off + 4, avail, ts, out6)
        off += (size + 3) & ~3


cdef int decode_frame(const uint8_t* p, intp_t caplen, int linktype, bint swapped, int64_t ts,
                      seg4_t* out4, seg6_t* out6) noexcept nogil:
    """One captured frame: K_IPV4 / K_IPV6 with the segment written, or the skip reason.
    `swapped`: the file is big-endian (NFLOG's TLV headers follow the file's byte order)."""
    cdef uint32_t family
    if linktype == 1:                                   # Ethernet
        if caplen < 14:
            return K_TRUNCATED
        return decode_ethertype(p, caplen, 14, be16(p + 12), ts, out4, out6)
    if linktype == 113:                                 # Linux cooked capture v1
        if caplen < 16:
            return K_TRUNCATED
        return decode_ethertype(p, caplen, 16, be16(p + 14), ts, out4, out6)
    if linktype == 276:                                 # Linux cooked capture v2
        if caplen < 20:
            return K_TRUNCATED
        return decode_ethertype(p, caplen, 20, be16(p), ts, out4, out6)
    if linktype == 101 or linktype == 12 or linktype == 14:
        return decode_ip(p, caplen, ts, out4, out6)
    if linktype == 228:
        return decode_ipv4(p, caplen, ts, out4)
    if linktype == 229:
        return decode_ipv6(p, caplen, ts, out6)
    if linktype == 0 or linktype == 108:
        # BSD loopback: a 4-byte address family, in the writer's byte order for NULL and in
        # network order for LOOP; the IPv6 value differs between BSDs (24, 28, 30)
        if caplen < 4:
            return K_TRUNCATED
        family = be32(p) if linktype == 108 else (le32(p) if p[0] else be32(p))
        if family == 2:
            return decode_ipv4(p + 4, caplen - 4, ts, out4)
        if family == 24 or family == 28 or family == 30:
            return decode_ipv6(p + 4, caplen - 4, ts, out6)
        return K_NON_IP
    if linktype == 239:
        return decode_nflog(p, caplen, swapped, ts, out4, out6)
    return K_UNSUPPORTED_LINK


cdef struct outputs_t:
    # where a kernel call writes segments, and how many rows each array has
    seg4_t* seg4
    seg6_t* seg6
    intp_t cap4
    intp_t cap6
    int64_t* counts


cdef outputs_t outputs(uint8_t[::1] out4, uint8_t[::1] out6, int64_t[::1] counts) except *:
    """The output arrays of a kernel call (SEGMENT_DTYPE / SEGMENT6_DTYPE rows as bytes, and
    the counters), checked."""
    cdef outputs_t out
    if counts.shape[0] != N_COUNTS:
        raise ValueError(f"counts must have {N_COUNTS} slots")
    out.cap4 = out4.shape[0] // sizeof(seg4_t)
    out.cap6 = out6.shape[0] // sizeof(seg6_t)
    if out.cap4 == 0 or out.cap6 == 0:
        raise ValueError("output arrays must hold at least one row each")
    out.seg4 = <seg4_t*>&out4[0]
    out.seg6 = <seg6_t*>&out6[0]
    out.counts = &counts[0]
    return out


cdef inline bint full(const outputs_t* out, const progress_t* prog) noexcept nogil:
    return prog.n4 == out.cap4 or prog.n6 == out.cap6


cdef inline bint take_frame(const uint8_t* p, intp_t caplen, int linktype, bint swapped,
                            int64_t ts, const outputs_t* out, progress_t* prog) noexcept nogil:
    """Decodes a frame into the next free output row and counts it. Returns whether a row
    was used."""
    cdef int kind = decode_frame(p, caplen, linktype, swapped, ts, out.seg4 + prog.n4,
                                 out.seg6 + prog.n6)
    out.counts[K_PACKETS] += 1
    out.counts[kind] += 1
    prog.last_ts = ts
    if kind == K_IPV4:
        prog.n4 += 1
    elif kind == K_IPV6:
        prog.n6 += 1
    else:
        return False
    return True


def read_pcap(const uint8_t[::1] buf, intp_t pos, bint swapped, int64_t ts_unit, int linktype,
              uint8_t[::1] out4, uint8_t[::1] out6, int64_t[::1] counts):
    """Decodes the classic pcap records of `buf` from `pos`.

    `ts_unit` is 1000 for microsecond files, 1 for nanosecond ones. `out4` / `out6` are
    SEGMENT_DTYPE / SEGMENT6_DTYPE arrays viewed as bytes. Returns (status, pos, n4, n6, last_ts).

    A timestamp is seconds * 10^9 + fraction * ts_unit, both fields unsigned 32-bit: at most
    4.3e18 ns, so it never overflows int64 and is never negative. A fraction of a second or
    more is invalid but carries into the seconds, as libpcap passes it on unchecked.
    """
    cdef intp_t end = buf.shape[0]
    cdef outputs_t out = outputs(out4, out6, counts)
    cdef const uint8_t* base = &buf[0] if end else NULL
    cdef progress_t prog
    cdef uint32_t caplen
    cdef int64_t ts
    cdef int status = S_NEED_DATA
    prog.pos, prog.n4, prog.n6, prog.last_ts = pos, 0, 0, 0
    with nogil:
        while True:
            if full(&out, &prog):
                status = S_OUT_FULL
                break
            if end - prog.pos < 16:
                break
            caplen = rd32(base + prog.pos + 8, swapped)
            if caplen > C_MAX_RECORD:
                status = E_RECORD_LENGTH
                break
            if end - prog.pos - 16 < caplen:
                break
            ts = (<int64_t>rd32(base + prog.pos, swapped) * 1_000_000_000
                  + <int64_t>rd32(base + prog.pos + 4, swapped) * ts_unit)
            take_frame(base + prog.pos + 16, caplen, linktype, swapped, ts, &out, &prog)
            prog.pos += 16 + caplen
    return status, prog.pos, prog.n4, prog.n6, prog.last_ts


cdef inline u128_t mul32(uint64_t a, uint32_t b) noexcept nogil:
    """a * b exactly, from 32-bit halves (MSVC has no __int128)."""
    cdef uint64_t low = (a & <uint32_t>0xFFFFFFFF) * b     # each product is below 2^64
    cdef uint64_t high = (a >> 32) * b                     # and weighs 2^32
    cdef u128_t r
    r.lo = low + (high << 32)
    r.hi = (high >> 32) + (r.lo < low)
    return r


cdef inline bint pcapng_ns(uint64_t raw, uint8_t tsresol, int64_t offset_s,
                           int64_t* ns) noexcept nogil:
    """Writes to `ns` the time of a pcapng timestamp: `raw` units of the interface's if_tsresol
    (high bit set: 2^-k s, else 10^-k s, k = the low 7 bits) plus its if_tsoffset (`offset_s`
    seconds), in ns since the epoch, rounded down to the nanosecond. The sum is exact in 128
    bits for every resolution and offset the format can hold. Returns False, writing nothing,
    when the time is before 1970 or past int64 ns (2262-04-11)."""
    cdef int k = tsresol & 0x7F
    cdef uint64_t scale = 1
    cdef uint64_t magnitude
    cdef u128_t t, offset
    cdef int i
    if tsresol & 0x80:                  # raw * 10^9 / 2^k
        t = mul32(raw, NS_PER_S)
        if k >= 64:
            t.lo, t.hi = t.hi >> (k - 64), 0
        elif k:
            t.lo, t.hi = (t.lo >> k) | (t.hi << (64 - k)), t.hi >> k
    elif k <= 9:
        if offset_s == 0:
            if raw > MAX_RAW[9 - k]:
                return False
            ns[0] = <int64_t>(raw * POW10[9 - k])
            return True
        t = mul32(raw, <uint32_t>POW10[9 - k])
    else:
        t.hi, t.lo = 0, 0               # raw < 2^64 < 10^20 units: under a nanosecond
        if k - 9 <= 19:                 # 10^19 is the largest power of ten in a uint64
            for i in range(k - 9):
                scale *= 10
            t.lo = raw // scale
    # |offset_s| in unsigned arithmetic, where -INT64_MIN fits
    magnitude = <uint64_t>offset_s if offset_s >= 0 else <uint64_t>0 - <uint64_t>offset_s
    offset = mul32(magnitude, NS_PER_S)
    if offset_s >= 0:
        t.lo += offset.lo
        t.hi += offset.hi + (t.lo < offset.lo)
    elif t.hi < offset.hi or (t.hi == offset.hi and t.lo < offset.lo):
        return False                    # before 1970
    else:
        t.hi -= offset.hi + (t.lo < offset.lo)
        t.lo -= offset.lo
    if t.hi or t.lo > <uint64_t>C_MAX_NS:
        return False
    ns[0] = <int64_t>t.lo
    return True


cdef inline uint64_t rd64(const uint8_t* p, bint swapped) noexcept nogil:
    if swapped:
        return (<uint64_t>be32(p) << 32) | be32(p + 4)
    return (<uint64_t>le32(p + 4) << 32) | le32(p)


cdef int read_interface(const uint8_t* block, uint32_t length, bint swapped, intp_t i,
                        int64_t[::1] if_linktype, uint8_t[::1] if_tsresol,
                        int64_t[::1] if_tsoffset, int64_t[::1] if_snaplen) noexcept nogil:
    """Reads the whole interface description `block` into row `i` of the interface arrays:
    link type, snapshot length, and the if_tsresol / if_tsoffset options (defaults 6 and 0).
    Returns 0, or a negative status with the arrays untouched. The option walk is bounded by
    the block, which the caller bounded by C_MAX_OPTIONS."""
    cdef uint32_t at = 16, end = length - 4, code, size
    cdef uint8_t tsresol = 6
    cdef int64_t tsoffset = 0
    if length < 20:
        return E_INTERFACE_LENGTH
    while at + 4 <= end:
        code = rd16(block + at, swapped)
        size = rd16(block + at + 2, swapped)
        if code == 0:                           # opt_endofopt
            break
        if size > end - at - 4:
            return E_OPTION_LENGTH
        if code == 9 and size >= 1:
            tsresol = block[at + 4]
        elif code == 14 and size >= 8:
            tsoffset = <int64_t>rd64(block + at + 4, swapped)
        at += 4 + (size + 3) // 4 * 4
    if_linktype[i] = rd16(block + 8, swapped)
    if_snaplen[i] = rd32(block + 12, swapped)
    if_tsresol[i] = tsresol
    if_tsoffset[i] = tsoffset
    return 0


def read_pcapng(const uint8_t[::1] buf, intp_t pos, bint swapped, int64_t[::1] if_linktype,
                uint8_t[::1] if_tsresol, int64_t[::1] if_tsoffset, int64_t[::1] if_snaplen,
                intp_t n_if, int64_t last_ts, uint8_t[::1] out4, uint8_t[::1] out6,
                int64_t[::1] counts):
    """Decodes the pcapng blocks of `buf` from `pos`: packets (enhanced, simple and the obsolete
    packet block) and interface descriptions; statistics, name resolution and custom blocks
    are skipped.

    The interface arrays hold the section's interfaces in order: the first `n_if` rows are
    filled, and each interface description read fills the next (if_tsoffset in seconds).
    Stops with BLOCK at a section header, or at an interface description the arrays have no
    room for (the caller grows them and calls again). A simple packet block has no timestamp:
    it gets the previous packet's (`last_ts`). Returns (status, pos, n4, n6, last_ts, n_if).

    An interface description is refused with more than C_MAX_OPTIONS bytes of options before
    it is buffered, and with more than C_MAX_INTERFACES interfaces in the section: each block
    then costs time in proportion to its bytes.
    """
    cdef intp_t end = buf.shape[0]
    cdef outputs_t out = outputs(out4, out6, counts)
    cdef const uint8_t* base = &buf[0] if end else NULL
    cdef const uint8_t* block
    cdef const uint8_t* frame = NULL  # the packet of the block at hand, if it holds one
    cdef intp_t room = if_linktype.shape[0]
    cdef progress_t prog
    cdef uint32_t kind, length, caplen, iface
    cdef uint64_t raw_ts
    cdef int64_t ts
    cdef int status = S_NEED_DATA
    if not (if_tsresol.shape[0] == if_tsoffset.shape[0] == if_snaplen.shape[0] == room):
        raise ValueError("interface arrays differ in length")
    if not 0 <= n_if <= room:
        raise ValueError(f"n_if must be between 0 and {room}, not {n_if}")
    prog.pos, prog.n4, prog.n6, prog.last_ts = pos, 0, 0, last_ts
    with nogil:
        while True:
            if full(&out, &prog):
                status = S_OUT_FULL
                break
            if end - prog.pos < 12:
                break
            block = base + prog.pos
            kind = rd32(block, swapped)
            length = rd32(block + 4, swapped)
            if kind == 0x0A0D0D0A:
                status = S_BLOCK
                break
            if length < 12 or length % 4 or length > C_MAX_BLOCK:
                status = E_BLOCK_LENGTH
                break
            if kind == 1:
                # refused before it is buffered: a huge block of empty options costs nothing
                if length > 20 + C_MAX_OPTIONS:
                    status = E_OPTIONS
                    break
                if n_if == C_MAX_INTERFACES:
                    status = E_INTERFACES
                    break
                if n_if == room:
                    status = S_BLOCK
                    break
            if end - prog.pos < length:
                break
            if rd32(block + length - 4, swapped) != length:
                status = E_BLOCK_TRAILER
                break
            if kind == 1:                               # interface description
                status = read_interface(block, length, swapped, n_if, if_linktype, if_tsresol,
                                        if_tsoffset, if_snaplen)
                if status:
                    break
                n_if += 1
            elif kind == 6 or kind == 2:                # enhanced / obsolete packet block
                if length < 32:
                    status = E_BLOCK_LENGTH
                    break
                if kind == 6:
                    iface = rd32(block + 8, swapped)
                else:
                    iface = rd16(block + 8, swapped)
                if iface >= n_if:
                    status = E_INTERFACE
                    break
                caplen = rd32(block + 20, swapped)
                if caplen > length - 32:
                    status = E_PACKET_LENGTH
                    break
                raw_ts = (<uint64_t>rd32(block + 12, swapped) << 32) | rd32(block + 16, swapped)
                if not pcapng_ns(raw_ts, if_tsresol[iface], if_tsoffset[iface], &ts):
                    status = E_TIMESTAMP
                    break
                frame = block + 28
            elif kind == 3:                             # simple packet block: interface 0
                if length < 16:
                    status = E_BLOCK_LENGTH
                    break
                if n_if == 0:
                    status = E_INTERFACE
                    break
                # the captured part is what the block holds, at most the original length and
                # the interface's snapshot length
                caplen = rd32(block + 8, swapped)
                if caplen > length - 16:
                    caplen = length - 16
                if if_snaplen[0] and caplen > if_snaplen[0]:
                    caplen = <uint32_t>if_snaplen[0]
                iface, ts, frame = 0, prog.last_ts, block + 12
            # one call for both packet blocks, so that the compiler inlines it
            if frame != NULL:
                take_frame(frame, caplen, if_linktype[iface], swapped, ts, &out, &prog)
                frame = NULL
            prog.pos += length
    return status, prog.pos, prog.n4, prog.n6, prog.last_ts, n_if
