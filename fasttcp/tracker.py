"""The public tracker: validates batches, then hands them to the compiled engine."""
from __future__ import annotations

import ipaddress
import math
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Union

import numpy as np

from fasttcp import _engine
from fasttcp.dtypes import (CONN4_DTYPE, CONN6_DTYPE, EVENT6_DTYPE, EVENT_DTYPE, FLOW6_DTYPE,
                            FLOW_DTYPE, SEGMENT6_DTYPE, SEGMENT_DTYPE)
from fasttcp.flows import LIVE, flow_records
from fasttcp.models import Model, get_model

__all__ = ["Tracker", "ConnInfo", "UpdateResult", "LookupResult", "TableFullError",
           "EVENT_DTYPE", "EVENT6_DTYPE", "SEGMENT_DTYPE", "SEGMENT6_DTYPE", "CONN4_DTYPE", "CONN6_DTYPE",
           "VERDICTS", "NEW", "VALID", "INVALID", "IGNORED", "STATUS_ALIVE", "STATUS_REPLIED",
           "STATUS_FLIPPED", "STATUS_PICKED_UP", "STATUS_ILLEGAL_SHIFT", "addresses"]

_SEGMENT_FAMILIES = {SEGMENT_DTYPE: 4, SEGMENT6_DTYPE: 6}
_CONN_FIELDS: tuple[str, ...] = tuple(CONN4_DTYPE.names or ())

NEW, VALID, INVALID, IGNORED = (_engine.VERDICT_NEW, _engine.VERDICT_VALID,
                                _engine.VERDICT_INVALID, _engine.VERDICT_IGNORED)
#: Record status bits: a live record; its responder has answered; the first segment came from
#: the responder (roles flipped); no handshake was seen (picked up). The high four bits
#: (``status >> STATUS_ILLEGAL_SHIFT``) count illegal segments, saturating at 15.
STATUS_ALIVE, STATUS_REPLIED = _engine.STATUS_ALIVE, _engine.STATUS_REPLIED
STATUS_FLIPPED, STATUS_PICKED_UP = _engine.STATUS_FLIPPED, _engine.STATUS_PICKED_UP
STATUS_ILLEGAL_SHIFT = _engine.STATUS_ILLEGAL_SHIFT
#: Verdict names by code, as returned per event by ``Tracker.update(..., return_events=True)``.
VERDICTS = ("new", "valid", "invalid", "ignored")

#: The "events" clock's defaults: a segment over a minute ahead of the clock moves it only
#: when the next one is that far ahead too (see `Tracker`).
DEFAULT_MAX_CLOCK_JUMP = 60.0
DEFAULT_CLOCK_CONFIRM = 2
#: max_clock_jump must be below this many seconds (2**62 ns: ample, and far from overflow).
MAX_CLOCK_JUMP = 2**62 / 1e9

# What memory_usage reports, by the FlowTable.nbytes_* property of each.
_MEMORY_PARTS = ("records", "index", "expiry", "flows", "eviction", "sequence")

# Below this many events a sharded batch is applied shard after shard on the calling thread:
# handing work to the pool costs tens of microseconds.
_PARALLEL_MIN_EVENTS = 16_384

AddressLike = Union[str, int, bytes, ipaddress.IPv4Address, ipaddress.IPv6Address]


class TableFullError(RuntimeError):
    """The table is at its bound and may not grow.

    ``unapplied`` holds the indices (into the batch) of the events that were not applied,
    ``applied`` the first of them: every event before it was applied. On one table that is
    all there is; with shards, later events of other shards were applied too. The tracker
    is consistent and usable.
    """

    def __init__(self, message: str, applied: int, unapplied: np.ndarray):
        super().__init__(message)
        self.applied = applied
        self.unapplied = unapplied


class UpdateResult(NamedTuple):
    """What one batch did. The arrays are None unless ``return_events=True``."""

    new: int
    valid: int
    invalid: int
    ignored: int
    conn: Optional[np.ndarray]      #: int64 record index per event, -1 if no connection
    state: Optional[np.ndarray]     #: uint8 state code after each event
    verdict: Optional[np.ndarray]   #: uint8 verdict code per event (see VERDICTS)


class LookupResult(NamedTuple):
    """Vectorised lookup answers, one per queried key."""

    conn: np.ndarray        #: int64 record index, -1 where there is no such connection
    state: np.ndarray       #: uint8 state code (0 where absent)
    direction: np.ndarray   #: uint8 0 if the queried source is the originator, else 1


class ConnInfo(NamedTuple):
    """One connection as `Tracker.lookup` returns it (a copy, not a view)."""

    conn: int  #: record index, as in ``records()`` and ``UpdateResult.conn``
    family: int
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    state: str
    orig_pkts: int
    resp_pkts: int
    orig_bytes: int
    resp_bytes: int
    orig_flags: int
    resp_flags: int
    first_ts: int
    last_ts: int
    replied: bool
    flipped: bool     #: the first segment seen came from the responder
    picked_up: bool   #: no handshake was seen
    illegal: int      #: illegal segments seen (saturates at 15)
    direction: str  #: "orig" if the queried source is the originator, else "resp"


# The longest finite timeout: deadlines stay far inside int64 nanoseconds.
_LONGEST_TIMEOUT = 100 * 365.25 * 86400


def _timeouts(model: Model, overrides: Mapping[str, float]) -> dict[str, float]:
    """The model's timeouts per state with `overrides` (state or endpoint state names) applied."""
    for name, seconds in overrides.items():
        if name not in model.states and name not in model.endpoint_timeouts:
            raise ValueError(f"model {model.name!r} has no state {name!r} to time out")
        if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                or not (0 <= seconds <= _LONGEST_TIMEOUT or seconds == math.inf)):
            raise ValueError(f"timeout for {name!r} must be a number of seconds from 0 to "
                             f"{_LONGEST_TIMEOUT:.0f} (100 years), or math.inf for never")
    # a state the model gives no timeout never expires
    timeouts = {state: float(model.timeouts.get(state, math.inf)) for state in model.states}
    endpoint = {name: float(overrides.get(name, seconds))
                for name, seconds in model.endpoint_timeouts.items()}
    if model.pairs is not None and set(overrides) & set(endpoint):
        names = model.endpoint_states
        for state, (orig, resp) in zip(model.states, model.pairs.tolist()):
            timeouts[state] = max(endpoint[names[orig]], endpoint[names[resp]])
    timeouts.update((name, float(s)) for name, s in overrides.items() if name in timeouts)
    return timeouts


def _address(value: AddressLike) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    if isinstance(value, (str, int, bytes)) and not isinstance(value, bool):
        return ipaddress.ip_address(value)
    raise TypeError(f"expected an IP address (str, int, bytes or ipaddress), "
                    f"not {type(value).__name__}")


def addresses(values: Iterable[AddressLike]) -> np.ndarray:
    """Converts addresses to the array form `Tracker.update` takes.

    Returns uint32 (n,) if all are IPv4, uint8 (n, 16) if all are IPv6.

    >>> addresses(["10.0.0.1", "10.0.0.2"])
    array([167772161, 167772162], dtype=uint32)
    """
    parsed = [_address(v) for v in values]
    versions = {a.version for a in parsed}
    if len(versions) > 1:
        raise ValueError("mixed IPv4 and IPv6 addresses: split the batch by family")
    if versions == {6}:
        return np.frombuffer(b"".join(a.packed for a in parsed), dtype=np.uint8).reshape(-1, 16)
    return np.array([int(a) for a in parsed], dtype=np.uint32)


def _packed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return address.packed


def _integer_column(name: str, arr: Any, dtype: np.dtype, n: Optional[int]) -> np.ndarray:
    """`arr` as a contiguous 1-D array of `dtype`, checking kind, length and value range."""
    arr = np.asarray(arr)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} elements, expected {n} like ts")
    if arr.dtype != dtype:
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer array ({dtype}), not {arr.dtype}")
        info = np.iinfo(dtype)
        if len(arr) and (arr.min() < info.min or arr.max() > info.max):
            raise ValueError(f"{name} has values outside {info.min}..{info.max}")
        arr = arr.astype(dtype)
    arr = np.ascontiguousarray(arr)
    # a field of a packed structured array can be misaligned; the kernel needs natural alignment
    return arr if arr.flags.aligned else arr.copy()


def _address_columns(src: Any, dst: Any, n: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(family, src, dst): IPv4 as uint32 (n,), IPv6 as uint64 (n, 2) over the 16 bytes."""
    src, dst = np.asarray(src), np.asarray(dst)
    out = []
    families = set()
    for name, arr in (("src", src), ("dst", dst)):
        if arr.dtype.kind == "V" and arr.dtype.itemsize == 16 or arr.dtype == np.dtype("S16"):
            arr = arr.view(np.uint8).reshape(len(arr), 16)
        if arr.ndim == 2:
            if arr.shape[1] != 16 or arr.dtype != np.uint8:
                raise ValueError(f"IPv6 {name} must be uint8 of shape (n, 16), "
                                 f"got {arr.dtype} {arr.shape}")
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows, expected {n} like ts")
            families.add(6)
            arr = np.ascontiguousarray(arr).view(np.uint64)
            if not arr.flags.aligned:
                arr = arr.copy()
        else:
            families.add(4)
            arr = _integer_column(name, arr, np.dtype(np.uint32), n)
        out.append(arr)
    if len(families) > 1:
        raise ValueError("src and dst are of different address families")
    return families.pop(), out[0], out[1]


class Tracker:
    """Tracks TCP connections from batches of observed segments.

    Parameters
    ----------
    model : str or Model
        State model: a built-in name (``"rfc793"``, the default, or ``"conntrack"``) or a
        compiled `Model`.
    capacity : int
        Connections each address family's table holds before it must grow.
    max_capacity : int, optional
        Bound on each table when growing (by doubling). None: the table never grows beyond
        `capacity`; a full table raises `TableFullError`.
    seed : int, optional
        Fixes the hash key, for reproducible layouts in tests. Leave None in production: the
        key is then drawn from the OS so nobody can precompute colliding keys.
    timeouts : mapping of state name to seconds, optional
        Overrides the model's per-state idle timeouts (``tracker.timeouts`` holds the result).
        For pair models, endpoint state names are accepted too: a connection's timeout is then
        recomputed as the larger of its two endpoints'.
    expiry : bool
        Expire connections idle for their state's whole timeout (`timeouts`; at the deadline
        itself, as conntrack and Zeek do), by the segments' own clock (see `clock`): a segment
        arriving after its connection's timeout meets a new connection, and `update` ends
        with the connections whose time is up. Costs 4 bytes per connection and a timer
        wheel of one-second ticks.
    clock : {"events", "manual"}
        With "events" every `update` then expires by the segments' clock (see
        `max_clock_jump`); with "manual" only `expire(now)` does (a live tracker driven by
        wall-clock time). Either way a full table expires by a new segment's time only up to
        the clock, so no single timestamp can expire the table.
    max_clock_jump : float or None
        Seconds the "events" clock may move forward on one segment's word. A segment further
        ahead is suspect (``stats["clock_suspect"]``) and moves nothing, until
        `clock_confirm` consecutive segments are all that far ahead, as after a genuine gap
        in a capture; the clock then moves to the earliest of them
        (``stats["clock_jumps"]``). None follows every timestamp. With the default, 60 s, a
        forged far-future segment expires no connection but possibly its own (see
        SECURITY.md), and a real gap of over a minute is followed one segment late.
    clock_confirm : int
        Consecutive segments beyond `max_clock_jump` that make a jump real (1: every one).
    evict : bool
        When the table is at `max_capacity`, drop the oldest connection that never got an
        answer to make room for a new one (what Linux conntrack's early drop does), instead of
        raising TableFullError. A new connection that finds none to drop is not tracked
        (``stats["refused"]``).
    flows : bool
        Keep Zeek-style flow information per connection (history letters and endpoint states,
        24 more bytes per connection) and collect the connections that leave the table, for
        `pop_flows` and `live_flows` (see `fasttcp.flows`).
    shards : {1, 2, 4}
        Split each family's table into this many shards by flow hash, each updated on its own
        thread without the GIL: on a machine with that many idle cores a large batch goes
        through faster. Results are the same as with one table; record indices differ (they
        interleave shards), and `records` returns a copy. `capacity` and `max_capacity` are
        shared out evenly plus a margin of four standard deviations of the hash split, so the
        shards fill together and the total bound sits a fraction of a percent above them.

    Examples
    --------
    >>> import numpy as np
    >>> from fasttcp import Tracker, addresses
    >>> t = Tracker(capacity=1024)
    >>> client, server = addresses(["10.0.0.1"]), addresses(["10.0.0.2"])
    >>> src = np.concatenate([client, server, client])
    >>> dst = np.concatenate([server, client, server])
    >>> r = t.update(np.array([0, 1000, 2000]), src, np.array([40000, 80, 40000]), dst,
    ...              np.array([80, 40000, 80]), np.array([0x02, 0x12, 0x10]))
    >>> t.histogram()["ESTABLISHED/ESTABLISHED"], len(t)
    (1, 1)
    >>> t.lookup("10.0.0.2", 80, "10.0.0.1", 40000).state
    'ESTABLISHED/ESTABLISHED'
    """

    def __init__(self, model: str | Model = "rfc793", capacity: int = 65_536,
                 max_capacity: Optional[int] = None, seed: Optional[int] = None,
                 timeouts: Optional[Mapping[str, float]] = None, shards: int = 1,
                 flows: bool = False, expiry: bool = True, clock: str = "events",
                 evict: bool = False,
                 max_clock_jump: Optional[float] = DEFAULT_MAX_CLOCK_JUMP,
                 clock_confirm: int = DEFAULT_CLOCK_CONFIRM) -> None:
        self.model = get_model(model)
        self.timeouts = _timeouts(self.model, timeouts or {})
        capacity = int(capacity)
        if not 1 <= capacity <= _engine.MAX_CAPACITY:
            raise ValueError(f"capacity must be between 1 and {_engine.MAX_CAPACITY}")
        if max_capacity is None:
            max_capacity = capacity
        if not capacity <= max_capacity <= _engine.MAX_CAPACITY:
            raise ValueError(f"max_capacity must be between capacity ({capacity}) "
                             f"and {_engine.MAX_CAPACITY}")
        self.capacity = capacity
        self.max_capacity = int(max_capacity)
        if seed is None:
            k = [secrets.randbits(64) for _ in range(4)]
        else:
            k = [int(x) for x in np.random.default_rng(seed).integers(0, 2**64, 4, dtype=np.uint64)]
        self._keys: tuple[int, int, int, int] = (k[0], k[1], k[2], k[3])
        if shards not in (1, 2, 4):
            raise ValueError(f"shards must be 1, 2 or 4, not {shards!r}")
        self.shards = shards
        if clock not in ("events", "manual"):
            raise ValueError(f"clock must be 'events' or 'manual', not {clock!r}")
        self.expiry, self.clock, self.evict = bool(expiry), clock, bool(evict)
        if max_clock_jump is not None and not 0 <= max_clock_jump < MAX_CLOCK_JUMP:
            raise ValueError(f"max_clock_jump must be a number of seconds >= 0 or None, "
                             f"not {max_clock_jump!r}")
        if isinstance(clock_confirm, bool) or not isinstance(clock_confirm, int) \
                or clock_confirm < 1:
            raise ValueError(f"clock_confirm must be an integer >= 1, not {clock_confirm!r}")
        self.max_clock_jump, self.clock_confirm = max_clock_jump, clock_confirm
        self._clock = _engine.EventClock(
            -1 if max_clock_jump is None else round(max_clock_jump * 1e9), clock_confirm)
        #: The tracker's clock (ns): what it last expired by, the segments' (see
        #: `max_clock_jump`) or `expire`'s argument.
        self.now = 0
        self.keeps_flows = bool(flows)
        self._ended: dict[int, list[np.ndarray]] = {4: [], 6: []}   # flow rows awaiting pop
        self._tables: dict[int, list[_engine.FlowTable]] = {}
        self._lock = threading.Lock()
        self._counter_lock = threading.Lock()  # shard threads count resizes
        self._pool = ThreadPoolExecutor(shards, "fasttcp-shard") if shards > 1 else None
        self.resizes = 0

    def _family(self, family: int) -> list[_engine.FlowTable]:
        """The shard tables of `family`, made on first use. Call with the lock held."""
        tables = self._tables.get(family)
        if tables is None:
            m = self.model
            per_shard = self._shard_share(self.capacity)
            tables = [_engine.FlowTable(family, per_shard, m.class_of, m.table.ravel(),
                                        m.actions.ravel(), m.illegal_mask, len(m.states),
                                        len(m.flag_classes), self._keys, shard, self.shards,
                                        self.keeps_flows, 4096, self._timeout_ns(), self.evict,
                                        m.early)
                      for shard in range(self.shards)]
            self._tables[family] = tables
        return tables

    def _timeout_ns(self) -> Optional[np.ndarray]:
        """Per state code, the idle timeout in ns (None without expiry)."""
        if not self.expiry:
            return None
        never = np.iinfo(np.int64).max
        return np.array([never if self.timeouts[name] == math.inf
                         else round(self.timeouts[name] * 1e9) for name in self.model.states],
                        dtype=np.int64)

    def _shard_share(self, total: int) -> int:
        """One shard's part of `total` connections.

        The flow hash splits connections binomially, so each shard gets its even share plus
        four standard deviations of the split: the shards fill up together, at the cost of a
        total bound a fraction of a percent above `total`.
        """
        if self.shards == 1:
            return total
        share = total / self.shards
        return min(_engine.MAX_CAPACITY, math.ceil(share + 4 * math.sqrt(share) + 8))

    def _all_tables(self) -> list[_engine.FlowTable]:
        return [table for tables in self._tables.values() for table in tables]

    def update(self, ts: Any, src: Any = None, sport: Any = None, dst: Any = None,
               dport: Any = None, flags: Any = None, length: Any = None, *,
               seq: Any = None, ack: Any = None, window: Any = None, wscale: Any = None,
               return_events: bool = False) -> UpdateResult:
        """Applies a batch of segments, in order.

        Parameters
        ----------
        ts : ndarray (n,) int64, or a structured array of EVENT_DTYPE / EVENT6_DTYPE
            Timestamps in nanoseconds. Given a structured array, pass nothing else.
        src, dst : ndarray (n,) uint32 for IPv4, or (n, 16) uint8 for IPv6
            Sender and receiver of each segment.
        sport, dport : ndarray (n,) uint16
        flags : ndarray (n,) uint8
            TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN).
        length : ndarray (n,) uint32, optional
            TCP payload bytes; zeros if omitted.
        seq, ack : ndarray (n,) uint32, optional
        window : ndarray (n,) uint16, optional
        wscale : ndarray (n,) int8, optional
            Sequence number, acknowledgement number, raw window and a SYN's window-scale
            option (-1: none; default all -1): given together (a SEGMENT_DTYPE array carries
            them), they make the tracker sequence-aware from this batch on. Each direction's
            sequence space is then kept (netfilter's four window bounds, with RFC 7323
            scaling), a segment outside its receiver's window is invalid and moves nothing
            (a forged RST or FIN included), an ACK counts for a FIN only when it covers it,
            and retransmissions and zero windows are counted (``stats``). A connection is
            taken liberally until both of its sides have been seen with sequence numbers.
        return_events : bool
            Also return per-event record index, state after the event and verdict.

        Other integer dtypes are accepted when every value fits. The whole batch is validated
        before anything changes: on a TypeError/ValueError the tracker is untouched.

        Raises
        ------
        TableFullError
            When a new connection does not fit and the table may not grow; ``err.unapplied``
            lists the events that were not applied (every other one was).
        """
        family, *valid, sequence = self._batch_columns(ts, src, sport, dst, dport, flags,
                                                       length, seq, ack, window, wscale)
        columns = tuple(valid)  # ts, src, sport, dst, dport, flags, length
        n = len(columns[0])
        outs: tuple = ()
        if return_events:
            outs = (np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.uint8),
                    np.zeros(n, dtype=np.uint8))
        with self._lock:
            tables = self._family(family)
            clock = None                        # the clock before this batch, if it moves
            if self.clock == "events" and n:
                clock = self._clock.state()
                limit = self._clock.advance(columns[0])
            else:
                limit = self.now
            for table in tables:
                table.set_clock_limit(limit)
            if len(tables) == 1:
                orders: list = [None]
                hashes = None
                parallel = False
            else:
                parallel = n >= _PARALLEL_MIN_EVENTS
                orders, hashes = self._split(tables, columns, parallel)
            # every table runs to its end, full or not, before any error is raised
            results = self._run([(self._update_table, (table, columns, outs, order, hashes,
                                                       sequence))
                                 for table, order in zip(tables, orders)], parallel)
            unapplied = [left for _, left in results if left is not None]
            if unapplied:
                left = np.sort(np.concatenate(unapplied))
                if clock is not None:           # the clock sees the applied events only
                    applied = np.ones(n, dtype=bool)
                    applied[left] = False
                    self._clock.restore(clock)
                    self._clock.advance(np.ascontiguousarray(columns[0][applied]))
                raise TableFullError(
                    f"IPv{family} table full (max_capacity={self.max_capacity}): "
                    f"{len(left)} of {n} events not applied", applied=int(left[0]),
                    unapplied=left)
        if self.expiry and self.clock == "events" and n:
            self.expire(self._clock.now)
        results = [counts for counts, _ in results]
        totals = {key: sum(counts[key] for counts in results)
                  for key in ("new", "valid", "invalid", "ignored")}
        return UpdateResult(totals["new"], totals["valid"], totals["invalid"], totals["ignored"],
                            *(outs or (None, None, None)))

    def _run(self, calls: list, parallel: bool) -> list:
        """Runs (function, args) pairs on the shard threads, or here in turn.

        Called with the lock held, so close() cannot take the pool away meanwhile."""
        pool = self._pool
        if pool is None or not parallel:
            return [fn(*args) for fn, args in calls]
        futures = [pool.submit(fn, *args) for fn, args in calls]
        wait(futures)
        return [future.result() for future in futures]  # raises the first error

    def _split(self, tables: list, columns: tuple, parallel: bool) -> tuple[list, np.ndarray]:
        """Each shard's event indices in batch order, and every event's hash.

        The threads hash a slice of the batch each and sort it by shard."""
        n, shards = len(columns[0]), len(tables)
        hashes = np.empty(n, dtype=np.uint64)
        cuts = [n * p // shards for p in range(shards + 1)]
        parts = [np.empty((shards, cuts[p + 1] - cuts[p]), dtype=np.intp) for p in range(shards)]
        counts = self._run([(tables[0].partition, (*columns, cuts[p], cuts[p + 1], hashes,
                                                   parts[p])) for p in range(shards)], parallel)
        orders = [np.concatenate([parts[p][s, :counts[p][s]] for p in range(shards)])
                  for s in range(shards)]
        return orders, hashes

    def _update_table(self, table: _engine.FlowTable, columns: tuple, outs: tuple,
                      order: Optional[np.ndarray], hashes: Optional[np.ndarray],
                      sequence: Optional[tuple]) -> tuple[dict[str, int], Optional[np.ndarray]]:
        """Runs a batch (or, with `order`, some of its events) through one table, making room
        as it asks. Returns the counts and, if the table filled up, the events not applied."""
        n = len(columns[0]) if order is None else len(order)
        ts, src, sport, dst, dport, flags, length = columns
        out_conn, out_state, out_verdict = outs or (None, None, None)
        totals: dict[str, int] = {}
        stop = 0
        while True:
            stop, counts = table.update(ts, src, sport, dst, dport, flags, length, stop,
                                        out_conn, out_state, out_verdict, order, hashes,
                                        sequence)
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
            if stop == n:
                self._collect_ended(table)
                return totals, None
            if table.ended_full:
                self._collect_ended(table)
                continue
            if not self._make_room(table):
                left = np.arange(stop, n) if order is None else order[stop:]
                return totals, left

    def expire(self, now: int) -> int:
        """Ends the connections idle for their state's whole timeout at `now` (ns, the
        segments' clock), and returns how many. `update` calls it itself with the "events"
        clock. Amortised cost: the connections whose time is up, plus those listed again
        because they were active since (each at most once per timeout or per 68 minutes).

        >>> t = Tracker()
        >>> t.expire(10**18)
        0
        """
        if not self.expiry:
            raise ValueError("this tracker has no expiry; create it with Tracker(expiry=True)")
        total = 0
        with self._lock:
            self.now = max(self.now, int(now))
            for table in self._all_tables():
                while True:
                    expired, done = table.expire(self.now)
                    total += expired
                    self._collect_ended(table)
                    if done:
                        break
        return total

    def _collect_ended(self, table: _engine.FlowTable) -> None:
        """Turns the connections that left the table into flow rows, kept for pop_flows.
        (Shard threads append to one list: list.append is atomic.)"""
        records, states, reasons = table.take_ended()
        if len(records):
            self._ended[table.family].append(flow_records(records, states, reasons))

    def pop_flows(self, family: int = 4) -> np.ndarray:
        """Flow rows (FLOW_DTYPE / FLOW6_DTYPE) of the family's connections that left the
        table since the last call, and forgets them. Needs ``Tracker(flows=True)``.

        A connection leaves when a segment reopens its key (a new SYN after a close, a flip or
        a pickup on a live key), under conntrack when it closes unanswered, when it expires,
        and when it is evicted; ``ended`` says which.
        """
        self._check_flows(family)
        with self._lock:
            parts, self._ended[family] = self._ended[family], []
        return np.concatenate(parts) if parts else np.zeros(
            0, dtype=FLOW_DTYPE if family == 4 else FLOW6_DTYPE)

    def live_flows(self, family: int = 4) -> np.ndarray:
        """Flow rows of the family's live connections, now (``ended`` is LIVE); the
        connections stay tracked. Needs ``Tracker(flows=True)``."""
        self._check_flows(family)
        parts = []
        with self._lock:
            for table in self._tables.get(family, ()):
                records, states = table.records, table.flows
                alive = np.flatnonzero(records["status"] & STATUS_ALIVE)
                # whole records move as opaque bytes: numpy copies a structured dtype field
                # by field, several times slower
                opaque = np.dtype((np.void, records.dtype.itemsize))
                parts.append(flow_records(records.view(opaque)[alive].view(records.dtype),
                                          states[alive], LIVE))
        return np.concatenate(parts) if parts else np.zeros(
            0, dtype=FLOW_DTYPE if family == 4 else FLOW6_DTYPE)

    def _check_flows(self, family: int) -> None:
        if family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {family!r}")
        if not self.keeps_flows:
            raise ValueError("this tracker keeps no flows; create it with Tracker(flows=True)")

    def _make_room(self, table: _engine.FlowTable) -> bool:
        """Compacts or grows a table that asked for room, or, at its bound with eviction on,
        lets it evict; False if it can do none of these. (The kernel has already expired
        what was due by then.)"""
        if table.needs_compaction:
            table.compact_index()
            return True
        bound = self._shard_share(self.max_capacity)
        if table.capacity >= bound:
            if self.evict:
                table.set_evicting(True)
                return True
            return False
        table.resize(min(2 * table.capacity, bound))
        with self._counter_lock:
            self.resizes += 1
        return True

    @staticmethod
    def _batch_columns(ts, src, sport, dst, dport, flags, length, seq, ack, window, wscale):
        if getattr(getattr(ts, "dtype", None), "names", None):
            if any(c is not None for c in (src, sport, dst, dport, flags, length, seq, ack,
                                           window, wscale)):
                raise TypeError("pass either one structured array or separate columns")
            events = ts
            missing = {"ts", "src", "dst", "sport", "dport", "flags"} - set(events.dtype.names)
            if missing:
                raise ValueError(f"structured events lack fields {sorted(missing)}; "
                                 f"see fasttcp.EVENT_DTYPE")
            family = _SEGMENT_FAMILIES.get(events.dtype)
            if family and events.ndim == 1 and events.flags.c_contiguous:
                # what captures give: every column in one pass, where numpy takes one per field
                (ts, src, sport, dst, dport, flags, length, seq, ack, window,
                 wscale) = _engine.split_segments(events, family)
            else:
                ts, src, dst = events["ts"], events["src"], events["dst"]
                sport, dport, flags = events["sport"], events["dport"], events["flags"]
                length = events["length"] if "length" in events.dtype.names else None
                seq, ack, window, wscale = (events[name] if name in events.dtype.names
                                            else None
                                            for name in ("seq", "ack", "window", "wscale"))
        elif any(c is None for c in (src, sport, dst, dport, flags)):
            raise TypeError("update needs ts, src, sport, dst, dport and flags")
        ts = _integer_column("ts", ts, np.dtype(np.int64), None)
        n = len(ts)
        if n and ts.min() < 0:
            raise ValueError("ts has negative timestamps (expected nanoseconds since an epoch)")
        family, src, dst = _address_columns(src, dst, n)
        sport = _integer_column("sport", sport, np.dtype(np.uint16), n)
        dport = _integer_column("dport", dport, np.dtype(np.uint16), n)
        flags = _integer_column("flags", flags, np.dtype(np.uint8), n)
        if length is None:
            length = np.zeros(n, dtype=np.uint32)
        length = _integer_column("length", length, np.dtype(np.uint32), n)
        sequence = None
        if seq is not None or ack is not None or window is not None:
            if seq is None or ack is None or window is None:
                raise TypeError("seq, ack and window come together")
            if wscale is None:
                wscale = np.full(n, -1, dtype=np.int8)
            wscale = _integer_column("wscale", wscale, np.dtype(np.int8), n)
            if n and (wscale.min() < -1 or wscale.max() > 14):
                raise ValueError("wscale has values outside -1..14 (RFC 7323 caps it at 14)")
            sequence = (_integer_column("seq", seq, np.dtype(np.uint32), n),
                        _integer_column("ack", ack, np.dtype(np.uint32), n),
                        _integer_column("window", window, np.dtype(np.uint16), n), wscale)
        elif wscale is not None:
            raise TypeError("wscale needs seq, ack and window")
        return family, ts, src, sport, dst, dport, flags, length, sequence

    def lookup_many(self, src: Any, sport: Any, dst: Any, dport: Any) -> LookupResult:
        """Finds many connections at once, from either direction.

        Parameters take the same forms as in `update` (all of one address family).

        >>> t = Tracker()
        >>> t.lookup_many(addresses(["10.0.0.1"]), [1], addresses(["10.0.0.2"]), [2]).conn
        array([-1])
        """
        sport_arr = np.asarray(sport)
        n = len(sport_arr)
        family, src, dst = _address_columns(src, dst, n)
        sport = _integer_column("sport", sport_arr, np.dtype(np.uint16), n)
        dport = _integer_column("dport", dport, np.dtype(np.uint16), n)
        result = LookupResult(np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.uint8),
                              np.zeros(n, dtype=np.uint8))
        with self._lock:
            tables = self._tables.get(family, [])
            if len(tables) == 1:
                tables[0].lookup(src, sport, dst, dport, *result)
            elif tables:
                columns = (np.zeros(n, dtype=np.int64), src, sport, dst, dport,
                           np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=np.uint32))
                orders, hashes = self._split(tables, columns, parallel=False)
                for table, order in zip(tables, orders):
                    table.lookup(src, sport, dst, dport, *result, order, hashes)
        return result

    def lookup(self, src: AddressLike, sport: int, dst: AddressLike,
               dport: int) -> Optional[ConnInfo]:
        """The connection between two endpoints (either order), or None.

        Ports are integers in 0..65535: a float or bool raises TypeError, a value out of
        range ValueError.

        >>> Tracker().lookup("192.0.2.1", 1234, "192.0.2.2", 80) is None
        True
        """
        a, b = _address(src), _address(dst)
        if a.version != b.version:
            raise ValueError("src and dst are of different address families")
        for name, port in (("sport", sport), ("dport", dport)):
            # a float or bool would be truncated into some other port by the kernel's uint16
            if isinstance(port, bool) or not isinstance(port, (int, np.integer)):
                raise TypeError(f"{name} must be an integer, not {port!r}")
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} must be in 0..65535, not {port}")
        sport, dport = int(sport), int(dport)
        key = (int, int) if a.version == 4 else (_packed, _packed)
        with self._lock:
            for table in self._tables.get(a.version, ()):
                index, direction = table.find_one(key[0](a), sport, key[1](b), dport)
                if index >= 0:
                    values = table.record_values(index)
                    break
            else:
                return None
        fields = dict(zip(_CONN_FIELDS, values))
        status = fields.pop("status")
        for side in ("orig_h", "resp_h"):
            fields[side] = str(ipaddress.ip_address(fields[side]))
        fields["state"] = self.model.states[fields["state"]]
        return ConnInfo(conn=index, family=a.version, replied=bool(status & STATUS_REPLIED),
                        flipped=bool(status & STATUS_FLIPPED),
                        picked_up=bool(status & STATUS_PICKED_UP),
                        illegal=status >> STATUS_ILLEGAL_SHIFT,
                        direction="orig" if direction == 0 else "resp", **fields)

    def histogram(self, by: str = "state") -> dict[str, int]:
        """Live connections per state (both families). Cost independent of table size.

        Parameters
        ----------
        by : {"state", "orig", "resp"}
            Model states, or, for pair models such as rfc793, the originator's or the
            responder's endpoint state.

        >>> t = Tracker()
        >>> t.histogram()["ESTABLISHED/ESTABLISHED"], t.histogram(by="resp")["LISTEN"]
        (0, 0)
        """
        counts = np.zeros(len(self.model.states), dtype=np.int64)
        with self._lock:
            for table in self._all_tables():
                counts += table.histogram
        if by == "state":
            return dict(zip(self.model.states, counts.tolist()))
        if by not in ("orig", "resp"):
            raise ValueError(f"by must be 'state', 'orig' or 'resp', not {by!r}")
        if self.model.pairs is None:
            raise ValueError(f"model {self.model.name!r} has no endpoint states")
        side = self.model.pairs[:, 0 if by == "orig" else 1]
        per_endpoint = np.bincount(side, weights=counts, minlength=len(self.model.endpoint_states))
        return dict(zip(self.model.endpoint_states, per_endpoint.astype(np.int64).tolist()))

    def records(self, family: int = 4) -> np.ndarray:
        """Read-only structured view (CONN4_DTYPE / CONN6_DTYPE) of the family's records.

        Indexed by the record indices `update` and `lookup_many` return. Free records have
        ``status == 0``; live ones have the STATUS_ALIVE bit. The view shares memory with the
        table until it grows: after a resize it keeps showing the old storage.
        """
        if family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {family!r}")
        with self._lock:
            tables = self._tables.get(family)
            if tables is None:
                return np.zeros(0, dtype=CONN4_DTYPE if family == 4 else CONN6_DTYPE)
            if len(tables) == 1:
                return tables[0].records
            # interleave the shards' records so that conn = rid * shards + shard indexes them
            parts = [table.records for table in tables]
            out = np.zeros(max(len(p) for p in parts) * self.shards, dtype=parts[0].dtype)
            for shard, part in enumerate(parts):
                out[shard::self.shards][:len(part)] = part
        out.flags.writeable = False
        return out

    def flag_class_counts(self) -> dict[str, int]:
        """Segments seen per flag class, both families, tracked or not.

        The illegal classes (``model.illegal_classes``) are what scans send.

        >>> Tracker().flag_class_counts()["XMAS"]
        0
        """
        counts = np.zeros(len(self.model.flag_classes), dtype=np.int64)
        with self._lock:
            for table in self._all_tables():
                counts += table.class_counts
        return dict(zip(self.model.flag_classes, counts.tolist()))

    @property
    def stats(self) -> dict[str, int]:
        """Totals since creation: events, new, valid, invalid, ignored, untracked, closed,
        expired, evicted, refused, out_of_window, retransmitted, zero_window, and the
        clock's: segments too far ahead of it (clock_suspect) and jumps it followed once
        confirmed (clock_jumps; see `max_clock_jump`)."""
        totals = dict.fromkeys(_engine.COUNT_NAMES, 0)
        with self._lock:
            per_table = [table.totals for table in self._all_tables()]
            totals["clock_suspect"] = self._clock.suspect
            totals["clock_jumps"] = self._clock.jumps
        for counts in per_table:
            for key, value in counts.items():
                totals[key] += value
        return totals

    def memory_usage(self) -> dict[int, dict[str, float]]:
        """Bytes allocated per family: records, index, expiry (due ticks and wheel), flows,
        eviction ring, sequence state, their total, and the total per connection at capacity.

        >>> Tracker(capacity=1000).memory_usage()
        {}
        """
        usage = {}
        with self._lock:
            families = sorted(self._tables.items())
            for family, tables in families:
                parts = {part: sum(getattr(table, f"nbytes_{part}") for table in tables)
                         for part in _MEMORY_PARTS}
                capacity = sum(table.capacity for table in tables)
                total = sum(parts.values())
                usage[family] = {**parts, "total": total, "capacity": capacity,
                                 "bytes_per_connection": total / capacity}
        return usage

    def bytes_per_connection(self, family: int = 4) -> float:
        """Bytes per connection when the family's table is full: records, index, and what
        expiry, flows, eviction and sequence state add.

        >>> Tracker(expiry=False).bytes_per_connection()
        64.0
        """
        with self._lock:
            self._family(family)    # made on first use, as update makes it
        return self.memory_usage()[family]["bytes_per_connection"]

    def probe_lengths(self, family: int = 4) -> np.ndarray:
        """Index slots examined to find each live connection (1 = its home slot)."""
        with self._lock:
            lengths = [table.probe_lengths() for table in self._tables.get(family, ())]
        if not lengths:
            return np.zeros(0, dtype=np.int64)
        joined = np.concatenate(lengths)
        return joined[joined > 0]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(t) for t in self._all_tables())

    def __repr__(self) -> str:
        return (f"Tracker(model={self.model.name!r}, connections={len(self)}, "
                f"capacity={self.capacity}, max_capacity={self.max_capacity}"
                + (f", shards={self.shards})" if self.shards > 1 else ")"))

    def save(self, path: str) -> None:
        """Writes the tracker to a snapshot file, atomically (see `fasttcp.snapshot`)."""
        from fasttcp import snapshot    # imported on use: it is not on the tracking path
        snapshot.save(self, path)

    @classmethod
    def load(cls, path: str, mmap: bool = False, verify: bool = True) -> "Tracker":
        """A tracker from a snapshot file: the same connections, model, settings, counters and
        clock (see `fasttcp.snapshot`; raises `fasttcp.snapshot.SnapshotError`)."""
        from fasttcp import snapshot
        return snapshot.load(path, mmap=mmap, verify=verify)

    def close(self) -> None:
        """Stops the shard threads (if any); later batches run shard after shard."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
