"""Flow records: one row per connection, with Zeek's conn.log columns where Zeek has them.

A tracker made with ``flows=True`` keeps, beside each connection, what Zeek's TCP analyzer would
know about it: the history letters in order and both endpoints' Zeek states. Rows come out of
`Tracker.pop_flows` (connections the model ended) and `Tracker.live_flows` (connections alive
now), as numpy structured arrays (FLOW_DTYPE, FLOW6_DTYPE); `to_csv`, `to_pandas` and
`to_parquet` write them out.

>>> import numpy as np, fasttcp
>>> t = fasttcp.Tracker(flows=True)
>>> a, b = fasttcp.addresses(["10.0.0.1", "10.0.0.2"])
>>> syn, synack, ack, rst = 0x02, 0x12, 0x10, 0x04
>>> _ = t.update(np.array([0, 10, 20]), np.array([a, b, a]), np.array([5000, 80, 5000]),
...              np.array([b, a, b]), np.array([80, 5000, 80]), np.array([syn, synack, ack]))
>>> flow = t.live_flows()[0]
>>> flow["history"], CONN_STATES[flow["conn_state"]], t.model.states[flow["state"]]
(np.bytes_(b'ShA'), 'S1', 'ESTABLISHED/ESTABLISHED')

Column meanings follow Zeek's conn.log (zeek/zeek scripts/base/protocols/conn/main.zeek):
``conn_state`` is computed from the endpoints' Zeek states exactly as Zeek's ``conn_state``
function does, and ``history`` uses Zeek's letters (upper case: the originator's). T and W
(retransmission, zero window) appear when the tracker is sequence-aware, once per direction
where Zeek repeats them at the 10th, 100th... time. Other differences: g (content gap) needs a
reassembler and is not produced, a repeated S, F or R is recorded once, and ``orig_bytes`` /
``resp_bytes`` are summed payload lengths where Zeek measures sequence-number spans (equal
unless segments were retransmitted or lost).
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from typing import IO, Any, Iterable, Sequence, Union

import numpy as np

from fasttcp import _engine, _flowcsv
from fasttcp._atomic import atomic_output

__all__ = ["FLOW_DTYPE", "FLOW6_DTYPE", "CONN_STATES", "CONN_STATE_MEANINGS", "ENDED",
           "flow_records", "to_csv", "to_pandas", "to_parquet", "CSV_COLUMNS"]

#: Zeek's conn_state values and their meanings (Zeek's main.zeek, in fasttcp's words), in
#: the order of their codes in a flow row's ``conn_state``.
CONN_STATE_MEANINGS = {
    "S0": "connection attempt seen, no reply",
    "S1": "established, not terminated",
    "SF": "normal establishment and termination",
    "REJ": "connection attempt rejected",
    "S2": "established, close attempt by the originator seen, no reply from the responder",
    "S3": "established, close attempt by the responder seen, no reply from the originator",
    "RSTO": "established, the originator aborted (sent a RST)",
    "RSTR": "responder sent a RST",
    "RSTOS0": "originator sent a SYN followed by a RST, no SYN-ACK from the responder",
    "RSTRH": "responder sent a SYN-ACK followed by a RST, no SYN from the (purported) originator",
    "SH": "originator sent a SYN followed by a FIN, no SYN-ACK from the responder",
    "SHR": "responder sent a SYN-ACK followed by a FIN, no SYN from the originator",
    "OTH": "no SYN seen, just midstream traffic",
}
CONN_STATES = tuple(CONN_STATE_MEANINGS)
if CONN_STATES != _engine.CONN_STATE_NAMES:
    raise ImportError("fasttcp._engine numbers conn_state values differently; rebuild it")
#: Why a flow row was made, by the code in its ``ended`` field: still live when asked for,
#: ended by the model, idle past its state's timeout, dropped to make room.
ENDED = ("live", "closed", "expired", "evicted")
LIVE, CLOSED, EXPIRED, EVICTED = range(len(ENDED))
if (CLOSED, EXPIRED, EVICTED) != (_engine.END_CLOSED, _engine.END_EXPIRED, _engine.END_EVICTED):
    raise ImportError("fasttcp._engine numbers end reasons differently; rebuild it")

_HISTORY_WIDTH = _engine.HISTORY_WIDTH   # '^' and at most 18 letters: 9 kinds per direction


def _flow_fields(address: Any) -> list:
    return [("ts", "<i8"), ("last_ts", "<i8"), ("duration", "<f8"),
            ("orig_h", address), ("orig_p", "<u2"), ("resp_h", address), ("resp_p", "<u2"),
            ("orig_pkts", "<u4"), ("orig_bytes", "<u8"), ("resp_pkts", "<u4"),
            ("resp_bytes", "<u8"), ("state", "u1"), ("conn_state", "u1"),
            ("history", f"S{_HISTORY_WIDTH}"), ("flipped", "?"), ("picked_up", "?"),
            ("illegal", "u1"), ("ended", "u1")]


#: One IPv4 connection. ``ts`` / ``last_ts``: first and last segment (ns); ``duration`` in
#: seconds; addresses as host-order integers; ``state``: the model's final state (a code into
#: ``model.states``); ``conn_state``: a code into CONN_STATES; ``history``: Zeek's letters,
#: ASCII; ``illegal``: illegal segments (saturating at 15); ``ended``: a code into ENDED.
FLOW_DTYPE = np.dtype(_flow_fields("<u4"))
#: One IPv6 connection: as FLOW_DTYPE with 16-byte addresses in network order.
FLOW6_DTYPE = np.dtype(_flow_fields(("u1", (16,))))


def flow_records(records: np.ndarray, flow_states: np.ndarray,
                 ended: Union[int, np.ndarray]) -> np.ndarray:
    """Flow rows (FLOW_DTYPE / FLOW6_DTYPE) from engine records, their flow states, and why
    they ended (one ENDED code, or one per row)."""
    family6 = records.dtype["orig_h"].shape == (16,)
    n = len(records)
    out = np.zeros(n, dtype=FLOW6_DTYPE if family6 else FLOW_DTYPE)
    for name in ("orig_h", "orig_p", "resp_h", "resp_p", "orig_pkts", "orig_bytes",
                 "resp_pkts", "resp_bytes", "last_ts", "state"):
        out[name] = records[name]
    out["ts"] = records["first_ts"]
    out["duration"] = (records["last_ts"] - records["first_ts"]) / 1e9
    status = np.ascontiguousarray(records["status"])
    out["flipped"] = (status & _engine.STATUS_FLIPPED) != 0
    out["picked_up"] = (status & _engine.STATUS_PICKED_UP) != 0
    out["illegal"] = status >> _engine.STATUS_ILLEGAL_SHIFT
    history = np.zeros((n, _HISTORY_WIDTH), dtype=np.uint8)
    conn_state = np.zeros(n, dtype=np.uint8)
    _engine.zeek_columns(np.ascontiguousarray(flow_states).view(np.uint8), status,
                         np.ascontiguousarray(records["orig_bytes"]),
                         np.ascontiguousarray(records["resp_bytes"]), history, conn_state)
    out["history"] = history.view(f"S{_HISTORY_WIDTH}").ravel()
    out["conn_state"] = conn_state
    out["ended"] = ended
    return out


#: The columns `to_csv` writes, in order: Zeek's conn.log names first.
CSV_COLUMNS = ("ts", "orig_h", "orig_p", "resp_h", "resp_p", "duration", "orig_bytes",
               "resp_bytes", "conn_state", "history", "orig_pkts", "resp_pkts", "state",
               "flipped", "picked_up", "illegal", "ended")
_CSV_ROWS_PER_STEP = 1 << 16

FlowArrays = Union[np.ndarray, Iterable[np.ndarray]]


def _arrays(flows: FlowArrays) -> list[np.ndarray]:
    arrays = [flows] if isinstance(flows, np.ndarray) else list(flows)
    for array in arrays:
        if array.dtype not in (FLOW_DTYPE, FLOW6_DTYPE):
            raise TypeError(f"flow rows must be FLOW_DTYPE or FLOW6_DTYPE arrays, "
                            f"not {array.dtype}")
    return arrays


def _check_codes(array: np.ndarray, states: Sequence[str]) -> None:
    for name, limit in (("state", len(states)), ("conn_state", len(CONN_STATES)),
                        ("ended", len(ENDED))):
        if len(array) and int(array[name].max()) >= limit:
            raise ValueError(f"flow rows hold {name} code {int(array[name].max())}, "
                             f"beyond the {limit} names given")


def to_csv(flows: FlowArrays, target: Union[str, os.PathLike, IO[str]], states: Sequence[str],
           header: bool = True) -> int:
    """Writes flow rows (one array, or several of either family) as CSV; returns the rows.

    Parameters
    ----------
    flows : FLOW_DTYPE / FLOW6_DTYPE array, or an iterable of them
    target : path or open text file
        A path is written whole or not at all: to a temporary beside it, renamed into place
        when every row is written (see `fasttcp._atomic`).
    states : sequence of str
        The model's state names (``tracker.model.states``), for the ``state`` column.
    header : bool
        Write the CSV_COLUMNS line first.

    Addresses are written as text, ``ts`` and ``duration`` as exact seconds with nine
    decimals, booleans as T/F (Zeek's convention), codes as their names.
    """
    arrays = _arrays(flows)
    names = [name.encode() for name in (*CONN_STATES, *states, *ENDED)]
    width = max(len(name) for name in names)
    table = np.zeros((len(names), width), dtype=np.uint8)
    for i, name in enumerate(names):
        table[i, :len(name)] = np.frombuffer(name, dtype=np.uint8)
    lengths = np.array([len(name) for name in names], dtype=np.intp)
    bases = (0, len(CONN_STATES), len(CONN_STATES) + len(states))
    with ExitStack() as opened:
        if isinstance(target, (str, os.PathLike)):
            # closed, then renamed into place, only once every row is written
            stream: IO[str] = opened.enter_context(
                open(opened.enter_context(atomic_output(target)), "w", newline=""))
        else:
            stream = target
        if header:
            stream.write(",".join(CSV_COLUMNS) + "\n")
        buffer = np.empty(_CSV_ROWS_PER_STEP * (_flowcsv.MAX_ROW_BYTES + width), np.uint8)
        rows = 0
        for array in arrays:
            _check_codes(array, states)
            for at in range(0, len(array), _CSV_ROWS_PER_STEP):
                part = array[at:at + _CSV_ROWS_PER_STEP]
                column = {name: np.ascontiguousarray(part[name]) for name in CSV_COLUMNS
                          if name != "duration"}
                column["last_ts"] = np.ascontiguousarray(part["last_ts"])
                size = _flowcsv.format_rows(
                    column["ts"], column["last_ts"], column["orig_h"], column["resp_h"],
                    column["orig_p"], column["resp_p"], column["orig_bytes"],
                    column["resp_bytes"], column["conn_state"],
                    column["history"].view(np.uint8).reshape(len(part), -1),
                    column["orig_pkts"], column["resp_pkts"], column["state"],
                    column["flipped"].view(np.uint8), column["picked_up"].view(np.uint8),
                    column["illegal"], column["ended"], table, lengths, *bases, buffer)
                stream.write(buffer[:size].tobytes().decode("ascii"))
                rows += len(part)
    return rows


def _address_text(column: np.ndarray) -> list[str]:
    return _flowcsv.address_strings(np.ascontiguousarray(column))


def to_pandas(flows: FlowArrays, states: Sequence[str]) -> Any:
    """A pandas DataFrame of flow rows (needs ``pip install 'fasttcp[pandas]'``).

    Addresses become text, ``ts`` a UTC datetime, ``state`` / ``conn_state`` / ``ended``
    categoricals of their names, ``history`` text; `states` as in `to_csv`.
    """
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_pandas needs pandas: pip install 'fasttcp[pandas]'") from None
    frames = []
    for array in _arrays(flows):
        _check_codes(array, states)
        data: dict[str, Any] = {name: array[name] for name in CSV_COLUMNS
                                if name in (array.dtype.names or ())}
        # text columns stay text even when empty (what Dask's metadata needs)
        data["orig_h"] = pd.Series(_address_text(array["orig_h"]), dtype=str)
        data["resp_h"] = pd.Series(_address_text(array["resp_h"]), dtype=str)
        data["ts"] = pd.to_datetime(array["ts"], unit="ns", utc=True)
        data["duration"] = array["duration"]
        data["history"] = pd.Series(np.char.decode(array["history"], "ascii"), dtype=str)
        for name, names in (("state", states), ("conn_state", CONN_STATES), ("ended", ENDED)):
            data[name] = pd.Categorical.from_codes(array[name], categories=list(names))
        frames.append(pd.DataFrame(data, columns=list(CSV_COLUMNS)))
    if not frames:
        return pd.DataFrame(columns=list(CSV_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def to_parquet(flows: FlowArrays, path: Union[str, os.PathLike], states: Sequence[str]) -> int:
    """Writes flow rows to a Parquet file (needs ``pip install 'fasttcp[pandas]'``, which
    brings pyarrow), whole or not at all as `to_csv` does; returns the rows. `states` as in
    `to_csv`."""
    frame = to_pandas(flows, states)
    try:
        with atomic_output(path) as temporary:
            frame.to_parquet(temporary, index=False)
    except ImportError:
        raise ImportError("to_parquet needs pyarrow: pip install 'fasttcp[pandas]'") from None
    return len(frame)
