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
from fasttcp._engine import EventClock
from fasttcp.capture import SKIP_REASONS, CaptureStats, open_capture
from fasttcp.dtypes import EVENT_DTYPE, FLOW_DTYPE, SEGMENT6_DTYPE, SEGMENT_DTYPE
from fasttcp.flows import to_pandas
from fasttcp.tracker import (DEFAULT_CLOCK_CONFIRM, DEFAULT_MAX_CLOCK_JUMP, Tracker,
                             _integer_column, addresses)

__all__ = ["flows_from_captures", "flows_from_events", "flow_partition", "EVENT_COLUMNS",
           "TCPDUMP_FLAGS", "TS_UNITS"]

#: The columns an event table needs (left: fasttcp's name, right: what it holds). Map your
#: table's names onto these with `columns=`.
EVENT_COLUMNS = {
    "ts": "time of the segment since the epoch: integers in ts_unit (default nanoseconds), "
          "floats in ts_unit (which must be given: 's' for tshark's epoch seconds), or "
          "datetime64",
    "src": "sender address: IPv4 / IPv6 text, or an IPv4 integer",
    "sport": "sender port",
    "dst": "receiver address, as src",
    "dport": "receiver port",
    "flags": "TCP flags: the flags byte as an integer or decimal text, text in hex as "
             "tshark writes it ('0x0012'; of its 12 bits the low 8 are used), or tcpdump's "
             "letters ('S.', or 'none')",
    "length": "TCP payload bytes (optional; 0 when absent)",
    "seq, ack, window, wscale": "sequence and acknowledgement numbers, raw window, a SYN's "
                                "window-scale option (optional; with the first three the "
                                "tracking is sequence-aware)",
}
#: tcpdump's flag letters ('.' is ACK, 'W' is CWR); tcpdump writes "none" for no flags.
TCPDUMP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, ".": 0x10, "U": 0x20, "E": 0x40,
                 "W": 0x80}
#: `flows_from_events`' ts_unit values, in nanoseconds.
TS_UNITS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_TSHARK_FLAG_BITS = 0xFFF       # tcp.flags: 8 flags, AE (formerly NS), 3 reserved bits
_INTEGER_COLUMNS = ("sport", "dport", "length", "seq", "ack", "window", "wscale")

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


def _clock_after(state: Optional[dict[str, int]], ts: Any) -> dict[str, int]:
    """The state of the sources' clock (Tracker's rule and defaults) after timestamps `ts`,
    in source order, from `state` (None: a clock that has seen nothing). Parts are tracked in
    time order, where forged timestamps would sit together and confirm each other: they
    expire by this clock instead."""
    clock = EventClock(round(DEFAULT_MAX_CLOCK_JUMP * 1e9), DEFAULT_CLOCK_CONFIRM)
    if state is not None:
        clock.restore(state)
    clock.advance(np.ascontiguousarray(ts, dtype=np.int64))
    return clock.state()


def _read_and_split(path: str, partitions: int, strict: bool) -> dict[Any, Any]:
    """Stage 1: one capture's segments, split by part (IPv4 and IPv6 apart), and the time of
    the capture's clock at its end."""
    pieces: dict[int, list[list[np.ndarray]]] = {4: [], 6: []}
    clock = None
    with open_capture(path, strict=strict) as capture:
        for batch in capture:
            pieces[4].append(_split(batch.ipv4, partitions))
            pieces[6].append(_split(batch.ipv6, partitions))
            for segments in (batch.ipv4, batch.ipv6):
                clock = _clock_after(clock, segments["ts"])
    out: dict[Any, Any] = {"stats": capture.stats}     # and the parts of each family
    for family, dtype in ((4, SEGMENT_DTYPE), (6, SEGMENT6_DTYPE)):
        out[family] = [np.concatenate([split[p] for split in pieces[family]])
                       if pieces[family] else np.zeros(0, dtype=dtype)
                       for p in range(partitions)]
    out["clock"] = 0 if clock is None else clock["now"]
    return out


def _track(pieces: dict[int, list[np.ndarray]], model: str,
           timeouts: Optional[Mapping[str, float]], now: int,
           sequence: bool = True) -> pd.DataFrame:
    """Stage 2: one part's segments from every source, in time order, through a Tracker per
    family (sequence-aware unless the source had no sequence numbers), expiring as it goes by
    the segments' time but never past `now`, the sources' clock at their end. (One tracker
    for both families would expire IPv6 connections by a clock the IPv4 ones had moved.)"""
    frames = []
    for family in (4, 6):
        tracker = Tracker(model, capacity=1 << 12, max_capacity=1 << 28, timeouts=timeouts,
                          flows=True, clock="manual")
        segments = np.concatenate(pieces[family])
        segments = segments[np.argsort(segments["ts"], kind="stable")]
        if not sequence:
            segments = segments[list(EVENT_DTYPE.names or ())]
        for at in range(0, len(segments), _ROWS_PER_UPDATE):
            batch = segments[at:at + _ROWS_PER_UPDATE]
            tracker.update(batch)
            tracker.expire(min(int(batch["ts"][-1]), now))
        tracker.expire(now)
        frames += [to_pandas(flows, tracker.model.states)
                   for flows in (tracker.pop_flows(family), tracker.live_flows(family))]
    return pd.concat(frames, ignore_index=True)


def _meta(model: str) -> pd.DataFrame:
    """An empty frame of flow records: what every part returns, columns and types."""
    return to_pandas(np.zeros(0, dtype=FLOW_DTYPE), Tracker(model).model.states)


def _latest(*clocks: int) -> int:
    return max(clocks) if clocks else 0


def _reads(paths: Sequence[str], partitions: int, strict: bool) -> list:
    return [dask.delayed(_read_and_split, pure=True)(path, partitions, strict) for path in paths]


def _frame(read: list, partitions: int, model: str,
           timeouts: Optional[Mapping[str, float]]) -> dd.DataFrame:
    now = dask.delayed(_latest)(*[dask.delayed(operator.getitem)(r, "clock") for r in read])
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


def _check_event_types(dtypes: Mapping[str, Any], ts_unit: Optional[str]) -> None:
    """The table's column types, checked before any work: a wrong type names its column."""
    if ts_unit is not None and ts_unit not in TS_UNITS:
        raise ValueError(f"ts_unit must be one of {list(TS_UNITS)}, not {ts_unit!r}")
    ts = dtypes["ts"]
    if pd.api.types.is_datetime64_any_dtype(ts):
        if ts_unit is not None:
            raise ValueError("ts is datetime64, which carries its own unit: leave ts_unit out")
    elif pd.api.types.is_float_dtype(ts):
        if ts_unit is None:
            raise ValueError(f"ts holds floats ({ts}): give their unit, ts_unit='s' for epoch "
                             f"seconds as tshark writes them, or 'ms', 'us', 'ns'")
    elif not _is_integer(ts):
        raise TypeError(f"ts must be integers or floats (with ts_unit) or datetime64, not {ts}")
    flags = dtypes["flags"]
    if not (_is_integer(flags) or flags == object or pd.api.types.is_string_dtype(flags)):
        raise TypeError(f"flags must be integers, or text (hex as '0x0012', or tcpdump's "
                        f"letters as 'S.'), not {flags}")
    for name in _INTEGER_COLUMNS:
        if name in dtypes and not _is_integer(dtypes[name]):
            raise TypeError(f"{name} must be integers, not {dtypes[name]} (a CSV column with "
                            f"empty cells reads as floats)")


def _is_integer(dtype: Any) -> bool:
    return pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _ts_nanoseconds(ts: pd.Series, ts_unit: Optional[str]) -> np.ndarray:
    """The ts column as int64 nanoseconds since the epoch."""
    if ts.isna().any():
        raise ValueError("ts has missing values")
    if pd.api.types.is_datetime64_any_dtype(ts.dtype):
        return pd.to_datetime(ts, utc=True).astype("int64").to_numpy()
    scale = TS_UNITS[ts_unit or "ns"]
    limit = np.iinfo(np.int64).max // scale
    if pd.api.types.is_float_dtype(ts.dtype):
        values = ts.to_numpy(dtype=np.float64)
        if not (np.isfinite(values).all() and (values >= 0).all() and (values <= limit).all()):
            raise ValueError(f"ts has values that are not finite {ts_unit} in 0 .. {limit}")
        return np.rint(values * scale).astype(np.int64)
    values = ts.to_numpy()
    if len(values) and (values.min() < 0 or values.max() > limit):
        raise ValueError(f"ts has values outside 0 .. {limit} ({ts_unit or 'ns'})")
    return values.astype(np.int64) * scale


def _flag_byte(value: Any) -> int:
    """One flags cell of a text column: hex ('0x0012'), decimal, or tcpdump's letters."""
    text = str(value).strip()
    try:
        if text[:2].lower() == "0x":
            number = int(text, 16)
            if not 0 <= number <= _TSHARK_FLAG_BITS:
                raise ValueError
            return number & 0xFF
        if text.isdigit():
            number = int(text)
            if number > 0xFF:
                raise ValueError
            return number
        return 0 if text == "none" else sum(TCPDUMP_FLAGS[c] for c in text)
    except (KeyError, ValueError):
        raise ValueError(f"flags value {value!r} is neither a number 0..255, hex up to "
                         f"{_TSHARK_FLAG_BITS:#x} (tshark's tcp.flags), nor tcpdump's letters "
                         f"{''.join(TCPDUMP_FLAGS)}") from None


def _flag_bytes(flags: pd.Series) -> np.ndarray:
    if flags.isna().any():
        raise ValueError("flags has missing values")
    if _is_integer(flags.dtype):
        return flags.to_numpy()
    byte = {value: _flag_byte(value) for value in flags.unique()}   # each distinct text once
    return flags.map(byte).to_numpy(dtype=np.int64)


def _segments_of(frame: pd.DataFrame, ts_unit: Optional[str] = None) -> dict[int, np.ndarray]:
    """An event-table partition as SEGMENT_DTYPE / SEGMENT6_DTYPE arrays, its columns checked
    as `Tracker.update` checks its own (a bad value raises, naming the column)."""
    n = len(frame)
    columns = {"ts": _integer_column("ts", _ts_nanoseconds(frame["ts"], ts_unit),
                                     np.dtype(np.int64), n),
               "flags": _integer_column("flags", _flag_bytes(frame["flags"]),
                                        np.dtype(np.uint8), n)}
    for name in _INTEGER_COLUMNS:
        if name in frame:
            if frame[name].isna().any():
                raise ValueError(f"{name} has missing values")
            columns[name] = _integer_column(name, frame[name].to_numpy(),
                                            SEGMENT_DTYPE[name], n)
    src, dst = frame["src"].astype(str), frame["dst"].astype(str)
    is6 = src.str.contains(":").to_numpy()
    out = {}
    for family, rows, dtype in ((4, ~is6, SEGMENT_DTYPE), (6, is6, SEGMENT6_DTYPE)):
        seg = np.zeros(int(rows.sum()), dtype=dtype)
        seg["src"] = addresses(src[rows].tolist()) if len(seg) else seg["src"]
        seg["dst"] = addresses(dst[rows].tolist()) if len(seg) else seg["dst"]
        seg["wscale"] = -1
        for name, column in columns.items():
            seg[name] = column[rows]
        out[family] = seg
    return out


# An event-table partition once parsed (before the shuffle): numbers only, addresses as two
# uint64 words (an IPv4 address in the low one), so nothing is parsed twice.
_SEGMENT_FIELDS = [name for name in SEGMENT_DTYPE.names or () if name not in ("src", "dst")]
_PARSED_DTYPES = {"v6": "bool", "src_hi": "uint64", "src_lo": "uint64", "dst_hi": "uint64",
                  "dst_lo": "uint64", **{name: SEGMENT_DTYPE[name].str for name in
                                         _SEGMENT_FIELDS}, "_part": "int64"}


def _parsed(frame: pd.DataFrame, partitions: int, ts_unit: Optional[str]) -> pd.DataFrame:
    """The partition's segments in their order, numeric, with the part each belongs to."""
    segments = _segments_of(frame, ts_unit)
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
                      timeouts: Optional[Mapping[str, float]] = None,
                      ts_unit: Optional[str] = None) -> dd.DataFrame:
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
    ts_unit : {"s", "ms", "us", "ns"}, optional
        The unit of a numeric ts column: required for floats (tshark's ``frame.time_epoch``
        is float seconds: ``ts_unit="s"``; float64 holds today's epoch seconds to within
        about 0.2 us); integers default to nanoseconds. Not for a datetime64 column.

    Raises
    ------
    ValueError, TypeError
        Here, for a missing column or a column of the wrong type (floats in ts without
        ts_unit, in a port...); when computed, for a value out of its column's range or
        unreadable (flags text that is neither hex nor tcpdump letters), as `Tracker.update`
        does. Each message names the column.

    Examples
    --------
    tshark's fields (``tshark -T fields -E separator=, -e frame.time_epoch -e ip.src ...``):

    >>> table = pd.DataFrame({"ts": [1329327777.822004, 1329327777.8221],
    ...                       "src": ["10.0.0.1", "10.0.0.2"], "sport": [5000, 80],
    ...                       "dst": ["10.0.0.2", "10.0.0.1"], "dport": [80, 5000],
    ...                       "flags": ["0x0002", "0x0012"]})
    >>> flows = flows_from_events(dd.from_pandas(table, npartitions=1), ts_unit="s")
    >>> row = flows.compute().iloc[0]
    >>> str(row["ts"].round("us")), round(float(row["duration"]), 6), row["history"]
    ('2012-02-15 17:42:57.822004+00:00', 9.6e-05, 'Sh')
    """
    rename = {theirs: ours for ours, theirs in (columns or {}).items()}
    events = events.rename(columns=rename)
    missing = {"ts", "src", "sport", "dst", "dport", "flags"} - set(events.columns)
    if missing:
        raise ValueError(f"the event table lacks {sorted(missing)}; map its columns with "
                         f"columns={{fasttcp name: table name}} (see EVENT_COLUMNS)")
    _check_event_types(dict(events.dtypes.items()), ts_unit)
    partitions = partitions or max(2, events.npartitions)
    sequence = {"seq", "ack", "window"} <= set(events.columns)
    parsed = events.map_partitions(_parsed, partitions, ts_unit, meta=pd.DataFrame(
        {name: pd.Series(dtype=dtype) for name, dtype in _PARSED_DTYPES.items()}))
    shuffled = parsed.shuffle(on="_part", npartitions=partitions)
    clock = None        # the table's clock, in row order, partition after partition
    for part in parsed["ts"].to_delayed():
        clock = dask.delayed(_clock_after)(clock, part)
    now = dask.delayed(operator.itemgetter("now"))(clock) if clock is not None else 0
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
