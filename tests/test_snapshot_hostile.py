"""Crafted snapshots: files with valid checksums whose content is inconsistent. Each is refused
with SnapshotError, with or without verify (which skips only the checksums), before anything
is allocated beyond what the file holds."""
import json
import os
import struct
import zlib

import numpy as np
import pytest

import fasttcp
from fasttcp import snapshot
from fasttcp.snapshot import FORMAT_VERSION, MAGIC, SnapshotError
from fasttcp.synth import generate

S = 1_000_000_000


def traffic(connections, seed):
    return np.concatenate(list(generate(connections, seed=seed, rate=200.0)))


def parts(path):
    """(header, arrays) of a snapshot, the arrays as writable copies."""
    header, start = snapshot._read_header(str(path), os.path.getsize(path))
    return header, snapshot._arrays(str(path), header, start, mmap=False, verify=True)


def rewrite(path, header, arrays):
    """Writes a snapshot of these arrays under this header, checksums and manifest made anew."""
    snapshot._write(path, {k: v for k, v in header.items() if k not in ("arrays", "data_bytes")},
                    arrays)


def write_raw(path, header, data):
    """Writes `header` as it is (manifest included) with a valid header checksum, then `data`."""
    text = json.dumps(header).encode()
    head = struct.pack("<8sII", MAGIC, FORMAT_VERSION, len(text)) + text
    head += struct.pack("<I", zlib.crc32(head))
    path.write_bytes(head + bytes(-len(head) % 64) + data)


@pytest.fixture
def saved(tmp_path):
    """A snapshot of a tracker with every part kept: flows, expiry, eviction, sequence state,
    two shards, and some expired connections (so free lists are not empty)."""
    t = fasttcp.Tracker(flows=True, capacity=64, max_capacity=256, evict=True, shards=2, seed=3)
    t.update(traffic(40, seed=6))
    assert t.expire(t.now + 30 * S) > 0
    path = tmp_path / "t.snap"
    t.save(path)
    return path


def live(records):
    return np.flatnonzero(records["status"] & fasttcp.STATUS_ALIVE)


def refused(path, match):
    for verify, mmap in ((True, False), (False, False), (False, True)):
        with pytest.raises(SnapshotError, match=match):
            fasttcp.Tracker.load(path, verify=verify, mmap=mmap)


def test_the_fixture_loads(saved):
    header, arrays = parts(saved)
    assert any(t["free_head"] >= 0 for t in header["tables"])     # a free list to damage
    rewrite(saved, header, arrays)
    fasttcp.Tracker.load(saved, verify=False)


def test_a_cleared_alive_bit(saved):
    """The reported crash: a live record marked dead but not on the free list was lost to
    the count, and allocation ran past the arrays before the table counted itself full."""
    header, arrays = parts(saved)
    records = arrays["table.4.0.records"]
    records["status"][live(records)[0]] ^= fasttcp.STATUS_ALIVE
    rewrite(saved, header, arrays)
    refused(saved, "neither live nor on the free list")


def first_free(header, arrays):
    spec = next(t for t in header["tables"] if t["free_head"] >= 0)
    prefix = f"table.{spec['family']}.{spec['shard']}"
    return spec, arrays[f"{prefix}.records"], prefix


def test_a_free_list_cycle(saved):
    header, arrays = parts(saved)
    spec, records, _ = first_free(header, arrays)
    records["orig_pkts"][spec["free_head"]] = spec["free_head"]
    rewrite(saved, header, arrays)
    refused(saved, "free list")


def test_a_free_list_through_a_live_record(saved):
    header, arrays = parts(saved)
    spec, records, _ = first_free(header, arrays)
    records["orig_pkts"][spec["free_head"]] = live(records)[0]
    rewrite(saved, header, arrays)
    refused(saved, "free list")


def test_a_free_head_at_a_live_record(saved):
    header, arrays = parts(saved)
    spec, records, _ = first_free(header, arrays)
    spec["free_head"] = int(live(records)[0])
    rewrite(saved, header, arrays)
    refused(saved, "free list")


def test_a_state_the_model_lacks(saved):
    header, arrays = parts(saved)
    records = arrays["table.4.1.records"]
    records["state"][live(records)[0]] = 200
    rewrite(saved, header, arrays)
    refused(saved, "state the model does not have")


def test_two_records_of_one_connection(saved):
    header, arrays = parts(saved)
    records = arrays["table.4.0.records"]
    a, b = live(records)[:2]
    for field in ("orig_h", "resp_h", "orig_p", "resp_p"):
        records[field][b] = records[field][a]
    rewrite(saved, header, arrays)
    refused(saved, "same connection")


def test_a_record_in_the_other_shard(saved):
    header, arrays = parts(saved)
    mine, other = arrays["table.4.0.records"], arrays["table.4.1.records"]
    for field in ("orig_h", "resp_h", "orig_p", "resp_p"):
        mine[field][live(mine)[0]] = other[field][live(other)[0]]
    rewrite(saved, header, arrays)
    refused(saved, "another shard")


def test_a_wheel_entry_past_the_records(saved):
    header, arrays = parts(saved)
    arrays["table.4.0.wheel_entries"][0] = header["tables"][0]["used"]
    rewrite(saved, header, arrays)
    refused(saved, "wheel entry")


def test_a_due_tick_beyond_a_revolution(saved):
    header, arrays = parts(saved)
    records = arrays["table.4.0.records"]
    arrays["table.4.0.due"][live(records)[0]] += 4096
    rewrite(saved, header, arrays)
    refused(saved, "outside the wheel's revolution")


def test_a_live_record_the_wheel_does_not_list(saved):
    header, arrays = parts(saved)
    records, entries = arrays["table.4.0.records"], arrays["table.4.0.wheel_entries"]
    rid = live(records)[0]
    entries[entries == rid] = live(records)[1]
    rewrite(saved, header, arrays)
    refused(saved, "not listed")


def test_scrambled_wheel_lengths(saved):
    header, arrays = parts(saved)
    lengths = arrays["table.4.0.wheel_lengths"]
    nonzero = np.flatnonzero(lengths)
    lengths[nonzero[0]] -= 1
    lengths[(nonzero[0] + 1) % len(lengths)] += 1      # the same total, in the wrong slot
    rewrite(saved, header, arrays)
    refused(saved, "not listed")
    lengths[0] = -1
    rewrite(saved, header, arrays)
    refused(saved, "wheel slot lengths")


def test_an_unstarted_wheel_with_connections(saved):
    header, arrays = parts(saved)
    header["tables"][0]["wheel_started"] = False
    rewrite(saved, header, arrays)
    refused(saved, "not started")


def test_an_eviction_ring_entry_past_the_records(saved):
    header, arrays = parts(saved)
    spec = header["tables"][0]
    arrays["table.4.0.evict_ring"][spec["evict_head"]] = 0xFFFF_FFFE
    rewrite(saved, header, arrays)
    refused(saved, "eviction ring entry")
    spec["evict_tail"] = spec["evict_head"] + len(arrays["table.4.0.evict_ring"]) + 1
    rewrite(saved, header, arrays)
    refused(saved, "eviction ring must")


@pytest.mark.parametrize("field, value", [
    ("seen", 1 << 20),                   # popcount past 18: history text ran past its row
    ("history", 31),                     # a letter code with no letter
    ("history_more", 1),                 # a letter past the ones counted
    ("orig_zeek", 0x0F),
])
def test_malformed_flow_states(saved, field, value):
    header, arrays = parts(saved)
    records, flows = arrays["table.4.0.records"], arrays["table.4.0.flows"]
    rid = live(records)[0]
    flows[field][rid] = value if field != "history" else (flows[field][rid] | value)
    rewrite(saved, header, arrays)
    refused(saved, "flow state is malformed")


def test_malformed_sequence_state(tmp_path):
    t = fasttcp.Tracker(capacity=16)
    t.update(np.array([0]), np.array([1], dtype=np.uint32), np.array([1]),
             np.array([2], dtype=np.uint32), np.array([2]), np.array([0x02]),
             seq=np.array([1], dtype=np.uint32), ack=np.array([0], dtype=np.uint32),
             window=np.array([100], dtype=np.uint16), wscale=np.array([7], dtype=np.int8))
    path = tmp_path / "t.snap"
    t.save(path)
    header, arrays = parts(path)
    arrays["table.4.0.seq"][0, 16] = 200       # orig's window scale: a shift of 200
    rewrite(path, header, arrays)
    refused(path, "sequence state is malformed")


def test_negative_class_counts(saved):
    header, arrays = parts(saved)
    arrays["table.4.0.class_counts"][0] = -1
    rewrite(saved, header, arrays)
    refused(saved, "class counts")


def test_a_refused_restore_leaves_the_table_as_it_was(saved):
    t = fasttcp.Tracker.load(saved)
    table = t._tables[4][0]
    records, flows, due, ring, seq = (None if a is None else a.copy() for a in table.storage)
    before = (t.histogram(), t.stats, table.records.tobytes(), t.probe_lengths().tobytes())
    records["status"][live(records)[0]] = 0
    with pytest.raises(ValueError, match="neither live"):
        table.restore(records, flows, due, ring, seq, table.wheel_lists(),
                      np.array(table.class_counts), table.counters())
    assert before == (t.histogram(), t.stats, table.records.tobytes(),
                      t.probe_lengths().tobytes())
    t.update(traffic(20, seed=8))                     # and goes on working


def test_a_fresh_tracker_round_trips(tmp_path):
    path = tmp_path / "t.snap"
    fasttcp.Tracker(capacity=1 << 20).save(path)      # no tables yet: nothing allocated
    loaded = fasttcp.Tracker.load(path)
    assert len(loaded) == 0 and loaded.capacity == 1 << 20


def crafted(saved, change):
    header, start = snapshot._read_header(str(saved), os.path.getsize(saved))
    data = saved.read_bytes()[start:]
    change(header)
    write_raw(saved, header, data)


def records_entry(header):
    return next(a for a in header["arrays"] if a["name"] == "table.4.0.records")


def setter(*keys_and_value):
    *keys, value = keys_and_value

    def change(header):
        node = header
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


@pytest.mark.parametrize("change, match", [
    # each once raised something other than SnapshotError, or loaded silently
    (setter("tracker", "capacity", 2**70), "tracker.capacity"),               # OverflowError
    (lambda h: h["tracker"].update(capacity=1 << 29, max_capacity=1 << 29),
     "capacity must be from"),                                                # 30 GB, MemoryError
    (setter("tables", 0, "shard", 3), "shards"),                              # IndexError
    (setter("tables", 0, "used", "3"), r"tables\[0\].used"),                  # TypeError
    (setter("tables", 0, "totals", "events", 2**64), "totals.events"),
    (setter("tables", 0, "family", 5), "family"),
    (setter("tracker", "now", -1), "tracker.now"),
    (setter("tracker", "now", "5"), "tracker.now"),
    (setter("tracker", "flows", 1), "tracker.flows"),
    (setter("tracker", "keys", [1, 2, 3, 4]), r"tracker.keys\[0\]"),
    (setter("tracker", "keys", ["-1", "2", "3", "4"]), r"tracker.keys\[0\]"),
    (setter("tracker", "keys", [str(2**64), "2", "3", "4"]), r"tracker.keys\[0\]"),
    (setter("tracker", "max_capacity", 1), "max_capacity is below"),
    (setter("tracker", "timeouts", {"NONE": -1}), "tracker.timeouts.NONE"),
    (setter("model", "states", "NONE"), "model.states"),
    (setter("model", "timeouts", {"NONE": "x"}), "model.timeouts.NONE"),
    (setter("tables", []), "unexpected"),
    (setter("tracker", "expiry", False), "unexpected"),
    (setter("tracker", "evict", False), "unexpected"),
    (lambda h: h["tables"].append(dict(h["tables"][0])), "shards"),
    (lambda h: h["tracker"].pop("clock"), "tracker"),
    (lambda h: h.update(extra=1), "exactly"),
    (setter("tables", 0, "wheel_tick", 2**62), r"tables\[0\].wheel_tick"),
    # ahead by 2**32 ticks: every due tick still within a revolution (they are modulo 2**32),
    # but every later deadline would be clamped there, and nothing would expire again
    (lambda h: h["tables"][0].update(wheel_tick=h["tables"][0]["wheel_tick"] + 2**32),
     "wheel_tick must be at most"),
    (setter("tracker", "max_clock_jump", -1.0), "tracker.max_clock_jump"),
    (setter("tracker", "clock_confirm", 0), "tracker.clock_confirm"),
    (setter("tracker", "event_clock", "now", -5), "tracker.event_clock.now"),
    (setter("tracker", "event_clock", "run", 2), "inconsistent clock state"),    # run < confirm
    (setter("tracker", "event_clock", "jumps", 1), "inconsistent clock state"),  # > suspect
    (lambda h: records_entry(h).update(dtype="O"), "must be 1-dimensional CONN4"),   # ValueError
    (lambda h: records_entry(h).update(dtype="<u8"), "must be 1-dimensional CONN4"),
    (lambda h: records_entry(h).update(shape=[1 << 33], size=56 << 33), "truncated"),  # 448 GiB
    (lambda h: records_entry(h).update(shape=[2], size=112), "capacity in rows"),
    (lambda h: records_entry(h).update(offset=1), "offset"),
    (lambda h: h["arrays"].append(dict(records_entry(h))), "repeated"),
    (lambda h: records_entry(h).update(name="table.4.0.bogus"), "missing"),
])
def test_crafted_headers(saved, change, match):
    crafted(saved, change)
    refused(saved, match)


@pytest.mark.parametrize("text", [b"[]", b'{"model": NaN}', b"[" * 100_000 + b"]" * 100_000])
def test_headers_that_are_not_objects(tmp_path, text):
    head = struct.pack("<8sII", MAGIC, FORMAT_VERSION, len(text)) + text
    path = tmp_path / "t.snap"
    path.write_bytes(head + struct.pack("<I", zlib.crc32(head)))
    refused(path, "damaged header|must be an object")


def test_an_array_cut_to_no_rows(saved):
    """The snapshot fuzzer's first finding: a two-dimensional array with no rows could not
    even be checksummed (memoryview.cast refuses it)."""
    header, arrays = parts(saved)
    arrays["table.4.0.seq"] = arrays["table.4.0.seq"][:0].copy()
    rewrite(saved, header, arrays)
    refused(saved, "sequence state must be")
