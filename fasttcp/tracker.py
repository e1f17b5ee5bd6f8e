"""The public tracker: options, the lock, the clock and the shard threads over one `TableSet`
per address family (`fasttcp.tables`); batches are checked by `fasttcp._columns` first."""
from __future__ import annotations

import ipaddress
import math
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Union

import numpy as np

from fasttcp import _engine
from fasttcp._columns import address_columns, batch_columns
from fasttcp._columns import integer_column as _integer_column  # fasttcp.dask's name for it
from fasttcp.dtypes import (CONN4_DTYPE, CONN6_DTYPE, EVENT6_DTYPE, EVENT_DTYPE, SEGMENT6_DTYPE,
                            SEGMENT_DTYPE)
from fasttcp.models import Model, get_model
from fasttcp.tables import TableSet, TableSpec, no_flows, shard_share

__all__ = ["Tracker", "ConnInfo", "UpdateResult", "LookupResult", "TableFullError",
           "EVENT_DTYPE", "EVENT6_DTYPE", "SEGMENT_DTYPE", "SEGMENT6_DTYPE", "CONN4_DTYPE", "CONN6_DTYPE",
           "VERDICTS", "NEW", "VALID", "INVALID", "IGNORED", "STATUS_ALIVE", "STATUS_REPLIED",
           "STATUS_FLIPPED", "STATUS_PICKED_UP", "STATUS_ILLEGAL_SHIFT", "addresses"]

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

# The constructor's options as a snapshot keeps them: parameter name -> attribute.
_OPTIONS = {"capacity": "capacity", "max_capacity": "max_capacity", "timeouts": "timeouts",
            "shards": "shards", "flows": "keeps_flows", "expiry": "expiry", "clock": "clock",
            "evict": "evict", "max_clock_jump": "max_clock_jump",
            "clock_confirm": "clock_confirm"}

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
        self._sets: dict[int, TableSet] = {}    # per family, made on first use
        self._resized = 0                       # resizes before a snapshot was loaded
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(shards, "fasttcp-shard") if shards > 1 else None

    def _table_set(self, family: int) -> TableSet:
        """The family's table set, made on first use. Call with the lock held."""
        tables = self._sets.get(family)
        if tables is None:
            tables = self._sets[family] = TableSet(family, TableSpec(
                self.model, self._keys, self.shards, self.capacity, self.max_capacity,
                self.keeps_flows, self._timeout_ns(), self.evict))
        return tables

    def _family(self, family: int) -> list[_engine.FlowTable]:
        """The shard tables of `family`, made on first use. Call with the lock held."""
        return self._table_set(family).tables

    @property
    def _tables(self) -> dict[int, list[_engine.FlowTable]]:
        """The shard tables of each family made so far."""
        return {family: tables.tables for family, tables in self._sets.items()}

    @property
    def resizes(self) -> int:
        """Times a table has grown (doubled) since the tracker was created."""
        return self._resized + sum(tables.resizes for tables in self._sets.values())

    def _timeout_ns(self) -> Optional[np.ndarray]:
        """Per state code, the idle timeout in ns (None without expiry)."""
        if not self.expiry:
            return None
        never = np.iinfo(np.int64).max
        return np.array([never if self.timeouts[name] == math.inf
                         else round(self.timeouts[name] * 1e9) for name in self.model.states],
                        dtype=np.int64)

    def _shard_share(self, total: int) -> int:
        """One shard's part of `total` connections (see `fasttcp.tables.shard_share`)."""
        return shard_share(total, self.shards)

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
        family, columns, sequence = batch_columns(ts, src, sport, dst, dport, flags, length,
                                                  seq, ack, window, wscale)
        n = len(columns[0])
        outs: tuple = (None, None, None)
        if return_events:
            outs = (np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.uint8),
                    np.zeros(n, dtype=np.uint8))
        with self._lock:
            tables = self._sets.get(family)
            if tables is None:
                tables = self._table_set(family)
            clock = None                        # the clock before this batch, if it moves
            if n and self.clock == "events":
                clock = self._clock.state()
                limit = self._clock.advance(columns[0])
            else:
                limit = self.now
            counts, left = tables.update(columns, outs, sequence, limit, self.now, self._run)
            if left is not None:
                if clock is not None:           # the clock sees the applied events only
                    applied = np.ones(n, dtype=bool)
                    applied[left] = False
                    self._clock.restore(clock)
                    self._clock.advance(np.ascontiguousarray(columns[0][applied]))
                raise TableFullError(
                    f"IPv{family} table full (max_capacity={self.max_capacity}): "
                    f"{len(left)} of {n} events not applied", applied=int(left[0]),
                    unapplied=left)
            if clock is not None and self.expiry:
                self._expire(limit)
        return UpdateResult(counts["new"], counts["valid"], counts["invalid"], counts["ignored"],
                            *outs)

    def _run(self, calls: list, parallel: bool) -> list:
        """Runs (function, args) pairs on the shard threads, or here in turn.

        Called with the lock held, so close() cannot take the pool away meanwhile."""
        pool = self._pool
        if pool is None or not parallel:
            return [fn(*args) for fn, args in calls]
        futures = [pool.submit(fn, *args) for fn, args in calls]
        wait(futures)
        return [future.result() for future in futures]  # raises the first error

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
        with self._lock:
            return self._expire(int(now))

    def _expire(self, now: int) -> int:
        """`expire`, with the lock held."""
        if now > self.now:
            self.now = now
        total = 0
        for tables in self._sets.values():
            total += tables.expire(self.now)
        return total

    def pop_flows(self, family: int = 4) -> np.ndarray:
        """Flow rows (FLOW_DTYPE / FLOW6_DTYPE) of the family's connections that left the
        table since the last call, and forgets them. Needs ``Tracker(flows=True)``.

        A connection leaves when a segment reopens its key (a new SYN after a close, a flip or
        a pickup on a live key), under conntrack when it closes unanswered, when it expires,
        and when it is evicted; ``ended`` says which.
        """
        self._check_flows(family)
        with self._lock:
            tables = self._sets.get(family)
            return tables.pop_ended() if tables is not None else no_flows(family)

    def live_flows(self, family: int = 4) -> np.ndarray:
        """Flow rows of the family's live connections, now (``ended`` is LIVE); the
        connections stay tracked. Needs ``Tracker(flows=True)``."""
        self._check_flows(family)
        with self._lock:
            tables = self._sets.get(family)
            return tables.live_flows() if tables is not None else no_flows(family)

    def _check_flows(self, family: int) -> None:
        if family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {family!r}")
        if not self.keeps_flows:
            raise ValueError("this tracker keeps no flows; create it with Tracker(flows=True)")

    def lookup_many(self, src: Any, sport: Any, dst: Any, dport: Any) -> LookupResult:
        """Finds many connections at once, from either direction.

        Parameters take the same forms as in `update` (all of one address family).

        >>> t = Tracker()
        >>> t.lookup_many(addresses(["10.0.0.1"]), [1], addresses(["10.0.0.2"]), [2]).conn
        array([-1])
        """
        sport_arr = np.asarray(sport)
        n = len(sport_arr)
        family, src, dst = address_columns(src, dst, n)
        sport = _integer_column("sport", sport_arr, np.dtype(np.uint16), n)
        dport = _integer_column("dport", dport, np.dtype(np.uint16), n)
        result = LookupResult(np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.uint8),
                              np.zeros(n, dtype=np.uint8))
        with self._lock:
            tables = self._sets.get(family)
            if tables is not None:
                tables.lookup_many(src, sport, dst, dport, result, self._run)
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
            tables = self._sets.get(a.version)
            found = None if tables is None else tables.find_one(key[0](a), sport, key[1](b), dport)
        if found is None:
            return None
        index, direction, values = found
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
            for tables in self._sets.values():
                counts += tables.histogram()
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
            tables = self._sets.get(family)
            if tables is None:
                return np.zeros(0, dtype=CONN4_DTYPE if family == 4 else CONN6_DTYPE)
            return tables.records()

    def flag_class_counts(self) -> dict[str, int]:
        """Segments seen per flag class, both families, tracked or not.

        The illegal classes (``model.illegal_classes``) are what scans send.

        >>> Tracker().flag_class_counts()["XMAS"]
        0
        """
        counts = np.zeros(len(self.model.flag_classes), dtype=np.int64)
        with self._lock:
            for tables in self._sets.values():
                counts += tables.class_counts()
        return dict(zip(self.model.flag_classes, counts.tolist()))

    @property
    def stats(self) -> dict[str, int]:
        """Totals since creation: events, new, valid, invalid, ignored, untracked, closed,
        expired, evicted, refused, out_of_window, retransmitted, zero_window, and the
        clock's: segments too far ahead of it (clock_suspect) and jumps it followed once
        confirmed (clock_jumps; see `max_clock_jump`)."""
        totals = dict.fromkeys(_engine.COUNT_NAMES, 0)
        with self._lock:
            for tables in self._sets.values():
                for key, value in tables.totals().items():
                    totals[key] += value
            totals["clock_suspect"] = self._clock.suspect
            totals["clock_jumps"] = self._clock.jumps
        return totals

    def memory_usage(self) -> dict[int, dict[str, float]]:
        """Bytes allocated per family: records, index, expiry (due ticks and wheel), flows,
        eviction ring, sequence state, their total, and the total per connection at capacity.

        >>> Tracker(capacity=1000).memory_usage()
        {}
        """
        with self._lock:
            return {family: tables.memory_usage() for family, tables in sorted(self._sets.items())}

    def bytes_per_connection(self, family: int = 4) -> float:
        """Bytes per connection when the family's table is full: records, index, and what
        expiry, flows, eviction and sequence state add.

        >>> Tracker(expiry=False).bytes_per_connection()
        64.0
        """
        with self._lock:
            self._table_set(family)     # made on first use, as update makes it
        return self.memory_usage()[family]["bytes_per_connection"]

    def probe_lengths(self, family: int = 4) -> np.ndarray:
        """Index slots examined to find each live connection (1 = its home slot)."""
        with self._lock:
            tables = self._sets.get(family)
            if tables is None:
                return np.zeros(0, dtype=np.int64)
            lengths = tables.probe_lengths()
        return lengths[lengths > 0]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(tables) for tables in self._sets.values())

    def __repr__(self) -> str:
        return (f"Tracker(model={self.model.name!r}, connections={len(self)}, "
                f"capacity={self.capacity}, max_capacity={self.max_capacity}"
                + (f", shards={self.shards})" if self.shards > 1 else ")"))

    def save(self, path: str) -> None:
        """Writes the tracker to a snapshot file, atomically (see `fasttcp.snapshot`)."""
        from fasttcp import snapshot    # imported on use: it is not on the tracking path
        with self._lock:                # the arrays are the tables' own: none may change
            snapshot.write(path, self.model, *self._state())

    @classmethod
    def load(cls, path: str, mmap: bool = False, verify: bool = True) -> "Tracker":
        """A tracker from a snapshot file: the same connections, model, settings, counters and
        clock (see `fasttcp.snapshot`; raises `fasttcp.snapshot.SnapshotError`)."""
        from fasttcp import snapshot
        return snapshot.read(path, cls._from_state, mmap=mmap, verify=verify)

    def _state(self) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, np.ndarray]]:
        """(settings, tables, arrays): everything `_from_state` needs besides the model. The
        settings are the constructor's options (`_OPTIONS`), the hash key, the clocks and the
        resize count; tables and arrays are each family's `TableSet.state`. The arrays are
        the tables' own storage: call with the lock held and write them out before releasing
        it."""
        tables: list[dict[str, Any]] = []
        arrays: dict[str, np.ndarray] = {}
        for _, table_set in sorted(self._sets.items()):
            more, named = table_set.state()
            tables += more
            arrays.update(named)
        settings = {name: getattr(self, attribute) for name, attribute in _OPTIONS.items()}
        settings.update(keys=[str(k) for k in self._keys], now=self.now, resizes=self.resizes,
                        event_clock=self._clock.state())
        return settings, tables, arrays

    @classmethod
    def _from_state(cls, model: Model, settings: Mapping[str, Any],
                    tables: list[dict[str, Any]], arrays: Mapping[str, np.ndarray]) -> "Tracker":
        """A tracker from what `_state` gave (checked: raises ValueError, KeyError or
        TypeError for state that cannot have been)."""
        tracker = cls(model, **{name: settings[name] for name in _OPTIONS})
        tracker._clock.restore(settings["event_clock"])
        tracker._keys = tuple(int(k) for k in settings["keys"])  # type: ignore[assignment]
        tracker.now, tracker._resized = settings["now"], settings["resizes"]
        last_tick = max(tracker.now, tracker._clock.now) // 10**9 + 1
        families = {family: [t for t in tables if t["family"] == family]
                    for family in sorted({t["family"] for t in tables})}
        for family, specs in families.items():
            tracker._table_set(family).check(specs, last_tick)
        for family, specs in families.items():
            tracker._sets[family].restore(specs, arrays)
        return tracker

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
