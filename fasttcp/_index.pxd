# The hash index part: open-addressing uint32 slots over the records, each holding a hash tag
# above the record index + 2; probing, tag walks for the prefetch stage, and rebuilding.
from libc.string cimport memset

from fasttcp._records cimport (FT_PREFETCH, S_ALIVE, conn_t, events_t, hash_key_t,
                               match_direction, record_hash)
from fasttcp._typedefs cimport int64_t, intp_t, uint32_t, uint64_t

cdef enum:
    SLOT_EMPTY = 0
    SLOT_TOMB = 1
    SLOT_ID_BIAS = 2     # a slot holds record index + 2 in its low bits


cdef struct index_t:
    uint32_t* slots             # open-addressing slots: 0 empty, 1 tombstone, else tag|record+2
    uint64_t nslots
    uint32_t id_bits            # low bits of a slot hold record index + 2, the rest a hash tag
    uint32_t id_mask
    uint32_t tag_mask
    intp_t tombstones
    intp_t max_filled           # count + tombstones may not exceed this (probes stay short)
    uint64_t slot_changes       # slots written by the kernel so far (see probe_start)


cdef struct probe_t:
    # The index fields a probe reads, copied out of index_t into a local so the compiler
    # knows stores into records and the histogram cannot change them.
    const uint32_t* index       # index_t.slots
    uint64_t nslots             # and the rest as in index_t
    uint32_t id_bits
    uint32_t id_mask
    uint32_t tag_mask


cdef inline uint64_t fastrange(uint64_t h, uint64_t n) noexcept nogil:
    # Maps the low 32 hash bits onto [0, n) without a division (Lemire's multiply-shift).
    return ((h & 0xffffffffu) * n) >> 32


cdef inline uint32_t hash_tag(uint64_t h, uint32_t tag_mask) noexcept nogil:
    # the high half of the hash; the low half picks the home slot (fastrange)
    return <uint32_t>(h >> 32) & tag_mask


cdef inline uint32_t make_slot(uint64_t h, uint32_t tag_mask, uint32_t id_bits,
                               intp_t rid) noexcept nogil:
    """The index slot of record `rid` with hash h: its tag above, record index + 2 below."""
    return (hash_tag(h, tag_mask) << id_bits) | <uint32_t>(rid + SLOT_ID_BIAS)


cdef inline probe_t probe_fields(const index_t* x) noexcept nogil:
    cdef probe_t ix
    ix.index, ix.nslots, ix.id_bits, ix.id_mask, ix.tag_mask = \
        x.slots, x.nslots, x.id_bits, x.id_mask, x.tag_mask
    return ix


cdef inline intp_t slot_record(probe_t ix, uint32_t slot) noexcept nogil:
    """The record a slot holding one (slot >= SLOT_ID_BIAS) names."""
    return <intp_t>(slot & ix.id_mask) - SLOT_ID_BIAS


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
            rid = slot_record(ix, slot)
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
            c = &recs[slot_record(ix, slot)]
            FT_PREFETCH(c)
            # records are not line-aligned: fetch the line holding the last byte too
            FT_PREFETCH((<const char*>c) + sizeof(conn_t) - 1)
            return p
        p += 1
        if p == ix.nslots:
            p = 0
        slot = ix.index[p]
    return p


cdef inline void index_insert(index_t* x, uint64_t pos, bint at_tomb, uint64_t h,
                              intp_t rid) noexcept nogil:
    """Writes record rid (hash h) into slot pos, a tombstone if at_tomb, else an empty one."""
    if at_tomb:
        x.tombstones -= 1
    x.slots[pos] = make_slot(h, x.tag_mask, x.id_bits, rid)
    x.slot_changes += 1


cdef inline void index_remove(index_t* x, uint64_t pos) noexcept nogil:
    x.slots[pos] = SLOT_TOMB
    x.tombstones += 1
    x.slot_changes += 1


cdef inline uint64_t slot_of(const index_t* x, const hash_key_t* key, const conn_t* recs,
                             intp_t rid) noexcept nogil:
    """The index slot holding record rid (a live record)."""
    cdef uint64_t p = fastrange(record_hash(key, &recs[rid]), x.nslots)
    cdef uint32_t want = <uint32_t>(rid + SLOT_ID_BIAS)
    while (x.slots[p] & x.id_mask) != want or x.slots[p] < SLOT_ID_BIAS:
        p += 1
        if p == x.nslots:
            p = 0
    return p


cdef inline void rebuild_index(index_t* x, const hash_key_t* key, const conn_t* recs,
                               intp_t used) noexcept nogil:
    """Re-inserts every live record into an empty index (after growth, or to drop tombstones)."""
    cdef intp_t rid
    cdef uint64_t h, p
    memset(x.slots, 0, x.nslots * sizeof(uint32_t))
    x.tombstones = 0
    for rid in range(used):
        if recs[rid].status & S_ALIVE:
            h = record_hash(key, &recs[rid])
            p = fastrange(h, x.nslots)
            while x.slots[p] != SLOT_EMPTY:
                p += 1
                if p == x.nslots:
                    p = 0
            x.slots[p] = make_slot(h, x.tag_mask, x.id_bits, rid)


cdef inline void probe_lengths(const index_t* x, const hash_key_t* key, const conn_t* recs,
                               intp_t used, int64_t* out) noexcept nogil:
    """Slots examined to find each live record (1 = found in its home slot), by record index."""
    cdef intp_t rid
    cdef uint64_t h, p
    cdef uint32_t want
    cdef int64_t length
    for rid in range(used):
        out[rid] = 0
        if not (recs[rid].status & S_ALIVE):
            continue
        h = record_hash(key, &recs[rid])
        p = fastrange(h, x.nslots)
        want = <uint32_t>(rid + SLOT_ID_BIAS)
        length = 1
        while (x.slots[p] & x.id_mask) != want and <uint64_t>length <= x.nslots:
            p += 1
            length += 1
            if p == x.nslots:
                p = 0
        out[rid] = length


cdef inline void index_size(index_t* x, uint32_t* slots, uint64_t nslots, intp_t capacity,
                            double max_fill) noexcept nogil:
    """Points the index at `nslots` fresh slots for `capacity` records (rebuild_index fills
    them): as many low bits as record index + 2 needs, the rest for the tag."""
    cdef uint64_t filled = <uint64_t>(nslots * max_fill)
    x.slots = slots
    x.nslots = nslots
    x.id_bits = 0
    while (<uint64_t>1 << x.id_bits) <= <uint64_t>(capacity + SLOT_ID_BIAS):
        x.id_bits += 1
    x.id_mask = (1u << x.id_bits) - 1
    x.tag_mask = (1u << (32 - x.id_bits)) - 1
    x.max_filled = <intp_t>(filled if filled < nslots - 1 else nslots - 1)


cdef inline intp_t index_nbytes(const index_t* x) noexcept nogil:
    return <intp_t>(x.nslots * sizeof(uint32_t))
