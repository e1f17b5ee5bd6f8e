# The expiry part: a timer wheel of one-second ticks. Each live connection is listed in the slot
# of its scheduled tick (`due`); the wheel looks at a connection only then, and either expires
# it or lists it again at its real deadline, which activity since may have moved (lazily: a
# segment costs the wheel nothing unless it shortens the deadline).
from cpython.mem cimport PyMem_RawCalloc, PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from libc.stdint cimport INT64_MAX, int32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from fasttcp._records cimport S_ALIVE, conn_t
from fasttcp._typedefs cimport int64_t, intp_t, uint8_t, uint32_t

cdef enum:
    WHEEL_SLOTS = 4096   # one revolution: 68 minutes of one-second ticks
    WHEEL_MASK = WHEEL_SLOTS - 1
    TICK_NS = 1_000_000_000
    WHEEL_ENTRIES_PER_RECORD = 4   # see wheel_bound
    WHEEL_MIN_ENTRIES = 4 * WHEEL_SLOTS


cdef struct bucket_t:
    uint32_t* rids              # records listed in this slot (some stale: checked on visit)
    uint32_t len
    uint32_t cap

cdef struct wheel_t:
    bucket_t* slots             # WHEEL_SLOTS of them
    int64_t tick                # the first tick not yet wholly processed
    bint started                # tick is set (by the first connection scheduled)
    intp_t allocated            # entries allocated over all slots
    intp_t limit                # past this many, the wheel is compacted (wheel_bound)


cdef struct expiry_t:
    bint enabled                # connections expire (the tracker has timeouts)
    uint32_t* due               # per record: the tick its expiry check is scheduled at,
                                # modulo 2**32 (always within one revolution of wheel.tick)
    const int64_t* timeout      # per state: idle time (ns) after which a connection expires
    wheel_t wheel
    int64_t clock_limit         # a full table expires by a segment's time, at most this (ns)
    int64_t expired_to          # the latest time (ns) connections have been expired by: never
                                # less than the tracker's, so a late segment expires no less


cdef inline void expiry_attach(expiry_t* x, void* due) noexcept nogil:
    """Points the part at its per-record due ticks (NULL: connections never expire)."""
    x.due = <uint32_t*>due
    x.enabled = due != NULL


cdef inline intp_t expiry_nbytes(const expiry_t* x, intp_t capacity) noexcept nogil:
    """The per-record due ticks and the wheel: slot headers and the entries allocated."""
    if not x.enabled:
        return 0
    return (capacity * <intp_t>sizeof(uint32_t) + WHEEL_SLOTS * <intp_t>sizeof(bucket_t)
            + x.wheel.allocated * <intp_t>sizeof(uint32_t))


cdef inline intp_t expiry_max_nbytes(const expiry_t* x, intp_t capacity) noexcept nogil:
    """The most expiry_nbytes can reach at this capacity, whatever the traffic: due ticks,
    slot headers, and entries. The entries are compacted back under wheel_bound after every
    event and every slot expire walks; between two such points each slot can at most double
    (and get its first 16), and the pushes are bounded by what is listed, so they stay under
    4 * wheel_bound + 16 per slot."""
    if not x.enabled:
        return 0
    return (capacity * <intp_t>sizeof(uint32_t) + WHEEL_SLOTS * <intp_t>sizeof(bucket_t)
            + (4 * wheel_bound(capacity) + 16 * WHEEL_SLOTS) * <intp_t>sizeof(uint32_t))


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


cdef inline intp_t wheel_bound(intp_t capacity) noexcept nogil:
    """Entries the wheel may allocate before compact_wheel: WHEEL_ENTRIES_PER_RECORD per
    record of capacity, plus a floor. Past it, entries left stale by rescheduling, closing
    and eviction are dropped; since a compaction leaves at most one entry per live record,
    it comes after capacity pushes at least, which keeps its cost amortised O(1) per push."""
    return WHEEL_ENTRIES_PER_RECORD * capacity + WHEEL_MIN_ENTRIES


cdef inline int compact_wheel(expiry_t* x, const conn_t* recs, intp_t used) noexcept nogil:
    """Keeps one entry per live record, in the slot of its due tick, drops every other
    (records gone, listed again elsewhere, or listed twice) and frees the slack. Never
    called while expire_wheel walks a slot. Returns -1 when out of memory (nothing lost)."""
    cdef wheel_t* w = &x.wheel
    cdef uint8_t* listed = <uint8_t*>PyMem_RawCalloc((used >> 3) + 1, 1)
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
            if (rid < used and (recs[rid].status & S_ALIVE)
                    and (x.due[rid] & WHEEL_MASK) == <uint32_t>s
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


cdef inline int bound_wheel(expiry_t* x, const conn_t* recs, intp_t used) noexcept nogil:
    if x.wheel.allocated > x.wheel.limit:
        return compact_wheel(x, recs, used)
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


cdef inline int schedule(expiry_t* x, intp_t rid, int64_t now, int64_t deadline) noexcept nogil:
    """Lists record rid in the wheel at its deadline (ns); `now` starts an unstarted wheel,
    never past the tracker's clock (a suspect segment's time is not one to start from)."""
    cdef int64_t tick
    if not x.wheel.started:
        x.wheel.tick = min(now, x.clock_limit) // TICK_NS
        x.wheel.started = True
    tick = clamp_tick(&x.wheel, deadline // TICK_NS)
    if wheel_push(&x.wheel, tick, <uint32_t>rid) < 0:
        return -1
    x.due[rid] = <uint32_t>tick      # only once listed there: compact_wheel trusts it
    return 0


cdef inline int schedule_if_sooner(expiry_t* x, intp_t rid, int64_t now,
                                   int64_t deadline) noexcept nogil:
    """After a state change: a shorter timeout moves the check earlier; a longer one waits for
    the scheduled check to find it."""
    if ticks_after(x.due[rid], clamp_tick(&x.wheel, deadline // TICK_NS)) > 0:
        return schedule(x, rid, now, deadline)
    return 0


cdef inline void free_wheel(bucket_t* slots) noexcept nogil:
    """Frees a wheel's slots and their lists (NULL-safe)."""
    cdef intp_t i
    if slots == NULL:
        return
    for i in range(WHEEL_SLOTS):
        PyMem_RawFree(slots[i].rids)
    free(slots)


cdef inline bucket_t* wheel_new() noexcept nogil:
    """Empty wheel slots, or NULL when out of memory (free_wheel frees them)."""
    return <bucket_t*>calloc(WHEEL_SLOTS, sizeof(bucket_t))


cdef inline bucket_t* wheel_from_lists(const int64_t* lengths,
                                       const uint32_t* entries) noexcept nogil:
    """Wheel slots holding saved lists (as FlowTable.wheel_lists gives them), or NULL when
    out of memory."""
    cdef bucket_t* slots = wheel_new()
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


# A wheel as a snapshot holds it, for wheel_saved_check.
cdef struct wheel_saved_t:
    const uint32_t* due         # per record (NULL: no expiry kept)
    const int64_t* lengths      # WHEEL_SLOTS counts (checked >= 0, summing to n_entries)
    const uint32_t* entries     # the slots' lists, in slot order
    intp_t n_entries
    int64_t tick
    bint started

# What wheel_saved_check finds, in this order.
cdef enum:
    WHEEL_SAVED_OK = 0
    WHEEL_SAVED_IDLE = 1        # not started, but lists records or has live connections
    WHEEL_SAVED_ENTRY = 2       # an entry names a record at or above `used`
    WHEEL_SAVED_DUE = 3         # a live record is due outside the wheel's revolution
    WHEEL_SAVED_UNLISTED = 4    # a live record is not listed in the slot of its due tick


cdef inline int wheel_saved_check(const wheel_saved_t* s, const conn_t* recs, intp_t used,
                                  intp_t live, uint8_t* marks, uint8_t listed) noexcept nogil:
    """Checks a saved wheel against what expire_wheel and compact_wheel trust, in O(records +
    entries): every entry names a record in use, and every live record is due within the
    wheel's revolution and listed in the slot of its due tick. marks: one byte per record in
    use, where the `listed` bit is set for the records found listed."""
    cdef intp_t i, k, rid, at = 0
    if not s.started:
        # nothing was ever scheduled: no connection was ever made
        return WHEEL_SAVED_IDLE if live or s.n_entries else WHEEL_SAVED_OK
    for i in range(WHEEL_SLOTS):
        for k in range(at, at + <intp_t>s.lengths[i]):
            rid = s.entries[k]
            if rid >= used:
                return WHEEL_SAVED_ENTRY
            if (recs[rid].status & S_ALIVE) and (s.due[rid] & WHEEL_MASK) == <uint32_t>i:
                marks[rid] |= listed
        at += <intp_t>s.lengths[i]
    for rid in range(used):
        if not (recs[rid].status & S_ALIVE):
            continue
        # wrap-aware: due within one revolution from the wheel's tick
        if <uint32_t>(s.due[rid] - <uint32_t>s.tick) > WHEEL_MASK:
            return WHEEL_SAVED_DUE
        if not (marks[rid] & listed):
            return WHEEL_SAVED_UNLISTED
    return WHEEL_SAVED_OK
