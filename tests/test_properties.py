"""The compiled engine against the plain-Python reference tracker on random event streams."""
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fasttcp import (
    STATUS_ALIVE,
    STATUS_FLIPPED,
    STATUS_ILLEGAL_SHIFT,
    STATUS_PICKED_UP,
    STATUS_REPLIED,
    VERDICTS,
    Tracker,
)
from fasttcp.flows import CONN_STATES, ENDED
from fasttcp.models import ACK, FIN, PSH, RST, SYN, conntrack, rfc793
from fasttcp.reference import ReferenceTracker

MODELS = [rfc793(), conntrack(), conntrack(loose=False)]
COMMON_FLAGS = [SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, RST | ACK]
V4_POOL = [0x0A000001, 0x0A000002, 0xC0A80001]
V6_POOL = [bytes(15) + b"\x01", bytes(15) + b"\x02", b"\x20\x01\x0d\xb8" + bytes(11) + b"\x07"]
PORTS = [80, 443, 40000]


@st.composite
def event_streams(draw):
    family = draw(st.sampled_from([4, 6]))
    pool = V4_POOL if family == 4 else V6_POOL
    n = draw(st.integers(1, 120))
    endpoint = st.tuples(st.sampled_from(range(len(pool))), st.sampled_from(PORTS))
    flag = st.one_of(st.sampled_from(COMMON_FLAGS), st.integers(0, 255))
    events = draw(st.lists(st.tuples(endpoint, endpoint, flag, st.integers(0, 1500),
                                     st.integers(-5, 1000)), min_size=n, max_size=n))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return family, pool, events, cuts


def columns(family, pool, events):
    ts = np.cumsum([e[4] for e in events]) + 10**9
    src = [pool[e[0][0]] for e in events]  # IPv6 pool entries are bytes, IPv4 ints
    dst = [pool[e[1][0]] for e in events]
    if family == 4:
        src_arr, dst_arr = np.array(src, dtype=np.uint32), np.array(dst, dtype=np.uint32)
    else:
        src_arr = np.frombuffer(b"".join(src), dtype=np.uint8).reshape(-1, 16)
        dst_arr = np.frombuffer(b"".join(dst), dtype=np.uint8).reshape(-1, 16)
    return dict(ts=ts.astype(np.int64), src=src_arr,
                sport=np.array([e[0][1] for e in events], dtype=np.uint16), dst=dst_arr,
                dport=np.array([e[1][1] for e in events], dtype=np.uint16),
                flags=np.array([e[2] for e in events], dtype=np.uint8),
                length=np.array([e[3] for e in events], dtype=np.uint32))


def engine_connections(tracker, family):
    conns = {}
    for rec in tracker.records(family):
        if not rec["status"] & STATUS_ALIVE:
            continue
        as_key = (lambda a: int(a)) if family == 4 else (lambda a: bytes(a))
        orig, resp = (as_key(rec["orig_h"]), int(rec["orig_p"])), \
            (as_key(rec["resp_h"]), int(rec["resp_p"]))
        key = orig + resp if orig <= resp else resp + orig
        assert key not in conns
        status = int(rec["status"])
        conns[key] = (orig, resp, int(rec["state"]), bool(status & STATUS_REPLIED),
                      bool(status & STATUS_FLIPPED), bool(status & STATUS_PICKED_UP),
                      status >> STATUS_ILLEGAL_SHIFT,
                      int(rec["orig_flags"]), int(rec["resp_flags"]), int(rec["orig_pkts"]),
                      int(rec["resp_pkts"]), int(rec["orig_bytes"]), int(rec["resp_bytes"]),
                      int(rec["first_ts"]), int(rec["last_ts"]))
    return conns


def reference_connections(ref):
    return {key: ((c.orig_h, c.orig_p), (c.resp_h, c.resp_p), c.state, c.replied, c.flipped,
                  c.picked_up, c.illegal, c.orig_flags,
                  c.resp_flags, c.orig_pkts, c.resp_pkts, c.orig_bytes, c.resp_bytes,
                  c.first_ts, c.last_ts)
            for key, c in ref.conns.items()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=event_streams(), model=st.sampled_from(MODELS),
       capacity=st.sampled_from([1, 2, 4, 64]), seed=st.integers(0, 2**32))
def test_engine_matches_reference(stream, model, capacity, seed):
    family, pool, events, cuts = stream
    cols = columns(family, pool, events)
    tracker = Tracker(model, capacity=capacity, max_capacity=1024, seed=seed)
    ref = ReferenceTracker(model)
    bounds = [0] + cuts + [len(events)]
    for lo, hi in zip(bounds, bounds[1:]):
        part = {k: v[lo:hi] for k, v in cols.items()}
        got = tracker.update(**part, return_events=True)
        want = ref.update(**part)
        assert [(int(s), VERDICTS[v], c >= 0)
                for s, v, c in zip(got.state, got.verdict, got.conn)] == want
    assert engine_connections(tracker, family) == reference_connections(ref)
    assert tracker.histogram() == ref.histogram()
    assert len(tracker) == len(ref)
    assert tracker.stats == ref.stats
    assert tracker.flag_class_counts() == dict(zip(model.flag_classes, ref.class_counts))


@settings(max_examples=100, deadline=None)
@given(stream=event_streams(), seed=st.integers(0, 2**32))
def test_lookup_finds_exactly_the_live_connections(stream, seed):
    family, pool, events, _ = stream
    cols = columns(family, pool, events)
    tracker = Tracker(capacity=2, max_capacity=1024, seed=seed)
    ref = ReferenceTracker()
    tracker.update(**cols)
    ref.update(**cols)
    found = tracker.lookup_many(cols["src"], cols["sport"], cols["dst"], cols["dport"])
    keys = zip(hashable(cols["src"]), cols["sport"].tolist(), hashable(cols["dst"]),
               cols["dport"].tolist())
    want = [ref.lookup(*key) for key in keys]
    assert ((found.conn >= 0) == [w is not None for w in want]).all()
    assert found.state.tolist() == [w.state if w is not None else 0 for w in want]


def hashable(addrs):
    """Addresses as the reference tracker keys them: ints (IPv4) or 16-byte strings (IPv6)."""
    return addrs.tolist() if addrs.ndim == 1 else [row.tobytes() for row in addrs]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=event_streams(), model=st.sampled_from(MODELS), shards=st.sampled_from([2, 4]),
       capacity=st.sampled_from([4, 8, 64]), seed=st.integers(0, 2**32))
def test_sharded_tracker_matches_one_table(stream, model, shards, capacity, seed):
    family, pool, events, cuts = stream
    cols = columns(family, pool, events)
    with Tracker(model, capacity=capacity, max_capacity=4096, seed=seed, shards=shards) as many:
        one = Tracker(model, capacity=capacity, max_capacity=4096, seed=seed)
        bounds = [0] + cuts + [len(events)]
        for lo, hi in zip(bounds, bounds[1:]):
            part = {k: v[lo:hi] for k, v in cols.items()}
            got = many.update(**part, return_events=True)
            want = one.update(**part, return_events=True)
            assert got.state.tolist() == want.state.tolist()
            assert got.verdict.tolist() == want.verdict.tolist()
            assert ((got.conn >= 0) == (want.conn >= 0)).all()
        assert engine_connections(many, family) == engine_connections(one, family)
        assert many.histogram() == one.histogram() and len(many) == len(one)
        assert many.stats == one.stats
        assert many.flag_class_counts() == one.flag_class_counts()
        probe = many.lookup_many(cols["src"], cols["sport"], cols["dst"], cols["dport"])
        assert (probe.state == one.lookup_many(cols["src"], cols["sport"], cols["dst"],
                                                cols["dport"]).state).all()
        # a sharded index names the record of the looked-up connection in records()
        recs = many.records(family)
        for i in np.flatnonzero(probe.conn >= 0):
            rec = recs[probe.conn[i]]
            ports = (int(rec["orig_p"]), int(rec["resp_p"]))
            key = (int(cols["sport"][i]), int(cols["dport"][i]))
            assert rec["status"] & STATUS_ALIVE and ports in (key, key[::-1])


# -- sequence-aware with flows, batches cut anywhere ------------------------------------------

S = 1_000_000_000
T0 = 10**13         # late enough for timestamps to go back a while
MASK = 0xFFFFFFFF
# What a scripted segment is: the connection's next step in `SCRIPT`, or out of turn a
# handshake step, an ack, data, a FIN, a RST (bare or with ACK), the sender's previous segment
# again (any flags byte if it sent none), a new SYN with a fresh ISN (reopening the key), or any
# flags byte at the sender's next sequence number. The direction of an out-of-turn segment is
# drawn.
KINDS = ("syn", "synack", "ack", "data", "fin", "rst", "rstack", "again", "reopen", "flags")
KIND_FLAGS = {"syn": SYN, "synack": SYN | ACK, "ack": ACK, "data": PSH | ACK, "fin": FIN | ACK,
              "rst": RST, "rstack": RST | ACK, "reopen": SYN}
# One connection's life, from the client (0) and the server (1); after it, a reopen.
SCRIPT = ((0, "syn"), (1, "synack"), (0, "ack"), (0, "data"), (1, "ack"), (1, "data"),
          (0, "data"), (1, "ack"), (0, "fin"), (1, "ack"), (1, "fin"), (0, "ack"),
          (0, "reopen"))
CARRIES_DATA = ("data", "fin", "flags")
# Most segments are where the sender's next sequence number says; a perturbed one is a forgery,
# a loss or a retransmission: just off the edge, a window away, half the space away, anywhere.
NEAR = [-1, 1, -100, 100, -1460, 65535, 65536, -65536, 70000, 1 << 20, -(1 << 20), 1 << 30,
        -(1 << 30), 1 << 31]
SEQ_DELTA = st.one_of(st.just(0), st.just(0), st.just(0), st.sampled_from(NEAR),
                      st.integers(0, MASK))
# An ACK one short of the peer's next byte leaves a FIN unacknowledged.
ACK_DELTA = st.one_of(st.just(0), st.just(0), st.just(-1), st.sampled_from(NEAR),
                      st.integers(0, MASK))
# ISNs anywhere, and just below the wrap of the 32-bit space so a connection's data crosses it.
ISN = st.one_of(st.integers(0, MASK), st.integers(MASK - 3000, MASK))
# Mostly back to back; now and then past a state's timeout (with ESTABLISHED's at 300 s), or
# beyond max_clock_jump (60 s) so the clock needs two segments' word to follow.
GAP = st.one_of(st.sampled_from([0, 1000, 10**6, S // 2]), st.sampled_from([0, 1000, 5 * S]),
                st.sampled_from([0, 1000]), st.sampled_from([31 * S, 61 * S, 121 * S, 301 * S]))
# A capture merged from several taps goes back in time now and then.
JITTER = st.one_of(GAP, st.sampled_from([-1000, -S, -61 * S, -301 * S]))


def scripted_steps(gap):
    """One scripted segment: (connection, from the client, kind, payload, window, wscale,
    sequence number offset, ack offset, time since the previous segment, flags byte)."""
    return st.tuples(st.integers(0, 2), st.booleans(),
                     st.one_of(st.just("next"), st.just("next"), st.sampled_from(KINDS)),
                     st.sampled_from([0, 1, 100, 1460, 70000]),
                     st.sampled_from([65535, 65535, 29200, 1024, 1, 0]),
                     st.sampled_from([-1, -1, 0, 2, 7, 14]), SEQ_DELTA, ACK_DELTA, gap,
                     st.integers(0, 255))


@st.composite
def segment_streams(draw, gap=GAP):
    """(family, columns with seq/ack/window/wscale, what each segment was meant to be, cuts)
    for up to three connections between fixed endpoints, scripted by `scripted_steps`."""
    family = draw(st.sampled_from([4, 6]))
    isns = draw(st.lists(ISN, min_size=6, max_size=6))
    n = draw(st.integers(1, 60))
    steps = draw(st.lists(scripted_steps(gap), min_size=n, max_size=n))
    cuts = sorted(draw(st.lists(st.integers(0, len(steps)), max_size=5)))
    return family, *scripted_segments(family, isns, steps), cuts


def scripted_segments(family, isns, steps):
    """Turns steps into columns, keeping per connection and direction the next sequence number:
    a segment sent there (no perturbation) moves it on; a reopen jumps it by about 2**30.
    Also returns per segment what it was meant to be, for labelling the cases."""
    pool = V4_POOL if family == 4 else V6_POOL
    nxt = {(c, d): isns[2 * c + d] for c in range(3) for d in (0, 1)}
    fin_sent, scaled = set(), set()     # (connection, direction) that sent a FIN / offered scaling
    turn = [0, 0, 0]                    # where each connection is in SCRIPT
    previous = {}
    rows, notes = [], []
    ts = T0
    for conn, from_client, kind, length, window, wscale, dseq, dack, gap, raw in steps:
        d = 0 if from_client else 1
        ts += gap
        if kind == "next":
            d, kind = SCRIPT[turn[conn]]
            turn[conn] = (turn[conn] + 1) % len(SCRIPT)
        if kind == "again" and (conn, d) in previous:
            rows.append((ts, *previous[conn, d][1:]))
            notes.append(dict(notes[previous[conn, d][0]], kind="again"))
            continue
        if kind == "reopen":
            nxt[conn, d] = (nxt[conn, d] + (1 << 30) + 12345) & MASK
        flags = raw if kind in ("flags", "again") else KIND_FLAGS[kind]
        length = length if kind in CARRIES_DATA else 0
        seq, ack = (nxt[conn, d] + dseq) & MASK, (nxt[conn, 1 - d] + dack) & MASK
        end = (seq + length + bool(flags & SYN) + bool(flags & FIN)) & MASK
        notes.append(dict(kind=kind, dseq=dseq, dack=dack, wraps=end < seq,
                          closed={(conn, 0), (conn, 1)} <= fin_sent,
                          acks_fin=bool(flags & ACK) and (conn, 1 - d) in fin_sent,
                          scaled=bool(flags & SYN) and wscale >= 0 and (conn, 1 - d) in scaled))
        if flags & SYN:
            fin_sent.discard((conn, d))
            (scaled.add if wscale >= 0 else scaled.discard)((conn, d))
        if dseq == 0:
            nxt[conn, d] = end
            if flags & FIN:
                fin_sent.add((conn, d))
        client, server = (pool[conn], 40000 + conn), (pool[2], 80)
        (src, sport), (dst, dport) = (client, server) if d == 0 else (server, client)
        previous[conn, d] = (len(notes) - 1, src, sport, dst, dport, flags, length, seq, ack,
                             window, wscale)
        rows.append((ts, src, sport, dst, dport, flags, length, seq, ack, window, wscale))
    ts, src, sport, dst, dport, flags, length, seq, ack, window, wscale = zip(*rows)
    if family == 4:
        src_arr, dst_arr = np.array(src, dtype=np.uint32), np.array(dst, dtype=np.uint32)
    else:
        src_arr = np.frombuffer(b"".join(src), dtype=np.uint8).reshape(-1, 16)
        dst_arr = np.frombuffer(b"".join(dst), dtype=np.uint8).reshape(-1, 16)
    cols = dict(ts=np.array(ts, dtype=np.int64), src=src_arr,
                sport=np.array(sport, dtype=np.uint16), dst=dst_arr,
                dport=np.array(dport, dtype=np.uint16), flags=np.array(flags, dtype=np.uint8),
                length=np.array(length, dtype=np.uint32), seq=np.array(seq, dtype=np.uint32),
                ack=np.array(ack, dtype=np.uint32), window=np.array(window, dtype=np.uint16),
                wscale=np.array(wscale, dtype=np.int8))
    return cols, notes


def engine_flows(rows, family):
    """Flow rows as comparable tuples, sorted (the order connections leave in is not API)."""
    address = int if family == 4 else bytes
    return sorted((address(f["orig_h"]), int(f["orig_p"]), address(f["resp_h"]),
                   int(f["resp_p"]), int(f["ts"]), int(f["last_ts"]), int(f["orig_pkts"]),
                   int(f["orig_bytes"]), int(f["resp_pkts"]), int(f["resp_bytes"]),
                   int(f["state"]), CONN_STATES[f["conn_state"]], f["history"].decode(),
                   bool(f["flipped"]), bool(f["picked_up"]), int(f["illegal"]),
                   ENDED[f["ended"]]) for f in rows)


def reference_flows(conns):
    """The same tuples from the reference's (connection, why it ended) pairs."""
    out = []
    for c, why in conns:
        history = c.zeek.history(c.flipped)
        out.append((c.orig_h, c.orig_p, c.resp_h, c.resp_p, c.first_ts, c.last_ts, c.orig_pkts,
                    c.orig_bytes, c.resp_pkts, c.resp_bytes, c.state,
                    c.zeek.conn_state(history, c.orig_bytes, c.resp_bytes), history, c.flipped,
                    c.picked_up, c.illegal, why))
    return sorted(out)


def observed(tracker, family):
    """Everything a user can see of a flows=True tracker but the flows it has ended."""
    return (engine_connections(tracker, family), engine_flows(tracker.live_flows(family), family),
            tracker.histogram(), tracker.stats, tracker.flag_class_counts(), len(tracker))


def reference_observed(ref):
    return (reference_connections(ref), reference_flows((c, "live") for c in ref.conns.values()),
            ref.histogram(), ref.stats, dict(zip(ref.model.flag_classes, ref.class_counts)),
            len(ref))


def cut_runs(cols, runs, plain=()):
    """Feeds the same columns, cut as each (cuts, make) of `runs` says, to a fresh (tracker,
    reference) pair from its `make()`, checking them against each other after every batch
    (the batches numbered in `plain` without their sequence columns). Returns per cutting the events'
    results, what was observable at the end, every flow that ended, and the stats after each
    batch."""
    n = len(cols["ts"])
    outcomes = []
    for cuts, make in runs:
        tracker, ref = make()
        family = 4 if cols["src"].ndim == 1 else 6
        results, ended, stats_after = [], [], []
        bounds = [0] + list(cuts) + [n]
        for batch, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
            part = {k: v[lo:hi] for k, v in cols.items()
                    if batch not in plain or k not in ("seq", "ack", "window", "wscale")}
            seen = len(ref.ended)
            got = tracker.update(**part, return_events=True)
            want = ref.update(**part)
            mine = [(int(s), VERDICTS[v], c >= 0)
                    for s, v, c in zip(got.state, got.verdict, got.conn)]
            assert mine == want, (lo, hi)
            popped = engine_flows(tracker.pop_flows(family), family)
            assert popped == reference_flows(ref.ended[seen:]), (lo, hi)
            assert observed(tracker, family) == reference_observed(ref), (lo, hi)
            results += mine
            ended += popped
            stats_after.append(tracker.stats)
        outcomes.append((results, observed(tracker, family), sorted(ended), stats_after))
        tracker.close()
    return outcomes


COUNTED = ("out_of_window", "retransmitted", "zero_window", "expired", "closed",
           "clock_jumps")


def label_cases(notes, results, stats_after, flows):
    """Names the cases a stream exercised, from one-event batches (the stats after each say
    what each segment did); pytest --hypothesis-show-statistics shows how often each occurs."""
    before = dict.fromkeys(COUNTED, 0)
    for note, (_, verdict, _), stats in zip(notes, results, stats_after):
        did = {key for key in COUNTED if stats[key] > before[key]}
        before = stats
        for key in did:
            event(f"a segment counted in {key}")
        if note["kind"] in ("rst", "rstack") and verdict != "new":
            event(f"a RST {'out of' if 'out_of_window' in did else 'in'} window")
        if note["wraps"] and note["dseq"] == 0 and "out_of_window" not in did:
            event("a segment across the 32-bit wrap, in window")
        if note["kind"] == "reopen" and verdict == "new":
            event(f"a reopen with a fresh ISN{' after both FINs' if note['closed'] else ''}")
        if note["acks_fin"] and note["dack"] in (0, -1):
            event(f"an ACK {'covering' if note['dack'] == 0 else 'one short of'} the peer's FIN")
        if note["scaled"]:
            event("both SYNs offer window scaling")
    if any(f[14] for f in flows):
        event("a mid-stream pickup")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=segment_streams(), model=st.sampled_from(MODELS),
       established=st.sampled_from([None, 300]), capacity=st.sampled_from([1, 4, 64]),
       seed=st.integers(0, 2**32))
def test_sequence_aware_flows_match_the_reference_however_cut(stream, model, established,
                                                             capacity, seed):
    """Sequence-aware with flows and expiry by the segments' clock: the engine agrees with the
    reference after every batch, and nothing depends on where the batches were cut."""
    family, cols, notes, cuts = stream
    n = len(cols["ts"])
    timeouts = None if established is None else {"ESTABLISHED": established}

    def make(shards=1):
        tracker = Tracker(model, capacity=capacity, max_capacity=1024, seed=seed, flows=True,
                          timeouts=timeouts, shards=shards)
        return tracker, ReferenceTracker(model, timeouts=tracker.timeouts, flows=True)

    one_by_one, cut, whole, sharded = cut_runs(
        cols, [(range(1, n), make), (cuts, make), ([], make), (cuts, lambda: make(shards=2))])
    assert one_by_one[:3] == cut[:3] == whole[:3] == sharded[:3]
    label_cases(notes, one_by_one[0], one_by_one[3], one_by_one[1][1] + one_by_one[2])


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup=st.one_of(st.tuples(segment_streams(), st.sampled_from([1, 2])),
                       st.tuples(segment_streams(gap=JITTER), st.sampled_from([1, 2, 3]))),
       model=st.sampled_from(MODELS), plain=st.sets(st.integers(0, 5), max_size=2),
       seed=st.integers(0, 2**32))
def test_sequence_aware_flows_match_the_reference_at_a_bound(setup, model, plain, seed):
    """As above with eviction at a small bound, some batches without sequence columns, and
    timestamps that go back now and then: where a batch ends then matters (its clock expires
    and makes room), so only the reference is the judge."""
    (family, cols, _, cuts), bound = setup

    def make():
        tracker = Tracker(model, capacity=bound, max_capacity=bound, evict=True, seed=seed,
                          flows=True)
        return tracker, ReferenceTracker(model, timeouts=tracker.timeouts, capacity=bound,
                                         flows=True)

    cut_runs(cols, [(cuts, make)], plain)


@pytest.mark.parametrize("model", ["rfc793", "conntrack"])
def test_half_the_space_ahead_is_after_as_in_netfilter(model):
    """Netfilter defines after(a, b) as before(b, a), so exactly 2**31 apart each number is
    after the other: data ending there is new, not a retransmission (the reference's reading;
    found by the property test above)."""
    cols = dict(ts=np.array([T0, T0]), src=np.array([V4_POOL[0]] * 2, dtype=np.uint32),
                sport=np.array([40000] * 2, dtype=np.uint16),
                dst=np.array([V4_POOL[2]] * 2, dtype=np.uint32),
                dport=np.array([80] * 2, dtype=np.uint16),
                flags=np.array([SYN, PSH | ACK], dtype=np.uint8),
                length=np.array([0, 1], dtype=np.uint32),
                seq=np.array([1 << 31, 0], dtype=np.uint32),   # ends at 2**31 + 1, then at 1
                ack=np.zeros(2, dtype=np.uint32), window=np.full(2, 65535, dtype=np.uint16))
    tracker, ref = Tracker(model, flows=True), ReferenceTracker(model, flows=True)
    tracker.update(**cols)
    ref.update(**cols)
    assert ref.stats["retransmitted"] == 0
    assert tracker.stats["retransmitted"] == 0


def test_a_full_table_lets_go_what_is_due_by_a_late_segments_time():
    """A full table first expires by the new segment's time (at most the clock). Here the
    wheel has run to T making room; then segments from 100 s earlier open a connection and
    close it (due 10 s later), and a new one at T - 50 s finds the table full: the closed one
    is due by then and must go, not the newcomer be refused."""
    a, b, c, d, server = 0x0A000001, 0x0A000002, 0x0A000003, 0x0A000004, 0xC0A80001
    ts = np.array([T0, T0, T0 - 100 * S, T0 - 100 * S, T0 - 50 * S])
    cols = dict(ts=ts, src=np.array([a, d, server, server, c], dtype=np.uint32),
                sport=np.array([40000, 40003, 80, 80, 40002], dtype=np.uint16),
                dst=np.array([server, server, b, b, server], dtype=np.uint32),
                dport=np.array([80, 80, 40001, 40001, 80], dtype=np.uint16),
                flags=np.array([SYN, SYN, SYN | ACK, RST, SYN], dtype=np.uint8))
    tracker = Tracker("rfc793", capacity=1, evict=True)
    ref = ReferenceTracker("rfc793", timeouts=tracker.timeouts, capacity=1)
    got = tracker.update(**cols, return_events=True)
    assert ref.update(**cols)[-1] == (tracker.model.states.index("SYN_SENT/LISTEN"), "new",
                                      True)
    assert VERDICTS[got.verdict[-1]] == "new" and tracker.stats["refused"] == 0


def test_a_full_table_looks_behind_its_wheel_for_a_late_connection_that_is_due():
    """The wheel starts at T. A connection opened 300 s earlier is listed at the wheel's tick
    (its deadline, T - 180 s, is behind the wheel); a new one at T - 100 s finds the table
    full, and the late connection is due by then: it expires, nothing is evicted for it."""
    server = 0xC0A80001
    ts = np.array([T0, T0 - 300 * S, T0 - 100 * S])
    cols = dict(ts=ts, src=np.array([0x0A000001, 0x0A000002, 0x0A000003], dtype=np.uint32),
                sport=np.array([40000, 40001, 40002], dtype=np.uint16),
                dst=np.full(3, server, dtype=np.uint32), dport=np.full(3, 80, dtype=np.uint16),
                flags=np.full(3, SYN, dtype=np.uint8))
    tracker = Tracker("rfc793", capacity=1, evict=True, flows=True)
    ref = ReferenceTracker("rfc793", timeouts=tracker.timeouts, capacity=1, flows=True)
    tracker.update(**cols)
    ref.update(**cols)
    assert [ENDED[row["ended"]] for row in tracker.pop_flows()] == ["evicted", "expired"]
    assert (tracker.stats["evicted"], tracker.stats["expired"]) == \
        (ref.stats["evicted"], ref.stats["expired"]) == (1, 1)
