"""One address family's tables: the shards, making room, ended flows and the aggregates.

`Tracker` keeps one `TableSet` per family it has seen and is the thin layer above them: the
options, the lock, the clock, the shard threads. A table set is called with the tracker's lock
held; its shards may run on the tracker's threads at the same time (`run`).
"""
from __future__ import annotations

import math
import threading
from typing import Any, Callable, Mapping, NamedTuple, Optional

import numpy as np

from fasttcp import _engine
from fasttcp.flows import FLOW6_DTYPE, FLOW_DTYPE, LIVE, flow_records
from fasttcp.models import Model

__all__ = ["TableSet", "TableSpec", "shard_share", "no_flows", "MEMORY_PARTS", "STORAGE"]

#: What memory_usage reports, by the FlowTable.nbytes_* property of each.
MEMORY_PARTS = ("records", "index", "expiry", "flows", "eviction", "sequence")
#: A table's own arrays, in FlowTable.storage's order.
STORAGE = ("records", "flows", "due", "evict_ring", "seq")

# Below this many events a sharded batch is applied shard after shard on the calling thread:
# handing work to the pool costs tens of microseconds.
PARALLEL_MIN_EVENTS = 16_384

#: Runs (function, args) pairs, on the shard threads when the flag says so; returns results.
Runner = Callable[[list, bool], list]


def no_flows(family: int) -> np.ndarray:
    """No flow rows, of `family`'s dtype (FLOW_DTYPE or FLOW6_DTYPE)."""
    return np.zeros(0, dtype=FLOW_DTYPE if family == 4 else FLOW6_DTYPE)


def shard_share(total: int, shards: int) -> int:
    """One shard's part of `total` connections.

    The flow hash splits connections binomially, so each shard gets its even share plus four
    standard deviations of the split: the shards fill up together, at the cost of a total
    bound a fraction of a percent above `total`.
    """
    if shards == 1:
        return total
    share = total / shards
    return min(_engine.MAX_CAPACITY, math.ceil(share + 4 * math.sqrt(share) + 8))


class TableSpec(NamedTuple):
    """What every table of a tracker is made from."""

    model: Model
    keys: tuple[int, int, int, int]     #: the hash key
    shards: int
    capacity: int                       #: the tracker's, for all shards together
    max_capacity: int
    flows: bool
    timeout_ns: Optional[np.ndarray]    #: int64 per state code; None without expiry
    evict: bool


class TableSet:
    """The shard tables of one address family and the policy around them.

    Parameters
    ----------
    family : {4, 6}
    spec : TableSpec
        The tables are made from it, each with its shard's share of ``spec.capacity``, and
        grow (by doubling) up to their share of ``spec.max_capacity``.
    """

    def __init__(self, family: int, spec: TableSpec) -> None:
        m = spec.model
        self.family = family
        self.spec = spec
        self.first = shard_share(spec.capacity, spec.shards)   # a table's starting capacity
        self.bound = shard_share(spec.max_capacity, spec.shards)
        self.tables: list[_engine.FlowTable] = [
            _engine.FlowTable(family, self.first, m.class_of, m.table.ravel(), m.actions.ravel(),
                              m.illegal_mask, len(m.states), len(m.flag_classes), spec.keys,
                              shard, spec.shards, spec.flows, 4096, spec.timeout_ns, spec.evict,
                              m.early)
            for shard in range(spec.shards)]
        self.ended: list[np.ndarray] = []   # flow rows awaiting pop_ended
        self.resizes = 0
        self._resize_lock = threading.Lock()  # shard threads count resizes

    # ---- updating

    def update(self, columns: tuple, outs: tuple, sequence: Optional[tuple], limit: int,
               expired_to: int, run: Runner) -> tuple[dict[str, int], Optional[np.ndarray]]:
        """Applies a validated batch (`columns`: ts, src, sport, dst, dport, flags, length)
        through the shards, each making room as it asks; a full table may expire by at most
        `limit` (ns), and by no less than `expired_to`, the time the tracker has expired to. Returns the counts and the indices of the events not applied (None if
        every one was). Every shard runs to its end, full or not."""
        tables = self.tables
        if len(tables) == 1:
            tables[0].set_clock_limit(limit, expired_to)
            return self._update_table(tables[0], columns, outs, None, None, sequence)
        for table in tables:
            table.set_clock_limit(limit, expired_to)
        parallel = len(columns[0]) >= PARALLEL_MIN_EVENTS
        orders, hashes = self.split(columns, parallel, run)
        results = run([(self._update_table, (table, columns, outs, order, hashes, sequence))
                       for table, order in zip(tables, orders)], parallel)
        totals = {key: sum(counts[key] for counts, _ in results) for key in results[0][0]}
        unapplied = [left for _, left in results if left is not None]
        return totals, np.sort(np.concatenate(unapplied)) if unapplied else None

    def split(self, columns: tuple, parallel: bool, run: Runner) -> tuple[list, np.ndarray]:
        """Each shard's event indices in batch order, and every event's hash.

        The threads hash a slice of the batch each and sort it by shard."""
        tables = self.tables
        n, shards = len(columns[0]), len(tables)
        hashes = np.empty(n, dtype=np.uint64)
        cuts = [n * p // shards for p in range(shards + 1)]
        parts = [np.empty((shards, cuts[p + 1] - cuts[p]), dtype=np.intp) for p in range(shards)]
        counts = run([(tables[0].partition, (*columns, cuts[p], cuts[p + 1], hashes, parts[p]))
                      for p in range(shards)], parallel)
        orders = [np.concatenate([parts[p][s, :counts[p][s]] for p in range(shards)])
                  for s in range(shards)]
        return orders, hashes

    def _update_table(self, table: _engine.FlowTable, columns: tuple, outs: tuple,
                      order: Optional[np.ndarray], hashes: Optional[np.ndarray],
                      sequence: Optional[tuple]) -> tuple[dict[str, int], Optional[np.ndarray]]:
        """Runs a batch (or, with `order`, some of its events) through one table, making room
        as it asks. Returns the counts and, if the table filled up, the events not applied."""
        n = len(columns[0]) if order is None else len(order)
        stop, counts = table.update(*columns, 0, *outs, order, hashes, sequence)
        if stop == n and not table.ended_count:
            return counts, None
        while True:
            if stop < n and not table.ended_full and not self.make_room(table):
                self.collect(table)
                return counts, np.arange(stop, n) if order is None else order[stop:]
            if table.ended_count:
                self.collect(table)
            if stop == n:
                return counts, None
            stop, more = table.update(*columns, stop, *outs, order, hashes, sequence)
            counts = {key: value + more[key] for key, value in counts.items()}

    def make_room(self, table: _engine.FlowTable) -> bool:
        """Compacts or grows a table that asked for room, or, at its bound with eviction on,
        lets it evict; False if it can do none of these. (The kernel has already expired
        what was due by then.)"""
        if table.needs_compaction:
            table.compact_index()
            return True
        if table.capacity >= self.bound:
            if self.spec.evict:
                table.set_evicting(True)
                return True
            return False
        table.resize(min(2 * table.capacity, self.bound))
        with self._resize_lock:
            self.resizes += 1
        return True

    def expire(self, now: int) -> int:
        """Ends the connections idle for their state's whole timeout at `now` (ns); returns
        how many. A table whose wheel has nothing up to `now` is not called."""
        total = 0
        for table in self.tables:
            if now < table.expire_from:
                continue
            while True:
                expired, done = table.expire(now)
                total += expired
                if table.ended_count:
                    self.collect(table)
                if done:
                    break
        return total

    # ---- ended and live flows

    def collect(self, table: _engine.FlowTable) -> None:
        """Turns the connections that left `table` into flow rows, kept for pop_ended.
        (Shard threads append to one list: list.append is atomic.)"""
        records, states, reasons = table.take_ended()
        if len(records):
            self.ended.append(flow_records(records, states, reasons))

    def pop_ended(self) -> np.ndarray:
        """The flow rows of the connections that left since the last call; forgets them."""
        parts, self.ended = self.ended, []
        return np.concatenate(parts) if parts else no_flows(self.family)

    def live_flows(self) -> np.ndarray:
        """Flow rows of the live connections (``ended`` is LIVE)."""
        parts = []
        for table in self.tables:
            records, states = table.records, table.flows
            alive = np.flatnonzero(records["status"] & _engine.STATUS_ALIVE)
            # whole records move as opaque bytes: numpy copies a structured dtype field by
            # field, several times slower
            opaque = np.dtype((np.void, records.dtype.itemsize))
            parts.append(flow_records(records.view(opaque)[alive].view(records.dtype),
                                      states[alive], LIVE))
        return np.concatenate(parts) if parts else no_flows(self.family)

    # ---- lookups and aggregates

    def lookup_many(self, src: np.ndarray, sport: np.ndarray, dst: np.ndarray,
                    dport: np.ndarray, out: tuple[np.ndarray, np.ndarray, np.ndarray],
                    run: Runner) -> None:
        """Fills `out` (conn, state, direction) for validated key columns."""
        tables = self.tables
        if len(tables) == 1:
            tables[0].lookup(src, sport, dst, dport, *out)
            return
        n = len(sport)
        columns = (np.zeros(n, dtype=np.int64), src, sport, dst, dport,
                   np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=np.uint32))
        orders, hashes = self.split(columns, False, run)
        for table, order in zip(tables, orders):
            table.lookup(src, sport, dst, dport, *out, order, hashes)

    def find_one(self, src: Any, sport: int, dst: Any,
                 dport: int) -> Optional[tuple[int, int, tuple]]:
        """(record index, direction, record values) of one connection, or None."""
        for table in self.tables:
            index, direction = table.find_one(src, sport, dst, dport)
            if index >= 0:
                return index, direction, table.record_values(index)
        return None

    def records(self) -> np.ndarray:
        """The records, indexed as `update` reports them: one table's view, or the shards'
        interleaved (conn = rid * shards + shard) in a read-only copy."""
        if len(self.tables) == 1:
            return self.tables[0].records
        parts = [table.records for table in self.tables]
        shards = len(parts)
        out = np.zeros(max(len(p) for p in parts) * shards, dtype=parts[0].dtype)
        for shard, part in enumerate(parts):
            out[shard::shards][:len(part)] = part
        out.flags.writeable = False
        return out

    def histogram(self) -> np.ndarray:
        """Live connections per state code (int64)."""
        counts = self.tables[0].histogram.copy()
        for table in self.tables[1:]:
            counts += table.histogram
        return counts

    def class_counts(self) -> np.ndarray:
        """Segments seen per flag class code (int64)."""
        counts = self.tables[0].class_counts.copy()
        for table in self.tables[1:]:
            counts += table.class_counts
        return counts

    def totals(self) -> dict[str, int]:
        """The engine's counters, summed over the shards."""
        totals = dict.fromkeys(_engine.COUNT_NAMES, 0)
        for table in self.tables:
            for key, value in table.totals.items():
                totals[key] += value
        return totals

    def memory_usage(self) -> dict[str, float]:
        """Bytes per part (MEMORY_PARTS), their total, the capacity and bytes per connection."""
        parts = {part: sum(getattr(table, f"nbytes_{part}") for table in self.tables)
                 for part in MEMORY_PARTS}
        capacity = sum(table.capacity for table in self.tables)
        total = sum(parts.values())
        return {**parts, "total": total, "capacity": capacity,
                "bytes_per_connection": total / capacity}

    def probe_lengths(self) -> np.ndarray:
        return np.concatenate([table.probe_lengths() for table in self.tables])

    def __len__(self) -> int:
        return sum(len(table) for table in self.tables)

    # ---- snapshots

    def state(self) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
        """(one dict per shard table, the arrays by name) for a snapshot: everything `restore`
        needs. Collects the ended buffers first, so their rows are in ``ended.FAMILY``."""
        tables: list[dict[str, Any]] = []
        arrays: dict[str, np.ndarray] = {}
        for shard, table in enumerate(self.tables):
            self.collect(table)
            prefix = f"table.{self.family}.{shard}"
            for name, array in zip(STORAGE, table.storage):
                if array is not None:
                    arrays[f"{prefix}.{name}"] = array
            wheel = table.wheel_lists()
            if wheel is not None:
                arrays[f"{prefix}.wheel_lengths"], arrays[f"{prefix}.wheel_entries"] = wheel
            arrays[f"{prefix}.class_counts"] = np.array(table.class_counts)
            tables.append({"family": self.family, "shard": shard, "capacity": table.capacity,
                           **table.counters()})
        if self.ended:
            arrays[f"ended.{self.family}"] = np.concatenate(self.ended)
        return tables, arrays

    def check(self, tables: list[dict[str, Any]], last_tick: int) -> None:
        """Checks `state()`'s table dicts against this set before any is restored: capacities
        within this set's bounds, wheels not ahead of the clock's tick `last_tick` (raises
        ValueError)."""
        for spec in tables:
            # tables start at their share of capacity and grow up to that of max_capacity
            if not self.first <= spec["capacity"] <= self.bound:
                raise ValueError(f"a table's capacity must be from {self.first} to {self.bound}")
            # the wheel never runs ahead of the tracker's clock: a crafted position far ahead
            # would clamp every later deadline there, and nothing would expire again
            if spec["wheel_tick"] > last_tick:
                raise ValueError(f"a table's wheel_tick must be at most the clock's tick + 1 "
                                 f"({last_tick})")

    def restore(self, tables: list[dict[str, Any]], arrays: Mapping[str, np.ndarray]) -> None:
        """Takes back what `state()` gave (checked by `check` first; the engine checks each
        table's structure and raises ValueError)."""
        for spec in tables:
            shard = spec["shard"]
            table = self.tables[shard]
            if table.capacity != spec["capacity"]:
                table.resize(spec["capacity"])
            prefix = f"table.{self.family}.{shard}"
            wheel = None
            if f"{prefix}.wheel_lengths" in arrays:
                wheel = (arrays[f"{prefix}.wheel_lengths"], arrays[f"{prefix}.wheel_entries"])
            table.restore(*(arrays.get(f"{prefix}.{name}") for name in STORAGE), wheel,
                          arrays[f"{prefix}.class_counts"], spec)
        if f"ended.{self.family}" in arrays:
            self.ended.append(arrays[f"ended.{self.family}"])
