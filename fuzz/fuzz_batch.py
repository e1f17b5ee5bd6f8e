"""Coverage-guided fuzzing of Tracker.update's validation and the kernel behind it (atheris).

    python fuzz/fuzz_batch.py fuzz/corpus/batch -max_total_time=60

The input picks column dtypes, lengths and contents. A batch is either applied (and the
tracker's invariants hold) or rejected with TypeError / ValueError / TableFullError leaving the
tracker as it was.
"""
import sys

import atheris
import numpy as np

with atheris.instrument_imports():
    import fasttcp

DTYPES = [np.int64, np.uint64, np.int32, np.uint32, np.uint16, np.uint8, np.int8, np.float64,
          np.bool_]
COLUMNS = ("ts", "src", "sport", "dst", "dport", "flags", "length")


def column(fdp: atheris.FuzzedDataProvider, n: int) -> np.ndarray:
    dtype = np.dtype(DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)])
    length = n if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 8)
    raw = fdp.ConsumeBytes(length * dtype.itemsize)
    raw += bytes(length * dtype.itemsize - len(raw))
    return np.frombuffer(raw, dtype=dtype).copy()


def state(tracker: fasttcp.Tracker) -> tuple:
    return (bytes(tracker.records(4).tobytes()), bytes(tracker.records(6).tobytes()),
            tuple(tracker.histogram().values()), tuple(tracker.stats.values()))


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    tracker = fasttcp.Tracker(fdp.PickValueInList(["rfc793", "conntrack"]), capacity=4,
                              max_capacity=fdp.PickValueInList([4, 64]),
                              evict=fdp.ConsumeBool(), flows=True)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        n = fdp.ConsumeIntInRange(0, 16)
        batch = {name: column(fdp, n) for name in COLUMNS}
        if fdp.ConsumeBool():      # IPv6: 16-byte rows
            for name in ("src", "dst"):
                batch[name] = np.frombuffer(fdp.ConsumeBytes(16 * n).ljust(16 * n, b"\0"),
                                            dtype=np.uint8).reshape(n, 16)
        before = state(tracker)
        try:
            tracker.update(**batch)
        except (TypeError, ValueError):
            assert state(tracker) == before, "a rejected batch changed the tracker"
            continue
        except fasttcp.TableFullError:
            pass
        assert sum(tracker.histogram().values()) == len(tracker)
        tracker.pop_flows(4)
        tracker.live_flows(6)


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
