"""The numpy dtypes of fasttcp's batches, segments, connection records and flow rows, in one place.

Where a C struct holds the rows, its dtype is derived from the struct (field names, offsets and
size read off a dummy instance, as sklearn derives ``NODE_DTYPE`` from ``Node``), so the two
cannot disagree: the segment dtypes from ``seg4_t`` / ``seg6_t`` (``fasttcp._pcap``), the record
dtypes from ``conn4_t`` / ``conn6_t`` (``fasttcp._engine``). The event dtypes are the segment
structs' leading fields; the flow rows are made in numpy only and are defined here.

This module imports only numpy and the compiled modules, so any module can import it without
pulling in the tracker.

>>> from fasttcp.dtypes import EVENT_DTYPE, SEGMENT_DTYPE
>>> SEGMENT_DTYPE.names[:len(EVENT_DTYPE.names)] == EVENT_DTYPE.names
True
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fasttcp import _engine, _pcap

__all__ = ["EVENT_DTYPE", "EVENT6_DTYPE", "SEGMENT_DTYPE", "SEGMENT6_DTYPE", "CONN4_DTYPE",
           "CONN6_DTYPE", "FLOW_DTYPE", "FLOW6_DTYPE", "HISTORY_WIDTH"]

#: A segment as the capture reader and the synthetic generator give it (the reader's ``seg4_t``):
#: an event plus the TCP sequence number, acknowledgement number, raw (unscaled) window, and
#: the window-scale option of a SYN (-1 when absent). `Tracker.update` takes it as it is.
SEGMENT_DTYPE: np.dtype = _pcap.SEGMENT_DTYPE
#: The IPv6 twin of SEGMENT_DTYPE (``seg6_t``): 16-byte addresses in network order.
SEGMENT6_DTYPE: np.dtype = _pcap.SEGMENT6_DTYPE


def _leading(dtype: np.dtype, last: str) -> np.dtype:
    names = dtype.names or ()
    return np.dtype([(name, dtype[name]) for name in names[:names.index(last) + 1]])


#: One IPv4 segment event: the segment's fields up to ``length``. ``ts`` is nanoseconds (any
#: epoch, never negative); addresses are host-order integers
#: (``int(ipaddress.IPv4Address(...))``); ``length`` is the TCP payload.
EVENT_DTYPE: np.dtype = _leading(SEGMENT_DTYPE, "length")
#: One IPv6 segment event: as EVENT_DTYPE with 16-byte addresses in network order.
EVENT6_DTYPE: np.dtype = _leading(SEGMENT6_DTYPE, "length")

#: One connection record as the engine keeps it (``conn4_t``).
CONN4_DTYPE: np.dtype = _engine.CONN4_DTYPE
#: The IPv6 twin of CONN4_DTYPE (``conn6_t``).
CONN6_DTYPE: np.dtype = _engine.CONN6_DTYPE

#: Bytes of a flow row's ``history``: '^' and at most 18 letters (each of 9 kinds once per
#: direction).
HISTORY_WIDTH = _engine.HISTORY_WIDTH


def _flow_fields(address: Any) -> list:
    return [("ts", "<i8"), ("last_ts", "<i8"), ("duration", "<f8"),
            ("orig_h", address), ("orig_p", "<u2"), ("resp_h", address), ("resp_p", "<u2"),
            ("orig_pkts", "<u4"), ("orig_bytes", "<u8"), ("resp_pkts", "<u4"),
            ("resp_bytes", "<u8"), ("state", "u1"), ("conn_state", "u1"),
            ("history", f"S{HISTORY_WIDTH}"), ("flipped", "?"), ("picked_up", "?"),
            ("illegal", "u1"), ("ended", "u1")]


#: One IPv4 connection. ``ts`` / ``last_ts``: first and last segment (ns); ``duration`` in
#: seconds; addresses as host-order integers; ``state``: the model's final state (a code into
#: ``model.states``); ``conn_state``: a code into CONN_STATES; ``history``: Zeek's letters,
#: ASCII; ``illegal``: illegal segments (saturating at 15); ``ended``: a code into ENDED.
FLOW_DTYPE = np.dtype(_flow_fields("<u4"))
#: One IPv6 connection: as FLOW_DTYPE with 16-byte addresses in network order.
FLOW6_DTYPE = np.dtype(_flow_fields(("u1", (16,))))
