"""The modes users run, against flags-only, in one process: interleaved rounds, medians.

    python benchmarks/compare_modes.py [--connections 1000000] [--events 1000000] [--rounds 7]

Each mode has its own tracker holding the same live connections (picked up mid-stream), and
each round applies the same batch of data segments on uniformly random connections to every
tracker in turn. Sequence-aware modes get the batch with seq, ack and window columns, as
captures give them. Prints events/s per mode and its ratio to flags-only.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import fasttcp
from fasttcp.workloads import uniform_workload

MODES = {                       # name: (Tracker options, sequence-aware)
    "flags-only": ({}, False),
    "sequence-aware": ({}, True),
    "flows": ({"flows": True}, False),
    "sequence-aware + flows": ({"flows": True}, True),
}


def with_sequence(events: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The batch as SEGMENT_DTYPE rows: random sequence and acknowledgement numbers, full
    windows, no window scale."""
    segments = np.zeros(len(events), dtype=fasttcp.SEGMENT_DTYPE)
    for name in events.dtype.names or ():
        segments[name] = events[name]
    segments["seq"] = rng.integers(0, 2**32, len(events), dtype=np.uint32)
    segments["ack"] = rng.integers(0, 2**32, len(events), dtype=np.uint32)
    segments["window"] = 65535
    segments["wscale"] = -1
    return segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    workload = uniform_workload(args.connections, args.events, seed=0)
    rng = np.random.default_rng(1)
    batches = {False: (workload.setup, workload.traffic),
               True: (with_sequence(workload.setup, rng), with_sequence(workload.traffic, rng))}
    trackers = {}
    for name, (options, sequence) in MODES.items():
        setup, _ = batches[sequence]
        tracker = fasttcp.Tracker(capacity=args.connections, seed=0, **options)
        tracker.update(setup)
        trackers[name] = tracker
    seconds: dict[str, list[float]] = {name: [] for name in MODES}
    for round_ in range(args.rounds + 1):          # the first round warms up
        for name, (options, sequence) in MODES.items():
            traffic = batches[sequence][1].copy()
            traffic["ts"] += (round_ + 1) * len(traffic)   # time goes on from round to round
            started = time.perf_counter()
            trackers[name].update(traffic)
            if options.get("flows"):
                trackers[name].pop_flows()
            if round_:
                seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds["flags-only"])
    print(f"{args.connections:,} live connections, {args.events:,}-event batches, "
          f"medians of {args.rounds} interleaved rounds")
    print(f"{'mode':<24} {'events/s':>12} {'vs flags-only':>14}")
    for name in MODES:
        median = statistics.median(seconds[name])
        print(f"{name:<24} {args.events / median / 1e6:>10.1f} M {base / median:>14.2f}")


if __name__ == "__main__":
    main()
