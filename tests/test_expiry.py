"""Expiry by per-state timeouts (the timer wheel, expiry on touch, both clocks) and eviction
when the table is full (oldest unanswered first), against the plain-Python reference too."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fasttcp
from fasttcp.flows import CONN_STATES, ENDED
from fasttcp.models import ACK, FIN, PSH, RST, SYN
from fasttcp.reference import ReferenceTracker

S = 1_000_000_000
T0 = 1_700_000_000 * S
CLIENT, SERVER = (int(a) for a in fasttcp.addresses(["10.0.0.1", "10.9.9.9"]))
SHARED = Path(__file__).resolve().parents[2] / "shared" / "pcaps"


def segment(tracker, ts, flags, client_port=40000, from_client=True, length=0):
    a, b = (CLIENT, client_port), (SERVER, 80)
    (src, sport), (dst, dport) = (a, b) if from_client else (b, a)
    return tracker.update(np.array([ts]), np.array([src], dtype=np.uint32), np.array([sport]),
                          np.array([dst], dtype=np.uint32), np.array([dport]),
                          np.array([flags]), np.array([length]))


def handshake(tracker, ts, client_port=40000):
    segment(tracker, ts, SYN, client_port)
    segment(tracker, ts + 1000, SYN | ACK, client_port, from_client=False)
    segment(tracker, ts + 2000, ACK, client_port)


def reasons(flows):
    return [ENDED[code] for code in flows["ended"]]


def test_idle_connections_expire_by_their_state_timeout():
    # single segments minutes apart: the clock follows each (tests/test_clock.py has the rule)
    t = fasttcp.Tracker("conntrack", flows=True, max_clock_jump=None)
    segment(t, T0, SYN, 1)                 # SYN_SENT: 120 s
    handshake(t, T0, 2)                    # ESTABLISHED: 5 days
    segment(t, T0 + 119 * S, ACK, 3, length=10)   # a third, to move the clock
    assert len(t) == 3 and t.stats["expired"] == 0
    segment(t, T0 + 121 * S, ACK, 3, length=10)
    assert len(t) == 2 and t.stats["expired"] == 1
    (flow,) = t.pop_flows()
    assert ENDED[flow["ended"]] == "expired" and flow["orig_p"] == 1
    assert CONN_STATES[flow["conn_state"]] == "S0"
    assert t.expire(T0 + 5 * 86400 * S + 122 * S) == 2    # the others, after 5 days idle
    assert len(t) == 0 and t.histogram()["ESTABLISHED"] == 0


def test_a_segment_after_the_timeout_meets_a_new_connection():
    t = fasttcp.Tracker("conntrack", flows=True)
    segment(t, T0, SYN)
    res = segment(t, T0 + 200 * S, SYN)    # 200 s later: the first attempt is over
    assert res.new == 1 and t.stats["expired"] == 1 and len(t) == 1
    assert reasons(t.pop_flows()) == ["expired"]
    assert t.lookup("10.0.0.1", 40000, "10.9.9.9", 80).first_ts == T0 + 200 * S


def test_activity_keeps_a_connection():
    t = fasttcp.Tracker("conntrack")
    handshake(t, T0)
    for minute in range(1, 200):           # more than a wheel revolution (68 minutes)
        segment(t, T0 + minute * 60 * S, PSH | ACK, length=1)
    assert len(t) == 1 and t.stats["expired"] == 0


def test_state_change_to_a_shorter_timeout_is_honoured():
    t = fasttcp.Tracker("conntrack", flows=True)
    handshake(t, T0)                       # ESTABLISHED, listed 5 days ahead
    segment(t, T0 + S, FIN | ACK)
    segment(t, T0 + S, FIN | ACK, from_client=False)
    segment(t, T0 + S, ACK)                # TIME_WAIT: 120 s
    assert t.expire(T0 + 120 * S) == 0
    assert t.expire(T0 + 122 * S) == 1
    assert reasons(t.pop_flows()) == ["expired"]


def test_manual_clock_waits_for_expire():
    t = fasttcp.Tracker("conntrack", clock="manual")
    segment(t, T0, SYN, 1)
    segment(t, T0 + 1000 * S, SYN, 2)
    assert len(t) == 2                     # nothing expired without expire()
    assert t.expire(T0 + 1000 * S) == 1 and len(t) == 1
    assert t.now == T0 + 1000 * S


def test_clock_jumps_of_years():
    t = fasttcp.Tracker("conntrack")
    for port in range(100):
        handshake(t, T0 + port * S, port + 1)
    assert t.expire(T0 + 10 * 365 * 86400 * S) == 100 and len(t) == 0


def test_expiry_can_be_off():
    t = fasttcp.Tracker("conntrack", expiry=False)
    segment(t, T0, SYN, 1)
    segment(t, T0 + 10**6 * S, SYN, 2)
    assert len(t) == 2
    with pytest.raises(ValueError, match="no expiry"):
        t.expire(T0)
    with pytest.raises(ValueError, match="clock"):
        fasttcp.Tracker(clock="wall")


def test_timeout_overrides_apply():
    t = fasttcp.Tracker("conntrack", timeouts={"SYN_SENT": 5})
    segment(t, T0, SYN, 1)
    assert t.expire(T0 + 6 * S) == 1


def test_memory_accounts_for_the_wheel():
    with_expiry = fasttcp.Tracker(capacity=1 << 16).bytes_per_connection()
    without = fasttcp.Tracker(capacity=1 << 16, expiry=False).bytes_per_connection()
    # 4 bytes of due tick per connection, and 64 KB of wheel slot headers
    assert without == 64.0 and with_expiry == 68.0 + 4096 * 16 / (1 << 16)


# -- eviction ---------------------------------------------------------------------------------

def test_syn_flood_of_ten_times_capacity_keeps_established_connections():
    capacity = 1000
    t = fasttcp.Tracker("conntrack", capacity=capacity, max_capacity=capacity, evict=True,
                        flows=True)
    for port in range(1, 101):             # 100 established connections
        handshake(t, T0, port)
    n = 10 * capacity                       # spoofed SYNs from 10,000 sources
    spoofed = np.arange(n, dtype=np.uint32) + int(fasttcp.addresses(["203.0.113.0"])[0])
    t.update(np.full(n, T0 + S), spoofed, np.full(n, 1234), np.full(n, SERVER, dtype=np.uint32),
             np.full(n, 80), np.full(n, SYN))
    assert len(t) == capacity and t.capacity == capacity
    for port in range(1, 101):
        assert t.lookup("10.0.0.1", port, "10.9.9.9", 80).state == "ESTABLISHED"
    assert t.stats["evicted"] == n - (capacity - 100) and t.stats["refused"] == 0
    evicted = t.pop_flows()
    assert len(evicted) == t.stats["evicted"] and set(reasons(evicted)) == {"evicted"}
    # the oldest SYNs went first: the survivors are the last ones sent
    survivors = {int(r["orig_h"]) for r in t.records(4) if r["status"] and r["orig_p"] == 1234}
    assert survivors == set(spoofed[-(capacity - 100):].tolist())


def test_a_table_full_of_answered_connections_refuses_new_ones():
    t = fasttcp.Tracker("conntrack", capacity=10, max_capacity=10, evict=True)
    for port in range(1, 11):
        handshake(t, T0, port)
    res = segment(t, T0 + S, SYN, 99)
    assert res.ignored == 1 and t.stats["refused"] == 1 and len(t) == 10
    assert t.lookup("10.0.0.1", 99, "10.9.9.9", 80) is None


def test_without_eviction_a_full_table_still_raises():
    t = fasttcp.Tracker("conntrack", capacity=4, max_capacity=4)
    for port in range(1, 5):
        segment(t, T0, SYN, port)
    with pytest.raises(fasttcp.TableFullError):
        segment(t, T0, SYN, 5)


# -- against the reference --------------------------------------------------------------------

GAPS = st.sampled_from([0, 1000, S // 2, 5 * S, 31 * S, 61 * S, 121 * S, 241 * S, 4000 * S])
FLAGS = st.sampled_from([SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, RST | ACK, 0])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(st.tuples(st.integers(0, 5), st.booleans(), FLAGS, GAPS), min_size=1,
                       max_size=80),
       cuts=st.lists(st.integers(0, 80), max_size=4),
       model=st.sampled_from(["rfc793", "conntrack"]),
       evict=st.booleans(), capacity=st.sampled_from([2, 3, 8]))
def test_expiry_and_eviction_match_the_reference(events, cuts, model, evict, capacity):
    n = len(events)
    ts = T0 + np.cumsum([gap for _, _, _, gap in events]).astype(np.int64)
    port = np.array([40000 + k for k, _, _, _ in events], dtype=np.uint16)
    from_client = np.array([c for _, c, _, _ in events])
    cols = dict(ts=ts, src=np.where(from_client, CLIENT, SERVER).astype(np.uint32),
                sport=np.where(from_client, port, 80).astype(np.uint16),
                dst=np.where(from_client, SERVER, CLIENT).astype(np.uint32),
                dport=np.where(from_client, 80, port).astype(np.uint16),
                flags=np.array([f for _, _, f, _ in events], dtype=np.uint8),
                length=np.zeros(n, dtype=np.uint32))
    bound = capacity if evict else 64
    tracker = fasttcp.Tracker(model, capacity=capacity, max_capacity=bound, evict=evict,
                              flows=True, seed=3)
    ref = ReferenceTracker(model, timeouts=tracker.timeouts,
                           capacity=capacity if evict else None)
    edges = [0] + sorted(c for c in cuts if c <= n) + [n]
    for lo, hi in zip(edges, edges[1:]):
        part = {k: v[lo:hi] for k, v in cols.items()}
        got = tracker.update(**part, return_events=True)
        want = ref.update(**part)
        assert [(int(s), fasttcp.VERDICTS[v], c >= 0)
                for s, v, c in zip(got.state, got.verdict, got.conn)] == want
    assert tracker.stats == ref.stats
    assert tracker.histogram() == ref.histogram()
    ours = sorted((int(f["orig_p"]) + int(f["resp_p"]), int(f["ts"]), ENDED[f["ended"]])
                  for f in tracker.pop_flows())
    theirs = sorted((c.orig_p + c.resp_p, c.first_ts, why) for c, why in ref.ended)
    assert ours == theirs


# -- Zeek ------------------------------------------------------------------------------------

@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is not present")
def test_zeek_inactivity_timeout_splits_a_connection():
    """Zeek's tcp_inactivity_timeout is 5 minutes in every state: with the same timeout the
    retransmission ~300 s later starts a second record, as in Zeek's conn.log."""
    endpoint_states = fasttcp.get_model("rfc793").endpoint_timeouts
    t = fasttcp.Tracker(flows=True, timeouts={name: 300 for name in endpoint_states})
    with fasttcp.open_capture(SHARED / "zeek__tcp__retransmit-timeout.pcapng") as cap:
        for batch in cap:
            t.update(batch.ipv4)
    flows = np.concatenate([t.pop_flows(), t.live_flows()])
    assert [(f["history"].decode(), CONN_STATES[f["conn_state"]], ENDED[f["ended"]])
            for f in flows] == [("Da", "OTH", "expired"), ("D", "OTH", "live")]


# -- found in review --------------------------------------------------------------------------

def test_a_full_table_makes_room_by_expiring_first():
    """At its bound, a table lets the connections whose time is up go before raising or
    evicting a live one (by the new segment's clock)."""
    for evict in (False, True):
        t = fasttcp.Tracker("conntrack", capacity=4, max_capacity=4, evict=evict,
                            max_clock_jump=None)
        for port in range(1, 5):
            segment(t, T0, SYN, port)          # SYN_SENT: 120 s
        segment(t, T0 + 200 * S, SYN, 9)      # the four are past their time: no error
        assert len(t) == 1 and t.stats["expired"] == 4
        assert t.stats["evicted"] == 0 and t.stats["refused"] == 0


def test_churn_cannot_flush_half_open_connections_out_of_the_eviction_ring():
    capacity = 64
    t = fasttcp.Tracker("conntrack", capacity=capacity, max_capacity=capacity, evict=True)
    for port in range(1, capacity + 1):
        segment(t, T0, SYN, port)              # a table full of half-open connections
    for k in range(20 * capacity):             # then a key reset and reopened again and again
        segment(t, T0 + 1 + k, RST, 1)
        segment(t, T0 + 1 + k, SYN, 1)
    for port in range(1000, 1010):             # new connections still find one to evict
        segment(t, T0 + S, SYN, port)
    assert t.stats["refused"] == 0 and t.stats["evicted"] >= 10


def test_huge_timeouts_mean_never_and_models_without_timeouts_keep_connections():
    t = fasttcp.Tracker("conntrack", timeouts={"ESTABLISHED": float("inf")})
    handshake(t, T0)
    assert t.expire(T0 + 10**9 * S) == 0 and len(t) == 1
    bare = fasttcp.compile_model("bare", ["NEW", "OPEN"], {"o": "OPEN"}, "* SYN o", default="o")
    t = fasttcp.Tracker(bare)
    segment(t, T0, SYN)
    assert t.expire(T0 + 10**6 * S) == 0 and len(t) == 1
    assert t.timeouts["OPEN"] == float("inf")


def test_a_crafted_snapshot_free_list_is_refused(tmp_path):
    """Checksums only show damage; a file written with a bad free-list link (which allocation
    would follow out of the records) is refused on its content."""
    from fasttcp.snapshot import SnapshotError
    t = fasttcp.Tracker("conntrack", capacity=8)
    segment(t, T0, SYN, 1)
    segment(t, T0, SYN, 2)
    segment(t, T0, RST, 1)                     # closed unanswered: record 0 is freed
    records = t._tables[4][0].storage[0]
    assert records["status"][0] == 0
    records["orig_pkts"][0] = 50_000_000       # its free-list link, far past the records
    path = tmp_path / "t.snap"
    t.save(path)
    with pytest.raises(SnapshotError, match="free list"):
        fasttcp.Tracker.load(path)


@pytest.mark.parametrize("epoch_s", [0, 2**32 - 5, 2**32 + 5, 2**33 - 3, 9_223_372_000])
def test_a_timeout_fires_on_time_at_any_epoch(epoch_s):
    """Due ticks are kept modulo 2**32 seconds: past 2**32 s (year 2106) a 10 s timeout used
    to fire after 119 s."""
    t = fasttcp.Tracker("conntrack", timeouts={"CLOSE": 10}, clock="manual")
    start = epoch_s * S
    handshake(t, start)
    segment(t, start + S, RST | ACK)                        # CLOSE: 10 s
    assert t.histogram()["CLOSE"] == 1
    t.expire(start + 10 * S)
    assert len(t) == 1
    t.expire(start + 11 * S)
    assert len(t) == 0 and t.stats["expired"] == 1


def test_no_timeout_means_never_even_at_the_end_of_time():
    end = np.iinfo(np.int64).max
    t = fasttcp.Tracker("conntrack", timeouts={"ESTABLISHED": float("inf")}, clock="manual")
    handshake(t, end - 5 * S)
    segment(t, end, ACK)                 # touched at the last representable instant
    t.expire(end)
    assert t.histogram()["ESTABLISHED"] == 1 and t.stats["expired"] == 0


def test_wheel_memory_stays_bounded_by_capacity_under_hours_of_mixed_traffic():
    """A full table with eviction, random flags (so connections are rescheduled, closed,
    evicted and reopened all the time): stale wheel entries used to pile up for an hour,
    about 1.6 kB per connection. Now the wheel is compacted past a bound per record of
    capacity, and tracemalloc sees what nbytes_expiry reports."""
    import tracemalloc

    capacity = 1 << 12
    t = fasttcp.Tracker("conntrack", capacity=capacity, max_capacity=capacity, evict=True,
                        seed=3)
    (table,) = t._tables.get(4) or [t._family(4)[0]]
    rng = np.random.default_rng(7)
    pool = np.array([SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, RST | ACK, FIN, 0],
                    dtype=np.uint8)
    tracemalloc.start()
    try:
        peak, at_hour = 0, {}
        for second in range(0, 4 * 3600, 20):              # four hours, a batch per 20 s
            n = 2000
            ts = T0 + second * S + np.sort(rng.integers(0, 20 * S, n))
            client = (0x0A000000 + rng.integers(0, 4 * capacity, n)).astype(np.uint32)
            forward = rng.random(n) < 0.5
            t.update(ts, np.where(forward, client, SERVER).astype(np.uint32),
                     np.where(forward, 40000, 80).astype(np.uint16),
                     np.where(forward, SERVER, client).astype(np.uint32),
                     np.where(forward, 80, 40000).astype(np.uint16),
                     pool[rng.integers(0, len(pool), n)])
            peak = max(peak, table.nbytes_expiry)
            at_hour[second // 3600] = table.nbytes_expiry
            if second == 3600:
                traced_after_an_hour = tracemalloc.get_traced_memory()[0]
                expiry_after_an_hour = table.nbytes_expiry
        traced_growth = tracemalloc.get_traced_memory()[0] - traced_after_an_hour
    finally:
        tracemalloc.stop()
    assert len(t) > 0.9 * capacity and t.stats["evicted"] > 10 * capacity
    assert peak <= table.max_nbytes_expiry
    assert table.max_nbytes_expiry <= 256 * capacity     # what SECURITY.md promises
    # flat, not rising: three more hours add no more than the wheel's own swing
    assert traced_growth <= table.nbytes_expiry - expiry_after_an_hour + 64 * capacity
    assert max(at_hour.values()) <= table.max_nbytes_expiry


@pytest.mark.parametrize("family, per_connection", [(4, 228), (6, 252)])
def test_memory_per_connection_of_max_capacity_is_what_security_md_states(family,
                                                                          per_connection):
    capacity = 3000          # not a power of two: the eviction ring rounds up the most
    t = fasttcp.Tracker("conntrack", capacity=capacity, max_capacity=capacity, evict=True,
                        flows=True)
    batch = np.zeros(3, dtype=fasttcp.SEGMENT_DTYPE if family == 4 else fasttcp.SEGMENT6_DTYPE)
    batch["ts"], batch["flags"], batch["sport"], batch["dport"] = T0, SYN, 40000, 80
    batch["wscale"] = -1
    if family == 4:
        batch["src"] = CLIENT
    else:
        batch["src"][:, 15] = 1
    t.update(batch)                                       # sequence-aware from here
    usage = t.memory_usage()[family]
    (table,) = t._family(family)
    assert usage["sequence"] > 0 and usage["flows"] > 0 and usage["eviction"] > 0
    worst = usage["total"] - usage["expiry"] + table.max_nbytes_expiry
    assert worst <= per_connection * capacity + (1 << 20)


def test_a_deadline_at_the_end_of_time_still_comes():
    """INT64_MAX as a deadline is not "never": only a timeout of never is."""
    end = np.iinfo(np.int64).max
    t = fasttcp.Tracker("conntrack", timeouts={"CLOSE": 10}, clock="manual")
    ref = ReferenceTracker("conntrack", timeouts=t.timeouts)
    for tracker in (t, ref):
        handshake(tracker, end - 20 * S)
        segment(tracker, end - 10 * S, RST | ACK)        # CLOSE: due at INT64_MAX exactly
        tracker.expire(end)
    assert len(t) == len(ref) == 0
