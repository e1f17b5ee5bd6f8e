"""The per-family table set under Tracker (fasttcp/tables.py), the expiry it skips, and the
tracker's state/restore that snapshots go through."""
import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

from fasttcp import Tracker
from fasttcp._columns import batch_columns
from fasttcp.models import ACK, FIN, PSH, SYN, get_model
from fasttcp.tables import TableSet, TableSpec, shard_share
from fasttcp.synth import generate

S = 1_000_000_000
T0 = 1_700_000_000 * S
CLIENT, SERVER = 167772161, 168364297


def one(ts, flags, port=40000, from_client=True):
    a, b = (CLIENT, port), (SERVER, 80)
    (src, sport), (dst, dport) = (a, b) if from_client else (b, a)
    return (np.array([ts], np.int64), np.array([src], np.uint32), np.array([sport], np.uint16),
            np.array([dst], np.uint32), np.array([dport], np.uint16),
            np.array([flags], np.uint8), np.zeros(1, np.uint32))


def table_set(family=4, shards=1, capacity=64, max_capacity=None, flows=True, evict=False,
              timeouts=True):
    model = get_model("conntrack")
    made = Tracker(model, expiry=timeouts, seed=0)     # its key and timeouts
    return TableSet(family, TableSpec(model, made._keys, shards, capacity,
                                      max_capacity or capacity, flows, made._timeout_ns(), evict))


def no_run(calls, parallel):
    return [fn(*args) for fn, args in calls]


def traffic(connections, seed=0):
    return np.concatenate(list(generate(connections, seed=seed)))


# ---- TableSet


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_table_set_grows_to_its_bound_then_reports_what_it_could_not_apply(shards):
    tables = table_set(shards=shards, capacity=8, max_capacity=32, flows=False)
    n = 200
    columns = (np.arange(n, dtype=np.int64), np.arange(n, dtype=np.uint32) + 1,
               np.full(n, 1000, np.uint16), np.full(n, 7, np.uint32), np.full(n, 80, np.uint16),
               np.full(n, SYN, np.uint8), np.zeros(n, np.uint32))
    counts, left = tables.update(columns, (None, None, None), None, 0, 0, no_run)
    bound = shard_share(32, shards)
    assert all(table.capacity == bound for table in tables.tables)
    assert tables.resizes == (2 if shards == 1 else shards)  # 8 -> 16 -> 32; shares double once
    assert len(tables) == counts["new"] == n - len(left)
    assert len(tables) <= bound * shards and left is not None and list(left) == sorted(left)


def test_table_set_evicts_at_its_bound_when_told_to():
    tables = table_set(capacity=8, flows=True, evict=True)
    for port in range(20):
        counts, left = tables.update(one(T0 + port, SYN, port=1000 + port), (None,) * 3, None,
                                     T0, 0, no_run)
        assert left is None
    assert len(tables) == 8 and tables.totals()["evicted"] == 12
    assert len(tables.pop_ended()) == 12 and len(tables.pop_ended()) == 0


def test_table_set_state_restores_into_a_fresh_set():
    tables = table_set(shards=2, capacity=64, max_capacity=256)
    for batch in np.array_split(traffic(60), 5):
        family, columns, sequence = batch_columns(batch)
        tables.update(columns, (None,) * 3, sequence, int(batch["ts"].max()), 0, no_run)
    specs, arrays = tables.state()
    again = table_set(shards=2, capacity=64, max_capacity=256)
    again.check(specs, last_tick=2**40)
    again.restore(specs, arrays)
    assert len(again) == len(tables) > 0
    assert again.totals() == tables.totals()
    np.testing.assert_array_equal(again.histogram(), tables.histogram())
    np.testing.assert_array_equal(again.records(), tables.records())
    np.testing.assert_array_equal(again.live_flows(), tables.live_flows())
    np.testing.assert_array_equal(again.pop_ended(), tables.pop_ended())


def test_table_set_check_refuses_what_cannot_have_been():
    tables = table_set(capacity=64, max_capacity=128)
    specs, _ = tables.state()
    with pytest.raises(ValueError, match="capacity must be from 64 to 128"):
        tables.check([{**specs[0], "capacity": 256}], last_tick=10)
    with pytest.raises(ValueError, match="wheel_tick must be at most"):
        tables.check([{**specs[0], "wheel_tick": 11}], last_tick=10)


# ---- expiry skipped only when nothing can be due


def test_expire_from_is_where_expire_starts_to_act():
    t = Tracker("conntrack", flows=True, timeouts={"SYN_SENT": 1.5})
    (table,) = t._family(4)
    assert table.expire_from == 2**63 - 1                    # no wheel yet
    t.update(*one(T0, SYN))
    tick = table.expire_from
    assert tick == T0                                        # the wheel starts at the clock
    assert table.expire(tick - 1) == (0, True)               # before it: nothing to do
    t.update(*one(T0 + S, ACK, port=1))
    assert table.expire_from == T0 + S


def test_a_deadline_inside_the_wheels_current_tick_still_expires():
    # the wheel has processed T0+1 s when the second segment lands; the first connection's
    # deadline (T0 + 1.5 s) falls inside that same tick: skipping expiry there would keep it
    t = Tracker("conntrack", flows=True, timeouts={"SYN_SENT": 1.5})
    t.update(*one(T0, SYN))
    t.update(*one(T0 + S, SYN, port=2))
    (table,) = t._family(4)
    assert table.expire_from == T0 + S
    t.update(*one(T0 + S + S // 2, ACK | PSH, port=3))
    assert t.stats["expired"] == 1
    assert t.lookup("10.0.0.1", 40000, "10.9.9.9", 80) is None
    assert len(t.pop_flows()) == 1


def test_no_ended_rows_are_left_behind_by_skipping():
    # a close ends a connection inside update (not expiry): its row must reach pop_flows
    t = Tracker("conntrack", flows=True)
    for ts, flags, client in ((0, SYN, True), (1, SYN | ACK, False), (2, ACK, True),
                              (3, FIN | ACK, True), (4, FIN | ACK, False), (5, ACK, True),
                              (6, SYN, True)):
        t.update(*one(T0 + ts, flags, from_client=client))
    assert len(t.pop_flows()) == 1


# ---- the tracker's state, which snapshots write


@pytest.mark.parametrize("options", [{}, {"flows": True, "shards": 2, "evict": True},
                                     {"expiry": False, "clock": "manual"}])
def test_tracker_state_restores_without_a_file(options):
    t = Tracker(capacity=64, max_capacity=1024, seed=3, **options)
    t.update(traffic(80))
    again = Tracker._from_state(t.model, *t._state())
    assert (again.stats, again.histogram(), len(again), again.now, again.resizes) == \
        (t.stats, t.histogram(), len(t), t.now, t.resizes)
    np.testing.assert_array_equal(again.records(), t.records())
    later = traffic(20, seed=1)
    later["ts"] += int(t.now)
    assert again.update(later) == t.update(later)


def test_every_constructor_option_is_saved():
    # a new Tracker option must reach snapshots: _OPTIONS lists what _state saves
    from fasttcp.tracker import _OPTIONS
    params = set(inspect.signature(Tracker).parameters) - {"model", "seed"}
    assert params == set(_OPTIONS)
    settings, _, _ = Tracker(seed=0)._state()
    assert set(_OPTIONS) <= set(settings)


def test_snapshot_does_not_import_the_tracker():
    from fasttcp import snapshot
    source = Path(snapshot.__file__).read_text()
    imported = {node.module for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(ast.parse(source))
                 if isinstance(node, ast.Import) for alias in node.names}
    assert "fasttcp.tracker" not in imported
