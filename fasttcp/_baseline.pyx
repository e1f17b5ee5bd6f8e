"""The memory system's limit for this workload shape, measured on the machine at hand.

A bare loop that read-modify-writes one 64-byte record per event through a perfect index
(the record number is given), with prefetch: no hashing, no probing, no state machine. Its rate
is what a tracker could reach if lookups were free; benchmarks report fasttcp beside it.
"""
import numpy as np

from fasttcp._typedefs cimport intp_t, uint32_t, uint64_t

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define BL_PREFETCH(p) __builtin_prefetch((const void *)(p), 1, 3)
    #else
    #define BL_PREFETCH(p) ((void)(p))
    #endif
    """
    void BL_PREFETCH(const void* p) noexcept nogil

cdef enum:
    AHEAD = 16


def touch_records(uint64_t[:, ::1] records, const uint32_t[::1] which):
    """Adds to 3 words of records[which[i]] for each i, prefetching AHEAD events ahead.

    records has shape (n, 8): one 64-byte record per row.
    """
    cdef intp_t i, n = which.shape[0]
    cdef intp_t m = records.shape[0]
    cdef uint64_t* r
    if records.shape[1] != 8:
        raise ValueError("records must have 8 uint64 words per row")
    if n and (np.asarray(which).max() >= m):
        raise IndexError("record number out of range")
    with nogil:
        for i in range(n):
            if i + AHEAD < n:
                BL_PREFETCH(&records[which[i + AHEAD], 0])
            r = &records[which[i], 0]
            r[0] += 1
            r[1] += i & 1023
            r[5] = i
