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


# -- event tables as other tools write them -----------------------------------------------------


def tshark_table(segments: np.ndarray) -> pd.DataFrame:
    """What ``tshark -T fields -e frame.time_epoch -e ip.src -e tcp.srcport -e ip.dst
    -e tcp.dstport -e tcp.flags -e tcp.len`` gives, read by pandas: float seconds, hex flags."""
    return pd.DataFrame({
        "frame.time_epoch": segments["ts"] / 1e9,
        "ip.src": [str(ipaddress.IPv4Address(int(a))) for a in segments["src"]],
        "tcp.srcport": segments["sport"],
        "ip.dst": [str(ipaddress.IPv4Address(int(a))) for a in segments["dst"]],
        "tcp.dstport": segments["dport"],
        "tcp.flags": [f"0x{f:04x}" for f in segments["flags"].tolist()],
        "tcp.len": segments["length"]})


TSHARK_COLUMNS = {"ts": "frame.time_epoch", "src": "ip.src", "sport": "tcp.srcport",
                  "dst": "ip.dst", "dport": "tcp.dstport", "flags": "tcp.flags",
                  "length": "tcp.len"}


def test_tshark_tables_give_the_right_times(tmp_path):
    """Float epoch seconds used to be read as nanoseconds (1970, durations of 1e-09 s) and hex
    flags failed with KeyError '0'. With ts_unit='s', the records are one Tracker's, their
    times within float64's precision of epoch seconds (0.2 us)."""
    segments = np.concatenate(list(generate(400, seed=13, rate=200.0)))
    table = tshark_table(segments)
    table.to_csv(tmp_path / "tshark.csv", index=False)
    events = dd.read_csv(str(tmp_path / "tshark.csv"))
    assert events.dtypes["frame.time_epoch"] == np.float64
    ours = on_dask.flows_from_events(events, columns=TSHARK_COLUMNS, ts_unit="s").compute()
    tracker = fasttcp.Tracker(flows=True)
    tracker.update(segments[list(fasttcp.EVENT_DTYPE.names)])
    tracker.expire(int(segments["ts"].max()))
    theirs = pd.concat([to_pandas(tracker.pop_flows(), tracker.model.states),
                        to_pandas(tracker.live_flows(), tracker.model.states)])
    assert rows(ours.assign(ts=0, duration=0)) == rows(theirs.assign(ts=0, duration=0))
    key = ["orig_h", "orig_p", "resp_h", "resp_p", "history"]
    both = ours.merge(theirs, on=key, suffixes=("", "_exact"))
    assert len(both) == len(ours) > 400
    assert (both["ts"].dt.year == 2023).all()
    assert ((both["ts"] - both["ts_exact"]).abs() < pd.Timedelta("1us")).all()
    assert ((both["duration"] - both["duration_exact"]).abs() < 1e-6).all()
    assert both["duration"].max() > 0.01


def test_event_flags_in_every_documented_form():
    table = pd.DataFrame({"ts": [1, 2, 3], "src": ["10.0.0.1", "10.0.0.2", "10.0.0.1"],
                          "sport": [5000, 80, 5000], "dst": ["10.0.0.2", "10.0.0.1", "10.0.0.2"],
                          "dport": [80, 5000, 80]})
    for flags in (["0x0002", "0x0012", "0x0010"], ["2", "18", "16"], ["S", "S.", "."],
                  [2, 18, 16], ["0x0102", "0x0812", "0x0010"]):   # AE / reserved bits dropped
        events = dd.from_pandas(table.assign(flags=flags), npartitions=1)
        (flow,) = on_dask.flows_from_events(events).compute().itertuples()
        assert (flow.history, flow.state) == ("ShA", "ESTABLISHED/ESTABLISHED"), flags


BASE = {"ts": [1_700_000_000.5], "src": ["10.0.0.1"], "sport": [5000], "dst": ["10.0.0.2"],
        "dport": [80], "flags": ["0x0002"]}


@pytest.mark.parametrize("change, unit, error, message", [
    ({}, None, ValueError, r"ts holds floats \(float64\): give their unit, ts_unit='s'"),
    ({}, "h", ValueError, r"ts_unit must be one of \['s', 'ms', 'us', 'ns'\]"),
    ({"ts": pd.to_datetime([1], utc=True)}, "s", ValueError, "ts is datetime64"),
    ({"ts": ["1700000000.5"]}, "s", TypeError, "ts must be integers or floats"),
    ({"flags": [2.0]}, "s", TypeError, "flags must be integers, or text"),
    ({"sport": [5000.0]}, "s", TypeError, "sport must be integers, not float64"),
    ({"length": [True]}, "s", TypeError, "length must be integers, not bool"),
])
def test_event_tables_of_the_wrong_types_are_refused_at_once(change, unit, error, message):
    events = dd.from_pandas(pd.DataFrame({**BASE, **change}), npartitions=1)
    with pytest.raises(error, match=message):
        on_dask.flows_from_events(events, ts_unit=unit)


@pytest.mark.parametrize("change, unit, error, message", [
    ({"flags": ["0xZZ"]}, "s", ValueError, "flags value '0xZZ' is neither"),
    ({"flags": ["0x1000"]}, "s", ValueError, "flags value '0x1000' is neither"),
    ({"flags": ["SX"]}, "s", ValueError, "flags value 'SX' is neither"),
    ({"flags": ["256"]}, "s", ValueError, "flags value '256' is neither"),
    ({"flags": [None]}, "s", ValueError, "flags has missing values"),
    ({"flags": [300]}, "s", ValueError, "flags has values outside 0..255"),
    ({"sport": [70000]}, "s", ValueError, "sport has values outside 0..65535"),
    ({"ts": [float("nan")]}, "s", ValueError, "ts has missing values"),
    ({"ts": [-1.0]}, "s", ValueError, "ts has values that are not finite s"),
    ({"ts": [1e12]}, "s", ValueError, "ts has values that are not finite s"),
    ({"ts": [-5]}, None, ValueError, r"ts has values outside 0 \.\."),
    ({"ts": [10**16]}, "ms", ValueError, r"ts has values outside 0 \.\. .* \(ms\)"),
])
def test_bad_event_values_name_their_column(change, unit, error, message):
    events = dd.from_pandas(pd.DataFrame({**BASE, **change}), npartitions=1)
    with pytest.raises(error, match=message):
        on_dask.flows_from_events(events, ts_unit=unit).compute()


def test_a_dataset_is_written_whole_and_never_over_a_directory(client, rotated, tmp_path):
    whole, parts = rotated
    kept = tmp_path / "flows.parquet"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(IsADirectoryError, match="flows.parquet: a directory is in the way"):
        on_dask.analyze(parts, flows_path=str(kept))
    assert os.listdir(kept) == ["notes.txt"]
    out = tmp_path / "new.parquet"
    result = on_dask.analyze(parts, flows_path=str(out))
    assert len(pd.read_parquet(out)) == result.flows
    assert sorted(os.listdir(tmp_path)) == ["flows.parquet", "new.parquet"]


# -- forged timestamps ------------------------------------------------------------------------

S = 10**9
T0 = 1_700_000_000 * S
YEAR = 365 * 86400 * S


def syn_table(n):
    return pd.DataFrame({"ts": [T0 // S + i * 0.1 for i in range(n)],
                         "src": [f"10.0.0.{i % 200 + 1}" for i in range(n)],
                         "sport": list(range(1000, 1000 + n)), "dst": ["10.9.9.9"] * n,
                         "dport": [80] * n, "flags": ["S"] * n})


def test_one_forged_timestamp_in_an_event_table_expires_nothing(client):
    """Every part used to expire by the table's largest timestamp."""
    table = syn_table(50)
    table.loc[25, "ts"] += YEAR / S
    flows = on_dask.flows_from_events(dd.from_pandas(table, npartitions=2),
                                      model="conntrack", ts_unit="s").compute()
    assert len(flows) == 50 and (flows["ended"] == "live").all()


def test_forged_timestamps_sorted_together_confirm_nothing():
    """A part is tracked in time order, where two forged segments far apart in the capture
    sit side by side; they must not confirm a jump there that one process never makes."""
    seg = np.zeros(100, dtype=fasttcp.SEGMENT_DTYPE)
    seg["ts"] = T0 + np.arange(100) * S // 10
    seg["src"], seg["dst"], seg["dport"], seg["flags"], seg["wscale"] = 1, 2, 80, 0x02, -1
    seg["sport"] = np.arange(1000, 1100)
    seg["ts"][[30, 70]] += YEAR
    one = fasttcp.Tracker("conntrack", flows=True)
    one.update(seg)
    assert len(one) == 100 and one.stats["clock_jumps"] == 0
    clock = on_dask._clock_after(None, seg["ts"])["now"]
    assert clock == T0 + 99 * S // 10
    flows = on_dask._track({4: [seg], 6: [np.zeros(0, fasttcp.SEGMENT6_DTYPE)]}, "conntrack",
                           None, clock)
    assert len(flows) == 100 and (flows["ended"] == "live").all()
