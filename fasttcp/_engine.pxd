from fasttcp._typedefs cimport int8_t, int64_t, intp_t, uint8_t, uint16_t, uint32_t, uint64_t


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
                                # (free record: index of the next free one)
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


# One direction's sequence space, as a sequence-aware tracker keeps it (netfilter's td_*).
cdef struct seq_dir_t:
    uint32_t end                # the sequence number after all this side has sent
    uint32_t maxend             # the highest sequence number the peer's ack and window allow
    uint32_t maxwin             # the largest window this side advertised (scaled)
    uint32_t fin_end            # the sequence number after this side's FIN (with SQ_FIN)
    uint8_t scale               # this side's window scale (with SQ_SCALED)
    uint8_t flags               # SQ_* bits
    uint16_t unused

cdef struct seq_t:
    seq_dir_t orig              # indexed by direction, as the record's orig_/resp_ pairs
    seq_dir_t resp


# What Zeek would say about a connection, kept beside its record when a tracker keeps flows
# (a separate array, so trackers without flows keep 64-byte connections).
cdef struct flow_t:
    uint64_t history            # Zeek history letters 0-11 in order, 5 bits each: letter << 1 | dir
    uint64_t history_more       # letters 12-17
    uint32_t seen               # letter kinds already recorded: orig's low 9 bits, resp's next 9
    uint8_t orig_zeek           # Zeek endpoint state (ZEEK_*), the previous one in the high nibble
    uint8_t resp_zeek


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


# Per-batch outcome counts, accumulated into the table's totals.
cdef struct counts_t:
    int64_t events
    int64_t new             # segments that created (or reopened) a connection
    int64_t valid           # segments that moved a connection through the table
    int64_t invalid         # segments the model calls invalid (state unchanged)
    int64_t ignored         # segments the model ignores (state unchanged)
    int64_t untracked       # invalid/ignored segments that matched no connection (none created)
    int64_t closed          # connections ended by the model (close or reopen)
    int64_t expired         # connections idle past their state's timeout
    int64_t evicted         # connections dropped to make room for a new one
    int64_t refused         # new connections not tracked: full, and nothing could be evicted
    int64_t out_of_window   # segments outside the receiver's window (sequence-aware only)
    int64_t retransmitted   # segments carrying data their sender had sent before
    int64_t zero_window     # segments advertising a zero window


# Expiry: a timer wheel of one-second ticks. Each live connection is listed in the slot of its
# scheduled tick (`due`); the wheel looks at a connection only then, and either expires it or
# lists it again at its real deadline, which activity since may have moved (lazily: a segment
# costs the wheel nothing unless it shortens the deadline).
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


# The hash index and bookkeeping of one address family's table.
cdef struct table_t:
    uint32_t* index             # open-addressing slots: 0 empty, 1 tombstone, else tag|record+2
    uint64_t nslots
    uint32_t id_bits            # low bits of a slot hold record index + 2, the rest a hash tag
    uint32_t id_mask
    uint32_t tag_mask
    intp_t capacity             # records allocated
    intp_t count                # live connections
    intp_t used                 # records ever handed out (high-water mark)
    intp_t tombstones
    intp_t max_filled           # count + tombstones may not exceed this (probes stay short)
    uint64_t slot_changes       # index slots written by the kernel so far (see probe_start)
    uint32_t n_shards           # tables sharing one key space; a power of two, at most 4
    uint32_t shard              # the events this table takes: hash bits 62-63 mod n_shards
    int64_t free_head           # first free record below `used`, -1 if none
    uint64_t k0                 # hash key (secret, per tracker)
    uint64_t k1
    uint64_t k2
    uint64_t k3
    int64_t* hist               # live connections per state
    int64_t* class_counts       # segments seen per flag class
    # the compiled model
    const uint8_t* class_of     # flag byte -> flag class
    const uint8_t* trans        # [state, direction, class] -> next state / INVALID / IGNORE
    const uint8_t* actions      # [state, direction, class] -> ACTION_*
    const uint8_t* illegal      # [class] -> 1 if segments of the class are counted as illegal
    intp_t n_states
    intp_t n_classes
    # expiry (due == NULL: connections never expire)
    uint32_t* due               # per record: the tick its expiry check is scheduled at,
                                # modulo 2**32 (always within one revolution of wheel.tick)
    const int64_t* timeout      # per state: idle time (ns) after which a connection expires
    wheel_t wheel
    int64_t clock_limit         # a full table expires by a segment's time, at most this (ns)
    # eviction (evict_ring == NULL: a full table refuses to grow past its bound)
    uint64_t* evict_ring        # new connections, oldest first: record | first_ts low bits << 32
    intp_t evict_head           # next entry to look at (monotonic; the ring wraps)
    intp_t evict_tail
    intp_t evict_capacity       # a power of two
    bint evicting               # the table is at its bound: a full table evicts
    # sequence awareness (NULL until a batch brings seq, ack and window)
    seq_t* seq                  # one per record
    const uint8_t* early        # [class] -> its class when it does not yet ack the peer's FIN
    # flows (NULL when the tracker keeps none)
    flow_t* flows               # one per record
    void* ended                 # records of connections the model ended, awaiting collection
    flow_t* ended_flows         # their flows
    uint8_t* ended_reason       # why each ended (END_*)
    intp_t n_ended
    intp_t ended_capacity       # huge without flows: the "buffer full" test never fires
