"""Small calls: `Tracker.update` with 1 and 100 events against plain-Python trackers, in one
process: interleaved rounds, medians.

    python benchmarks/compare_small.py [--connections 2000] [--events 20000] [--rounds 7]

The events are synthetic traffic (`fasttcp.synth.generate`: handshakes, data, closes, scans)
in time order. Two modes: the default Tracker on the flags-only columns (EVENT_DTYPE rows),
and Tracker(flows=True) on SEGMENT_DTYPE rows (sequence-aware + flows). Each is fed the events
one per call (1-row slices made beforehand) and 100 per call. The baselines take the same
events as Python ints, one per step:

- `fasttcp.bench.MinimalTracker`: the minimal tracker a Python user writes by hand (the
  baseline of ``fasttcp bench``), a dict keyed by the canonical 4-tuple, a transition dict
  over (state, direction, event), packet and byte counters and verdict counters, fed one
  `step` per event;
- `fasttcp.reference.ReferenceTracker`, the engine's oracle (the same semantics, flows and
  sequence checks with flows=True), fed the whole run in one `update`.

Every round makes fresh trackers and times each contender over all events in turn. Prints the
median ns per event of each, and the ratios: a 1-event call against a baseline's per-event step
(lower is better), and the 100-event batch's rate against a baseline's (higher is better).
"""
from __future__ import annotations

import argparse
from typing import Callable

import numpy as np

import fasttcp
from fasttcp.bench import MinimalTracker, median_rates
from fasttcp.reference import ReferenceTracker
from fasttcp.synth import generate

DEFAULT_MODE = "default (flags-only)"
#: name -> (Tracker options, sequence-aware)
MODES = {DEFAULT_MODE: ({}, False),
         "flows=True, sequence-aware": ({"flows": True}, True)}
_COLUMNS = ("ts", "src", "sport", "dst", "dport", "flags", "length")
_SEQUENCE_COLUMNS = ("seq", "ack", "window", "wscale")


def events_of(segments: np.ndarray) -> np.ndarray:
    """The segments as flags-only EVENT_DTYPE rows."""
    events = np.zeros(len(segments), dtype=fasttcp.EVENT_DTYPE)
    for name in fasttcp.EVENT_DTYPE.names or ():
        events[name] = segments[name]
    return events


def calls(options: dict, batches: list[np.ndarray]) -> Callable[[], None]:
    """A run that feeds the batches, one `update` call each, to a fresh Tracker(**options)."""
    def run() -> None:
        update = fasttcp.Tracker(**options).update
        for batch in batches:
            update(batch)
    return run


def measure(connections: int = 2000, events: int = 20_000, rounds: int = 7) -> dict:
    """ns per event of each contender (the median of `rounds` interleaved rounds, after one
    warm-up round), and per mode the ratios: ``one_vs_minimal`` and ``one_vs_reference`` (a
    1-event call against a baseline's per-event step, lower is better), ``hundred_vs_minimal``
    and ``hundred_vs_reference`` (the 100-event batch's rate against a baseline's, higher is
    better)."""
    segments = np.concatenate(list(generate(connections, seed=0)))[:events]
    n = len(segments)
    steps = list(zip(*(segments[name].tolist() for name in _COLUMNS)))
    timeouts = fasttcp.Tracker().timeouts       # the reference expires as the Tracker does

    def minimal_run() -> None:
        step = MinimalTracker().step
        for event in steps:
            step(*event)

    runs: dict[str, tuple[Callable[[], object], int]] = {"minimal dict tracker": (minimal_run, n)}
    for mode, (options, sequence) in MODES.items():
        rows = segments if sequence else events_of(segments)
        ones = [rows[i:i + 1] for i in range(n)]
        hundreds = [rows[i:i + 100] for i in range(0, n, 100)]
        columns = {name: segments[name]
                   for name in _COLUMNS + (_SEQUENCE_COLUMNS if sequence else ())}

        def reference_run(options: dict = options, columns: dict = columns) -> None:
            ReferenceTracker(timeouts=timeouts, **options).update(**columns)

        runs[f"{mode}: 1-event calls"] = (calls(options, ones), n)
        runs[f"{mode}: 100-event calls"] = (calls(options, hundreds), n)
        runs[f"{mode}: reference"] = (reference_run, n)
    median_rates(runs, 1)                              # a warm-up round
    ns = {name: 1e9 / rate for name, rate in median_rates(runs, rounds).items()}
    minimal = ns["minimal dict tracker"]
    ratios = {}
    for mode in MODES:
        reference = ns[f"{mode}: reference"]
        one, hundred = ns[f"{mode}: 1-event calls"], ns[f"{mode}: 100-event calls"]
        ratios[mode] = {"one_vs_minimal": one / minimal, "one_vs_reference": one / reference,
                        "hundred_vs_minimal": minimal / hundred,
                        "hundred_vs_reference": reference / hundred}
    return {"events": n, "connections": connections, "rounds": rounds, "ns_per_event": ns,
            "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    result = measure(args.connections, args.events, args.rounds)
    print(f"{result['events']} events ({args.connections} synthetic connections), median of "
          f"{args.rounds} interleaved rounds, numpy {np.__version__}, fasttcp "
          f"{fasttcp.__version__}")
    for name, value in result["ns_per_event"].items():
        print(f"  {name:<48} {value:9.0f} ns/event")
    for mode, ratios in result["ratios"].items():
        # the targets are the default mode's: the minimal tracker checks no sequence numbers
        one, hundred = (("  (target <= 2)", "  (target >= 10)") if mode == DEFAULT_MODE
                        else ("", ""))
        print(f"{mode}:")
        print(f"  1-event call / minimal dict tracker step    {ratios['one_vs_minimal']:6.2f}x"
              f"{one}")
        print(f"  1-event call / reference step               {ratios['one_vs_reference']:6.2f}x")
        print(f"  100-event rate / minimal dict tracker rate  "
              f"{ratios['hundred_vs_minimal']:6.2f}x{hundred}")
        print(f"  100-event rate / reference rate             "
              f"{ratios['hundred_vs_reference']:6.2f}x")


if __name__ == "__main__":
    main()
