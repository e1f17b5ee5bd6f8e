"""Type stubs for the batch-column validator (fasttcp/_columns.pyx)."""
from typing import Any

import numpy as np
import numpy.typing as npt

def integer_column(
    name: str, arr: Any, dtype: np.dtype[Any], n: int | None
) -> npt.NDArray[Any]: ...  # 1-D, contiguous, aligned, of dtype
def address_columns(
    src: Any, dst: Any, n: int
) -> tuple[int, npt.NDArray[Any], npt.NDArray[Any]]: ...  # uint32 (n,) or uint64 (n, 2)
def batch_columns(
    ts: Any,  # int64 (n,), or a structured array holding every column
    src: Any = ...,
    sport: Any = ...,
    dst: Any = ...,
    dport: Any = ...,
    flags: Any = ...,
    length: Any = ...,
    seq: Any = ...,
    ack: Any = ...,
    window: Any = ...,
    wscale: Any = ...,
) -> tuple[
    int, tuple[npt.NDArray[Any], ...], tuple[npt.NDArray[Any], ...] | None
]: ...  # family, (ts, src, sport, dst, dport, flags, length), (seq, ack, window, wscale)
