"""Hostile and long-running use: a stateful walk through every operation against the reference,
hash flooding, scans, every flag combination, time going backwards, and a long stream whose
memory must stay flat."""
import gc
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import fasttcp
from fasttcp.flows import ENDED
from fasttcp.models import ACK, FIN, PSH, RST, SYN
from fasttcp.reference import ReferenceTracker

S = 1_000_000_000
SERVER = 0x0A090909
FLAGS = [SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, RST | ACK, 0, SYN | FIN, 0xFF]


class TrackerMachine(RuleBasedStateMachine):
    """update, lookup, expire, eviction at the bound, growth, snapshot and restore, in any
    order, against the plain-Python reference."""

    def __init__(self):
        super().__init__()
        self.model = "conntrack"
        self.tracker = fasttcp.Tracker(self.model, capacity=2, max_capacity=8, evict=True,
                                       flows=True, seed=5)
        self.reference = ReferenceTracker(self.model, timeouts=self.tracker.timeouts,
                                          capacity=8)
        self.now = 0
        self.ended = []
        self.directory = tempfile.mkdtemp()

    @rule(events=st.lists(st.tuples(st.integers(0, 11), st.booleans(), st.sampled_from(FLAGS),
                                    st.sampled_from([0, 10**6, S, 40 * S, 130 * S])),
                          min_size=1, max_size=20))
    def update(self, events):
        n = len(events)
        ts = self.now + np.cumsum([gap for *_, gap in events]).astype(np.int64)
        self.now = int(ts[-1])
        client = np.array([0x0A000001 + k for k, *_ in events], dtype=np.uint32)
        forward = np.array([f for _, f, *_ in events])
        cols = dict(ts=ts, src=np.where(forward, client, SERVER).astype(np.uint32),
                    sport=np.where(forward, 40000, 80).astype(np.uint16),
                    dst=np.where(forward, SERVER, client).astype(np.uint32),
                    dport=np.where(forward, 80, 40000).astype(np.uint16),
                    flags=np.array([f for _, _, f, _ in events], dtype=np.uint8))
        got = self.tracker.update(**cols, return_events=True)
        want = self.reference.update(**cols)
        assert [(int(s), fasttcp.VERDICTS[v]) for s, v in zip(got.state, got.verdict)] == \
            [(s, v) for s, v, _ in want]

    @rule(k=st.integers(0, 11))
    def lookup(self, k):
        ours = self.tracker.lookup(0x0A000001 + k, 40000, SERVER, 80)
        theirs = self.reference.lookup(0x0A000001 + k, 40000, SERVER, 80)
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert self.tracker.model.states[theirs.state] == ours.state

    @rule(gap=st.sampled_from([0, S, 61 * S, 121 * S, 10**6 * S]))
    def expire(self, gap):
        self.now += gap
        self.tracker.expire(self.now)
        self.reference.expire(self.now)

    @precondition(lambda self: len(self.reference.conns) > 0)
    @rule()
    def snapshot_and_restore(self):
        path = os.path.join(self.directory, "t.snap")
        self.tracker.save(path)
        self.tracker.close()
        self.tracker = fasttcp.Tracker.load(path)

    @rule()
    def pop_flows(self):
        self.ended += [(int(f["orig_p"]) + int(f["resp_p"]), int(f["ts"]), ENDED[f["ended"]])
                       for f in self.tracker.pop_flows()]

    @invariant()
    def same_as_the_reference(self):
        assert self.tracker.histogram() == self.reference.histogram()
        assert self.tracker.stats == self.reference.stats
        assert len(self.tracker) == len(self.reference) <= 8

    def teardown(self):
        self.pop_flows()
        assert sorted(self.ended) == sorted((c.orig_p + c.resp_p, c.first_ts, why)
                                            for c, why in self.reference.ended)
        self.tracker.close()


TestTrackerMachine = TrackerMachine.TestCase
TestTrackerMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])


def colliding_keys(table, count, home):
    """`count` IPv4 (client, port) keys whose home slot in `table` is `home` (through the
    test hook), all to SERVER:80."""
    clients, ports = [], []
    port = 1
    while len(clients) < count:
        for client in range(1, 4000):
            if table._home_and_tag(0x0A000000 + client, port, SERVER, 80)[0] == home:
                clients.append(0x0A000000 + client)
                ports.append(port)
                if len(clients) == count:
                    break
        port += 1
    return np.array(clients, dtype=np.uint32), np.array(ports, dtype=np.uint16)


def test_hash_flooding_needs_the_secret_key():
    """Keys chosen to share one home slot under a known key pile up there (the attack works
    when the key is known); under the tracker's own secret key they spread out."""
    known = fasttcp.Tracker("conntrack", capacity=1 << 12, seed=1)
    known.bytes_per_connection(4)
    clients, ports = colliding_keys(known._tables[4][0], 200, home=77)
    n = len(clients)
    batch = (np.zeros(n, dtype=np.int64), clients, ports, np.full(n, SERVER, np.uint32),
             np.full(n, 80), np.full(n, SYN))
    known.update(*batch)
    secret = fasttcp.Tracker("conntrack", capacity=1 << 12)     # a key from the OS
    secret.update(*batch)
    assert len(known) == len(secret) == n
    assert known.probe_lengths().max() == n                     # one long chain
    lengths = secret.probe_lengths()
    assert lengths.mean() < 1.5 and lengths.max() <= 6          # as for any random keys


def test_port_scan_of_one_host_keeps_the_tracker_bounded():
    capacity = 4096
    t = fasttcp.Tracker("conntrack", capacity=capacity, max_capacity=capacity, evict=True)
    t.update(np.array([0, 1, 2]), np.array([7, SERVER, 7], dtype=np.uint32),
             np.array([5555, 22, 5555]), np.array([SERVER, 7, SERVER], dtype=np.uint32),
             np.array([22, 5555, 22]), np.array([SYN, SYN | ACK, ACK]))     # an SSH session
    ports = np.arange(1, 65536)
    n = len(ports)
    t.update(np.arange(n, dtype=np.int64) + 10, np.full(n, 0x0B000001, np.uint32),
             np.full(n, 40000), np.full(n, SERVER, np.uint32), ports, np.full(n, SYN))
    assert len(t) == capacity and t.capacity == capacity
    assert t.lookup(7, 5555, SERVER, 22).state == "ESTABLISHED"
    assert t.stats["evicted"] == n - (capacity - 1)


@pytest.mark.parametrize("model", ["rfc793", "conntrack"])
def test_every_flag_combination(model):
    t = fasttcp.Tracker(model, flows=True)
    flags = np.arange(256, dtype=np.uint8)
    src = np.arange(256, dtype=np.uint32) + 0x0A000000
    t.update(np.arange(256), src, np.full(256, 1000), np.full(256, SERVER, np.uint32),
             np.full(256, 80), flags)
    t.update(np.arange(256) + 256, np.full(256, SERVER, np.uint32), np.full(256, 80), src,
             np.full(256, 1000), flags[::-1].copy())
    counts = t.flag_class_counts()
    assert sum(counts.values()) == 512
    for name in t.model.illegal_classes:
        assert counts[name] > 0
    assert sum(t.histogram().values()) == len(t)
    assert len(t.live_flows()) == len(t)


def test_time_going_backwards_is_accepted_and_never_rewinds():
    """Documented behaviour: a segment older than the clock is applied like any other; a
    connection's last_ts and the clock only move forward."""
    t = fasttcp.Tracker("conntrack")
    t.update(np.array([100 * S]), np.array([1], np.uint32), np.array([1]),
             np.array([2], np.uint32), np.array([2]), np.array([SYN]))
    t.update(np.array([50 * S]), np.array([2], np.uint32), np.array([2]),
             np.array([1], np.uint32), np.array([1]), np.array([SYN | ACK]))
    info = t.lookup(1, 1, 2, 2)
    assert info.state == "SYN_RECV" and info.last_ts == 100 * S and t.now == 100 * S


def test_nan_and_float_timestamps_are_refused():
    t = fasttcp.Tracker()
    with pytest.raises(TypeError, match="ts must be an integer"):
        t.update(np.array([np.nan]), np.array([1], np.uint32), np.array([1]),
                 np.array([2], np.uint32), np.array([2]), np.array([SYN]))


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_a_long_stream_keeps_memory_flat():
    """500 batches opening connections that expire later: live connections level off, and
    so must the process's memory (no leak in the extensions or the Python layer)."""
    t = fasttcp.Tracker("conntrack", capacity=1 << 14, max_capacity=1 << 17, flows=True)
    rng = np.random.default_rng(0)

    def batch(k):
        n = 1000       # 500 new connections a second, each expiring after 120 s
        src = rng.integers(0, 2**32, n, dtype=np.uint32)
        ts = (k * 2 * S + np.sort(rng.integers(0, 2 * S, n))).astype(np.int64)
        t.update(ts, src, np.full(n, 999), np.full(n, SERVER, np.uint32), np.full(n, 80),
                 np.full(n, SYN))
        t.pop_flows()

    for k in range(150):       # warm up: the wheel and tables reach their working size
        batch(k)
    gc.collect()
    before = rss_bytes()
    for k in range(150, 500):
        batch(k)
    gc.collect()
    after = rss_bytes()
    assert t.stats["expired"] > 400_000 and len(t) < 70_000
    assert after - before < 8 << 20, (before, after)
