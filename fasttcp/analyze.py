"""The main job: captures in, connection states and flow records out.

>>> import fasttcp
>>> result = analyze([fasttcp.SAMPLE_CAPTURE])
>>> result.packets == result.segments + sum(result.skipped.values()) > 0
True
>>> sum(result.conn_states.values()) == result.flows
True
"""
from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from fasttcp._atomic import atomic_output
from fasttcp.capture import SKIP_REASONS, CaptureStats, open_capture
from fasttcp.flows import CONN_STATES, to_csv, to_parquet
from fasttcp.tracker import DEFAULT_CLOCK_CONFIRM, DEFAULT_MAX_CLOCK_JUMP, Tracker

__all__ = ["analyze", "Analysis", "FLOW_FORMATS"]

#: File name endings `analyze` can write flow records to.
FLOW_FORMATS = (".csv", ".parquet")
# With a plot, the tracker's histogram is sampled after every this many segments.
_PLOT_STEP = 2048


@dataclass
class Analysis:
    """What `analyze` saw: the captures' statistics, the live state histogram at the end, and
    the conn_state of every flow (connections the model ended, and those still live)."""

    model: str
    captures: list[CaptureStats]
    packets: int = 0
    segments: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    connections: int = 0          # live at the end
    flows: int = 0                # flow records: ended plus live
    histogram: dict[str, int] = field(default_factory=dict)
    conn_states: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CONN_STATES, 0))
    seconds: float = 0.0
    clock_suspect: int = 0        # segments too far ahead of the clock (see Tracker)
    clock_jumps: int = 0          # jumps of the clock beyond max_clock_jump, once confirmed
    timeline_ts: list[int] = field(default_factory=list)      # with a plot: sample times (ns)
    timeline: list[np.ndarray] = field(default_factory=list)  # and the histogram at each

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without the timeline)."""
        out = {key: value for key, value in asdict(self).items()
               if key not in ("timeline", "timeline_ts", "captures")}
        out["captures"] = [asdict(stats) for stats in self.captures]
        out["histogram"] = {state: n for state, n in self.histogram.items() if n}
        return out


class _FlowSink:
    """Counts flow rows by conn_state and writes them, if asked: CSV rows as they come, to a
    temporary that `outputs` renames into place when it closes without an exception."""

    def __init__(self, path: Optional[str], analysis: Analysis, states: Sequence[str],
                 outputs: ExitStack):
        self.path = path
        self.analysis = analysis
        self.states = states
        self.parts: list[np.ndarray] = []
        self.csv = None
        if path and path.endswith(".csv"):
            self.csv = outputs.enter_context(
                open(outputs.enter_context(atomic_output(path)), "wb"))
            to_csv([], self.csv, states)

    def add(self, flows: np.ndarray) -> None:
        if not len(flows):
            return
        self.analysis.flows += len(flows)
        counts = np.bincount(flows["conn_state"], minlength=len(CONN_STATES))
        for name, count in zip(CONN_STATES, counts.tolist()):
            self.analysis.conn_states[name] += count
        if self.csv is not None:
            to_csv(flows, self.csv, self.states, header=False)
        elif self.path:
            self.parts.append(flows)

    def finish(self) -> None:
        if self.csv is None and self.path:
            to_parquet(self.parts, self.path, self.states)


def analyze(paths: Sequence[str], model: str = "rfc793", flows_path: Optional[str] = None,
            plot: bool = False, strict: bool = True,
            progress: Optional[Callable[[int], None]] = None, clock: str = "events",
            max_clock_jump: Optional[float] = DEFAULT_MAX_CLOCK_JUMP,
            clock_confirm: int = DEFAULT_CLOCK_CONFIRM) -> Analysis:
    """Tracks the TCP connections of captures, read in the order given (one capture may
    continue another's connections), and makes a flow record for every connection.

    Parameters
    ----------
    paths : sequence of str
        pcap / pcapng files, optionally gzip-compressed.
    model : str
        The state model, "rfc793" or "conntrack".
    flows_path : str, optional
        Write flow records there: CSV (``.csv``), or Parquet (``.parquet``, with pandas and
        pyarrow installed). The file appears only when every record is written; an error or
        an interruption leaves none (and an older file there as it was).
    plot : bool
        Sample the state histogram every few thousand segments into ``timeline``.
    strict : bool
        As in `open_capture`: a damaged capture raises, or (False) ends that capture early.
    progress : callable, optional
        Called with the bytes read since the previous call.
    clock, max_clock_jump, clock_confirm
        As `Tracker`'s: by default the capture's own clock expires connections, believing a
        jump of over a minute only when the next segment confirms it; with ``"manual"``
        nothing expires but by a segment of its own connection, and every connection still
        live at the end is written as live.

    Raises
    ------
    CaptureError, OSError
        For a file that is not a readable capture.
    ValueError
        For a flows_path with another ending than FLOW_FORMATS.
    """
    if flows_path and not flows_path.endswith(FLOW_FORMATS):
        raise ValueError(f"flow records are written as {' or '.join(FLOW_FORMATS)}, "
                         f"not {os.path.basename(flows_path)!r}")
    started = time.perf_counter()
    # room for a quarter of a million connections before the first resize: 20 MB
    tracker = Tracker(model, capacity=1 << 18, max_capacity=1 << 28, flows=True, clock=clock,
                      max_clock_jump=max_clock_jump, clock_confirm=clock_confirm)
    analysis = Analysis(model=tracker.model.name, captures=[])
    with ExitStack() as outputs:
        sink = _FlowSink(flows_path, analysis, tracker.model.states, outputs)
        for path in paths:
            with open_capture(path, strict=strict) as capture:
                analysis.captures.append(capture.stats)
                read = 0
                for batch in capture:
                    for segments in (batch.ipv4, batch.ipv6):
                        _track(tracker, segments, analysis if plot else None)
                    for family in (4, 6):
                        sink.add(tracker.pop_flows(family))
                    if progress is not None:
                        progress(capture.stats.bytes_read - read)
                        read = capture.stats.bytes_read
        for family in (4, 6):
            sink.add(tracker.pop_flows(family))
            sink.add(tracker.live_flows(family))
        sink.finish()
    for stats in analysis.captures:
        analysis.packets += stats.packets
        analysis.segments += stats.segments
        for reason, count in stats.skipped.items():
            analysis.skipped[reason] += count
    analysis.connections = len(tracker)
    analysis.histogram = tracker.histogram()
    stats = tracker.stats
    analysis.clock_suspect, analysis.clock_jumps = stats["clock_suspect"], stats["clock_jumps"]
    analysis.seconds = time.perf_counter() - started
    return analysis


def _track(tracker: Tracker, segments: np.ndarray, timeline: Optional[Analysis]) -> None:
    if timeline is None:
        tracker.update(segments)
        return
    for at in range(0, len(segments), _PLOT_STEP):
        piece = segments[at:at + _PLOT_STEP]
        tracker.update(piece)
        timeline.timeline_ts.append(int(piece["ts"][-1]))
        timeline.timeline.append(np.array(list(tracker.histogram().values())))


def plot_timeline(analysis: Analysis, states: Sequence[str], path: str, top: int = 8) -> None:
    """Draws the live connections of the `top` busiest states over capture time into `path`
    (needs matplotlib: ``pip install 'fasttcp[plot]'``)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'fasttcp[plot]'") from None
    figure, axes = plt.subplots(figsize=(9, 4.5))
    if analysis.timeline:
        counts = np.array(analysis.timeline)
        order = np.argsort(counts.max(axis=0))[::-1][:top]
        t0 = analysis.timeline_ts[0]
        seconds = (np.array(analysis.timeline_ts) - t0) / 1e9
        for column in order:
            if counts[:, column].max() > 0:
                axes.step(seconds, counts[:, column], where="post", label=states[column])
        axes.legend(fontsize="small", loc="upper left")
    axes.set_xlabel("capture time (s)")
    axes.set_ylabel("live connections")
    axes.set_title(f"connections per {analysis.model} state")
    figure.tight_layout()
    try:
        with atomic_output(path) as temporary:
            # named, the format is not taken from the temporary's name (nor added to it)
            extension = os.path.splitext(path)[1][1:].lower()
            figure.savefig(temporary, format=extension or matplotlib.rcParams["savefig.format"])
    finally:
        plt.close(figure)

