"""The ``fasttcp`` command.

    fasttcp analyze [CAPTURE ...] [--model M] [--flows OUT.csv|OUT.parquet] [--plot OUT.png]
                    [--keep-going] [--json]
    fasttcp generate OUT.pcap [--connections N] [--seed N] [--mix KIND=WEIGHT,...] [--nanosecond]
    fasttcp bench [--connections N] [--events N] [--repeats N] [--json]

Output goes to stdout, diagnostics to stderr; exit status 0 on success, 1 on a runtime error
(an unreadable capture, a missing optional package), 2 on a usage error, 130 / 143 when
interrupted by SIGINT / SIGTERM (the command's entry point, ``_fasttcp_launcher``, handles
those). Output files appear whole or not at all (``fasttcp._atomic``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

from fasttcp import __version__
from fasttcp.analyze import FLOW_FORMATS, Analysis, analyze, plot_timeline
from fasttcp.capture import CaptureError
from fasttcp.flows import CONN_STATE_MEANINGS
from fasttcp.models import MODELS
from fasttcp.sample import SAMPLE_CAPTURE
from fasttcp.tracker import DEFAULT_CLOCK_CONFIRM, DEFAULT_MAX_CLOCK_JUMP, MAX_CLOCK_JUMP


class UsageError(Exception):
    """A bad argument found after parsing: reported like argparse's own (exit 2)."""


def positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def clock_jump(text: str) -> Optional[float]:
    """Seconds, or "none" (follow every timestamp)."""
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < MAX_CLOCK_JUMP:
        raise argparse.ArgumentTypeError(f"must be from 0 to about 146 years: {text!r}")
    return value


def mix_weights(text: str) -> dict[str, float]:
    """KIND=WEIGHT,KIND=WEIGHT as a mapping."""
    from fasttcp.synth import KINDS
    weights = {}
    for item in text.split(","):
        kind, _, weight = item.partition("=")
        if kind not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        try:
            weights[kind] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a weight: {item!r} (write KIND=WEIGHT)") \
                from None
        if not weights[kind] > 0:
            raise argparse.ArgumentTypeError(f"weights must be positive: {item!r}")
    return weights


class _CommandParser(argparse.ArgumentParser):
    """A command's parser that can add its arguments only when that command is parsed (or its
    help shown): `generate`'s options name the generator's scenario kinds, and importing the
    generator for them would slow every other command's start."""

    def __init__(self, *args: Any,
                 arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._arguments = arguments

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._arguments is not None:
            add, self._arguments = self._arguments, None
            add(self)
        return super().parse_known_args(args, namespace)


def _generate_arguments(generate_cmd: argparse.ArgumentParser) -> None:
    from fasttcp.synth import KINDS
    generate_cmd.add_argument("output", metavar="OUT.pcap", help="ending in .gz: gzip it")
    generate_cmd.add_argument("--connections", type=positive_int, default=10_000)
    generate_cmd.add_argument("--seed", type=int, default=0)
    generate_cmd.add_argument("--rate", type=float, default=10_000.0,
                              help="connections per second of capture time")
    generate_cmd.add_argument("--mix", type=mix_weights, help="KIND=WEIGHT,... over: "
                              + ", ".join(KINDS))
    generate_cmd.add_argument("--nanosecond", action="store_true",
                              help="nanosecond timestamps (default microseconds)")
    generate_cmd.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fasttcp", description="TCP connection tracking "
                                     "for millions of connections.")
    parser.add_argument("--version", action="version", version=f"fasttcp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_CommandParser)

    analyze_cmd = commands.add_parser(
        "analyze", help="track the connections of captures; print states and conn_state counts",
        description="Reads pcap/pcapng captures (gzip-compressed or not) in the order given, "
                    "tracks every TCP connection and makes a Zeek-style flow record for each. "
                    "Without CAPTURE, reads the sample capture bundled with fasttcp.")
    analyze_cmd.add_argument("captures", nargs="*", metavar="CAPTURE")
    analyze_cmd.add_argument("--model", choices=sorted(MODELS), default="rfc793")
    analyze_cmd.add_argument("--flows", metavar="OUT", help="write flow records to OUT "
                             "(.csv, or .parquet with fasttcp[pandas])")
    analyze_cmd.add_argument("--plot", metavar="PNG", help="draw live connections per state "
                             "over capture time (needs fasttcp[plot])")
    analyze_cmd.add_argument("--keep-going", action="store_true", help="read what a damaged "
                             "capture holds up to the damage, and report the rest, instead of "
                             "stopping with an error")
    analyze_cmd.add_argument("--json", action="store_true", help="print one JSON object")
    analyze_cmd.add_argument("--clock", choices=("events", "manual"), default="events",
                             help="events (the default): expire connections by the capture's "
                             "own clock; manual: expire none (every connection open at the "
                             "end is written as live)")
    analyze_cmd.add_argument("--max-clock-jump", type=clock_jump,
                             default=DEFAULT_MAX_CLOCK_JUMP,
                             metavar="SECONDS", help="believe a segment further ahead of the "
                             "clock only when --clock-confirm segments in a row are (default "
                             "%(default)s; 'none' follows every timestamp)")
    analyze_cmd.add_argument("--clock-confirm", type=positive_int,
                             default=DEFAULT_CLOCK_CONFIRM, metavar="N",
                             help="segments in a row that confirm a jump (default %(default)s)")
    where = analyze_cmd.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, metavar="N", help="run on a local Dask "
                       "cluster of N worker processes (needs fasttcp[dask])")
    where.add_argument("--scheduler", metavar="ADDRESS", help="run on the Dask cluster whose "
                       "scheduler is at ADDRESS (needs fasttcp[dask])")

    commands.add_parser(
        "generate", help="write a synthetic capture",
        description="Writes a reproducible synthetic capture (Ethernet/IPv4/TCP headers) of "
                    "CONNECTIONS scenario instances: handshakes, data, FIN and RST teardowns, "
                    "simultaneous open and close, retransmissions, SYN floods, scans, "
                    "mid-stream pickups.", arguments=_generate_arguments)

    bench = commands.add_parser(
        "bench", help="time the tracker on a synthetic workload beside plain-Python trackers",
        description="Opens CONNECTIONS IPv4 connections, then times batches of EVENTS uniformly "
                    "random data segments on them (flags-only, and sequence-aware with flows), "
                    "a bare record loop, and the same traffic through a minimal plain-Python "
                    "dict tracker and fasttcp.reference, in one process, round by round.")
    bench.add_argument("--connections", type=positive_int, default=1_000_000)
    bench.add_argument("--events", type=positive_int, default=1_000_000, help="events per batch")
    bench.add_argument("--repeats", type=positive_int, default=7)
    bench.add_argument("--python-events", type=positive_int, default=200_000,
                       help="prefix of the traffic the Python trackers are timed on")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [str(cell).rjust(width) if isinstance(cell, int) else str(cell).ljust(width)
                 for cell, width in zip(row, widths)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def analysis_report(result: Analysis) -> str:
    names = ", ".join(os.path.basename(stats.path) for stats in result.captures)
    skipped = ", ".join(f"{n:,} {reason}" for reason, n in result.skipped.items() if n)
    rate = result.packets / result.seconds / 1e6 if result.seconds else 0.0
    lines = [f"{names}: {result.packets:,} packets, {result.segments:,} TCP segments"
             + (f" (skipped: {skipped})" if skipped else ""),
             f"{result.flows:,} connections ({result.connections:,} live at the end), "
             f"model {result.model}, {result.seconds:.2f} s ({rate:.2f} M packets/s)"]
    live = sorted(((state, n) for state, n in result.histogram.items() if n),
                  key=lambda row: (-row[1], row[0]))
    lines += ["", _table(live, ("state (live connections)", "count")) if live
              else "no live connections"]
    states = [(name, n, CONN_STATE_MEANINGS[name]) for name, n in result.conn_states.items()
              if n]
    states.sort(key=lambda row: (-row[1], row[0]))
    lines += ["", _table(states, ("conn_state", "flows", "meaning")) if states else "no flows"]
    if result.clock_suspect:
        lines += ["", f"clock: {result.clock_suspect:,} segments too far ahead of the capture's "
                      f"clock ({result.clock_jumps:,} jumps followed once confirmed)"]
    return "\n".join(lines)


def _analyze(args: argparse.Namespace) -> str:
    if args.flows is not None and not args.flows.endswith(FLOW_FORMATS):
        raise UsageError(f"--flows: write to a file ending in {' or '.join(FLOW_FORMATS)}")
    if args.plot is not None and not args.plot:
        raise UsageError("--plot: give the image's file name (for example states.png)")
    paths = args.captures or [SAMPLE_CAPTURE]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file" if not os.path.exists(path)
                                    else f"{path}: not a file")
    if args.plot:   # fail before reading, not after it
        _require("matplotlib", "--plot", "plot")
        _check_image_format(args.plot)
    if args.flows and args.flows.endswith(".parquet"):
        _require("pandas", "--flows *.parquet", "pandas")
        _require("pyarrow", "--flows *.parquet", "pandas")
    if args.workers or args.scheduler:
        result = _analyze_on_dask(args, paths)
    else:
        progress = _progress_bar(sum(os.path.getsize(p) for p in paths))
        try:
            result = analyze(paths, args.model, args.flows, bool(args.plot),
                             not args.keep_going,
                             progress.update if progress is not None else None,
                             args.clock, args.max_clock_jump, args.clock_confirm)
        finally:
            if progress is not None:
                progress.close()
    if args.plot:
        plot_timeline(result, list(result.histogram), args.plot)
    for stats in result.captures:
        if stats.error:     # what --keep-going let through: a diagnostic, so on stderr
            print(f"fasttcp: warning: {stats.error}; {stats.unread_bytes:,} bytes not read",
                  file=sys.stderr)
    return json.dumps(result.as_dict()) if args.json else analysis_report(result)


def _analyze_on_dask(args: argparse.Namespace, paths: list[str]) -> Analysis:
    """analyze on a local cluster (--workers) or a running one (--scheduler)."""
    if args.plot:
        raise UsageError("--plot is not available with --workers or --scheduler")
    if (args.clock, args.max_clock_jump, args.clock_confirm) != \
            ("events", DEFAULT_MAX_CLOCK_JUMP, DEFAULT_CLOCK_CONFIRM):
        raise UsageError("--clock, --max-clock-jump and --clock-confirm are not available "
                         "with --workers or --scheduler (they keep the defaults)")
    if args.flows and not args.flows.endswith(".parquet"):
        raise UsageError("with --workers or --scheduler, flows are written as a Parquet "
                         "dataset: --flows OUT.parquet")
    _require("distributed", "--workers / --scheduler", "dask")
    from distributed import Client, LocalCluster

    from fasttcp import dask as on_dask

    if args.scheduler:
        with Client(args.scheduler):     # its workers need fasttcp installed
            return on_dask.analyze(paths, args.model, args.flows, strict=not args.keep_going)
    # the cluster's own logging (its shutdown chatter included) stays off stderr
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.CRITICAL) as cluster, \
            Client(cluster):
        return on_dask.analyze(paths, args.model, args.flows,
                               partitions=2 * args.workers, strict=not args.keep_going)


def _require(module: str, option: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise ImportError(f"{option} needs {module}: pip install 'fasttcp[{extra}]'") from None


def _check_image_format(path: str) -> None:
    """matplotlib picks the format by the extension (none: PNG), and refuses others."""
    from matplotlib.backend_bases import FigureCanvasBase
    extension = os.path.splitext(path)[1][1:].lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if extension and extension not in formats:
        raise UsageError(f"--plot: images are written as {', '.join(sorted(formats))}; "
                         f"not {extension!r}")


def _progress_bar(total: int):
    """A byte progress bar on stderr, only when it is a terminal."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, leave=False,
                desc="reading")


def _generate(args: argparse.Namespace) -> str:
    from fasttcp.synth import DEFAULT_START, PCAP_TS_END, generate, write_pcap
    started = time.perf_counter()
    try:
        batches = generate(args.connections, seed=args.seed, mix=args.mix, rate=args.rate)
        span = args.connections / args.rate      # seconds: the mean span of the arrivals
        if DEFAULT_START + span * 1e9 >= PCAP_TS_END:
            raise UsageError(f"--rate {args.rate:g} is too low for {args.connections:,} "
                             f"connections: they would arrive over "
                             f"{span / (365.25 * 86400):.3g} years, past 2106, where "
                             f"pcap's timestamps end")
        # ValueError from here: the rare random overshoot of that limit
        packets = write_pcap(args.output, batches, nanosecond=args.nanosecond)
    except ValueError as error:
        raise UsageError(str(error)) from None
    seconds = time.perf_counter() - started
    summary = {"output": args.output, "packets": packets, "connections": args.connections,
               "seed": args.seed, "bytes": os.path.getsize(args.output), "seconds": seconds}
    if args.json:
        return json.dumps(summary)
    return (f"wrote {args.output}: {packets:,} packets of {args.connections:,} connections "
            f"(seed {args.seed}), {summary['bytes']:,} bytes in {seconds:.2f} s")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status. KeyboardInterrupt propagates (after
    the clean-up of partial outputs): ``_fasttcp_launcher.main`` turns it into 130 / 143."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "analyze":
            print(_analyze(args))
        elif args.command == "generate":
            print(_generate(args))
        elif args.command == "bench":
            from fasttcp.bench import measure, report   # its workloads load only when asked
            result = measure(args.connections, args.events, args.repeats, args.python_events,
                             args.seed)
            print(json.dumps(result) if args.json else report(result))
    except UsageError as error:
        parser.error(str(error))   # exits with status 2
    except BrokenPipeError:
        # the reader went away (`fasttcp analyze | head`): stop quietly, as Unix tools do;
        # stdout goes to /dev/null so the interpreter's final flush does not complain
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (CaptureError, OSError, ImportError) as error:
        print(f"fasttcp: {error}", file=sys.stderr)
        return 1
    except MemoryError:
        print("fasttcp: not enough memory for this input", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
