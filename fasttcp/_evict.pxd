# The eviction part: new connections in a ring, oldest first, for conntrack's early drop (a
# half-open connection goes before any established one when a table at its bound is full).
from fasttcp._records cimport S_ALIVE, S_REPLIED, conn_t
from fasttcp._typedefs cimport intp_t, uint32_t, uint64_t


cdef struct evict_t:
    bint enabled                # the table was made with eviction (the ring exists)
    uint64_t* ring              # new connections, oldest first: record | first_ts low bits << 32
    intp_t head                 # next entry to look at (monotonic; the ring wraps)
    intp_t tail
    intp_t capacity             # a power of two
    bint evicting               # the table is at its bound: a full table evicts


cdef inline void evict_attach(evict_t* e, void* ring, intp_t capacity) noexcept nogil:
    """Points the part at its ring of `capacity` entries (NULL: no eviction)."""
    e.ring = <uint64_t*>ring
    e.capacity = capacity
    e.enabled = ring != NULL


cdef inline intp_t evict_nbytes(const evict_t* e) noexcept nogil:
    return e.capacity * <intp_t>sizeof(uint64_t) if e.enabled else 0


cdef inline intp_t ring_size_for(intp_t capacity) noexcept nogil:
    """Ring entries for `capacity` records: a power of two, at least twice the capacity (see
    list_for_eviction) and 16."""
    cdef intp_t size = 16
    while size < 2 * capacity:
        size *= 2
    return size


cdef inline bint evictable(const conn_t* c, uint64_t entry) noexcept nogil:
    # still the connection listed (same first timestamp), and never answered
    return ((c.status & S_ALIVE) and not (c.status & S_REPLIED)
            and (<uint32_t>(entry >> 32)) == <uint32_t>(<uint64_t>c.first_ts))


cdef inline intp_t evict_next(evict_t* e, const conn_t* recs, intp_t used) noexcept nogil:
    """Takes the oldest listed connection that never got an answer off the ring; returns it,
    or -1 when there is none."""
    cdef uint64_t entry
    cdef intp_t rid
    while e.head < e.tail:
        entry = e.ring[e.head & (e.capacity - 1)]
        e.head += 1
        rid = <intp_t>(entry & 0xffffffffu)
        if rid < used and evictable(&recs[rid], entry):
            return rid
    return -1


cdef inline void list_for_eviction(evict_t* e, const conn_t* recs, intp_t used,
                                   intp_t rid) noexcept nogil:
    """Lists a new connection last in the eviction ring. A full ring first drops its stale
    entries (connections gone, answered, or reopened since): it is twice the table's
    capacity, so that frees half of it at least and no live candidate is ever lost."""
    cdef intp_t mask = e.capacity - 1, read, write
    cdef uint64_t entry
    if not e.enabled:
        return
    if e.tail - e.head == e.capacity:
        write = e.head
        for read in range(e.head, e.tail):
            entry = e.ring[read & mask]
            if <intp_t>(entry & 0xffffffffu) < used and \
                    evictable(&recs[<intp_t>(entry & 0xffffffffu)], entry):
                e.ring[write & mask] = entry
                write += 1
        e.tail = write
    e.ring[e.tail & mask] = (<uint64_t>rid) | ((<uint64_t>recs[rid].first_ts) << 32)
    e.tail += 1


# An eviction ring as a snapshot holds it, for ring_saved_ok.
cdef struct ring_saved_t:
    const uint64_t* ring        # capacity entries, a power of two (NULL: no eviction kept)
    intp_t capacity
    intp_t head                 # 0 <= head <= tail <= head + capacity (checked before)
    intp_t tail


cdef inline bint ring_saved_ok(const ring_saved_t* s, intp_t used) noexcept nogil:
    """Every listed entry names a record in use (evict_next and list_for_eviction read it)."""
    cdef intp_t k
    for k in range(s.head, s.tail):
        if <intp_t>(s.ring[k & (s.capacity - 1)] & 0xffffffffu) >= used:
            return False
    return True
