"""Type stubs for the compiled engine (fasttcp/_engine.pyx)."""
from typing import Any

import numpy as np
import numpy.typing as npt

INVALID: int
IGNORE: int
ACTION_NONE: int
ACTION_REOPEN: int
ACTION_CLOSE_UNREPLIED: int
ACTION_FLIP: int
ACTION_PICKUP: int
VERDICT_NEW: int
VERDICT_VALID: int
VERDICT_INVALID: int
VERDICT_IGNORED: int
STATUS_ALIVE: int
STATUS_REPLIED: int
STATUS_FLIPPED: int
STATUS_PICKED_UP: int
STATUS_ILLEGAL_SHIFT: int
ILLEGAL_MAX: int  # the illegal-segment count in a record's status saturates here
PKTS_MAX: int  # a record's packet counters saturate here
TH_FIN: int  # TCP flag bits, as BSD's netinet/tcp.h names them
TH_SYN: int
TH_RST: int
TH_PUSH: int
TH_ACK: int
TH_URG: int
TH_ECE: int
TH_CWR: int
MAX_WSCALE: int  # RFC 7323's largest window scale
MAX_ACK_WINDOW: int  # netfilter's floor for how far behind an ack may be
HISTORY_WIDTH: int  # bytes of a Zeek history string: '^' and 18 letters
MAX_CAPACITY: int
MAX_LOAD: float
MAX_FILL: float
CONN4_DTYPE: np.dtype[np.void]
CONN6_DTYPE: np.dtype[np.void]
FLOW_STATE_DTYPE: np.dtype[np.void]
ZEEK_STATES: tuple[str, ...]
HISTORY_LETTERS: str
CONN_STATE_NAMES: tuple[str, ...]
COUNT_NAMES: tuple[str, ...]
END_CLOSED: int
END_EXPIRED: int
END_EVICTED: int
SAVED_ERRORS: tuple[str | None, ...]  # what FlowTable.restore refuses, by check code (0: none)

def zeek_columns(
    flow_states: npt.NDArray[np.uint8],  # const uint8_t[::1], FLOW_STATE_DTYPE rows as bytes
    status: npt.NDArray[np.uint8],  # const uint8_t[::1]
    orig_bytes: npt.NDArray[np.uint64],  # const uint64_t[::1]
    resp_bytes: npt.NDArray[np.uint64],  # const uint64_t[::1]
    out_history: npt.NDArray[np.uint8],  # uint8_t[:, ::1], HISTORY_WIDTH or more bytes per row
    out_conn_state: npt.NDArray[np.uint8],  # uint8_t[::1]
) -> None: ...

def index_slots_for(capacity: int) -> int: ...

class FlowTable:
    family: int
    def __init__(
        self,
        family: int,
        capacity: int,
        class_of: npt.NDArray[np.uint8],  # const uint8_t[::1], 256 entries
        trans: npt.NDArray[np.uint8],  # const uint8_t[::1], n_states * 2 * n_classes
        actions: npt.NDArray[np.uint8],  # const uint8_t[::1], same shape as trans
        illegal: npt.NDArray[np.uint8],  # const uint8_t[::1], one per flag class
        n_states: int,
        n_classes: int,
        keys: tuple[int, int, int, int],
        shard: int = ...,
        n_shards: int = ...,
        flows: bool = ...,
        ended_capacity: int = ...,
        timeouts: npt.NDArray[np.int64] | None = ...,  # ns per state; None: no expiry
        evict: bool = ...,
        early: npt.NDArray[np.uint8] | None = ...,  # const uint8_t[::1], one per flag class
    ) -> None: ...
    def enable_sequence(self) -> None: ...
    @property
    def sequence_aware(self) -> bool: ...
    def set_evicting(self, evicting: bool) -> None: ...
    def set_clock_limit(self, limit: int, expired_to: int = ...) -> None: ...
    def counters(self) -> dict[str, Any]: ...
    def wheel_lists(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]] | None: ...
    def restore(  # raises ValueError naming the inconsistency; the table is then unchanged
        self,
        records: npt.NDArray[np.void],  # conn_t rows, writable, contiguous, capacity rows
        flows: npt.NDArray[np.void] | None,  # flow_t rows, FLOW_STATE_DTYPE, capacity rows
        due: npt.NDArray[np.uint32] | None,  # uint32_t[::1], capacity
        evict_ring: npt.NDArray[np.uint64] | None,  # uint64_t[::1], a power of two >= 2 * capacity
        seq: npt.NDArray[np.uint8] | None,  # uint8_t[:, ::1], (capacity, sizeof(seq_t))
        wheel_lists: tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]] | None,  # as wheel_lists
        class_counts: npt.NDArray[np.int64],  # const int64_t[::1], n_classes, >= 0
        counters: dict[str, Any],  # as counters()
    ) -> None: ...
    @property
    def storage(self) -> tuple[npt.NDArray[np.void], npt.NDArray[np.void] | None,
                               npt.NDArray[np.uint32] | None, npt.NDArray[np.uint64] | None,
                               npt.NDArray[np.uint8] | None]: ...
    def expire(self, now: int) -> tuple[int, bool]: ...
    def resize(self, capacity: int) -> None: ...
    def compact_index(self) -> None: ...
    def update(
        self,
        ts: npt.NDArray[np.int64],  # const int64_t[::1]
        src: npt.NDArray[Any],  # const uint32_t[::1] (IPv4) or const uint64_t[:, ::1] (IPv6)
        sport: npt.NDArray[np.uint16],  # const uint16_t[::1]
        dst: npt.NDArray[Any],  # as src
        dport: npt.NDArray[np.uint16],  # const uint16_t[::1]
        flags: npt.NDArray[np.uint8],  # const uint8_t[::1]
        length: npt.NDArray[np.uint32],  # const uint32_t[::1]
        start: int,
        out_conn: npt.NDArray[np.int64] | None = ...,  # int64_t[::1]
        out_state: npt.NDArray[np.uint8] | None = ...,  # uint8_t[::1]
        out_verdict: npt.NDArray[np.uint8] | None = ...,  # uint8_t[::1]
        order: npt.NDArray[np.intp] | None = ...,  # const intp_t[::1]
        hashes: npt.NDArray[np.uint64] | None = ...,  # const uint64_t[::1]
        sequence: tuple[npt.NDArray[Any], ...] | None = ...,  # seq, ack (const uint32_t[::1]),
        # window (const uint16_t[::1]), wscale (const int8_t[::1])
    ) -> tuple[int, dict[str, int]]: ...
    def lookup(
        self,
        src: npt.NDArray[Any],
        sport: npt.NDArray[np.uint16],
        dst: npt.NDArray[Any],
        dport: npt.NDArray[np.uint16],
        out_conn: npt.NDArray[np.int64],  # int64_t[::1]
        out_state: npt.NDArray[np.uint8],  # uint8_t[::1]
        out_dir: npt.NDArray[np.uint8],  # uint8_t[::1]
        order: npt.NDArray[np.intp] | None = ...,  # const intp_t[::1]
        hashes: npt.NDArray[np.uint64] | None = ...,  # const uint64_t[::1]
    ) -> None: ...
    def partition(
        self,
        ts: npt.NDArray[np.int64],
        src: npt.NDArray[Any],
        sport: npt.NDArray[np.uint16],
        dst: npt.NDArray[Any],
        dport: npt.NDArray[np.uint16],
        flags: npt.NDArray[np.uint8],
        length: npt.NDArray[np.uint32],
        lo: int,
        hi: int,
        out_hash: npt.NDArray[np.uint64],  # uint64_t[::1], one per event
        out_order: npt.NDArray[np.intp],  # intp_t[:, ::1], (n_shards, >= hi - lo)
    ) -> list[int]: ...
    def find_one(self, src: int | bytes, sport: int, dst: int | bytes, dport: int) -> tuple[int, int]: ...
    def record_values(self, rid: int) -> tuple[Any, ...]: ...
    def _home_and_tag(self, src: int | bytes, sport: int, dst: int | bytes, dport: int) -> tuple[int, int]: ...
    def probe_lengths(self) -> npt.NDArray[np.int64]: ...
    @property
    def records(self) -> npt.NDArray[np.void]: ...
    @property
    def flows(self) -> npt.NDArray[np.void]: ...
    @property
    def ended_full(self) -> bool: ...
    def take_ended(
        self,
    ) -> tuple[npt.NDArray[np.void], npt.NDArray[np.void], npt.NDArray[np.uint8]]: ...
    @property
    def histogram(self) -> npt.NDArray[np.int64]: ...
    @property
    def class_counts(self) -> npt.NDArray[np.int64]: ...
    @property
    def totals(self) -> dict[str, int]: ...
    def __len__(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def tombstones(self) -> int: ...
    @property
    def needs_compaction(self) -> bool: ...
    @property
    def nbytes(self) -> int: ...  # the sum of every nbytes_* part
    @property
    def nbytes_records(self) -> int: ...
    @property
    def nbytes_index(self) -> int: ...
    @property
    def nbytes_expiry(self) -> int: ...
    @property
    def max_nbytes_expiry(self) -> int: ...
    @property
    def nbytes_sequence(self) -> int: ...
    @property
    def nbytes_flows(self) -> int: ...
    @property
    def nbytes_eviction(self) -> int: ...
    @property
    def ended_count(self) -> int: ...
    @property
    def expire_from(self) -> int: ...

class EventClock:
    now: int
    started: bool
    max_jump: int
    confirm: int
    suspect: int
    jumps: int
    def __init__(self, max_jump: int, confirm: int) -> None: ...
    def advance(self, ts: npt.NDArray[np.int64]) -> int: ...  # const int64_t[::1]
    def state(self) -> dict[str, int]: ...
    def restore(self, state: dict[str, int]) -> None: ...
