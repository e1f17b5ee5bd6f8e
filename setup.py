"""Declares the compiled extensions; everything else lives in pyproject.toml."""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# FASTTCP_DEBUG=1 builds with bounds checks on, for chasing a suspected overrun.
DEBUG = os.environ.get("FASTTCP_DEBUG") == "1"

EXTENSIONS = [
    Extension(
        f"fasttcp.{name}",
        [f"fasttcp/{name}.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"] if os.name != "nt" else [],
    )
    for name in ("_engine", "_baseline", "_pcap", "_flowcsv", "_columns")
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives={
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": DEBUG,
        },
    ),
)
