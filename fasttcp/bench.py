"""Throughput of fasttcp beside a plain-Python dict tracker, on the same events, in one process.

Used by ``fasttcp bench`` and ``benchmarks/compare.py``.

>>> result = measure(connections=2000, events=4000, repeats=3, python_events=1000)
>>> result["live_connections"], result["ratio"] > 1
(2000, True)
"""
from __future__ import annotations

import statistics
import time
import tracemalloc
from typing import Callable

import numpy as np

from fasttcp._baseline import touch_records
from fasttcp.reference import ReferenceTracker
from fasttcp.tracker import Tracker
from fasttcp.workloads import Workload, columns, uniform_workload


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


def python_bytes_per_connection(workload: Workload, sample: int) -> float:
    """Bytes the dict tracker allocates per connection, from tracemalloc over a sample."""
    sample = min(sample, len(workload.setup))
    ref = ReferenceTracker()
    cols = columns(workload.setup[:sample])
    tracemalloc.start()
    ref.update(**cols)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return size / sample


def measure(connections: int = 1_000_000, events: int = 1_000_000, repeats: int = 7,
            python_events: int = 200_000, seed: int = 0) -> dict:
    """Times `events`-long batches of uniform traffic over `connections` live connections.

    In each of `repeats` rounds: fasttcp on one table, fasttcp on two shards with a thread
    each (both without expiry, like the Python tracker), fasttcp with expiry (the default), the Python tracker on a prefix of the same traffic (`python_events` long), and, for
    scale, a bare loop updating one 64-byte record per event through a perfect index
    (`fasttcp._baseline`) over as many records: the memory system's limit, on this machine,
    now. Returns a dict of the medians and their ratios.
    """
    workload = uniform_workload(connections, events, seed)
    setup, traffic = columns(workload.setup), columns(workload.traffic)

    # the table alone (the Python tracker does not expire either), and as Tracker() comes
    tracker = Tracker(capacity=connections, expiry=False)
    tracker.update(**setup)
    expiring = Tracker(capacity=connections)
    expiring.update(**setup)
    records = np.zeros((connections, 8), dtype=np.uint64)
    which = np.random.default_rng(seed).integers(0, connections, events, dtype=np.uint32)
    python_events = min(python_events, events)
    ref = ReferenceTracker()
    ref.update(**setup)
    prefix = columns(workload.traffic[:python_events])
    with Tracker(capacity=connections, shards=2, expiry=False) as sharded:
        sharded.update(**setup)
        rates = median_rates({
            "fast": (lambda: tracker.update(**traffic), events),
            "expiring": (lambda: expiring.update(**traffic), events),
            "two": (lambda: sharded.update(**traffic), events),
            "limit": (lambda: touch_records(records, which), events),
            "slow": (lambda: ref.update(**prefix), python_events),
        }, repeats)
    fast, two, limit, slow = rates["fast"], rates["two"], rates["limit"], rates["slow"]

    return {
        "connections": connections, "events_per_batch": events, "repeats": repeats,
        "fasttcp_events_per_s": fast, "python_events_per_s": slow, "ratio": fast / slow,
        "fasttcp_2_threads_events_per_s": two, "thread_speedup": two / fast,
        "record_loop_events_per_s": limit, "fraction_of_record_loop": fast / limit,
        "fasttcp_bytes_per_connection": tracker.bytes_per_connection(4),
        "fasttcp_expiry_events_per_s": rates["expiring"],
        "fasttcp_expiry_bytes_per_connection": expiring.bytes_per_connection(4),
        "python_bytes_per_connection": python_bytes_per_connection(workload, 100_000),
        "live_connections": len(tracker),
    }


def report(result: dict) -> str:
    """The figures of `measure` as a small table."""
    rows = [
        f"{result['connections']:,} live IPv4 connections, uniform random keys, batches of "
        f"{result['events_per_batch']:,} events (median of {result['repeats']})",
        f"{'tracker':<20}{'events/s':>14}{'bytes/conn':>12}",
        f"{'fasttcp':<20}{result['fasttcp_events_per_s']:>14,.0f}"
        f"{result['fasttcp_bytes_per_connection']:>12.1f}",
        f"{'fasttcp, 2 threads':<20}{result['fasttcp_2_threads_events_per_s']:>14,.0f}"
        f"{result['fasttcp_bytes_per_connection']:>12.1f}",
        f"{'fasttcp, expiry':<20}{result['fasttcp_expiry_events_per_s']:>14,.0f}"
        f"{result['fasttcp_expiry_bytes_per_connection']:>12.1f}",
        f"{'plain Python dict':<20}{result['python_events_per_s']:>14,.0f}"
        f"{result['python_bytes_per_connection']:>12.1f}",
        f"{'bare record loop':<20}{result['record_loop_events_per_s']:>14,.0f}{64:>12.1f}",
        f"ratio: {result['ratio']:.1f}x the Python tracker, "
        f"{result['fraction_of_record_loop']:.0%} of the bare record loop; "
        f"2 threads: {result['thread_speedup']:.2f}x one",
    ]
    return "\n".join(rows)
