"""fasttcp against a plain-Python dict tracker, on the same events, in one process.

    python benchmarks/compare.py                      # 1M live connections, batches of 1M
    python benchmarks/compare.py --connections 10000000

Prints events/s (median of the repeats) for each tracker and their ratio, and the memory each
spends per connection. The Python tracker is fasttcp.reference.ReferenceTracker: one dict, one
loop, the same transition table; it is timed on a prefix of the same traffic.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc

from fasttcp import Tracker
from fasttcp.reference import ReferenceTracker
from fasttcp.workloads import columns, uniform_workload


def rate(fn, events: int, repeats: int) -> float:
    """Median events/s of `repeats` calls of fn()."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return events / statistics.median(times)


def python_bytes_per_connection(workload, sample: int) -> float:
    sample = min(sample, len(workload.setup))
    ref = ReferenceTracker()
    cols = columns(workload.setup[:sample])
    tracemalloc.start()
    ref.update(**cols)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return size / sample


def measure(connections: int, events: int, repeats: int, python_events: int, seed: int) -> dict:
    workload = uniform_workload(connections, events, seed)
    setup, traffic = columns(workload.setup), columns(workload.traffic)

    tracker = Tracker(capacity=connections)
    tracker.update(**setup)
    fast = rate(lambda: tracker.update(**traffic), events, repeats)

    python_events = min(python_events, events)
    ref = ReferenceTracker()
    ref.update(**setup)
    prefix = columns(workload.traffic[:python_events])
    slow = rate(lambda: ref.update(**prefix), python_events, max(3, repeats // 2))

    return {
        "connections": connections, "events_per_batch": events,
        "fasttcp_events_per_s": fast, "python_events_per_s": slow, "ratio": fast / slow,
        "fasttcp_bytes_per_connection": tracker.bytes_per_connection(4),
        "python_bytes_per_connection": python_bytes_per_connection(workload, 100_000),
        "live_connections": len(tracker),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=1_000_000, help="events per batch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--python-events", type=int, default=200_000,
                        help="prefix of the traffic the Python tracker is timed on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = measure(args.connections, args.events, args.repeats, args.python_events, args.seed)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['connections']:,} live IPv4 connections, uniform random keys, "
          f"batches of {result['events_per_batch']:,} events (median of {args.repeats})")
    print(f"{'tracker':<24}{'events/s':>14}{'bytes/conn':>12}")
    print(f"{'fasttcp':<24}{result['fasttcp_events_per_s']:>14,.0f}"
          f"{result['fasttcp_bytes_per_connection']:>12.1f}")
    print(f"{'plain Python dict':<24}{result['python_events_per_s']:>14,.0f}"
          f"{result['python_bytes_per_connection']:>12.1f}")
    print(f"ratio: {result['ratio']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
