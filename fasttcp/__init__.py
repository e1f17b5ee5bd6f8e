"""fasttcp: TCP connection tracking for millions of connections, in numpy batches.

>>> import fasttcp
>>> fasttcp.Tracker(model="conntrack", capacity=1 << 16)
Tracker(model='conntrack', connections=0, capacity=65536, max_capacity=65536)
"""
from fasttcp._version import __version__
from fasttcp.capture import CaptureBatch, CaptureError, CaptureStats, open_capture
from fasttcp.dtypes import (CONN4_DTYPE, CONN6_DTYPE, EVENT6_DTYPE, EVENT_DTYPE, FLOW6_DTYPE,
                            FLOW_DTYPE, SEGMENT6_DTYPE, SEGMENT_DTYPE)
from fasttcp.flows import CONN_STATES
from fasttcp.sample import SAMPLE_CAPTURE
from fasttcp.models import FLAG_CLASSES, Model, compile_model, get_model
from fasttcp.tracker import (
    IGNORED,
    INVALID,
    NEW,
    STATUS_ALIVE,
    STATUS_FLIPPED,
    STATUS_ILLEGAL_SHIFT,
    STATUS_PICKED_UP,
    STATUS_REPLIED,
    VALID,
    VERDICTS,
    ConnInfo,
    LookupResult,
    TableFullError,
    Tracker,
    UpdateResult,
    addresses,
)

__all__ = [
    "__version__", "Tracker", "ConnInfo", "UpdateResult", "LookupResult", "TableFullError",
    "open_capture", "SAMPLE_CAPTURE", "CaptureBatch", "CaptureStats", "CaptureError",
    "FLOW_DTYPE", "FLOW6_DTYPE", "CONN_STATES",
    "Model", "compile_model", "get_model", "FLAG_CLASSES", "addresses",
    "EVENT_DTYPE", "EVENT6_DTYPE", "SEGMENT_DTYPE", "SEGMENT6_DTYPE", "CONN4_DTYPE", "CONN6_DTYPE",
    "VERDICTS", "NEW", "VALID", "INVALID", "IGNORED", "STATUS_ALIVE", "STATUS_REPLIED",
    "STATUS_FLIPPED", "STATUS_PICKED_UP", "STATUS_ILLEGAL_SHIFT",
]
