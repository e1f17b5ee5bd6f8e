"""The ``fasttcp`` command.

    fasttcp bench [--connections N] [--events N] [--repeats N] [--json]

Output goes to stdout, diagnostics to stderr; exit status 0 on success, 1 on a runtime error,
2 on a usage error.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from fasttcp import __version__
from fasttcp.bench import measure, report


def positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fasttcp", description="TCP connection tracking "
                                     "for millions of connections.")
    parser.add_argument("--version", action="version", version=f"fasttcp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser(
        "bench", help="time the tracker on a synthetic workload beside a plain-Python tracker",
        description="Opens CONNECTIONS IPv4 connections, then times batches of EVENTS uniformly "
                    "random data segments on them, and the same traffic through a plain-Python "
                    "dict tracker, in one process.")
    bench.add_argument("--connections", type=positive_int, default=1_000_000)
    bench.add_argument("--events", type=positive_int, default=1_000_000, help="events per batch")
    bench.add_argument("--repeats", type=positive_int, default=7)
    bench.add_argument("--python-events", type=positive_int, default=200_000,
                       help="prefix of the traffic the Python tracker is timed on")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "bench":
            result = measure(args.connections, args.events, args.repeats, args.python_events,
                             args.seed)
            print(json.dumps(result) if args.json else report(result))
    except MemoryError:
        print("fasttcp: not enough memory for this workload; try fewer --connections",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
