# The prefetch stage of the batch kernel: software pipelining over the events. The hash of event
# i+HASH_AHEAD is computed and its index slot prefetched; the probe of event i+RECORD_AHEAD is
# walked by hash tag, and the matching record and every part kept beside it prefetched; then
# event i is applied (apply_batch, in _engine.pyx), starting its probe where the walk stopped
# if no slot has changed since.
from fasttcp._engine cimport table_t
from fasttcp._flows cimport flow_at, flow_t
from fasttcp._index cimport SLOT_ID_BIAS, fastrange, probe_t, walk_tags
from fasttcp._records cimport FT_PREFETCH, FT_PREFETCH_SPAN, conn_t, event_hash, events_t
from fasttcp._sequence cimport seq_at, seq_t
from fasttcp._typedefs cimport int64_t, intp_t, uint32_t, uint64_t

cdef enum:
    HASH_AHEAD = 32      # events between hashing (and prefetching the slot) and applying
    RECORD_AHEAD = 16     # events between reading the slot (prefetching the record) and applying
    RING = 64             # power of two > HASH_AHEAD


cdef struct ring_t:
    # What the stages ahead found out about the events before the one being applied.
    uint64_t hash[RING]
    uint64_t home[RING]          # home slot
    uint64_t walked[RING]        # where walk_tags stopped
    uint64_t walked_at[RING]     # table_t.slot_changes when it did
    int64_t tomb[RING]           # first tombstone the walk passed, -1 if none


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
        h = event_hash(&t.records.key, recs, ev, i)
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
    ring.walked_at[k] = t.index.slot_changes
    if slot >= SLOT_ID_BIAS:
        # walk_tags fetched the matched record; the parts read with it for every segment are
        # fetched too, or each segment waits for them from memory. (Here, in a function with
        # side effects: see FT_PREFETCH_SPAN.) The expiry part's due tick is not: it is read
        # only when a segment changes the state, and a line more per segment costs more.
        rid = <intp_t>(slot & ix.id_mask) - SLOT_ID_BIAS
        if t.seq.enabled:
            FT_PREFETCH_SPAN(seq_at(&t.seq, rid), sizeof(seq_t))
        if t.flows.enabled:
            FT_PREFETCH_SPAN(flow_at(&t.flows, rid), sizeof(flow_t))


cdef inline uint64_t probe_start(const ring_t* ring, const table_t* t, intp_t i,
                                 int64_t* first_tomb) noexcept nogil:
    # The walk's result holds while no slot has changed since; slots before it hold no tag
    # match, so the probe may start there. Otherwise start over from home.
    cdef intp_t k = i & (RING - 1)
    if ring.walked_at[k] == t.index.slot_changes:
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
