"""pytest-benchmark cases for the core engine.

    pytest benchmarks/ --benchmark-columns=median,iqr,rounds

Each update case keeps N connections live (opened by a setup batch) and times batches of
uniformly random data segments on them; `extra_info` holds events/s at the median.
"""
from ipaddress import IPv4Address

import pytest

from fasttcp import Tracker
from fasttcp.workloads import columns, uniform_workload

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


def events_per_s(benchmark, events):
    benchmark.extra_info["events_per_s_median"] = events / benchmark.stats.stats.median


def test_update(benchmark, live):
    tracker, workload = live
    traffic = columns(workload.traffic)
    benchmark.pedantic(tracker.update, kwargs=traffic, rounds=7, iterations=1,
                       warmup_rounds=1)
    events_per_s(benchmark, BATCH)


def test_update_two_threads(benchmark, live):
    tracker, workload = live
    with Tracker(capacity=len(tracker), shards=2, seed=1) as sharded:
        sharded.update(**columns(workload.setup))
        traffic = columns(workload.traffic)
        benchmark.pedantic(sharded.update, kwargs=traffic, rounds=7, iterations=1,
                           warmup_rounds=1)
    events_per_s(benchmark, BATCH)


def test_update_small_batches(benchmark, live):
    tracker, workload = live
    batches = [columns(workload.traffic[k:k + 1000]) for k in range(0, 100_000, 1000)]

    def run():
        for batch in batches:
            tracker.update(**batch)

    benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)
    events_per_s(benchmark, 100_000)


def test_update_with_event_outputs(benchmark, live):
    tracker, workload = live
    traffic = columns(workload.traffic)
    benchmark.pedantic(tracker.update, kwargs=dict(traffic, return_events=True), rounds=7,
                       iterations=1, warmup_rounds=1)
    events_per_s(benchmark, BATCH)


def test_histogram(benchmark, live):
    tracker, _ = live
    hist = benchmark(tracker.histogram)
    assert sum(hist.values()) == len(tracker)


def test_lookup_many(benchmark, live):
    tracker, workload = live
    keys = columns(workload.traffic)
    result = benchmark.pedantic(tracker.lookup_many,
                                args=(keys["src"], keys["sport"], keys["dst"], keys["dport"]),
                                rounds=7, iterations=1, warmup_rounds=1)
    assert (result.conn >= 0).all()
    events_per_s(benchmark, BATCH)


def test_lookup_scalar(benchmark, live):
    tracker, workload = live
    ev = workload.setup[0]
    src, dst = str(IPv4Address(int(ev["src"]))), str(IPv4Address(int(ev["dst"])))
    info = benchmark(tracker.lookup, src, int(ev["sport"]), dst, int(ev["dport"]))
    assert info is not None
