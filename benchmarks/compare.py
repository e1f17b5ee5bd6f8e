"""fasttcp's modes, the bare record loop and plain-Python trackers on the same events, in one
process: interleaved rounds, medians (the same as ``fasttcp bench``).

    python benchmarks/compare.py                      # 1M live connections, batches of 1M
    python benchmarks/compare.py --connections 10000000 --json

Prints events/s of fasttcp flags-only (without expiry, on one and two threads, and as Tracker()
comes), sequence-aware + flows (what ``fasttcp analyze`` runs), the bare record loop with
prefetch, the minimal plain-Python dict tracker (fasttcp.bench.MinimalTracker) and
fasttcp.reference; then flags-only as a fraction of the record loop, sequence-aware + flows as
a fraction of flags-only, and fasttcp's ratio to each Python tracker. The Python trackers are
timed on a prefix of the same traffic (--python-events).
"""
import sys

from fasttcp.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
