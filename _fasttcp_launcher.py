"""The ``fasttcp`` command's entry point (`main`), kept outside the fasttcp package.

Importing the package loads numpy and the compiled tracker, a good part of a second on a busy
machine; this module is imported first, stdlib only, so that a Ctrl-C or SIGTERM that arrives
during those imports ends as quietly as one that arrives later. Both signals raise
KeyboardInterrupt (SIGTERM as its subclass `Terminated`) in the main thread, so the same
clean-up runs for either: output files are written to temporaries that an exception removes
(``fasttcp._atomic``). A second signal during the clean-up ends the process at once.
"""
from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

__all__ = ["main", "Terminated", "interrupts_raise"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C's KeyboardInterrupt is."""


# the signals received in `interrupts_raise`: an interruption can surface as another exception
# (numpy's import turns whatever stops it into an ImportError), or none, when C code clears it
_received: list[int] = []


def _raise(signum: int, frame: object) -> None:
    _received.append(signum)
    for number in _SIGNALS:
        signal.signal(number, signal.SIG_DFL)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt / `Terminated` within the block; the
    handlers before it come back after it."""
    _received.clear()
    before = [signal.signal(number, _raise) for number in _SIGNALS]
    try:
        yield
    finally:
        for number, handler in zip(_SIGNALS, before):
            signal.signal(number, handler)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs ``fasttcp.cli.main``; an interruption, even during its imports, exits with 130
    (SIGINT) or 143 (SIGTERM) and one line on stderr."""
    # numpy's OpenBLAS starts a thread per core when it loads, and they spin for a while on a
    # core the command's own work needs; no command uses BLAS. A user's own setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        with interrupts_raise():
            from fasttcp.cli import main as run
            status = run(argv)
    except BaseException as error:
        if not (_received or isinstance(error, KeyboardInterrupt)):
            raise
    else:
        if not _received:
            return status
    signum = _received[0] if _received else signal.SIGINT
    print(f"fasttcp: {'terminated' if signum == signal.SIGTERM else 'interrupted'}",
          file=sys.stderr)
    return 128 + signum
