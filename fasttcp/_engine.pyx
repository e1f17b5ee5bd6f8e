"""Connection table and batch update kernel.

One `FlowTable` holds the connections of one address family: fixed-size records in a numpy
structured array (stable indices, a free list threaded through dead records) and an
open-addressing index of uint32 slots over them, keyed by a seeded hash of the unordered pair of
endpoints. `FlowTable.update` applies a batch of segments in one `nogil` loop through the compiled
transition table of a model (see `fasttcp.models`).

The loop hides memory latency by software pipelining: the hash of event i+HASH_AHEAD is computed
and its index slot prefetched; the probe of event i+RECORD_AHEAD is walked by hash tag and the
matching record prefetched; then event i is applied with an exact lookup, starting where the
walk stopped if no slot has changed since. Prefetches are hints only: events are applied in
order, so events of one batch that touch the same connection see each other's effects.

Tables can be shards of one tracker: hash bits 62-63 pick a connection's shard, `partition`
sorts a batch's events by shard, and each shard's table applies its own list (a compile-time
variant of the loop) on its own thread.
"""
import math

import numpy as np

cimport numpy as cnp
from cpython.mem cimport PyMem_RawCalloc, PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from libc.stdint cimport INT64_MAX
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset

from fasttcp._pcap cimport seg4_t, seg6_t
from fasttcp._typedefs cimport int8_t, int64_t, intp_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdint cimport int32_t

cnp.import_array()

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define FT_PREFETCH(p) __builtin_prefetch((const void *)(p), 1, 3)
    #else
    #define FT_PREFETCH(p) ((void)(p))
    #endif
    /* 64x64 -> 128 bit multiply, folded: the mixing step of wyhash/ahash-style hashes. */
    static inline uint64_t ft_fold_mul(uint64_t a, uint64_t b) {
        __uint128_t r = (__uint128_t)a * b;
        return (uint64_t)r ^ (uint64_t)(r >> 64);
    }
    """
    void FT_PREFETCH(const void* p) noexcept nogil
    uint64_t ft_fold_mul(uint64_t a, uint64_t b) noexcept nogil

# Results a transition cell can hold besides a state; never used as an index.
INVALID = 255
IGNORE = 254
cdef enum:
    C_INVALID = 255
    C_IGNORE = 254

# Actions a cell may carry (see fasttcp.models for their meaning).
ACTION_NONE = 0
ACTION_REOPEN = 1
ACTION_CLOSE_UNREPLIED = 2
ACTION_FLIP = 3
ACTION_PICKUP = 4
cdef enum:
    A_NONE = 0
    A_REOPEN = 1
    A_CLOSE_UNREPLIED = 2
    A_FLIP = 3           # on creation: the receiver of the first segment is the originator
    A_PICKUP = 4         # on creation: the connection was picked up mid-stream
    A_LAST = 4

VERDICT_NEW = 0
VERDICT_VALID = 1
VERDICT_INVALID = 2
VERDICT_IGNORED = 3
cdef enum:
    V_NEW = 0
    V_VALID = 1
    V_INVALID = 2
    V_IGNORED = 3

STATUS_ALIVE = 1
STATUS_REPLIED = 2
STATUS_FLIPPED = 4
STATUS_PICKED_UP = 8
STATUS_ILLEGAL_SHIFT = 4
cdef enum:
    S_ALIVE = 1
    S_REPLIED = 2        # the responder has sent a segment the model did not call invalid
    S_FLIPPED = 4        # the first segment came from the responder (ACTION_FLIP)
    S_PICKED_UP = 8      # no handshake was seen (ACTION_PICKUP)
    S_ILLEGAL_ONE = 16   # the high 4 bits count illegal segments, saturating at 15
    S_ILLEGAL_MAX = 0xF0

cdef enum:
    SLOT_EMPTY = 0
    SLOT_TOMB = 1
    SLOT_ID_BIAS = 2     # a slot holds record index + 2 in its low bits

    HASH_AHEAD = 32      # events between hashing (and prefetching the slot) and applying
    RECORD_AHEAD = 16     # events between reading the slot (prefetching the record) and applying
    RING = 64             # power of two > HASH_AHEAD

    SHARD_SHIFT = 62     # hash bits 62-63 choose the shard
    MAX_SHARDS = 4

    RC_DONE = 0
    RC_NEED_SPACE = 1    # stopped before an event that needs a record or slot: grow, then resume
    RC_ENDED_FULL = 2    # stopped because the ended-connection buffer is full: collect, resume
    RC_NO_MEMORY = 3     # the wheel could not grow a slot (the event was applied)

    WHEEL_SLOTS = 4096   # one revolution: 68 minutes of one-second ticks
    WHEEL_MASK = WHEEL_SLOTS - 1
    TICK_NS = 1_000_000_000
    WHEEL_ENTRIES_PER_RECORD = 4   # see wheel_bound
    WHEEL_MIN_ENTRIES = 4 * WHEEL_SLOTS

# Why a connection left the table, as flow rows record it (fasttcp.flows.ENDED, after "live").
END_CLOSED = 1
END_EXPIRED = 2
END_EVICTED = 3
cdef enum:
    E_CLOSED = 1
    E_EXPIRED = 2
    E_EVICTED = 3

# Zeek's TCP endpoint states (zeek/zeek TCP_Endpoint.h), as conn_state reads them.
ZEEK_STATES = ("INACTIVE", "SYN_SENT", "SYN_ACK_SENT", "PARTIAL", "ESTABLISHED", "CLOSED",
               "RESET")
cdef enum:
    Z_INACTIVE = 0
    Z_SYN_SENT = 1
    Z_SYN_ACK_SENT = 2
    Z_PARTIAL = 3
    Z_ESTABLISHED = 4
    Z_CLOSED = 5
    Z_RESET = 6

# Zeek history letters by code (a history entry is code << 1 | direction, the originator's in
# upper case), and the "seen" bit each one sets: S and H share one, as in Zeek.
HISTORY_LETTERS = "SHADFRQITW"
cdef enum:
    L_SYN = 0
    L_SYNACK = 1
    L_ACK = 2
    L_DATA = 3
    L_FIN = 4
    L_RST = 5
    L_MULTI = 6          # SYN with FIN or RST: Zeek's Q
    L_FIN_RST = 7        # FIN with RST: Zeek's I
    L_RETRANSMISSION = 8  # data sent again: Zeek's T (sequence-aware only)
    L_ZERO_WINDOW = 9     # a zero window: Zeek's W (sequence-aware only)
    SEEN_BITS = 9         # kinds of letter per direction (S and H share one)
cdef uint16_t[10] LETTER_SEEN_BIT = [0x01, 0x01, 0x20, 0x10, 0x02, 0x04, 0x40, 0x08, 0x80, 0x100]

# Engine limit: slots keep at least 2 bits of hash tag.
MAX_CAPACITY = (1 << 30) - SLOT_ID_BIAS - 1
# Live connections per index slot at most. At 0.5 a successful probe reads 1.5 slots on
# average, and a full IPv4 table costs 56 + 8 = 64 bytes per connection.
MAX_LOAD = 0.5
# Live plus tombstoned slots at most, before the index is rebuilt without tombstones.
MAX_FILL = 0.7


cdef inline uint64_t fastrange(uint64_t h, uint64_t n) noexcept nogil:
    # Maps the low 32 hash bits onto [0, n) without a division (Lemire's multiply-shift).
    return ((h & 0xffffffffu) * n) >> 32


cdef inline uint64_t hash4(const table_t* t, uint32_t sa, uint16_t sp,
                           uint32_t da, uint16_t dp) noexcept nogil:
    # Symmetric: the two endpoints are hashed in canonical (smaller first) order.
    cdef uint64_t e1 = ((<uint64_t>sa) << 16) | sp
    cdef uint64_t e2 = ((<uint64_t>da) << 16) | dp
    cdef uint64_t lo = e1 if e1 < e2 else e2
    cdef uint64_t hi = e1 ^ e2 ^ lo
    return ft_fold_mul(ft_fold_mul(lo ^ t.k0, hi ^ t.k1) ^ t.k2, t.k3)


cdef inline bint endpoint6_less(addr6_t a, uint16_t ap, addr6_t b, uint16_t bp) noexcept nogil:
    if a.hi != b.hi:
        return a.hi < b.hi
    if a.lo != b.lo:
        return a.lo < b.lo
    return ap < bp


cdef inline uint64_t hash6(const table_t* t, addr6_t sa, uint16_t sp,
                           addr6_t da, uint16_t dp) noexcept nogil:
    cdef addr6_t lo_a, hi_a
    cdef uint64_t ports
    if endpoint6_less(sa, sp, da, dp):
        lo_a, hi_a, ports = sa, da, ((<uint64_t>sp) << 16) | dp
    else:
        lo_a, hi_a, ports = da, sa, ((<uint64_t>dp) << 16) | sp
    cdef uint64_t h1 = ft_fold_mul(lo_a.hi ^ t.k0, lo_a.lo ^ t.k1)
    cdef uint64_t h2 = ft_fold_mul(hi_a.hi ^ t.k2, hi_a.lo ^ t.k3)
    return ft_fold_mul(h1 ^ ports ^ t.k2, h2 ^ t.k1)


cdef inline bint addr6_eq(addr6_t a, addr6_t b) noexcept nogil:
    return a.hi == b.hi and a.lo == b.lo


cdef inline uint64_t event_hash(const table_t* t, const conn_t* kind, const events_t* ev,
                                intp_t i) noexcept nogil:
    if conn_t is conn4_t:
        return hash4(t, ev.src4[i], ev.sport[i], ev.dst4[i], ev.dport[i])
    else:
        return hash6(t, ev.src6[i], ev.sport[i], ev.dst6[i], ev.dport[i])


cdef inline uint64_t record_hash(const table_t* t, const conn_t* c) noexcept nogil:
    if conn_t is conn4_t:
        return hash4(t, c.orig_h, c.orig_p, c.resp_h, c.resp_p)
    else:
        return hash6(t, c.orig_h, c.orig_p, c.resp_h, c.resp_p)


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


cdef inline uint32_t hash_tag(uint64_t h, uint32_t tag_mask) noexcept nogil:
    # the high half of the hash; the low half picks the home slot (fastrange)
    return <uint32_t>(h >> 32) & tag_mask


cdef inline uint32_t make_slot(uint64_t h, uint32_t tag_mask, uint32_t id_bits,
                               intp_t rid) noexcept nogil:
    """The index slot of record `rid` with hash h: its tag above, record index + 2 below."""
    return (hash_tag(h, tag_mask) << id_bits) | <uint32_t>(rid + SLOT_ID_BIAS)


cdef struct probe_t:
    # The index fields a probe reads, copied out of table_t into a local so the compiler
    # knows stores into records and the histogram cannot change them.
    const uint32_t* index
    uint64_t nslots
    uint32_t id_bits
    uint32_t id_mask
    uint32_t tag_mask


cdef inline probe_t probe_fields(const table_t* t) noexcept nogil:
    cdef probe_t ix
    ix.index, ix.nslots, ix.id_bits, ix.id_mask, ix.tag_mask = \
        t.index, t.nslots, t.id_bits, t.id_mask, t.tag_mask
    return ix


cdef inline intp_t find(probe_t ix, const conn_t* recs, const events_t* ev, intp_t i,
                        uint64_t h, uint64_t* pos, int64_t* first_tomb, int* direction) noexcept nogil:
    """Record index of event i's connection (and its slot in *pos), or -1.

    *pos enters holding the slot to start at (the home slot of hash h, or a later one with no
    tag match before it) and *first_tomb the first tombstone before that slot (-1 if none).
    When not found, *pos is left at the empty slot that ended the probe and *first_tomb at the
    first tombstone on the way: the insertion point is the tombstone if there is one.
    """
    cdef uint64_t p = pos[0]
    cdef uint32_t tag = hash_tag(h, ix.tag_mask)
    cdef uint32_t slot
    cdef intp_t rid
    cdef int d
    while True:
        slot = ix.index[p]
        if slot == SLOT_EMPTY:
            break
        if slot == SLOT_TOMB:
            if first_tomb[0] < 0:
                first_tomb[0] = <int64_t>p
        elif (slot >> ix.id_bits) == tag:
            rid = <intp_t>(slot & ix.id_mask) - SLOT_ID_BIAS
            d = match_direction(&recs[rid], ev, i)
            if d >= 0:
                pos[0] = p
                direction[0] = d
                return rid
        p += 1
        if p == ix.nslots:
            p = 0
    pos[0] = p
    return -1


cdef inline uint64_t walk_tags(probe_t ix, const conn_t* recs, uint64_t h,
                               uint64_t home, int64_t* tomb) noexcept nogil:
    """Where a probe for hash h should start: its first tag match, or the empty slot ending it.

    Walks by tags only (the slots share the prefetched cache line as a rule) and prefetches
    the record of the match, which is almost always the connection itself.
    """
    cdef uint32_t tag = hash_tag(h, ix.tag_mask)
    cdef uint64_t p = home
    cdef uint32_t slot = ix.index[p]
    cdef const conn_t* c
    tomb[0] = -1
    while slot != SLOT_EMPTY:
        if slot == SLOT_TOMB:
            if tomb[0] < 0:
                tomb[0] = <int64_t>p
        elif (slot >> ix.id_bits) == tag:
            c = &recs[<intp_t>(slot & ix.id_mask) - SLOT_ID_BIAS]
            FT_PREFETCH(c)
            # records are not line-aligned: fetch the line holding the last byte too
            FT_PREFETCH((<const char*>c) + sizeof(conn_t) - 1)
            return p
        p += 1
        if p == ix.nslots:
            p = 0
        slot = ix.index[p]
    return p


cdef inline void count_segment(conn_t* c, int d, const events_t* ev, intp_t i) noexcept nogil:
    # orig_* and resp_* fields are adjacent pairs: index them by direction, without a branch
    cdef int64_t ts = ev.ts[i]
    (&c.orig_pkts)[d] += (&c.orig_pkts)[d] != 0xffffffffu  # saturates rather than wraps
    (&c.orig_bytes)[d] += ev.length[i]
    (&c.orig_flags)[d] |= ev.flags[i]
    if ts > c.last_ts:
        c.last_ts = ts


cdef inline void count_illegal(conn_t* c) noexcept nogil:
    if (c.status & S_ILLEGAL_MAX) != S_ILLEGAL_MAX:
        c.status += S_ILLEGAL_ONE


cdef extern from *:
    """
    static inline int ft_popcount32(unsigned int x) {
        int n = 0;
        for (; x; x &= x - 1) n++;
        return n;
    }
    """
    int ft_popcount32(unsigned int x) noexcept nogil


cdef inline uint8_t history_entry(const flow_t* f, int k) noexcept nogil:
    """The k-th letter of the history, as letter << 1 | direction."""
    if k < 12:
        return (f.history >> (5 * k)) & 0x1F
    return (f.history_more >> (5 * (k - 12))) & 0x1F


cdef inline void add_letter(flow_t* f, int d, uint8_t letter) noexcept nogil:
    """Appends a history letter the first time its kind is seen in direction d (Zeek repeats
    T and W at the 10th, 100th... time; fasttcp records each once)."""
    cdef uint32_t bit = (<uint32_t>LETTER_SEEN_BIT[letter]) << (SEEN_BITS * d)
    cdef int n
    cdef uint64_t entry = (letter << 1) | d
    if f.seen & bit:
        return
    n = ft_popcount32(f.seen)   # letters so far: each seen bit added one (at most 18)
    f.seen |= bit
    if n < 12:
        f.history |= entry << (5 * n)
    else:
        f.history_more |= entry << (5 * (n - 12))


cdef inline void set_zeek(uint8_t* endpoint, uint8_t state) noexcept nogil:
    # the low nibble is the state, the high one the state before it
    if (endpoint[0] & 0x0F) != state:
        endpoint[0] = <uint8_t>(((endpoint[0] & 0x0F) << 4) | state)


cdef inline void zeek_step(flow_t* f, int d, uint8_t flags, uint32_t length,
                           bint retransmission, bint zero_window) noexcept nogil:
    """Zeek's history letters and endpoint states for one segment in direction d (0 from the
    originator): Zeek's TCPSessionAdapter::Process (update_history, UpdateStateMachine), with
    W and T when sequence tracking saw a zero window or a retransmission."""
    cdef uint8_t* ep = &f.orig_zeek if d == 0 else &f.resp_zeek
    cdef uint8_t* peer = &f.resp_zeek if d == 0 else &f.orig_zeek
    cdef int syn = (flags & 0x02) != 0, fin = (flags & 0x01) != 0
    cdef int rst = (flags & 0x04) != 0, ack = (flags & 0x10) != 0
    cdef int controls = syn + fin + rst
    cdef uint8_t state = ep[0] & 0x0F
    if controls > 1:
        add_letter(f, d, L_FIN_RST if fin and rst else L_MULTI)
    elif syn:
        add_letter(f, d, L_SYNACK if ack else L_SYN)
    elif fin:
        add_letter(f, d, L_FIN)
    elif rst:
        add_letter(f, d, L_RST)
    elif length:
        add_letter(f, d, L_DATA)
    elif ack:
        add_letter(f, d, L_ACK)
    if zero_window:
        add_letter(f, d, L_ZERO_WINDOW)
    if retransmission:
        add_letter(f, d, L_RETRANSMISSION)

    if state == Z_INACTIVE:
        if syn:
            if d == 0:
                set_zeek(ep, Z_SYN_ACK_SENT if ack else Z_SYN_SENT)
            else:
                if (peer[0] & 0x0F) == Z_SYN_SENT:
                    set_zeek(peer, Z_ESTABLISHED)
                set_zeek(ep, Z_ESTABLISHED)
        if fin:
            set_zeek(ep, Z_CLOSED)
        if rst:
            set_zeek(ep, Z_RESET)
        if (ep[0] & 0x0F) == Z_INACTIVE:
            # a bare ACK answering a SYN leaves the responder inactive; otherwise the endpoint
            # joins an established peer, or is taken up mid-stream
            if d == 1 and length == 0 and (f.orig_zeek & 0x0F) == Z_SYN_SENT:
                pass
            elif ack and (peer[0] & 0x0F) == Z_ESTABLISHED:
                set_zeek(ep, Z_ESTABLISHED)
            else:
                set_zeek(ep, Z_PARTIAL)
    elif state == Z_SYN_SENT or state == Z_SYN_ACK_SENT:
        if fin:
            set_zeek(ep, Z_CLOSED)
        if rst:
            set_zeek(ep, Z_RESET)
    elif state == Z_ESTABLISHED or state == Z_PARTIAL:
        if syn and state == Z_PARTIAL and (peer[0] & 0x0F) == Z_INACTIVE and not ack:
            set_zeek(ep, Z_SYN_SENT)
        if fin and not rst:
            set_zeek(ep, Z_CLOSED)
            if (peer[0] & 0x0F) == Z_RESET and (peer[0] >> 4) == Z_CLOSED:
                set_zeek(peer, Z_CLOSED)
        if rst:
            set_zeek(ep, Z_RESET)
    elif state == Z_CLOSED:
        if rst and (peer[0] & 0x0F) != Z_CLOSED:
            set_zeek(ep, Z_RESET)


# Zeek's conn_state values (zeek/zeek base/protocols/conn/main.zeek), by code.
CONN_STATE_NAMES = ("S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH",
                    "SH", "SHR", "OTH")
cdef enum:
    CS_S0 = 0
    CS_S1 = 1
    CS_SF = 2
    CS_REJ = 3
    CS_S2 = 4
    CS_S3 = 5
    CS_RSTO = 6
    CS_RSTR = 7
    CS_RSTOS0 = 8
    CS_RSTRH = 9
    CS_SH = 10
    CS_SHR = 11
    CS_OTH = 12

cdef char* LETTER_CHARS = b"SsHhAaDdFfRrQqIiTtWw"   # by entry (letter << 1 | direction)


cdef inline void history_text(const flow_t* f, bint flipped, uint8_t* out,
                              int width) noexcept nogil:
    """Writes the Zeek history string (ASCII, NUL-padded to width)."""
    cdef int n = ft_popcount32(f.seen), k, at = 0
    if flipped:
        out[0] = 94      # '^'
        at = 1
    for k in range(n):
        out[at + k] = LETTER_CHARS[history_entry(f, k)]
    for k in range(at + n, width):
        out[k] = 0


cdef inline bint syn_then_reset(const flow_t* f) noexcept nogil:
    """Zeek's RSTOS0 test, the history matching ^?S[^HAFGIQ]*R.*: the originator's SYN comes
    first and its RST before any of its SYN-ACK, ACK, FIN, multi-flag or gap letters."""
    cdef int n = ft_popcount32(f.seen), k
    cdef uint8_t entry
    if n == 0 or history_entry(f, 0) != ((L_SYN << 1) | 0):
        return False
    for k in range(1, n):
        entry = history_entry(f, k)
        if entry & 1:
            continue                    # the responder's letters are lower case: allowed
        if (entry >> 1) == L_RST:
            return True
        if (entry >> 1) not in (L_DATA, L_RETRANSMISSION, L_ZERO_WINDOW):
            return False                # H, A, F, Q, I end the match; D, T, W may come between
    return False


cdef inline uint8_t conn_state(const flow_t* f, uint64_t orig_bytes,
                               uint64_t resp_bytes) noexcept nogil:
    """Zeek's conn_state function over the endpoints' Zeek states, first match wins. REJ for
    two reset endpoints asks for no payload either way (Zeek: sequence-number sizes of 0)."""
    cdef uint8_t o = f.orig_zeek & 0x0F, r = f.resp_zeek & 0x0F
    cdef bint o_inactive = o == Z_INACTIVE or o == Z_PARTIAL
    cdef bint r_inactive = r == Z_INACTIVE or r == Z_PARTIAL
    if r == Z_RESET:
        if o == Z_SYN_SENT or o == Z_SYN_ACK_SENT or (o == Z_RESET and orig_bytes == 0
                                                       and resp_bytes == 0):
            return CS_REJ
        return CS_RSTRH if o_inactive else CS_RSTR
    if o == Z_RESET:
        if r_inactive:
            return CS_RSTOS0 if syn_then_reset(f) else CS_OTH
        return CS_RSTO
    if o == Z_CLOSED and r == Z_CLOSED:
        return CS_SF
    if o == Z_CLOSED:
        return CS_SH if r_inactive else CS_S2
    if r == Z_CLOSED:
        return CS_SHR if o_inactive else CS_S3
    if o == Z_SYN_SENT and r == Z_INACTIVE:
        return CS_S0
    if o == Z_ESTABLISHED and r == Z_ESTABLISHED:
        return CS_S1
    return CS_OTH


ctypedef fused segment_t:
    seg4_t
    seg6_t


cdef void split_rows(const segment_t* rows, intp_t n, int64_t* ts, uint8_t* src,
                     uint16_t* sport, uint8_t* dst, uint16_t* dport, uint8_t* flags,
                     uint32_t* length, uint32_t* seq, uint32_t* ack, uint16_t* window,
                     int8_t* wscale) noexcept nogil:
    """Each row's fields into the columns; addresses as bytes, 4 or 16 a row."""
    cdef intp_t i
    cdef size_t width = sizeof(rows[0].src)
    for i in range(n):
        ts[i] = rows[i].ts
        memcpy(src + i * width, &rows[i].src, width)
        memcpy(dst + i * width, &rows[i].dst, width)
        sport[i], dport[i], flags[i] = rows[i].sport, rows[i].dport, rows[i].flags
        length[i], seq[i], ack[i] = rows[i].length, rows[i].seq, rows[i].ack
        window[i], wscale[i] = rows[i].window, rows[i].wscale


def split_segments(rows, int family):
    """The columns of contiguous SEGMENT_DTYPE (family 4) or SEGMENT6_DTYPE (6) rows, in one
    pass over them where numpy would take one per field: (ts, src, sport, dst, dport, flags,
    length, seq, ack, window, wscale), each contiguous; IPv6 addresses as (n, 16) uint8."""
    cdef const uint8_t[::1] raw = rows.view(np.uint8).ravel()
    cdef intp_t n = rows.shape[0]
    if family == 4:
        src, dst = np.empty(n, np.uint32), np.empty(n, np.uint32)
    else:
        src, dst = np.empty((n, 16), np.uint8), np.empty((n, 16), np.uint8)
    out = (np.empty(n, np.int64), src, np.empty(n, np.uint16), dst,
           np.empty(n, np.uint16), np.empty(n, np.uint8), np.empty(n, np.uint32),
           np.empty(n, np.uint32), np.empty(n, np.uint32), np.empty(n, np.uint16),
           np.empty(n, np.int8))
    if n == 0:
        return out
    if raw.shape[0] != n * <intp_t>(sizeof(seg4_t) if family == 4 else sizeof(seg6_t)):
        raise ValueError("rows must be contiguous SEGMENT_DTYPE or SEGMENT6_DTYPE rows")
    cdef int64_t[::1] ts = out[0]
    cdef uint8_t[::1] src_bytes = src.view(np.uint8).ravel()
    cdef uint8_t[::1] dst_bytes = dst.view(np.uint8).ravel()
    cdef uint16_t[::1] sport = out[2], dport = out[4], window = out[9]
    cdef uint8_t[::1] flags = out[5]
    cdef uint32_t[::1] length = out[6], seq = out[7], ack = out[8]
    cdef int8_t[::1] wscale = out[10]
    with nogil:
        if family == 4:
            split_rows(<const seg4_t*>&raw[0], n, &ts[0], &src_bytes[0], &sport[0],
                       &dst_bytes[0], &dport[0], &flags[0], &length[0], &seq[0], &ack[0],
                       &window[0], &wscale[0])
        else:
            split_rows(<const seg6_t*>&raw[0], n, &ts[0], &src_bytes[0], &sport[0],
                       &dst_bytes[0], &dport[0], &flags[0], &length[0], &seq[0], &ack[0],
                       &window[0], &wscale[0])
    return out


def zeek_columns(const uint8_t[::1] flow_states, const uint8_t[::1] status,
                 const uint64_t[::1] orig_bytes, const uint64_t[::1] resp_bytes,
                 uint8_t[:, ::1] out_history, uint8_t[::1] out_conn_state):
    """Zeek's history (ASCII rows of out_history) and conn_state code of each connection,
    from its FLOW_STATE_DTYPE row (as bytes) and its record's status and payload bytes."""
    cdef intp_t n = status.shape[0], i
    cdef const flow_t* f
    if (flow_states.shape[0] != n * <intp_t>sizeof(flow_t) or orig_bytes.shape[0] != n
            or resp_bytes.shape[0] != n or out_history.shape[0] != n
            or out_conn_state.shape[0] != n):
        raise ValueError("zeek_columns: arrays differ in length")
    if out_history.shape[1] < 19:
        raise ValueError("zeek_columns: history rows need 19 bytes")
    if n == 0:
        return
    f = <const flow_t*>&flow_states[0]
    with nogil:
        for i in range(n):
            history_text(&f[i], (status[i] & S_FLIPPED) != 0, &out_history[i, 0],
                         <int>out_history.shape[1])
            out_conn_state[i] = conn_state(&f[i], orig_bytes[i], resp_bytes[i])


# Sequence awareness: netfilter's tcp_in_window, after van Rooij's "Real Stateful TCP Packet
# Filtering", in its four bounds; the window scale comes from the SYNs (RFC 7323).
cdef enum:
    SQ_SEEN = 1          # this side has sent a segment
    SQ_FIN = 2           # and a FIN (fin_end holds where it ends)
    SQ_SCALED = 4        # its SYN offered window scaling
    SQ_LIMIT = 8         # maxend is known (from the peer's ack and window, or its own end)
    SQ_PICKED_UP = 16    # first seen without its SYN: its window scale is unknown
    MAX_ACK_WINDOW = 66000   # netfilter's floor for how far behind an ack may be
    SEQ_IN_WINDOW = 0
    SEQ_OUT_OF_WINDOW = 1
    SEQ_RETRANSMISSION = 2


cdef inline bint seq_before(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) < 0


cdef inline bint seq_after(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) > 0


cdef inline void seq_start(table_t* t, intp_t rid, int d, const events_t* ev,
                           intp_t i) noexcept nogil:
    """A (re)started connection's sequence state, from its first segment if the batch has
    sequence numbers, else unseen."""
    if t.seq == NULL:
        return
    memset(&t.seq[rid], 0, sizeof(seq_t))
    if ev.seq != NULL:
        seq_segment(&t.seq[rid], d, ev, i)


cdef inline int seq_segment(seq_t* sq, int d, const events_t* ev, intp_t i) noexcept nogil:
    """Checks a segment against its receiver's window and records it. Returns SEQ_*: a side
    is taken as it comes until both have been seen (a pickup mid-stream is liberal)."""
    cdef seq_dir_t* snd = (&sq.orig) + d
    cdef seq_dir_t* rcv = (&sq.orig) + (1 - d)
    cdef uint8_t flags = ev.flags[i]
    cdef bint syn = (flags & 0x02) != 0, fin = (flags & 0x01) != 0
    cdef bint rst = (flags & 0x04) != 0, ack = (flags & 0x10) != 0
    cdef uint32_t seq = ev.seq[i], length = ev.length[i]
    cdef uint32_t end = seq + length + syn + fin, ackno = ev.ack[i], limit, window
    cdef int result = SEQ_IN_WINDOW
    if not (snd.flags & SQ_SEEN) and not syn:
        snd.flags |= SQ_PICKED_UP
    # The window of a SYN is never scaled, nor any window unless both SYNs offered scaling.
    # When either side's SYN was missed (picked up, or a flip) the scale is unknown and may
    # be anything: windows are taken at the largest (liberal about windows, exact about acks).
    window = ev.window[i]
    if syn:
        pass
    elif (snd.flags | rcv.flags) & SQ_PICKED_UP:
        window = window << 14
    elif snd.flags & SQ_SCALED and rcv.flags & SQ_SCALED:
        window = window << snd.scale
    if not (snd.flags & SQ_SEEN):
        snd.flags |= SQ_SEEN
        snd.end = end
        if not (snd.flags & SQ_LIMIT) or seq_after(end, snd.maxend):
            snd.maxend = end
            snd.flags |= SQ_LIMIT
        snd.maxwin = window if window else 1
    else:
        if rcv.flags & SQ_SEEN:
            if (seq_after(seq, snd.maxend)                            # beyond the window
                    or seq_before(end, snd.end - rcv.maxwin)          # too far behind
                    or (ack and (seq_after(ackno, rcv.end)            # acks unsent data
                                 or seq_before(ackno, rcv.end - (snd.maxwin if snd.maxwin >
                                                                 MAX_ACK_WINDOW else
                                                                 MAX_ACK_WINDOW))))
                    or (snd.flags & SQ_FIN and length and seq_after(end, snd.fin_end))):
                return SEQ_OUT_OF_WINDOW                              # (the last: data after FIN)
        if seq_after(end, snd.end):
            snd.end = end
        elif length and not rst:
            result = SEQ_RETRANSMISSION
        if window > snd.maxwin:
            snd.maxwin = window
    if ack and not rst:
        limit = ackno + (window if window else 1)
        if not (rcv.flags & SQ_LIMIT) or seq_after(limit, rcv.maxend):
            rcv.maxend = limit
            rcv.flags |= SQ_LIMIT
    if fin and not (snd.flags & SQ_FIN):
        snd.flags |= SQ_FIN
        snd.fin_end = end
    if syn and ev.wscale[i] >= 0:      # recorded only from a SYN found in the window
        snd.flags |= SQ_SCALED
        snd.scale = <uint8_t>(ev.wscale[i] if ev.wscale[i] <= 14 else 14)
    return result


cdef inline uint8_t seq_class(const table_t* t, const seq_t* sq, int d, uint8_t cls,
                              const events_t* ev, intp_t i) noexcept nogil:
    """The flag class refined by the ack number: an ACK or FIN-ACK that does not yet cover the
    peer's FIN is its "early" class, so a model can tell FIN_WAIT_2 and CLOSING apart."""
    cdef const seq_dir_t* rcv = (&sq.orig) + (1 - d)
    if (ev.flags[i] & 0x10) and rcv.flags & SQ_FIN and seq_before(ev.ack[i], rcv.fin_end):
        return t.early[cls]
    return cls


cdef inline void end_connection(table_t* t, const conn_t* c, intp_t rid,
                                uint8_t reason) noexcept nogil:
    """Copies a connection that is ending into the ended buffer (kept flows only; the kernel
    stops before an event when the buffer has no room)."""
    if t.flows == NULL:
        return
    (<conn_t*>t.ended)[t.n_ended] = c[0]
    t.ended_flows[t.n_ended] = t.flows[rid]
    t.ended_reason[t.n_ended] = reason
    t.n_ended += 1


cdef inline int push(bucket_t* b, uint32_t rid) noexcept nogil:
    # PyMem_Raw*: the C allocator, but seen by tracemalloc, so tests can check nbytes_expiry
    cdef uint32_t cap
    cdef uint32_t* grown
    if b.len == b.cap:
        cap = 16 if b.cap == 0 else 2 * b.cap
        grown = <uint32_t*>PyMem_RawRealloc(b.rids, cap * sizeof(uint32_t))
        if grown == NULL:
            return -1
        b.rids, b.cap = grown, cap
    b.rids[b.len] = rid
    b.len += 1
    return 0


cdef inline int wheel_push(wheel_t* w, int64_t tick, uint32_t rid) noexcept nogil:
    """Lists rid in the slot of `tick`, counting what the slot allocates."""
    cdef bucket_t* b = &w.slots[tick & WHEEL_MASK]
    cdef uint32_t cap = b.cap
    if push(b, rid) < 0:
        return -1
    w.allocated += b.cap - cap
    return 0


cdef inline intp_t wheel_bound(const table_t* t) noexcept nogil:
    """Entries the wheel may allocate before compact_wheel: WHEEL_ENTRIES_PER_RECORD per
    record of capacity, plus a floor. Past it, entries left stale by rescheduling, closing
    and eviction are dropped; since a compaction leaves at most one entry per live record,
    it comes after capacity pushes at least, which keeps its cost amortised O(1) per push."""
    return WHEEL_ENTRIES_PER_RECORD * t.capacity + WHEEL_MIN_ENTRIES


cdef int compact_wheel(table_t* t, const conn_t* recs) noexcept nogil:
    """Keeps one entry per live record, in the slot of its due tick, drops every other
    (records gone, listed again elsewhere, or listed twice) and frees the slack. Never
    called while expire_wheel walks a slot. Returns -1 when out of memory (nothing lost)."""
    cdef wheel_t* w = &t.wheel
    cdef uint8_t* listed = <uint8_t*>PyMem_RawCalloc((t.used >> 3) + 1, 1)
    cdef intp_t s, r, kept
    cdef uint32_t rid
    cdef bucket_t* b
    cdef uint32_t* shrunk
    if listed == NULL:
        return -1
    w.allocated = 0
    for s in range(WHEEL_SLOTS):
        b = &w.slots[s]
        kept = 0
        for r in range(b.len):
            rid = b.rids[r]
            if (rid < t.used and (recs[rid].status & S_ALIVE)
                    and (t.due[rid] & WHEEL_MASK) == <uint32_t>s
                    and not (listed[rid >> 3] & (1 << (rid & 7)))):
                listed[rid >> 3] |= 1 << (rid & 7)
                b.rids[kept] = rid
                kept += 1
        b.len = <uint32_t>kept
        if kept == 0:
            PyMem_RawFree(b.rids)
            b.rids, b.cap = NULL, 0
        elif kept < b.cap:
            shrunk = <uint32_t*>PyMem_RawRealloc(b.rids, kept * sizeof(uint32_t))
            if shrunk != NULL:
                b.rids, b.cap = shrunk, <uint32_t>kept
        w.allocated += b.cap
    PyMem_RawFree(listed)
    return 0


cdef inline int bound_wheel(table_t* t, const conn_t* recs) noexcept nogil:
    if t.wheel.allocated > t.wheel.limit:
        return compact_wheel(t, recs)
    return 0


cdef inline int64_t deadline_of(int64_t last_ts, int64_t timeout) noexcept nogil:
    """last_ts + timeout, saturating: a "never" timeout (INT64_MAX) stays never."""
    if timeout > INT64_MAX - last_ts:
        return INT64_MAX
    return last_ts + timeout


cdef inline bint is_due(int64_t last_ts, int64_t timeout, int64_t now) noexcept nogil:
    """Idle for the whole timeout at `now` (the deadline itself counts). A timeout of
    INT64_MAX is never, even for a clock at INT64_MAX; any other deadline comes, up to
    INT64_MAX itself. (now - timeout cannot overflow: both are >= 0.)"""
    return timeout != INT64_MAX and last_ts <= now - timeout


cdef inline int64_t clamp_tick(const wheel_t* w, int64_t tick) noexcept nogil:
    # within one revolution from the wheel's position: a later deadline is checked once a
    # revolution until it comes
    if tick < w.tick:
        return w.tick
    if tick > w.tick + WHEEL_MASK:
        return w.tick + WHEEL_MASK
    return tick


cdef inline int32_t ticks_after(uint32_t due, int64_t tick) noexcept nogil:
    """How many ticks `due` (a tick modulo 2**32) lies after `tick`: exact, whatever the
    clock's epoch, because a due tick never lies more than a revolution from the wheel's."""
    return <int32_t>(due - <uint32_t>tick)


cdef inline int schedule(table_t* t, intp_t rid, int64_t now, int64_t deadline) noexcept nogil:
    """Lists record rid in the wheel at its deadline (ns); `now` starts an unstarted wheel,
    never past the tracker's clock (a suspect segment's time is not one to start from)."""
    cdef int64_t tick
    if not t.wheel.started:
        t.wheel.tick = min(now, t.clock_limit) // TICK_NS
        t.wheel.started = True
    tick = clamp_tick(&t.wheel, deadline // TICK_NS)
    if wheel_push(&t.wheel, tick, <uint32_t>rid) < 0:
        return -1
    t.due[rid] = <uint32_t>tick      # only once listed there: compact_wheel trusts it
    return 0


cdef inline int schedule_if_sooner(table_t* t, intp_t rid, int64_t now,
                                   int64_t deadline) noexcept nogil:
    """After a state change: a shorter timeout moves the check earlier; a longer one waits for
    the scheduled check to find it."""
    if ticks_after(t.due[rid], clamp_tick(&t.wheel, deadline // TICK_NS)) > 0:
        return schedule(t, rid, now, deadline)
    return 0


cdef inline uint64_t slot_of(const table_t* t, const conn_t* recs, intp_t rid) noexcept nogil:
    """The index slot holding record rid (a live record)."""
    cdef uint64_t p = fastrange(record_hash(t, &recs[rid]), t.nslots)
    cdef uint32_t want = <uint32_t>(rid + SLOT_ID_BIAS)
    while (t.index[p] & t.id_mask) != want or t.index[p] < SLOT_ID_BIAS:
        p += 1
        if p == t.nslots:
            p = 0
    return p


cdef inline bint evictable(const conn_t* c, uint64_t entry) noexcept nogil:
    # still the connection listed (same first timestamp), and never answered
    return ((c.status & S_ALIVE) and not (c.status & S_REPLIED)
            and (<uint32_t>(entry >> 32)) == <uint32_t>(<uint64_t>c.first_ts))


cdef inline intp_t evict_one(table_t* t, conn_t* recs) noexcept nogil:
    """Removes the oldest listed connection that never got an answer (conntrack's early drop:
    a half-open connection goes before any established one); returns it, or -1."""
    cdef uint64_t entry
    cdef intp_t rid
    while t.evict_head < t.evict_tail:
        entry = t.evict_ring[t.evict_head & (t.evict_capacity - 1)]
        t.evict_head += 1
        rid = <intp_t>(entry & 0xffffffffu)
        if rid < t.used and evictable(&recs[rid], entry):
            end_connection(t, &recs[rid], rid, E_EVICTED)
            remove_connection(t, recs, rid, slot_of(t, recs, rid))
            return rid
    return -1


cdef inline void list_for_eviction(table_t* t, const conn_t* recs, intp_t rid) noexcept nogil:
    """Lists a new connection last in the eviction ring. A full ring first drops its stale
    entries (connections gone, answered, or reopened since): it is twice the table's
    capacity, so that frees half of it at least and no live candidate is ever lost."""
    cdef intp_t mask = t.evict_capacity - 1, read, write
    cdef uint64_t entry
    if t.evict_ring == NULL:
        return
    if t.evict_tail - t.evict_head == t.evict_capacity:
        write = t.evict_head
        for read in range(t.evict_head, t.evict_tail):
            entry = t.evict_ring[read & mask]
            if <intp_t>(entry & 0xffffffffu) < t.used and \
                    evictable(&recs[<intp_t>(entry & 0xffffffffu)], entry):
                t.evict_ring[write & mask] = entry
                write += 1
        t.evict_tail = write
    t.evict_ring[t.evict_tail & mask] = (<uint64_t>rid) | ((<uint64_t>recs[rid].first_ts) << 32)
    t.evict_tail += 1


cdef inline bint zero_window(const events_t* ev, intp_t i) noexcept nogil:
    return ev.window != NULL and ev.window[i] == 0 and not (ev.flags[i] & 0x04)


cdef inline void start_flow(table_t* t, intp_t rid, int d, const events_t* ev,
                            intp_t i) noexcept nogil:
    if t.flows != NULL:
        memset(&t.flows[rid], 0, sizeof(flow_t))
        zeek_step(&t.flows[rid], d, ev.flags[i], ev.length[i], False, zero_window(ev, i))


cdef inline void step_flow(table_t* t, intp_t rid, int d, const events_t* ev, intp_t i,
                           bint retransmission) noexcept nogil:
    if t.flows != NULL:
        zeek_step(&t.flows[rid], d, ev.flags[i], ev.length[i], retransmission,
                  zero_window(ev, i))


cdef inline void start_connection(conn_t* c, uint8_t state, uint8_t act, bint illegal_segment,
                                  const events_t* ev, intp_t i) noexcept nogil:
    cdef bint flip = act == A_FLIP
    set_endpoints(c, ev, i, flip)
    c.state = state
    c.status = S_ALIVE
    if flip:
        c.status |= S_FLIPPED | S_REPLIED
    elif act == A_PICKUP:
        c.status |= S_PICKED_UP
    c.orig_flags = c.resp_flags = 0
    c.orig_pkts = c.resp_pkts = 0
    c.orig_bytes = c.resp_bytes = 0
    c.first_ts = c.last_ts = ev.ts[i]
    count_segment(c, flip, ev, i)
    if illegal_segment:
        count_illegal(c)


cdef inline void remove_connection(table_t* t, conn_t* recs, intp_t rid, uint64_t pos) noexcept nogil:
    cdef conn_t* c = &recs[rid]
    t.hist[c.state] -= 1
    t.count -= 1
    t.index[pos] = SLOT_TOMB
    t.tombstones += 1
    t.slot_changes += 1
    c.status = 0
    c.orig_pkts = <uint32_t>t.free_head if t.free_head >= 0 else 0xffffffffu
    t.free_head = rid


cdef inline intp_t allocate_record(table_t* t, conn_t* recs) noexcept nogil:
    cdef intp_t rid
    if t.free_head >= 0:
        rid = <intp_t>t.free_head
        t.free_head = -1 if recs[rid].orig_pkts == 0xffffffffu else <int64_t>recs[rid].orig_pkts
        return rid
    rid = t.used
    t.used += 1
    return rid


cdef struct ring_t:
    # What the stages ahead found out about the events before the one being applied.
    uint64_t hash[RING]
    uint64_t home[RING]          # home slot
    uint64_t walked[RING]        # where walk_tags stopped
    uint64_t walked_at[RING]     # table_t.slot_changes when it did
    int64_t tomb[RING]           # first tombstone the walk passed, -1 if none


cdef inline bint in_shard(const table_t* t, uint64_t h) noexcept nogil:
    # The top two hash bits pick the shard: the index uses the low 32 bits for the home slot
    # and at most bits 32-61 for the tag, so within a shard placement stays uniform.
    return ((h >> SHARD_SHIFT) & (t.n_shards - 1)) == t.shard


# How a kernel walks the batch, chosen at compile time (a fused type, so the plain walk
# keeps its simple addressing): every event in order, or the events listed in `order`
# (one shard's share) with hashes computed beforehand.
cdef struct walk_all_t:
    char unused
cdef struct walk_ordered_t:
    char unused
ctypedef fused walk_t:
    walk_all_t
    walk_ordered_t


cdef inline intp_t event_at(const walk_t* walk, const events_t* ev, intp_t k) noexcept nogil:
    """The index of the event at position k of the walk."""
    if walk_t is walk_ordered_t:
        return ev.order[k]
    else:
        return k


cdef inline void stage_hash(ring_t* ring, probe_t ix, const table_t* t, const conn_t* recs,
                            const events_t* ev, const walk_t* walk, intp_t j) noexcept nogil:
    cdef intp_t i = event_at(walk, ev, j)
    cdef uint64_t h
    if walk_t is walk_ordered_t:
        h = ev.hash[i]
    else:
        h = event_hash(t, recs, ev, i)
    cdef uint64_t home = fastrange(h, ix.nslots)
    cdef intp_t k = j & (RING - 1)
    ring.hash[k] = h
    ring.home[k] = home
    FT_PREFETCH(&ix.index[home])


cdef inline void stage_walk(ring_t* ring, probe_t ix, const table_t* t, const conn_t* recs,
                            intp_t j) noexcept nogil:
    cdef intp_t k = j & (RING - 1)
    cdef uint64_t p = walk_tags(ix, recs, ring.hash[k], ring.home[k], &ring.tomb[k])
    cdef uint32_t slot = ix.index[p]
    cdef intp_t rid
    ring.walked[k] = p
    ring.walked_at[k] = t.slot_changes
    if slot >= SLOT_ID_BIAS:
        # the matched record's side arrays are read with it: fetch them too, or each segment
        # of a sequence-aware or flow-keeping tracker waits for them from memory
        rid = <intp_t>(slot & ix.id_mask) - SLOT_ID_BIAS
        if t.seq != NULL:
            FT_PREFETCH(&t.seq[rid])
            FT_PREFETCH((<const char*>&t.seq[rid]) + sizeof(seq_t) - 1)
        if t.flows != NULL:
            FT_PREFETCH(&t.flows[rid])
            FT_PREFETCH((<const char*>&t.flows[rid]) + sizeof(flow_t) - 1)


cdef inline uint64_t probe_start(const ring_t* ring, const table_t* t, intp_t i,
                                 int64_t* first_tomb) noexcept nogil:
    # The walk's result holds while no slot has changed since; slots before it hold no tag
    # match, so the probe may start there. Otherwise start over from home.
    cdef intp_t k = i & (RING - 1)
    if ring.walked_at[k] == t.slot_changes:
        first_tomb[0] = ring.tomb[k]
        return ring.walked[k]
    first_tomb[0] = -1
    return ring.home[k]


cdef inline void pipeline_start(ring_t* ring, probe_t ix, const table_t* t, const conn_t* recs,
                                const events_t* ev, const walk_t* walk, intp_t start,
                                intp_t n) noexcept nogil:
    cdef intp_t j
    for j in range(start, min(start + HASH_AHEAD, n)):
        stage_hash(ring, ix, t, recs, ev, walk, j)
    for j in range(start, min(start + RECORD_AHEAD, n)):
        stage_walk(ring, ix, t, recs, j)


cdef inline void pipeline_advance(ring_t* ring, probe_t ix, const table_t* t, const conn_t* recs,
                                  const events_t* ev, const walk_t* walk, intp_t i,
                                  intp_t n) noexcept nogil:
    """Before applying position i: hash position i+HASH_AHEAD, walk the probe of i+RECORD_AHEAD."""
    cdef intp_t j = i + HASH_AHEAD
    if j < n:
        stage_hash(ring, ix, t, recs, ev, walk, j)
    j = i + RECORD_AHEAD
    if j < n:
        stage_walk(ring, ix, t, recs, j)


cdef int expire_wheel(table_t* t, conn_t* recs, int64_t now, intp_t* expired) noexcept nogil:
    """Processes the wheel's ticks up to now's: 0 when done, 1 when the ended buffer filled
    up (call again after collecting), -1 when a slot could not grow."""
    cdef wheel_t* w = &t.wheel
    cdef int64_t now_tick = now // TICK_NS, tick, last
    cdef intp_t r, kept, steps, s, rid
    cdef bucket_t* b
    cdef conn_t* c
    cdef uint32_t slot
    if not w.started or now_tick < w.tick:
        return 0
    # a jump of a revolution or more visits every slot once, at the tick each holds
    steps = min(now_tick - w.tick + 1, <int64_t>WHEEL_SLOTS)
    for s in range(steps):
        tick = w.tick + s
        slot = tick & WHEEL_MASK
        b = &w.slots[slot]
        kept = 0
        r = 0
        while r < b.len:
            rid = b.rids[r]
            r += 1
            c = &recs[rid]
            if not (c.status & S_ALIVE) or (t.due[rid] & WHEEL_MASK) != slot:
                continue                            # gone, or listed in another slot since
            if ticks_after(t.due[rid], tick) > 0:
                b.rids[kept] = rid                  # due in a later revolution
                kept += 1
                continue
            if is_due(c.last_ts, t.timeout[c.state], now):
                if t.n_ended + 1 > t.ended_capacity:
                    # collect first: keep this one and the rest listed, resume at this tick
                    r -= 1
                    while r < b.len:
                        b.rids[kept] = b.rids[r]
                        kept += 1
                        r += 1
                    b.len = kept
                    w.tick = tick
                    return 1
                end_connection(t, c, rid, E_EXPIRED)
                remove_connection(t, recs, rid, slot_of(t, recs, rid))
                expired[0] += 1
                continue
            # active since it was listed: list it again at its deadline (always > now)
            last = clamp_tick(w, deadline_of(c.last_ts, t.timeout[c.state]) // TICK_NS)
            if last < now_tick:
                last = now_tick
            t.due[rid] = <uint32_t>last
            if (last & WHEEL_MASK) == slot:
                b.rids[kept] = rid
                kept += 1
            elif wheel_push(w, last, <uint32_t>rid) < 0:
                b.len = kept + (b.len - r)
                return -1
        b.len = kept
        if bound_wheel(t, recs) < 0:     # between slots: nothing is being walked
            w.tick = tick + 1
            return -1
    w.tick = now_tick
    return 0


cdef int apply_batch(table_t* t, conn_t* recs, const events_t* events, const walk_t* walk,
                     intp_t start, intp_t n, int64_t* out_conn, uint8_t* out_state,
                     uint8_t* out_verdict, counts_t* cnt, intp_t* stop) noexcept nogil:
    """Applies the events at positions [start, n).

    Returns RC_DONE, or RC_NEED_SPACE / RC_ENDED_FULL / RC_NO_MEMORY with *stop the position
    to resume at.
    """
    # A local copy of the column pointers: extensions build with -fno-strict-aliasing, so
    # through the caller's struct every store to a record would force them to be reloaded.
    cdef events_t ev_local = events[0]
    cdef const events_t* ev = &ev_local
    cdef ring_t ring
    cdef probe_t ix = probe_fields(t)
    cdef const uint8_t* trans = t.trans
    cdef const uint8_t* actions = t.actions
    cdef const uint8_t* class_of = t.class_of
    cdef int64_t* hist = t.hist
    cdef int64_t* class_counts = t.class_counts
    cdef const uint8_t* illegal = t.illegal
    cdef intp_t n_classes = t.n_classes
    cdef counts_t c_n = cnt[0]
    cdef intp_t i, k, rid
    cdef uint64_t h, pos
    cdef int64_t first_tomb
    cdef int d, rc = RC_DONE
    cdef uint8_t cls, old, nxt, act, verdict, state_out
    cdef intp_t cell, n_expired = 0
    cdef int wheel_rc, seq_rc
    cdef conn_t* c

    pipeline_start(&ring, ix, t, recs, ev, walk, start, n)
    for k in range(start, n):
        pipeline_advance(&ring, ix, t, recs, ev, walk, k, n)
        if t.n_ended + 2 > t.ended_capacity:   # an event may end two connections
            rc = RC_ENDED_FULL
            break
        i = event_at(walk, ev, k)
        h = ring.hash[k & (RING - 1)]
        pos = probe_start(&ring, t, k, &first_tomb)
        cls = class_of[ev.flags[i]]
        c_n.events += 1
        class_counts[cls] += 1
        rid = find(ix, recs, ev, i, h, &pos, &first_tomb, &d)
        if rid >= 0 and t.due != NULL and \
                is_due(recs[rid].last_ts, t.timeout[recs[rid].state], ev.ts[i]):
            # idle for its whole timeout (conntrack and Zeek expire at the deadline itself):
            # that connection is over, and this segment meets the key as if for the first
            # time (its slot is where the key goes back)
            end_connection(t, &recs[rid], rid, E_EXPIRED)
            remove_connection(t, recs, rid, pos)
            c_n.expired += 1
            if first_tomb < 0:
                first_tomb = <int64_t>pos
            rid = -1
        seq_rc = SEQ_IN_WINDOW
        if rid >= 0 and t.seq != NULL and ev.seq != NULL:
            cls = seq_class(t, &t.seq[rid], d, cls, ev, i)
            seq_rc = seq_segment(&t.seq[rid], d, ev, i)
            c_n.retransmitted += seq_rc == SEQ_RETRANSMISSION
            c_n.zero_window += zero_window(ev, i)
        if rid >= 0:
            c = &recs[rid]
            if illegal[cls]:
                count_illegal(c)
            old = c.state
            cell = (old * 2 + d) * n_classes + cls
            nxt = trans[cell]
            act = actions[cell]
            if seq_rc == SEQ_OUT_OF_WINDOW and not (act == A_REOPEN or act == A_FLIP
                                                    or act == A_PICKUP):
                # outside the receiver's window: a forged or stray segment, which must not
                # move the connection (a RST or FIN included). A segment that opens the key
                # afresh (a new SYN after TIME_WAIT, say) starts new sequence state instead.
                nxt = C_INVALID
                c_n.out_of_window += 1
            if nxt == C_INVALID:
                count_segment(c, d, ev, i)
                step_flow(t, rid, d, ev, i, seq_rc == SEQ_RETRANSMISSION)
                verdict = V_INVALID
                c_n.invalid += 1
            elif nxt == C_IGNORE:
                count_segment(c, d, ev, i)
                step_flow(t, rid, d, ev, i, seq_rc == SEQ_RETRANSMISSION)
                if d:
                    c.status |= S_REPLIED
                verdict = V_IGNORED
                c_n.ignored += 1
            elif act == A_REOPEN or act == A_FLIP or act == A_PICKUP:
                # the old connection ends here; this segment opens a new one under the same key
                # (flip and pickup are creation actions: on a live connection they restart it)
                hist[old] -= 1
                hist[nxt] += 1
                c_n.closed += 1
                end_connection(t, c, rid, E_CLOSED)
                start_connection(c, nxt, act, illegal[cls], ev, i)
                start_flow(t, rid, act == A_FLIP, ev, i)
                seq_start(t, rid, act == A_FLIP, ev, i)
                list_for_eviction(t, recs, rid)
                if t.due != NULL and schedule_if_sooner(
                        t, rid, ev.ts[i], deadline_of(ev.ts[i], t.timeout[nxt])) < 0:
                    rc = RC_NO_MEMORY
                verdict = V_NEW
                c_n.new += 1
            else:
                count_segment(c, d, ev, i)
                step_flow(t, rid, d, ev, i, seq_rc == SEQ_RETRANSMISSION)
                if nxt != old:
                    hist[old] -= 1
                    hist[nxt] += 1
                    c.state = nxt
                    if t.due != NULL and schedule_if_sooner(
                            t, rid, ev.ts[i], deadline_of(c.last_ts, t.timeout[nxt])) < 0:
                        rc = RC_NO_MEMORY
                verdict = V_VALID
                c_n.valid += 1
                if act == A_CLOSE_UNREPLIED and not (c.status & S_REPLIED):
                    end_connection(t, c, rid, E_CLOSED)
                    remove_connection(t, recs, rid, pos)
                    c_n.closed += 1
                elif d:
                    c.status |= S_REPLIED
            state_out = c.state
        else:
            cell = cls  # state 0 (initial), direction 0: the sender becomes the originator
            nxt = trans[cell]
            act = actions[cell]
            if nxt >= t.n_states:
                verdict = V_INVALID if nxt == C_INVALID else V_IGNORED
                if nxt == C_INVALID:
                    c_n.invalid += 1
                else:
                    c_n.ignored += 1
                c_n.untracked += 1
                state_out = 0
            else:
                if t.count >= t.capacity and t.due != NULL:
                    # full: first let the connections whose time is up go (by this segment's
                    # time, but never past the tracker's clock: one forged timestamp must not
                    # expire the table), before growing or evicting a live one
                    wheel_rc = expire_wheel(t, recs, min(ev.ts[i], t.clock_limit),
                                            &n_expired)
                    c_n.expired += n_expired
                    n_expired = 0
                    if wheel_rc != 0:
                        class_counts[cls] -= 1  # the event is applied again afterwards
                        c_n.events -= 1
                        rc = RC_ENDED_FULL if wheel_rc > 0 else RC_NO_MEMORY
                        break
                if t.count >= t.capacity and t.evicting:
                    if evict_one(t, recs) >= 0:
                        c_n.evicted += 1
                    else:
                        # full of answered connections: this one goes untracked, ignored
                        c_n.refused += 1
                        c_n.ignored += 1
                        c_n.untracked += 1
                        if out_conn != NULL:
                            out_conn[i] = -1
                            out_state[i] = 0
                            out_verdict[i] = V_IGNORED
                        continue
                if t.count >= t.capacity or t.count + t.tombstones >= t.max_filled:
                    class_counts[cls] -= 1  # the event is applied again after the resize
                    c_n.events -= 1
                    rc = RC_NEED_SPACE
                    break
                if first_tomb >= 0:
                    pos = <uint64_t>first_tomb
                    t.tombstones -= 1
                rid = allocate_record(t, recs)
                t.index[pos] = make_slot(h, ix.tag_mask, ix.id_bits, rid)
                t.slot_changes += 1
                c = &recs[rid]
                start_connection(c, nxt, act, illegal[cls], ev, i)
                start_flow(t, rid, act == A_FLIP, ev, i)
                seq_start(t, rid, act == A_FLIP, ev, i)
                list_for_eviction(t, recs, rid)
                if t.due != NULL and schedule(t, rid, ev.ts[i],
                                              deadline_of(ev.ts[i], t.timeout[nxt])) < 0:
                    rc = RC_NO_MEMORY
                hist[nxt] += 1
                t.count += 1
                verdict = V_NEW
                c_n.new += 1
                state_out = nxt
                if act == A_CLOSE_UNREPLIED:
                    end_connection(t, c, rid, E_CLOSED)
                    remove_connection(t, recs, rid, pos)
                    c_n.closed += 1
        if t.due != NULL and rc == RC_DONE and bound_wheel(t, recs) < 0:
            rc = RC_NO_MEMORY
        if out_conn != NULL:
            # with shards, record indices interleave: shard s owns s, s + n_shards, ...
            out_conn[i] = rid * t.n_shards + t.shard if rid >= 0 else -1
            out_state[i] = state_out
            out_verdict[i] = verdict
        if rc == RC_NO_MEMORY:
            k += 1              # this event was applied; its wheel entry is what failed
            break
    else:
        k = n
    cnt[0] = c_n
    stop[0] = k
    return rc


cdef void lookup_batch(const table_t* t, const conn_t* recs, const events_t* events,
                       const walk_t* walk, intp_t n, int64_t* out_conn, uint8_t* out_state,
                       uint8_t* out_direction) noexcept nogil:
    cdef events_t ev_local = events[0]  # see apply_batch
    cdef const events_t* ev = &ev_local
    cdef ring_t ring
    cdef probe_t ix = probe_fields(t)
    cdef intp_t i, k, rid
    cdef uint64_t pos
    cdef int64_t first_tomb
    cdef int d
    pipeline_start(&ring, ix, t, recs, ev, walk, 0, n)
    for k in range(n):
        pipeline_advance(&ring, ix, t, recs, ev, walk, k, n)
        i = event_at(walk, ev, k)
        pos = probe_start(&ring, t, k, &first_tomb)
        rid = find(ix, recs, ev, i, ring.hash[k & (RING - 1)], &pos, &first_tomb, &d)
        out_conn[i] = rid * t.n_shards + t.shard if rid >= 0 else -1
        out_state[i] = recs[rid].state if rid >= 0 else 0
        out_direction[i] = <uint8_t>d if rid >= 0 else 0


cdef void rebuild_index(table_t* t, const conn_t* recs) noexcept nogil:
    """Re-inserts every live record into an empty index (after growth, or to drop tombstones)."""
    cdef intp_t rid
    cdef uint64_t h, p
    memset(t.index, 0, t.nslots * sizeof(uint32_t))
    t.tombstones = 0
    for rid in range(t.used):
        if recs[rid].status & S_ALIVE:
            h = record_hash(t, &recs[rid])
            p = fastrange(h, t.nslots)
            while t.index[p] != SLOT_EMPTY:
                p += 1
                if p == t.nslots:
                    p = 0
            t.index[p] = make_slot(h, t.tag_mask, t.id_bits, rid)


cdef void probe_lengths(const table_t* t, const conn_t* recs, int64_t* out) noexcept nogil:
    """Slots examined to find each live record (1 = found in its home slot), by record index."""
    cdef intp_t rid
    cdef uint64_t h, p
    cdef uint32_t want
    cdef int64_t length
    for rid in range(t.used):
        out[rid] = 0
        if not (recs[rid].status & S_ALIVE):
            continue
        h = record_hash(t, &recs[rid])
        p = fastrange(h, t.nslots)
        want = <uint32_t>(rid + SLOT_ID_BIAS)
        length = 1
        while (t.index[p] & t.id_mask) != want and <uint64_t>length <= t.nslots:
            p += 1
            length += 1
            if p == t.nslots:
                p = 0
        out[rid] = length


def _struct_dtype(names, offsets, formats, itemsize):
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


cdef list field_offsets(const conn_t* c):
    """Byte offsets of the record fields, in dtype order."""
    cdef intp_t base = <intp_t>c
    return [<intp_t>&c.orig_h - base, <intp_t>&c.resp_h - base, <intp_t>&c.orig_p - base,
            <intp_t>&c.resp_p - base, <intp_t>&c.state - base, <intp_t>&c.status - base,
            <intp_t>&c.orig_flags - base, <intp_t>&c.resp_flags - base,
            <intp_t>&c.orig_pkts - base, <intp_t>&c.resp_pkts - base,
            <intp_t>&c.orig_bytes - base, <intp_t>&c.resp_bytes - base,
            <intp_t>&c.first_ts - base, <intp_t>&c.last_ts - base]


cdef conn4_t _dummy4
cdef conn6_t _dummy6
cdef flow_t _dummy_flow

_FIELDS = ["orig_h", "resp_h", "orig_p", "resp_p", "state", "status", "orig_flags",
           "resp_flags", "orig_pkts", "resp_pkts", "orig_bytes", "resp_bytes", "first_ts",
           "last_ts"]
# native byte order: the dtypes describe the structs in this process's memory
_COUNTER_FORMATS = ["u2", "u2", "u1", "u1", "u1", "u1", "u4", "u4", "u8", "u8", "i8", "i8"]
CONN4_DTYPE = _struct_dtype(_FIELDS, field_offsets(&_dummy4), ["u4", "u4"] + _COUNTER_FORMATS,
                            sizeof(conn4_t))
CONN6_DTYPE = _struct_dtype(_FIELDS, field_offsets(&_dummy6),
                            [("u1", (16,)), ("u1", (16,))] + _COUNTER_FORMATS, sizeof(conn6_t))
FLOW_STATE_DTYPE = _struct_dtype(
    ["history", "history_more", "seen", "orig_zeek", "resp_zeek"],
    [<intp_t>&_dummy_flow.history - <intp_t>&_dummy_flow,
     <intp_t>&_dummy_flow.history_more - <intp_t>&_dummy_flow,
     <intp_t>&_dummy_flow.seen - <intp_t>&_dummy_flow,
     <intp_t>&_dummy_flow.orig_zeek - <intp_t>&_dummy_flow,
     <intp_t>&_dummy_flow.resp_zeek - <intp_t>&_dummy_flow],
    ["u8", "u8", "u4", "u1", "u1"], sizeof(flow_t))


cdef intp_t _set_walk(events_t* ev, intp_t n, const intp_t[::1] order,
                     const uint64_t[::1] hashes) except -1:
    """Points ev at an order and its hashes (both or neither); returns the positions to walk."""
    if (order is None) != (hashes is None):
        raise ValueError("order and hashes come together")
    if order is None:
        return n
    if hashes.shape[0] != n:
        raise ValueError("hashes must have one entry per event")
    if order.shape[0] > 0:
        if np.asarray(order).min() < 0 or np.asarray(order).max() >= n:
            raise IndexError("order names events outside the batch")
        ev.order = &order[0]
        ev.hash = &hashes[0]
    return order.shape[0]


cdef struct one_event_t:
    # storage for a single event, for scalar lookups
    events_t ev
    int64_t ts
    uint32_t src4
    uint32_t dst4
    addr6_t src6
    addr6_t dst6
    uint16_t sport
    uint16_t dport
    uint8_t flags
    uint32_t length


COUNT_NAMES = ("events", "new", "valid", "invalid", "ignored", "untracked", "closed",
               "expired", "evicted", "refused", "out_of_window", "retransmitted",
               "zero_window")
# counts_t is read as an int64 array in COUNT_NAMES order
if sizeof(counts_t) != len(COUNT_NAMES) * sizeof(int64_t):
    raise ImportError("counts_t and COUNT_NAMES disagree")


def index_slots_for(intp_t capacity):
    """Index slots a table of `capacity` records uses (load at most MAX_LOAD when full)."""
    return max(8, math.ceil(capacity / MAX_LOAD))


# Restoring saved storage: a snapshot is checked against everything the kernel trusts before
# any of it is used (check_saved), so a crafted or damaged file cannot send the kernel out of
# its arrays. The index, histogram and live count are not saved but rebuilt from the records.
cdef enum:
    CK_OK = 0
    CK_STATE = 1
    CK_FLOW = 2
    CK_SEQ = 3
    CK_FREE_LIST = 4
    CK_LEAK = 5
    CK_SHARD = 6
    CK_DUPLICATE = 7
    CK_WHEEL_IDLE = 8
    CK_WHEEL_ENTRY = 9
    CK_DUE = 10
    CK_UNLISTED = 11
    CK_RING = 12
    M_FREE = 1           # marks: the record is on the free list
    M_LISTED = 2         # the record is listed in the wheel slot of its due tick
    MAX_WSCALE = 14      # RFC 7323's largest window scale (seq_segment caps at it)

# What check_saved found, by CK_* code.
SAVED_ERRORS = (
    None,
    "a live record names a state the model does not have",
    "a live record's flow state is malformed (history letters or Zeek states)",
    "a live record's sequence state is malformed (window scale or flags)",
    "the free list names a live, unused or repeated record",
    "records below `used` that are neither live nor on the free list (or a count mismatch)",
    "a live record hashes to another shard",
    "two live records hold the same connection",
    "the expiry wheel is not started but lists records or has live connections",
    "a wheel entry names a record at or above `used`",
    "a live record is due outside the wheel's revolution",
    "a live record is not listed in the wheel slot of its due tick",
    "an eviction ring entry names a record at or above `used`",
)
if len(SAVED_ERRORS) != CK_RING + 1:
    raise ImportError("SAVED_ERRORS and the CK_* codes disagree")


cdef struct saved_t:
    # A table's storage as a snapshot holds it (NULL: not kept), for check_saved.
    const flow_t* flows
    const seq_t* seq
    const uint32_t* due
    const int64_t* wheel_lengths    # WHEEL_SLOTS counts (checked >= 0, summing to n_entries)
    const uint32_t* wheel_entries
    intp_t n_entries
    int64_t wheel_tick
    bint wheel_started
    const uint64_t* ring            # eviction ring, ring_capacity entries (a power of two)
    intp_t ring_capacity
    intp_t ring_head                # 0 <= head <= tail <= head + ring_capacity (checked)
    intp_t ring_tail


cdef inline bint flow_ok(const flow_t* f) noexcept nogil:
    """What history_text and add_letter trust: at most 18 letters (the seen bits), each a
    known letter, nothing stored past them, and Zeek states that exist."""
    cdef int n, k
    if f.seen >> (2 * SEEN_BITS):
        return False
    n = ft_popcount32(f.seen)
    for k in range(n):
        if (history_entry(f, k) >> 1) > L_ZERO_WINDOW:     # the last letter code
            return False
    # nothing stored past the n letters (history holds letters 0-11, history_more 12-17)
    if n < 12:
        if f.history >> (5 * n) or f.history_more:
            return False
    elif f.history >> 60 or f.history_more >> (5 * (n - 12)):
        return False
    return ((f.orig_zeek & 0x0F) <= Z_RESET and (f.orig_zeek >> 4) <= Z_RESET
            and (f.resp_zeek & 0x0F) <= Z_RESET and (f.resp_zeek >> 4) <= Z_RESET)


cdef inline bint seq_dir_ok(const seq_dir_t* s) noexcept nogil:
    # a scale seq_segment can shift by, and only SQ_* flag bits
    return s.scale <= MAX_WSCALE and s.flags < 2 * SQ_PICKED_UP


cdef inline bint same_endpoint(const conn_t* a, int da, const conn_t* b, int db) noexcept nogil:
    # endpoint da of a (0 orig, 1 resp) is endpoint db of b
    return ((&a.orig_p)[da] == (&b.orig_p)[db]
            and memcmp(&(&a.orig_h)[da], &(&b.orig_h)[db], sizeof(a.orig_h)) == 0)


cdef inline bint same_connection(const conn_t* a, const conn_t* b) noexcept nogil:
    return ((same_endpoint(a, 0, b, 0) and same_endpoint(a, 1, b, 1))
            or (same_endpoint(a, 0, b, 1) and same_endpoint(a, 1, b, 0)))


cdef void free_wheel(bucket_t* slots) noexcept nogil:
    """Frees a wheel's slots and their lists (NULL-safe)."""
    cdef intp_t i
    if slots == NULL:
        return
    for i in range(WHEEL_SLOTS):
        PyMem_RawFree(slots[i].rids)
    free(slots)


cdef bucket_t* wheel_from_lists(const int64_t* lengths, const uint32_t* entries) noexcept nogil:
    """Wheel slots holding saved lists (as FlowTable.wheel_lists gives them), or NULL when
    out of memory."""
    cdef bucket_t* slots = <bucket_t*>calloc(WHEEL_SLOTS, sizeof(bucket_t))
    cdef intp_t i, at = 0
    if slots == NULL:
        return NULL
    for i in range(WHEEL_SLOTS):
        if lengths[i] == 0:
            continue
        slots[i].rids = <uint32_t*>PyMem_RawMalloc(lengths[i] * sizeof(uint32_t))
        if slots[i].rids == NULL:
            free_wheel(slots)
            return NULL
        memcpy(slots[i].rids, &entries[at], lengths[i] * sizeof(uint32_t))
        slots[i].len = slots[i].cap = <uint32_t>lengths[i]
        at += lengths[i]
    return slots


cdef int check_saved(table_t* t, const conn_t* recs, const saved_t* s, uint8_t* marks,
                     int64_t* hist) noexcept nogil:
    """Checks saved storage against everything the kernel trusts, in O(records + slots +
    wheel and ring entries); returns CK_OK or the first CK_* problem found.

    t is a scratch copy of the table's fields with the saved `used` and `free_head`, and an
    empty index of t.nslots slots: the index is rebuilt there from the live records (each
    then sits in exactly one slot, no tombstones), and t.count set. marks: `used` zero bytes.
    hist: n_states zeros, filled with the live records per state.
    """
    cdef intp_t rid, other, live = 0, free = 0, at = 0, k
    cdef uint64_t h, p, entry
    cdef uint32_t want, tag, slot
    cdef intp_t i
    cdef const conn_t* c
    for rid in range(t.used):
        c = &recs[rid]
        if not (c.status & S_ALIVE):
            continue
        if c.state >= t.n_states:
            return CK_STATE
        if s.flows != NULL and not flow_ok(&s.flows[rid]):
            return CK_FLOW
        if s.seq != NULL and not (seq_dir_ok(&s.seq[rid].orig)
                                  and seq_dir_ok(&s.seq[rid].resp)):
            return CK_SEQ
        hist[c.state] += 1
        live += 1
    # the free list: dead records below `used`, each once (a cycle repeats one), and with the
    # live ones all of them: a dead record off the list would be lost, and allocation would
    # hand out records past the arrays before the table counted itself full
    rid = <intp_t>t.free_head
    while rid >= 0:
        if rid >= t.used or recs[rid].status & S_ALIVE or marks[rid] & M_FREE:
            return CK_FREE_LIST
        marks[rid] |= M_FREE
        free += 1
        rid = -1 if recs[rid].orig_pkts == 0xffffffffu else <intp_t>recs[rid].orig_pkts
    if free + live != t.used:
        return CK_LEAK
    t.count = live
    rebuild_index(t, recs)
    # every live record in its shard, and none holding another's connection (a lookup would
    # only ever find the first); found by walking each record's probe to its own slot
    for rid in range(t.used):
        c = &recs[rid]
        if not (c.status & S_ALIVE):
            continue
        h = record_hash(t, c)
        if not in_shard(t, h):
            return CK_SHARD
        p = fastrange(h, t.nslots)
        want = <uint32_t>(rid + SLOT_ID_BIAS)
        tag = hash_tag(h, t.tag_mask)
        slot = t.index[p]
        while (slot & t.id_mask) != want:
            other = <intp_t>(slot & t.id_mask) - SLOT_ID_BIAS
            if (slot >> t.id_bits) == tag and same_connection(c, &recs[other]):
                return CK_DUPLICATE
            p += 1
            if p == t.nslots:
                p = 0
            slot = t.index[p]
    if s.due != NULL and not s.wheel_started:
        # nothing was ever scheduled: no connection was ever made
        if live or s.n_entries:
            return CK_WHEEL_IDLE
    elif s.due != NULL:
        for i in range(WHEEL_SLOTS):
            for k in range(at, at + <intp_t>s.wheel_lengths[i]):
                rid = s.wheel_entries[k]
                if rid >= t.used:
                    return CK_WHEEL_ENTRY
                if (recs[rid].status & S_ALIVE) and (s.due[rid] & WHEEL_MASK) == <uint32_t>i:
                    marks[rid] |= M_LISTED
            at += <intp_t>s.wheel_lengths[i]
        for rid in range(t.used):
            if not (recs[rid].status & S_ALIVE):
                continue
            # wrap-aware: due within one revolution from the wheel's tick
            if <uint32_t>(s.due[rid] - <uint32_t>s.wheel_tick) > WHEEL_MASK:
                return CK_DUE
            if not (marks[rid] & M_LISTED):
                return CK_UNLISTED
    if s.ring != NULL:
        for k in range(s.ring_head, s.ring_tail):
            entry = s.ring[k & (s.ring_capacity - 1)]
            if <intp_t>(entry & 0xffffffffu) >= t.used:
                return CK_RING
    return CK_OK


cdef class FlowTable:
    """The connections of one address family (4 or 6) under one compiled model.

    Not thread-safe: the Python layer serialises calls.
    """
    cdef table_t t
    cdef counts_t totals
    cdef readonly int family
    cdef object _records       # numpy structured array, CONN4_DTYPE or CONN6_DTYPE
    cdef object _index         # numpy uint32
    cdef object _hist          # numpy int64 [n_states]
    cdef object _class_counts  # numpy int64 [n_classes]
    cdef object _model_arrays  # keeps the compiled model's buffers alive
    cdef object _flows         # FLOW_STATE_DTYPE per record, or None
    cdef object _ended         # records of ended connections (CONN dtype), or None
    cdef object _ended_flows   # and their FLOW_STATE_DTYPE rows
    cdef object _ended_reason  # and why each ended (END_*)
    cdef object _due           # uint32 per record (expiry), or None
    cdef object _timeout       # int64 ns per state (expiry), or None
    cdef object _evict_ring    # uint64 ring (eviction), or None
    cdef object _seq           # uint8 (capacity, sizeof(seq_t)) sequence state, or None

    def __cinit__(self, int family, intp_t capacity, class_of, trans, actions, illegal,
                  intp_t n_states, intp_t n_classes, keys, int shard=0, int n_shards=1,
                  bint flows=False, intp_t ended_capacity=4096, timeouts=None,
                  bint evict=False, early=None):
        if family not in (4, 6):
            raise ValueError(f"address family must be 4 or 6, not {family!r}")
        if n_shards not in (1, 2, 4) or not 0 <= shard < n_shards:
            raise ValueError(f"n_shards must be 1, 2 or 4 and shard below it, "
                             f"not {shard} of {n_shards}")
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be between 1 and {MAX_CAPACITY}, not {capacity}")
        if not 1 <= n_states < IGNORE or n_classes < 1:
            raise ValueError(f"a model has 1 to {IGNORE - 1} states and at least one class")
        # private copies, checked once: the kernel indexes with these values unchecked
        class_of = np.array(class_of, dtype=np.uint8, copy=True).ravel()
        trans = np.array(trans, dtype=np.uint8, copy=True).ravel()
        actions = np.array(actions, dtype=np.uint8, copy=True).ravel()
        illegal = (np.array(illegal, copy=True).ravel() != 0).astype(np.uint8)
        early = (np.arange(n_classes, dtype=np.uint8) if early is None
                 else np.array(early, dtype=np.uint8, copy=True).ravel())
        if early.shape[0] != n_classes or early.max() >= n_classes:
            raise ValueError(f"early must map each of the {n_classes} classes to a class")
        if illegal.shape[0] != n_classes:
            raise ValueError(f"illegal must have one entry per flag class ({n_classes})")
        if class_of.shape[0] != 256 or class_of.max() >= n_classes:
            raise ValueError(f"class_of must map 256 flag bytes to classes below {n_classes}")
        if trans.shape[0] != n_states * 2 * n_classes or actions.shape[0] != trans.shape[0]:
            raise ValueError("transition and action tables must have n_states * 2 * n_classes cells")
        if ((trans >= n_states) & (trans != INVALID) & (trans != IGNORE)).any():
            raise ValueError(f"transition cells must name a state below {n_states}, "
                             f"INVALID or IGNORE")
        if actions.max() > A_LAST:
            raise ValueError(f"action codes are 0..{A_LAST}")
        cdef const uint8_t[::1] class_v = class_of
        cdef const uint8_t[::1] trans_v = trans
        cdef const uint8_t[::1] actions_v = actions
        cdef const uint8_t[::1] illegal_v = illegal
        cdef const uint8_t[::1] early_v = early
        memset(&self.t, 0, sizeof(table_t))
        memset(&self.totals, 0, sizeof(counts_t))
        self.family = family
        self._model_arrays = (class_of, trans, actions, illegal, early)
        self.t.illegal = &illegal_v[0]
        self.t.early = &early_v[0]
        self.t.class_of = &class_v[0]
        self.t.trans = &trans_v[0]
        self.t.actions = &actions_v[0]
        self.t.n_states = n_states
        self.t.n_classes = n_classes
        self.t.n_shards = n_shards
        self.t.shard = shard
        k0, k1, k2, k3 = keys
        self.t.k0, self.t.k1, self.t.k2, self.t.k3 = k0, k1, k2, k3 | 1
        self._hist = np.zeros(n_states, dtype=np.int64)
        cdef int64_t[::1] hist = self._hist
        self.t.hist = &hist[0]
        self._class_counts = np.zeros(n_classes, dtype=np.int64)
        cdef int64_t[::1] class_counts = self._class_counts
        self.t.class_counts = &class_counts[0]
        self.t.free_head = -1
        self.t.ended_capacity = 1 << 62
        self.t.clock_limit = INT64_MAX
        if timeouts is not None:
            timeouts = np.array(timeouts, dtype=np.int64, copy=True).ravel()
            if timeouts.shape[0] != n_states or (timeouts < 0).any():
                raise ValueError(f"timeouts must give every state ({n_states}) a number of "
                                 f"nanoseconds >= 0")
            self._timeout = timeouts
            self.t.timeout = <const int64_t*>cnp.PyArray_DATA(timeouts)
            self._due = np.zeros(0, dtype=np.uint32)
            self.t.wheel.slots = <bucket_t*>calloc(WHEEL_SLOTS, sizeof(bucket_t))
            if self.t.wheel.slots == NULL:
                raise MemoryError("expiry wheel")
        if evict:
            ring = 1 << max(4, (2 * capacity - 1).bit_length())    # see list_for_eviction
            self._evict_ring = np.zeros(ring, dtype=np.uint64)
            self.t.evict_ring = <uint64_t*>cnp.PyArray_DATA(self._evict_ring)
            self.t.evict_capacity = ring
        if flows:
            if ended_capacity < 2:
                raise ValueError("ended_capacity must be at least 2")
            self._ended = np.zeros(ended_capacity,
                                   dtype=CONN4_DTYPE if family == 4 else CONN6_DTYPE)
            self._ended_flows = np.zeros(ended_capacity, dtype=FLOW_STATE_DTYPE)
            self._ended_reason = np.zeros(ended_capacity, dtype=np.uint8)
            self.t.ended = cnp.PyArray_DATA(self._ended)
            self.t.ended_flows = <flow_t*>cnp.PyArray_DATA(self._ended_flows)
            self.t.ended_reason = <uint8_t*>cnp.PyArray_DATA(self._ended_reason)
            self.t.ended_capacity = ended_capacity
            self._flows = np.zeros(0, dtype=FLOW_STATE_DTYPE)
        self._allocate(capacity)

    def __dealloc__(self):
        free_wheel(self.t.wheel.slots)
        self.t.wheel.slots = NULL

    cdef _allocate(self, intp_t capacity):
        """Sizes records and index for `capacity` (keeping live records) and rebuilds the index."""
        dtype = CONN4_DTYPE if self.family == 4 else CONN6_DTYPE
        records = np.zeros(capacity, dtype=dtype)
        if self._records is not None:
            records[: self.t.used] = self._records[: self.t.used]
        nslots = index_slots_for(capacity)
        index = np.zeros(nslots, dtype=np.uint32)
        cdef uint32_t[::1] index_view = index
        self._records = records
        self._index = index
        if self._flows is not None:
            flows = np.zeros(capacity, dtype=FLOW_STATE_DTYPE)
            flows[: self.t.used] = self._flows[: self.t.used]
            self._flows = flows
            self.t.flows = <flow_t*>cnp.PyArray_DATA(flows)
        if self._due is not None:
            due = np.zeros(capacity, dtype=np.uint32)
            due[: self.t.used] = self._due[: self.t.used]
            self._due = due
            self.t.due = <uint32_t*>cnp.PyArray_DATA(due)
        if self._seq is not None:
            seq = np.zeros((capacity, sizeof(seq_t)), dtype=np.uint8)
            seq[: self.t.used] = self._seq[: self.t.used]
            self._seq = seq
            self.t.seq = <seq_t*>cnp.PyArray_DATA(seq)
        if self._evict_ring is not None and len(self._evict_ring) < 2 * capacity:
            self._grow_evict_ring(capacity)
        self.t.index = &index_view[0]
        self.t.nslots = nslots
        self.t.capacity = capacity
        self.t.id_bits = (capacity + SLOT_ID_BIAS).bit_length()
        self.t.id_mask = (1 << self.t.id_bits) - 1
        self.t.tag_mask = (1 << (32 - self.t.id_bits)) - 1
        self.t.max_filled = min(int(nslots * MAX_FILL), nslots - 1)
        self.t.wheel.limit = wheel_bound(&self.t)
        self._rebuild()

    cdef void* _records_ptr(self):
        return cnp.PyArray_DATA(self._records)

    cdef _rebuild(self):
        if self.family == 4:
            rebuild_index(&self.t, <conn4_t*>self._records_ptr())
        else:
            rebuild_index(&self.t, <conn6_t*>self._records_ptr())

    cdef _grow_evict_ring(self, intp_t capacity):
        """A larger ring keeping the listed entries in order."""
        size = 1 << max(4, (2 * capacity - 1).bit_length())
        old = self._evict_ring
        kept = np.roll(old, -(self.t.evict_head % len(old)))[
            : self.t.evict_tail - self.t.evict_head].copy()
        ring = np.zeros(size, dtype=np.uint64)
        ring[: len(kept)] = kept
        self._evict_ring = ring
        self.t.evict_ring = <uint64_t*>cnp.PyArray_DATA(ring)
        self.t.evict_capacity = size
        self.t.evict_head, self.t.evict_tail = 0, len(kept)

    def counters(self):
        """What `restore` needs besides `storage` and `wheel_lists`: records in use, the free
        list's head, the totals, the wheel's position, the eviction ring's."""
        return {"used": self.t.used, "free_head": self.t.free_head,
                "totals": self._counts_dict(&self.totals), "evicting": bool(self.t.evicting),
                "wheel_tick": self.t.wheel.tick, "wheel_started": bool(self.t.wheel.started),
                "evict_head": self.t.evict_head, "evict_tail": self.t.evict_tail}

    def wheel_lists(self):
        """(entries per slot, all entries in slot order): the wheel as arrays, or None."""
        if self._due is None:
            return None
        cdef intp_t i
        lengths = np.array([self.t.wheel.slots[i].len for i in range(WHEEL_SLOTS)],
                           dtype=np.int64)
        entries = np.empty(lengths.sum(), dtype=np.uint32)
        cdef uint32_t[::1] out = entries
        cdef intp_t at = 0
        for i in range(WHEEL_SLOTS):
            if self.t.wheel.slots[i].len:
                memcpy(&out[at], self.t.wheel.slots[i].rids,
                       self.t.wheel.slots[i].len * sizeof(uint32_t))
                at += self.t.wheel.slots[i].len
        return lengths, entries

    def restore(self, records, flows, due, evict_ring, seq, wheel_lists, class_counts,
                dict counters):
        """Takes over saved storage (records, flows, due ticks, eviction ring, sequence state)
        as this table's, without a copy (memory maps will do: writable, contiguous, this
        table's capacity), and the wheel's lists. Rebuilds what derives from them: the count,
        the histogram, the index. The table then goes on exactly as the one saved would have.

        Everything the kernel will trust is checked first, in O(records + index slots + wheel
        and ring entries): dtypes and shapes; that the free list and the live records account
        for every record in use; live records' states, shards, distinct connections, flow and
        sequence states; wheel entries and due ticks; eviction ring entries. A failed check
        raises ValueError naming it and leaves the table as it was.
        """
        dtype = CONN4_DTYPE if self.family == 4 else CONN6_DTYPE
        cdef intp_t used = counters["used"], n_states = self.t.n_states
        cdef int64_t free_head = counters["free_head"]
        shape = (self.t.capacity,)
        if records.dtype != dtype or records.shape != shape:
            raise ValueError(f"records must be {self.t.capacity} rows of the table's record "
                             f"dtype")
        if (self._flows is None) != (flows is None) or (flows is not None and (
                flows.dtype != FLOW_STATE_DTYPE or flows.shape != shape)):
            raise ValueError("flows must match the records, and only with flows kept")
        if not 0 <= used <= self.t.capacity or not -1 <= free_head < used:
            raise ValueError("record counters do not fit the table")
        if (self._due is None) != (due is None) or (due is not None and (
                due.dtype != np.uint32 or due.shape != shape or wheel_lists is None
                or wheel_lists[0].dtype != np.int64 or wheel_lists[0].shape != (WHEEL_SLOTS,)
                or wheel_lists[1].dtype != np.uint32 or wheel_lists[1].ndim != 1
                or (wheel_lists[0] < 0).any() or wheel_lists[0].max() > 0xffffffff
                or wheel_lists[0].sum() != wheel_lists[1].shape[0])):
            raise ValueError("expiry state must match the records (wheel slot lengths >= 0 "
                             "summing to its entries), and only with expiry")
        if (self._evict_ring is None) != (evict_ring is None) or (evict_ring is not None and (
                evict_ring.dtype != np.uint64 or evict_ring.ndim != 1
                or len(evict_ring) < 2 * self.t.capacity
                or len(evict_ring) & (len(evict_ring) - 1)
                or not 0 <= counters["evict_head"] <= counters["evict_tail"]
                <= counters["evict_head"] + len(evict_ring))):
            raise ValueError("the eviction ring must be a power of two, at least twice the "
                             "capacity, with at most its length listed, and only with "
                             "eviction")
        if seq is not None and (seq.dtype != np.uint8
                                or seq.shape != (self.t.capacity, sizeof(seq_t))):
            raise ValueError("sequence state must be uint8 (capacity, record size)")
        for array in (records, flows, due, evict_ring, seq):
            if array is not None and not (array.flags.writeable and array.flags.c_contiguous):
                raise ValueError("saved arrays must be writable and contiguous")
        class_counts = np.asarray(class_counts)
        if (class_counts.dtype != np.int64 or class_counts.shape != (self.t.n_classes,)
                or (class_counts < 0).any()):
            raise ValueError(f"class counts must be {self.t.n_classes} int64 counts >= 0")
        totals = counters["totals"]
        if set(totals) != set(COUNT_NAMES) or not all(0 <= v < 2**63 for v in totals.values()):
            raise ValueError(f"totals must give each of {COUNT_NAMES} as a count >= 0")

        # the structure, checked on scratch copies: nothing of this table changes yet
        marks = np.zeros(used, dtype=np.uint8)
        hist = np.zeros(n_states, dtype=np.int64)
        index = np.zeros(self.t.nslots, dtype=np.uint32)
        cdef table_t scratch = self.t
        scratch.index = <uint32_t*>cnp.PyArray_DATA(index)
        scratch.used, scratch.free_head = used, free_head
        cdef saved_t s
        memset(&s, 0, sizeof(saved_t))
        if flows is not None:
            s.flows = <const flow_t*>cnp.PyArray_DATA(flows)
        if seq is not None:
            s.seq = <const seq_t*>cnp.PyArray_DATA(seq)
        if due is not None:
            lengths, entries = wheel_lists
            entries = np.ascontiguousarray(entries)
            s.due = <const uint32_t*>cnp.PyArray_DATA(due)
            s.wheel_lengths = <const int64_t*>cnp.PyArray_DATA(np.ascontiguousarray(lengths))
            s.wheel_entries = <const uint32_t*>cnp.PyArray_DATA(entries)
            s.n_entries = entries.shape[0]
            s.wheel_tick, s.wheel_started = counters["wheel_tick"], counters["wheel_started"]
        if evict_ring is not None:
            s.ring = <const uint64_t*>cnp.PyArray_DATA(evict_ring)
            s.ring_capacity = len(evict_ring)
            s.ring_head, s.ring_tail = counters["evict_head"], counters["evict_tail"]
        cdef const void* recs = cnp.PyArray_DATA(records)
        cdef uint8_t* marks_p = <uint8_t*>cnp.PyArray_DATA(marks)
        cdef int64_t* hist_p = <int64_t*>cnp.PyArray_DATA(hist)
        cdef int rc
        with nogil:
            if self.family == 4:
                rc = check_saved(&scratch, <const conn4_t*>recs, &s, marks_p, hist_p)
            else:
                rc = check_saved(&scratch, <const conn6_t*>recs, &s, marks_p, hist_p)
        if rc != CK_OK:
            raise ValueError(SAVED_ERRORS[rc])
        cdef bucket_t* slots = NULL
        if due is not None:
            slots = wheel_from_lists(s.wheel_lengths, s.wheel_entries)
            if slots == NULL:
                raise MemoryError("expiry wheel")

        # all checked and allocated: take the storage over (nothing below can fail)
        self._records = records
        self._index = index
        self.t.index = scratch.index
        self.t.used, self.t.free_head = used, free_head
        self.t.count, self.t.tombstones = scratch.count, scratch.tombstones
        self._hist[:] = hist
        self._class_counts[:] = class_counts
        cdef int64_t* total = <int64_t*>&self.totals
        for name, value in totals.items():
            total[COUNT_NAMES.index(name)] = value
        if flows is not None:
            self._flows = flows
            self.t.flows = <flow_t*>cnp.PyArray_DATA(flows)
        if due is not None:
            free_wheel(self.t.wheel.slots)
            self.t.wheel.slots = slots
            self.t.wheel.allocated = s.n_entries     # wheel_from_lists allocates no slack
            self._due = due
            self.t.due = <uint32_t*>cnp.PyArray_DATA(due)
            self.t.wheel.tick, self.t.wheel.started = s.wheel_tick, s.wheel_started
        if seq is not None:
            self._seq = seq
            self.t.seq = <seq_t*>cnp.PyArray_DATA(seq)
        if evict_ring is not None:
            self._evict_ring = evict_ring
            self.t.evict_ring = <uint64_t*>cnp.PyArray_DATA(evict_ring)
            self.t.evict_capacity = s.ring_capacity
            self.t.evict_head, self.t.evict_tail = s.ring_head, s.ring_tail
            self.t.evicting = counters["evicting"]

    def set_clock_limit(self, int64_t limit):
        """The latest time (ns) a full table may expire connections by, before it grows or
        evicts: the tracker's clock. Without it, one forged far-future segment arriving at a
        full table would expire every connection."""
        self.t.clock_limit = limit

    def set_evicting(self, bint evicting):
        """At its bound, a full table with eviction on evicts instead of asking for room."""
        if evicting and self._evict_ring is None:
            raise ValueError("this table was made without eviction")
        self.t.evicting = evicting

    def expire(self, int64_t now):
        """Ends the connections idle past their state's timeout at `now` (ns).

        Looks only at the wheel slots of the ticks up to now: the connections scheduled there,
        expired or listed again at their real deadline. Returns (expired, done): done is False
        when the ended buffer filled up; collect it (take_ended) and call again.
        """
        if self._due is None:
            raise ValueError("this table was made without expiry")
        cdef intp_t expired = 0
        cdef bint done = True
        cdef int rc = 0
        cdef void* recs = self._records_ptr()
        with nogil:
            if self.family == 4:
                rc = expire_wheel(&self.t, <conn4_t*>recs, now, &expired)
            else:
                rc = expire_wheel(&self.t, <conn6_t*>recs, now, &expired)
        if rc < 0:
            raise MemoryError("expiry wheel")
        self.totals.expired += expired
        return expired, rc == 0

    def resize(self, intp_t capacity):
        """Reallocates for `capacity` records (>= the records in use) and rehashes.

        Record indices stay valid; numpy views taken earlier keep showing the old storage.
        """
        if not self.t.used <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be between {self.t.used} and {MAX_CAPACITY}")
        self._allocate(capacity)

    def compact_index(self):
        """Drops tombstones by rebuilding the index in place."""
        self._rebuild()

    def enable_sequence(self):
        """Keeps sequence state from now on (connections already tracked start unseen, and
        are taken liberally until both sides have been seen with sequence numbers)."""
        if self._seq is None:
            self._seq = np.zeros((self.t.capacity, sizeof(seq_t)), dtype=np.uint8)
            self.t.seq = <seq_t*>cnp.PyArray_DATA(self._seq)

    @property
    def sequence_aware(self):
        return self._seq is not None

    cdef events_t _events(self, ts, src, sport, dst, dport, flags, length):
        cdef events_t ev
        cdef const int64_t[::1] ts_v = ts
        cdef const uint16_t[::1] sport_v = sport
        cdef const uint16_t[::1] dport_v = dport
        cdef const uint8_t[::1] flags_v = flags
        cdef const uint32_t[::1] length_v = length
        cdef const uint32_t[::1] src4, dst4
        cdef const uint64_t[:, ::1] src6, dst6
        memset(&ev, 0, sizeof(events_t))
        if ts_v.shape[0] == 0:
            return ev
        ev.ts = &ts_v[0]
        ev.sport = &sport_v[0]
        ev.dport = &dport_v[0]
        ev.flags = &flags_v[0]
        ev.length = &length_v[0]
        if self.family == 4:
            src4, dst4 = src, dst
            ev.src4 = &src4[0]
            ev.dst4 = &dst4[0]
        else:
            src6, dst6 = src, dst
            ev.src6 = <const addr6_t*>&src6[0, 0]
            ev.dst6 = <const addr6_t*>&dst6[0, 0]
        return ev

    def update(self, ts, src, sport, dst, dport, flags, length, intp_t start,
               int64_t[::1] out_conn=None, uint8_t[::1] out_state=None,
               uint8_t[::1] out_verdict=None, const intp_t[::1] order=None,
               const uint64_t[::1] hashes=None, sequence=None):
        """Applies the events at positions [start, n) of validated, contiguous columns.

        With `order` (from `partition`), position k is event order[k] and n = len(order);
        `hashes` then gives every event's hash so it is not computed again. Returns
        (stop, counts): stop < n means the table needs room (resize or compaction) or its
        ended buffer collecting (`ended_full`) before position `stop`; counts holds what the
        applied events did. Arrays must stay alive during the call,
        which the caller's references guarantee.
        """
        cdef intp_t n = len(ts)
        cdef events_t ev = self._events(ts, src, sport, dst, dport, flags, length)
        cdef counts_t cnt
        cdef intp_t stop = start
        cdef const uint32_t[::1] seq_v, ack_v
        cdef const uint16_t[::1] window_v
        cdef const int8_t[::1] wscale_v
        if sequence is not None and n > 0:
            seq_v, ack_v, window_v, wscale_v = sequence
            if not (seq_v.shape[0] == ack_v.shape[0] == window_v.shape[0] == wscale_v.shape[0]
                    == n):
                raise ValueError("sequence columns must match the batch in length")
            self.enable_sequence()
            ev.seq, ev.ack, ev.window, ev.wscale = &seq_v[0], &ack_v[0], &window_v[0], \
                &wscale_v[0]
        cdef int64_t* conn_p = NULL
        cdef uint8_t* state_p = NULL
        cdef uint8_t* verdict_p = NULL
        cdef void* recs = self._records_ptr()
        memset(&cnt, 0, sizeof(counts_t))
        if out_conn is not None and n > 0:
            conn_p, state_p, verdict_p = &out_conn[0], &out_state[0], &out_verdict[0]
        n = _set_walk(&ev, n, order, hashes)
        cdef int rc = RC_DONE
        if start < n:
            with nogil:
                if self.family == 4 and ev.order == NULL:
                    rc = apply_batch(&self.t, <conn4_t*>recs, &ev, <walk_all_t*>NULL, start, n,
                                     conn_p, state_p, verdict_p, &cnt, &stop)
                elif self.family == 4:
                    rc = apply_batch(&self.t, <conn4_t*>recs, &ev, <walk_ordered_t*>NULL, start,
                                     n, conn_p, state_p, verdict_p, &cnt, &stop)
                elif ev.order == NULL:
                    rc = apply_batch(&self.t, <conn6_t*>recs, &ev, <walk_all_t*>NULL, start, n,
                                     conn_p, state_p, verdict_p, &cnt, &stop)
                else:
                    rc = apply_batch(&self.t, <conn6_t*>recs, &ev, <walk_ordered_t*>NULL, start,
                                     n, conn_p, state_p, verdict_p, &cnt, &stop)
        self._add_totals(&cnt)
        if rc == RC_NO_MEMORY:
            raise MemoryError(f"expiry wheel: events before {stop} were applied")
        return stop, self._counts_dict(&cnt)

    def partition(self, ts, src, sport, dst, dport, flags, length, intp_t lo, intp_t hi,
                  uint64_t[::1] out_hash, intp_t[:, ::1] out_order):
        """Hashes events [lo, hi) and sorts their indices by shard, keeping their order.

        Writes each event's hash to out_hash[i] and the indices of shard s's events to
        out_order[s, :count[s]]; returns the counts. Without branches on the shard, so the
        split costs the same whatever the traffic.
        """
        cdef intp_t n = len(ts)
        if not 0 <= lo <= hi <= n or out_hash.shape[0] != n:
            raise ValueError("event range or hash array does not match the batch")
        if out_order.shape[0] != self.t.n_shards or out_order.shape[1] < hi - lo:
            raise ValueError("out_order must have one row per shard, as long as the range")
        cdef events_t ev = self._events(ts, src, sport, dst, dport, flags, length)
        cdef intp_t counts[MAX_SHARDS]
        cdef intp_t i, s
        cdef uint64_t h
        cdef uint32_t mask = self.t.n_shards - 1
        memset(counts, 0, sizeof(counts))
        with nogil:
            for i in range(lo, hi):
                if self.family == 4:
                    h = event_hash(&self.t, <conn4_t*>NULL, &ev, i)
                else:
                    h = event_hash(&self.t, <conn6_t*>NULL, &ev, i)
                out_hash[i] = h
                s = (h >> SHARD_SHIFT) & mask
                out_order[s, counts[s]] = i
                counts[s] += 1
        return [counts[s] for s in range(self.t.n_shards)]

    cdef void _add_totals(self, const counts_t* cnt):
        cdef int64_t* total = <int64_t*>&self.totals
        cdef const int64_t* add = <const int64_t*>cnt
        cdef intp_t k
        for k in range(len(COUNT_NAMES)):
            total[k] += add[k]

    cdef dict _counts_dict(self, const counts_t* cnt):
        cdef const int64_t* value = <const int64_t*>cnt
        return {name: value[k] for k, name in enumerate(COUNT_NAMES)}

    def lookup(self, src, sport, dst, dport, int64_t[::1] out_conn, uint8_t[::1] out_state,
               uint8_t[::1] out_dir, const intp_t[::1] order=None,
               const uint64_t[::1] hashes=None):
        """Fills the outputs for the keys (all, or those `order` lists), conn -1 if absent.

        Other keys are left as they are, so shards can fill one set of arrays.
        """
        cdef intp_t n = len(sport)
        if out_conn.shape[0] != n or out_state.shape[0] != n or out_dir.shape[0] != n:
            raise ValueError("output arrays must match the keys in length")
        if n == 0:
            return
        zeros64 = np.zeros(n, dtype=np.int64)
        zeros8 = np.zeros(n, dtype=np.uint8)
        zeros32 = np.zeros(n, dtype=np.uint32)
        cdef events_t ev = self._events(zeros64, src, sport, dst, dport, zeros8, zeros32)
        cdef void* recs = self._records_ptr()
        n = _set_walk(&ev, n, order, hashes)
        with nogil:
            if self.family == 4 and ev.order == NULL:
                lookup_batch(&self.t, <conn4_t*>recs, &ev, <walk_all_t*>NULL, n, &out_conn[0],
                             &out_state[0], &out_dir[0])
            elif self.family == 4:
                lookup_batch(&self.t, <conn4_t*>recs, &ev, <walk_ordered_t*>NULL, n,
                             &out_conn[0], &out_state[0], &out_dir[0])
            elif ev.order == NULL:
                lookup_batch(&self.t, <conn6_t*>recs, &ev, <walk_all_t*>NULL, n, &out_conn[0],
                             &out_state[0], &out_dir[0])
            else:
                lookup_batch(&self.t, <conn6_t*>recs, &ev, <walk_ordered_t*>NULL, n,
                             &out_conn[0], &out_state[0], &out_dir[0])

    cdef int _one_event(self, one_event_t* one, src, uint16_t sport, dst,
                        uint16_t dport) except -1:
        """Points one.ev at a single event held in *one (ints for IPv4, 16 bytes for IPv6)."""
        memset(one, 0, sizeof(one_event_t))
        one.sport, one.dport = sport, dport
        one.ev.ts, one.ev.flags, one.ev.length = &one.ts, &one.flags, &one.length
        one.ev.sport, one.ev.dport = &one.sport, &one.dport
        if self.family == 4:
            one.src4, one.dst4 = src, dst
            one.ev.src4, one.ev.dst4 = &one.src4, &one.dst4
        else:
            if len(src) != 16 or len(dst) != 16:
                raise ValueError("IPv6 addresses are 16 bytes")
            memcpy(&one.src6, <const char*>src, 16)
            memcpy(&one.dst6, <const char*>dst, 16)
            one.ev.src6, one.ev.dst6 = &one.src6, &one.dst6
        return 0

    cdef uint64_t _hash_one(self, const one_event_t* one):
        if self.family == 4:
            return event_hash(&self.t, <conn4_t*>NULL, &one.ev, 0)
        return event_hash(&self.t, <conn6_t*>NULL, &one.ev, 0)

    def find_one(self, src, uint16_t sport, dst, uint16_t dport):
        """(record index, direction) of one connection, or (-1, 0).

        src and dst are ints for IPv4 and 16-byte strings for IPv6.
        """
        cdef one_event_t one
        cdef uint64_t pos, h
        cdef int64_t first_tomb
        cdef int d = 0
        cdef intp_t rid
        cdef probe_t ix = probe_fields(&self.t)
        self._one_event(&one, src, sport, dst, dport)
        h = self._hash_one(&one)
        pos = fastrange(h, ix.nslots)
        first_tomb = -1
        if self.family == 4:
            rid = find(ix, <conn4_t*>self._records_ptr(), &one.ev, 0, h, &pos, &first_tomb, &d)
        else:
            rid = find(ix, <conn6_t*>self._records_ptr(), &one.ev, 0, h, &pos, &first_tomb, &d)
        if rid < 0 or not in_shard(&self.t, h):
            return -1, 0
        return rid * self.t.n_shards + self.t.shard, d

    def _home_and_tag(self, src, uint16_t sport, dst, uint16_t dport):
        """Test hook: (home slot, hash tag) of a key under this table's hash key and size."""
        cdef one_event_t one
        self._one_event(&one, src, sport, dst, dport)
        cdef uint64_t h = self._hash_one(&one)
        return fastrange(h, self.t.nslots), (h >> 32) & self.t.tag_mask

    def record_values(self, intp_t conn):
        """The fields of the record `find_one` named `conn`, in CONN4_DTYPE / CONN6_DTYPE order.

        Addresses come out as ints (IPv4) or 16-byte strings (IPv6).
        """
        if conn % self.t.n_shards != self.t.shard:
            raise IndexError(f"record {conn} belongs to another shard")
        cdef intp_t rid = conn // self.t.n_shards
        if not 0 <= rid < self.t.used:
            raise IndexError(f"record {rid} is not in use")
        cdef conn4_t* c4
        cdef conn6_t* c6
        if self.family == 4:
            c4 = &(<conn4_t*>self._records_ptr())[rid]
            return (c4.orig_h, c4.resp_h, c4.orig_p, c4.resp_p, c4.state, c4.status,
                    c4.orig_flags, c4.resp_flags, c4.orig_pkts, c4.resp_pkts, c4.orig_bytes,
                    c4.resp_bytes, c4.first_ts, c4.last_ts)
        c6 = &(<conn6_t*>self._records_ptr())[rid]
        return ((<char*>&c6.orig_h)[:16], (<char*>&c6.resp_h)[:16], c6.orig_p, c6.resp_p,
                c6.state, c6.status, c6.orig_flags, c6.resp_flags, c6.orig_pkts, c6.resp_pkts,
                c6.orig_bytes, c6.resp_bytes, c6.first_ts, c6.last_ts)

    def probe_lengths(self):
        """int64 array over records in use: slots examined to find each live one (0 = free record)."""
        out = np.zeros(self.t.used, dtype=np.int64)
        if self.t.used == 0:
            return out
        cdef int64_t[::1] o = out
        if self.family == 4:
            probe_lengths(&self.t, <conn4_t*>self._records_ptr(), &o[0])
        else:
            probe_lengths(&self.t, <conn6_t*>self._records_ptr(), &o[0])
        return out

    @property
    def storage(self):
        """(records, flows, due ticks, eviction ring, sequence state), None where not kept:
        the whole arrays the table owns, for snapshots."""
        return self._records, self._flows, self._due, self._evict_ring, self._seq

    @property
    def records(self):
        """Read-only view of the records in use (free ones have status 0). No copy."""
        view = self._records[: self.t.used]
        view.flags.writeable = False
        return view

    @property
    def flows(self):
        """Read-only view (FLOW_STATE_DTYPE) beside `records`; empty without flows."""
        if self._flows is None:
            return np.zeros(0, dtype=FLOW_STATE_DTYPE)
        view = self._flows[: self.t.used]
        view.flags.writeable = False
        return view

    @property
    def ended_full(self):
        """True when the ended-connection buffer must be collected before updating on."""
        return self.t.n_ended + 2 > self.t.ended_capacity

    def take_ended(self):
        """(records, flows, reasons) of the connections that ended since the last call (closed
        by the model, expired, evicted), oldest first, as copies; empties the buffer. Without
        flows: three empty arrays."""
        if self._ended is None:
            return (np.zeros(0, dtype=CONN4_DTYPE if self.family == 4 else CONN6_DTYPE),
                    np.zeros(0, dtype=FLOW_STATE_DTYPE), np.zeros(0, dtype=np.uint8))
        n = self.t.n_ended
        self.t.n_ended = 0
        return (self._ended[:n].copy(), self._ended_flows[:n].copy(),
                self._ended_reason[:n].copy())

    @property
    def histogram(self):
        """Read-only int64 view: live connections per state code."""
        view = self._hist[:]
        view.flags.writeable = False
        return view

    @property
    def class_counts(self):
        """Read-only int64 view: segments seen per flag class code."""
        view = self._class_counts[:]
        view.flags.writeable = False
        return view

    @property
    def totals(self):
        return self._counts_dict(&self.totals)

    def __len__(self):
        return self.t.count

    @property
    def capacity(self):
        return self.t.capacity

    @property
    def tombstones(self):
        return self.t.tombstones

    @property
    def needs_compaction(self):
        """True when tombstones, not live records, are what fills the index."""
        return self.t.count + self.t.tombstones >= self.t.max_filled and \
            self.t.count < self.t.capacity

    @property
    def nbytes_records(self):
        return self._records.nbytes

    @property
    def nbytes_index(self):
        return self._index.nbytes

    @property
    def nbytes_expiry(self):
        """The per-record due ticks and the wheel: slot headers and the entries allocated."""
        if self._due is None:
            return 0
        return (self._due.nbytes + WHEEL_SLOTS * sizeof(bucket_t)
                + self.t.wheel.allocated * sizeof(uint32_t))

    @property
    def max_nbytes_expiry(self):
        """The most nbytes_expiry can reach at this capacity, whatever the traffic: due
        ticks, slot headers, and entries. The entries are compacted back under wheel_bound
        after every event and every slot expire walks; between two such points each slot can
        at most double (and get its first 16), and the pushes are bounded by what is listed,
        so they stay under 4 * wheel_bound + 16 per slot."""
        if self._due is None:
            return 0
        return (self._due.nbytes + WHEEL_SLOTS * sizeof(bucket_t)
                + (4 * wheel_bound(&self.t) + 16 * WHEEL_SLOTS) * sizeof(uint32_t))

    @property
    def nbytes_sequence(self):
        """Sequence state beside the records (allocated by the first sequence-aware batch)."""
        return 0 if self._seq is None else self._seq.nbytes

    @property
    def nbytes_flows(self):
        """Flow states beside the records, and the ended-connection buffer."""
        if self._flows is None:
            return 0
        return (self._flows.nbytes + self._ended.nbytes + self._ended_flows.nbytes
                + self._ended_reason.nbytes)

    @property
    def nbytes_eviction(self):
        return 0 if self._evict_ring is None else self._evict_ring.nbytes

    @property
    def ended_count(self):
        """Connections in the ended buffer, awaiting `take_ended`."""
        return self.t.n_ended

    @property
    def expire_from(self):
        """The earliest `now` (ns) at which `expire` can do anything: the start of the first
        tick the wheel has not wholly processed (2**63 - 1 without expiry or before the wheel
        starts). An earlier `expire` returns (0, True) at once."""
        if self._due is None or not self.t.wheel.started:
            return INT64_MAX
        return self.t.wheel.tick * TICK_NS


cdef class EventClock:
    """The time segments say it is, believed only as far as they agree.

    Timestamps move the clock forward (never back). A segment more than `max_jump` ns ahead of
    the clock is suspect: it moves nothing, unless `confirm` consecutive segments are all that
    far ahead, as after a genuine gap in a capture, where every later packet is later. The
    clock then moves to the earliest of them, so one forged far-future segment among them
    cannot carry it further. `max_jump` < 0 follows every timestamp.
    """
    cdef readonly int64_t now         # ns; meaningful once `started`
    cdef readonly bint started
    cdef readonly int64_t max_jump
    cdef readonly intp_t confirm
    cdef readonly int64_t suspect     # segments that arrived beyond max_jump
    cdef readonly int64_t jumps       # jumps beyond max_jump followed, once confirmed
    cdef intp_t run                   # consecutive suspect segments so far
    cdef int64_t run_min              # the earliest of them

    def __cinit__(self, int64_t max_jump, intp_t confirm):
        if confirm < 1:
            raise ValueError(f"confirm must be at least 1, not {confirm}")
        self.max_jump, self.confirm = max_jump, confirm

    def advance(self, const int64_t[::1] ts):
        """Takes a batch's timestamps, in order (each >= 0). Returns the clock."""
        cdef intp_t i, n = ts.shape[0]
        cdef int64_t t
        # in locals, so that the loop keeps them in registers
        cdef int64_t now = self.now, max_jump = self.max_jump, run_min = self.run_min
        cdef int64_t suspect = self.suspect, jumps = self.jumps
        cdef intp_t run = self.run, confirm = self.confirm
        cdef bint started = self.started
        with nogil:
            for i in range(n):
                t = ts[i]
                if not started or max_jump < 0:
                    started = True
                    if t > now:
                        now = t
                elif t - now <= max_jump:
                    run = 0
                    if t > now:
                        now = t
                else:
                    suspect += 1
                    if run == 0 or t < run_min:
                        run_min = t
                    run += 1
                    if run >= confirm:
                        now = run_min
                        run = 0
                        jumps += 1
        self.now, self.started, self.run, self.run_min = now, started, run, run_min
        self.suspect, self.jumps = suspect, jumps
        return now

    def state(self):
        """Everything `restore` needs, as a dict of ints."""
        return {"now": self.now, "started": int(self.started), "suspect": self.suspect,
                "jumps": self.jumps, "run": self.run, "run_min": self.run_min}

    def restore(self, dict state):
        """Takes a `state()` back (checked: a clock that cannot have been)."""
        now, started, run = state["now"], state["started"], state["run"]
        run_min, suspect, jumps = state["run_min"], state["suspect"], state["jumps"]
        if not (0 <= now and started in (0, 1) and 0 <= run < self.confirm and run_min >= 0
                and 0 <= jumps <= suspect):
            raise ValueError(f"inconsistent clock state {state!r}")
        self.now, self.started, self.run, self.run_min = now, started, run, run_min
        self.suspect, self.jumps = suspect, jumps
