"""pytest-benchmark cases for the core engine.

    pytest benchmarks/ --benchmark-columns=median,iqr,rounds

Each update case keeps N connections live (opened by a setup batch) and times batches of
data segments on them, uniformly random or Zipf-skewed (realistic locality); `extra_info`
holds events/s at the median.
"""
from ipaddress import IPv4Address

import pytest

from fasttcp import Tracker
from fasttcp.workloads import columns, skewed_workload, uniform_workload

BATCH = 1_000_000
SIZES = {"10K": 10_000, "1M": 1_000_000, "10M": 10_000_000}


@pytest.fixture(scope="module", params=list(SIZES), ids=list(SIZES))
def live(request):
    n = SIZES[request.param]
    workload = uniform_workload(n, BATCH, seed=1)
    tracker = Tracker(capacity=n, seed=1)
    tracker.update(**columns(workload.setup))
    assert len(tracker) == n
    return tracker, workload


def timed(benchmark, fn, events, **kwargs):
    """7 timed rounds of fn(**kwargs) after a warm-up; records events/s at the median."""
    result = benchmark.pedantic(fn, kwargs=kwargs, rounds=7, iterations=1, warmup_rounds=1)
    benchmark.extra_info["events_per_s_median"] = events / benchmark.stats.stats.median
    return result


def test_update(benchmark, live):
    tracker, workload = live
    timed(benchmark, tracker.update, BATCH, **columns(workload.traffic))


def test_update_skewed(benchmark, live):
    """Realistic locality: a Zipf law over the live connections (a few heavy hitters carry most
    segments), on the same table as the uniform case."""
    tracker, workload = live
    skewed = skewed_workload(len(tracker), BATCH, seed=1)
    assert (skewed.setup == workload.setup).all()
    timed(benchmark, tracker.update, BATCH, **columns(skewed.traffic))


def test_update_two_threads(benchmark, live):
    tracker, workload = live
    with Tracker(capacity=len(tracker), shards=2, seed=1) as sharded:
        sharded.update(**columns(workload.setup))
        timed(benchmark, sharded.update, BATCH, **columns(workload.traffic))


def test_update_small_batches(benchmark, live):
    tracker, workload = live
    batches = [columns(workload.traffic[k:k + 1000]) for k in range(0, 100_000, 1000)]

    def run():
        for batch in batches:
            tracker.update(**batch)

    timed(benchmark, run, 100_000)


def test_update_with_event_outputs(benchmark, live):
    tracker, workload = live
    timed(benchmark, tracker.update, BATCH, **columns(workload.traffic), return_events=True)


def test_histogram(benchmark, live):
    tracker, _ = live
    hist = benchmark(tracker.histogram)
    assert sum(hist.values()) == len(tracker)


def test_lookup_many(benchmark, live):
    tracker, workload = live
    keys = columns(workload.traffic)
    result = timed(benchmark, tracker.lookup_many, BATCH, src=keys["src"], sport=keys["sport"],
                   dst=keys["dst"], dport=keys["dport"])
    assert (result.conn >= 0).all()


def test_lookup_scalar(benchmark, live):
    tracker, workload = live
    ev = workload.setup[0]
    src, dst = str(IPv4Address(int(ev["src"]))), str(IPv4Address(int(ev["dst"])))
    info = benchmark(tracker.lookup, src, int(ev["sport"]), dst, int(ev["dport"]))
    assert info is not None
