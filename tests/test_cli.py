"""The fasttcp command, end to end, as a shell user runs it."""
import contextlib
import csv
import gzip
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--connections", "2000", "--events", "5000", "--repeats", "3",
         "--python-events", "2000"]


def fasttcp(*args):
    return subprocess.run([sys.executable, "-m", "fasttcp", *args], capture_output=True,
                          text=True, cwd=os.path.dirname(ROOT), timeout=300)


def test_bench_prints_a_table():
    proc = fasttcp("bench", *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert "2,000 live IPv4 connections" in proc.stdout
    assert "fasttcp" in proc.stdout and "plain Python dict" in proc.stdout
    assert "ratio:" in proc.stdout and proc.stderr == ""


def test_bench_json():
    proc = fasttcp("bench", *SMALL, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["live_connections"] == 2000
    assert result["fasttcp_bytes_per_connection"] <= 64     # the table, without expiry
    assert result["fasttcp_expiry_events_per_s"] > 0
    assert result["fasttcp_events_per_s"] > 0 and result["python_events_per_s"] > 0


@pytest.mark.parametrize("args, message", [
    (["bench", "--connections", "0"], "must be positive"),
    (["bench", "--events", "lots"], "not a whole number"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_usage_errors_exit_2_without_traceback(args, message):
    proc = fasttcp(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_version():
    import fasttcp as pkg
    proc = fasttcp("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"fasttcp {pkg.__version__}"


def test_compare_script_runs():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "compare.py"),
                           *SMALL], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ratio:" in proc.stdout


# -- analyze ----------------------------------------------------------------------------------

SHARED = os.path.join(os.path.dirname(ROOT), "shared", "pcaps")
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason=f"{SHARED} is not present")


def test_analyze_reads_the_bundled_sample_by_default():
    proc = fasttcp("analyze")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""    # no progress bar when stderr is not a terminal
    assert proc.stdout.startswith("sample.pcap.gz: 3,232 packets, 3,232 TCP segments")
    assert "state (live connections)" in proc.stdout and "TIME_WAIT/CLOSED" in proc.stdout
    assert "SF" in proc.stdout and "normal establishment and termination" in proc.stdout


def test_analyze_json_adds_up():
    proc = fasttcp("analyze", "--json", "--model", "conntrack")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["model"] == "conntrack" and result["packets"] == 3232
    assert result["packets"] == result["segments"] + sum(result["skipped"].values())
    assert sum(result["conn_states"].values()) == result["flows"] > 0
    assert sum(result["histogram"].values()) == result["connections"]
    assert result["captures"][0]["format"] == "pcap"


@needs_shared
def test_analyze_writes_zeek_style_flows(tmp_path):
    out = tmp_path / "flows.csv"
    proc = fasttcp("analyze", os.path.join(SHARED, "zeek__http__get.pcap"), "--flows", str(out))
    assert proc.returncode == 0, proc.stderr
    with out.open() as f:
        (row,) = list(csv.DictReader(f))
    assert (row["orig_h"], row["orig_p"], row["resp_h"], row["resp_p"]) == (
        "141.142.228.5", "59856", "192.150.187.43", "80")
    assert (row["conn_state"], row["history"], row["state"]) == ("SF", "ShADadFf",
                                                                 "TIME_WAIT/CLOSED")


@needs_shared
def test_analyze_counts_what_it_skips():
    proc = fasttcp("analyze", "--json", os.path.join(SHARED, "zeek__tcp__timeout-with-pings.pcap"))
    result = json.loads(proc.stdout)
    assert result["segments"] == 3 and result["skipped"]["non_tcp"] == 12


def test_captures_split_in_time_give_the_same_flows(tmp_path):
    from fasttcp.synth import generate, write_pcap
    batches = list(generate(3000, seed=5, batch_size=5000))
    whole, first, second = (str(tmp_path / name) for name in ("all.pcap", "a.pcap", "b.pcap"))
    write_pcap(whole, batches)
    write_pcap(first, batches[:len(batches) // 2])
    write_pcap(second, batches[len(batches) // 2:])
    one = json.loads(fasttcp("analyze", "--json", whole).stdout)
    two = json.loads(fasttcp("analyze", "--json", first, second).stdout)
    for key in ("packets", "segments", "flows", "connections", "conn_states", "histogram"):
        assert one[key] == two[key], key
    assert len(two["captures"]) == 2


def test_generate_is_reproducible_and_analyzable(tmp_path):
    paths = [str(tmp_path / name) for name in ("a.pcap", "b.pcap")]
    for path in paths:
        proc = fasttcp("generate", path, "--connections", "500", "--seed", "7", "--json")
        assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["packets"] > 500 and summary["bytes"] == os.path.getsize(paths[0])
    with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
        assert a.read() == b.read()
    result = json.loads(fasttcp("analyze", "--json", paths[0]).stdout)
    assert result["packets"] == summary["packets"]


def test_generate_with_a_mix(tmp_path):
    path = str(tmp_path / "scan.pcap.gz")
    proc = fasttcp("generate", path, "--connections", "20", "--mix", "scan=1")
    assert proc.returncode == 0, proc.stderr
    assert "20 connections" in proc.stdout
    result = json.loads(fasttcp("analyze", "--json", path).stdout)
    assert result["packets"] >= 20 * 16 and result["flows"] > 0    # a scan probes 16 ports


def test_sample_is_what_the_generator_makes(tmp_path):
    from fasttcp.sample import SAMPLE_CAPTURE, regenerate
    path = str(tmp_path / "sample.pcap.gz")
    regenerate(path)
    with open(path, "rb") as made, open(SAMPLE_CAPTURE, "rb") as bundled:
        assert made.read() == bundled.read()


@pytest.mark.parametrize("args, message", [
    (["analyze", "--flows", "out.txt"], "ending in .csv or .parquet"),
    (["analyze", "--model", "pf"], "invalid choice"),
    (["generate"], "required"),
    (["generate", "x.pcap", "--mix", "normal=1,surfing=2"], "unknown kind 'surfing'"),
    (["generate", "x.pcap", "--mix", "normal"], "not a weight"),
    (["generate", "x.pcap", "--rate", "0"], "rate must be"),
])
def test_analyze_and_generate_usage_errors(args, message, tmp_path):
    proc = fasttcp(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_runtime_errors_exit_1_with_a_message(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a capture\n")
    truncated = tmp_path / "cut.pcap"
    from fasttcp.sample import SAMPLE_CAPTURE
    with gzip.open(SAMPLE_CAPTURE, "rb") as f:
        truncated.write_bytes(f.read()[:5000])
    for args, message in [
        (["analyze", str(tmp_path / "missing.pcap")], "missing.pcap: no such file"),
        (["analyze", str(tmp_path)], "not a file"),
        (["analyze", str(text)], "not a pcap or pcapng file"),
        (["analyze", str(truncated)], "truncated capture"),
    ]:
        proc = fasttcp(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr.startswith("fasttcp: ") and message in proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    proc = fasttcp("analyze", "--keep-going", str(truncated))
    assert proc.returncode == 0
    # the warning is a diagnostic: on stderr, where a pipe of the report does not take it
    assert proc.stderr.startswith("fasttcp: warning: ") and "bytes not read" in proc.stderr
    assert "warning" not in proc.stdout and proc.stdout.startswith("cut.pcap: 69 packets")


@pytest.mark.parametrize("option, name", [("--plot", "states.png"), ("--flows", "flows.parquet")])
def test_optional_outputs(tmp_path, option, name):
    out = str(tmp_path / name)
    proc = fasttcp("analyze", option, out)
    assert proc.returncode == 0, proc.stderr
    with open(out, "rb") as f:
        assert f.read(8).startswith(b"\x89PNG" if name.endswith(".png") else b"PAR1")


@pytest.mark.parametrize("option, module", [("--plot", "matplotlib"), ("--flows", "pandas"),
                                            ("--flows", "pyarrow")])
def test_missing_optional_packages_are_named(tmp_path, monkeypatch, capsys, option, module):
    from fasttcp.cli import main
    # pandas notes at its import whether pyarrow is there: it must see the real one, or later
    # tests in this process (Dask's string columns) find pyarrow missing
    with contextlib.suppress(ImportError):
        import pandas  # noqa: F401
    monkeypatch.setitem(sys.modules, module, None)    # makes `import module` fail
    out = str(tmp_path / ("states.png" if option == "--plot" else "flows.parquet"))
    assert main(["analyze", option, out]) == 1
    err = capsys.readouterr().err
    assert f"needs {module}: pip install 'fasttcp[" in err and not os.path.exists(out)


def test_a_closed_pipe_ends_quietly():
    proc = subprocess.run(f"{sys.executable} -m fasttcp analyze --json | head -c 0",
                          shell=True, capture_output=True, text=True, cwd=os.path.dirname(ROOT),
                          timeout=120)
    assert proc.stdout == "" and proc.stderr == ""
