"""Throughput of fasttcp's modes beside plain-Python trackers, on the same events, in one process.

Used by ``fasttcp bench``, ``benchmarks/compare.py`` and ``benchmarks/compare_modes.py``.
`MinimalTracker` is the plain-Python baseline: what a Python user writes in a few lines.

>>> result = measure(connections=2000, events=4000, repeats=3, python_events=1000)
>>> result["live_connections"], result["ratio"] > 1
(2000, True)
"""
from __future__ import annotations

import os
import statistics
import time
import tracemalloc
from typing import Any, Callable, Optional, Sequence

import numpy as np

from fasttcp._baseline import touch_records
from fasttcp.models import ACK, FIN, RST, SYN
from fasttcp.reference import ReferenceTracker
from fasttcp.tracker import INVALID, NEW, VALID, Tracker
from fasttcp.workloads import Workload, columns, uniform_workload, with_sequence

__all__ = ["MinimalTracker", "MODES", "median_rates", "mode_trackers", "measure", "report"]

# MinimalTracker's states and events
CLOSED, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, TIME_WAIT = range(6)
E_RST, E_SYN, E_SYNACK, E_FIN, E_ACK = range(5)


def _event(flags: int) -> int | None:
    """The event of a flags byte, by precedence RST, SYN (SYN-ACK), FIN, ACK; None: no event."""
    if flags & RST:
        return E_RST
    if flags & SYN:
        return E_SYNACK if flags & ACK else E_SYN
    if flags & FIN:
        return E_FIN
    return E_ACK if flags & ACK else None


_EVENT_OF_FLAGS = tuple(_event(flags) for flags in range(256))
# (state, direction, event) -> next state; direction 0: from the originator, 1: to it. A
# missing key is an invalid segment: counted, state unchanged.
_TRANSITIONS: dict[tuple[int, int, int | None], int] = {
    **{(state, d, E_RST): CLOSED for state in range(6) for d in (0, 1)},
    (SYN_SENT, 0, E_SYN): SYN_SENT,          # retransmitted SYN
    (SYN_SENT, 1, E_SYNACK): SYN_RECV,
    (SYN_RECV, 1, E_SYNACK): SYN_RECV,       # retransmitted SYN-ACK
    (SYN_RECV, 0, E_ACK): ESTABLISHED,
    **{(ESTABLISHED, d, E_ACK): ESTABLISHED for d in (0, 1)},
    **{(ESTABLISHED, d, E_FIN): FIN_WAIT for d in (0, 1)},
    **{(FIN_WAIT, d, E_ACK): FIN_WAIT for d in (0, 1)},
    **{(FIN_WAIT, d, E_FIN): TIME_WAIT for d in (0, 1)},
    **{(TIME_WAIT, d, E_ACK): TIME_WAIT for d in (0, 1)},
    (TIME_WAIT, 0, E_SYN): SYN_SENT,         # the key reused for a new connection
    (CLOSED, 0, E_SYN): SYN_SENT,
}
# the state a connection opens in: a SYN, or any ACK-only segment (picked up mid-stream)
_OPEN: dict[int | None, int] = {E_SYN: SYN_SENT, E_ACK: ESTABLISHED}


class MinimalTracker:
    """A TCP tracker as a Python user writes it: the plain-Python baseline of `fasttcp bench`.

    One dict keyed by the canonical 4-tuple (the lower endpoint first), one list per
    connection ``[state, originator is the lower endpoint, orig_pkts, resp_pkts, orig_bytes,
    resp_bytes, last_ts]``, states moved through a small transition dict, and counters of the
    verdicts. No expiry, no sequence checks, no flow records: the least a tracker does, so
    that fasttcp's ratio against it is not flattered (`fasttcp.reference` does much more, and
    is reported beside it).

    >>> t = MinimalTracker()
    >>> t.update([1, 2, 3], [10, 20, 10], [5000, 80, 5000], [20, 10, 20], [80, 5000, 80],
    ...          [SYN, SYN | ACK, ACK], [0, 0, 0])
    >>> t.state(10, 5000, 20, 80) == ESTABLISHED, (t.new, t.valid, t.invalid)
    (True, (1, 2, 0))
    """

    def __init__(self) -> None:
        self.conns: dict[tuple[int, int, int, int], list[int]] = {}
        self.new = self.valid = self.invalid = 0

    def step(self, ts: int, src: int, sport: int, dst: int, dport: int, flags: int,
             length: int) -> int:
        """Applies one segment; returns its verdict (NEW, VALID or INVALID)."""
        low = src < dst or (src == dst and sport <= dport)
        key = (src, sport, dst, dport) if low else (dst, dport, src, sport)
        event = _EVENT_OF_FLAGS[flags]
        conn = self.conns.get(key)
        if conn is None:
            state = _OPEN.get(event)
            if state is None:
                self.invalid += 1
                return INVALID
            self.conns[key] = [state, low, 1, 0, length, 0, ts]
            self.new += 1
            return NEW
        d = 0 if low == conn[1] else 1
        conn[2 + d] += 1
        conn[4 + d] += length
        conn[6] = ts
        state = _TRANSITIONS.get((conn[0], d, event))
        if state is None:
            self.invalid += 1
            return INVALID
        conn[0] = state
        self.valid += 1
        return VALID

    def update(self, ts: Sequence[int], src: Sequence[int], sport: Sequence[int],
               dst: Sequence[int], dport: Sequence[int], flags: Sequence[int],
               length: Sequence[int]) -> None:
        """Applies a batch of columns (sequences or 1-d numpy arrays, IPv4 addresses as
        integers), event after event."""
        step = self.step
        for row in zip(*(np.asarray(c).tolist() for c in (ts, src, sport, dst, dport, flags,
                                                          length))):
            step(*row)

    def state(self, src: int, sport: int, dst: int, dport: int) -> int | None:
        """The state of the connection between two endpoints (either order); None: none."""
        low = src < dst or (src == dst and sport <= dport)
        conn = self.conns.get((src, sport, dst, dport) if low else (dst, dport, src, sport))
        return None if conn is None else conn[0]

    def __len__(self) -> int:
        return len(self.conns)


def median_rates(runs: dict[str, tuple[Callable[[], object], int]],
                 repeats: int) -> dict[str, float]:
    """Events per second of each named (fn, events) at the median of `repeats` rounds.

    The rounds interleave the contestants, so a change in the machine's speed during the
    measurement (other tenants, frequency) reaches all of them alike and ratios stay fair.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (fn, _events) in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: events / statistics.median(times[name])
            for name, (_fn, events) in runs.items()}


#: The modes users run: name -> (Tracker options, sequence-aware), each a tracker as it comes
#: (expiry on). "sequence-aware + flows" is what ``fasttcp analyze`` runs.
MODES: dict[str, tuple[dict[str, Any], bool]] = {
    "flags-only": ({}, False),
    "sequence-aware": ({}, True),
    "flows": ({"flows": True}, False),
    "sequence-aware + flows": ({"flows": True}, True),
}


def mode_trackers(names: Sequence[str], workload: Workload,
                  seed: int = 0) -> dict[str, tuple[Callable[[], object], int]]:
    """For each of the MODES named, a tracker holding the workload's live connections and a
    step that applies its traffic to it (and, with flows, collects the flows that ended), for
    `median_rates`. Sequence-aware modes get the batch with random seq/ack and full windows,
    as captures give them."""
    connections, events = len(workload.setup), len(workload.traffic)
    rng = np.random.default_rng(seed + 1)
    batches = {False: (columns(workload.setup), columns(workload.traffic))}
    if any(MODES[name][1] for name in names):
        batches[True] = (columns(with_sequence(workload.setup, rng)),
                         columns(with_sequence(workload.traffic, rng)))
    runs = {}
    for name in names:
        options, sequence = MODES[name]
        setup, traffic = batches[sequence]
        tracker = Tracker(capacity=connections, seed=seed, **options)
        tracker.update(**setup)
        runs[name] = (_mode_step(tracker, traffic, bool(options.get("flows"))), events)
    return runs


def _mode_step(tracker: Tracker, traffic: dict, flows: bool) -> Callable[[], object]:
    if flows:
        return lambda: (tracker.update(**traffic), tracker.pop_flows())
    return lambda: tracker.update(**traffic)


def python_bytes_per_connection(tracker: Any, setup: np.ndarray, sample: int) -> float:
    """Bytes a Python tracker allocates per connection, from tracemalloc over a sample."""
    sample = min(sample, len(setup))
    cols = columns(setup[:sample])
    tracemalloc.start()
    tracker.update(**cols)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return size / sample


def available_memory() -> int:
    """Bytes the system can give without swapping (MemAvailable), or the free pages."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# Python trackers are set up in slices: a batch becomes lists of Python ints first, which
# at 10M events would take gigabytes for a moment.
_PYTHON_SLICE = 1 << 20
# A Python tracker is left out when it would take more than this share of the available memory.
_PYTHON_MEMORY_SHARE = 0.5


def measure(connections: int = 1_000_000, events: int = 1_000_000, repeats: int = 7,
            python_events: int = 200_000, seed: int = 0) -> dict:
    """Times `events`-long batches of uniform traffic over `connections` live connections.

    In each of `repeats` rounds, in turn: fasttcp flags-only on one table without expiry
    (like the Python trackers), the same on two shards with a thread each, flags-only with
    expiry (Tracker() as it comes), sequence-aware + flows (what ``fasttcp analyze`` runs),
    a bare loop updating one 64-byte record per event through a perfect index
    (`fasttcp._baseline`) over as many records, with prefetch: the memory system's limit on
    this machine, now; then `MinimalTracker` and `fasttcp.reference.ReferenceTracker` on a
    prefix of the same traffic (`python_events` long). Returns a dict of the medians and
    their ratios.
    """
    workload = uniform_workload(connections, events, seed)
    setup, traffic = columns(workload.setup), columns(workload.traffic)
    tracker = Tracker(capacity=connections, expiry=False)
    tracker.update(**setup)
    records = np.zeros((connections, 8), dtype=np.uint64)
    which = np.random.default_rng(seed).integers(0, connections, events, dtype=np.uint32)
    python_events = min(python_events, events)
    prefix = columns(workload.traffic[:python_events])
    modes = mode_trackers(["flags-only", "sequence-aware + flows"], workload, seed)
    python_runs, skipped = {}, {}
    sizes = {"minimal": python_bytes_per_connection(MinimalTracker(), workload.setup, 100_000),
             "reference": python_bytes_per_connection(ReferenceTracker(), workload.setup,
                                                      100_000)}
    for name, make in (("minimal", MinimalTracker), ("reference", ReferenceTracker)):
        need, available = sizes[name] * connections, available_memory()
        if need > _PYTHON_MEMORY_SHARE * available:
            skipped[name] = (f"needs about {need / 2**30:.1f} GiB for {connections:,} "
                             f"connections, {available / 2**30:.1f} GiB available")
            continue
        python = make()
        for at in range(0, connections, _PYTHON_SLICE):
            python.update(**columns(workload.setup[at:at + _PYTHON_SLICE]))
        python_runs[name] = (lambda python=python: python.update(**prefix), python_events)
    with Tracker(capacity=connections, shards=2, expiry=False) as sharded:
        sharded.update(**setup)
        rates = median_rates({
            "fast": (lambda: tracker.update(**traffic), events),
            "two": (lambda: sharded.update(**traffic), events),
            **modes,
            "limit": (lambda: touch_records(records, which), events),
            **python_runs,
        }, repeats)
    fast, limit = rates["fast"], rates["limit"]
    flags, seq_flows = rates["flags-only"], rates["sequence-aware + flows"]
    minimal, reference = rates.get("minimal"), rates.get("reference")   # None: not run
    return {
        "connections": connections, "events_per_batch": events, "repeats": repeats,
        "fasttcp_events_per_s": fast, "python_events_per_s": minimal,
        "ratio": fast / minimal if minimal else None,
        "reference_events_per_s": reference,
        "ratio_reference": fast / reference if reference else None,
        "python_skipped": skipped,
        "fasttcp_2_threads_events_per_s": rates["two"], "thread_speedup": rates["two"] / fast,
        "record_loop_events_per_s": limit, "fraction_of_record_loop": fast / limit,
        "fasttcp_bytes_per_connection": tracker.bytes_per_connection(4),
        "fasttcp_expiry_events_per_s": flags,
        "seq_flows_events_per_s": seq_flows, "seq_flows_fraction_of_flags_only": seq_flows / flags,
        "python_bytes_per_connection": sizes["minimal"],
        "reference_bytes_per_connection": sizes["reference"],
        "live_connections": len(tracker),
    }


_PYTHON_ROWS = {"minimal": "plain Python dict (minimal)", "reference": "fasttcp.reference"}


def report(result: dict) -> str:
    """The figures of `measure` as a small table."""
    def row(name: str, rate: Optional[float], size: Any) -> str:
        size = f"{size:>12.1f}" if isinstance(size, float) else f"{size:>12}"
        return f"{name:<32}{'not run' if rate is None else f'{rate:,.0f}':>14}{size}"

    per_conn = result["fasttcp_bytes_per_connection"]
    rows = [
        f"{result['connections']:,} live IPv4 connections, uniform random keys, batches of "
        f"{result['events_per_batch']:,} events (median of {result['repeats']} interleaved "
        f"rounds)",
        f"{'tracker':<32}{'events/s':>14}{'bytes/conn':>12}",
        row("fasttcp flags-only, no expiry", result["fasttcp_events_per_s"], per_conn),
        row("fasttcp flags-only, 2 threads", result["fasttcp_2_threads_events_per_s"], per_conn),
        row("fasttcp flags-only (default)", result["fasttcp_expiry_events_per_s"], ""),
        row("fasttcp sequence-aware + flows", result["seq_flows_events_per_s"], ""),
        row("bare record loop (prefetch)", result["record_loop_events_per_s"], 64.0),
        row("plain Python dict (minimal)", result["python_events_per_s"],
            result["python_bytes_per_connection"]),
        row("fasttcp.reference (Python)", result["reference_events_per_s"],
            result["reference_bytes_per_connection"]),
        *(f"{_PYTHON_ROWS[name]} not run: {why}" for name, why in result["python_skipped"].items()),
        f"flags-only: {result['fraction_of_record_loop']:.0%} of the bare record loop; "
        f"sequence-aware + flows: {result['seq_flows_fraction_of_flags_only']:.0%} of "
        f"flags-only (default); 2 threads: {result['thread_speedup']:.2f}x one",
    ]
    ratios = [f"{result[key]:.1f}x {name}" for key, name in (
        ("ratio", "the minimal Python dict tracker"), ("ratio_reference", "fasttcp.reference"))
        if result[key] is not None]
    if ratios:
        rows.append("ratio: " + ", ".join(ratios))
    return "\n".join(rows)
