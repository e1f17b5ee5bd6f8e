"""fasttcp bench's contestants: the minimal plain-Python tracker, the modes, the figures."""
import json
import os
import subprocess
import sys
import tempfile

import pytest

from fasttcp import bench

from fasttcp.bench import (CLOSED, ESTABLISHED, FIN_WAIT, MODES, SYN_RECV, SYN_SENT, TIME_WAIT,
                           MinimalTracker, measure, median_rates, mode_trackers, report)
from fasttcp.models import ACK, FIN, PSH, RST, SYN
from fasttcp.tracker import INVALID, NEW, VALID
from fasttcp.workloads import columns, uniform_workload

CLIENT, SERVER = (0x0A000002, 40000), (0x0A000001, 443)   # the client is the higher endpoint


def send(tracker, sender, flags, length=0, ts=0):
    (src, sport), (dst, dport) = (CLIENT, SERVER) if sender == "c" else (SERVER, CLIENT)
    return tracker.step(ts, src, sport, dst, dport, flags, length)


def test_minimal_tracker_walks_a_connection_in_both_directions():
    t = MinimalTracker()
    walk = [("c", SYN, NEW, SYN_SENT), ("s", SYN | ACK, VALID, SYN_RECV),
            ("c", ACK, VALID, ESTABLISHED), ("s", PSH | ACK, VALID, ESTABLISHED),
            ("c", FIN | ACK, VALID, FIN_WAIT), ("s", FIN | ACK, VALID, TIME_WAIT),
            ("c", ACK, VALID, TIME_WAIT)]
    for sender, flags, verdict, state in walk:
        assert send(t, sender, flags, 100) == verdict
        assert t.state(*CLIENT, *SERVER) == t.state(*SERVER, *CLIENT) == state
    assert len(t) == 1 and (t.new, t.valid, t.invalid) == (1, 6, 0)
    assert t.conns[(*SERVER, *CLIENT)][2:6] == [4, 3, 400, 300]   # orig/resp packets, bytes


def test_minimal_tracker_counts_invalid_segments_and_keeps_state():
    t = MinimalTracker()
    assert send(t, "c", FIN) == INVALID and len(t) == 0             # nothing to open
    send(t, "c", SYN)
    assert send(t, "c", SYN | ACK) == INVALID                         # the wrong direction
    assert t.state(*CLIENT, *SERVER) == SYN_SENT
    assert send(t, "s", RST) == VALID and t.state(*CLIENT, *SERVER) == CLOSED
    assert (t.new, t.valid, t.invalid) == (1, 1, 2)


def test_minimal_tracker_batch_is_its_steps():
    w = uniform_workload(500, 3000, seed=4)
    batch, stepped = MinimalTracker(), MinimalTracker()
    for events in (w.setup, w.traffic):
        batch.update(**columns(events))
        for row in events.tolist():
            ts, src, dst, sport, dport, flags, length = row
            stepped.step(ts, src, sport, dst, dport, flags, length)
    assert batch.conns == stepped.conns and len(batch) == 500
    assert (batch.new, batch.valid, batch.invalid) == (stepped.new, stepped.valid,
                                                       stepped.invalid) == (500, 3000, 0)


def test_mode_trackers_hold_the_connections_and_step():
    w = uniform_workload(300, 1000, seed=2)
    runs = mode_trackers(list(MODES), w)
    assert list(runs) == list(MODES)
    rates = median_rates(runs, 1)
    assert all(rate > 0 for rate in rates.values())


def test_measure_reports_every_row():
    result = measure(connections=2000, events=4000, repeats=1, python_events=1000)
    assert result["live_connections"] == 2000
    assert result["seq_flows_fraction_of_flags_only"] > 0
    assert result["python_events_per_s"] > 0 and result["reference_events_per_s"] > 0
    text = report(result)
    for name in ("flags-only, no expiry", "sequence-aware + flows", "bare record loop",
                 "plain Python dict (minimal)", "fasttcp.reference", "ratio:"):
        assert name in text


@pytest.mark.parametrize("flags", range(256))
def test_every_flags_byte_has_one_event_by_precedence(flags):
    t = MinimalTracker()
    verdict = send(t, "c", flags)
    # only a SYN (without RST) or a bare ACK-class segment opens a connection
    opens = not flags & RST and (bool(flags & SYN) and not flags & ACK
                                 or not flags & (SYN | FIN) and bool(flags & ACK))
    assert verdict == (NEW if opens else INVALID)
    assert len(t) == (1 if opens else 0)


def test_python_trackers_that_would_not_fit_in_memory_are_left_out_and_named(monkeypatch):
    monkeypatch.setattr(bench, "_PYTHON_MEMORY_SHARE", 1e-12)
    result = measure(connections=2000, events=2000, repeats=1, python_events=500)
    assert result["python_events_per_s"] is None and result["ratio"] is None
    assert set(result["python_skipped"]) == {"minimal", "reference"}
    text = report(result)
    assert "plain Python dict (minimal) not run: needs about" in text and "ratio:" not in text
    json.dumps(result, allow_nan=False)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(ROOT, "benchmarks", "figures.py")
# the figures of issue #14 that have a target: (figure, start of the "what" cell) -> rows
TARGETS = {("1", "seq-aware + flows / flags-only"): 2,
           ("2", "flags-only (no expiry) / bare record loop"): 1,
           ("2", "bytes per IPv4 connection"): 1,
           ("3a", "flags-only: 1-event call / minimal dict tracker step"): 1,
           ("3b", "flags-only: 100-event calls' rate / minimal dict tracker's"): 1,
           ("4", "fasttcp analyze start-up / 53c44d2's"): 1,
           ("5", "analyze --flows / Suricata 7"): 1}


def figures(*args):
    # from the temporary directory: the commands it starts (python -m fasttcp, python -c)
    # would otherwise import the source tree, which has no compiled modules after pip install .
    proc = subprocess.run([sys.executable, FIGURES, *args], capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def table_rows(stdout):
    """The table's rows as lists of cells, after checking its header and separator."""
    lines = stdout.splitlines()
    assert lines[0].startswith("$ python ") and "benchmarks/figures.py --quick" in lines[0]
    assert " UTC, " in lines[1]
    start = lines.index("| figure | what | measured | target | met |")
    assert lines[start + 1] == "| --- | --- | --- | --- | --- |"
    rows = [line.split(" | ") for line in lines[start + 2:]]
    assert all(len(row) == 5 and row[0].startswith("| ") and row[4].endswith(" |")
               for row in rows), rows
    return [[row[0][2:], *row[1:4], row[4][:-2]] for row in rows]


def with_target(rows):
    found = {}
    for figure, what, _shown, target, verdict in rows:
        if target:
            key = next(key for key in TARGETS if key[0] == figure and what.startswith(key[1]))
            found[key] = found.get(key, 0) + 1
            assert verdict in ("met", "NOT MET", "not measured")
        else:
            assert verdict == "-"
    return found


def test_figures_quick_run_measures_every_figure(tmp_path):
    proc = figures("--quick", "--workdir", str(tmp_path))
    rows = table_rows(proc.stdout)
    assert with_target(rows) == TARGETS
    for figure, _what, _shown, target, verdict in rows:
        if figure in ("1", "2", "3a", "3b") and target:
            assert verdict in ("met", "NOT MET")            # a number, judged
    # no --startup-baseline: the start-up figure says so instead of a number
    startup = next(row for row in rows if row[0] == "4" and row[3])
    assert startup[2] == "not measured: no --startup-baseline" and startup[4] == "not measured"
    assert [row[1].split(", ")[-1] for row in rows if row[0] == "1"] == ["20k live", "100k live"]
    assert os.path.exists(tmp_path / "synth-2000-1.pcap")
    for part in ("small", "startup", "1m", "10m", "capture"):
        assert f"] {part}..." in proc.stderr


def test_figures_skipped_parts_still_name_every_figure():
    proc = figures("--quick", "--skip", "small,startup,1m,10m,capture")
    rows = table_rows(proc.stdout)
    assert with_target(rows) == TARGETS
    assert all(row[2].startswith("skipped (--skip ") and row[4] == "not measured" for row in rows)


def test_figures_refuses_an_unknown_part_and_a_baseline_without_fasttcp(tmp_path):
    proc = subprocess.run([sys.executable, FIGURES, "--skip", "capture,disk"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "unknown part(s) disk" in proc.stderr
    proc = subprocess.run([sys.executable, FIGURES, "--startup-baseline", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "no fasttcp package there" in proc.stderr
