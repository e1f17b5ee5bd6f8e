# C types for the compiled modules, named after the numpy dtype they receive.
from libc.stdint cimport int8_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

ctypedef Py_ssize_t intp_t
