"""fasttcp analyze on Dask: 1 worker against 2, on the same capture files, in one run.

    python benchmarks/compare_dask.py                   # ~2M packets in 4 files
    python benchmarks/compare_dask.py --connections 20000 --repeats 3

Generates a capture (kept in --workdir), rotates it into --files files, and times
`fasttcp.dask.analyze` over them on a LocalCluster of one worker process and of two,
alternating, plus the single-process `fasttcp.analyze.analyze` on the whole capture. Prints the
medians and the speedup of two workers over one.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from distributed import Client, LocalCluster

import fasttcp.dask as on_dask
from fasttcp.analyze import analyze
from fasttcp.synth import generate, write_pcap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=160_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(),
                                                          "fasttcp-bench-dask"))
    args = parser.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    whole = os.path.join(args.workdir, f"whole-{args.connections}.pcap")
    parts = [os.path.join(args.workdir, f"part-{args.connections}-{i}.pcap")
             for i in range(args.files)]
    if not all(os.path.exists(p) for p in [whole, *parts]):
        batches = list(generate(args.connections, seed=1))
        packets = write_pcap(whole, batches)
        for path, chunk in zip(parts, np.array_split(np.arange(len(batches)), args.files)):
            write_pcap(path, [batches[k] for k in chunk])
    else:
        packets = analyze([whole]).packets

    clusters = {n: LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                dashboard_address=":0", silence_logs=logging.CRITICAL)
                for n in (1, 2)}
    times: dict[str, list[float]] = {"one process": [], "dask, 1 worker": [],
                                     "dask, 2 workers": []}
    try:
        for _ in range(args.repeats):
            start = time.perf_counter()
            analyze([whole])
            times["one process"].append(time.perf_counter() - start)
            for n in (1, 2):
                with Client(clusters[n]):
                    start = time.perf_counter()
                    on_dask.analyze(parts, partitions=2 * n)
                    times[f"dask, {n} worker{'s' if n > 1 else ''}"].append(
                        time.perf_counter() - start)
    finally:
        for cluster in clusters.values():
            cluster.close()
    print(f"{packets:,} packets in {args.files} files, median of {args.repeats} rounds")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, seconds in medians.items():
        print(f"{name:<18}{seconds:8.2f} s {packets / seconds / 1e6:8.2f} M packets/s")
    print(f"2 workers: {medians['dask, 1 worker'] / medians['dask, 2 workers']:.2f}x 1 worker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
