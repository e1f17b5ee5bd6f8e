"""The "events" clock believes a far-future timestamp only when later traffic confirms it
(issue: one forged segment used to expire the whole table)."""
import gzip
import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import fasttcp
from fasttcp.models import ACK, SYN
from fasttcp.reference import ReferenceTracker

S = 1_000_000_000
T0 = 1_700_000_000 * S
YEAR = 365 * 86400 * S
SERVER = 0x0A090909


def syns(ts, first_port=1):
    """One SYN per timestamp, each from its own client port (a connection each)."""
    n = len(ts)
    return dict(ts=np.asarray(ts, dtype=np.int64), src=np.full(n, 0x0A000001, np.uint32),
                sport=np.arange(first_port, first_port + n, dtype=np.uint16),
                dst=np.full(n, SERVER, np.uint32), dport=np.full(n, 80, np.uint16),
                flags=np.full(n, SYN, np.uint8))


def test_one_far_future_segment_expires_nothing():
    t = fasttcp.Tracker("conntrack")                 # SYN_SENT lasts 120 s
    t.update(**syns(T0 + np.arange(100) * S // 10))
    t.update(**syns([T0 + YEAR], first_port=1000))   # forged: a year ahead
    assert len(t) == 101 and t.stats["expired"] == 0
    assert t.stats["clock_suspect"] == 1 and t.stats["clock_jumps"] == 0
    assert t.now == T0 + 99 * S // 10
    # later traffic is on time again: new connections live on, not expired at once
    t.update(**syns(T0 + 11 * S + np.arange(10), first_port=2000))
    assert len(t) == 111 and t.stats["expired"] == 0


def test_a_real_gap_is_followed_once_the_next_segment_confirms_it():
    t = fasttcp.Tracker("conntrack")
    t.update(**syns([T0, T0 + S]))
    t.update(**syns([T0 + 3600 * S], first_port=10))      # an hour of silence, then traffic
    assert len(t) == 3 and t.now == T0 + S                  # not yet believed
    t.update(**syns([T0 + 3601 * S], first_port=11))
    # confirmed: the clock goes to the first segment after the gap, and the two idle
    # half-open connections have expired
    assert t.now == T0 + 3600 * S and t.stats["clock_jumps"] == 1
    assert len(t) == 2 and t.stats["expired"] == 2


def test_a_confirmed_jump_stops_at_the_earliest_segment_of_the_run():
    t = fasttcp.Tracker("conntrack", timeouts={"SYN_SENT": 10 * YEAR / S})
    t.update(**syns([T0]))
    t.update(**syns([T0 + YEAR, T0 + 600 * S], first_port=10))  # forged, then a real gap
    assert t.now == T0 + 600 * S


def test_clock_confirm_and_max_clock_jump_choose_the_rule():
    follow = fasttcp.Tracker("conntrack", max_clock_jump=None)
    follow.update(**syns([T0, T0 + YEAR]))
    assert follow.now == T0 + YEAR and follow.stats["clock_suspect"] == 0
    eager = fasttcp.Tracker("conntrack", clock_confirm=1)
    eager.update(**syns([T0, T0 + YEAR]))
    assert eager.now == T0 + YEAR and eager.stats["clock_jumps"] == 1
    patient = fasttcp.Tracker("conntrack", clock_confirm=3, max_clock_jump=5)
    patient.update(**syns([T0, T0 + 10 * S, T0 + 11 * S]))
    assert patient.now == T0
    patient.update(**syns([T0 + 12 * S], first_port=9))
    assert patient.now == T0 + 10 * S


@pytest.mark.parametrize("bad", [dict(max_clock_jump=-1), dict(max_clock_jump=float("nan")),
                                 dict(max_clock_jump=float("inf")), dict(clock_confirm=0),
                                 dict(clock_confirm=True), dict(clock_confirm=1.5)])
def test_bad_clock_settings_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        fasttcp.Tracker(**bad)


def test_a_full_table_expires_by_the_clock_not_by_one_segment():
    for evict in (False, True):
        t = fasttcp.Tracker("conntrack", capacity=4, max_capacity=4, evict=evict)
        t.update(**syns([T0] * 4))
        if evict:   # the forged SYN takes the oldest unanswered one's place; nothing expires
            t.update(**syns([T0 + YEAR], first_port=9))
            assert t.stats["evicted"] == 1
        else:
            with pytest.raises(fasttcp.TableFullError):
                t.update(**syns([T0 + YEAR], first_port=9))
            assert t.stats["clock_suspect"] == 0      # the clock did not see it
        assert len(t) == 4 and t.stats["expired"] == 0


def test_manual_clock_expires_a_full_table_only_up_to_its_own_time():
    t = fasttcp.Tracker("conntrack", capacity=4, max_capacity=4, evict=True, clock="manual")
    t.update(**syns([T0] * 4))
    t.update(**syns([T0 + YEAR], first_port=9))
    assert t.stats["expired"] == 0 and t.stats["evicted"] == 1
    t.expire(T0 + 60 * S)                 # the caller's clock: still within SYN_SENT
    t.update(**syns([T0 + 200 * S], first_port=10))
    assert t.stats["expired"] == 0
    t.expire(T0 + 130 * S)                # ports 3 and 4 (1 and 2 were evicted)
    assert t.stats["expired"] == 2 and len(t) == 2


def test_the_sample_capture_with_one_packet_a_year_late():
    """The issue's reproducer: one packet moved forward a year used to end almost every
    connection. Now only that packet's own connection notices."""
    with fasttcp.open_capture(fasttcp.SAMPLE_CAPTURE) as cap:
        segments = np.concatenate([batch.ipv4 for batch in cap])

    def run(segments):
        t = fasttcp.Tracker("conntrack", flows=True)
        for start in range(0, len(segments), 500):
            t.update(segments[start:start + 500])
        return len(t), len(t.pop_flows())

    forged = segments.copy()
    forged["ts"][len(forged) // 2] += YEAR
    live, ended = run(segments)
    forged_live, forged_ended = run(forged)
    assert live > 50
    assert abs(forged_live - live) <= 1 and abs(forged_ended - ended) <= 1


def test_the_reference_follows_the_same_rule():
    cols = syns([T0, T0 + YEAR, T0 + S, T0 + 900 * S, T0 + 901 * S, T0 + 902 * S])
    t = fasttcp.Tracker("conntrack")
    ref = ReferenceTracker("conntrack", timeouts=t.timeouts)
    for k in range(len(cols["ts"])):
        one = {name: column[k:k + 1] for name, column in cols.items()}
        t.update(**one)
        ref.update(**one)
        assert t.stats["clock_suspect"] == ref.stats["clock_suspect"]
        assert t.stats["clock_jumps"] == ref.stats["clock_jumps"]
        assert len(t) == len(ref) and t.histogram() == ref.histogram()


# -- the command line ---------------------------------------------------------------------------

def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fasttcp", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def forged_capture(tmp_path_factory):
    """The bundled sample capture (classic pcap) with its middle packet a year late."""
    with gzip.open(fasttcp.SAMPLE_CAPTURE, "rb") as f:
        data = bytearray(f.read())
    offsets, at = [], 24
    while at < len(data):
        offsets.append(at)
        at += 16 + struct.unpack_from("<I", data, at + 8)[0]
    middle = offsets[len(offsets) // 2]
    seconds, = struct.unpack_from("<I", data, middle)
    struct.pack_into("<I", data, middle, seconds + YEAR // S)
    path = tmp_path_factory.mktemp("clock") / "forged.pcap"
    path.write_bytes(bytes(data))
    return path


def test_analyze_reports_the_suspect_segment_and_keeps_the_table(forged_capture, tmp_path):
    honest = json.loads(run_cli("analyze", "--model", "conntrack", "--json",
                                cwd=tmp_path).stdout)
    proc = run_cli("analyze", str(forged_capture), "--model", "conntrack", "--json",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    forged = json.loads(proc.stdout)
    assert forged["clock_suspect"] == 1 and forged["clock_jumps"] == 0
    assert abs(forged["connections"] - honest["connections"]) <= 1
    text = run_cli("analyze", str(forged_capture), "--model", "conntrack", cwd=tmp_path).stdout
    assert "1 segments too far ahead of the capture's clock" in text


def test_analyze_clock_options(forged_capture, tmp_path):
    def analyze(*args):
        proc = run_cli("analyze", str(forged_capture), "--model", "conntrack", "--json", *args,
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    default = analyze()
    follow = analyze("--max-clock-jump", "none")          # the old behaviour: all expired
    assert follow["connections"] <= 1 and follow["clock_suspect"] == 0
    assert default["connections"] > 300
    manual = analyze("--clock", "manual")                  # nothing expires by the clock
    assert manual["connections"] == default["connections"] and manual["clock_suspect"] == 0
    eager = analyze("--clock-confirm", "1")                # one segment is confirmation
    assert eager["clock_jumps"] == 1 and eager["connections"] <= 1


@pytest.mark.parametrize("args, message", [
    (["--max-clock-jump", "-3"], "must be from 0"),
    (["--max-clock-jump", "soon"], "not a number of seconds"),
    (["--clock-confirm", "0"], "must be positive"),
    (["--clock", "wall"], "invalid choice"),
])
def test_analyze_clock_usage_errors(args, message, tmp_path):
    proc = run_cli("analyze", *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dask_parts_expire_by_the_capture_s_clock_not_its_latest_timestamp(forged_capture):
    """Every Dask part ends by expiring at the captures' clock; it was their largest
    timestamp, so one forged packet expired every connection of every part."""
    pytest.importorskip("dask")
    from fasttcp import dask as on_dask

    honest = on_dask._read_and_split(fasttcp.SAMPLE_CAPTURE, 2, True)
    forged = on_dask._read_and_split(str(forged_capture), 2, True)
    latest = max(int(part["ts"].max()) for part in honest[4] if len(part))
    assert honest["clock"] == latest
    assert forged["clock"] == latest


def test_a_table_full_error_leaves_the_clock_where_the_applied_events_took_it():
    t = fasttcp.Tracker("conntrack", capacity=4, max_capacity=4)
    with pytest.raises(fasttcp.TableFullError) as error:
        t.update(**syns([T0, T0 + YEAR, T0 + S, T0 + 2 * S, T0 + 3 * S, T0 + 4 * S]))
    assert error.value.unapplied.tolist() == [4, 5]
    assert t.stats["clock_suspect"] == 1          # the forged one was applied, and seen
    t.update(**syns([T0 + 2 * S], first_port=1))   # a segment of a connection it holds
    assert t.now == T0 + 2 * S and t.stats["clock_jumps"] == 0
