# The records part: one fixed-size record per connection, the free list threaded through dead
# records, the events a batch brings, and the seeded hash of a connection's endpoints.
# Everything here is `cdef inline` or a declaration, compiled into the module that cimports it.
from libc.stdint cimport UINT32_MAX
from libc.string cimport memcmp, memcpy

from fasttcp._typedefs cimport int8_t, int64_t, intp_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define FT_PREFETCH(p) __builtin_prefetch((const void *)(p), 1, 3)
    #else
    #define FT_PREFETCH(p) ((void)(p))
    #endif
    /* Prefetches the lines of a `size`-byte object at p (not line-aligned: its first and
       last byte). A macro, so the prefetch lands in the caller: GCC counts a prefetch as no
       side effect, and drops a call to a function that only prefetches. */
    #define FT_PREFETCH_SPAN(p, size) do { \
        FT_PREFETCH(p); \
        FT_PREFETCH((const char*)(p) + (size) - 1); \
    } while (0)
    /* 64x64 -> 128 bit multiply, folded: the mixing step of wyhash/ahash-style hashes. */
    static inline uint64_t ft_fold_mul(uint64_t a, uint64_t b) {
        __uint128_t r = (__uint128_t)a * b;
        return (uint64_t)r ^ (uint64_t)(r >> 64);
    }
    """
    void FT_PREFETCH(const void* p) noexcept nogil
    void FT_PREFETCH_SPAN(const void* p, size_t size) noexcept nogil
    uint64_t ft_fold_mul(uint64_t a, uint64_t b) noexcept nogil


cdef struct addr6_t:
    uint64_t hi                 # first 8 bytes of the address, as stored (network order bytes)
    uint64_t lo                 # last 8 bytes


# One record per connection. Each orig_*/resp_* pair is adjacent, in that order: the kernel
# indexes them by direction (0 orig, 1 resp). The numpy dtypes CONN4_DTYPE / CONN6_DTYPE are derived from these
# structs (field offsets read off a dummy instance), so the two can never disagree.
cdef struct conn4_t:
    uint32_t orig_h             # originator address (host-order integer, as ipaddress gives it)
    uint32_t resp_h             # responder address
    uint16_t orig_p             # originator port
    uint16_t resp_p             # responder port
    uint8_t state               # model state code
    uint8_t status              # STATUS_* bits
    uint8_t orig_flags          # OR of the TCP flags sent by the originator
    uint8_t resp_flags          # OR of the TCP flags sent by the responder
    uint32_t orig_pkts          # segments orig -> resp, saturating at 2**32 - 1
                                # (free record: index of the next free one, UINT32_MAX: none)
    uint32_t resp_pkts          # segments resp -> orig, saturating
    uint64_t orig_bytes         # payload bytes orig -> resp
    uint64_t resp_bytes         # payload bytes resp -> orig
    int64_t first_ts            # timestamp of the first segment, ns
    int64_t last_ts             # latest timestamp seen, ns

cdef struct conn6_t:
    addr6_t orig_h              # originator address, 16 bytes in network order
    addr6_t resp_h              # responder address
    uint16_t orig_p
    uint16_t resp_p
    uint8_t state
    uint8_t status
    uint8_t orig_flags
    uint8_t resp_flags
    uint32_t orig_pkts
    uint32_t resp_pkts
    uint64_t orig_bytes
    uint64_t resp_bytes
    int64_t first_ts
    int64_t last_ts

ctypedef fused conn_t:
    conn4_t
    conn6_t


# The columns of one batch. Exactly one of the (src4, dst4) / (src6, dst6) pairs is set.
# The kernel walks positions 0..n-1; position k is event order[k] (or k without an order).
cdef struct events_t:
    const int64_t* ts
    const uint32_t* src4
    const uint32_t* dst4
    const addr6_t* src6
    const addr6_t* dst6
    const uint16_t* sport
    const uint16_t* dport
    const uint8_t* flags
    const uint32_t* length
    const uint32_t* seq         # sequence columns (all NULL: flags-only tracking)
    const uint32_t* ack
    const uint16_t* window      # raw window field
    const int8_t* wscale        # a SYN's window-scale option, -1 if absent
    const intp_t* order         # the events to apply, by index, in this order; NULL: all
    const uint64_t* hash        # precomputed event hashes (by event index); NULL: compute


cdef struct hash_key_t:
    # the secret, per-tracker key of the endpoint hash
    uint64_t k0                 # mixed into the lower endpoint (hash4) or address (hash6)
    uint64_t k1
    uint64_t k2
    uint64_t k3                 # odd: the final multiplier


# The record part of a table: how many records there are and which are free.
cdef struct records_t:
    intp_t capacity             # records allocated
    intp_t count                # live connections
    intp_t used                 # records ever handed out (high-water mark)
    int64_t free_head           # first free record below `used`, -1 if none
    hash_key_t key


cdef enum:
    S_ALIVE = 1
    S_REPLIED = 2        # the responder has sent a segment the model did not call invalid
    S_FLIPPED = 4        # the first segment came from the responder (ACTION_FLIP)
    S_PICKED_UP = 8      # no handshake was seen (ACTION_PICKUP)
    S_ILLEGAL_SHIFT = 4  # the high 4 bits count illegal segments, saturating at 15
    S_ILLEGAL_ONE = 1 << S_ILLEGAL_SHIFT
    S_ILLEGAL_MAX = 15 << S_ILLEGAL_SHIFT


cdef inline uint64_t hash4(const hash_key_t* k, uint32_t sa, uint16_t sp,
                           uint32_t da, uint16_t dp) noexcept nogil:
    # Symmetric: the two endpoints are hashed in canonical (smaller first) order.
    cdef uint64_t e1 = ((<uint64_t>sa) << 16) | sp
    cdef uint64_t e2 = ((<uint64_t>da) << 16) | dp
    cdef uint64_t lo = e1 if e1 < e2 else e2
    cdef uint64_t hi = e1 ^ e2 ^ lo
    return ft_fold_mul(ft_fold_mul(lo ^ k.k0, hi ^ k.k1) ^ k.k2, k.k3)


cdef inline bint endpoint6_less(addr6_t a, uint16_t ap, addr6_t b, uint16_t bp) noexcept nogil:
    if a.hi != b.hi:
        return a.hi < b.hi
    if a.lo != b.lo:
        return a.lo < b.lo
    return ap < bp


cdef inline uint64_t hash6(const hash_key_t* k, addr6_t sa, uint16_t sp,
                           addr6_t da, uint16_t dp) noexcept nogil:
    cdef addr6_t lo_a, hi_a
    cdef uint64_t ports
    if endpoint6_less(sa, sp, da, dp):
        lo_a, hi_a, ports = sa, da, ((<uint64_t>sp) << 16) | dp
    else:
        lo_a, hi_a, ports = da, sa, ((<uint64_t>dp) << 16) | sp
    cdef uint64_t h1 = ft_fold_mul(lo_a.hi ^ k.k0, lo_a.lo ^ k.k1)
    cdef uint64_t h2 = ft_fold_mul(hi_a.hi ^ k.k2, hi_a.lo ^ k.k3)
    return ft_fold_mul(h1 ^ ports ^ k.k2, h2 ^ k.k1)


cdef inline bint addr6_eq(addr6_t a, addr6_t b) noexcept nogil:
    return a.hi == b.hi and a.lo == b.lo


cdef inline uint64_t event_hash(const hash_key_t* k, const conn_t* kind, const events_t* ev,
                                intp_t i) noexcept nogil:
    if conn_t is conn4_t:
        return hash4(k, ev.src4[i], ev.sport[i], ev.dst4[i], ev.dport[i])
    else:
        return hash6(k, ev.src6[i], ev.sport[i], ev.dst6[i], ev.dport[i])


cdef inline uint64_t record_hash(const hash_key_t* k, const conn_t* c) noexcept nogil:
    if conn_t is conn4_t:
        return hash4(k, c.orig_h, c.orig_p, c.resp_h, c.resp_p)
    else:
        return hash6(k, c.orig_h, c.orig_p, c.resp_h, c.resp_p)


ctypedef fused half_t:
    uint16_t
    uint32_t


cdef inline uint64_t pack_pair(half_t first, half_t second) noexcept nogil:
    # Two values laid out as in a record, read as one zero-padded uint64: a record's address
    # pair (or port pair) compares in one instruction, on any byte order.
    cdef half_t pair[2]
    cdef uint64_t packed = 0
    pair[0] = first
    pair[1] = second
    memcpy(&packed, pair, sizeof(pair))
    return packed


cdef inline int match_direction(const conn_t* c, const events_t* ev, intp_t i) noexcept nogil:
    """0 if event i goes orig -> resp of connection c, 1 if resp -> orig, -1 if not c's."""
    cdef uint16_t sp = ev.sport[i]
    cdef uint16_t dp = ev.dport[i]
    cdef uint64_t addrs = 0, ports = 0
    if conn_t is conn4_t:
        memcpy(&addrs, &c.orig_h, 2 * sizeof(uint32_t))
        memcpy(&ports, &c.orig_p, 2 * sizeof(uint16_t))
        if addrs == pack_pair(ev.src4[i], ev.dst4[i]) and ports == pack_pair(sp, dp):
            return 0
        if addrs == pack_pair(ev.dst4[i], ev.src4[i]) and ports == pack_pair(dp, sp):
            return 1
    else:
        if (addr6_eq(c.orig_h, ev.src6[i]) and c.orig_p == sp
                and addr6_eq(c.resp_h, ev.dst6[i]) and c.resp_p == dp):
            return 0
        if (addr6_eq(c.orig_h, ev.dst6[i]) and c.orig_p == dp
                and addr6_eq(c.resp_h, ev.src6[i]) and c.resp_p == sp):
            return 1
    return -1


cdef inline void set_endpoints(conn_t* c, const events_t* ev, intp_t i, bint flip) noexcept nogil:
    """Makes the sender of event i the originator of c, or its receiver if flip."""
    cdef intp_t sender = 1 if flip else 0  # index of the sender's fields in (orig, resp)
    (&c.orig_p)[sender] = ev.sport[i]
    (&c.orig_p)[1 - sender] = ev.dport[i]
    if conn_t is conn4_t:
        (&c.orig_h)[sender] = ev.src4[i]
        (&c.orig_h)[1 - sender] = ev.dst4[i]
    else:
        (&c.orig_h)[sender] = ev.src6[i]
        (&c.orig_h)[1 - sender] = ev.dst6[i]


cdef inline void count_segment(conn_t* c, int d, const events_t* ev, intp_t i) noexcept nogil:
    # orig_* and resp_* fields are adjacent pairs: index them by direction, without a branch
    cdef int64_t ts = ev.ts[i]
    (&c.orig_pkts)[d] += (&c.orig_pkts)[d] != UINT32_MAX  # saturates rather than wraps
    (&c.orig_bytes)[d] += ev.length[i]
    (&c.orig_flags)[d] |= ev.flags[i]
    if ts > c.last_ts:
        c.last_ts = ts


cdef inline void count_illegal(conn_t* c) noexcept nogil:
    if (c.status & S_ILLEGAL_MAX) != S_ILLEGAL_MAX:
        c.status += S_ILLEGAL_ONE


cdef inline void start_connection(conn_t* c, uint8_t state, bint flip, bint picked_up,
                                  bint illegal_segment, const events_t* ev,
                                  intp_t i) noexcept nogil:
    """A record for the connection event i opens, in `state`; the receiver of the event is
    the originator if flip. Counts the event (and it as illegal if illegal_segment)."""
    set_endpoints(c, ev, i, flip)
    c.state = state
    c.status = S_ALIVE
    if flip:
        c.status |= S_FLIPPED | S_REPLIED
    elif picked_up:
        c.status |= S_PICKED_UP
    c.orig_flags = c.resp_flags = 0
    c.orig_pkts = c.resp_pkts = 0
    c.orig_bytes = c.resp_bytes = 0
    c.first_ts = c.last_ts = ev.ts[i]
    count_segment(c, flip, ev, i)
    if illegal_segment:
        count_illegal(c)


cdef inline void free_record(records_t* r, conn_t* recs, intp_t rid) noexcept nogil:
    """Puts a record that has just ended on the free list."""
    cdef conn_t* c = &recs[rid]
    r.count -= 1
    c.status = 0
    c.orig_pkts = <uint32_t>r.free_head if r.free_head >= 0 else UINT32_MAX
    r.free_head = rid


cdef inline intp_t allocate_record(records_t* r, conn_t* recs) noexcept nogil:
    cdef intp_t rid
    if r.free_head >= 0:
        rid = <intp_t>r.free_head
        r.free_head = -1 if recs[rid].orig_pkts == UINT32_MAX else <int64_t>recs[rid].orig_pkts
        return rid
    rid = r.used
    r.used += 1
    return rid


cdef inline intp_t next_free(const conn_t* recs, intp_t rid) noexcept nogil:
    """The free record after rid on the free list, or -1."""
    return -1 if recs[rid].orig_pkts == UINT32_MAX else <intp_t>recs[rid].orig_pkts


cdef inline bint same_endpoint(const conn_t* a, int da, const conn_t* b, int db) noexcept nogil:
    # endpoint da of a (0 orig, 1 resp) is endpoint db of b
    return ((&a.orig_p)[da] == (&b.orig_p)[db]
            and memcmp(&(&a.orig_h)[da], &(&b.orig_h)[db], sizeof(a.orig_h)) == 0)


cdef inline bint same_connection(const conn_t* a, const conn_t* b) noexcept nogil:
    return ((same_endpoint(a, 0, b, 0) and same_endpoint(a, 1, b, 1))
            or (same_endpoint(a, 0, b, 1) and same_endpoint(a, 1, b, 0)))


cdef inline intp_t records_nbytes(const records_t* r, size_t record_size) noexcept nogil:
    return r.capacity * <intp_t>record_size
