# The flows part: what Zeek would say about each connection (history letters, endpoint states,
# conn_state), kept beside its record, and the buffer of ended connections awaiting collection.
from libc.string cimport memset

from fasttcp._records cimport conn_t, events_t
from fasttcp._tcp cimport TH_ACK, TH_FIN, TH_RST, TH_SYN
from fasttcp._typedefs cimport intp_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    /* a SWAR bit count: a few instructions inline, where __builtin_popcount without
       -mpopcnt is a call into libgcc */
    static inline int ft_popcount32(uint32_t x) {
        x = x - ((x >> 1) & 0x55555555u);
        x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
        x = (x + (x >> 4)) & 0x0F0F0F0Fu;
        return (int)((x * 0x01010101u) >> 24);
    }
    /* the "seen" bit of each history letter code (S and H share one, as in Zeek) */
    static const uint16_t ft_letter_seen_bit[10] = {
        0x01, 0x01, 0x20, 0x10, 0x02, 0x04, 0x40, 0x08, 0x80, 0x100};
    /* the character of each history entry (letter << 1 | direction) */
    static const char ft_letter_chars[] = "SsHhAaDdFfRrQqIiTtWw";
    """
    int ft_popcount32(uint32_t x) noexcept nogil
    const uint16_t ft_letter_seen_bit[10]
    const char ft_letter_chars[]


# What Zeek would say about a connection, kept beside its record when a tracker keeps flows
# (a separate array, so trackers without flows keep 64-byte connections).
cdef struct flow_t:
    uint64_t history            # Zeek history letters 0-11 in order, 5 bits each: letter << 1 | dir
    uint64_t history_more       # letters 12-17
    uint32_t seen               # letter kinds already recorded: orig's low 9 bits, resp's next 9
    uint8_t orig_zeek           # Zeek endpoint state (ZEEK_*), the previous one in the high nibble
    uint8_t resp_zeek


cdef struct flow_part_t:
    bint enabled                # the table keeps flows
    flow_t* states              # record 0's; each next record's is `stride` bytes on (flow_at)
    intp_t stride               # the side row's size: sequence and flow states share a row
    void* ended                 # records of connections the model ended, awaiting collection
    flow_t* ended_flows         # their flows
    uint8_t* ended_reason       # why each ended (END_*)
    intp_t n_ended
    intp_t ended_capacity       # huge without flows: the "buffer full" test never fires


# Why a connection left the table (fasttcp.flows.ENDED, after "live").
cdef enum:
    E_CLOSED = 1
    E_EXPIRED = 2
    E_EVICTED = 3

# Zeek's TCP endpoint states (zeek/zeek TCP_Endpoint.h), as conn_state reads them.
cdef enum:
    Z_INACTIVE = 0
    Z_SYN_SENT = 1
    Z_SYN_ACK_SENT = 2
    Z_PARTIAL = 3
    Z_ESTABLISHED = 4
    Z_CLOSED = 5
    Z_RESET = 6

# Zeek history letters by code (a history entry is code << 1 | direction, the originator's in
# upper case).
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

# Zeek's conn_state values (zeek/zeek base/protocols/conn/main.zeek), by code.
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


cdef inline void flows_attach(flow_part_t* p, void* states, intp_t stride) noexcept nogil:
    """Points the part at record 0's flow state in its side rows, `stride` bytes apart (NULL:
    no flows kept)."""
    p.states = <flow_t*>states
    p.stride = stride
    p.enabled = states != NULL


cdef inline flow_t* flow_at(const flow_part_t* p, intp_t rid) noexcept nogil:
    return <flow_t*>((<char*>p.states) + rid * p.stride)


cdef inline intp_t flows_nbytes(const flow_part_t* p, intp_t capacity,
                                size_t record_size) noexcept nogil:
    """Flow states beside the records, and the ended-connection buffer."""
    if not p.enabled:
        return 0
    return (capacity * <intp_t>sizeof(flow_t)
            + p.ended_capacity * <intp_t>(record_size + sizeof(flow_t) + sizeof(uint8_t)))


cdef inline bint ended_full(const flow_part_t* p, intp_t room) noexcept nogil:
    """The ended buffer cannot take `room` more connections."""
    return p.n_ended + room > p.ended_capacity


cdef inline void end_connection(flow_part_t* p, const conn_t* c, intp_t rid,
                                uint8_t reason) noexcept nogil:
    """Copies a connection that is ending into the ended buffer (kept flows only; the kernel
    stops before an event when the buffer has no room)."""
    if not p.enabled:
        return
    (<conn_t*>p.ended)[p.n_ended] = c[0]
    p.ended_flows[p.n_ended] = flow_at(p, rid)[0]
    p.ended_reason[p.n_ended] = reason
    p.n_ended += 1


cdef inline uint8_t history_entry(const flow_t* f, int k) noexcept nogil:
    """The k-th letter of the history, as letter << 1 | direction."""
    if k < 12:
        return (f.history >> (5 * k)) & 0x1F
    return (f.history_more >> (5 * (k - 12))) & 0x1F


cdef inline void add_letter(flow_t* f, int d, uint8_t letter) noexcept nogil:
    """Appends a history letter the first time its kind is seen in direction d (Zeek repeats
    T and W at the 10th, 100th... time; fasttcp records each once)."""
    cdef uint32_t bit = (<uint32_t>ft_letter_seen_bit[letter]) << (SEEN_BITS * d)
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
    cdef int syn = (flags & TH_SYN) != 0, fin = (flags & TH_FIN) != 0
    cdef int rst = (flags & TH_RST) != 0, ack = (flags & TH_ACK) != 0
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
    if not controls and state != Z_INACTIVE:
        return      # no SYN, FIN or RST to an active endpoint: no state below can move

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


cdef inline bint zero_window(const events_t* ev, intp_t i) noexcept nogil:
    return ev.window != NULL and ev.window[i] == 0 and not (ev.flags[i] & TH_RST)


cdef inline void start_flow(flow_part_t* p, intp_t rid, int d, const events_t* ev,
                            intp_t i) noexcept nogil:
    if p.enabled:
        memset(flow_at(p, rid), 0, sizeof(flow_t))
        zeek_step(flow_at(p, rid), d, ev.flags[i], ev.length[i], False, zero_window(ev, i))


cdef inline void step_flow(flow_part_t* p, intp_t rid, int d, const events_t* ev, intp_t i,
                           bint retransmission) noexcept nogil:
    if p.enabled:
        zeek_step(flow_at(p, rid), d, ev.flags[i], ev.length[i], retransmission,
                  zero_window(ev, i))


cdef inline void history_text(const flow_t* f, bint flipped, uint8_t* out,
                              int width) noexcept nogil:
    """Writes the Zeek history string (ASCII, NUL-padded to width)."""
    cdef int n = ft_popcount32(f.seen), k, at = 0
    if flipped:
        out[0] = 94      # '^'
        at = 1
    for k in range(n):
        out[at + k] = ft_letter_chars[history_entry(f, k)]
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
