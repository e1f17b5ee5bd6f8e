import numpy as np
import numpy.typing as npt

def touch_records(
    records: npt.NDArray[np.uint64],  # uint64_t[:, ::1], shape (n, 8)
    which: npt.NDArray[np.uint32],  # const uint32_t[::1]
) -> None: ...
