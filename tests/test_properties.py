"""The compiled engine against the plain-Python reference tracker on random event streams."""
import numpy as np
from hypothesis import HealthCheck, given, settings
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
