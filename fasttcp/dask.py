"""Flow records from many captures or event tables, on Dask (``pip install "fasttcp[dask]"``).

Two stages, a shuffle between them:

1. One task per capture file reads it (`open_capture`) and splits its TCP segments into
   `partitions` parts by a symmetric hash of the connection's endpoints, so both directions of
   a connection land in the same part.
2. One task per part gathers its pieces from every file, in the order the files were given
   (captures rotated in time order), sorts them by timestamp (stable), and runs one Tracker
   over them. It returns the part's flow records as a pandas DataFrame.

Every connection is tracked by one task, on one worker, in time order, so the records are those
of one Tracker over the whole input. Before the live connections are listed, each task expires
by the input's latest timestamp (the clock a single process would have reached).

>>> import fasttcp, fasttcp.dask
>>> flows = fasttcp.dask.flows_from_captures([fasttcp.SAMPLE_CAPTURE], partitions=2)
>>> int(flows["orig_pkts"].sum().compute() + flows["resp_pkts"].sum().compute())
3232

Event tables from other tools work the same way (`flows_from_events`): a Dask DataFrame with
one row per TCP segment is shuffled by the same hash, each partition sorted and tracked.
"""
from __future__ import annotations

import operator
from contextlib import ExitStack
from typing import Any, Mapping, Optional, Sequence

import numpy as np

try:
    import dask
    import dask.dataframe as dd
    import pandas as pd
except ImportError:                                          # pragma: no cover
    raise ImportError("fasttcp.dask needs dask: pip install 'fasttcp[dask]'") from None

from fasttcp._atomic import atomic_output
from fasttcp.capture import SKIP_REASONS, CaptureStats, open_capture
from fasttcp.flows import FLOW_DTYPE, to_pandas
from fasttcp.tracker import EVENT_DTYPE, SEGMENT6_DTYPE, SEGMENT_DTYPE, Tracker, addresses

__all__ = ["flows_from_captures", "flows_from_events", "flow_partition", "EVENT_COLUMNS",
           "TCPDUMP_FLAGS"]

#: The columns an event table needs (left: fasttcp's name, right: what it holds). Map your
#: table's names onto these with `columns=`.
EVENT_COLUMNS = {
    "ts": "time of the segment: integer nanoseconds since the epoch, or datetime64",
    "src": "sender address: IPv4 / IPv6 text, or an IPv4 integer",
    "sport": "sender port",
    "dst": "receiver address, as src",
    "dport": "receiver port",
    "flags": "TCP flags: the flags byte as an integer, or tcpdump's letters (for example 'S.')",
    "length": "TCP payload bytes (optional; 0 when absent)",
    "seq, ack, window, wscale": "sequence and acknowledgement numbers, raw window, a SYN's "
                                "window-scale option (optional; with the first three the "
                                "tracking is sequence-aware)",
}
#: tcpdump's flag letters ('.' is ACK, 'W' is CWR).
TCPDUMP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, ".": 0x10, "U": 0x20, "E": 0x40,
                 "W": 0x80}

_MIX = np.uint64(0x9E3779B97F4A7C15)
_ROWS_PER_UPDATE = 1 << 16


def _endpoint_digest(address: np.ndarray, port: np.ndarray) -> np.ndarray:
    """A 64-bit digest of (address, port): IPv4 integers or (n, 16) IPv6 bytes."""
    if address.ndim == 2:
        words = np.ascontiguousarray(address).view(np.uint64)
        key = words[:, 0] * _MIX ^ words[:, 1]
    else:
        key = address.astype(np.uint64)
    return (key << np.uint64(16)) ^ port.astype(np.uint64)


def flow_partition(segments: np.ndarray, partitions: int) -> np.ndarray:
    """The part (0 .. partitions-1) of each segment: the same for both directions.

    >>> seg = np.zeros(2, dtype=SEGMENT_DTYPE)
    >>> seg["src"], seg["sport"], seg["dst"], seg["dport"] = [1, 2], [10, 20], [2, 1], [20, 10]
    >>> part = flow_partition(seg, 8)
    >>> bool(part[0] == part[1])
    True
    """
    a = _endpoint_digest(segments["src"], segments["sport"])
    b = _endpoint_digest(segments["dst"], segments["dport"])
    low, high = np.minimum(a, b), np.maximum(a, b)
    with np.errstate(over="ignore"):
        mixed = (low * _MIX) ^ (high + (high >> np.uint64(29))) * _MIX
    return ((mixed >> np.uint64(32)) % np.uint64(partitions)).astype(np.intp)


def _split(segments: np.ndarray, partitions: int) -> list[np.ndarray]:
    part = flow_partition(segments, partitions)
    order = np.argsort(part, kind="stable")
    edges = np.searchsorted(part[order], np.arange(partitions + 1))
    return [segments[order[edges[p]:edges[p + 1]]] for p in range(partitions)]


def _read_and_split(path: str, partitions: int, strict: bool) -> dict[Any, Any]:
    """Stage 1: one capture's segments, split by part (IPv4 and IPv6 apart)."""
    pieces: dict[int, list[list[np.ndarray]]] = {4: [], 6: []}
    with open_capture(path, strict=strict) as capture:
        for batch in capture:
            pieces[4].append(_split(batch.ipv4, partitions))
            pieces[6].append(_split(batch.ipv6, partitions))
    out: dict[Any, Any] = {"stats": capture.stats}     # and the parts of each family
    for family, dtype in ((4, SEGMENT_DTYPE), (6, SEGMENT6_DTYPE)):
        out[family] = [np.concatenate([split[p] for split in pieces[family]])
                       if pieces[family] else np.zeros(0, dtype=dtype)
                       for p in range(partitions)]
    ts = [a["ts"].max() for family in (4, 6) for a in out[family] if len(a)]
    out["max_ts"] = int(max(ts)) if ts else 0
    return out


def _track(pieces: dict[int, list[np.ndarray]], model: str,
           timeouts: Optional[Mapping[str, float]], now: int,
           sequence: bool = True) -> pd.DataFrame:
    """Stage 2: one part's segments from every source, in time order, through one Tracker
    (sequence-aware unless the source had no sequence numbers)."""
    tracker = Tracker(model, capacity=1 << 12, max_capacity=1 << 28, timeouts=timeouts,
                      flows=True)
    for family in (4, 6):
        segments = np.concatenate(pieces[family])
        segments = segments[np.argsort(segments["ts"], kind="stable")]
        if not sequence:
            segments = segments[list(EVENT_DTYPE.names or ())]
        for at in range(0, len(segments), _ROWS_PER_UPDATE):
            tracker.update(segments[at:at + _ROWS_PER_UPDATE])
    tracker.expire(now)
    frames = [to_pandas(flows, tracker.model.states) for family in (4, 6)
              for flows in (tracker.pop_flows(family), tracker.live_flows(family))]
    return pd.concat(frames, ignore_index=True)


def _meta(model: str) -> pd.DataFrame:
    """An empty frame of flow records: what every part returns, columns and types."""
    return to_pandas(np.zeros(0, dtype=FLOW_DTYPE), Tracker(model).model.states)


def _max_ts(*values: int) -> int:
    return max(values) if values else 0


def _reads(paths: Sequence[str], partitions: int, strict: bool) -> list:
    return [dask.delayed(_read_and_split, pure=True)(path, partitions, strict) for path in paths]


def _frame(read: list, partitions: int, model: str,
           timeouts: Optional[Mapping[str, float]]) -> dd.DataFrame:
    now = dask.delayed(_max_ts)(*[dask.delayed(operator.getitem)(r, "max_ts") for r in read])
    parts = [dask.delayed(_track)({family: [dask.delayed(_piece)(r, family, p) for r in read]
                                   for family in (4, 6)}, model, timeouts, now)
             for p in range(partitions)]
    return dd.from_delayed(parts, meta=_meta(model), verify_meta=False)


def _piece(read: dict, family: int, part: int) -> np.ndarray:
    return read[family][part]


def flows_from_captures(paths: Sequence[str], partitions: Optional[int] = None,
                        model: str = "rfc793", timeouts: Optional[Mapping[str, float]] = None,
                        strict: bool = True) -> dd.DataFrame:
    """A Dask DataFrame of the flow records of captures (see the module docstring).

    Parameters
    ----------
    paths : sequence of str
        pcap / pcapng files, optionally gzip-compressed, in time order: one capture rotated
        into several files gives the records of the whole.
    partitions : int, optional
        Parts the connections are hashed into, each tracked by one task; default: the number
        of files, at least 2.
    model, timeouts : as for Tracker
    strict : bool
        As for `open_capture`.

    Returns
    -------
    dask.dataframe.DataFrame
        Columns of `fasttcp.flows.CSV_COLUMNS` (as `to_pandas` makes them); one partition
        per part.
    """
    if not paths:
        raise ValueError("no capture to read")
    partitions = partitions or max(2, len(paths))
    return _frame(_reads(paths, partitions, strict), partitions, model, timeouts)


def _segments_of(frame: pd.DataFrame) -> dict[int, np.ndarray]:
    """An event-table partition as SEGMENT_DTYPE / SEGMENT6_DTYPE arrays."""
    ts = frame["ts"]
    if pd.api.types.is_datetime64_any_dtype(ts.dtype):
        ts = pd.to_datetime(ts, utc=True).astype("int64")
    flags = frame["flags"]
    if flags.dtype == object or pd.api.types.is_string_dtype(flags):
        flags = flags.map(lambda text: sum(TCPDUMP_FLAGS[c] for c in str(text)))
    length = frame["length"] if "length" in frame else pd.Series(0, index=frame.index)
    src, dst = frame["src"].astype(str), frame["dst"].astype(str)
    is6 = src.str.contains(":").to_numpy()
    out = {}
    for family, rows, dtype in ((4, ~is6, SEGMENT_DTYPE), (6, is6, SEGMENT6_DTYPE)):
        seg = np.zeros(int(rows.sum()), dtype=dtype)
        seg["ts"] = ts.to_numpy()[rows]
        seg["src"] = addresses(src[rows].tolist()) if len(seg) else seg["src"]
        seg["dst"] = addresses(dst[rows].tolist()) if len(seg) else seg["dst"]
        seg["sport"] = frame["sport"].to_numpy()[rows]
        seg["dport"] = frame["dport"].to_numpy()[rows]
        seg["flags"] = np.asarray(flags)[rows]
        seg["length"] = np.asarray(length)[rows]
        seg["wscale"] = -1
        for name in ("seq", "ack", "window", "wscale"):
            if name in frame:
                seg[name] = frame[name].to_numpy()[rows]
        out[family] = seg
    return out


# An event-table partition once parsed (before the shuffle): numbers only, addresses as two
# uint64 words (an IPv4 address in the low one), so nothing is parsed twice.
_SEGMENT_FIELDS = [name for name in SEGMENT_DTYPE.names or () if name not in ("src", "dst")]
_PARSED_DTYPES = {"v6": "bool", "src_hi": "uint64", "src_lo": "uint64", "dst_hi": "uint64",
                  "dst_lo": "uint64", **{name: SEGMENT_DTYPE[name].str for name in
                                         _SEGMENT_FIELDS}, "_part": "int64"}


def _parsed(frame: pd.DataFrame, partitions: int) -> pd.DataFrame:
    """The partition's segments in their order, numeric, with the part each belongs to."""
    segments = _segments_of(frame)
    is6 = frame["src"].astype(str).str.contains(":").to_numpy()
    out = pd.DataFrame({name: np.zeros(len(frame), dtype=dtype)
                        for name, dtype in _PARSED_DTYPES.items()}, index=frame.index)
    out["v6"] = is6
    for family, rows in ((4, ~is6), (6, is6)):
        seg = segments[family]
        if not len(seg):
            continue
        for end in ("src", "dst"):
            if family == 4:
                out.loc[rows, f"{end}_lo"] = seg[end].astype(np.uint64)
            else:
                words = np.ascontiguousarray(seg[end]).view(np.uint64)
                out.loc[rows, f"{end}_hi"], out.loc[rows, f"{end}_lo"] = words[:, 0], words[:, 1]
        for name in _SEGMENT_FIELDS:
            out.loc[rows, name] = seg[name]
        out.loc[rows, "_part"] = flow_partition(seg, partitions)
    return out


def _segments_of_parsed(frame: pd.DataFrame) -> dict[int, np.ndarray]:
    """SEGMENT_DTYPE / SEGMENT6_DTYPE arrays back from a parsed partition."""
    is6 = frame["v6"].to_numpy()
    out = {}
    for family, rows, dtype in ((4, ~is6, SEGMENT_DTYPE), (6, is6, SEGMENT6_DTYPE)):
        seg = np.zeros(int(rows.sum()), dtype=dtype)
        for end in ("src", "dst"):
            if family == 4:
                seg[end] = frame[f"{end}_lo"].to_numpy()[rows]
            else:
                words = np.stack([frame[f"{end}_hi"].to_numpy()[rows],
                                  frame[f"{end}_lo"].to_numpy()[rows]], axis=1)
                seg[end] = words.view(np.uint8)
        for name in _SEGMENT_FIELDS:
            seg[name] = frame[name].to_numpy()[rows]
        out[family] = seg
    return out


def flows_from_events(events: dd.DataFrame, columns: Optional[Mapping[str, str]] = None,
                      partitions: Optional[int] = None, model: str = "rfc793",
                      timeouts: Optional[Mapping[str, float]] = None) -> dd.DataFrame:
    """A Dask DataFrame of the flow records of an event table (one row per TCP segment).

    Parameters
    ----------
    events : dask.dataframe.DataFrame
        For example ``dd.read_parquet(...)`` or ``dd.read_csv(...)`` of a flow log.
    columns : mapping, optional
        fasttcp's column name -> the table's (EVENT_COLUMNS lists what each holds).
    partitions : int, optional
        Default: the table's number of partitions, at least 2.
    model, timeouts : as for Tracker
    """
    rename = {theirs: ours for ours, theirs in (columns or {}).items()}
    events = events.rename(columns=rename)
    missing = {"ts", "src", "sport", "dst", "dport", "flags"} - set(events.columns)
    if missing:
        raise ValueError(f"the event table lacks {sorted(missing)}; map its columns with "
                         f"columns={{fasttcp name: table name}} (see EVENT_COLUMNS)")
    partitions = partitions or max(2, events.npartitions)
    sequence = {"seq", "ack", "window"} <= set(events.columns)
    parsed = events.map_partitions(_parsed, partitions, meta=pd.DataFrame(
        {name: pd.Series(dtype=dtype) for name, dtype in _PARSED_DTYPES.items()}))
    shuffled = parsed.shuffle(on="_part", npartitions=partitions)
    now = parsed["ts"].max()
    meta = _meta(model)

    def track(frame: pd.DataFrame, now: Any) -> pd.DataFrame:
        if not len(frame):
            return meta
        return _track({f: [a] for f, a in _segments_of_parsed(frame).items()}, model,
                      timeouts, int(now), sequence)

    return shuffled.map_partitions(track, now, meta=meta, align_dataframes=False)


def summary(flows: pd.DataFrame) -> dict[str, Any]:
    """conn_state counts and the live connections per state of computed flow records."""
    live = flows[flows["ended"] == "live"]
    return {"flows": len(flows),
            "conn_states": {str(k): int(v) for k, v in
                            flows["conn_state"].value_counts().items() if v},
            "histogram": {str(k): int(v) for k, v in live["state"].value_counts().items() if v},
            "connections": len(live)}


def capture_totals(stats: Sequence[CaptureStats]) -> dict[str, Any]:
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    for s in stats:
        for reason, count in s.skipped.items():
            skipped[reason] += count
    return {"packets": sum(s.packets for s in stats),
            "segments": sum(s.segments for s in stats), "skipped": skipped}



def analyze(paths: Sequence[str], model: str = "rfc793", flows_path: Optional[str] = None,
            partitions: Optional[int] = None, strict: bool = True) -> Any:
    """`fasttcp.analyze.analyze` on Dask, with the current client (``distributed.Client``):
    the same Analysis, flow records written as a Parquet dataset (a directory) if asked,
    whole or not at all: an existing non-empty directory there is an error."""
    import time

    from fasttcp.analyze import Analysis

    started = time.perf_counter()
    partitions = partitions or max(2, len(paths))
    with ExitStack() as outputs:
        # made first, so a directory in the way is reported before any work
        temporary = (outputs.enter_context(atomic_output(flows_path, directory=True))
                     if flows_path else None)
        read = dask.persist(*_reads(paths, partitions, strict))      # each file is read once
        frame = _frame(list(read), partitions, model, None).persist()
        if temporary:
            frame.to_parquet(temporary)
        columns = frame[["conn_state", "state", "ended"]].compute()
        stats = dask.compute(*[dask.delayed(operator.getitem)(r, "stats") for r in read])
    figures = summary(columns)
    totals = capture_totals(stats)
    states = Tracker(model).model.states
    result = Analysis(model=model, captures=list(stats), packets=totals["packets"],
                      segments=totals["segments"], skipped=totals["skipped"],
                      connections=figures["connections"], flows=figures["flows"])
    result.histogram = {state: figures["histogram"].get(state, 0) for state in states}
    result.conn_states.update(figures["conn_states"])
    result.seconds = time.perf_counter() - started
    return result
