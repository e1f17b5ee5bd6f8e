"""Coverage-guided fuzzing of snapshot loading (atheris).

    python fuzz/fuzz_snapshot.py fuzz/corpus/snapshot -max_total_time=60

The input mutates a valid small snapshot (flows, expiry, eviction, sequence state, two
shards, a free list): header fields set to awkward values, array bytes overwritten, arrays
cut short. The file is written with every checksum recomputed, so what is fuzzed is what
`load` checks beyond them. `load` either raises SnapshotError or returns a tracker that then
survives an update, an expiry and a save; anything else is a finding.
"""
import copy
import json
import os
import struct
import sys
import tempfile
import zlib

import atheris
import numpy as np

with atheris.instrument_imports():
    import fasttcp
    from fasttcp import snapshot
    from fasttcp.synth import generate

S = 1_000_000_000
WORK = tempfile.TemporaryDirectory(prefix="fuzz-snapshot-")
PATH = os.path.join(WORK.name, "t.snap")
AWKWARD = [-1, 0, 1, 2, 3, 4, 5, 6, 7, 63, 64, 4095, 4096, 2**31, 2**32 - 1, 2**32, 2**63 - 1,
           2**63, 2**64, -2**63, 1.5, float("inf"), "", "x", "12", None, True, False, [], {}]


def _traffic(connections: int, seed: int) -> np.ndarray:
    return np.concatenate(list(generate(connections, seed=seed, rate=200.0)))


def _base() -> tuple[dict, dict]:
    t = fasttcp.Tracker(flows=True, capacity=16, max_capacity=64, evict=True, shards=2, seed=1)
    t.update(_traffic(12, seed=2))       # with sequence numbers: sequence state kept
    t.expire(t.now + 30 * S)             # some records freed: a free list
    t.save(PATH)
    header, start = snapshot._read_header(PATH, os.path.getsize(PATH))
    arrays = snapshot._arrays(PATH, header, start, mmap=False, verify=True)
    return header, arrays


BASE_HEADER, BASE_ARRAYS = _base()
MORE = _traffic(20, seed=3)


def _paths(node, path=()):
    """Every place in the header a value sits (the manifest excluded: it is written anew)."""
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in items:
        if path or key not in ("arrays", "data_bytes"):
            yield from _paths(value, path + (key,))


def _set(header: dict, path: tuple, value) -> None:
    node = header
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _mutated(fdp: atheris.FuzzedDataProvider) -> tuple[dict, dict, list]:
    header = copy.deepcopy(BASE_HEADER)
    arrays = {name: array.copy() for name, array in BASE_ARRAYS.items()}
    manifest_changes = []
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        kind = fdp.ConsumeIntInRange(0, 4)
        if kind <= 1:                                   # a header field
            # leaves first: an input that runs out of bytes picks index 0
            paths = sorted((p for p in _paths(header) if p), key=len, reverse=True)
            path = paths[fdp.ConsumeIntInRange(0, len(paths) - 1)]
            value = (fdp.PickValueInList(AWKWARD) if fdp.ConsumeBool()
                     else fdp.ConsumeIntInRange(-2**40, 2**40))
            _set(header, path, value)
        elif kind <= 3:                                 # bytes of an array
            names = sorted(arrays)
            array = arrays[names[fdp.ConsumeIntInRange(0, len(names) - 1)]]
            raw = array.reshape(-1).view(np.uint8) if array.size else None
            if raw is not None:
                at = fdp.ConsumeIntInRange(0, len(raw) - 1)
                chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8))
                raw[at:at + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)[: len(raw) - at]
        elif fdp.ConsumeBool():                         # an array cut short
            names = sorted(arrays)
            name = names[fdp.ConsumeIntInRange(0, len(names) - 1)]
            arrays[name] = arrays[name][: fdp.ConsumeIntInRange(0, len(arrays[name]))].copy()
        else:                                           # a manifest field, after writing
            manifest_changes.append((fdp.ConsumeIntInRange(0, 64),
                                     fdp.PickValueInList(["name", "dtype", "shape", "offset",
                                                          "size"]),
                                     fdp.PickValueInList(AWKWARD + ["O", "<u4", [1 << 40]])))
    return header, arrays, manifest_changes


def _write(header: dict, arrays: dict, manifest_changes: list) -> None:
    snapshot._write(PATH, {k: v for k, v in header.items() if k not in ("arrays", "data_bytes")},
                    arrays)
    if not manifest_changes:
        return
    with open(PATH, "rb") as f:
        data = f.read()
    saved, start = snapshot._read_header(PATH, len(data))
    for at, field, value in manifest_changes:
        saved["arrays"][at % len(saved["arrays"])][field] = value
    text = json.dumps(saved).encode()
    head = struct.pack("<8sII", snapshot.MAGIC, snapshot.FORMAT_VERSION, len(text)) + text
    head += struct.pack("<I", zlib.crc32(head))
    with open(PATH, "wb") as f:
        f.write(head + bytes(-len(head) % 64) + data[start:])


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    _write(*_mutated(fdp))
    try:
        tracker = fasttcp.Tracker.load(PATH, verify=fdp.ConsumeBool(), mmap=fdp.ConsumeBool())
    except snapshot.SnapshotError:
        return
    try:
        tracker.update(MORE)
    except fasttcp.TableFullError:
        pass
    tracker.expire(min(tracker.now + 600 * S, 2**63 - 1))     # a saved now may be the last
    assert sum(tracker.histogram().values()) == len(tracker)
    tracker.pop_flows(4)
    tracker.live_flows(4)
    tracker.save(PATH)
    tracker.close()


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
