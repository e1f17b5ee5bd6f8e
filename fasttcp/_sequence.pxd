# The sequence window part: netfilter's tcp_in_window, after van Rooij's "Real Stateful TCP
# Packet Filtering", in its four bounds; the window scale comes from the SYNs (RFC 7323).
from libc.stdint cimport int32_t
from libc.string cimport memset

from fasttcp._records cimport events_t
from fasttcp._tcp cimport TH_ACK, TH_FIN, TH_RST, TH_SYN
from fasttcp._typedefs cimport intp_t, uint8_t, uint16_t, uint32_t

cdef enum:
    SQ_SEEN = 1          # this side has sent a segment
    SQ_FIN = 2           # and a FIN (fin_end holds where it ends)
    SQ_SCALED = 4        # its SYN offered window scaling
    SQ_LIMIT = 8         # maxend is known (from the peer's ack and window, or its own end)
    SQ_PICKED_UP = 16    # first seen without its SYN: its window scale is unknown
    MAX_ACK_WINDOW = 66000   # netfilter's floor for how far behind an ack may be
    MAX_WSCALE = 14      # RFC 7323's largest window scale (seq_segment caps at it)
    SEQ_IN_WINDOW = 0
    SEQ_OUT_OF_WINDOW = 1
    SEQ_RETRANSMISSION = 2


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


cdef struct seq_part_t:
    bint enabled                # keeps sequence state (from the first sequence-aware batch)
    seq_t* states               # record 0's; each next record's is `stride` bytes on (seq_at)
    intp_t stride               # the side row's size: sequence and flow states share a row
    const uint8_t* early        # [class] -> its class when it does not yet ack the peer's FIN


cdef inline void seq_attach(seq_part_t* p, void* states, intp_t stride) noexcept nogil:
    """Points the part at record 0's state in its side rows, `stride` bytes apart (NULL:
    sequence state not kept)."""
    p.states = <seq_t*>states
    p.stride = stride
    p.enabled = states != NULL


cdef inline seq_t* seq_at(const seq_part_t* p, intp_t rid) noexcept nogil:
    return <seq_t*>((<char*>p.states) + rid * p.stride)


cdef inline intp_t seq_nbytes(const seq_part_t* p, intp_t capacity) noexcept nogil:
    return capacity * <intp_t>sizeof(seq_t) if p.enabled else 0


cdef inline bint seq_before(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) < 0


cdef inline bint seq_after(uint32_t a, uint32_t b) noexcept nogil:
    # netfilter's after(a, b) is before(b, a): also true when a is exactly 2**31 past b
    return seq_before(b, a)


cdef inline void seq_start(seq_part_t* p, intp_t rid, int d, const events_t* ev,
                           intp_t i) noexcept nogil:
    """A (re)started connection's sequence state, from its first segment if the batch has
    sequence numbers, else unseen."""
    if not p.enabled:
        return
    memset(seq_at(p, rid), 0, sizeof(seq_t))
    if ev.seq != NULL:
        seq_segment(seq_at(p, rid), d, ev, i)


cdef inline int seq_segment(seq_t* sq, int d, const events_t* ev, intp_t i) noexcept nogil:
    """Checks a segment against its receiver's window and records it. Returns SEQ_*: a side
    is taken as it comes until both have been seen (a pickup mid-stream is liberal)."""
    cdef seq_dir_t* snd = (&sq.orig) + d
    cdef seq_dir_t* rcv = (&sq.orig) + (1 - d)
    cdef uint8_t flags = ev.flags[i]
    cdef bint syn = (flags & TH_SYN) != 0, fin = (flags & TH_FIN) != 0
    cdef bint rst = (flags & TH_RST) != 0, ack = (flags & TH_ACK) != 0
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
        snd.scale = <uint8_t>(ev.wscale[i] if ev.wscale[i] <= MAX_WSCALE else MAX_WSCALE)
    return result


cdef inline uint8_t seq_class(const seq_part_t* p, const seq_t* sq, int d, uint8_t cls,
                              const events_t* ev, intp_t i) noexcept nogil:
    """The flag class refined by the ack number: an ACK or FIN-ACK that does not yet cover the
    peer's FIN is its "early" class, so a model can tell FIN_WAIT_2 and CLOSING apart."""
    cdef const seq_dir_t* rcv = (&sq.orig) + (1 - d)
    if (ev.flags[i] & TH_ACK) and rcv.flags & SQ_FIN and seq_before(ev.ack[i], rcv.fin_end):
        return p.early[cls]
    return cls


cdef inline bint seq_dir_ok(const seq_dir_t* s) noexcept nogil:
    # a scale seq_segment can shift by, and only SQ_* flag bits
    return s.scale <= MAX_WSCALE and s.flags < 2 * SQ_PICKED_UP


cdef inline bint seq_ok(const seq_t* sq) noexcept nogil:
    """What seq_segment trusts of a saved sequence state."""
    return seq_dir_ok(&sq.orig) and seq_dir_ok(&sq.resp)
