"""pytest-benchmark suite for expiry: its cost follows the connections that expire, not the
table's size, and it costs the update loop little.

    pytest benchmarks/test_bench_expiry.py --benchmark-columns=median,iqr

`expire` is timed on tables of 10K and 1M live connections (SYN_SENT under conntrack, 120 s
timeout, opened 10 ms apart in capture time) with the same 10,000 of them due, and
with none due; `update` on 1M connections with and without expiry.
"""
import numpy as np
import pytest

from fasttcp import Tracker
from fasttcp.models import SYN
from fasttcp.workloads import columns, uniform_workload

S = 1_000_000_000
DUE = 10_000
SPACING = 10_000_000      # 10 ms between connection openings


def opened(n):
    """A conntrack tracker with n half-open connections, the i-th opened at i * SPACING."""
    t = Tracker("conntrack", capacity=n, clock="manual")
    src = np.arange(n, dtype=np.uint32) + 0x0A000000
    t.update(np.arange(n, dtype=np.int64) * SPACING, src, np.full(n, 40000),
             np.full(n, 0xC0000201, dtype=np.uint32), np.full(n, 80), np.full(n, SYN))
    return t


@pytest.mark.parametrize("n", [10_000, 1_000_000], ids=["10K", "1M"])
@pytest.mark.parametrize("due", [DUE, 0], ids=["10K-due", "none-due"])
def test_expire(benchmark, n, due):
    # the first `due` connections are past their 120 s at `now`; the rest are not
    now = (due - 1) * SPACING + 120 * S if due else 120 * S - 1
    result = benchmark.pedantic(lambda t: t.expire(now), setup=lambda: ((opened(n),), {}),
                                rounds=5)
    assert result == (due if n >= due else n)
    benchmark.extra_info["ns_per_expired"] = (benchmark.stats.stats.median * 1e9 / due
                                              if due else None)


@pytest.fixture(scope="module")
def million():
    workload = uniform_workload(1_000_000, 1_000_000, seed=0)
    return columns(workload.setup), columns(workload.traffic)


@pytest.mark.parametrize("expiry", [False, True], ids=["no-expiry", "expiry"])
def test_update_with_and_without_expiry(benchmark, million, expiry):
    setup, traffic = million
    t = Tracker(capacity=1_000_000, expiry=expiry)
    t.update(**setup)
    benchmark.pedantic(lambda: t.update(**traffic), rounds=7, warmup_rounds=1)
    benchmark.extra_info["events_per_s"] = 1_000_000 / benchmark.stats.stats.median
