# The table of one address family, composed of the parts (each in its own .pxd): records,
# hash index, expiry wheel, eviction ring, sequence window, flows. The optional parts are each
# switched on by their `enabled` field.
# (The record, flow, sequence and wheel structs are cimported here too, so a module that
# cimports them from fasttcp._engine, where they used to be declared, still finds them.)
from fasttcp._evict cimport evict_t
from fasttcp._flows cimport flow_part_t, flow_t
from fasttcp._index cimport index_t
from fasttcp._records cimport addr6_t, conn4_t, conn6_t, conn_t, events_t, records_t
from fasttcp._sequence cimport seq_dir_t, seq_part_t, seq_t
from fasttcp._typedefs cimport int64_t, intp_t, uint8_t, uint32_t
from fasttcp._wheel cimport bucket_t, expiry_t, wheel_t


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


# The compiled model a table applies (see fasttcp.models), and what it has counted.
cdef struct model_t:
    const uint8_t* class_of     # flag byte -> flag class
    const uint8_t* trans        # [state, direction, class] -> next state / INVALID / IGNORE
    const uint8_t* actions      # [state, direction, class] -> ACTION_*
    const uint8_t* illegal      # [class] -> 1 if segments of the class are counted as illegal
    intp_t n_states             # states 0..n_states-1; cells above are INVALID / IGNORE
    intp_t n_classes            # flag classes (early ones included)
    int64_t* hist               # live connections per state
    int64_t* class_counts       # segments seen per flag class


cdef struct table_t:
    records_t records           # record counts, free list, hash key (_records.pxd)
    index_t index               # the hash index over the records (_index.pxd)
    model_t model
    uint32_t n_shards           # tables sharing one key space; a power of two, at most 4
    uint32_t shard              # the events this table takes: hash bits 62-63 mod n_shards
    expiry_t expiry             # optional: the timer wheel (_wheel.pxd)
    evict_t evict               # optional: the eviction ring (_evict.pxd)
    seq_part_t seq              # optional: sequence windows (_sequence.pxd)
    flow_part_t flows           # optional: flow states and the ended buffer (_flows.pxd)
