"""The modes users run, against flags-only, in one process: interleaved rounds, medians.

    python benchmarks/compare_modes.py [--connections 1000000] [--events 1000000] [--rounds 7]

Each mode has its own tracker holding the same live connections (picked up mid-stream), and
each round applies the same batch of data segments on uniformly random connections to every
tracker in turn (`fasttcp.bench.mode_trackers`). Sequence-aware modes get the batch with seq,
ack and window columns, as captures give them. Prints events/s per mode and its ratio to
flags-only. ``fasttcp bench`` (benchmarks/compare.py) prints flags-only and sequence-aware +
flows beside the bare record loop and the Python trackers.
"""
from __future__ import annotations

import argparse

from fasttcp.bench import MODES, median_rates, mode_trackers
from fasttcp.workloads import uniform_workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    runs = mode_trackers(list(MODES), uniform_workload(args.connections, args.events, seed=0))
    median_rates(runs, 1)                              # a warm-up round
    rates = median_rates(runs, args.rounds)
    print(f"{args.connections:,} live connections, {args.events:,}-event batches, "
          f"medians of {args.rounds} interleaved rounds")
    print(f"{'mode':<24} {'events/s':>12} {'vs flags-only':>14}")
    for name, rate in rates.items():
        print(f"{name:<24} {rate / 1e6:>10.1f} M {rate / rates['flags-only']:>14.2f}")


if __name__ == "__main__":
    main()
