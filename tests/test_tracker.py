"""The public Tracker API: batches, validation, lookups, histograms, capacity and memory."""
import ipaddress
import threading
import time

import numpy as np
import pytest
from helpers import CLIENT, SERVER, run, script, snapshot

import fasttcp
from fasttcp import EVENT6_DTYPE, EVENT_DTYPE, TableFullError, Tracker, _engine, addresses
from fasttcp.models import ACK, FIN, PSH, RST, SYN

HANDSHAKE = [("c", SYN), ("s", SYN | ACK), ("c", ACK)]


def random_established(n, seed=0):
    """Columns of n distinct IPv4 connections, one pickup ACK each."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 2**32, n, dtype=np.uint32)
    dst = rng.integers(0, 2**32, n, dtype=np.uint32)
    sport = rng.integers(1024, 65536, n, dtype=np.uint16)
    dport = rng.integers(1, 1024, n, dtype=np.uint16)
    return dict(ts=np.arange(n, dtype=np.int64), src=src, sport=sport, dst=dst, dport=dport,
                flags=np.full(n, ACK, dtype=np.uint8), length=np.zeros(n, dtype=np.uint32))


def test_update_returns_counts_and_optional_event_arrays():
    t = Tracker(capacity=16, seed=0)
    res = t.update(**script(HANDSHAKE + [("c", 0)]))
    assert (res.new, res.valid, res.invalid, res.ignored) == (1, 2, 1, 0)
    assert res.conn is None and res.state is None and res.verdict is None
    res = t.update(**script([("c", ACK)]), return_events=True)
    assert res.conn.dtype == np.int64 and res.state.dtype == np.uint8
    assert res.verdict.tolist() == [fasttcp.VALID]
    assert t.stats == {"events": 5, "new": 1, "valid": 3, "invalid": 1, "ignored": 0,
                       "untracked": 0, "closed": 0, "expired": 0, "evicted": 0, "refused": 0,
                       "out_of_window": 0, "retransmitted": 0, "zero_window": 0,
                       "clock_suspect": 0, "clock_jumps": 0}


def test_structured_events_give_the_same_result_as_columns():
    cols = script(HANDSHAKE + [("c", PSH | ACK, 10), ("s", FIN | ACK)])
    events = np.zeros(len(cols["ts"]), dtype=EVENT_DTYPE)
    for name in EVENT_DTYPE.names:
        events[name] = cols[name]
    a, b = Tracker(seed=1), Tracker(seed=1)
    a.update(**cols)
    b.update(events)
    assert snapshot(a) == snapshot(b)


def test_structured_ipv6_events():
    cols = script(HANDSHAKE, client=("2001:db8::1", 1), server=("2001:db8::2", 2))
    events = np.zeros(3, dtype=EVENT6_DTYPE)
    for name in EVENT6_DTYPE.names:
        events[name] = cols[name]
    t = Tracker("conntrack")
    t.update(events)
    assert t.histogram()["ESTABLISHED"] == 1 and len(t.records(6)) == 1


def test_lookup_from_either_side_and_missing():
    t, _, _ = run(HANDSHAKE + [("c", PSH | ACK, 7)])
    fwd = t.lookup(ipaddress.ip_address(CLIENT[0]), CLIENT[1], SERVER[0], SERVER[1])
    rev = t.lookup(int(ipaddress.ip_address(SERVER[0])), SERVER[1], CLIENT[0], CLIENT[1])
    assert fwd.direction == "orig" and rev.direction == "resp"
    assert fwd.conn == rev.conn and fwd.state == "ESTABLISHED" and fwd.orig_bytes == 7
    assert fwd.first_ts < fwd.last_ts
    assert t.lookup(CLIENT[0], CLIENT[1] + 1, SERVER[0], SERVER[1]) is None
    assert t.lookup("2001:db8::1", 1, "2001:db8::2", 2) is None
    with pytest.raises(ValueError, match="different address families"):
        t.lookup("10.0.0.1", 1, "::1", 2)
    with pytest.raises(TypeError, match="IP address"):
        t.lookup(1.5, 1, "10.0.0.1", 2)


def test_lookup_many_matches_update_indices():
    cols = random_established(1000, seed=3)
    t = Tracker("conntrack", capacity=1000, seed=3)
    res = t.update(**cols, return_events=True)
    found = t.lookup_many(cols["dst"], cols["dport"], cols["src"], cols["sport"])
    np.testing.assert_array_equal(found.conn, res.conn)
    assert (found.direction == 1).all()
    assert (found.state == t.model.state_code("ESTABLISHED")).all()
    missing = t.lookup_many(cols["src"], cols["sport"] ^ np.uint16(1), cols["dst"], cols["dport"])
    assert (missing.conn == -1).sum() >= 990  # a flipped port bit rarely lands on another conn


def test_records_view_is_read_only_and_tracks_updates():
    t, _, _ = run(HANDSHAKE)
    recs = t.records(4)
    assert recs.dtype == fasttcp.CONN4_DTYPE and not recs.flags.writeable
    with pytest.raises(ValueError):
        recs["state"][0] = 0
    t.update(**script([("c", PSH | ACK, 5)], t0=2_000_000_000))
    assert recs["orig_bytes"][0] == 5  # a view, not a copy
    assert t.records(6).shape == (0,)
    with pytest.raises(ValueError, match="family"):
        t.records(5)


def test_histogram_counts_every_state_and_len():
    t = Tracker("conntrack", capacity=64, seed=0)
    run(HANDSHAKE, tracker=t)
    run([("c", SYN)], tracker=t, client=("10.0.0.9", 5))
    hist = t.histogram()
    assert set(hist) == set(t.model.states)
    assert hist["ESTABLISHED"] == 1 and hist["SYN_SENT"] == 1 and sum(hist.values()) == len(t) == 2


def test_growth_keeps_indices_and_connections():
    cols = random_established(5000, seed=5)
    t = Tracker(capacity=100, max_capacity=10_000, seed=5)
    res = t.update(**cols, return_events=True)
    assert len(t) == 5000 and t.resizes > 0 and t.capacity == 100
    again = t.lookup_many(cols["src"], cols["sport"], cols["dst"], cols["dport"])
    np.testing.assert_array_equal(again.conn, res.conn)


def test_full_table_raises_after_applying_what_fits():
    cols = random_established(50, seed=6)
    t = Tracker(capacity=40, seed=6)
    with pytest.raises(TableFullError, match="10 of 50 events not applied") as err:
        t.update(**cols)
    assert err.value.applied == 40 and len(t) == 40
    assert err.value.unapplied.tolist() == list(range(40, 50))
    # updates to connections already tracked still go through
    first = {k: v[:10] for k, v in cols.items()}
    assert t.update(**first).valid == 10


def test_deletions_recycle_records_and_compact_the_index():
    t = Tracker("conntrack", capacity=32, seed=7)
    for i in range(2000):  # SYN then RST: created and dropped at once
        run([("c", SYN), ("c", RST)], tracker=t, client=("10.1.0.1", 1000 + i))
    assert len(t) == 0 and t.stats["closed"] == 2000
    assert len(t.records(4)) == 1  # the one record was reused every time
    run(HANDSHAKE, tracker=t)
    assert t.histogram()["ESTABLISHED"] == 1


def test_memory_per_connection_meets_the_budget():
    t = Tracker(capacity=1_000_000, expiry=False)
    assert t.bytes_per_connection(4) <= 64
    assert t.bytes_per_connection(6) <= 96
    usage = t.memory_usage()
    assert usage[4]["records"] == 56 * 1_000_000 and usage[4]["total"] <= 64_000_000
    # expiry adds a due tick per connection and the wheel's slot headers (64 KB)
    expiring = Tracker(capacity=1_000_000)
    assert expiring.bytes_per_connection(4) == 68 + 65536 / 1_000_000
    assert expiring.memory_usage()[4]["flows"] == 0


def test_probe_lengths_stay_short():
    cols = random_established(50_000, seed=8)
    t = Tracker(capacity=50_000, seed=8)
    t.update(**cols)
    lengths = t.probe_lengths()
    assert len(lengths) == 50_000 and lengths.min() == 1
    assert lengths.mean() < 2.0  # linear probing at load 0.5 expects 1.5


def test_seed_makes_layout_reproducible_and_default_keys_differ():
    cols = random_established(200, seed=9)
    a, b = Tracker(seed=42), Tracker(seed=42)
    assert (a.update(**cols, return_events=True).conn ==
            b.update(**cols, return_events=True).conn).all()
    assert Tracker()._keys != Tracker()._keys


def test_accepts_other_integer_dtypes_that_fit():
    cols = script(HANDSHAKE)
    wide = {k: v.astype(np.int64) for k, v in cols.items()}
    a, b = Tracker(seed=1), Tracker(seed=1)
    a.update(**cols)
    b.update(**wide)
    assert snapshot(a) == snapshot(b)


def test_empty_batch_is_fine():
    t = Tracker()
    empty = np.zeros(0, dtype=EVENT_DTYPE)
    res = t.update(empty, return_events=True)
    assert res.new == 0 and res.conn.shape == (0,) and len(t) == 0


def bad_batches():
    good = script(HANDSHAKE)
    n = len(good["ts"])

    def with_(**changes):
        return {**good, **changes}

    yield "ts float", with_(ts=good["ts"].astype(float)), TypeError, "ts must be an integer"
    yield "negative ts", with_(ts=good["ts"] - 10**10), ValueError, "negative"
    yield "short sport", with_(sport=good["sport"][:-1]), ValueError, "sport has 2 elements"
    yield "2-D flags", with_(flags=good["flags"].reshape(1, n)), ValueError, "1-dimensional"
    yield "port too big", with_(dport=np.array([70000] * n)), ValueError, "dport has values"
    yield "negative length", with_(length=np.array([-1] * n)), ValueError, "length has values"
    yield "flags > 255", with_(flags=np.array([256] * n)), ValueError, "flags has values"
    yield "string src", with_(src=np.array(["10.0.0.1"] * n)), TypeError, "src must be an integer"
    yield "ipv6 width", with_(src=np.zeros((n, 8), np.uint8), dst=np.zeros((n, 8), np.uint8)), \
        ValueError, r"shape \(n, 16\)"
    yield "mixed family", with_(src=np.zeros((n, 16), np.uint8)), ValueError, "different address"
    yield "ipv6 rows", with_(src=np.zeros((n + 1, 16), np.uint8),
                             dst=np.zeros((n + 1, 16), np.uint8)), ValueError, "rows"
    yield "missing column", with_(flags=None), TypeError, "needs ts, src"


@pytest.mark.parametrize("name, batch, exc, message", list(bad_batches()),
                         ids=[b[0] for b in bad_batches()])
def test_bad_batches_are_rejected_without_touching_the_tracker(name, batch, exc, message):
    t, _, _ = run(HANDSHAKE)
    before = snapshot(t)
    with pytest.raises(exc, match=message):
        t.update(**batch)
    assert snapshot(t) == before


def test_structured_array_must_have_the_fields():
    t = Tracker()
    bad = np.zeros(3, dtype=[("ts", "<i8"), ("src", "<u4")])
    with pytest.raises(ValueError, match="lack fields"):
        t.update(bad)
    with pytest.raises(TypeError, match="either one structured array"):
        t.update(np.zeros(3, dtype=EVENT_DTYPE), np.zeros(3))


def test_non_contiguous_columns_are_accepted():
    cols = random_established(100, seed=11)
    strided = {k: np.repeat(v, 2)[::2] for k, v in cols.items()}
    assert not strided["src"].flags.c_contiguous
    a, b = Tracker(seed=1), Tracker(seed=1)
    a.update(**cols)
    b.update(**strided)
    assert snapshot(a) == snapshot(b)


def test_read_only_input_arrays():
    cols = random_established(100, seed=12)
    for v in cols.values():
        v.flags.writeable = False
    t = Tracker(capacity=100)
    assert t.update(**cols).new == 100


def test_constructor_checks_its_arguments():
    with pytest.raises(ValueError, match="capacity"):
        Tracker(capacity=0)
    with pytest.raises(ValueError, match="max_capacity"):
        Tracker(capacity=10, max_capacity=5)
    with pytest.raises(ValueError, match="unknown model"):
        Tracker(model="nope")


def test_concurrent_updates_are_serialised():
    # Each thread owns its own connections; with updates serialised, nothing is lost.
    t = Tracker(capacity=40_000, seed=13)
    batches = [random_established(10_000, seed=100 + k) for k in range(4)]

    def feed(cols):
        for _ in range(5):
            t.update(**cols)

    threads = [threading.Thread(target=feed, args=(cols,)) for cols in batches]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(t) == 40_000 and t.stats["events"] == 200_000
    recs = t.records(4)
    assert (recs["orig_pkts"] == 5).all()


def test_addresses_helper():
    assert addresses(["10.0.0.1", 167772162]).tolist() == [167772161, 167772162]
    six = addresses(["::1"])
    assert six.shape == (1, 16) and six[0, 15] == 1
    with pytest.raises(ValueError, match="mixed"):
        addresses(["10.0.0.1", "::1"])


def test_readers_during_updates_do_not_hang_or_tear():
    # one thread creates and drops connections; readers run meanwhile. Each batch opens and
    # drops every key it touches, so a reader that is properly serialised with the batches
    # always sees an empty tracker.
    t = Tracker("conntrack", capacity=4096, seed=14)
    m = 20_000
    keys = np.arange(m, dtype=np.uint32) // 2
    churn = dict(ts=np.arange(m), src=keys, sport=np.full(m, 1), dst=np.full(m, 2, np.uint32),
                 dport=np.full(m, 3), flags=np.where(np.arange(m) % 2 == 0, SYN, RST))
    done = threading.Event()

    def writer():
        for _ in range(20):
            t.update(**churn)
        done.set()

    th = threading.Thread(target=writer)
    th.start()
    while not done.is_set():
        lengths = t.probe_lengths()
        assert len(lengths) == 0
        assert sum(t.histogram().values()) == 0 and len(t) == 0
    th.join(timeout=60)
    assert not th.is_alive() and len(t) == 0


def test_tombstones_are_reused_by_later_batches():
    t = Tracker("conntrack", capacity=64, seed=15)
    for i in range(50):  # the same key opened and dropped, one batch each
        run([("c", SYN), ("c", RST)], tracker=t)
    assert t._tables[4][0].tombstones <= 1


def test_misaligned_inputs_give_the_same_result():
    n = 50
    buf = np.zeros(n * 32 + 3, np.uint8)
    src, dst = buf[1:1 + n * 16].reshape(n, 16), buf[1 + n * 16:1 + 2 * n * 16].reshape(n, 16)
    src[:, 15], dst[:, 15] = np.arange(n), 200
    aligned_src, aligned_dst = src.copy(), dst.copy()
    a, b = Tracker(seed=16), Tracker(seed=16)
    a.update(np.arange(n), src, np.arange(n), dst, np.full(n, 80), np.full(n, SYN))
    b.update(np.arange(n), aligned_src, np.arange(n), aligned_dst, np.full(n, 80), np.full(n, SYN))
    assert snapshot(a) == snapshot(b) and len(a) == n
    one = np.zeros(1, EVENT_DTYPE)  # packed: length sits at offset 21
    one["flags"] = SYN
    assert Tracker().update(one).new == 1
    six = np.zeros(3, EVENT6_DTYPE)
    six["flags"] = SYN
    assert Tracker().update(six[1:2]).new == 1


def test_model_arrays_are_copied_and_checked_by_the_engine():
    from fasttcp.models import conntrack
    m = conntrack()
    t = Tracker(m, capacity=8, seed=17)
    run(HANDSHAKE, tracker=t)
    m.table.flags.writeable = True
    m.table[:] = 200  # would index past the histogram if the engine read it
    run([("c", ACK)], tracker=t)
    assert t.histogram()["ESTABLISHED"] == 1
    bad = m.table.copy()
    with pytest.raises(ValueError, match="name a state"):
        _engine.FlowTable(4, 8, m.class_of, bad.ravel(), m.actions.ravel(), m.illegal_mask,
                          len(m.states), len(m.flag_classes), (1, 2, 3, 4))
    with pytest.raises(ValueError, match="classes below"):
        _engine.FlowTable(4, 8, np.full(256, 99, np.uint8), m.table.ravel(), m.actions.ravel(),
                          m.illegal_mask, len(m.states), len(m.flag_classes), (1, 2, 3, 4))


def test_packet_counters_saturate():
    t, _, _ = run(HANDSHAKE)
    recs = t.records(4)
    recs.flags.writeable = True  # the view's base is the live table: poke a counter to its end
    recs["orig_pkts"][0] = 2**32 - 2
    run([("c", ACK), ("c", ACK)], tracker=t)
    assert t.lookup(CLIENT[0], CLIENT[1], SERVER[0], SERVER[1]).orig_pkts == 2**32 - 1


@pytest.mark.parametrize("shards", [2, 4])
def test_sharded_large_batches_match_one_table(shards):
    # big enough for the shard threads; random flags over few keys exercise every path
    rng = np.random.default_rng(20)
    n, hosts = 60_000, 40
    cols = dict(ts=np.arange(n), src=rng.integers(0, hosts, n).astype(np.uint32),
                sport=rng.integers(1, 30, n), dst=rng.integers(0, hosts, n).astype(np.uint32),
                dport=rng.integers(1, 30, n),
                flags=rng.choice([SYN, SYN | ACK, ACK, FIN | ACK, RST, 0, 0x29], n),
                length=rng.integers(0, 100, n))
    with Tracker(capacity=1000, max_capacity=100_000, seed=21, shards=shards) as many:
        one = Tracker(capacity=1000, max_capacity=100_000, seed=21)
        for _ in range(2):
            got = many.update(**cols, return_events=True)
            want = one.update(**cols, return_events=True)
            assert (got.state == want.state).all() and (got.verdict == want.verdict).all()
        assert many.histogram() == one.histogram() and many.stats == one.stats
        assert many.flag_class_counts() == one.flag_class_counts()
        assert many.resizes > 0 and len(many) == len(one) > 1000


@pytest.mark.parametrize("n", [600, 40_000])  # shard after shard, and on the shard threads
def test_sharded_table_full_reports_exactly_what_was_not_applied(n):
    cols = random_established(n, seed=22)
    with Tracker(capacity=n // 2, seed=22, shards=2) as t:
        with pytest.raises(TableFullError, match="events not applied") as err:
            t.update(**cols)
        left = err.value.unapplied
        assert err.value.applied == left[0] and len(t) == n - len(left)
        # every shard went on to its bound: the events listed are exactly the untracked ones
        found = t.lookup_many(cols["src"], cols["sport"], cols["dst"], cols["dport"]).conn
        assert np.flatnonzero(found < 0).tolist() == left.tolist()
    with pytest.raises(ValueError, match="shards must be"):
        Tracker(shards=3)


def test_close_while_updating_is_safe():
    t = Tracker(capacity=50_000, shards=2, seed=23)
    cols = random_established(40_000, seed=23)
    errors = []

    def feed():
        try:
            for _ in range(5):
                t.update(**cols)
        except Exception as exc:  # noqa: BLE001 - any exception is the failure under test
            errors.append(exc)

    th = threading.Thread(target=feed)
    th.start()
    t.close()
    th.join()
    assert errors == [] and len(t) == 40_000


def test_dropped_sharded_trackers_release_their_threads():
    import gc
    before = threading.active_count()
    for k in range(3):
        t = Tracker(capacity=20_000, shards=2, seed=k)
        t.update(**random_established(20_000, seed=k))  # large enough to use the threads
        del t
    gc.collect()
    for _ in range(50):
        if threading.active_count() <= before:
            break
        time.sleep(0.01)
    assert threading.active_count() <= before


def test_memory_usage_counts_every_part_as_tracemalloc_sees_it():
    """Sequence state (40 bytes per connection) was left out of memory_usage and
    bytes_per_connection. Every part is counted now, and the total is what was allocated."""
    import gc
    import tracemalloc

    with fasttcp.open_capture(fasttcp.SAMPLE_CAPTURE) as cap:
        segments = np.concatenate([batch.ipv4 for batch in cap])[:100]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        t = Tracker("conntrack", capacity=1 << 16, flows=True, evict=True)
        t.update(segments)                     # sequence columns: sequence-aware from here
        t.pop_flows()
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    usage = t.memory_usage()[4]
    assert usage["sequence"] == 40 * (1 << 16)
    parts = ("records", "index", "expiry", "flows", "eviction", "sequence")
    assert usage["total"] == sum(usage[part] for part in parts)
    assert t.bytes_per_connection() == usage["total"] / (1 << 16)
    # the wheel's slot headers come from calloc, which tracemalloc does not see
    assert abs(traced - usage["total"]) <= 0.02 * usage["total"]


def test_segment_rows_strided_or_contiguous_track_alike():
    with fasttcp.open_capture(fasttcp.SAMPLE_CAPTURE) as cap:
        segments = np.concatenate([batch.ipv4 for batch in cap])
    every_other = segments[::2]                    # not contiguous: field by field
    a, b = Tracker(seed=1, flows=True), Tracker(seed=1, flows=True)
    a.update(every_other)
    b.update(every_other.copy())                   # contiguous: split in one pass
    assert a.stats == b.stats and a.histogram() == b.histogram()
    assert np.array_equal(a.records(), b.records())
