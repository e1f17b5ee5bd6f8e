"""Snapshots: a tracker saved to one file and loaded back as it was.

>>> import os, tempfile
>>> import fasttcp
>>> t = fasttcp.Tracker(flows=True)
>>> with fasttcp.open_capture(fasttcp.SAMPLE_CAPTURE) as capture:
...     for batch in capture:
...         _ = t.update(batch.ipv4)
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = os.path.join(tmp, "tracker.snap")
...     t.save(path)
...     again = fasttcp.Tracker.load(path)
>>> again.histogram() == t.histogram(), again.stats == t.stats, len(again) == len(t)
(True, True, True)

The file: 8 magic bytes, a format version, the length of a JSON header, the header, then raw
arrays, each at a 64-byte aligned offset and each with a CRC-32 in the header, as is the
header itself. Saved: the model (its tables, names and timeouts), the tracker's settings and
hash key, its clock and counters, and per table the records (with the free list threaded
through them), the flow states, the expiry wheel and the eviction ring, the flag-class
counts, and flow rows not yet popped: the loaded tracker goes on exactly as the saved one would
have. What derives from these (the index, the histogram, the live count) is rebuilt on
loading. The hash key is in the file: keep snapshots as private as the traffic they describe.

Writing goes to a temporary file in the same directory, flushed to disk and renamed over the
target, so a crash leaves the old snapshot or the new one, never half of one. A writer killed
mid-save leaves its temporary behind; the next save to the same path removes those whose
writer is gone (see `_remove_stale_temporaries`).

Loading checks everything before building anything: the header against its schema (every
field's type and range), the arrays against the settings and the file's size (so nothing is
allocated beyond what the file holds), the checksums, and then in the engine each table's
structure (free list and live count, states, shards, distinct connections, wheel, eviction
ring, flow and sequence states). A truncated, damaged or inconsistent file raises
`SnapshotError`, never returns a partial tracker; ``verify=False`` skips the checksums only.
With ``mmap=True`` the records, due ticks and eviction ring are mapped copy-on-write from the
file instead of read: the pages come in as they are touched and changes stay in memory. Flow
and sequence states are copied into the table's side rows (see `fasttcp._engine`), one
64-byte row per connection, so each segment reads one line of them.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import struct
import tempfile
import zlib
from typing import Any, Callable, Mapping, TypeVar, Union

import numpy as np

from fasttcp import _engine
from fasttcp.flows import FLOW6_DTYPE, FLOW_DTYPE
from fasttcp.models import Model
from fasttcp.tables import STORAGE

__all__ = ["write", "read", "SnapshotError", "FORMAT_VERSION"]

MAGIC = b"FTCPSNAP"
FORMAT_VERSION = 3     # 2: flow states hold 18 history letters; 3: the events clock
_PREFIX = struct.Struct("<8sII")     # magic, version, header length
_ALIGN = 64
_MODEL_ARRAYS = ("class_of", "table", "actions", "pairs")
# A table's own arrays (fasttcp.tables.STORAGE) are mapped rather than read with mmap=True.

PathLike = Union[str, "os.PathLike[str]"]


class SnapshotError(ValueError):
    """A file that is not a readable fasttcp snapshot: wrong magic or version, truncated,
    failing a checksum, or inconsistent (a header field of the wrong type or range, arrays
    that do not fit the file or each other, tables whose structure the engine cannot trust)."""


# The header's schema. Each check takes a value and where it is ("tracker.now") and raises
# ValueError naming both; a dict is checked for exactly its keys. `load` checks the whole
# header against it before using any of it.
Check = Callable[[Any, str], None]
_I64 = 2**63 - 1


def _fail(where: str, what: str, value: Any) -> None:
    raise ValueError(f"{where} must be {what}, not {value!r:.60}")


def _int(lo: int, hi: int) -> Check:
    def check(value: Any, where: str) -> None:
        if type(value) is not int or not lo <= value <= hi:
            _fail(where, f"an integer from {lo} to {hi}", value)
    return check


def _one_of(*choices: Any) -> Check:
    def check(value: Any, where: str) -> None:
        if not any(type(value) is type(c) and value == c for c in choices):
            _fail(where, f"one of {choices}", value)
    return check


def _text(value: Any, where: str) -> None:
    if type(value) is not str:
        _fail(where, "a string", value)


def _flag(value: Any, where: str) -> None:
    if type(value) is not bool:
        _fail(where, "true or false", value)


def _seconds(value: Any, where: str) -> None:
    if type(value) not in (int, float) or not 0 <= value <= math.inf:
        _fail(where, "a number of seconds >= 0 (Infinity for never)", value)


def _clock_jump(value: Any, where: str) -> None:
    # the upper bound is the Tracker's to check (and say)
    if value is not None and (type(value) not in (int, float) or not 0 <= value < math.inf):
        _fail(where, "null or a finite number of seconds >= 0", value)


def _decimal(value: Any, where: str) -> None:
    if type(value) is not str or not value.isdecimal() or not 0 <= int(value) < 2**64:
        _fail(where, "a decimal string of an integer from 0 to 2**64 - 1", value)


def _list(item: Check, lo: int = 0, hi: int = 2**31) -> Check:
    def check(value: Any, where: str) -> None:
        if type(value) is not list or not lo <= len(value) <= hi:
            _fail(where, f"a list of {lo} to {hi} items", value)
        for i, v in enumerate(value):
            item(v, f"{where}[{i}]")
    return check


def _mapping(item: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if type(value) is not dict:
            _fail(where, "an object", value)
        for k, v in value.items():
            item(v, f"{where}.{k}")
    return check


def _fields(**fields: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if type(value) is not dict or set(value) != set(fields):
            _fail(where, f"an object of exactly {sorted(fields)}", value)
        for k, item in fields.items():
            item(value[k], f"{where}.{k}" if where else k)
    return check


_CAPACITY = _int(1, _engine.MAX_CAPACITY)
_HEADER = _fields(
    model=_fields(name=_text, states=_list(_text, 1, 253), flag_classes=_list(_text, 1, 256),
                  timeouts=_mapping(_seconds), illegal_classes=_list(_text, 0, 256),
                  endpoint_states=_list(_text, 0, 253), endpoint_timeouts=_mapping(_seconds)),
    tracker=_fields(capacity=_CAPACITY, max_capacity=_CAPACITY, keys=_list(_decimal, 4, 4),
                    timeouts=_mapping(_seconds), shards=_one_of(1, 2, 4), flows=_flag,
                    expiry=_flag, clock=_one_of("events", "manual"), evict=_flag,
                    now=_int(0, _I64), resizes=_int(0, _I64), max_clock_jump=_clock_jump,
                    clock_confirm=_int(1, _I64),
                    event_clock=_fields(now=_int(0, _I64), started=_int(0, 1),
                                        suspect=_int(0, _I64), jumps=_int(0, _I64),
                                        run=_int(0, _I64), run_min=_int(0, _I64))),
    tables=_list(_fields(family=_one_of(4, 6), shard=_int(0, 3), capacity=_CAPACITY,
                         used=_int(0, _engine.MAX_CAPACITY),
                         free_head=_int(-1, _engine.MAX_CAPACITY),
                         totals=_fields(**{name: _int(0, _I64) for name in _engine.COUNT_NAMES}),
                         evicting=_flag, wheel_tick=_int(0, _I64 // 10**9), wheel_started=_flag,
                         evict_head=_int(0, _I64), evict_tail=_int(0, _I64)), 0, 8),
    arrays=_list(_fields(name=_text, dtype=_text, shape=_list(_int(0, _I64), 1, 3),
                         offset=_int(0, _I64), size=_int(0, _I64), crc32=_int(0, 2**32 - 1))),
    data_bytes=_int(0, _I64),
)


def _dtype_of(name: str) -> np.dtype:
    known = {"CONN4": _engine.CONN4_DTYPE, "CONN6": _engine.CONN6_DTYPE,
             "FLOW_STATE": _engine.FLOW_STATE_DTYPE, "FLOW": FLOW_DTYPE, "FLOW6": FLOW6_DTYPE}
    return known[name] if name in known else np.dtype(name)


def _dtype_name(dtype: np.dtype) -> str:
    for name in ("CONN4", "CONN6", "FLOW_STATE", "FLOW", "FLOW6"):
        if dtype == _dtype_of(name):
            return name
    return dtype.str


def write(path: PathLike, model: Model, settings: Mapping[str, Any],
          tables: list[dict[str, Any]], arrays: Mapping[str, np.ndarray]) -> None:
    """Writes a tracker's state (`Tracker.save` gives it) to `path` atomically (see the
    module docstring): the model, the tracker's settings, one dict per table and the tables'
    arrays by name. The arrays must not change meanwhile."""
    everything: dict[str, np.ndarray] = {}
    for name in _MODEL_ARRAYS:
        value = getattr(model, name)
        if value is not None:
            everything[f"model.{name}"] = np.ascontiguousarray(value)
    everything.update(arrays)
    header: dict[str, Any] = {
        "model": {"name": model.name, "states": list(model.states),
                  "flag_classes": list(model.flag_classes),
                  "timeouts": dict(model.timeouts),
                  "illegal_classes": list(model.illegal_classes),
                  "endpoint_states": list(model.endpoint_states),
                  "endpoint_timeouts": dict(model.endpoint_timeouts)},
        "tracker": dict(settings),
        "tables": tables,
    }
    _write(path, header, everything)


def _bytes(array: np.ndarray) -> memoryview:
    # flat bytes first: memoryview.cast refuses a multi-dimensional view with no rows
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _temporary_prefix(name: str) -> str:
    """Temporaries of a save to `name` are `.NAME.fasttcp-snapshot-PID-RANDOM`, in its
    directory."""
    return f".{name}.fasttcp-snapshot-"


def _remove_stale_temporaries(directory: str, name: str) -> None:
    """Removes what saves to `name` killed mid-write left behind: its temporaries whose
    writer is gone. A writer holds an exclusive lock on its temporary while it lives (the
    kernel drops it when the process dies, even by SIGKILL), and its pid is in the name. Only
    a file that can be locked and whose writer's pid is not running is removed: the lock alone
    would leave the instant between a writer's creating its file and locking it, and the pid
    alone can be reused."""
    prefix = _temporary_prefix(name)
    for entry in os.listdir(directory):
        pid, _, rest = entry[len(prefix):].partition("-")
        if not entry.startswith(prefix) or not pid.isdecimal() or not rest:
            continue
        try:
            os.kill(int(pid), 0)
            continue                        # the writer runs (or its pid was reused)
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        try:
            fd = os.open(os.path.join(directory, entry), os.O_RDONLY)
        except OSError:
            continue                        # gone meanwhile, or not ours to open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(os.path.join(directory, entry))
        except OSError:
            pass                            # locked (a writer on another host), or not ours
        finally:
            os.close(fd)


def _write(path: PathLike, header: dict, arrays: dict[str, np.ndarray]) -> None:
    manifest: list[dict[str, Any]] = []
    offset = 0
    for name, array in arrays.items():
        manifest.append({"name": name, "dtype": _dtype_name(array.dtype),
                         "shape": list(array.shape), "offset": offset, "size": array.nbytes,
                         "crc32": zlib.crc32(_bytes(array))})
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    end = manifest[-1]["offset"] + manifest[-1]["size"] if manifest else 0
    header = {**header, "arrays": manifest, "data_bytes": end}
    text = json.dumps(header).encode()
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(text)) + text
    head += struct.pack("<I", zlib.crc32(head))
    start = -(-len(head) // _ALIGN) * _ALIGN
    target = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(target))
    _remove_stale_temporaries(directory, name)
    fd, temporary = tempfile.mkstemp(prefix=f"{_temporary_prefix(name)}{os.getpid()}-",
                                     dir=directory)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)      # held until this process closes it or dies
        with os.fdopen(fd, "wb") as out:
            out.write(head + bytes(start - len(head)))
            for entry, array in zip(manifest, arrays.values()):
                out.seek(start + entry["offset"])
                out.write(_bytes(array))
            out.truncate(start + end)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _json_constant(name: str) -> float:
    if name != "Infinity":          # json.dumps writes an infinite timeout so; never NaN
        raise ValueError(f"{name} is not a value a snapshot holds")
    return math.inf


def _read_header(path: str, size: int) -> tuple[dict, int]:
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size or prefix[:8] != MAGIC:
            raise SnapshotError(f"{path}: not a fasttcp snapshot")
        _, version, length = _PREFIX.unpack(prefix)
        if version != FORMAT_VERSION:
            raise SnapshotError(f"{path}: snapshot format {version}; this fasttcp reads "
                                f"format {FORMAT_VERSION}")
        text = f.read(length)
        crc = f.read(4)
    if len(text) < length or len(crc) < 4:
        raise SnapshotError(f"{path}: truncated in its header ({size} bytes)")
    if zlib.crc32(prefix + text) != struct.unpack("<I", crc)[0]:
        raise SnapshotError(f"{path}: damaged header (checksum mismatch)")
    try:
        header = json.loads(text, parse_constant=_json_constant)
    except (ValueError, RecursionError) as error:
        raise SnapshotError(f"{path}: damaged header ({error})") from None
    start = -(-(_PREFIX.size + length + 4) // _ALIGN) * _ALIGN
    return header, start


def _array_specs(header: dict) -> dict[str, tuple[np.dtype, int, bool]]:
    """Name -> (dtype, dimensions, required) of every array the header's settings call for."""
    settings = header["tracker"]
    u1, i8, u4 = np.dtype(np.uint8), np.dtype(np.int64), np.dtype(np.uint32)
    specs = {"model.class_of": (u1, 1, True), "model.table": (u1, 3, True),
             "model.actions": (u1, 3, True), "model.pairs": (u1, 2, False)}
    for table in header["tables"]:
        prefix = f"table.{table['family']}.{table['shard']}"
        specs[f"{prefix}.records"] = (_dtype_of(f"CONN{table['family']}"), 1, True)
        specs[f"{prefix}.class_counts"] = (i8, 1, True)
        specs[f"{prefix}.seq"] = (u1, 2, False)
        if settings["flows"]:
            specs[f"{prefix}.flows"] = (_dtype_of("FLOW_STATE"), 1, True)
            specs[f"ended.{table['family']}"] = (
                _dtype_of("FLOW" if table["family"] == 4 else "FLOW6"), 1, False)
        if settings["expiry"]:
            specs.update({f"{prefix}.due": (u4, 1, True), f"{prefix}.wheel_lengths": (i8, 1, True),
                          f"{prefix}.wheel_entries": (u4, 1, True)})
        if settings["evict"]:
            specs[f"{prefix}.evict_ring"] = (np.dtype(np.uint64), 1, True)
    return specs


def _check_layout(path: str, header: Any, start: int, size: int) -> None:
    """Checks the header against its schema and the arrays it lists against the settings and
    the file, so that nothing is allocated beyond what the file holds (raises ValueError)."""
    _HEADER(header, "")
    if size != start + header["data_bytes"]:
        raise SnapshotError(f"{path}: truncated or extended: the snapshot has "
                            f"{start + header['data_bytes']} bytes, the file {size}")
    settings, tables = header["tracker"], header["tables"]
    if settings["max_capacity"] < settings["capacity"]:
        raise ValueError("tracker.max_capacity is below tracker.capacity")
    keys = [(t["family"], t["shard"]) for t in tables]
    for family in {family for family, _ in keys}:
        if sorted(s for f, s in keys if f == family) != list(range(settings["shards"])):
            raise ValueError(f"tables must hold each of the {settings['shards']} shards of "
                             f"IPv{family} once")
    specs = _array_specs(header)
    names = [entry["name"] for entry in header["arrays"]]
    missing = [name for name, (_, _, required) in specs.items() if required and name not in names]
    unknown = set(names) - set(specs)
    if missing or unknown or len(set(names)) != len(names):
        raise ValueError(f"arrays: missing {missing}, unexpected {sorted(unknown)}, or repeated")
    for entry in header["arrays"]:
        dtype, ndim, _ = specs[entry["name"]]
        shape, where = entry["shape"], f"arrays {entry['name']}"
        if entry["dtype"] != _dtype_name(dtype) or len(shape) != ndim:
            raise ValueError(f"{where} must be {ndim}-dimensional {_dtype_name(dtype)}")
        if entry["size"] != math.prod(shape) * dtype.itemsize or entry["offset"] % _ALIGN:
            raise ValueError(f"{where}: size or offset does not fit its shape")
        if entry["offset"] + entry["size"] > header["data_bytes"]:
            raise SnapshotError(f"{path}: truncated: {entry['name']} needs bytes up to "
                                f"{start + entry['offset'] + entry['size']}, the file has {size}")
    for table in tables:
        prefix = f"table.{table['family']}.{table['shard']}"
        records = header["arrays"][names.index(f"{prefix}.records")]
        if records["shape"] != [table["capacity"]]:
            raise ValueError(f"{prefix}.records must have the table's capacity in rows")


def _arrays(path: str, header: dict, start: int, mmap: bool,
            verify: bool) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for entry in header["arrays"]:
        dtype, shape = _dtype_of(entry["dtype"]), tuple(entry["shape"])
        array: np.ndarray
        if mmap and entry["name"].rsplit(".", 1)[-1] in STORAGE and entry["size"]:
            array = np.memmap(path, dtype=dtype, mode="c", offset=start + entry["offset"],
                              shape=shape)
        else:
            array = np.fromfile(path, dtype=dtype, count=math.prod(shape),
                                offset=start + entry["offset"]).reshape(shape)
        if verify and zlib.crc32(_bytes(array)) != entry["crc32"]:
            raise SnapshotError(f"{path}: damaged: {entry['name']} fails its checksum")
        arrays[entry["name"]] = array
    return arrays


T = TypeVar("T")


def read(path: PathLike, restore: Callable[[Model, dict, list, dict], T], mmap: bool = False,
         verify: bool = True) -> T:
    """Reads a snapshot written by `write` and hands it to `restore`.

    Parameters
    ----------
    path : str or path-like
    restore : callable
        Takes (model, tracker settings, table dicts, arrays by name), as `write` took them,
        and returns the restored object (`Tracker.load` passes its `_from_state`). A
        ValueError, KeyError or TypeError it raises becomes a SnapshotError.
    mmap : bool
        Map the tables' own arrays (records, flows, due ticks, eviction ring) copy-on-write
        from the file instead of reading them.
    verify : bool
        Check every array's CRC-32 (reads all of it, mapped or not). Only the checksums are
        skipped with False: the header's schema, the arrays' fit to the file and the tables'
        structure are always checked.

    Raises
    ------
    SnapshotError
        When the file is not a snapshot, is of another format version, is truncated, damaged
        or inconsistent. Nothing is returned unless every check has passed.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    header, start = _read_header(path, size)
    try:
        _check_layout(path, header, start, size)
    except SnapshotError:
        raise
    except ValueError as error:
        raise SnapshotError(f"{path}: inconsistent snapshot ({error})") from None
    arrays = _arrays(path, header, start, mmap, verify)
    try:
        spec = header["model"]
        model = Model(name=spec["name"], states=tuple(spec["states"]),
                      flag_classes=tuple(spec["flag_classes"]),
                      class_of=arrays["model.class_of"], table=arrays["model.table"],
                      actions=arrays["model.actions"], timeouts=spec["timeouts"],
                      illegal_classes=tuple(spec["illegal_classes"]),
                      endpoint_states=tuple(spec["endpoint_states"]),
                      pairs=arrays.get("model.pairs"),
                      endpoint_timeouts=spec["endpoint_timeouts"])
        return restore(model, header["tracker"], header["tables"], arrays)
    except (KeyError, TypeError, ValueError) as error:
        raise SnapshotError(f"{path}: inconsistent snapshot ({error})") from None
