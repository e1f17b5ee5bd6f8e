"""Snapshots: saved and loaded back identically (the tracker goes on as the original would),
written atomically, and refused with a clear error when truncated or damaged."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fasttcp
from fasttcp.snapshot import FORMAT_VERSION, MAGIC, SnapshotError
from fasttcp.synth import generate

S = 1_000_000_000


def traffic(connections, seed):
    return np.concatenate(list(generate(connections, seed=seed, rate=200.0)))


def same(a: fasttcp.Tracker, b: fasttcp.Tracker):
    assert a.histogram() == b.histogram() and a.stats == b.stats and len(a) == len(b)
    assert a.flag_class_counts() == b.flag_class_counts() and a.now == b.now
    assert a.timeouts == b.timeouts and a.model.states == b.model.states
    for family in (4, 6):
        assert np.array_equal(a.records(family), b.records(family))


@pytest.mark.parametrize("options", [
    {}, {"model": "conntrack", "flows": True}, {"shards": 2, "flows": True},
    {"evict": True, "capacity": 64, "max_capacity": 64, "flows": True}, {"expiry": False},
])
def test_round_trip_and_go_on_alike(tmp_path, options):
    events = traffic(2000, seed=4)
    half = len(events) // 2
    original = fasttcp.Tracker(**{"capacity": 256, "max_capacity": 1 << 16, **options})
    original.update(events[:half])
    path = tmp_path / "t.snap"
    original.save(path)
    loaded = fasttcp.Tracker.load(path)
    same(original, loaded)
    # both go on with the same traffic and stay alike, record indices and flows included
    a = original.update(events[half:], return_events=True)
    b = loaded.update(events[half:], return_events=True)
    assert np.array_equal(a.conn, b.conn) and np.array_equal(a.verdict, b.verdict)
    same(original, loaded)
    if original.keeps_flows:
        assert np.array_equal(original.pop_flows(), loaded.pop_flows())
        assert np.array_equal(original.live_flows(), loaded.live_flows())
    original.close()
    loaded.close()


SYNFLOOD = fasttcp.compile_model(
    "synflood", ["NEW", "HALF_OPEN", "OPEN", "CLOSED"],
    {"h": "HALF_OPEN", "o": "OPEN", "c": "CLOSED", "iv": "invalid", "ig": "ignore"},
    """
    # dir  class   NEW  HALF_OPEN  OPEN  CLOSED
    orig   SYN     h    h          ig    h*
    *      SYNACK  iv   h          ig    iv
    orig   ACK     o+   o          o     iv
    resp   ACK     iv   ig         o     iv
    *      FIN|RST iv   c          c     c
    """,
    default="iv", timeouts={"HALF_OPEN": 30, "OPEN": 3600, "CLOSED": 10})


@pytest.mark.parametrize("model", [SYNFLOOD, "conntrack"])
def test_ipv6_custom_model_and_pending_flows(tmp_path, model):
    a, b = fasttcp.addresses(["2001:db8::1", "2001:db8::2"])
    t = fasttcp.Tracker(model, flows=True)
    t.update(np.array([0, 1, 2]), np.array([a, b, a]), np.array([1, 2, 1]),
             np.array([b, a, b]), np.array([2, 1, 2]), np.array([0x02, 0x14, 0x02]))
    path = tmp_path / "t.snap"
    t.save(path)
    loaded = fasttcp.Tracker.load(path)
    assert loaded.model.name == t.model.name and loaded.model.states == t.model.states
    assert np.array_equal(loaded.model.table, t.model.table)
    assert np.array_equal(loaded.pop_flows(6), t.pop_flows(6))   # popped after saving
    assert np.array_equal(loaded.live_flows(6), t.live_flows(6))


def test_expiry_goes_on_after_loading(tmp_path):
    t = fasttcp.Tracker("conntrack")
    t.update(np.array([0]), np.array([1], dtype=np.uint32), np.array([1]),
             np.array([2], dtype=np.uint32), np.array([2]), np.array([0x02]))
    path = tmp_path / "t.snap"
    t.save(path)
    loaded = fasttcp.Tracker.load(path)
    assert loaded.expire(119 * S) == 0 and loaded.expire(120 * S) == 1


def test_memory_mapped_loading(tmp_path):
    events = traffic(500, seed=2)
    t = fasttcp.Tracker(flows=True)
    t.update(events)
    path = tmp_path / "t.snap"
    t.save(path)
    before = path.read_bytes()
    loaded = fasttcp.Tracker.load(path, mmap=True)
    same(t, loaded)
    assert isinstance(loaded._tables[4][0].storage[0], np.memmap)
    loaded.update(traffic(100, seed=3))        # changes stay in memory: copy-on-write
    assert path.read_bytes() == before


def test_writing_is_atomic(tmp_path, monkeypatch):
    t = fasttcp.Tracker()
    t.update(traffic(50, seed=1))
    path = tmp_path / "t.snap"
    t.save(path)
    good = path.read_bytes()
    t.update(traffic(50, seed=9))

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        t.save(path)
    assert path.read_bytes() == good                     # the old snapshot is intact
    assert os.listdir(tmp_path) == ["t.snap"]            # and no temporary file is left


# A save stopped mid-write: the temporary is written and locked, not yet renamed.
STOPPED_WRITER = """
import os, sys, time
import numpy as np
import fasttcp
t = fasttcp.Tracker(capacity=64)
t.update(np.array([0]), np.array([1], dtype=np.uint32), np.array([1]),
         np.array([2], dtype=np.uint32), np.array([2]), np.array([0x02]))
def stop(fd):
    print("writing", flush=True)
    time.sleep(600)
os.fsync = stop
t.save(sys.argv[1])
"""


def writer_stopped_mid_save(path):
    # run in the snapshot's folder: from the source tree, `import fasttcp` would find the
    # package without its compiled modules after `pip install .`
    proc = subprocess.Popen([sys.executable, "-c", STOPPED_WRITER, str(path)],
                            stdout=subprocess.PIPE, text=True, cwd=path.parent)
    assert proc.stdout.readline() == "writing\n"
    return proc


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def temporaries(directory):
    return sorted(p.name for p in directory.iterdir() if "fasttcp-snapshot" in p.name)


def test_saves_remove_what_killed_saves_left(tmp_path):
    """kill -9 during save left its temporary for good; the next save to the same path
    removes those of dead writers, and only those: not a running writer's, not another
    target's."""
    path, other = tmp_path / "t.snap", tmp_path / "other.snap"
    running = writer_stopped_mid_save(path)
    try:
        for target in (path, other):
            kill(writer_stopped_mid_save(target))
        assert len(temporaries(tmp_path)) == 3
        t = fasttcp.Tracker()
        t.update(traffic(20, seed=1))
        t.save(path)
        left = temporaries(tmp_path)
        assert len(left) == 2 and any(f"-{running.pid}-" in name for name in left)
        assert any(name.startswith(".other.snap.") for name in left)
    finally:
        kill(running)
    t.save(path)
    assert [name[:12] for name in temporaries(tmp_path)] == [".other.snap."]
    same(t, fasttcp.Tracker.load(path))
    t.close()


@pytest.fixture(scope="module")
def snapshot_bytes(tmp_path_factory):
    t = fasttcp.Tracker(flows=True, capacity=64, seed=1)    # the same bytes every run
    t.update(traffic(30, seed=6))
    path = tmp_path_factory.mktemp("snap") / "t.snap"
    t.save(path)
    return path.read_bytes()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_truncated_snapshots_are_refused(tmp_path_factory, snapshot_bytes, data):
    cut = data.draw(st.integers(0, len(snapshot_bytes) - 1))
    path = tmp_path_factory.mktemp("cut") / "t.snap"
    path.write_bytes(snapshot_bytes[:cut])
    with pytest.raises(SnapshotError, match="truncated|not a fasttcp snapshot"):
        fasttcp.Tracker.load(path)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_damaged_snapshots_are_refused(tmp_path_factory, snapshot_bytes, data):
    at = data.draw(st.integers(0, len(snapshot_bytes) - 1))
    damaged = bytearray(snapshot_bytes)
    damaged[at] ^= data.draw(st.integers(1, 255))
    path = tmp_path_factory.mktemp("bad") / "t.snap"
    path.write_bytes(bytes(damaged))
    try:
        loaded = fasttcp.Tracker.load(path)
    except SnapshotError as error:
        assert str(path) in str(error)
        return
    # a flipped byte that no check sees can only be in alignment padding
    assert np.array_equal(loaded.records(4), fasttcp.Tracker.load(path).records(4))


def test_not_a_snapshot_and_other_versions(tmp_path, snapshot_bytes):
    path = tmp_path / "x.snap"
    path.write_bytes(b"hello")
    with pytest.raises(SnapshotError, match="not a fasttcp snapshot"):
        fasttcp.Tracker.load(path)
    path.write_bytes(MAGIC + (FORMAT_VERSION + 1).to_bytes(4, "little") + snapshot_bytes[12:])
    with pytest.raises(SnapshotError, match=f"format {FORMAT_VERSION + 1}"):
        fasttcp.Tracker.load(path)
    with pytest.raises(FileNotFoundError):
        fasttcp.Tracker.load(tmp_path / "missing.snap")
