"""CSV text of flow rows, formatted in one nogil loop.

Python's csv module spends microseconds per row; a capture of a million connections would wait
seconds for its flow file. Here each field is written straight into a byte buffer: integers
digit by digit, timestamps and durations as exact decimal seconds (integer nanoseconds, never a
float), IPv4 addresses as dotted quads, IPv6 addresses in RFC 5952 text (lower case, the
longest run of two or more zero groups as "::"), names from tables the caller passes.
"""
from fasttcp._typedefs cimport int64_t, intp_t, uint8_t, uint16_t, uint32_t, uint64_t

from libc.string cimport memcpy

# The longest line a row can make, besides the state name: two IPv6 addresses (39 each),
# two timestamps (30), six counters (20), ports, names, flags and separators.
MAX_ROW_BYTES = 320


# "00" to "99": numbers are written two digits per division, which halves the divisions
cdef const char* DIGIT_PAIRS = (b"00010203040506070809101112131415161718192021222324252627282930"
                                b"31323334353637383940414243444546474849505152535455565758596061"
                                b"6263646566676869707172737475767778798081828384858687888990919293"
                                b"949596979899")
# 10^k for k < 20: the digits of a uint64 are counted by comparisons, without dividing
cdef uint64_t[20] POW10 = [10**k for k in range(20)]


cdef inline void put_pairs(uint8_t* end, uint64_t value, intp_t n) noexcept nogil:
    """The n lowest decimal digits of value, zero-padded, ending just before `end`."""
    cdef uint64_t pair
    while n >= 2:
        pair = (value % 100) * 2
        value //= 100
        end -= 2
        end[0] = DIGIT_PAIRS[pair]
        end[1] = DIGIT_PAIRS[pair + 1]
        n -= 2
    if n:
        (end - 1)[0] = 48 + value % 10


cdef inline intp_t put_uint(uint8_t* out, uint64_t value) noexcept nogil:
    cdef intp_t n = 1
    while n < 20 and value >= POW10[n]:
        n += 1
    put_pairs(out + n, value, n)
    return n


cdef inline intp_t put_seconds(uint8_t* out, int64_t ns) noexcept nogil:
    """Nanoseconds as decimal seconds with nine decimals ("-" sign for negatives)."""
    cdef intp_t at = 0
    cdef uint64_t whole
    if ns < 0:
        out[0] = 45
        at = 1
        whole = <uint64_t>(-(ns + 1)) + 1
    else:
        whole = <uint64_t>ns
    at += put_uint(out + at, whole // 1_000_000_000)
    out[at] = 46
    put_pairs(out + at + 10, whole % 1_000_000_000, 9)
    return at + 10


cdef inline intp_t put_ipv4(uint8_t* out, uint32_t address) noexcept nogil:
    cdef intp_t at = 0
    cdef int shift
    for shift in range(24, -8, -8):
        at += put_uint(out + at, (address >> shift) & 0xFF)
        out[at] = 46
        at += 1
    return at - 1


cdef inline intp_t put_ipv6(uint8_t* out, const uint8_t* address) noexcept nogil:
    cdef uint16_t groups[8]
    cdef int i, best = -1, best_len = 0, run_start = -1, run_len
    cdef intp_t at = 0
    cdef uint8_t* hexdigits = b"0123456789abcdef"
    cdef int shift
    cdef bint started
    for i in range(8):
        groups[i] = (<uint16_t>address[2 * i] << 8) | address[2 * i + 1]
    # the longest run of zero groups (the first of equal ones), if two or more long
    i = 0
    while i < 8:
        if groups[i] == 0:
            run_start = i
            while i < 8 and groups[i] == 0:
                i += 1
            run_len = i - run_start
            if run_len > best_len:
                best, best_len = run_start, run_len
        else:
            i += 1
    if best_len < 2:
        best = -1
    i = 0
    while i < 8:
        if i == best:
            out[at] = 58
            out[at + 1] = 58
            at += 2
            i += best_len
            continue
        if i and i != best + best_len:
            out[at] = 58
            at += 1
        started = False
        for shift in range(12, -4, -4):
            if started or (groups[i] >> shift) & 0xF or shift == 0:
                out[at] = hexdigits[(groups[i] >> shift) & 0xF]
                at += 1
                started = True
        i += 1
    return at


cdef inline intp_t put_name(uint8_t* out, const uint8_t[:, ::1] names,
                            const intp_t[::1] lengths, intp_t code) noexcept nogil:
    memcpy(out, &names[code, 0], lengths[code])
    return lengths[code]


def format_rows(const int64_t[::1] ts, const int64_t[::1] last_ts, orig_h, resp_h,
                const uint16_t[::1] orig_p, const uint16_t[::1] resp_p,
                const uint64_t[::1] orig_bytes, const uint64_t[::1] resp_bytes,
                const uint8_t[::1] conn_state, const uint8_t[:, ::1] history,
                const uint32_t[::1] orig_pkts, const uint32_t[::1] resp_pkts,
                const uint8_t[::1] state, const uint8_t[::1] flipped,
                const uint8_t[::1] picked_up, const uint8_t[::1] illegal,
                const uint8_t[::1] ended, const uint8_t[:, ::1] names,
                const intp_t[::1] name_lengths, intp_t conn_state_base, intp_t state_base,
                intp_t ended_base, uint8_t[::1] out):
    """Writes rows as CSV lines (fasttcp.flows.CSV_COLUMNS order) into `out`; returns the
    bytes written.

    orig_h / resp_h are uint32 (IPv4) or (n, 16) uint8 (IPv6) arrays. A name column's code c
    is written as names[base + c] (length name_lengths[base + c]). The caller checks codes
    and sizes `out` at n * (MAX_ROW_BYTES + the longest name).
    """
    cdef intp_t n = ts.shape[0], i, at = 0, k
    cdef const uint32_t[::1] orig4, resp4
    cdef const uint8_t[:, ::1] orig6, resp6
    cdef bint v6 = getattr(orig_h, "ndim", 1) == 2
    if v6:
        orig6, resp6 = orig_h, resp_h
    else:
        orig4, resp4 = orig_h, resp_h
    lengths = {last_ts.shape[0], orig_p.shape[0], resp_p.shape[0], orig_bytes.shape[0],
               resp_bytes.shape[0], conn_state.shape[0], orig_pkts.shape[0],
               resp_pkts.shape[0], state.shape[0], flipped.shape[0], picked_up.shape[0],
               illegal.shape[0], ended.shape[0], n}
    if len(lengths) != 1 or history.shape[0] != n or (v6 and (orig6.shape[0] != n or resp6.shape[0] != n)) or (
            not v6 and (orig4.shape[0] != n or resp4.shape[0] != n)):
        raise ValueError("format_rows: columns differ in length")
    if n == 0:
        return 0
    cdef uint8_t* o = &out[0]
    cdef intp_t width = history.shape[1]
    with nogil:
        for i in range(n):
            at += put_seconds(o + at, ts[i])
            o[at] = 44
            at += 1
            at += put_ipv6(o + at, &orig6[i, 0]) if v6 else put_ipv4(o + at, orig4[i])
            o[at] = 44
            at += 1 + put_uint(o + at + 1, orig_p[i])
            o[at] = 44
            at += 1
            at += put_ipv6(o + at, &resp6[i, 0]) if v6 else put_ipv4(o + at, resp4[i])
            o[at] = 44
            at += 1 + put_uint(o + at + 1, resp_p[i])
            o[at] = 44
            at += 1 + put_seconds(o + at + 1, last_ts[i] - ts[i])
            o[at] = 44
            at += 1 + put_uint(o + at + 1, orig_bytes[i])
            o[at] = 44
            at += 1 + put_uint(o + at + 1, resp_bytes[i])
            o[at] = 44
            at += 1 + put_name(o + at + 1, names, name_lengths, conn_state_base + conn_state[i])
            o[at] = 44
            at += 1
            for k in range(width):
                if history[i, k] == 0:
                    break
                o[at] = history[i, k]
                at += 1
            o[at] = 44
            at += 1 + put_uint(o + at + 1, orig_pkts[i])
            o[at] = 44
            at += 1 + put_uint(o + at + 1, resp_pkts[i])
            o[at] = 44
            at += 1 + put_name(o + at + 1, names, name_lengths, state_base + state[i])
            o[at] = 44
            o[at + 1] = 84 if flipped[i] else 70        # T / F, as Zeek writes booleans
            o[at + 2] = 44
            o[at + 3] = 84 if picked_up[i] else 70
            o[at + 4] = 44
            at += 5 + put_uint(o + at + 5, illegal[i])
            o[at] = 44
            at += 1 + put_name(o + at + 1, names, name_lengths, ended_base + ended[i])
            o[at] = 10
            at += 1
    return at


def address_strings(addresses):
    """Addresses as a list of str: IPv4 host-order uint32 (n,), or IPv6 (n, 16) bytes in
    network order (RFC 5952 text), as the CSV writer prints them."""
    cdef const uint32_t[::1] v4
    cdef const uint8_t[:, ::1] v6
    cdef uint8_t text[48]
    cdef intp_t i, n
    cdef bint six = addresses.ndim == 2
    out = []
    if six:
        v6 = addresses
        n = v6.shape[0]
        for i in range(n):
            out.append((<char*>text)[:put_ipv6(text, &v6[i, 0])].decode("ascii"))
    else:
        v4 = addresses
        n = v4.shape[0]
        for i in range(n):
            out.append((<char*>text)[:put_ipv4(text, v4[i])].decode("ascii"))
    return out
