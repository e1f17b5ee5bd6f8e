from fasttcp._typedefs cimport int8_t, int64_t, intp_t, uint8_t, uint16_t, uint32_t, uint64_t


# One TCP segment as the reader writes it, packed (no padding). fasttcp.SEGMENT_DTYPE is derived
# from this struct (field offsets read off a dummy instance in _pcap.pyx), so the two cannot
# disagree; the fields up to `length` make fasttcp.EVENT_DTYPE.
cdef packed struct seg4_t:
    int64_t ts                  # capture timestamp, ns since the epoch
    uint32_t src                # sender address, host-order integer
    uint32_t dst                # receiver address
    uint16_t sport
    uint16_t dport
    uint8_t flags               # TCP flags byte
    uint32_t length             # TCP payload bytes, from the IP length (not the captured bytes)
    uint32_t seq
    uint32_t ack
    uint16_t window             # raw window field, unscaled
    int8_t wscale               # window-scale option of a SYN, -1 when absent

# The IPv6 twin (fasttcp.SEGMENT6_DTYPE): addresses are 16 bytes in network order.
cdef packed struct seg6_t:
    int64_t ts
    uint8_t src[16]
    uint8_t dst[16]
    uint16_t sport
    uint16_t dport
    uint8_t flags
    uint32_t length
    uint32_t seq
    uint32_t ack
    uint16_t window
    int8_t wscale


# Where one call of a block parser stopped, and what it wrote.
cdef struct progress_t:
    intp_t pos                  # offset of the first record not consumed
    intp_t n4                   # IPv4 segments written
    intp_t n6                   # IPv6 segments written
    int64_t last_ts             # timestamp of the latest packet read (pcapng simple blocks use it)


# An unsigned 128-bit number, for exact timestamp arithmetic.
cdef struct u128_t:
    uint64_t hi                 # the high 64 bits
    uint64_t lo
