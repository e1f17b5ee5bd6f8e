"""Keys that share a home slot, and keys that share home slot and hash tag.

The second kind makes the engine compare full keys after a tag match; they are found by a
birthday search over the table's own hash (through a test hook), then tracked side by side.
"""
import numpy as np
import pytest
from helpers import run

from fasttcp import Tracker
from fasttcp.models import ACK, PSH, RST, SYN


def ipv4_table(tracker):
    tracker.bytes_per_connection(4)  # creates the IPv4 table
    return tracker._tables[4][0]


def find_full_collision(table, tries=400_000, seed=0):
    """Two distinct IPv4 4-tuples with the same (home slot, tag) in `table`."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 2**32, tries, dtype=np.uint64).tolist()
    dst = rng.integers(0, 2**32, tries, dtype=np.uint64).tolist()
    ports = rng.integers(1, 65536, (tries, 2)).tolist()
    seen = {}
    for s, d, (sp, dp) in zip(src, dst, ports):
        key = table._home_and_tag(s, sp, d, dp)
        if key in seen and seen[key] != (s, sp, d, dp):
            return seen[key], (s, sp, d, dp)
        seen[key] = (s, sp, d, dp)
    pytest.fail("no colliding pair found")


def test_hash_is_symmetric_and_seeded():
    a, b = ipv4_table(Tracker(capacity=4, seed=1)), ipv4_table(Tracker(capacity=4, seed=2))
    key = (0x0A000001, 1234, 0x0A000002, 80)
    assert a._home_and_tag(*key) == a._home_and_tag(key[2], key[3], key[0], key[1])
    keys = [(i, 1000 + i, 7 * i, 80) for i in range(50)]
    assert [a._home_and_tag(*k) for k in keys] != [b._home_and_tag(*k) for k in keys]


def test_connections_with_equal_home_slot_and_tag_stay_apart():
    tracker = Tracker("conntrack", capacity=4, seed=3)
    first, second = find_full_collision(ipv4_table(tracker))
    for (s, sp, d, dp), nbytes in ((first, 10), (second, 20)):
        tracker.update(ts=np.array([1]), src=np.array([s]), sport=np.array([sp]),
                       dst=np.array([d]), dport=np.array([dp]), flags=np.array([PSH | ACK]),
                       length=np.array([nbytes]))
    assert len(tracker) == 2
    assert sorted(tracker.probe_lengths().tolist()) == [1, 2]
    one = tracker.lookup(first[0], first[1], first[2], first[3])
    two = tracker.lookup(second[2], second[3], second[0], second[1])
    assert one.conn != two.conn and (one.orig_bytes, two.orig_bytes) == (10, 20)

    # the first one leaves (RST with no reply: dropped); the second is still found past the
    # tombstone, and a third segment for it lands on the right record
    s, sp, d, dp = first
    tracker.update(ts=np.array([2]), src=np.array([s]), sport=np.array([sp]), dst=np.array([d]),
                   dport=np.array([dp]), flags=np.array([RST]))
    assert tracker.lookup(s, sp, d, dp) is None and len(tracker) == 1
    s, sp, d, dp = second
    tracker.update(ts=np.array([3]), src=np.array([d]), sport=np.array([dp]), dst=np.array([s]),
                   dport=np.array([sp]), flags=np.array([ACK]), length=np.array([5]))
    info = tracker.lookup(s, sp, d, dp)
    assert (info.orig_bytes, info.resp_bytes, info.replied) == (20, 5, True)


def test_many_connections_on_one_home_slot_chain():
    # capacity 4 -> 8 slots: 4 live connections always share neighbourhoods of the probe
    tracker = Tracker("conntrack", capacity=4, seed=4)
    clients = [("10.9.0.%d" % i, 2000 + i) for i in range(4)]
    for client in clients:
        run([("c", SYN), ("s", SYN | ACK), ("c", ACK)], tracker=tracker, client=client)
    assert tracker.histogram()["ESTABLISHED"] == 4
    for host, port in clients:
        assert tracker.lookup(host, port, "10.0.0.2", 80).state == "ESTABLISHED"
