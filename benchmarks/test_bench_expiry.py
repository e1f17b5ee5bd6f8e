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


def test_wheel_memory_under_churn(benchmark):
    """Expiry memory at a full table with eviction under random flags, an hour of capture
    time per round (100 segments/s on 16K connections): the bytes per connection of capacity
    the wheel reaches, which the compaction bound keeps flat however long the churn runs."""
    capacity = 1 << 14
    t = Tracker("conntrack", capacity=capacity, max_capacity=capacity, evict=True, seed=1)
    (table,) = t._family(4)
    rng = np.random.default_rng(0)
    pool = np.array([0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x01, 0x00], dtype=np.uint8)
    peaks = []
    hour = [0]

    def churn():
        start = hour[0] * 3600
        for second in range(start, start + 3600, 10):
            n = 1000
            ts = (1_700_000_000 + second) * S + np.sort(rng.integers(0, 10 * S, n))
            client = (0x0A000000 + rng.integers(0, 4 * capacity, n)).astype(np.uint32)
            forward = rng.random(n) < 0.5
            t.update(ts, np.where(forward, client, 0xC0000201).astype(np.uint32),
                     np.where(forward, 40000, 80).astype(np.uint16),
                     np.where(forward, 0xC0000201, client).astype(np.uint32),
                     np.where(forward, 80, 40000).astype(np.uint16),
                     pool[rng.integers(0, len(pool), n)])
            peaks.append(table.nbytes_expiry)
        hour[0] += 1

    benchmark.pedantic(churn, rounds=4)
    benchmark.extra_info["expiry_bytes_per_connection_peak"] = max(peaks) / capacity
    benchmark.extra_info["expiry_bytes_per_connection_last_hour"] = max(peaks[-360:]) / capacity
    benchmark.extra_info["bound_bytes_per_connection"] = table.max_nbytes_expiry / capacity
    assert max(peaks) <= table.max_nbytes_expiry
