"""fasttcp on Dask: the same flow records as one process, on a LocalCluster of worker
processes, from captures rotated into several files and from event tables."""
import ipaddress
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("distributed", reason="needs fasttcp[dask]")
import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import fasttcp  # noqa: E402
import fasttcp.dask as on_dask  # noqa: E402
from fasttcp.analyze import analyze  # noqa: E402
from fasttcp.flows import to_pandas  # noqa: E402
from fasttcp.synth import generate, write_pcap  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = ["ts", "orig_h", "orig_p", "resp_h", "resp_p", "duration", "orig_bytes", "resp_bytes",
       "conn_state", "history", "orig_pkts", "resp_pkts", "state", "flipped", "picked_up",
       "illegal", "ended"]


def rows(frame: pd.DataFrame) -> list:
    return sorted(map(tuple, frame[KEY].astype(str).to_numpy().tolist()))


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=50) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    """One generated capture, whole and rotated into three files in time order (many
    connections span two files)."""
    where = tmp_path_factory.mktemp("rotated")
    batches = list(generate(6000, seed=11, rate=200.0, batch_size=8000))
    whole = str(where / "whole.pcap")
    write_pcap(whole, batches)
    parts = []
    for i, chunk in enumerate(np.array_split(np.arange(len(batches)), 3)):
        parts.append(str(where / f"part{i}.pcap"))
        write_pcap(parts[-1], [batches[k] for k in chunk])
    return whole, parts


def test_rotated_files_give_the_records_of_one_process(client, rotated, tmp_path):
    whole, parts = rotated
    single = tmp_path / "single.parquet"
    analyze([whole], flows_path=str(single))
    ours = on_dask.flows_from_captures(parts, partitions=4).compute()
    assert len(ours) > 6000
    assert rows(ours) == rows(pd.read_parquet(single))


def test_event_tables_with_a_column_mapping(client, tmp_path):
    segments = np.concatenate(list(generate(1500, seed=12, rate=200.0)))
    table = pd.DataFrame({
        "time": pd.to_datetime(segments["ts"], unit="ns", utc=True),
        "saddr": [str(ipaddress.IPv4Address(int(a))) for a in segments["src"]],
        "sp": segments["sport"],
        "daddr": [str(ipaddress.IPv4Address(int(a))) for a in segments["dst"]],
        "dp": segments["dport"],
        "tcpflags": ["".join(c for c, bit in on_dask.TCPDUMP_FLAGS.items() if f & bit)
                     for f in segments["flags"].tolist()],
        "bytes": segments["length"]})
    third = len(table) // 3
    for i in range(3):
        table.iloc[i * third:(i + 1) * third if i < 2 else None].to_parquet(
            tmp_path / f"events{i}.parquet")
    events = dd.read_parquet([str(tmp_path / f"events{i}.parquet") for i in range(3)])
    ours = on_dask.flows_from_events(events, columns={
        "ts": "time", "src": "saddr", "sport": "sp", "dst": "daddr", "dport": "dp",
        "flags": "tcpflags", "length": "bytes"}).compute()
    tracker = fasttcp.Tracker(flows=True)
    tracker.update(segments[list(fasttcp.EVENT_DTYPE.names)])   # the table has no seq columns
    tracker.expire(int(segments["ts"].max()))
    theirs = pd.concat([to_pandas(tracker.pop_flows(), tracker.model.states),
                        to_pandas(tracker.live_flows(), tracker.model.states)])
    assert rows(ours) == rows(theirs)


def test_event_tables_must_name_their_columns():
    events = dd.from_pandas(pd.DataFrame({"time": [1], "a": [1]}), npartitions=1)
    with pytest.raises(ValueError, match="lacks .*'dport'.*columns="):
        on_dask.flows_from_events(events)


def test_partition_is_symmetric_for_both_families():
    seg = np.concatenate(list(generate(200, seed=1)))
    back = seg.copy()
    back["src"], back["dst"] = seg["dst"], seg["src"]
    back["sport"], back["dport"] = seg["dport"], seg["sport"]
    assert (on_dask.flow_partition(seg, 7) == on_dask.flow_partition(back, 7)).all()
    six = np.zeros(50, dtype=fasttcp.SEGMENT6_DTYPE)
    six["src"] = np.random.default_rng(0).integers(0, 256, (50, 16))
    six["dst"] = np.random.default_rng(1).integers(0, 256, (50, 16))
    six["sport"], six["dport"] = 1000, 80
    flipped = six.copy()
    flipped["src"], flipped["dst"] = six["dst"], six["src"]
    flipped["sport"], flipped["dport"] = 80, 1000
    assert (on_dask.flow_partition(six, 5) == on_dask.flow_partition(flipped, 5)).all()
    assert len(set(on_dask.flow_partition(seg, 7).tolist())) == 7


def fasttcp_cli(*args):
    """The installed command (run away from the source tree, which would shadow it)."""
    return subprocess.run([sys.executable, "-m", "fasttcp", *args], capture_output=True,
                          text=True, timeout=300, cwd=os.path.dirname(ROOT))


def test_cli_workers_match_one_process(rotated):
    whole, parts = rotated
    one = fasttcp_cli("analyze", "--json", whole)
    many = fasttcp_cli("analyze", "--json", "--workers", "2", *parts)
    assert one.returncode == 0 and many.returncode == 0, many.stderr
    a, b = json.loads(one.stdout), json.loads(many.stdout)
    for key in ("packets", "segments", "flows", "connections", "conn_states", "histogram"):
        assert a[key] == b[key], key
    assert many.stderr == ""


def test_cli_refuses_what_dask_mode_cannot_do(rotated):
    whole, _ = rotated
    for args, message in ((["--flows", "x.csv"], "Parquet"), (["--plot", "x.png"], "--plot")):
        proc = fasttcp_cli("analyze", "--workers", "1", whole, *args)
        assert proc.returncode == 2 and message in proc.stderr


def test_cli_on_a_running_scheduler(client, rotated, tmp_path):
    whole, parts = rotated
    out = tmp_path / "flows.parquet"
    proc = fasttcp_cli("analyze", "--json", "--scheduler", client.scheduler.address, *parts,
                       "--flows", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    written = pd.read_parquet(out)
    assert len(written) == result["flows"] > 0
    assert rows(written) == rows(on_dask.flows_from_captures(parts).compute())
