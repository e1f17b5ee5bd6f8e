"""The engine's parts (records, index, expiry, eviction, sequence, flows) as FlowTable composes
them: memory accounting, growth and restore run over every part, so none can be left out."""
import numpy as np
import pytest

from fasttcp import _engine
from fasttcp.models import ACK, FIN, PSH, SYN, conntrack

CAPACITY = 64
PARTS = ("records", "index", "expiry", "sequence", "flows", "eviction")


def make_table(family, flows=True, expiry=True, evict=True):
    m = conntrack()
    timeouts = np.full(len(m.states), 10**12, dtype=np.int64) if expiry else None
    return _engine.FlowTable(family, CAPACITY, m.class_of, m.table.ravel(), m.actions.ravel(),
                             m.illegal_mask, len(m.states), len(m.flag_classes), (1, 2, 3, 4),
                             flows=flows, ended_capacity=16, timeouts=timeouts, evict=evict,
                             early=m.early)


def batch(family, n, seed):
    """n handshakes and data segments over n // 4 connections, with sequence columns."""
    rng = np.random.default_rng(seed)
    conn = rng.integers(0, max(1, n // 4), n)
    if family == 4:
        src, dst = (1000 + conn).astype(np.uint32), np.full(n, 7, np.uint32)
    else:
        src = np.zeros((n, 16), np.uint8)
        src[:, 15], src[:, 14] = conn % 256, conn // 256
        dst = np.full((n, 16), 9, np.uint8)
        src, dst = src.view(np.uint64), dst.view(np.uint64)    # the engine's (n, 2) words
    flags = rng.choice(np.array([SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK], np.uint8), n)
    columns = (np.arange(n, dtype=np.int64) * 1000, src, (40000 + conn).astype(np.uint16),
               dst, np.full(n, 80, np.uint16), flags, rng.integers(0, 1000, n).astype(np.uint32))
    sequence = (rng.integers(0, 2**32, n).astype(np.uint32),
                rng.integers(0, 2**32, n).astype(np.uint32), np.full(n, 65535, np.uint16),
                np.full(n, -1, np.int8))
    return columns, sequence


def apply(table, family, n, seed):
    columns, sequence = batch(family, n, seed)
    start = 0
    while start < n:
        start, _ = table.update(*columns, start, sequence=sequence)
        table.take_ended()
        if start < n and not table.ended_full:
            table.resize(min(2 * table.capacity, _engine.MAX_CAPACITY))


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("options", [{}, {"flows": False}, {"expiry": False},
                                     {"evict": False}])
def test_nbytes_is_the_sum_of_every_part_and_matches_the_arrays_held(family, options):
    table = make_table(family, **options)
    assert table.nbytes_sequence == 0 and not table.sequence_aware
    apply(table, family, 400, seed=family)
    assert table.sequence_aware
    assert table.nbytes == sum(getattr(table, f"nbytes_{part}") for part in PARTS)
    records, flows, due, ring, seq = table.storage
    record_size = _engine.CONN4_DTYPE.itemsize if family == 4 else _engine.CONN6_DTYPE.itemsize
    assert table.nbytes_records == records.nbytes == table.capacity * record_size
    assert table.nbytes_sequence == seq.nbytes == 40 * table.capacity
    assert table.nbytes_eviction == (0 if ring is None else ring.nbytes)
    assert table.nbytes_index == 4 * _engine.index_slots_for(table.capacity)
    ended = 16 * (record_size + _engine.FLOW_STATE_DTYPE.itemsize + 1)
    assert table.nbytes_flows == (0 if flows is None else flows.nbytes + ended)
    assert (table.nbytes_expiry == 0) == (due is None)
    if due is not None:
        assert due.nbytes < table.nbytes_expiry <= table.max_nbytes_expiry


@pytest.mark.parametrize("family", [4, 6])
def test_growth_keeps_every_part_of_the_records_in_use(family):
    table = make_table(family)
    apply(table, family, 200, seed=3)
    used = len(table.records)
    before = [None if a is None else a[:used].copy() for a in table.storage]
    capacity = table.capacity
    table.resize(4 * capacity)
    after = table.storage
    for name, old, new in zip(("records", "flows", "due", "ring", "seq"), before, after):
        if name == "ring":
            continue                    # grown only when it falls below twice the capacity
        assert new.shape[0] == 4 * capacity, name
        np.testing.assert_array_equal(new[:used], old, err_msg=name)
    # the grown table goes on as one that was never resized
    twin = make_table(family)
    apply(twin, family, 200, seed=3)
    twin.resize(4 * capacity)
    apply(table, family, 300, seed=4)
    apply(twin, family, 300, seed=4)
    for mine, theirs in zip(table.storage, twin.storage):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("family", [4, 6])
def test_restore_attaches_every_part(family):
    table = make_table(family)
    apply(table, family, 300, seed=5)
    copy = make_table(family)
    copy.resize(table.capacity)
    copy.restore(*[None if a is None else a.copy() for a in table.storage],
                 table.wheel_lists(), np.asarray(table.class_counts).copy(), table.counters())
    assert copy.sequence_aware
    # (a restored wheel allocates its entries without slack: expiry may come out smaller)
    assert {part: getattr(copy, f"nbytes_{part}") for part in PARTS if part != "expiry"} == \
        {part: getattr(table, f"nbytes_{part}") for part in PARTS if part != "expiry"}
    assert 0 < copy.nbytes_expiry <= table.nbytes_expiry
    apply(table, family, 300, seed=6)
    apply(copy, family, 300, seed=6)
    for mine, theirs in zip(table.storage, copy.storage):
        np.testing.assert_array_equal(mine, theirs)
    assert copy.totals == table.totals


def test_python_constants_come_from_the_engine_definitions():
    """Flag bits, history width and counter limits were written out again in Python."""
    from fasttcp import flows, models

    assert (models.FIN, models.SYN, models.RST, models.PSH, models.ACK, models.URG,
            models.ECE, models.CWR) == (_engine.TH_FIN, _engine.TH_SYN, _engine.TH_RST,
                                        _engine.TH_PUSH, _engine.TH_ACK, _engine.TH_URG,
                                        _engine.TH_ECE, _engine.TH_CWR)
    assert sorted((models.FIN, models.SYN, models.RST, models.PSH, models.ACK, models.URG,
                   models.ECE, models.CWR)) == [1 << bit for bit in range(8)]
    assert flows.FLOW_DTYPE["history"].itemsize == _engine.HISTORY_WIDTH == 19
    assert _engine.PKTS_MAX == np.iinfo(_engine.CONN4_DTYPE["orig_pkts"]).max
    assert _engine.ILLEGAL_MAX == 0xFF >> _engine.STATUS_ILLEGAL_SHIFT
    assert len(_engine.HISTORY_LETTERS) == 10 and len(_engine.ZEEK_STATES) == 7



def test_restore_reads_wheel_lengths_given_as_a_strided_view():
    """restore checked the wheel through a pointer into a contiguous copy of the slot lengths
    that it had already freed: a valid saved wheel given as a strided view was refused (or
    read from freed memory)."""
    table = make_table(4)
    apply(table, 4, 300, seed=5)
    lengths, entries = table.wheel_lists()
    wide = np.zeros(2 * len(lengths), np.int64)
    wide[::2] = lengths
    copy = make_table(4)
    copy.resize(table.capacity)
    copy.restore(*[None if a is None else a.copy() for a in table.storage], (wide[::2], entries),
                 np.asarray(table.class_counts).copy(), table.counters())
    for mine, theirs in zip(copy.wheel_lists(), table.wheel_lists()):
        np.testing.assert_array_equal(mine, theirs)
