"""pytest-benchmark suite for the capture path: reading, tracking with flows, writing flows.

    pytest benchmarks/test_bench_capture.py --benchmark-columns=median,iqr

The capture is generated once per session (about 2M packets of 160k scenario instances,
headers only, Ethernet/IPv4/TCP) and read from the page cache. Rates are printed as extra info
(packets/s at the median).
"""
import io

import numpy as np
import pytest

import fasttcp
from fasttcp.analyze import analyze
from fasttcp.flows import to_csv
from fasttcp.synth import generate, write_pcap

CONNECTIONS = 160_000


@pytest.fixture(scope="session")
def capture(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("capture") / "synth.pcap")
    packets = write_pcap(path, generate(CONNECTIONS, seed=1))
    return path, packets


def per_second(benchmark, packets):
    benchmark.extra_info["packets_per_s"] = packets / benchmark.stats.stats.median


def read_all(path):
    with fasttcp.open_capture(path) as cap:
        for _ in cap:
            pass
    return cap.stats.packets


def test_read(benchmark, capture):
    path, packets = capture
    assert benchmark.pedantic(read_all, (path,), rounds=7, warmup_rounds=1) == packets
    per_second(benchmark, packets)


def test_analyze_without_flow_file(benchmark, capture):
    path, packets = capture
    result = benchmark.pedantic(analyze, ([path],), rounds=5, warmup_rounds=1)
    assert result.packets == packets
    per_second(benchmark, packets)


def test_analyze_with_csv(benchmark, capture, tmp_path):
    path, packets = capture
    out = str(tmp_path / "flows.csv")
    result = benchmark.pedantic(analyze, ([path],), {"flows_path": out}, rounds=5,
                                warmup_rounds=1)
    assert result.flows > 0
    per_second(benchmark, packets)


@pytest.mark.parametrize("sequence", [False, True], ids=["flags-only", "sequence-aware"])
@pytest.mark.parametrize("flows", [False, True], ids=["no-flows", "flows"])
def test_track_segments(benchmark, capture, sequence, flows):
    """The tracker alone on the capture's segments (already read): what sequence awareness
    and keeping flows cost."""
    path, packets = capture
    with fasttcp.open_capture(path) as cap:
        batches = [batch.ipv4 if sequence else batch.ipv4[list(fasttcp.EVENT_DTYPE.names)]
                   for batch in cap]
    batches = [np.ascontiguousarray(b) for b in batches]

    def track():
        tracker = fasttcp.Tracker(capacity=1 << 18, max_capacity=1 << 20, flows=flows)
        for batch in batches:
            tracker.update(batch)
        return len(tracker)

    assert benchmark.pedantic(track, rounds=5, warmup_rounds=1) > 0
    per_second(benchmark, packets)


def test_flow_csv(benchmark, capture):
    path, _ = capture
    tracker = fasttcp.Tracker(capacity=1 << 18, flows=True)
    with fasttcp.open_capture(path) as cap:
        for batch in cap:
            tracker.update(batch.ipv4)
    flows = tracker.live_flows()
    rows = benchmark.pedantic(lambda: to_csv(flows, io.StringIO(), tracker.model.states),
                              rounds=5, warmup_rounds=1)
    assert rows == len(flows)
    benchmark.extra_info["rows_per_s"] = rows / benchmark.stats.stats.median
