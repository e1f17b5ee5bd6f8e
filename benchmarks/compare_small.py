"""Small calls: `Tracker.update` with 1 and 100 events against plain-Python trackers, in one
process: interleaved rounds, medians.

    python benchmarks/compare_small.py [--connections 2000] [--events 20000] [--rounds 7]

The events are synthetic traffic (`fasttcp.synth.generate`: handshakes, data, closes, scans)
in time order. Two modes: the default Tracker on the flags-only columns (EVENT_DTYPE rows),
and Tracker(flows=True) on SEGMENT_DTYPE rows (sequence-aware + flows). Each is fed the events
one per call (1-row slices made beforehand) and 100 per call. The baselines take the same
events as Python ints, one per step:

- `DictTracker` below: the minimal tracker a Python user writes by hand, a dict keyed by the
  canonical 4-tuple and a transition dict over (state, event);
- `fasttcp.reference.ReferenceTracker`, the engine's oracle (the same semantics, flows and
  sequence checks with flows=True), fed the whole run in one `update`.

Every round makes fresh trackers and times each contender over all events in turn. Prints the
median ns per event of each, and the ratios: a 1-event call against a baseline's per-event step
(lower is better), and the 100-event batch's rate against a baseline's (higher is better).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

import fasttcp
from fasttcp.reference import ReferenceTracker
from fasttcp.synth import generate

# DictTracker's events, by the flags they carry (RST, then SYN, FIN, ACK), and states.
RST, SYN, SYNACK, FIN, ACK = range(5)
NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSING, CLOSED = range(7)
TRANSITIONS = {
    (NONE, SYN): SYN_SENT, (NONE, ACK): ESTABLISHED,
    (SYN_SENT, SYNACK): SYN_RECV, (SYN_SENT, RST): CLOSED,
    (SYN_RECV, ACK): ESTABLISHED, (SYN_RECV, RST): CLOSED, (SYN_RECV, FIN): FIN_WAIT,
    (ESTABLISHED, FIN): FIN_WAIT, (ESTABLISHED, RST): CLOSED,
    (FIN_WAIT, FIN): CLOSING, (FIN_WAIT, RST): CLOSED, (CLOSING, ACK): CLOSED,
    (CLOSING, RST): CLOSED, (CLOSED, SYN): SYN_SENT,
}


class DictTracker:
    """The minimal connection tracker: state and last time per canonical 4-tuple."""

    def __init__(self) -> None:
        self.conns: dict[tuple, list] = {}

    def step(self, ts: int, src: int, sport: int, dst: int, dport: int, flags: int) -> int:
        key = (src, sport, dst, dport) if (src, sport) <= (dst, dport) else (dst, dport, src,
                                                                              sport)
        event = (RST if flags & 0x04 else (SYNACK if flags & 0x10 else SYN) if flags & 0x02
                 else FIN if flags & 0x01 else ACK)
        conn = self.conns.get(key)
        if conn is None:
            conn = self.conns[key] = [NONE, ts]
        conn[0] = TRANSITIONS.get((conn[0], event), conn[0])
        conn[1] = ts
        return conn[0]


def events_of(segments: np.ndarray) -> np.ndarray:
    """The segments as flags-only EVENT_DTYPE rows."""
    events = np.zeros(len(segments), dtype=fasttcp.EVENT_DTYPE)
    for name in fasttcp.EVENT_DTYPE.names or ():
        events[name] = segments[name]
    return events


def timed(run: Callable[[], object], events: int) -> float:
    """ns per event of one run."""
    start = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - start) / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    segments = np.concatenate(list(generate(args.connections, seed=0)))[: args.events]
    n = len(segments)
    modes = {"default (flags-only)": ({}, events_of(segments), False),
             "flows=True, sequence-aware": ({"flows": True}, segments, True)}
    python = [a.tolist() for a in (segments["ts"], segments["src"], segments["sport"],
                                    segments["dst"], segments["dport"], segments["flags"])]
    steps = list(zip(*python))
    timeouts = fasttcp.Tracker().timeouts       # the reference expires as the Tracker does

    def dict_run() -> None:
        step = DictTracker().step
        for event in steps:
            step(*event)

    contenders: dict[str, Callable[[], object]] = {"dict tracker": dict_run}
    for mode, (options, rows, sequence) in modes.items():
        ones = [rows[i:i + 1] for i in range(n)]
        hundreds = [rows[i:i + 100] for i in range(0, n, 100)]

        def one_run(options: dict = options, ones: list = ones) -> None:
            update = fasttcp.Tracker(**options).update
            for row in ones:
                update(row)

        def hundred_run(options: dict = options, hundreds: list = hundreds) -> None:
            update = fasttcp.Tracker(**options).update
            for batch in hundreds:
                update(batch)

        columns = {name: segments[name] for name in ("ts", "src", "sport", "dst", "dport",
                                                       "flags", "length")}
        if sequence:
            columns.update((name, segments[name]) for name in ("seq", "ack", "window", "wscale"))

        def reference_run(options: dict = options, columns: dict = columns) -> None:
            ReferenceTracker(timeouts=timeouts, **options).update(**columns)

        contenders[f"{mode}: 1-event calls"] = one_run
        contenders[f"{mode}: 100-event calls"] = hundred_run
        contenders[f"{mode}: reference"] = reference_run
    ns: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(args.rounds + 1):          # the first round warms up
        for name, run in contenders.items():
            if round_:
                ns[name].append(timed(run, n))
            else:
                run()
    median = {name: statistics.median(values) for name, values in ns.items()}
    print(f"{n} events ({args.connections} synthetic connections), median of {args.rounds} "
          f"interleaved rounds, numpy {np.__version__}, fasttcp {fasttcp.__version__}")
    for name, value in median.items():
        print(f"  {name:<48} {value:9.0f} ns/event")
    base = median["dict tracker"]
    for mode in modes:
        reference = median[f"{mode}: reference"]
        one, hundred = median[f"{mode}: 1-event calls"], median[f"{mode}: 100-event calls"]
        print(f"{mode}:")
        print(f"  1-event call / dict tracker step        {one / base:6.2f}x  (target <= 2)")
        print(f"  1-event call / reference step           {one / reference:6.2f}x")
        print(f"  100-event rate / dict tracker rate      {base / hundred:6.2f}x  (target >= 10)")
        print(f"  100-event rate / reference rate         {reference / hundred:6.2f}x")


if __name__ == "__main__":
    main()
