"""Every figure of issue #14 in one run, and one table of them at the end.

    python benchmarks/figures.py --startup-baseline /tmp/base     # the whole run
    python benchmarks/figures.py --quick --skip capture,startup    # small sizes, a quick check

The parts, in the order they run (``--skip`` takes their names, comma-separated):

small
    figure 3: `Tracker.update` with 1 and 100 events against the minimal plain-Python dict
    tracker (`fasttcp.bench.MinimalTracker`) and `fasttcp.reference`, on synthetic traffic
    (benchmarks/compare_small.py).
startup
    figure 4: ``fasttcp analyze`` on the bundled sample as a fresh process, against the same
    command on a checkout of 53c44d2 (the commit before the issue's work), with bare Python
    and numpy's import for scale (benchmarks/compare_startup.py). The baseline is a checkout
    with its compiled modules built in place, given as ``--startup-baseline PATH``; without it
    the figure is reported as not measured. To make one::

        git worktree add /tmp/base 53c44d2 && cd /tmp/base && python setup.py build_ext --inplace

1m
    figures 1 and 2 at 1M live connections, 1M-event batches (`fasttcp.bench.measure`, the
    same as ``fasttcp bench``): sequence-aware + flows against flags-only, flags-only against
    the bare record loop with prefetch, bytes per IPv4 connection, and the large batch's rate
    against both Python trackers.
10m
    figure 1 at 10M live connections: flags-only and sequence-aware + flows only
    (`fasttcp.bench.mode_trackers`); the Python trackers are a 1M figure and do not run here.
capture
    figure 5: ``fasttcp analyze --flows out.csv`` on ``fasttcp generate --connections 200000``
    as a whole process against the peers installed here (benchmarks/compare_capture.py). The
    Python peers run under ``--peer-python``, e.g. a virtualenv made with ``pip install dpkt
    scapy nfstream``; Suricata, the peer with a target, has no package for this host.

Every part times its contestants in interleaved rounds and takes the medians, so a change in
the shared host's speed reaches all of them alike: the ratios are the figures. Progress goes
to stderr; stdout gets the command line, the date and host, and the table: figure, what is
compared, the measured value, the issue's target and whether it is met.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional

import numpy as np

import compare_capture
import compare_small
import compare_startup
import fasttcp
from fasttcp.bench import measure, median_rates, mode_trackers
from fasttcp.workloads import uniform_workload

PARTS = ("small", "startup", "1m", "10m", "capture")
BASELINE_COMMIT = "53c44d2"


@dataclass(frozen=True)
class Sizes:
    """How big each part runs."""

    connections: int = 1_000_000       # figures 1 and 2
    big_connections: int = 10_000_000  # figure 1's second size
    events: int = 1_000_000            # per batch, figures 1 and 2
    repeats: int = 7                   # interleaved rounds, figures 1 and 2
    python_events: int = 200_000       # the Python trackers' prefix of each batch
    small_connections: int = 2000      # figure 3
    small_events: int = 20_000
    small_rounds: int = 7
    startup_rounds: int = 40           # figure 4
    capture_connections: int = 200_000  # figure 5
    capture_repeats: int = 3


QUICK = Sizes(connections=20_000, big_connections=100_000, events=20_000, repeats=3,
              python_events=5000, small_connections=200, small_events=2000, small_rounds=3,
              startup_rounds=3, capture_connections=2000, capture_repeats=1)


@dataclass
class Row:
    """One line of the table. `target` is (operator, bound) or None for a figure reported
    beside the others; `value` None: not measured, and `shown` says why."""

    figure: str
    what: str
    shown: str
    value: Optional[float] = None
    target: Optional[tuple[str, float]] = None

    def verdict(self) -> str:
        if self.target is None:
            return "-"
        if self.value is None:
            return "not measured"
        op, bound = self.target
        met = self.value <= bound if op == "<=" else self.value >= bound
        return "met" if met else "NOT MET"


def count(n: int) -> str:
    """1000000 -> '1M', 20000 -> '20k'."""
    for unit, size in (("M", 1_000_000), ("k", 1000)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n:,}"


def rate(events_per_s: float) -> str:
    return f"{events_per_s / 1e6:.2f} M/s"


def small_rows(sizes: Sizes) -> list[Row]:
    """Figure 3: small calls against the Python trackers."""
    result = compare_small.measure(sizes.small_connections, sizes.small_events,
                                   sizes.small_rounds)
    ns = result["ns_per_event"]
    minimal = ns["minimal dict tracker"]
    rows = []
    for mode, tag, targets in ((compare_small.DEFAULT_MODE, "flags-only", True),
                               ("flows=True, sequence-aware", "seq-aware + flows", False)):
        ratios, reference = result["ratios"][mode], ns[f"{mode}: reference"]
        one, hundred = ns[f"{mode}: 1-event calls"], ns[f"{mode}: 100-event calls"]
        letter = "a" if targets else "c"
        rows += [
            Row(f"3{letter}", f"{tag}: 1-event call / minimal dict tracker step",
                f"{ratios['one_vs_minimal']:.1f}x ({one:,.0f} / {minimal:,.0f} ns)",
                ratios["one_vs_minimal"], ("<=", 2) if targets else None),
            Row(f"3{letter}", f"{tag}: 1-event call / fasttcp.reference step",
                f"{ratios['one_vs_reference']:.1f}x ({one:,.0f} / {reference:,.0f} ns)"),
            Row(f"3{chr(ord(letter) + 1)}", f"{tag}: 100-event calls' rate / minimal dict "
                f"tracker's", f"{ratios['hundred_vs_minimal']:.1f}x ({hundred:,.0f} / "
                f"{minimal:,.0f} ns)", ratios["hundred_vs_minimal"],
                (">=", 10) if targets else None),
            Row(f"3{chr(ord(letter) + 1)}", f"{tag}: 100-event calls' rate / "
                f"fasttcp.reference's", f"{ratios['hundred_vs_reference']:.1f}x "
                f"({hundred:,.0f} / {reference:,.0f} ns)"),
        ]
    return rows


def startup_rows(sizes: Sizes, baseline: Optional[str]) -> list[Row]:
    """Figure 4: start-up of ``fasttcp analyze`` on the bundled sample."""
    medians = compare_startup.measure(sizes.startup_rounds, baseline)
    ms = {name: wall * 1e3 for name, (wall, _cpu) in medians.items()}
    ours = ms["fasttcp analyze"]
    if baseline:
        before = ms["fasttcp analyze (baseline)"]
        first = Row("4", f"fasttcp analyze start-up / {BASELINE_COMMIT}'s (wall)",
                    f"{ours / before:.3f} ({ours:.0f} / {before:.0f} ms)", ours / before,
                    ("<=", 0.5))
    else:
        first = Row("4", f"fasttcp analyze start-up / {BASELINE_COMMIT}'s (wall)",
                    "not measured: no --startup-baseline", None, ("<=", 0.5))
    bare, numpy_import = ms["python -c pass"], ms["python -c 'import numpy'"]
    scale = Row("4", "for scale: python -c pass; python -c 'import numpy' (wall)",
                f"{bare:.0f} ms; {numpy_import:.0f} ms")
    return [first, scale]


def one_million_rows(sizes: Sizes) -> list[Row]:
    """Figures 1 and 2 at `sizes.connections` live connections, and the large batch's rate
    against the Python trackers."""
    r = measure(sizes.connections, sizes.events, sizes.repeats, sizes.python_events)
    n = count(sizes.connections)
    rows = [
        Row("1", f"seq-aware + flows / flags-only, {n} live",
            f"{r['seq_flows_fraction_of_flags_only']:.3f} ({rate(r['seq_flows_events_per_s'])}"
            f" / {rate(r['fasttcp_expiry_events_per_s'])})",
            r["seq_flows_fraction_of_flags_only"], (">=", 0.60)),
        Row("2", f"flags-only (no expiry) / bare record loop, {n} live",
            f"{r['fraction_of_record_loop']:.3f} ({rate(r['fasttcp_events_per_s'])} / "
            f"{rate(r['record_loop_events_per_s'])})", r["fraction_of_record_loop"],
            (">=", 0.35)),
        Row("2", "bytes per IPv4 connection, flags-only",
            f"{r['fasttcp_bytes_per_connection']:.1f}", r["fasttcp_bytes_per_connection"],
            ("<=", 64)),
    ]
    for key, name in (("ratio", "minimal dict tracker"), ("ratio_reference", "fasttcp.reference")):
        rows.append(Row("3e", f"flags-only (no expiry) {count(sizes.events)}-event batches' "
                              f"rate / {name}'s, {n} live",
                        "not run: " + "; ".join(r["python_skipped"].values())
                        if r[key] is None else f"{r[key]:.1f}x"))
    return rows


def ten_million_rows(sizes: Sizes) -> list[Row]:
    """Figure 1 at `sizes.big_connections`: the two modes alone, one warm-up round."""
    runs = mode_trackers(["flags-only", "sequence-aware + flows"],
                         uniform_workload(sizes.big_connections, sizes.events, seed=0))
    median_rates(runs, 1)
    rates = median_rates(runs, sizes.repeats)
    del runs
    flags, both = rates["flags-only"], rates["sequence-aware + flows"]
    return [Row("1", f"seq-aware + flows / flags-only, {count(sizes.big_connections)} live",
                f"{both / flags:.3f} ({rate(both)} / {rate(flags)})", both / flags,
                (">=", 0.60))]


def capture_rows(sizes: Sizes, workdir: str, peer_python: str) -> list[Row]:
    """Figure 5: ``fasttcp analyze --flows`` as a process against the peers that run here."""
    result = compare_capture.measure(sizes.capture_connections, repeats=sizes.capture_repeats,
                                     workdir=workdir, peer_python=peer_python)
    rates, not_run = result["packets_per_s"], result["not_run"]
    ours = rates["fasttcp analyze --flows (process)"]
    rows = [Row("5", f"the capture: fasttcp generate --connections {sizes.capture_connections}",
                f"{result['packets']:,} packets, {result['bytes'] / 1e6:.0f} MB")]
    for name, peer in rates.items():
        if name.startswith("fasttcp"):
            continue
        target = (">=", 8) if name.startswith("Suricata") else None
        rows.append(Row("5", f"analyze --flows / {name}",
                        f"{ours / peer:.1f}x ({ours / 1e6:.3g} / {peer / 1e6:.3g} M packets/s)",
                        ours / peer, target))
    rows += [Row("5", f"analyze --flows / {name}", f"not run: {why}", None,
                 (">=", 8) if name.startswith("Suricata") else None)
             for name, why in not_run.items()]
    return rows


def placeholder(part: str, sizes: Sizes) -> list[Row]:
    """The rows of a skipped part, so that the table always names every figure."""
    why = f"skipped (--skip {part})"
    return {
        "small": [Row("3a", "flags-only: 1-event call / minimal dict tracker step", why, None,
                      ("<=", 2)),
                  Row("3b", "flags-only: 100-event calls' rate / minimal dict tracker's", why,
                      None, (">=", 10))],
        "startup": [Row("4", f"fasttcp analyze start-up / {BASELINE_COMMIT}'s (wall)", why,
                        None, ("<=", 0.5))],
        "1m": [Row("1", f"seq-aware + flows / flags-only, {count(sizes.connections)} live", why,
                   None, (">=", 0.60)),
               Row("2", f"flags-only (no expiry) / bare record loop, "
                        f"{count(sizes.connections)} live", why, None, (">=", 0.35)),
               Row("2", "bytes per IPv4 connection, flags-only", why, None, ("<=", 64))],
        "10m": [Row("1", f"seq-aware + flows / flags-only, {count(sizes.big_connections)} "
                         f"live", why, None, (">=", 0.60))],
        "capture": [Row("5", "analyze --flows / Suricata 7, no rules, 1 thread (process)", why,
                        None, (">=", 8))],
    }[part]


def header() -> list[str]:
    """The command line, and the date, host, interpreter and code measured."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(os.path.abspath(__file__)),
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return [
        "$ python " + shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}: {cpu}, "
        f"{os.cpu_count()} CPUs, {memory:.0f} GiB; Python {platform.python_version()}, "
        f"numpy {np.__version__}, fasttcp {fasttcp.__version__} at {commit}",
    ]


def table(rows: list[Row]) -> list[str]:
    """The rows as a Markdown table."""
    lines = ["| figure | what | measured | target | met |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        target = "" if row.target is None else f"{row.target[0]} {row.target[1]:g}"
        lines.append(f"| {row.figure} | {row.what} | {row.shown} | {target} | "
                     f"{row.verdict()} |")
    return lines


def parts(value: str) -> set[str]:
    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = names - set(PARTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(sorted(unknown))}; "
                                         f"the parts are {', '.join(PARTS)}")
    return names


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few rounds: a check that every part runs")
    parser.add_argument("--skip", type=parts, default=set(), metavar="PART[,PART...]",
                        help=f"parts not to run: {', '.join(PARTS)}")
    parser.add_argument("--startup-baseline", metavar="PATH",
                        help=f"a checkout of {BASELINE_COMMIT} built in place (see the module "
                             f"docstring); without it figure 4 is not measured")
    parser.add_argument("--workdir", default=compare_capture.WORKDIR,
                        help="where the generated capture is kept between runs")
    parser.add_argument("--peer-python", default=sys.executable,
                        help="the interpreter that runs the Python capture peers")
    args = parser.parse_args(argv)
    if args.startup_baseline and not os.path.isdir(os.path.join(args.startup_baseline,
                                                                 "fasttcp")):
        parser.error(f"--startup-baseline {args.startup_baseline}: no fasttcp package there")
    sizes = QUICK if args.quick else Sizes()
    run: dict[str, Callable[[], list[Row]]] = {
        "small": lambda: small_rows(sizes),
        "startup": lambda: startup_rows(sizes, args.startup_baseline),
        "1m": lambda: one_million_rows(sizes),
        "10m": lambda: ten_million_rows(sizes),
        "capture": lambda: capture_rows(sizes, args.workdir, args.peer_python),
    }
    lines = header()
    rows: dict[str, list[Row]] = {}
    started = time.perf_counter()
    for part in PARTS:
        if part in args.skip:
            rows[part] = placeholder(part, sizes)
            continue
        print(f"[{time.perf_counter() - started:6.0f} s] {part}...", file=sys.stderr, flush=True)
        rows[part] = run[part]()
    print(f"[{time.perf_counter() - started:6.0f} s] done", file=sys.stderr, flush=True)
    order = sorted((row for part in PARTS for row in rows[part]), key=lambda row: row.figure[0])
    print("\n".join(lines + [""] + table(order)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
