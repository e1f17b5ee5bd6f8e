"""Type stubs for the capture parsing kernels (fasttcp/_pcap.pyx)."""
import numpy as np
import numpy.typing as npt

COUNT_NAMES: tuple[str, ...]
NEED_DATA: int
OUT_FULL: int
BLOCK: int
ERR_BLOCK_TRAILER: int
ERR_OPTIONS: int
ERRORS: dict[int, str]
LINKTYPE_NULL: int
LINKTYPE_ETHERNET: int
LINKTYPE_RAW: int
LINKTYPE_LOOP: int
LINKTYPE_LINUX_SLL: int
LINKTYPE_IPV4: int
LINKTYPE_IPV6: int
LINKTYPE_NFLOG: int
LINKTYPE_LINUX_SLL2: int
SUPPORTED_LINKTYPES: frozenset[int]
MAX_RECORD: int
MAX_BLOCK: int
MAX_OPTIONS: int
MAX_INTERFACES: int
SEG4_SIZE: int
SEG6_SIZE: int
SEGMENT_FIELDS: tuple[str, ...]
SEGMENT_DTYPE: np.dtype  # seg4_t, derived from the struct
SEGMENT6_DTYPE: np.dtype  # seg6_t

def read_pcap(
    buf: npt.NDArray[np.uint8],  # const uint8_t[::1]
    pos: int,
    swapped: bool,
    ts_unit: int,
    linktype: int,
    out4: npt.NDArray[np.uint8],  # uint8_t[::1], SEGMENT_DTYPE rows as bytes
    out6: npt.NDArray[np.uint8],  # uint8_t[::1], SEGMENT6_DTYPE rows as bytes
    counts: npt.NDArray[np.int64],  # int64_t[::1], one slot per COUNT_NAMES entry
) -> tuple[int, int, int, int, int]: ...
def read_pcapng(
    buf: npt.NDArray[np.uint8],  # const uint8_t[::1]
    pos: int,
    swapped: bool,
    if_linktype: npt.NDArray[np.int64],  # int64_t[::1], rows from n_if filled by the kernel
    if_tsresol: npt.NDArray[np.uint8],  # uint8_t[::1]
    if_tsoffset: npt.NDArray[np.int64],  # int64_t[::1], seconds
    if_snaplen: npt.NDArray[np.int64],  # int64_t[::1]
    n_if: int,
    last_ts: int,
    out4: npt.NDArray[np.uint8],  # uint8_t[::1]
    out6: npt.NDArray[np.uint8],  # uint8_t[::1]
    counts: npt.NDArray[np.int64],  # int64_t[::1]
) -> tuple[int, int, int, int, int, int]: ...
