"""Batch columns for `Tracker.update`: checks the arguments as given and returns them as the
contiguous, aligned, native-typed columns the engine reads.

A column that is already right (a 1-D aligned contiguous array of the exact dtype and length)
is taken as it is with a few pointer checks; anything else goes through the general path
(`integer_column`), which accepts any integer array whose values all fit. A structured array
whose fields have the exact column dtypes is split into columns in one pass over its rows.
"""
cimport numpy as cnp
from libc.string cimport memcpy

from fasttcp._typedefs cimport int8_t, int64_t, intp_t, uint8_t

import numpy as np

cnp.import_array()

_I64, _U32, _U16, _U8, _I8 = (np.dtype(np.int64), np.dtype(np.uint32), np.dtype(np.uint16),
                              np.dtype(np.uint8), np.dtype(np.int8))
_U64 = np.dtype(np.uint64)
_ADDR6 = np.dtype((np.uint8, (16,)))
# The columns in `batch_columns`' order, with the dtype each must have.
_NAMES = ("ts", "src", "sport", "dst", "dport", "flags", "length", "seq", "ack", "window",
          "wscale")
_DTYPES = (_I64, _U32, _U16, _U32, _U16, _U8, _U32, _U32, _U32, _U16, _I8)
DEF MAX_FIELDS = 11
cdef int _TYPENUMS[MAX_FIELDS]          # the type number of each of _DTYPES
for _c, _dtype in enumerate(_DTYPES):
    _TYPENUMS[_c] = _dtype.num
_REQUIRED = frozenset(("ts", "src", "dst", "sport", "dport", "flags"))


cdef inline bint _ready(object arr, int typenum, intp_t n):
    """True if `arr` is a 1-D aligned contiguous native array of `typenum` with n items (any
    number when n < 0): what the engine takes as it is."""
    if type(arr) is not np.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>arr
    return (cnp.PyArray_NDIM(a) == 1 and cnp.PyArray_TYPE(a) == typenum
            and cnp.PyArray_ISCARRAY_RO(a) and cnp.PyArray_ISNOTSWAPPED(a)
            and (n < 0 or cnp.PyArray_DIM(a, 0) == n))


def integer_column(str name, arr, dtype, n):
    """`arr` as a contiguous aligned 1-D array of `dtype`, checking its kind, its length (n;
    None: any) and that every value fits.

    Raises ValueError for a wrong shape, length or a value out of range, TypeError for a
    non-integer array.
    """
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


cdef inline object _column(str name, object arr, object dtype, int typenum, intp_t n):
    if _ready(arr, typenum, n):
        return arr
    return integer_column(name, arr, dtype, None if n < 0 else n)


def address_columns(src, dst, intp_t n):
    """(family, src, dst): IPv4 as uint32 (n,), IPv6 as uint64 (n, 2) over the 16 bytes.

    Takes uint32 (or other integer) (n,) arrays for IPv4, uint8 (n, 16), 16-byte void or S16
    arrays for IPv6, both of one family.
    """
    if _ready(src, cnp.NPY_UINT32, n) and _ready(dst, cnp.NPY_UINT32, n):
        return 4, src, dst
    src, dst = np.asarray(src), np.asarray(dst)
    out = []
    families = set()
    for name, arr in (("src", src), ("dst", dst)):
        if arr.dtype.kind == "V" and arr.dtype.itemsize == 16 or arr.dtype == np.dtype("S16"):
            arr = arr.view(np.uint8).reshape(len(arr), 16)
        if arr.ndim == 2:
            if arr.shape[1] != 16 or arr.dtype != _U8:
                raise ValueError(f"IPv6 {name} must be uint8 of shape (n, 16), "
                                 f"got {arr.dtype} {arr.shape}")
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows, expected {n} like ts")
            families.add(6)
            arr = np.ascontiguousarray(arr).view(_U64)
            if not arr.flags.aligned:
                arr = arr.copy()
        else:
            families.add(4)
            arr = integer_column(name, arr, _U32, n)
        out.append(arr)
    if len(families) > 1:
        raise ValueError("src and dst are of different address families")
    return families.pop(), out[0], out[1]


cdef struct field_t:
    intp_t offset       # of the field in a row
    intp_t size         # bytes: 1, 2, 4, 8 or 16
    char* out           # the column, size bytes a row


DEF BLOCK = 256     # rows split field by field while they sit in L1 (256 x 60 bytes)


cdef void split_fields(const char* rows, intp_t n, intp_t itemsize, const field_t* fields,
                       int k) noexcept nogil:
    """Each row's k fields into their columns: a block of rows at a time (one pass over the
    rows in memory), field by field within the block, so that each inner loop copies one
    constant size."""
    cdef intp_t lo, hi, i
    cdef int j
    cdef const char* src
    cdef char* out
    for lo in range(0, n, BLOCK):
        hi = min(lo + BLOCK, n)
        for j in range(k):
            src, out = rows + fields[j].offset, fields[j].out
            if fields[j].size == 1:
                for i in range(lo, hi):
                    out[i] = src[i * itemsize]
            elif fields[j].size == 2:
                for i in range(lo, hi):
                    memcpy(out + 2 * i, src + i * itemsize, 2)
            elif fields[j].size == 4:
                for i in range(lo, hi):
                    memcpy(out + 4 * i, src + i * itemsize, 4)
            elif fields[j].size == 8:
                for i in range(lo, hi):
                    memcpy(out + 8 * i, src + i * itemsize, 8)
            else:
                for i in range(lo, hi):
                    memcpy(out + 16 * i, src + i * itemsize, 16)


# Split plans by dtype object (the rows of one capture or one array share it), with the dtype
# itself so that the id stays its own: a structured dtype's hash and comparisons cost
# microseconds, more than splitting a small batch.
cdef dict _plans = {}
DEF MAX_PLANS = 64


cdef object _plan(object dtype):
    """[(column, offset, size)] of the fields to split out of `dtype`'s rows, or None when a
    field (of those in _NAMES) does not have its column's exact dtype, the addresses are of
    two families or a required field is missing."""
    cached = _plans.get(id(dtype))
    if cached is not None and cached[0] is dtype:
        return cached[1]
    fields = dtype.fields
    plan = []
    families = set()
    for c, (name, column) in enumerate(zip(_NAMES, _DTYPES)):
        field = fields.get(name)
        if field is None:
            continue
        if name in ("src", "dst"):
            families.add(6 if field[0] == _ADDR6 else 4)
            if field[0] == _ADDR6:
                column = _ADDR6
        if field[0] != column:
            plan = None
            break
        plan.append((c, field[1], field[0].itemsize))
    if len(families) > 1 or not _REQUIRED <= set(fields):
        plan = None                 # the general path says what is wrong
    if len(_plans) >= MAX_PLANS:
        _plans.clear()
    _plans[id(dtype)] = (dtype, plan)
    return plan


cdef list _split(cnp.ndarray events, list plan):
    """The columns `plan` names of a 1-D C-contiguous structured array, in one pass over its
    rows. Absent fields give None; IPv6 addresses come as uint8 (n, 16), as separate
    columns would."""
    cdef field_t spec[MAX_FIELDS]
    cdef int k = 0
    cdef intp_t n = cnp.PyArray_DIM(events, 0)
    cdef list out = [None] * len(_NAMES)
    cdef cnp.npy_intp dims[2]
    dims[0] = n
    for c, offset, size in plan:
        # the C API: np.empty costs most of a small batch's split
        if size == 16:
            dims[1] = 16
            column = cnp.PyArray_EMPTY(2, dims, cnp.NPY_UINT8, 0)
        else:
            column = cnp.PyArray_EMPTY(1, dims, _TYPENUMS[c], 0)
        spec[k].offset = offset
        spec[k].size = size
        spec[k].out = <char*>cnp.PyArray_DATA(column)
        k += 1
        out[c] = column
    cdef const char* rows = <const char*>cnp.PyArray_DATA(events)
    cdef intp_t itemsize = cnp.PyArray_ITEMSIZE(events)
    with nogil:
        split_fields(rows, n, itemsize, spec, k)
    return out


cdef list _structured(object events, tuple others):
    """The columns of a structured batch, as separate arguments would give them."""
    for other in others:
        if other is not None:
            raise TypeError("pass either one structured array or separate columns")
    if (type(events) is np.ndarray and cnp.PyArray_NDIM(<cnp.ndarray>events) == 1
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>events)):
        plan = _plan(events.dtype)
        if plan is not None:
            return _split(events, plan)
    names = events.dtype.names
    missing = _REQUIRED - set(names)
    if missing:
        raise ValueError(f"structured events lack fields {sorted(missing)}; "
                         f"see fasttcp.EVENT_DTYPE")
    return [events[name] if name in names else None for name in _NAMES]


cdef int _check_ts(const int64_t[::1] ts) except -1:
    cdef intp_t i
    cdef int64_t lowest = 0
    for i in range(ts.shape[0]):        # a plain reduction: the compiler vectorises it
        lowest = min(lowest, ts[i])
    if lowest < 0:
        raise ValueError("ts has negative timestamps (expected nanoseconds since an epoch)")
    return 0


cdef int _check_wscale(const int8_t[::1] wscale) except -1:
    cdef intp_t i
    cdef int8_t lowest = -1, highest = 14
    for i in range(wscale.shape[0]):
        lowest = min(lowest, wscale[i])
        highest = max(highest, wscale[i])
    if lowest < -1 or highest > 14:
        raise ValueError("wscale has values outside -1..14 (RFC 7323 caps it at 14)")
    return 0


def batch_columns(ts, src=None, sport=None, dst=None, dport=None, flags=None, length=None,
                  seq=None, ack=None, window=None, wscale=None):
    """Checks one batch as `Tracker.update` takes it and returns its columns.

    Returns (family, (ts, src, sport, dst, dport, flags, length), sequence): each column
    1-D, contiguous, aligned and of the engine's dtype (int64, uint32 or uint64 (n, 2),
    uint16, uint32 or uint64 (n, 2), uint16, uint8, uint32), `length` zeros when absent, and
    `sequence` (seq, ack, window, wscale) or None. Raises TypeError or ValueError naming the
    argument at fault; nothing is changed.
    """
    if getattr(getattr(ts, "dtype", None), "names", None):
        (ts, src, sport, dst, dport, flags, length, seq, ack, window,
         wscale) = _structured(ts, (src, sport, dst, dport, flags, length, seq, ack, window,
                                    wscale))
    elif src is None or sport is None or dst is None or dport is None or flags is None:
        raise TypeError("update needs ts, src, sport, dst, dport and flags")
    ts = _column("ts", ts, _I64, cnp.NPY_INT64, -1)
    _check_ts(ts)
    cdef intp_t n = len(ts)
    family, src, dst = address_columns(src, dst, n)
    sport = _column("sport", sport, _U16, cnp.NPY_UINT16, n)
    dport = _column("dport", dport, _U16, cnp.NPY_UINT16, n)
    flags = _column("flags", flags, _U8, cnp.NPY_UINT8, n)
    cdef cnp.npy_intp dims[1]
    dims[0] = n
    if length is None:
        length = cnp.PyArray_ZEROS(1, dims, cnp.NPY_UINT32, 0)
    else:
        length = _column("length", length, _U32, cnp.NPY_UINT32, n)
    sequence = None
    if seq is not None or ack is not None or window is not None:
        if seq is None or ack is None or window is None:
            raise TypeError("seq, ack and window come together")
        if wscale is None:
            wscale = np.full(n, -1, dtype=_I8)
        wscale = _column("wscale", wscale, _I8, cnp.NPY_INT8, n)
        _check_wscale(wscale)
        sequence = (_column("seq", seq, _U32, cnp.NPY_UINT32, n),
                    _column("ack", ack, _U32, cnp.NPY_UINT32, n),
                    _column("window", window, _U16, cnp.NPY_UINT16, n), wscale)
    elif wscale is not None:
        raise TypeError("wscale needs seq, ack and window")
    return family, (ts, src, sport, dst, dport, flags, length), sequence
