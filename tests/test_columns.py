"""The compiled batch-column validator (fasttcp/_columns.pyx) that Tracker.update calls."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fasttcp
from fasttcp._columns import address_columns, batch_columns, integer_column

ORDER = ("ts", "src", "sport", "dst", "dport", "flags", "length")


def rows(dtype, n=3):
    events = np.zeros(n, dtype=dtype)
    events["ts"] = np.arange(n) * 1000
    if events["src"].ndim == 2:
        events["src"][:, 15], events["dst"][:, 15] = 1, 2
    else:
        events["src"], events["dst"] = 1, 2
    events["sport"], events["dport"], events["flags"] = 40000, 80, 0x10
    events["length"] = np.arange(n)
    if "seq" in dtype.names:
        events["seq"], events["ack"], events["window"], events["wscale"] = 7, 9, 1000, -1
    return events


def columns(events):
    return [np.ascontiguousarray(events[name]) for name in ORDER]


def good(n=1):
    return [np.zeros(n, np.int64), np.ones(n, np.uint32), np.full(n, 40000, np.uint16),
            np.full(n, 2, np.uint32), np.full(n, 80, np.uint16), np.full(n, 0x10, np.uint8),
            np.zeros(n, np.uint32)]


def with_(index, value, n=1):
    cols = good(n)
    cols[index] = value
    return cols


# Every error the Python validator raised before, with its message: tests elsewhere match them.
ERRORS = [
    ((rows(fasttcp.EVENT_DTYPE), np.zeros(3, np.uint32)), {}, TypeError,
     "pass either one structured array or separate columns"),
    ((rows(fasttcp.EVENT_DTYPE)[["ts", "src", "dst", "sport", "dport"]],), {}, ValueError,
     r"structured events lack fields \['flags'\]"),
    ((np.zeros(1, np.int64),), {}, TypeError, "update needs ts, src, sport, dst, dport and flags"),
    (with_(0, np.zeros((1, 1), np.int64)), {}, ValueError, r"ts must be 1-dimensional"),
    (with_(0, np.array([-1])), {}, ValueError, "ts has negative timestamps"),
    (with_(0, np.array([1.0])), {}, TypeError, r"ts must be an integer array \(int64\), not float64"),
    (with_(2, np.array([1, 2], np.uint16)), {}, ValueError, "sport has 2 elements, expected 1 like ts"),
    (with_(4, np.array([70000])), {}, ValueError, r"dport has values outside 0\.\.65535"),
    (with_(5, np.array([256])), {}, ValueError, r"flags has values outside 0\.\.255"),
    (with_(6, np.array([-1])), {}, ValueError, r"length has values outside 0\.\.4294967295"),
    (with_(1, np.array([2**32])), {}, ValueError, r"src has values outside 0\.\.4294967295"),
    (with_(1, np.zeros((1, 8), np.uint8)), {}, ValueError,
     r"IPv6 src must be uint8 of shape \(n, 16\), got uint8 \(1, 8\)"),
    (with_(3, np.zeros((2, 16), np.uint8)), {}, ValueError, "dst has 2 rows, expected 1 like ts"),
    (with_(3, np.zeros((1, 16), np.uint8)), {}, ValueError,
     "src and dst are of different address families"),
    (good(), {"seq": np.zeros(1, np.uint32)}, TypeError, "seq, ack and window come together"),
    (good(), {"wscale": np.zeros(1, np.int8)}, TypeError, "wscale needs seq, ack and window"),
    (good(), {"seq": np.zeros(1, np.uint32), "ack": np.zeros(1, np.uint32),
              "window": np.zeros(1, np.uint16), "wscale": np.array([15], np.int8)},
     ValueError, r"wscale has values outside -1\.\.14"),
    (good(), {"seq": np.zeros(1, np.uint32), "ack": np.zeros(2, np.uint32),
              "window": np.zeros(1, np.uint16)}, ValueError, "ack has 2 elements, expected 1"),
]


@pytest.mark.parametrize("args, kwargs, error, message", ERRORS)
def test_every_error_names_the_problem(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        batch_columns(*args, **kwargs)


@pytest.mark.parametrize("args, kwargs, error, message", ERRORS)
def test_update_raises_the_same_and_changes_nothing(args, kwargs, error, message):
    t = fasttcp.Tracker(capacity=16, seed=0)
    t.update(*good())
    before = (t.stats, len(t), t.now)
    with pytest.raises(error, match=message):
        t.update(*args, **kwargs)
    assert (t.stats, len(t), t.now) == before


@pytest.mark.parametrize("writable", [True, False])
def test_ready_columns_are_taken_as_they_are(writable):
    cols = good(4)
    for col in cols:
        col.flags.writeable = writable
    family, out, sequence = batch_columns(*cols)
    assert family == 4 and sequence is None
    assert all(a is b for a, b in zip(out, cols))


@pytest.mark.parametrize("dtype", [fasttcp.EVENT_DTYPE, fasttcp.EVENT6_DTYPE,
                                   fasttcp.SEGMENT_DTYPE, fasttcp.SEGMENT6_DTYPE])
@pytest.mark.parametrize("writable", [True, False])
def test_structured_rows_split_as_their_columns(dtype, writable):
    events = rows(dtype, 5)
    events.flags.writeable = writable
    family, out, sequence = batch_columns(events)
    expected = columns(events)
    assert family == (6 if dtype in (fasttcp.EVENT6_DTYPE, fasttcp.SEGMENT6_DTYPE) else 4)
    for got, want in zip(out, expected):
        assert got.flags.c_contiguous and got.flags.aligned
        if want.ndim == 2:          # IPv6 addresses: the 16 bytes as two uint64
            assert got.dtype == np.uint64 and bytes(got) == bytes(want)
        else:
            np.testing.assert_array_equal(got, want)
    if "seq" in dtype.names:
        for got, name in zip(sequence, ("seq", "ack", "window", "wscale")):
            np.testing.assert_array_equal(got, events[name])
    else:
        assert sequence is None


@pytest.mark.parametrize("events", [
    rows(fasttcp.EVENT_DTYPE, 6)[::2],                                  # strided rows
    rows(fasttcp.EVENT_DTYPE, 3).astype(                                # fields to convert
        [("ts", ">i8"), ("src", "<u4"), ("dst", "<u4"), ("sport", "<u4"), ("dport", "<i4"),
         ("flags", "u1"), ("length", "<u2")]),
    rows(fasttcp.EVENT_DTYPE, 3)[["ts", "src", "dst", "sport", "dport", "flags"]],  # no length
], ids=["strided", "other-dtypes", "no-length"])
def test_other_structured_arrays_take_the_general_path(events):
    family, out, sequence = batch_columns(events)
    want = [np.asarray(events[name]) if name in events.dtype.names else np.zeros(len(events))
            for name in ORDER]
    assert family == 4 and sequence is None
    for got, expected in zip(out, want):
        np.testing.assert_array_equal(got, expected)


def test_one_dtype_many_plans_are_kept_apart():
    # the split plan is cached per dtype object: dtypes equal in layout but of other field
    # types must not share a plan
    a = rows(fasttcp.EVENT_DTYPE, 2)
    b = a.astype([("ts", "<i8"), ("src", "<u4"), ("dst", "<u4"), ("sport", "<u2"),
                  ("dport", "<u2"), ("flags", "u1"), ("length", "u1")])
    b["length"] = [3, 4]
    assert batch_columns(a)[1][6].tolist() == [0, 1]
    assert batch_columns(b)[1][6].tolist() == [3, 4]
    assert batch_columns(a)[1][6].tolist() == [0, 1]


INT_DTYPES = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", ">i4", ">u2"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(INT_DTYPES), st.sampled_from([np.uint8, np.uint16, np.uint32, np.int64]),
       st.lists(st.integers(-2**63, 2**64 - 1), max_size=5))
def test_integer_column_converts_exactly_when_every_value_fits(source, target, values):
    source = np.dtype(source)
    info = np.iinfo(source)
    values = [v for v in values if info.min <= v <= info.max]
    arr = np.array(values, dtype=source)
    lo, hi = np.iinfo(target).min, np.iinfo(target).max
    if all(lo <= v <= hi for v in values):
        out = integer_column("x", arr, np.dtype(target), len(values))
        assert out.dtype == target and out.flags.c_contiguous and out.flags.aligned
        assert out.tolist() == values
    else:
        with pytest.raises(ValueError, match=f"x has values outside {lo}..{hi}"):
            integer_column("x", arr, np.dtype(target), len(values))


def test_ipv6_forms_are_all_taken():
    raw = np.arange(32, dtype=np.uint8).reshape(2, 16)
    for form in (raw, raw.view("V16").ravel(), raw.view("S16").ravel()):
        family, src, dst = address_columns(form, raw, 2)
        assert family == 6 and src.dtype == np.uint64 and bytes(src) == bytes(raw)

