"""The dtypes derived from C structs match those structs field by field.

The structs are read from the package's .pxd files (the source the kernels are compiled from)
and laid out by the C rules here, independently of the compiled modules' own derivation.
"""
import re
from pathlib import Path

import numpy as np
import pytest

import fasttcp
from fasttcp import dtypes, tracker
from fasttcp.capture import open_capture
from fasttcp.synth import write_pcap

PACKAGE = Path(fasttcp.__file__).parent
# C type: (numpy kind, size); each is aligned to its size
C_TYPES = {f"{sign}int{bits}_t": ("u" if sign else "i", bits // 8)
           for sign in ("", "u") for bits in (8, 16, 32, 64)}
C_TYPES["intp_t"] = ("i", np.dtype(np.intp).itemsize)

STRUCT = re.compile(r"^cdef (packed )?struct (\w+):\n((?:(?:    .*)?\n)+)", re.MULTILINE)
FIELD = re.compile(r"^    (?:const )?(\w+) (\w+)(?:\[(\d+)\])?\s*(?:#.*)?$")


def pxd_structs() -> dict:
    """Every struct of the package's .pxd files: name -> (packed, [(type, field, count)])."""
    structs = {}
    for pxd in PACKAGE.glob("*.pxd"):
        for packed, name, body in STRUCT.findall(pxd.read_text()):
            fields = [FIELD.match(line) for line in body.splitlines()]
            structs[name] = (bool(packed), [(m[1], m[2], int(m[3] or 1)) for m in fields if m])
    return structs


def layout(structs: dict, name: str) -> tuple:
    """(fields as (name, offset, size, kind), size, alignment) of a struct by the C rules."""
    packed, members = structs[name]
    offset, alignment, fields = 0, 1, []
    for ctype, field, count in members:
        if ctype in C_TYPES:
            kind, size = C_TYPES[ctype]
            align = size
        else:
            kind = "struct"
            size, align = layout(structs, ctype)[1:]
        align = 1 if packed else align
        offset = -(-offset // align) * align
        fields.append((field, offset, size * count, kind if count == 1 else "array"))
        offset += size * count
        alignment = max(alignment, align)
    return fields, -(-offset // alignment) * alignment, alignment


def dtype_fields(dtype: np.dtype) -> list:
    out = []
    for name in dtype.names:
        field, offset = dtype.fields[name][:2]
        kind = "array" if field.shape else field.kind
        out.append((name, offset, field.itemsize, kind))
    return out


@pytest.mark.parametrize("struct, dtype", [
    ("seg4_t", dtypes.SEGMENT_DTYPE), ("seg6_t", dtypes.SEGMENT6_DTYPE),
    ("conn4_t", dtypes.CONN4_DTYPE), ("conn6_t", dtypes.CONN6_DTYPE),
])
def test_derived_dtype_matches_its_struct(struct, dtype):
    fields, size, _ = layout(pxd_structs(), struct)
    # a nested struct (addr6_t) is 16 bytes of address in the dtype
    expected = [(n, o, s, "array" if k == "struct" else k) for n, o, s, k in fields]
    assert dtype_fields(dtype) == expected
    assert dtype.itemsize == size


def test_segment_dtypes_are_the_kernels_row_sizes():
    assert dtypes.SEGMENT_DTYPE.itemsize == fasttcp._pcap.SEG4_SIZE
    assert dtypes.SEGMENT6_DTYPE.itemsize == fasttcp._pcap.SEG6_SIZE


@pytest.mark.parametrize("event, segment", [(dtypes.EVENT_DTYPE, dtypes.SEGMENT_DTYPE),
                                            (dtypes.EVENT6_DTYPE, dtypes.SEGMENT6_DTYPE)])
def test_event_dtypes_are_the_segments_leading_fields(event, segment):
    assert dtype_fields(event) == dtype_fields(segment)[:len(event.names)]
    assert event.names[-1] == "length"
    assert event.itemsize == segment.fields["seq"][1]


def test_kernel_rows_read_back_field_by_field(tmp_path):
    # distinct values in every pair of equal-sized fields: a swapped pair in the struct or
    # the dtype shows as swapped values
    seg = np.zeros(1, dtype=dtypes.SEGMENT_DTYPE)
    seg[0] = (1_700_000_000_123_456_000, 0x0A000001, 0xC0A80102, 40000, 443, 0x12, 0, 111_111,
              222_222, 29200, 7)
    path = tmp_path / "one.pcap"
    write_pcap(path, [seg])
    with open_capture(path) as capture:
        rows = np.concatenate([batch.ipv4 for batch in capture])
    assert rows.dtype == dtypes.SEGMENT_DTYPE
    assert rows.tolist() == seg.tolist()


@pytest.mark.parametrize("name", [name for name in dtypes.__all__ if name.endswith("_DTYPE")])
def test_old_homes_re_export_the_same_dtypes(name):
    assert getattr(fasttcp, name) is getattr(dtypes, name)
    home = tracker if name in tracker.__all__ else fasttcp.flows
    assert getattr(home, name) is getattr(dtypes, name)
