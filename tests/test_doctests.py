"""Runs the docstring examples of the installed package's Python modules."""
import doctest
import importlib

import pytest

MODULES = ["fasttcp", "fasttcp.models", "fasttcp.tracker", "fasttcp.reference",
           "fasttcp.workloads", "fasttcp.bench", "fasttcp.flows", "fasttcp.synth",
           "fasttcp.capture", "fasttcp.analyze", "fasttcp.sample", "fasttcp.snapshot",
           "fasttcp.dask", "fasttcp._atomic"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0, f"{name} has no examples"
    assert failures == 0
