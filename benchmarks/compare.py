"""fasttcp against a plain-Python dict tracker, on the same events, in one process.

    python benchmarks/compare.py                      # 1M live connections, batches of 1M
    python benchmarks/compare.py --connections 10000000 --json

Prints events/s (median of the repeats) of each tracker, their ratio, and the memory each
spends per connection. The Python tracker is fasttcp.reference.ReferenceTracker: one dict, one
loop, the same transition table; it is timed on a prefix of the same traffic.
"""
import sys

from fasttcp.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
