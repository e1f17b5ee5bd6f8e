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
>>> str(flow["history"]), str(flow["conn_state"]), str(flow["state"])
('ShA', 'S1', 'ESTABLISHED/ESTABLISHED')

Column meanings follow Zeek's conn.log (zeek/zeek scripts/base/protocols/conn/main.zeek):
``conn_state`` is computed from the endpoints' Zeek states exactly as Zeek's ``conn_state``
function does, and ``history`` uses Zeek's letters (upper case: the originator's). Differences,
all because fasttcp does not (yet) look at sequence numbers: the letters t, w, g (retransmission,
zero window, content gap) are not produced, a repeated S, F or R is recorded once, and
``orig_bytes`` / ``resp_bytes`` are summed payload lengths where Zeek measures sequence-number
spans (equal unless segments were retransmitted or lost).
"""
from __future__ import annotations

import csv
import ipaddress
import re
from typing import IO, Any, Iterable, Union

import numpy as np

from fasttcp import _engine

__all__ = ["FLOW_DTYPE", "FLOW6_DTYPE", "CONN_STATES", "CONN_STATE_MEANINGS", "flow_records",
           "conn_states", "histories", "to_csv", "to_pandas", "to_parquet", "CSV_COLUMNS"]

#: Zeek's conn_state values and their meanings (Zeek's main.zeek, in fasttcp's words).
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

# Zeek endpoint state codes, as the engine keeps them (low nibble of orig_zeek / resp_zeek).
(_INACTIVE, _SYN_SENT, _SYN_ACK_SENT, _PARTIAL, _ESTABLISHED, _CLOSED,
 _RESET) = range(len(_engine.ZEEK_STATES))

_STATE_WIDTH = 24       # fits every built-in model's state names ("ESTABLISHED/ESTABLISHED")
_HISTORY_WIDTH = 15     # '^' and at most 14 letters: each of 7 kinds once per direction


def _flow_fields(address: Any) -> list:
    return [("ts", "<i8"), ("last_ts", "<i8"), ("duration", "<f8"),
            ("orig_h", address), ("orig_p", "<u2"), ("resp_h", address), ("resp_p", "<u2"),
            ("orig_pkts", "<u4"), ("orig_bytes", "<u8"), ("resp_pkts", "<u4"),
            ("resp_bytes", "<u8"), ("state", f"<U{_STATE_WIDTH}"), ("conn_state", "<U6"),
            ("history", f"<U{_HISTORY_WIDTH}"), ("flipped", "?"), ("picked_up", "?"),
            ("illegal", "u1"), ("ended", "<U6")]


#: One IPv4 connection. ``ts`` / ``last_ts``: first and last segment (ns); ``duration`` in
#: seconds; addresses as host-order integers; ``state``: the model's final state;
#: ``ended``: "closed" (the model ended it) or "live" (still open when the row was made).
FLOW_DTYPE = np.dtype(_flow_fields("<u4"))
#: One IPv6 connection: as FLOW_DTYPE with 16-byte addresses in network order.
FLOW6_DTYPE = np.dtype(_flow_fields(("u1", (16,))))

_LETTERS = np.frombuffer("".join(letter + letter.lower() for letter in
                                 _engine.HISTORY_LETTERS).encode(), dtype=np.uint8)
_RSTOS0 = re.compile(r"\^?S[^HAFGIQ]*R.*")


def histories(history: np.ndarray, seen: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """Zeek history strings from the engine's packed letters (FLOW_STATE_DTYPE fields).

    >>> histories(np.array([0x10]), np.array([0x0101]), np.array([True]))  # S, then s
    array(['^Ss'], dtype='<U15')
    """
    n = len(history)
    count = np.zeros(n, dtype=np.int64)
    bits = seen.astype(np.int64)
    while bits.any():                       # popcount: one letter per seen bit
        count += bits & 1
        bits >>= 1
    shifts = (4 * np.arange(_HISTORY_WIDTH - 1, dtype=np.uint64))
    codes = (history.astype(np.uint64)[:, None] >> shifts) & np.uint64(0xF)
    letters = _LETTERS[codes.astype(np.intp)]
    letters[np.arange(_HISTORY_WIDTH - 1) >= count[:, None]] = 0
    out = np.zeros((n, _HISTORY_WIDTH), dtype=np.uint8)
    offset = flipped.astype(np.intp)
    out[offset == 1, 0] = ord("^")
    rows = np.arange(n)[:, None]
    out[rows, np.arange(_HISTORY_WIDTH - 1) + offset[:, None]] = letters
    return out.view(f"S{_HISTORY_WIDTH}").ravel().astype(f"U{_HISTORY_WIDTH}")


def conn_states(orig_zeek: np.ndarray, resp_zeek: np.ndarray, orig_bytes: np.ndarray,
                resp_bytes: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Zeek's conn_state for each connection, from the endpoints' Zeek states.

    The rules, first match wins, as in Zeek's ``conn_state`` function. REJ for two reset
    endpoints asks for no data in either direction (Zeek: sequence-number sizes of 0).
    """
    o = orig_zeek & 0x0F
    r = resp_zeek & 0x0F
    o_inactive = (o == _INACTIVE) | (o == _PARTIAL)
    r_inactive = (r == _INACTIVE) | (r == _PARTIAL)
    o_reset, r_reset = o == _RESET, r == _RESET
    o_closed, r_closed = o == _CLOSED, r == _CLOSED
    rstos0 = np.zeros(len(o), dtype=bool)
    for i in np.flatnonzero(o_reset & ~r_reset & r_inactive):
        rstos0[i] = _RSTOS0.fullmatch(str(history[i])) is not None
    rules = [
        (r_reset & ((o == _SYN_SENT) | (o == _SYN_ACK_SENT)
                    | (o_reset & (orig_bytes == 0) & (resp_bytes == 0))), "REJ"),
        (r_reset & o_inactive, "RSTRH"),
        (r_reset, "RSTR"),
        (o_reset & r_inactive & rstos0, "RSTOS0"),
        (o_reset & r_inactive, "OTH"),
        (o_reset, "RSTO"),
        (o_closed & r_closed, "SF"),
        (o_closed & r_inactive, "SH"),
        (o_closed, "S2"),
        (r_closed & o_inactive, "SHR"),
        (r_closed, "S3"),
        ((o == _SYN_SENT) & (r == _INACTIVE), "S0"),
        ((o == _ESTABLISHED) & (r == _ESTABLISHED), "S1"),
    ]
    return np.select([cond for cond, _ in rules], [name for _, name in rules], "OTH").astype("U6")


def flow_records(records: np.ndarray, flow_states: np.ndarray, state_names: np.ndarray,
                 ended: str) -> np.ndarray:
    """Flow rows (FLOW_DTYPE / FLOW6_DTYPE) from engine records and their flow states."""
    family6 = records.dtype["orig_h"].shape == (16,)
    out = np.zeros(len(records), dtype=FLOW6_DTYPE if family6 else FLOW_DTYPE)
    for name in ("orig_h", "orig_p", "resp_h", "resp_p", "orig_pkts", "orig_bytes",
                 "resp_pkts", "resp_bytes", "last_ts"):
        out[name] = records[name]
    out["ts"] = records["first_ts"]
    out["duration"] = (records["last_ts"] - records["first_ts"]) / 1e9
    out["state"] = state_names[records["state"]]
    status = records["status"]
    out["flipped"] = (status & _engine.STATUS_FLIPPED) != 0
    out["picked_up"] = (status & _engine.STATUS_PICKED_UP) != 0
    out["illegal"] = status >> _engine.STATUS_ILLEGAL_SHIFT
    out["history"] = histories(flow_states["history"], flow_states["seen"], out["flipped"])
    out["conn_state"] = conn_states(flow_states["orig_zeek"], flow_states["resp_zeek"],
                                    records["orig_bytes"], records["resp_bytes"],
                                    out["history"])
    out["ended"] = ended
    return out


#: The columns `to_csv` writes, in order: Zeek's conn.log names first.
CSV_COLUMNS = ("ts", "orig_h", "orig_p", "resp_h", "resp_p", "duration", "orig_bytes",
               "resp_bytes", "conn_state", "history", "orig_pkts", "resp_pkts", "state",
               "flipped", "picked_up", "illegal", "ended")


def _address_text(column: np.ndarray) -> np.ndarray:
    if column.ndim == 1:    # IPv4 host-order integers: dotted quads without a per-row object
        octets = [((column >> shift) & 0xFF).astype(str) for shift in (24, 16, 8, 0)]
        dotted = octets[0]
        for octet in octets[1:]:
            dotted = np.char.add(np.char.add(dotted, "."), octet)
        return dotted
    return np.array([str(ipaddress.IPv6Address(bytes(row))) for row in column])


def _text_columns(flows: np.ndarray) -> list[np.ndarray]:
    columns = []
    for name in CSV_COLUMNS:
        values = flows[name]
        if name in ("orig_h", "resp_h"):
            columns.append(_address_text(values))
        elif name == "ts":
            seconds, nanos = np.divmod(values, 1_000_000_000)
            columns.append(np.char.add(np.char.add(seconds.astype(str), "."),
                                       np.char.zfill(nanos.astype(str), 9)))
        elif name == "duration":
            columns.append(np.char.mod("%.9f", values))
        elif values.dtype == bool:
            columns.append(np.where(values, "T", "F"))
        else:
            columns.append(values.astype(str))
    return columns


def to_csv(flows: Union[np.ndarray, Iterable[np.ndarray]], target: Union[str, IO[str]],
           header: bool = True) -> int:
    """Writes flow rows (one array, or several of either family) as CSV; returns the rows.

    Addresses are written as text, ``ts`` as seconds with nine decimals, booleans as T/F
    (Zeek's convention). `target` is a path or an open text file.
    """
    arrays = [flows] if isinstance(flows, np.ndarray) else list(flows)
    own = isinstance(target, str)
    stream: IO[str] = open(target, "w", newline="") if own else target   # type: ignore
    try:
        writer = csv.writer(stream)
        if header:
            writer.writerow(CSV_COLUMNS)
        rows = 0
        for array in arrays:
            if len(array):
                writer.writerows(zip(*_text_columns(array)))
                rows += len(array)
    finally:
        if own:
            stream.close()
    return rows


def to_pandas(flows: Union[np.ndarray, Iterable[np.ndarray]]) -> Any:
    """A pandas DataFrame of flow rows, addresses as text (needs ``pip install fasttcp[pandas]``).
    """
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_pandas needs pandas: pip install 'fasttcp[pandas]'") from None
    arrays = [flows] if isinstance(flows, np.ndarray) else list(flows)
    frames = []
    for array in arrays:
        data = {name: array[name] for name in CSV_COLUMNS}
        data["orig_h"] = _address_text(array["orig_h"])
        data["resp_h"] = _address_text(array["resp_h"])
        data["ts"] = pd.to_datetime(array["ts"], unit="ns", utc=True)
        frames.append(pd.DataFrame(data, columns=list(CSV_COLUMNS)))
    if not frames:
        return pd.DataFrame(columns=list(CSV_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def to_parquet(flows: Union[np.ndarray, Iterable[np.ndarray]], path: str) -> int:
    """Writes flow rows to a Parquet file (needs ``pip install fasttcp[pandas]``, which brings
    pyarrow); returns the rows."""
    frame = to_pandas(flows)
    try:
        frame.to_parquet(path, index=False)
    except ImportError:
        raise ImportError("to_parquet needs pyarrow: pip install 'fasttcp[pandas]'") from None
    return len(frame)
