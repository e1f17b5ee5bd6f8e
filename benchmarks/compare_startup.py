"""Start-up of ``fasttcp analyze`` on the bundled sample, beside bare Python and numpy's import.

    python benchmarks/compare_startup.py [--rounds 40] [--baseline /path/to/other/checkout]
    python benchmarks/compare_startup.py --rounds 10 -- CAPTURE --flows /tmp/flows.csv

Runs each command as a fresh process, round by round (each round runs every command once, in
turn, so that a change in the host's load reaches all of them alike), and prints the median
wall time and the median CPU time (user + system, from the kernel's accounting of the child)
of each. The analyze commands run as the ``fasttcp`` console script does: the launcher first,
then the package. ``--baseline`` adds the same command on another checkout of fasttcp (its
compiled modules built in place), e.g. the main branch, for a before/after in one run.
Bytecode caches are allowed (PYTHONDONTWRITEBYTECODE is removed), as in an installed package.
Arguments after ``--`` go to ``fasttcp analyze`` instead of the default (the bundled sample),
for whole-process times on a capture of one's own.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Sequence

import fasttcp

LAUNCH = "import sys; from _fasttcp_launcher import main; sys.exit(main())"


def timed(argv: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of one run of `argv`, started in the temporary directory: `-c`
    puts the working directory first on sys.path, where a source tree would shadow the
    package chosen by PYTHONPATH."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                             cwd=tempfile.gettempdir())
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{argv} exited with {child.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(rounds: int = 40, baseline: str | None = None,
            analyze_args: Sequence[str] = ()) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of each command over `rounds` interleaved rounds (after a
    warm-up run of each): bare Python, numpy's import, ``fasttcp analyze`` from this
    checkout (or the installed package this process imports) and, with `baseline`, from that
    checkout."""
    analyze = [sys.executable, "-c", LAUNCH, "analyze", *analyze_args]
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONDONTWRITEBYTECODE", "OPENBLAS_NUM_THREADS")}
    # the fasttcp this process imports: the checkout built in place, or the installed package
    here = os.path.dirname(os.path.dirname(os.path.abspath(fasttcp.__file__)))
    commands = {"python -c pass": ([sys.executable, "-c", "pass"], env),
                "python -c 'import numpy'": ([sys.executable, "-c", "import numpy"], env),
                "fasttcp analyze": (analyze, {**env, "PYTHONPATH": here})}
    if baseline:
        commands["fasttcp analyze (baseline)"] = (
            analyze, {**env, "PYTHONPATH": os.path.abspath(baseline)})
    for argv, command_env in commands.values():      # a warm-up run writes bytecode caches
        timed(argv, command_env)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, (argv, command_env) in commands.items():
            runs[name].append(timed(argv, command_env))
    return {name: (statistics.median(t[0] for t in times), statistics.median(t[1] for t in times))
            for name, times in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--baseline", help="another fasttcp checkout, built in place")
    parser.add_argument("analyze_args", nargs="*", metavar="ANALYZE_ARG",
                        help="arguments for fasttcp analyze (after --)")
    args = parser.parse_args()
    medians = measure(args.rounds, args.baseline, args.analyze_args)
    print(f"medians of {args.rounds} interleaved rounds")
    print(f"{'command':<30}{'wall ms':>10}{'cpu ms':>10}")
    for name, (wall, cpu) in medians.items():
        print(f"{name:<30}{wall * 1e3:>10.1f}{cpu * 1e3:>10.1f}")


if __name__ == "__main__":
    main()
