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
target, so a crash leaves the old snapshot or the new one, never half of one. Loading checks
everything before building anything: a truncated or damaged file raises `SnapshotError`, never
returns a partial tracker. With ``mmap=True`` the record arrays are mapped copy-on-write from
the file instead of read: the pages come in as they are touched and changes stay in memory.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from fasttcp import _engine
from fasttcp.flows import FLOW6_DTYPE, FLOW_DTYPE
from fasttcp.models import Model

if TYPE_CHECKING:
    from fasttcp.tracker import Tracker

__all__ = ["save", "load", "SnapshotError", "FORMAT_VERSION"]

MAGIC = b"FTCPSNAP"
FORMAT_VERSION = 2     # 2: flow states hold 18 history letters
_PREFIX = struct.Struct("<8sII")     # magic, version, header length
_ALIGN = 64
_MODEL_ARRAYS = ("class_of", "table", "actions", "pairs")
# A table's own arrays, as FlowTable.storage gives them; mapped rather than read with mmap=True.
_STORAGE = ("records", "flows", "due", "evict_ring", "seq")

PathLike = Union[str, "os.PathLike[str]"]


class SnapshotError(ValueError):
    """A file that is not a readable fasttcp snapshot: wrong magic or version, truncated,
    or failing a checksum."""


def _dtype_of(name: str) -> np.dtype:
    known = {"CONN4": _engine.CONN4_DTYPE, "CONN6": _engine.CONN6_DTYPE,
             "FLOW_STATE": _engine.FLOW_STATE_DTYPE, "FLOW": FLOW_DTYPE, "FLOW6": FLOW6_DTYPE}
    return known[name] if name in known else np.dtype(name)


def _dtype_name(dtype: np.dtype) -> str:
    for name in ("CONN4", "CONN6", "FLOW_STATE", "FLOW", "FLOW6"):
        if dtype == _dtype_of(name):
            return name
    return dtype.str


def save(tracker: "Tracker", path: PathLike) -> None:
    """Writes `tracker` to `path` atomically (see the module docstring)."""
    arrays: dict[str, np.ndarray] = {}
    model = tracker.model
    for name in _MODEL_ARRAYS:
        value = getattr(model, name)
        if value is not None:
            arrays[f"model.{name}"] = np.ascontiguousarray(value)
    tables = []
    with tracker._lock:
        for family, shards in sorted(tracker._tables.items()):
            for shard, table in enumerate(shards):
                tracker._collect_ended(table)
                prefix = f"table.{family}.{shard}"
                for name, array in zip(_STORAGE, table.storage):
                    if array is not None:
                        arrays[f"{prefix}.{name}"] = array
                wheel = table.wheel_lists()
                if wheel is not None:
                    arrays[f"{prefix}.wheel_lengths"], arrays[f"{prefix}.wheel_entries"] = wheel
                arrays[f"{prefix}.class_counts"] = np.array(table.class_counts)
                tables.append({"family": family, "shard": shard, "capacity": table.capacity,
                               **table.counters()})
        for family, parts in tracker._ended.items():
            if parts:
                arrays[f"ended.{family}"] = np.concatenate(parts)
        header: dict[str, Any] = {
            "model": {"name": model.name, "states": list(model.states),
                      "flag_classes": list(model.flag_classes),
                      "timeouts": dict(model.timeouts),
                      "illegal_classes": list(model.illegal_classes),
                      "endpoint_states": list(model.endpoint_states),
                      "endpoint_timeouts": dict(model.endpoint_timeouts)},
            "tracker": {"capacity": tracker.capacity, "max_capacity": tracker.max_capacity,
                        "keys": [str(k) for k in tracker._keys], "timeouts": tracker.timeouts,
                        "shards": tracker.shards, "flows": tracker.keeps_flows,
                        "expiry": tracker.expiry, "clock": tracker.clock,
                        "evict": tracker.evict, "now": tracker.now,
                        "resizes": tracker.resizes, "max_clock_jump": tracker.max_clock_jump,
                        "clock_confirm": tracker.clock_confirm,
                        "event_clock": tracker._clock.state()},
            "tables": tables,
        }
        _write(path, header, arrays)


def _bytes(array: np.ndarray) -> memoryview:
    return np.ascontiguousarray(array).data.cast("B")


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
    directory = os.path.dirname(os.path.abspath(target))
    fd, temporary = tempfile.mkstemp(prefix=".fasttcp-snapshot-", dir=directory)
    try:
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
        header = json.loads(text)
    except ValueError as error:
        raise SnapshotError(f"{path}: damaged header ({error})") from None
    start = -(-(_PREFIX.size + length + 4) // _ALIGN) * _ALIGN
    return header, start


def _arrays(path: str, header: dict, start: int, size: int, mmap: bool,
            verify: bool) -> dict[str, np.ndarray]:
    if size != start + header["data_bytes"]:
        raise SnapshotError(f"{path}: truncated or extended: the snapshot has "
                            f"{start + header['data_bytes']} bytes, the file {size}")
    arrays: dict[str, np.ndarray] = {}
    for entry in header["arrays"]:
        end = start + entry["offset"] + entry["size"]
        if end > size:
            raise SnapshotError(f"{path}: truncated: {entry['name']} needs bytes up to {end}, "
                                f"the file has {size}")
        dtype, shape = _dtype_of(entry["dtype"]), tuple(entry["shape"])
        array: np.ndarray
        if mmap and entry["name"].rsplit(".", 1)[-1] in _STORAGE:
            array = np.memmap(path, dtype=dtype, mode="c", offset=start + entry["offset"],
                              shape=shape)
        else:
            array = np.fromfile(path, dtype=dtype, count=int(np.prod(shape)),
                                offset=start + entry["offset"]).reshape(shape)
        if verify and zlib.crc32(_bytes(array)) != entry["crc32"]:
            raise SnapshotError(f"{path}: damaged: {entry['name']} fails its checksum")
        arrays[entry["name"]] = array
    return arrays


def load(path: PathLike, mmap: bool = False, verify: bool = True) -> "Tracker":
    """Reads a snapshot written by `save` back into a new Tracker.

    Parameters
    ----------
    path : str or path-like
    mmap : bool
        Map the tables' own arrays (records, flows, due ticks, eviction ring) copy-on-write
        from the file instead of reading them.
    verify : bool
        Check every array's CRC-32 (reads all of it, mapped or not).

    Raises
    ------
    SnapshotError
        When the file is not a snapshot, is of another format version, is truncated, damaged
        or inconsistent. Nothing is returned unless every check has passed.
    """
    from fasttcp.tracker import Tracker

    path = os.fspath(path)
    size = os.path.getsize(path)
    header, start = _read_header(path, size)
    arrays = _arrays(path, header, start, size, mmap, verify)
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
        settings = header["tracker"]
        tracker = Tracker(model, capacity=settings["capacity"],
                          max_capacity=settings["max_capacity"], timeouts=settings["timeouts"],
                          shards=settings["shards"], flows=settings["flows"],
                          expiry=settings["expiry"], clock=settings["clock"],
                          evict=settings["evict"], max_clock_jump=settings["max_clock_jump"],
                          clock_confirm=settings["clock_confirm"])
        tracker._clock.restore(settings["event_clock"])
        tracker._keys = tuple(int(k) for k in settings["keys"])  # type: ignore[assignment]
        tracker.now, tracker.resizes = settings["now"], settings["resizes"]
        for spec in header["tables"]:
            family, shard = spec["family"], spec["shard"]
            table = tracker._family(family)[shard]
            if table.capacity != spec["capacity"]:
                table.resize(spec["capacity"])
            prefix = f"table.{family}.{shard}"
            wheel = None
            if f"{prefix}.wheel_lengths" in arrays:
                wheel = (arrays[f"{prefix}.wheel_lengths"], arrays[f"{prefix}.wheel_entries"])
            table.restore(*(arrays.get(f"{prefix}.{name}") for name in _STORAGE), wheel,
                          arrays[f"{prefix}.class_counts"], spec)
        for family in (4, 6):
            if f"ended.{family}" in arrays:
                tracker._ended[family].append(arrays[f"ended.{family}"])
    except (KeyError, TypeError, ValueError) as error:
        raise SnapshotError(f"{path}: inconsistent snapshot ({error})") from None
    return tracker
