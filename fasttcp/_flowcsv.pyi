"""Type stubs for the flow-row CSV formatter (fasttcp/_flowcsv.pyx)."""
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_ROW_BYTES: int

def format_rows(
    ts: npt.NDArray[np.int64],  # const int64_t[::1]
    last_ts: npt.NDArray[np.int64],  # const int64_t[::1]
    orig_h: npt.NDArray[Any],  # const uint32_t[::1] (IPv4) or const uint8_t[:, ::1] (IPv6)
    resp_h: npt.NDArray[Any],  # as orig_h
    orig_p: npt.NDArray[np.uint16],  # const uint16_t[::1]
    resp_p: npt.NDArray[np.uint16],  # const uint16_t[::1]
    orig_bytes: npt.NDArray[np.uint64],  # const uint64_t[::1]
    resp_bytes: npt.NDArray[np.uint64],  # const uint64_t[::1]
    conn_state: npt.NDArray[np.uint8],  # const uint8_t[::1]
    history: npt.NDArray[np.uint8],  # const uint8_t[:, ::1], NUL-padded ASCII rows
    orig_pkts: npt.NDArray[np.uint32],  # const uint32_t[::1]
    resp_pkts: npt.NDArray[np.uint32],  # const uint32_t[::1]
    state: npt.NDArray[np.uint8],  # const uint8_t[::1]
    flipped: npt.NDArray[np.uint8],  # const uint8_t[::1]
    picked_up: npt.NDArray[np.uint8],  # const uint8_t[::1]
    illegal: npt.NDArray[np.uint8],  # const uint8_t[::1]
    ended: npt.NDArray[np.uint8],  # const uint8_t[::1]
    names: npt.NDArray[np.uint8],  # const uint8_t[:, ::1], one name per row
    name_lengths: npt.NDArray[np.intp],  # const intp_t[::1]
    conn_state_base: int,
    state_base: int,
    ended_base: int,
    out: npt.NDArray[np.uint8],  # uint8_t[::1]
) -> int: ...

def address_strings(
    addresses: npt.NDArray[Any],  # const uint32_t[::1] (IPv4) or const uint8_t[:, ::1] (IPv6)
) -> list[str]: ...
