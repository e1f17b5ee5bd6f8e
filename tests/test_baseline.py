"""The bare record loop used for scale in benchmarks."""
import numpy as np
import pytest

from fasttcp._baseline import touch_records


def test_touch_records_updates_the_named_records():
    records = np.zeros((4, 8), dtype=np.uint64)
    touch_records(records, np.array([1, 3, 1], dtype=np.uint32))
    assert records[:, 0].tolist() == [0, 2, 0, 1]
    assert records[1, 5] == 2 and records[3, 5] == 1


def test_touch_records_checks_its_input():
    with pytest.raises(IndexError, match="out of range"):
        touch_records(np.zeros((4, 8), dtype=np.uint64), np.array([4], dtype=np.uint32))
    with pytest.raises(ValueError, match="8 uint64 words"):
        touch_records(np.zeros((4, 4), dtype=np.uint64), np.array([0], dtype=np.uint32))
