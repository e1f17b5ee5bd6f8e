"""The compiled CSV formatter's numbers, and to_csv's bytes to binary and text files alike."""
import io

import numpy as np
import pytest

from fasttcp.dtypes import FLOW_DTYPE
from fasttcp.flows import CSV_COLUMNS, to_csv

STATES = ("NONE", "ESTABLISHED")
# every digit count, and each side of every power of ten, up to the largest uint64
EDGES = sorted({0, 2**64 - 1, 2**63} | {v for k in range(1, 20) for v in (10**k - 1, 10**k)})


def seconds(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    return f"{sign}{abs(ns) // 10**9}.{abs(ns) % 10**9:09d}"


def rows(values: list) -> np.ndarray:
    flows = np.zeros(len(values), dtype=FLOW_DTYPE)
    flows["orig_bytes"] = values
    flows["resp_bytes"] = values[::-1]
    flows["ts"] = [v % 2**63 for v in values]
    flows["last_ts"] = flows["ts"][::-1]
    flows["orig_pkts"] = [v % 2**32 for v in values]
    flows["orig_h"] = [v % 2**32 for v in values]
    flows["history"] = b"ShAdDaFf"
    return flows


def test_numbers_at_every_digit_count():
    flows = rows(EDGES)
    out = io.BytesIO()
    to_csv(flows, out, STATES, header=False)
    lines = out.getvalue().decode("ascii").splitlines()
    for row, line in zip(flows.tolist(), lines):
        cell = dict(zip(CSV_COLUMNS, line.split(",")))
        fields = dict(zip(FLOW_DTYPE.names, row))
        assert cell["orig_bytes"] == str(fields["orig_bytes"])
        assert cell["resp_bytes"] == str(fields["resp_bytes"])
        assert cell["orig_pkts"] == str(fields["orig_pkts"])
        assert cell["ts"] == seconds(fields["ts"])
        assert cell["duration"] == seconds(fields["last_ts"] - fields["ts"])   # negatives too
        h = fields["orig_h"]
        assert cell["orig_h"] == ".".join(str(h >> s & 255) for s in (24, 16, 8, 0))


@pytest.mark.parametrize("header", [True, False])
def test_binary_and_text_files_get_the_same_rows(tmp_path, header):
    flows = rows(EDGES)
    binary, text = io.BytesIO(), io.StringIO()
    assert to_csv(flows, binary, STATES, header) == to_csv(flows, text, STATES, header) == \
        len(flows)
    assert binary.getvalue().decode("ascii") == text.getvalue()
    to_csv([flows[:3], flows[3:]], tmp_path / "f.csv", STATES, header)
    assert (tmp_path / "f.csv").read_bytes() == binary.getvalue()


def test_an_empty_call_writes_the_header_only():
    out = io.BytesIO()
    assert to_csv([], out, STATES) == 0
    assert out.getvalue() == (",".join(CSV_COLUMNS) + "\n").encode()
