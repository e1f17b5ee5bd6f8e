"""Connection table and batch update kernel.

One `FlowTable` holds the connections of one address family: fixed-size records in a numpy
structured array (stable indices, a free list threaded through dead records) and an
open-addressing index of uint32 slots over them, keyed by a seeded hash of the unordered pair of
endpoints. `FlowTable.update` applies a batch of segments in one `nogil` loop through the compiled
transition table of a model (see `fasttcp.models`).

The loop hides memory latency by software pipelining: the hash of event i+HASH_AHEAD is computed
and its index slot prefetched; the probe of event i+RECORD_AHEAD is walked by hash tag and the
matching record prefetched; then event i is applied with an exact lookup, starting where the
walk stopped if no slot has changed since. Prefetches are hints only: events are applied in
order, so events of one batch that touch the same connection see each other's effects.

Tables can be shards of one tracker: hash bits 62-63 pick a connection's shard, `partition`
sorts a batch's events by shard, and each shard's table applies its own list (a compile-time
variant of the loop) on its own thread.

The table is composed of parts, each in its own .pxd with its struct, its `cdef inline`
per-event helpers and its attach / prefetch / nbytes (and, with saved state, check) helpers:
`_records` (records, free list, events, hashing), `_index` (slots, probing, rebuilding),
`_wheel` (expiry), `_evict` (eviction ring), `_sequence` (sequence windows) and `_flows`
(Zeek history and states, the ended buffer); `_pipeline` holds the prefetch stages, which
fetch every part kept. This file composes them: the batch kernel, the expiry loop, the
snapshot check, and `FlowTable`, whose memory, growth and accounting run over every part.
"""
# Parts are .pxd files of `cdef inline` functions, as sklearn's tree/_utils.pxd, rather than
# .pxi files pulled in with `include`, as pandas' hashtable: a .pxd is its own namespace, so a
# part declares what it uses and is cimported by name (a reader sees where each helper comes
# from, and a part cannot reach into another's globals), while the inline helpers still
# compile into this one extension and inline into the batch loop. No part has a .pyx: none
# needs module state or a C-API of its own.
import math

import numpy as np

cimport numpy as cnp
from libc.stdint cimport INT64_MAX, UINT32_MAX
from libc.string cimport memcpy, memset

from fasttcp._evict cimport (evict_attach, evict_nbytes, evict_next, list_for_eviction,
                             ring_saved_ok, ring_saved_t, ring_size_for)
from fasttcp._flows cimport (CS_OTH, E_CLOSED, E_EVICTED, E_EXPIRED, L_ZERO_WINDOW, SEEN_BITS,
                             Z_RESET, conn_state, end_connection, ended_full, flow_ok, flow_t,
                             flows_attach, flows_nbytes, ft_letter_chars, history_text,
                             start_flow, step_flow, zero_window)
from fasttcp._index cimport (SLOT_ID_BIAS, fastrange, find, hash_tag, index_insert, index_nbytes,
                             index_remove, index_size, probe_fields, probe_lengths, probe_t,
                             rebuild_index, slot_of)
from fasttcp._pipeline cimport (RING, event_at, pipeline_advance, pipeline_start, probe_start,
                                ring_t, walk_all_t, walk_ordered_t, walk_t)
from fasttcp._records cimport (S_ALIVE, S_FLIPPED, S_ILLEGAL_MAX, S_ILLEGAL_SHIFT, S_PICKED_UP,
                               S_REPLIED, addr6_t, allocate_record, conn4_t, conn6_t, conn_t,
                               count_illegal, count_segment, event_hash, events_t, free_record,
                               next_free, record_hash, records_nbytes, same_connection,
                               start_connection)
from fasttcp._sequence cimport MAX_ACK_WINDOW as C_MAX_ACK_WINDOW, MAX_WSCALE as C_MAX_WSCALE
from fasttcp._sequence cimport (SEQ_IN_WINDOW, SEQ_OUT_OF_WINDOW, SEQ_RETRANSMISSION, seq_at,
                                seq_attach, seq_class, seq_nbytes, seq_ok, seq_segment, seq_start,
                                seq_t)
from fasttcp._tcp cimport TH_ACK as C_TH_ACK, TH_CWR as C_TH_CWR, TH_ECE as C_TH_ECE
from fasttcp._tcp cimport TH_FIN as C_TH_FIN, TH_PUSH as C_TH_PUSH, TH_RST as C_TH_RST
from fasttcp._tcp cimport TH_SYN as C_TH_SYN, TH_URG as C_TH_URG
from fasttcp._typedefs cimport int8_t, int64_t, intp_t, uint8_t, uint16_t, uint32_t, uint64_t
from fasttcp._wheel cimport (TICK_NS, WHEEL_MASK, WHEEL_SAVED_IDLE, WHEEL_SAVED_OK, WHEEL_SLOTS,
                             bound_wheel, bucket_t, clamp_tick, deadline_of, expiry_attach,
                             expiry_max_nbytes, expiry_nbytes, free_wheel, is_due, schedule,
                             schedule_if_sooner, ticks_after, wheel_bound, wheel_from_lists,
                             wheel_new, wheel_push, wheel_saved_check, wheel_saved_t, wheel_t)

cnp.import_array()

cdef enum:
    # Results a transition cell can hold besides a state; never used as an index.
    C_INVALID = 255
    C_IGNORE = 254

    # Actions a cell may carry (see fasttcp.models for their meaning).
    A_NONE = 0
    A_REOPEN = 1
    A_CLOSE_UNREPLIED = 2
    A_FLIP = 3           # on creation: the receiver of the first segment is the originator
    A_PICKUP = 4         # on creation: the connection was picked up mid-stream
    A_LAST = 4

    # What update reports per event.
    V_NEW = 0
    V_VALID = 1
    V_INVALID = 2
    V_IGNORED = 3

    SHARD_SHIFT = 62     # hash bits 62-63 choose the shard
    MAX_SHARDS = 4

    RC_DONE = 0
    RC_NEED_SPACE = 1    # stopped before an event that needs a record or slot: grow, then resume
    RC_ENDED_FULL = 2    # stopped because the ended-connection buffer is full: collect, resume
    RC_NO_MEMORY = 3     # the wheel could not grow a slot (the event was applied)

# The C constants the Python side reads, each exported from its one definition.
INVALID = C_INVALID
IGNORE = C_IGNORE
ACTION_NONE = A_NONE
ACTION_REOPEN = A_REOPEN
ACTION_CLOSE_UNREPLIED = A_CLOSE_UNREPLIED
ACTION_FLIP = A_FLIP
ACTION_PICKUP = A_PICKUP
VERDICT_NEW = V_NEW
VERDICT_VALID = V_VALID
VERDICT_INVALID = V_INVALID
VERDICT_IGNORED = V_IGNORED
STATUS_ALIVE = S_ALIVE
STATUS_REPLIED = S_REPLIED
STATUS_FLIPPED = S_FLIPPED
STATUS_PICKED_UP = S_PICKED_UP
STATUS_ILLEGAL_SHIFT = S_ILLEGAL_SHIFT
ILLEGAL_MAX = S_ILLEGAL_MAX >> S_ILLEGAL_SHIFT    # the illegal-segment count saturates here
PKTS_MAX = UINT32_MAX                             # packet counters saturate here
# TCP flag bits (fasttcp.models names them FIN, SYN, ...).
TH_FIN = C_TH_FIN
TH_SYN = C_TH_SYN
TH_RST = C_TH_RST
TH_PUSH = C_TH_PUSH
TH_ACK = C_TH_ACK
TH_URG = C_TH_URG
TH_ECE = C_TH_ECE
TH_CWR = C_TH_CWR
# Sequence windows: the largest window scale (RFC 7323), and netfilter's floor for how far
# behind an ack may be.
MAX_WSCALE = C_MAX_WSCALE
MAX_ACK_WINDOW = C_MAX_ACK_WINDOW
# Why a connection left the table, as flow rows record it (fasttcp.flows.ENDED, after "live").
END_CLOSED = E_CLOSED
END_EXPIRED = E_EXPIRED
END_EVICTED = E_EVICTED
# Zeek's TCP endpoint states (zeek/zeek TCP_Endpoint.h) by Z_* code, as conn_state reads them.
ZEEK_STATES = ("INACTIVE", "SYN_SENT", "SYN_ACK_SENT", "PARTIAL", "ESTABLISHED", "CLOSED",
               "RESET")
# Zeek history letters by L_* code (a history entry is code << 1 | direction, the originator's
# in upper case), and the "seen" bit each one sets: S and H share one, as in Zeek.
HISTORY_LETTERS = "SHADFRQITW"
# Bytes of a history string: a '^' (flipped) and at most one letter per seen bit.
HISTORY_WIDTH = 1 + 2 * SEEN_BITS
# Zeek's conn_state values (zeek/zeek base/protocols/conn/main.zeek), by CS_* code.
CONN_STATE_NAMES = ("S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH",
                    "SH", "SHR", "OTH")
if (len(ZEEK_STATES) != Z_RESET + 1 or len(CONN_STATE_NAMES) != CS_OTH + 1
        or len(HISTORY_LETTERS) != L_ZERO_WINDOW + 1
        or HISTORY_LETTERS != ft_letter_chars[: 2 * (L_ZERO_WINDOW + 1)][::2].decode()):
    raise ImportError("the Zeek names and the C codes of _flows.pxd disagree")
# Engine limit: slots keep at least 2 bits of hash tag.
MAX_CAPACITY = (1 << 30) - SLOT_ID_BIAS - 1
# Live connections per index slot at most. At 0.5 a successful probe reads 1.5 slots on
# average, and a full IPv4 table costs 56 + 8 = 64 bytes per connection.
MAX_LOAD = 0.5
# Live plus tombstoned slots at most, before the index is rebuilt without tombstones.
MAX_FILL = 0.7


def zeek_columns(const uint8_t[::1] flow_states, const uint8_t[::1] status,
                 const uint64_t[::1] orig_bytes, const uint64_t[::1] resp_bytes,
                 uint8_t[:, ::1] out_history, uint8_t[::1] out_conn_state):
    """Zeek's history (ASCII rows of out_history) and conn_state code of each connection,
    from its FLOW_STATE_DTYPE row (as bytes) and its record's status and payload bytes."""
    cdef intp_t n = status.shape[0], i
    cdef const flow_t* f
    if (flow_states.shape[0] != n * <intp_t>sizeof(flow_t) or orig_bytes.shape[0] != n
            or resp_bytes.shape[0] != n or out_history.shape[0] != n
            or out_conn_state.shape[0] != n):
        raise ValueError("zeek_columns: arrays differ in length")
    if out_history.shape[1] < HISTORY_WIDTH:
        raise ValueError(f"zeek_columns: history rows need {HISTORY_WIDTH} bytes")
    if n == 0:
        return
    f = <const flow_t*>&flow_states[0]
    with nogil:
        for i in range(n):
            history_text(&f[i], (status[i] & S_FLIPPED) != 0, &out_history[i, 0],
                         <int>out_history.shape[1])
            out_conn_state[i] = conn_state(&f[i], orig_bytes[i], resp_bytes[i])


cdef inline void remove_connection(table_t* t, conn_t* recs, intp_t rid,
                                   uint64_t pos) noexcept nogil:
    """Takes a live connection out of the table: its index slot (pos), its state's count,
    its record (onto the free list)."""
    t.model.hist[recs[rid].state] -= 1
    index_remove(&t.index, pos)
    free_record(&t.records, recs, rid)


cdef inline intp_t evict_one(table_t* t, conn_t* recs) noexcept nogil:
    """Removes the oldest listed connection that never got an answer (conntrack's early drop:
    a half-open connection goes before any established one); returns it, or -1."""
    cdef intp_t rid = evict_next(&t.evict, recs, t.records.used)
    if rid >= 0:
        end_connection(&t.flows, &recs[rid], rid, E_EVICTED)
        remove_connection(t, recs, rid, slot_of(&t.index, &t.records.key, recs, rid))
    return rid


cdef inline bint in_shard(const table_t* t, uint64_t h) noexcept nogil:
    # The top two hash bits pick the shard: the index uses the low 32 bits for the home slot
    # and at most bits 32-61 for the tag, so within a shard placement stays uniform.
    return ((h >> SHARD_SHIFT) & (t.n_shards - 1)) == t.shard


cdef int expire_wheel(table_t* t, conn_t* recs, int64_t now, intp_t* expired) noexcept nogil:
    """Processes the wheel's ticks up to now's: 0 when done, 1 when the ended buffer filled
    up (call again after collecting), -1 when a slot could not grow."""
    cdef wheel_t* w = &t.expiry.wheel
    cdef int64_t now_tick, tick, last
    cdef intp_t r, kept, steps, s, rid
    cdef bucket_t* b
    cdef conn_t* c
    cdef uint32_t slot
    # time only goes forward: what was due by an earlier call is due now, even if a segment
    # behind it (a full table making room by its time) changed it since
    now = max(now, t.expiry.expired_to)
    t.expiry.expired_to = now
    now_tick = now // TICK_NS
    if not w.started:
        return 0
    # a jump of a revolution or more visits every slot once, at the tick each holds; a time
    # behind the wheel still looks at its current slot, where a deadline that fell behind the
    # wheel was listed (a late segment's connection)
    steps = min(max(now_tick, w.tick) - w.tick + 1, <int64_t>WHEEL_SLOTS)
    for s in range(steps):
        tick = w.tick + s
        slot = tick & WHEEL_MASK
        b = &w.slots[slot]
        kept = 0
        r = 0
        while r < b.len:
            rid = b.rids[r]
            r += 1
            c = &recs[rid]
            if not (c.status & S_ALIVE) or (t.expiry.due[rid] & WHEEL_MASK) != slot:
                continue                            # gone, or listed in another slot since
            if ticks_after(t.expiry.due[rid], tick) > 0:
                b.rids[kept] = rid                  # due in a later revolution
                kept += 1
                continue
            if is_due(c.last_ts, t.expiry.timeout[c.state], now):
                if ended_full(&t.flows, 1):
                    # collect first: keep this one and the rest listed, resume at this tick
                    r -= 1
                    while r < b.len:
                        b.rids[kept] = b.rids[r]
                        kept += 1
                        r += 1
                    b.len = kept
                    w.tick = tick
                    return 1
                end_connection(&t.flows, c, rid, E_EXPIRED)
                remove_connection(t, recs, rid, slot_of(&t.index, &t.records.key, recs, rid))
                expired[0] += 1
                continue
            # active since it was listed: list it again at its deadline (always > now)
            last = clamp_tick(w, deadline_of(c.last_ts, t.expiry.timeout[c.state]) // TICK_NS)
            if last < now_tick:
                last = now_tick
            t.expiry.due[rid] = <uint32_t>last
            if (last & WHEEL_MASK) == slot:
                b.rids[kept] = rid
                kept += 1
            elif wheel_push(w, last, <uint32_t>rid) < 0:
                b.len = kept + (b.len - r)
                return -1
        b.len = kept
        if bound_wheel(&t.expiry, recs, t.records.used) < 0:     # between slots: nothing is being walked
            w.tick = tick + 1
            return -1
    w.tick = max(now_tick, w.tick)
    return 0


cdef int apply_batch(table_t* t, conn_t* recs, const events_t* events, const walk_t* walk,
                     intp_t start, intp_t n, int64_t* out_conn, uint8_t* out_state,
                     uint8_t* out_verdict, counts_t* cnt, intp_t* stop) noexcept nogil:
    """Applies the events at positions [start, n).

    Returns RC_DONE, or RC_NEED_SPACE / RC_ENDED_FULL / RC_NO_MEMORY with *stop the position
    to resume at.
    """
    # A local copy of the column pointers: extensions build with -fno-strict-aliasing, so
    # through the caller's struct every store to a record would force them to be reloaded.
    cdef events_t ev_local = events[0]
    cdef const events_t* ev = &ev_local
    cdef ring_t ring
    cdef probe_t ix = probe_fields(&t.index)
    cdef const uint8_t* trans = t.model.trans
    cdef const uint8_t* actions = t.model.actions
    cdef const uint8_t* class_of = t.model.class_of
    cdef int64_t* hist = t.model.hist
    cdef int64_t* class_counts = t.model.class_counts
    cdef const uint8_t* illegal = t.model.illegal
    cdef intp_t n_classes = t.model.n_classes
    cdef counts_t c_n = cnt[0]
    cdef intp_t i, k, rid
    cdef uint64_t h, pos
    cdef int64_t first_tomb
    cdef int d, rc = RC_DONE
    cdef uint8_t cls, old, nxt, act, verdict, state_out
    cdef intp_t cell, n_expired = 0
    cdef int wheel_rc, seq_rc
    cdef conn_t* c

    pipeline_start(&ring, ix, t, recs, ev, walk, start, n)
    for k in range(start, n):
        pipeline_advance(&ring, ix, t, recs, ev, walk, k, n)
        if ended_full(&t.flows, 2):   # an event may end two connections
            rc = RC_ENDED_FULL
            break
        i = event_at(walk, ev, k)
        h = ring.hash[k & (RING - 1)]
        pos = probe_start(&ring, t, k, &first_tomb)
        cls = class_of[ev.flags[i]]
        c_n.events += 1
        class_counts[cls] += 1
        rid = find(ix, recs, ev, i, h, &pos, &first_tomb, &d)
        if rid >= 0 and t.expiry.enabled and \
                is_due(recs[rid].last_ts, t.expiry.timeout[recs[rid].state], ev.ts[i]):
            # idle for its whole timeout (conntrack and Zeek expire at the deadline itself):
            # that connection is over, and this segment meets the key as if for the first
            # time (its slot is where the key goes back)
            end_connection(&t.flows, &recs[rid], rid, E_EXPIRED)
            remove_connection(t, recs, rid, pos)
            c_n.expired += 1
            if first_tomb < 0:
                first_tomb = <int64_t>pos
            rid = -1
        seq_rc = SEQ_IN_WINDOW
        if rid >= 0 and t.seq.enabled and ev.seq != NULL:
            cls = seq_class(&t.seq, seq_at(&t.seq, rid), d, cls, ev, i)
            seq_rc = seq_segment(seq_at(&t.seq, rid), d, ev, i)
            c_n.retransmitted += seq_rc == SEQ_RETRANSMISSION
            c_n.zero_window += zero_window(ev, i)
        if rid >= 0:
            c = &recs[rid]
            if illegal[cls]:
                count_illegal(c)
            old = c.state
            cell = (old * 2 + d) * n_classes + cls
            nxt = trans[cell]
            act = actions[cell]
            if seq_rc == SEQ_OUT_OF_WINDOW and not (act == A_REOPEN or act == A_FLIP
                                                    or act == A_PICKUP):
                # outside the receiver's window: a forged or stray segment, which must not
                # move the connection (a RST or FIN included). A segment that opens the key
                # afresh (a new SYN after TIME_WAIT, say) starts new sequence state instead.
                nxt = C_INVALID
                c_n.out_of_window += 1
            if nxt == C_INVALID:
                count_segment(c, d, ev, i)
                step_flow(&t.flows, rid, d, ev, i, seq_rc == SEQ_RETRANSMISSION)
                verdict = V_INVALID
                c_n.invalid += 1
            elif nxt == C_IGNORE:
                count_segment(c, d, ev, i)
                step_flow(&t.flows, rid, d, ev, i, seq_rc == SEQ_RETRANSMISSION)
                if d:
                    c.status |= S_REPLIED
                verdict = V_IGNORED
                c_n.ignored += 1
            elif act == A_REOPEN or act == A_FLIP or act == A_PICKUP:
                # the old connection ends here; this segment opens a new one under the same key
                # (flip and pickup are creation actions: on a live connection they restart it)
                hist[old] -= 1
                hist[nxt] += 1
                c_n.closed += 1
                end_connection(&t.flows, c, rid, E_CLOSED)
                start_connection(c, nxt, act == A_FLIP, act == A_PICKUP, illegal[cls], ev, i)
                start_flow(&t.flows, rid, act == A_FLIP, ev, i)
                seq_start(&t.seq, rid, act == A_FLIP, ev, i)
                list_for_eviction(&t.evict, recs, t.records.used, rid)
                if t.expiry.enabled and schedule_if_sooner(
                        &t.expiry, rid, ev.ts[i], deadline_of(ev.ts[i], t.expiry.timeout[nxt])) < 0:
                    rc = RC_NO_MEMORY
                verdict = V_NEW
                c_n.new += 1
            else:
                count_segment(c, d, ev, i)
                step_flow(&t.flows, rid, d, ev, i, seq_rc == SEQ_RETRANSMISSION)
                if nxt != old:
                    hist[old] -= 1
                    hist[nxt] += 1
                    c.state = nxt
                    if t.expiry.enabled and schedule_if_sooner(
                            &t.expiry, rid, ev.ts[i], deadline_of(c.last_ts, t.expiry.timeout[nxt])) < 0:
                        rc = RC_NO_MEMORY
                verdict = V_VALID
                c_n.valid += 1
                if act == A_CLOSE_UNREPLIED and not (c.status & S_REPLIED):
                    end_connection(&t.flows, c, rid, E_CLOSED)
                    remove_connection(t, recs, rid, pos)
                    c_n.closed += 1
                elif d:
                    c.status |= S_REPLIED
            state_out = c.state
        else:
            cell = cls  # state 0 (initial), direction 0: the sender becomes the originator
            nxt = trans[cell]
            act = actions[cell]
            if nxt >= t.model.n_states:
                verdict = V_INVALID if nxt == C_INVALID else V_IGNORED
                if nxt == C_INVALID:
                    c_n.invalid += 1
                else:
                    c_n.ignored += 1
                c_n.untracked += 1
                state_out = 0
            else:
                if t.records.count >= t.records.capacity and t.expiry.enabled:
                    # full: first let the connections whose time is up go (by this segment's
                    # time, but never past the tracker's clock: one forged timestamp must not
                    # expire the table), before growing or evicting a live one
                    wheel_rc = expire_wheel(t, recs, min(ev.ts[i], t.expiry.clock_limit),
                                            &n_expired)
                    c_n.expired += n_expired
                    n_expired = 0
                    if wheel_rc != 0:
                        class_counts[cls] -= 1  # the event is applied again afterwards
                        c_n.events -= 1
                        rc = RC_ENDED_FULL if wheel_rc > 0 else RC_NO_MEMORY
                        break
                if t.records.count >= t.records.capacity and t.evict.evicting:
                    if evict_one(t, recs) >= 0:
                        c_n.evicted += 1
                    else:
                        # full of answered connections: this one goes untracked, ignored
                        c_n.refused += 1
                        c_n.ignored += 1
                        c_n.untracked += 1
                        if out_conn != NULL:
                            out_conn[i] = -1
                            out_state[i] = 0
                            out_verdict[i] = V_IGNORED
                        continue
                if t.records.count >= t.records.capacity or t.records.count + t.index.tombstones >= t.index.max_filled:
                    class_counts[cls] -= 1  # the event is applied again after the resize
                    c_n.events -= 1
                    rc = RC_NEED_SPACE
                    break
                if first_tomb >= 0:
                    pos = <uint64_t>first_tomb
                rid = allocate_record(&t.records, recs)
                index_insert(&t.index, pos, first_tomb >= 0, h, rid)
                c = &recs[rid]
                start_connection(c, nxt, act == A_FLIP, act == A_PICKUP, illegal[cls], ev, i)
                start_flow(&t.flows, rid, act == A_FLIP, ev, i)
                seq_start(&t.seq, rid, act == A_FLIP, ev, i)
                list_for_eviction(&t.evict, recs, t.records.used, rid)
                if t.expiry.enabled and schedule(&t.expiry, rid, ev.ts[i],
                                              deadline_of(ev.ts[i], t.expiry.timeout[nxt])) < 0:
                    rc = RC_NO_MEMORY
                hist[nxt] += 1
                t.records.count += 1
                verdict = V_NEW
                c_n.new += 1
                state_out = nxt
                if act == A_CLOSE_UNREPLIED:
                    end_connection(&t.flows, c, rid, E_CLOSED)
                    remove_connection(t, recs, rid, pos)
                    c_n.closed += 1
        if t.expiry.enabled and rc == RC_DONE and bound_wheel(&t.expiry, recs, t.records.used) < 0:
            rc = RC_NO_MEMORY
        if out_conn != NULL:
            # with shards, record indices interleave: shard s owns s, s + n_shards, ...
            out_conn[i] = rid * t.n_shards + t.shard if rid >= 0 else -1
            out_state[i] = state_out
            out_verdict[i] = verdict
        if rc == RC_NO_MEMORY:
            k += 1              # this event was applied; its wheel entry is what failed
            break
    else:
        k = n
    cnt[0] = c_n
    stop[0] = k
    return rc


cdef void lookup_batch(const table_t* t, const conn_t* recs, const events_t* events,
                       const walk_t* walk, intp_t n, int64_t* out_conn, uint8_t* out_state,
                       uint8_t* out_direction) noexcept nogil:
    cdef events_t ev_local = events[0]  # see apply_batch
    cdef const events_t* ev = &ev_local
    cdef ring_t ring
    cdef probe_t ix = probe_fields(&t.index)
    cdef intp_t i, k, rid
    cdef uint64_t pos
    cdef int64_t first_tomb
    cdef int d
    pipeline_start(&ring, ix, t, recs, ev, walk, 0, n)
    for k in range(n):
        pipeline_advance(&ring, ix, t, recs, ev, walk, k, n)
        i = event_at(walk, ev, k)
        pos = probe_start(&ring, t, k, &first_tomb)
        rid = find(ix, recs, ev, i, ring.hash[k & (RING - 1)], &pos, &first_tomb, &d)
        out_conn[i] = rid * t.n_shards + t.shard if rid >= 0 else -1
        out_state[i] = recs[rid].state if rid >= 0 else 0
        out_direction[i] = <uint8_t>d if rid >= 0 else 0


def _struct_dtype(names, offsets, formats, itemsize):
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


cdef list field_offsets(const conn_t* c):
    """Byte offsets of the record fields, in dtype order."""
    cdef intp_t base = <intp_t>c
    return [<intp_t>&c.orig_h - base, <intp_t>&c.resp_h - base, <intp_t>&c.orig_p - base,
            <intp_t>&c.resp_p - base, <intp_t>&c.state - base, <intp_t>&c.status - base,
            <intp_t>&c.orig_flags - base, <intp_t>&c.resp_flags - base,
            <intp_t>&c.orig_pkts - base, <intp_t>&c.resp_pkts - base,
            <intp_t>&c.orig_bytes - base, <intp_t>&c.resp_bytes - base,
            <intp_t>&c.first_ts - base, <intp_t>&c.last_ts - base]


cdef conn4_t _dummy4
cdef conn6_t _dummy6
cdef flow_t _dummy_flow

_FIELDS = ["orig_h", "resp_h", "orig_p", "resp_p", "state", "status", "orig_flags",
           "resp_flags", "orig_pkts", "resp_pkts", "orig_bytes", "resp_bytes", "first_ts",
           "last_ts"]
# native byte order: the dtypes describe the structs in this process's memory
_COUNTER_FORMATS = ["u2", "u2", "u1", "u1", "u1", "u1", "u4", "u4", "u8", "u8", "i8", "i8"]
CONN4_DTYPE = _struct_dtype(_FIELDS, field_offsets(&_dummy4), ["u4", "u4"] + _COUNTER_FORMATS,
                            sizeof(conn4_t))
CONN6_DTYPE = _struct_dtype(_FIELDS, field_offsets(&_dummy6),
                            [("u1", (16,)), ("u1", (16,))] + _COUNTER_FORMATS, sizeof(conn6_t))
FLOW_STATE_DTYPE = _struct_dtype(
    ["history", "history_more", "seen", "orig_zeek", "resp_zeek"],
    [<intp_t>&_dummy_flow.history - <intp_t>&_dummy_flow,
     <intp_t>&_dummy_flow.history_more - <intp_t>&_dummy_flow,
     <intp_t>&_dummy_flow.seen - <intp_t>&_dummy_flow,
     <intp_t>&_dummy_flow.orig_zeek - <intp_t>&_dummy_flow,
     <intp_t>&_dummy_flow.resp_zeek - <intp_t>&_dummy_flow],
    ["u8", "u8", "u4", "u1", "u1"], sizeof(flow_t))


cdef intp_t _set_walk(events_t* ev, intp_t n, const intp_t[::1] order,
                     const uint64_t[::1] hashes) except -1:
    """Points ev at an order and its hashes (both or neither); returns the positions to walk."""
    if (order is None) != (hashes is None):
        raise ValueError("order and hashes come together")
    if order is None:
        return n
    if hashes.shape[0] != n:
        raise ValueError("hashes must have one entry per event")
    if order.shape[0] > 0:
        if np.asarray(order).min() < 0 or np.asarray(order).max() >= n:
            raise IndexError("order names events outside the batch")
        ev.order = &order[0]
        ev.hash = &hashes[0]
    return order.shape[0]


cdef struct one_event_t:
    # storage for a single event, for scalar lookups
    events_t ev
    int64_t ts
    uint32_t src4
    uint32_t dst4
    addr6_t src6
    addr6_t dst6
    uint16_t sport
    uint16_t dport
    uint8_t flags
    uint32_t length


COUNT_NAMES = ("events", "new", "valid", "invalid", "ignored", "untracked", "closed",
               "expired", "evicted", "refused", "out_of_window", "retransmitted",
               "zero_window")
# counts_t is read as an int64 array in COUNT_NAMES order
if sizeof(counts_t) != len(COUNT_NAMES) * sizeof(int64_t):
    raise ImportError("counts_t and COUNT_NAMES disagree")


def index_slots_for(intp_t capacity):
    """Index slots a table of `capacity` records uses (load at most MAX_LOAD when full)."""
    return max(8, math.ceil(capacity / MAX_LOAD))


# Restoring saved storage: a snapshot is checked against everything the kernel trusts before
# any of it is used (check_saved), so a crafted or damaged file cannot send the kernel out of
# its arrays. The index, histogram and live count are not saved but rebuilt from the records.
cdef enum:
    CK_OK = 0
    CK_STATE = 1
    CK_FLOW = 2
    CK_SEQ = 3
    CK_FREE_LIST = 4
    CK_LEAK = 5
    CK_SHARD = 6
    CK_DUPLICATE = 7
    CK_WHEEL_IDLE = 8
    CK_WHEEL_ENTRY = 9
    CK_DUE = 10
    CK_UNLISTED = 11
    CK_RING = 12
    M_FREE = 1           # marks: the record is on the free list
    M_LISTED = 2         # the record is listed in the wheel slot of its due tick

# What check_saved found, by CK_* code.
SAVED_ERRORS = (
    None,
    "a live record names a state the model does not have",
    "a live record's flow state is malformed (history letters or Zeek states)",
    "a live record's sequence state is malformed (window scale or flags)",
    "the free list names a live, unused or repeated record",
    "records below `used` that are neither live nor on the free list (or a count mismatch)",
    "a live record hashes to another shard",
    "two live records hold the same connection",
    "the expiry wheel is not started but lists records or has live connections",
    "a wheel entry names a record at or above `used`",
    "a live record is due outside the wheel's revolution",
    "a live record is not listed in the wheel slot of its due tick",
    "an eviction ring entry names a record at or above `used`",
)
if len(SAVED_ERRORS) != CK_RING + 1:
    raise ImportError("SAVED_ERRORS and the CK_* codes disagree")


cdef struct saved_t:
    # A table's storage as a snapshot holds it (NULL: not kept), for check_saved.
    const flow_t* flows
    const seq_t* seq
    wheel_saved_t wheel
    ring_saved_t ring


cdef int check_saved(table_t* t, const conn_t* recs, const saved_t* s, uint8_t* marks,
                     int64_t* hist) noexcept nogil:
    """Checks saved storage against everything the kernel trusts, in O(records + slots +
    wheel and ring entries); returns CK_OK or the first CK_* problem found.

    t is a scratch copy of the table's fields with the saved `used` and `free_head`, and an
    empty index of t.index.nslots slots: the index is rebuilt there from the live records (each
    then sits in exactly one slot, no tombstones), and t.records.count set. marks: `used` zero bytes.
    hist: n_states zeros, filled with the live records per state.
    """
    cdef intp_t rid, other, live = 0, free = 0
    cdef uint64_t h, p
    cdef uint32_t want, tag, slot
    cdef int wheel_rc
    cdef const conn_t* c
    for rid in range(t.records.used):
        c = &recs[rid]
        if not (c.status & S_ALIVE):
            continue
        if c.state >= t.model.n_states:
            return CK_STATE
        if s.flows != NULL and not flow_ok(&s.flows[rid]):
            return CK_FLOW
        if s.seq != NULL and not seq_ok(&s.seq[rid]):
            return CK_SEQ
        hist[c.state] += 1
        live += 1
    # the free list: dead records below `used`, each once (a cycle repeats one), and with the
    # live ones all of them: a dead record off the list would be lost, and allocation would
    # hand out records past the arrays before the table counted itself full
    rid = <intp_t>t.records.free_head
    while rid >= 0:
        if rid >= t.records.used or recs[rid].status & S_ALIVE or marks[rid] & M_FREE:
            return CK_FREE_LIST
        marks[rid] |= M_FREE
        free += 1
        rid = next_free(recs, rid)
    if free + live != t.records.used:
        return CK_LEAK
    t.records.count = live
    rebuild_index(&t.index, &t.records.key, recs, t.records.used)
    # every live record in its shard, and none holding another's connection (a lookup would
    # only ever find the first); found by walking each record's probe to its own slot
    for rid in range(t.records.used):
        c = &recs[rid]
        if not (c.status & S_ALIVE):
            continue
        h = record_hash(&t.records.key, c)
        if not in_shard(t, h):
            return CK_SHARD
        p = fastrange(h, t.index.nslots)
        want = <uint32_t>(rid + SLOT_ID_BIAS)
        tag = hash_tag(h, t.index.tag_mask)
        slot = t.index.slots[p]
        while (slot & t.index.id_mask) != want:
            other = <intp_t>(slot & t.index.id_mask) - SLOT_ID_BIAS
            if (slot >> t.index.id_bits) == tag and same_connection(c, &recs[other]):
                return CK_DUPLICATE
            p += 1
            if p == t.index.nslots:
                p = 0
            slot = t.index.slots[p]
    if s.wheel.due != NULL:
        wheel_rc = wheel_saved_check(&s.wheel, recs, t.records.used, live, marks, M_LISTED)
        if wheel_rc != WHEEL_SAVED_OK:
            return CK_WHEEL_IDLE + wheel_rc - WHEEL_SAVED_IDLE    # the same problems, in order
    if s.ring.ring != NULL and not ring_saved_ok(&s.ring, t.records.used):
        return CK_RING
    return CK_OK


cdef inline void* _data(array):
    """The data of an array the table owns, or NULL for a part it does not keep."""
    return NULL if array is None else cnp.PyArray_DATA(array)


def _grown(array, intp_t capacity, intp_t used):
    """A per-record array resized to `capacity` rows, its first `used` kept; None stays None."""
    if array is None:
        return None
    grown = np.zeros((capacity,) + array.shape[1:], dtype=array.dtype)
    grown[:used] = array[:used]
    return grown


cdef intp_t _column_length(object column, int typenum, str name) except -1:
    if not cnp.PyArray_Check(column) or cnp.PyArray_NDIM(<cnp.ndarray>column) != 1:
        raise ValueError(f"{name} must be a 1-D array")
    return cnp.PyArray_DIM(<cnp.ndarray>column, 0)


cdef const void* _column_data(object column, int typenum, intp_t n, int ndim,
                              str name) except? NULL:
    """The data of a column the kernel reads: an aligned, C-contiguous array of `typenum`
    with n rows (of 2 items when ndim is 2: IPv6 addresses as two uint64)."""
    cdef cnp.ndarray a
    if not cnp.PyArray_Check(column):
        raise ValueError(f"{name} must be an array")
    a = <cnp.ndarray>column
    if (cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != ndim
            or cnp.PyArray_DIM(a, 0) != n or (ndim == 2 and cnp.PyArray_DIM(a, 1) != 2)
            or not cnp.PyArray_ISCARRAY_RO(a)):
        raise ValueError(f"{name} must be an aligned, contiguous {np.dtype(typenum)} array "
                         f"of {n} rows like ts")
    return cnp.PyArray_DATA(a)


def _side_copy(side, view):
    """A contiguous copy of a view into the side rows `side`, padding bytes included (numpy
    copies a structured dtype field by field and would leave them undefined); None stays."""
    if view is None:
        return None
    size = view.dtype.itemsize * (view.shape[1] if view.ndim == 2 else 1)
    start = view.ctypes.data - side.ctypes.data
    raw = np.lib.stride_tricks.as_strided(side[start:], (view.shape[0], size),
                                          (view.strides[0], 1))
    return raw.copy().view(view.dtype).reshape(view.shape)


cdef class FlowTable:
    """The connections of one address family (4 or 6) under one compiled model.

    Not thread-safe: the Python layer serialises calls.
    """
    cdef table_t t
    cdef counts_t totals
    cdef readonly int family
    cdef object _records       # numpy structured array, CONN4_DTYPE or CONN6_DTYPE
    cdef object _index         # numpy uint32
    cdef object _hist          # numpy int64 [n_states]
    cdef object _class_counts  # numpy int64 [n_classes]
    cdef object _model_arrays  # keeps the compiled model's buffers alive
    cdef object _flows         # FLOW_STATE_DTYPE per record, or None
    cdef object _ended         # records of ended connections (CONN dtype), or None
    cdef object _ended_flows   # and their FLOW_STATE_DTYPE rows
    cdef object _ended_reason  # and why each ended (END_*)
    cdef object _due           # uint32 per record (expiry), or None
    cdef object _timeout       # int64 ns per state (expiry), or None
    cdef object _evict_ring    # uint64 ring (eviction), or None
    cdef object _seq           # uint8 (capacity, sizeof(seq_t)) sequence state, or None
    # _flows and _seq are strided views into one buffer: a record's sequence and flow states
    # share a side row (64 bytes with both, 64-byte aligned), so that the side state of a
    # segment's connection is one cache line, not the two or three of separate arrays
    cdef object _side          # that buffer, or None
    cdef intp_t _side_stride   # bytes per side row

    def __cinit__(self, int family, intp_t capacity, class_of, trans, actions, illegal,
                  intp_t n_states, intp_t n_classes, keys, int shard=0, int n_shards=1,
                  bint flows=False, intp_t ended_capacity=4096, timeouts=None,
                  bint evict=False, early=None):
        if family not in (4, 6):
            raise ValueError(f"address family must be 4 or 6, not {family!r}")
        if n_shards not in (1, 2, 4) or not 0 <= shard < n_shards:
            raise ValueError(f"n_shards must be 1, 2 or 4 and shard below it, "
                             f"not {shard} of {n_shards}")
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be between 1 and {MAX_CAPACITY}, not {capacity}")
        if not 1 <= n_states < IGNORE or n_classes < 1:
            raise ValueError(f"a model has 1 to {IGNORE - 1} states and at least one class")
        # private copies, checked once: the kernel indexes with these values unchecked
        class_of = np.array(class_of, dtype=np.uint8, copy=True).ravel()
        trans = np.array(trans, dtype=np.uint8, copy=True).ravel()
        actions = np.array(actions, dtype=np.uint8, copy=True).ravel()
        illegal = (np.array(illegal, copy=True).ravel() != 0).astype(np.uint8)
        early = (np.arange(n_classes, dtype=np.uint8) if early is None
                 else np.array(early, dtype=np.uint8, copy=True).ravel())
        if early.shape[0] != n_classes or early.max() >= n_classes:
            raise ValueError(f"early must map each of the {n_classes} classes to a class")
        if illegal.shape[0] != n_classes:
            raise ValueError(f"illegal must have one entry per flag class ({n_classes})")
        if class_of.shape[0] != 256 or class_of.max() >= n_classes:
            raise ValueError(f"class_of must map 256 flag bytes to classes below {n_classes}")
        if trans.shape[0] != n_states * 2 * n_classes or actions.shape[0] != trans.shape[0]:
            raise ValueError("transition and action tables must have n_states * 2 * n_classes cells")
        if ((trans >= n_states) & (trans != INVALID) & (trans != IGNORE)).any():
            raise ValueError(f"transition cells must name a state below {n_states}, "
                             f"INVALID or IGNORE")
        if actions.max() > A_LAST:
            raise ValueError(f"action codes are 0..{A_LAST}")
        cdef const uint8_t[::1] class_v = class_of
        cdef const uint8_t[::1] trans_v = trans
        cdef const uint8_t[::1] actions_v = actions
        cdef const uint8_t[::1] illegal_v = illegal
        cdef const uint8_t[::1] early_v = early
        memset(&self.t, 0, sizeof(table_t))
        memset(&self.totals, 0, sizeof(counts_t))
        self.family = family
        self._model_arrays = (class_of, trans, actions, illegal, early)
        self.t.model.illegal = &illegal_v[0]
        self.t.seq.early = &early_v[0]
        self.t.model.class_of = &class_v[0]
        self.t.model.trans = &trans_v[0]
        self.t.model.actions = &actions_v[0]
        self.t.model.n_states = n_states
        self.t.model.n_classes = n_classes
        self.t.n_shards = n_shards
        self.t.shard = shard
        k0, k1, k2, k3 = keys
        self.t.records.key.k0, self.t.records.key.k1 = k0, k1
        self.t.records.key.k2, self.t.records.key.k3 = k2, k3 | 1
        self._hist = np.zeros(n_states, dtype=np.int64)
        cdef int64_t[::1] hist = self._hist
        self.t.model.hist = &hist[0]
        self._class_counts = np.zeros(n_classes, dtype=np.int64)
        cdef int64_t[::1] class_counts = self._class_counts
        self.t.model.class_counts = &class_counts[0]
        self.t.records.free_head = -1
        self.t.flows.ended_capacity = 1 << 62
        self.t.expiry.clock_limit = INT64_MAX
        if timeouts is not None:
            timeouts = np.array(timeouts, dtype=np.int64, copy=True).ravel()
            if timeouts.shape[0] != n_states or (timeouts < 0).any():
                raise ValueError(f"timeouts must give every state ({n_states}) a number of "
                                 f"nanoseconds >= 0")
            self._timeout = timeouts
            self.t.expiry.timeout = <const int64_t*>cnp.PyArray_DATA(timeouts)
            self._due = np.zeros(0, dtype=np.uint32)
            self.t.expiry.wheel.slots = wheel_new()
            if self.t.expiry.wheel.slots == NULL:
                raise MemoryError("expiry wheel")
        if evict:
            self._evict_ring = np.zeros(ring_size_for(capacity), dtype=np.uint64)
        if flows:
            if ended_capacity < 2:
                raise ValueError("ended_capacity must be at least 2")
            self._ended = np.zeros(ended_capacity,
                                   dtype=CONN4_DTYPE if family == 4 else CONN6_DTYPE)
            self._ended_flows = np.zeros(ended_capacity, dtype=FLOW_STATE_DTYPE)
            self._ended_reason = np.zeros(ended_capacity, dtype=np.uint8)
            self.t.flows.ended = cnp.PyArray_DATA(self._ended)
            self.t.flows.ended_flows = <flow_t*>cnp.PyArray_DATA(self._ended_flows)
            self.t.flows.ended_reason = <uint8_t*>cnp.PyArray_DATA(self._ended_reason)
            self.t.flows.ended_capacity = ended_capacity
            self._flows = np.zeros(0, dtype=FLOW_STATE_DTYPE)
        self._records = np.zeros(0, dtype=CONN4_DTYPE if family == 4 else CONN6_DTYPE)
        self._allocate(capacity)

    def __dealloc__(self):
        free_wheel(self.t.expiry.wheel.slots)
        self.t.expiry.wheel.slots = NULL

    cdef _allocate(self, intp_t capacity):
        """Sizes every part for `capacity` records (keeping the records in use) and rebuilds
        the index. The per-record arrays, the records' and each kept part's, grow alike."""
        cdef intp_t used = self.t.records.used
        self._records = _grown(self._records, capacity, used)
        self._take_side(self._side_rows(capacity, used, self._flows, self._seq))
        self._due = _grown(self._due, capacity, used)
        if self._evict_ring is not None and len(self._evict_ring) < ring_size_for(capacity):
            self._grow_evict_ring(capacity)
        self._index = np.zeros(index_slots_for(capacity), dtype=np.uint32)
        self.t.records.capacity = capacity
        self._attach()
        self._rebuild()

    cdef _attach(self):
        """Points every part at the arrays holding it, after growth or a restore: a part
        whose array is None is disabled."""
        index_size(&self.t.index, <uint32_t*>_data(self._index), len(self._index),
                   self.t.records.capacity, MAX_FILL)
        expiry_attach(&self.t.expiry, _data(self._due))
        self.t.expiry.wheel.limit = wheel_bound(self.t.records.capacity)
        evict_attach(&self.t.evict, _data(self._evict_ring),
                     0 if self._evict_ring is None else len(self._evict_ring))
        seq_attach(&self.t.seq, _data(self._seq), self._side_stride)
        flows_attach(&self.t.flows, _data(self._flows), self._side_stride)

    cdef tuple _side_rows(self, intp_t capacity, intp_t used, flows, seq):
        """New side rows for `capacity` records: the sequence state (unless `seq` is None),
        then the flow state (unless `flows` is None) of each record, rows 64-byte aligned,
        holding the first `used` records' states from `flows` and `seq` (shorter ones: what
        they have; the rest zeros). Returns (buffer, flows view, seq view, stride); nothing of
        the table changes."""
        cdef intp_t seq_size = 0 if seq is None else sizeof(seq_t)
        cdef intp_t stride = seq_size + (0 if flows is None else sizeof(flow_t))
        if stride == 0:
            return None, None, None, 0
        buffer = np.zeros(capacity * stride + 64, dtype=np.uint8)
        cdef intp_t start = (-<intp_t>cnp.PyArray_DATA(buffer)) & 63
        flows_view = seq_view = None
        if seq is not None:
            seq_view = np.ndarray((capacity, sizeof(seq_t)), np.uint8, buffer, start,
                                  (stride, 1))
            kept = min(used, len(seq))
            seq_view[:kept] = seq[:kept]
        if flows is not None:
            flows_view = np.ndarray((capacity,), FLOW_STATE_DTYPE, buffer, start + seq_size,
                                    (stride,))
            kept = min(used, len(flows))
            flows_view[:kept] = flows[:kept]
        return buffer, flows_view, seq_view, stride

    cdef _take_side(self, tuple rows):
        """Makes the side rows `_side_rows` made this table's (`_attach` points the parts)."""
        self._side, self._flows, self._seq, self._side_stride = rows

    cdef void* _records_ptr(self):
        return cnp.PyArray_DATA(self._records)

    cdef _rebuild(self):
        if self.family == 4:
            rebuild_index(&self.t.index, &self.t.records.key, <conn4_t*>self._records_ptr(),
                          self.t.records.used)
        else:
            rebuild_index(&self.t.index, &self.t.records.key, <conn6_t*>self._records_ptr(),
                          self.t.records.used)

    cdef _grow_evict_ring(self, intp_t capacity):
        """A larger ring keeping the listed entries in order."""
        size = ring_size_for(capacity)
        old = self._evict_ring
        kept = np.roll(old, -(self.t.evict.head % len(old)))[
            : self.t.evict.tail - self.t.evict.head].copy()
        ring = np.zeros(size, dtype=np.uint64)
        ring[: len(kept)] = kept
        self._evict_ring = ring
        self.t.evict.head, self.t.evict.tail = 0, len(kept)

    def counters(self):
        """What `restore` needs besides `storage` and `wheel_lists`: records in use, the free
        list's head, the totals, the wheel's position, the eviction ring's."""
        return {"used": self.t.records.used, "free_head": self.t.records.free_head,
                "totals": self._counts_dict(&self.totals), "evicting": bool(self.t.evict.evicting),
                "wheel_tick": self.t.expiry.wheel.tick, "wheel_started": bool(self.t.expiry.wheel.started),
                "evict_head": self.t.evict.head, "evict_tail": self.t.evict.tail}

    def wheel_lists(self):
        """(entries per slot, all entries in slot order): the wheel as arrays, or None."""
        if self._due is None:
            return None
        cdef intp_t i
        lengths = np.array([self.t.expiry.wheel.slots[i].len for i in range(WHEEL_SLOTS)],
                           dtype=np.int64)
        entries = np.empty(lengths.sum(), dtype=np.uint32)
        cdef uint32_t[::1] out = entries
        cdef intp_t at = 0
        for i in range(WHEEL_SLOTS):
            if self.t.expiry.wheel.slots[i].len:
                memcpy(&out[at], self.t.expiry.wheel.slots[i].rids,
                       self.t.expiry.wheel.slots[i].len * sizeof(uint32_t))
                at += self.t.expiry.wheel.slots[i].len
        return lengths, entries

    def restore(self, records, flows, due, evict_ring, seq, wheel_lists, class_counts,
                dict counters):
        """Takes over saved storage (records, due ticks, eviction ring) as this table's,
        without a copy (memory maps will do: writable, contiguous, this table's capacity),
        copies the flow and sequence states into its side rows, and takes the wheel's lists. Rebuilds what derives from them: the count,
        the histogram, the index. The table then goes on exactly as the one saved would have.

        Everything the kernel will trust is checked first, in O(records + index slots + wheel
        and ring entries): dtypes and shapes; that the free list and the live records account
        for every record in use; live records' states, shards, distinct connections, flow and
        sequence states; wheel entries and due ticks; eviction ring entries. A failed check
        raises ValueError naming it and leaves the table as it was.
        """
        dtype = CONN4_DTYPE if self.family == 4 else CONN6_DTYPE
        cdef intp_t used = counters["used"], n_states = self.t.model.n_states
        cdef int64_t free_head = counters["free_head"]
        shape = (self.t.records.capacity,)
        if records.dtype != dtype or records.shape != shape:
            raise ValueError(f"records must be {self.t.records.capacity} rows of the table's record "
                             f"dtype")
        if (self._flows is None) != (flows is None) or (flows is not None and (
                flows.dtype != FLOW_STATE_DTYPE or flows.shape != shape)):
            raise ValueError("flows must match the records, and only with flows kept")
        if not 0 <= used <= self.t.records.capacity or not -1 <= free_head < used:
            raise ValueError("record counters do not fit the table")
        if (self._due is None) != (due is None) or (due is not None and (
                due.dtype != np.uint32 or due.shape != shape or wheel_lists is None
                or wheel_lists[0].dtype != np.int64 or wheel_lists[0].shape != (WHEEL_SLOTS,)
                or wheel_lists[1].dtype != np.uint32 or wheel_lists[1].ndim != 1
                or (wheel_lists[0] < 0).any() or wheel_lists[0].max() > 0xffffffff
                or wheel_lists[0].sum() != wheel_lists[1].shape[0])):
            raise ValueError("expiry state must match the records (wheel slot lengths >= 0 "
                             "summing to its entries), and only with expiry")
        if (self._evict_ring is None) != (evict_ring is None) or (evict_ring is not None and (
                evict_ring.dtype != np.uint64 or evict_ring.ndim != 1
                or len(evict_ring) < 2 * self.t.records.capacity
                or len(evict_ring) & (len(evict_ring) - 1)
                or not 0 <= counters["evict_head"] <= counters["evict_tail"]
                <= counters["evict_head"] + len(evict_ring))):
            raise ValueError("the eviction ring must be a power of two, at least twice the "
                             "capacity, with at most its length listed, and only with "
                             "eviction")
        if seq is not None and (seq.dtype != np.uint8
                                or seq.shape != (self.t.records.capacity, sizeof(seq_t))):
            raise ValueError("sequence state must be uint8 (capacity, record size)")
        for array in (records, flows, due, evict_ring, seq):
            if array is not None and not (array.flags.writeable and array.flags.c_contiguous):
                raise ValueError("saved arrays must be writable and contiguous")
        class_counts = np.asarray(class_counts)
        if (class_counts.dtype != np.int64 or class_counts.shape != (self.t.model.n_classes,)
                or (class_counts < 0).any()):
            raise ValueError(f"class counts must be {self.t.model.n_classes} int64 counts >= 0")
        totals = counters["totals"]
        if set(totals) != set(COUNT_NAMES) or not all(0 <= v < 2**63 for v in totals.values()):
            raise ValueError(f"totals must give each of {COUNT_NAMES} as a count >= 0")

        # the structure, checked on scratch copies: nothing of this table changes yet
        marks = np.zeros(used, dtype=np.uint8)
        hist = np.zeros(n_states, dtype=np.int64)
        index = np.zeros(self.t.index.nslots, dtype=np.uint32)
        cdef table_t scratch = self.t
        scratch.index.slots = <uint32_t*>cnp.PyArray_DATA(index)
        scratch.records.used, scratch.records.free_head = used, free_head
        cdef saved_t s
        memset(&s, 0, sizeof(saved_t))
        if flows is not None:
            s.flows = <const flow_t*>cnp.PyArray_DATA(flows)
        if seq is not None:
            s.seq = <const seq_t*>cnp.PyArray_DATA(seq)
        if due is not None:
            # (held in locals: s points into them until the end)
            lengths, entries = (np.ascontiguousarray(a) for a in wheel_lists)
            s.wheel.due = <const uint32_t*>cnp.PyArray_DATA(due)
            s.wheel.lengths = <const int64_t*>cnp.PyArray_DATA(lengths)
            s.wheel.entries = <const uint32_t*>cnp.PyArray_DATA(entries)
            s.wheel.n_entries = entries.shape[0]
            s.wheel.tick, s.wheel.started = counters["wheel_tick"], counters["wheel_started"]
        if evict_ring is not None:
            s.ring.ring = <const uint64_t*>cnp.PyArray_DATA(evict_ring)
            s.ring.capacity = len(evict_ring)
            s.ring.head, s.ring.tail = counters["evict_head"], counters["evict_tail"]
        cdef const void* recs = cnp.PyArray_DATA(records)
        cdef uint8_t* marks_p = <uint8_t*>cnp.PyArray_DATA(marks)
        cdef int64_t* hist_p = <int64_t*>cnp.PyArray_DATA(hist)
        cdef int rc
        with nogil:
            if self.family == 4:
                rc = check_saved(&scratch, <const conn4_t*>recs, &s, marks_p, hist_p)
            else:
                rc = check_saved(&scratch, <const conn6_t*>recs, &s, marks_p, hist_p)
        if rc != CK_OK:
            raise ValueError(SAVED_ERRORS[rc])
        cdef bucket_t* slots = NULL
        if due is not None:
            slots = wheel_from_lists(s.wheel.lengths, s.wheel.entries)
            if slots == NULL:
                raise MemoryError("expiry wheel")
        side = self._side_rows(self.t.records.capacity, used, flows, seq)

        # all checked and allocated: take the storage over (nothing below can fail)
        self._records, self._index = records, index
        self._take_side(side)
        self._due = due
        if evict_ring is not None:
            self._evict_ring = evict_ring
        self._attach()
        self.t.records.used, self.t.records.free_head = used, free_head
        self.t.records.count = scratch.records.count
        self.t.index.tombstones = scratch.index.tombstones
        self._hist[:] = hist
        self._class_counts[:] = class_counts
        cdef int64_t* total = <int64_t*>&self.totals
        for name, value in totals.items():
            total[COUNT_NAMES.index(name)] = value
        if due is not None:
            free_wheel(self.t.expiry.wheel.slots)
            self.t.expiry.wheel.slots = slots
            self.t.expiry.wheel.allocated = s.wheel.n_entries     # wheel_from_lists allocates no slack
            self.t.expiry.wheel.tick, self.t.expiry.wheel.started = s.wheel.tick, s.wheel.started
        if evict_ring is not None:
            self.t.evict.head, self.t.evict.tail = s.ring.head, s.ring.tail
            self.t.evict.evicting = counters["evicting"]

    def set_clock_limit(self, int64_t limit, int64_t expired_to=0):
        """The latest time (ns) a full table may expire connections by, before it grows or
        evicts: the tracker's clock. Without it, one forged far-future segment arriving at a
        full table would expire every connection. `expired_to`: the time the tracker has
        expired to; a full table expires by at least that."""
        self.t.expiry.clock_limit = limit
        self.t.expiry.expired_to = max(self.t.expiry.expired_to, expired_to)

    def set_evicting(self, bint evicting):
        """At its bound, a full table with eviction on evicts instead of asking for room."""
        if evicting and self._evict_ring is None:
            raise ValueError("this table was made without eviction")
        self.t.evict.evicting = evicting

    def expire(self, int64_t now):
        """Ends the connections idle past their state's timeout at `now` (ns).

        Looks only at the wheel slots of the ticks up to now: the connections scheduled there,
        expired or listed again at their real deadline. Returns (expired, done): done is False
        when the ended buffer filled up; collect it (take_ended) and call again.
        """
        if self._due is None:
            raise ValueError("this table was made without expiry")
        cdef intp_t expired = 0
        cdef bint done = True
        cdef int rc = 0
        cdef void* recs = self._records_ptr()
        with nogil:
            if self.family == 4:
                rc = expire_wheel(&self.t, <conn4_t*>recs, now, &expired)
            else:
                rc = expire_wheel(&self.t, <conn6_t*>recs, now, &expired)
        if rc < 0:
            raise MemoryError("expiry wheel")
        self.totals.expired += expired
        return expired, rc == 0

    def resize(self, intp_t capacity):
        """Reallocates for `capacity` records (>= the records in use) and rehashes.

        Record indices stay valid; numpy views taken earlier keep showing the old storage.
        """
        if not self.t.records.used <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be between {self.t.records.used} and {MAX_CAPACITY}")
        self._allocate(capacity)

    def compact_index(self):
        """Drops tombstones by rebuilding the index in place."""
        self._rebuild()

    def enable_sequence(self):
        """Keeps sequence state from now on (connections already tracked start unseen, and
        are taken liberally until both sides have been seen with sequence numbers)."""
        if self._seq is None:
            self._take_side(self._side_rows(self.t.records.capacity, self.t.records.used,
                                            self._flows,
                                            np.zeros((0, sizeof(seq_t)), dtype=np.uint8)))
            self._attach()

    @property
    def sequence_aware(self):
        return self._seq is not None

    cdef events_t _events(self, ts, src, sport, dst, dport, flags, length) except *:
        """The batch's columns, checked as the kernel reads them (contiguous, aligned, of its
        dtypes, one length): a check per array, cheaper than a typed memoryview each, which
        a call of a few events would feel."""
        cdef events_t ev
        memset(&ev, 0, sizeof(events_t))
        cdef intp_t n = _column_length(ts, cnp.NPY_INT64, "ts")
        ev.ts = <const int64_t*>_column_data(ts, cnp.NPY_INT64, n, 1, "ts")
        ev.sport = <const uint16_t*>_column_data(sport, cnp.NPY_UINT16, n, 1, "sport")
        ev.dport = <const uint16_t*>_column_data(dport, cnp.NPY_UINT16, n, 1, "dport")
        ev.flags = <const uint8_t*>_column_data(flags, cnp.NPY_UINT8, n, 1, "flags")
        ev.length = <const uint32_t*>_column_data(length, cnp.NPY_UINT32, n, 1, "length")
        if self.family == 4:
            ev.src4 = <const uint32_t*>_column_data(src, cnp.NPY_UINT32, n, 1, "src")
            ev.dst4 = <const uint32_t*>_column_data(dst, cnp.NPY_UINT32, n, 1, "dst")
        else:
            ev.src6 = <const addr6_t*>_column_data(src, cnp.NPY_UINT64, n, 2, "src")
            ev.dst6 = <const addr6_t*>_column_data(dst, cnp.NPY_UINT64, n, 2, "dst")
        return ev

    def update(self, ts, src, sport, dst, dport, flags, length, intp_t start,
               int64_t[::1] out_conn=None, uint8_t[::1] out_state=None,
               uint8_t[::1] out_verdict=None, const intp_t[::1] order=None,
               const uint64_t[::1] hashes=None, sequence=None):
        """Applies the events at positions [start, n) of validated, contiguous columns.

        With `order` (from `partition`), position k is event order[k] and n = len(order);
        `hashes` then gives every event's hash so it is not computed again. Returns
        (stop, counts): stop < n means the table needs room (resize or compaction) or its
        ended buffer collecting (`ended_full`) before position `stop`; counts holds what the
        applied events did. Arrays must stay alive during the call,
        which the caller's references guarantee.
        """
        cdef intp_t n = len(ts)
        cdef events_t ev = self._events(ts, src, sport, dst, dport, flags, length)
        cdef counts_t cnt
        cdef intp_t stop = start
        if sequence is not None and n > 0:
            seq, ack, window, wscale = sequence
            ev.seq = <const uint32_t*>_column_data(seq, cnp.NPY_UINT32, n, 1, "seq")
            ev.ack = <const uint32_t*>_column_data(ack, cnp.NPY_UINT32, n, 1, "ack")
            ev.window = <const uint16_t*>_column_data(window, cnp.NPY_UINT16, n, 1, "window")
            ev.wscale = <const int8_t*>_column_data(wscale, cnp.NPY_INT8, n, 1, "wscale")
            self.enable_sequence()
        cdef int64_t* conn_p = NULL
        cdef uint8_t* state_p = NULL
        cdef uint8_t* verdict_p = NULL
        cdef void* recs = self._records_ptr()
        memset(&cnt, 0, sizeof(counts_t))
        if out_conn is not None and n > 0:
            conn_p, state_p, verdict_p = &out_conn[0], &out_state[0], &out_verdict[0]
        n = _set_walk(&ev, n, order, hashes)
        cdef int rc = RC_DONE
        if start < n:
            with nogil:
                if self.family == 4 and ev.order == NULL:
                    rc = apply_batch(&self.t, <conn4_t*>recs, &ev, <walk_all_t*>NULL, start, n,
                                     conn_p, state_p, verdict_p, &cnt, &stop)
                elif self.family == 4:
                    rc = apply_batch(&self.t, <conn4_t*>recs, &ev, <walk_ordered_t*>NULL, start,
                                     n, conn_p, state_p, verdict_p, &cnt, &stop)
                elif ev.order == NULL:
                    rc = apply_batch(&self.t, <conn6_t*>recs, &ev, <walk_all_t*>NULL, start, n,
                                     conn_p, state_p, verdict_p, &cnt, &stop)
                else:
                    rc = apply_batch(&self.t, <conn6_t*>recs, &ev, <walk_ordered_t*>NULL, start,
                                     n, conn_p, state_p, verdict_p, &cnt, &stop)
        self._add_totals(&cnt)
        if rc == RC_NO_MEMORY:
            raise MemoryError(f"expiry wheel: events before {stop} were applied")
        return stop, self._counts_dict(&cnt)

    def partition(self, ts, src, sport, dst, dport, flags, length, intp_t lo, intp_t hi,
                  uint64_t[::1] out_hash, intp_t[:, ::1] out_order):
        """Hashes events [lo, hi) and sorts their indices by shard, keeping their order.

        Writes each event's hash to out_hash[i] and the indices of shard s's events to
        out_order[s, :count[s]]; returns the counts. Without branches on the shard, so the
        split costs the same whatever the traffic.
        """
        cdef intp_t n = len(ts)
        if not 0 <= lo <= hi <= n or out_hash.shape[0] != n:
            raise ValueError("event range or hash array does not match the batch")
        if out_order.shape[0] != self.t.n_shards or out_order.shape[1] < hi - lo:
            raise ValueError("out_order must have one row per shard, as long as the range")
        cdef events_t ev = self._events(ts, src, sport, dst, dport, flags, length)
        cdef intp_t counts[MAX_SHARDS]
        cdef intp_t i, s
        cdef uint64_t h
        cdef uint32_t mask = self.t.n_shards - 1
        memset(counts, 0, sizeof(counts))
        with nogil:
            for i in range(lo, hi):
                if self.family == 4:
                    h = event_hash(&self.t.records.key, <conn4_t*>NULL, &ev, i)
                else:
                    h = event_hash(&self.t.records.key, <conn6_t*>NULL, &ev, i)
                out_hash[i] = h
                s = (h >> SHARD_SHIFT) & mask
                out_order[s, counts[s]] = i
                counts[s] += 1
        return [counts[s] for s in range(self.t.n_shards)]

    cdef void _add_totals(self, const counts_t* cnt):
        cdef int64_t* total = <int64_t*>&self.totals
        cdef const int64_t* add = <const int64_t*>cnt
        cdef intp_t k
        for k in range(len(COUNT_NAMES)):
            total[k] += add[k]

    cdef dict _counts_dict(self, const counts_t* cnt):
        cdef const int64_t* value = <const int64_t*>cnt
        return {name: value[k] for k, name in enumerate(COUNT_NAMES)}

    def lookup(self, src, sport, dst, dport, int64_t[::1] out_conn, uint8_t[::1] out_state,
               uint8_t[::1] out_dir, const intp_t[::1] order=None,
               const uint64_t[::1] hashes=None):
        """Fills the outputs for the keys (all, or those `order` lists), conn -1 if absent.

        Other keys are left as they are, so shards can fill one set of arrays.
        """
        cdef intp_t n = len(sport)
        if out_conn.shape[0] != n or out_state.shape[0] != n or out_dir.shape[0] != n:
            raise ValueError("output arrays must match the keys in length")
        if n == 0:
            return
        zeros64 = np.zeros(n, dtype=np.int64)
        zeros8 = np.zeros(n, dtype=np.uint8)
        zeros32 = np.zeros(n, dtype=np.uint32)
        cdef events_t ev = self._events(zeros64, src, sport, dst, dport, zeros8, zeros32)
        cdef void* recs = self._records_ptr()
        n = _set_walk(&ev, n, order, hashes)
        with nogil:
            if self.family == 4 and ev.order == NULL:
                lookup_batch(&self.t, <conn4_t*>recs, &ev, <walk_all_t*>NULL, n, &out_conn[0],
                             &out_state[0], &out_dir[0])
            elif self.family == 4:
                lookup_batch(&self.t, <conn4_t*>recs, &ev, <walk_ordered_t*>NULL, n,
                             &out_conn[0], &out_state[0], &out_dir[0])
            elif ev.order == NULL:
                lookup_batch(&self.t, <conn6_t*>recs, &ev, <walk_all_t*>NULL, n, &out_conn[0],
                             &out_state[0], &out_dir[0])
            else:
                lookup_batch(&self.t, <conn6_t*>recs, &ev, <walk_ordered_t*>NULL, n,
                             &out_conn[0], &out_state[0], &out_dir[0])

    cdef int _one_event(self, one_event_t* one, src, uint16_t sport, dst,
                        uint16_t dport) except -1:
        """Points one.ev at a single event held in *one (ints for IPv4, 16 bytes for IPv6)."""
        memset(one, 0, sizeof(one_event_t))
        one.sport, one.dport = sport, dport
        one.ev.ts, one.ev.flags, one.ev.length = &one.ts, &one.flags, &one.length
        one.ev.sport, one.ev.dport = &one.sport, &one.dport
        if self.family == 4:
            one.src4, one.dst4 = src, dst
            one.ev.src4, one.ev.dst4 = &one.src4, &one.dst4
        else:
            if len(src) != 16 or len(dst) != 16:
                raise ValueError("IPv6 addresses are 16 bytes")
            memcpy(&one.src6, <const char*>src, 16)
            memcpy(&one.dst6, <const char*>dst, 16)
            one.ev.src6, one.ev.dst6 = &one.src6, &one.dst6
        return 0

    cdef uint64_t _hash_one(self, const one_event_t* one):
        if self.family == 4:
            return event_hash(&self.t.records.key, <conn4_t*>NULL, &one.ev, 0)
        return event_hash(&self.t.records.key, <conn6_t*>NULL, &one.ev, 0)

    def find_one(self, src, uint16_t sport, dst, uint16_t dport):
        """(record index, direction) of one connection, or (-1, 0).

        src and dst are ints for IPv4 and 16-byte strings for IPv6.
        """
        cdef one_event_t one
        cdef uint64_t pos, h
        cdef int64_t first_tomb
        cdef int d = 0
        cdef intp_t rid
        cdef probe_t ix = probe_fields(&self.t.index)
        self._one_event(&one, src, sport, dst, dport)
        h = self._hash_one(&one)
        pos = fastrange(h, ix.nslots)
        first_tomb = -1
        if self.family == 4:
            rid = find(ix, <conn4_t*>self._records_ptr(), &one.ev, 0, h, &pos, &first_tomb, &d)
        else:
            rid = find(ix, <conn6_t*>self._records_ptr(), &one.ev, 0, h, &pos, &first_tomb, &d)
        if rid < 0 or not in_shard(&self.t, h):
            return -1, 0
        return rid * self.t.n_shards + self.t.shard, d

    def _home_and_tag(self, src, uint16_t sport, dst, uint16_t dport):
        """Test hook: (home slot, hash tag) of a key under this table's hash key and size."""
        cdef one_event_t one
        self._one_event(&one, src, sport, dst, dport)
        cdef uint64_t h = self._hash_one(&one)
        return fastrange(h, self.t.index.nslots), (h >> 32) & self.t.index.tag_mask

    def record_values(self, intp_t conn):
        """The fields of the record `find_one` named `conn`, in CONN4_DTYPE / CONN6_DTYPE order.

        Addresses come out as ints (IPv4) or 16-byte strings (IPv6).
        """
        if conn % self.t.n_shards != self.t.shard:
            raise IndexError(f"record {conn} belongs to another shard")
        cdef intp_t rid = conn // self.t.n_shards
        if not 0 <= rid < self.t.records.used:
            raise IndexError(f"record {rid} is not in use")
        cdef conn4_t* c4
        cdef conn6_t* c6
        if self.family == 4:
            c4 = &(<conn4_t*>self._records_ptr())[rid]
            return (c4.orig_h, c4.resp_h, c4.orig_p, c4.resp_p, c4.state, c4.status,
                    c4.orig_flags, c4.resp_flags, c4.orig_pkts, c4.resp_pkts, c4.orig_bytes,
                    c4.resp_bytes, c4.first_ts, c4.last_ts)
        c6 = &(<conn6_t*>self._records_ptr())[rid]
        return ((<char*>&c6.orig_h)[:16], (<char*>&c6.resp_h)[:16], c6.orig_p, c6.resp_p,
                c6.state, c6.status, c6.orig_flags, c6.resp_flags, c6.orig_pkts, c6.resp_pkts,
                c6.orig_bytes, c6.resp_bytes, c6.first_ts, c6.last_ts)

    def probe_lengths(self):
        """int64 array over records in use: slots examined to find each live one (0 = free record)."""
        out = np.zeros(self.t.records.used, dtype=np.int64)
        if self.t.records.used == 0:
            return out
        cdef int64_t[::1] o = out
        if self.family == 4:
            probe_lengths(&self.t.index, &self.t.records.key, <conn4_t*>self._records_ptr(),
                          self.t.records.used, &o[0])
        else:
            probe_lengths(&self.t.index, &self.t.records.key, <conn6_t*>self._records_ptr(),
                          self.t.records.used, &o[0])
        return out

    @property
    def storage(self):
        """(records, flows, due ticks, eviction ring, sequence state), None where not kept:
        the whole arrays the table owns, for snapshots. Flow and sequence states are
        contiguous copies of their side rows, byte for byte."""
        return (self._records, _side_copy(self._side, self._flows), self._due,
                self._evict_ring, _side_copy(self._side, self._seq))

    @property
    def records(self):
        """Read-only view of the records in use (free ones have status 0). No copy."""
        view = self._records[: self.t.records.used]
        view.flags.writeable = False
        return view

    @property
    def flows(self):
        """Read-only view (FLOW_STATE_DTYPE) beside `records`; empty without flows."""
        if self._flows is None:
            return np.zeros(0, dtype=FLOW_STATE_DTYPE)
        view = self._flows[: self.t.records.used]
        view.flags.writeable = False
        return view

    @property
    def ended_full(self):
        """True when the ended-connection buffer must be collected before updating on."""
        return self.t.flows.n_ended + 2 > self.t.flows.ended_capacity

    def take_ended(self):
        """(records, flows, reasons) of the connections that ended since the last call (closed
        by the model, expired, evicted), oldest first, as copies; empties the buffer. Without
        flows: three empty arrays."""
        if self._ended is None:
            return (np.zeros(0, dtype=CONN4_DTYPE if self.family == 4 else CONN6_DTYPE),
                    np.zeros(0, dtype=FLOW_STATE_DTYPE), np.zeros(0, dtype=np.uint8))
        n = self.t.flows.n_ended
        self.t.flows.n_ended = 0
        return (self._ended[:n].copy(), self._ended_flows[:n].copy(),
                self._ended_reason[:n].copy())

    @property
    def histogram(self):
        """Read-only int64 view: live connections per state code."""
        view = self._hist[:]
        view.flags.writeable = False
        return view

    @property
    def class_counts(self):
        """Read-only int64 view: segments seen per flag class code."""
        view = self._class_counts[:]
        view.flags.writeable = False
        return view

    @property
    def totals(self):
        return self._counts_dict(&self.totals)

    def __len__(self):
        return self.t.records.count

    @property
    def capacity(self):
        return self.t.records.capacity

    @property
    def tombstones(self):
        return self.t.index.tombstones

    @property
    def needs_compaction(self):
        """True when tombstones, not live records, are what fills the index."""
        return self.t.records.count + self.t.index.tombstones >= self.t.index.max_filled and \
            self.t.records.count < self.t.records.capacity

    cdef size_t _record_size(self):
        return sizeof(conn4_t) if self.family == 4 else sizeof(conn6_t)

    @property
    def nbytes(self):
        """Bytes the table holds, the sum over its parts: every nbytes_* below."""
        return (self.nbytes_records + self.nbytes_index + self.nbytes_expiry
                + self.nbytes_sequence + self.nbytes_flows + self.nbytes_eviction)

    @property
    def nbytes_records(self):
        return records_nbytes(&self.t.records, self._record_size())

    @property
    def nbytes_index(self):
        return index_nbytes(&self.t.index)

    @property
    def nbytes_expiry(self):
        """The per-record due ticks and the wheel: slot headers and the entries allocated."""
        return expiry_nbytes(&self.t.expiry, self.t.records.capacity)

    @property
    def max_nbytes_expiry(self):
        """The most nbytes_expiry can reach at this capacity, whatever the traffic."""
        return expiry_max_nbytes(&self.t.expiry, self.t.records.capacity)

    @property
    def nbytes_sequence(self):
        """Sequence state beside the records (allocated by the first sequence-aware batch)."""
        return seq_nbytes(&self.t.seq, self.t.records.capacity)

    @property
    def nbytes_flows(self):
        """Flow states beside the records, and the ended-connection buffer."""
        return flows_nbytes(&self.t.flows, self.t.records.capacity, self._record_size())

    @property
    def nbytes_eviction(self):
        return evict_nbytes(&self.t.evict)

    @property
    def ended_count(self):
        """Connections in the ended buffer, awaiting `take_ended`."""
        return self.t.flows.n_ended

    @property
    def expire_from(self):
        """The start (ns) of the first tick the wheel has not wholly processed (2**63 - 1
        without expiry or before the wheel starts). An `expire` before it can only let go
        connections listed at that tick with deadlines already past (a late segment's); the
        tracker's clock is never behind it, and a table set skips a table until it is."""
        if not self.t.expiry.enabled or not self.t.expiry.wheel.started:
            return INT64_MAX
        return self.t.expiry.wheel.tick * TICK_NS


cdef class EventClock:
    """The time segments say it is, believed only as far as they agree.

    Timestamps move the clock forward (never back). A segment more than `max_jump` ns ahead of
    the clock is suspect: it moves nothing, unless `confirm` consecutive segments are all that
    far ahead, as after a genuine gap in a capture, where every later packet is later. The
    clock then moves to the earliest of them, so one forged far-future segment among them
    cannot carry it further. `max_jump` < 0 follows every timestamp.
    """
    cdef readonly int64_t now         # ns; meaningful once `started`
    cdef readonly bint started
    cdef readonly int64_t max_jump
    cdef readonly intp_t confirm
    cdef readonly int64_t suspect     # segments that arrived beyond max_jump
    cdef readonly int64_t jumps       # jumps beyond max_jump followed, once confirmed
    cdef intp_t run                   # consecutive suspect segments so far
    cdef int64_t run_min              # the earliest of them

    def __cinit__(self, int64_t max_jump, intp_t confirm):
        if confirm < 1:
            raise ValueError(f"confirm must be at least 1, not {confirm}")
        self.max_jump, self.confirm = max_jump, confirm

    def advance(self, const int64_t[::1] ts):
        """Takes a batch's timestamps, in order (each >= 0). Returns the clock."""
        cdef intp_t i, n = ts.shape[0]
        cdef int64_t t
        # in locals, so that the loop keeps them in registers
        cdef int64_t now = self.now, max_jump = self.max_jump, run_min = self.run_min
        cdef int64_t suspect = self.suspect, jumps = self.jumps
        cdef intp_t run = self.run, confirm = self.confirm
        cdef bint started = self.started
        with nogil:
            for i in range(n):
                t = ts[i]
                if not started or max_jump < 0:
                    started = True
                    if t > now:
                        now = t
                elif t - now <= max_jump:
                    run = 0
                    if t > now:
                        now = t
                else:
                    suspect += 1
                    if run == 0 or t < run_min:
                        run_min = t
                    run += 1
                    if run >= confirm:
                        now = run_min
                        run = 0
                        jumps += 1
        self.now, self.started, self.run, self.run_min = now, started, run, run_min
        self.suspect, self.jumps = suspect, jumps
        return now

    def state(self):
        """Everything `restore` needs, as a dict of ints."""
        return {"now": self.now, "started": int(self.started), "suspect": self.suspect,
                "jumps": self.jumps, "run": self.run, "run_min": self.run_min}

    def restore(self, dict state):
        """Takes a `state()` back (checked: a clock that cannot have been)."""
        now, started, run = state["now"], state["started"], state["run"]
        run_min, suspect, jumps = state["run_min"], state["suspect"], state["jumps"]
        if not (0 <= now and started in (0, 1) and 0 <= run < self.confirm and run_min >= 0
                and 0 <= jumps <= suspect):
            raise ValueError(f"inconsistent clock state {state!r}")
        self.now, self.started, self.run, self.run_min = now, started, run, run_min
        self.suspect, self.jumps = suspect, jumps
