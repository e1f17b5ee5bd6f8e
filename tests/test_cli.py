"""The fasttcp command, end to end, as a shell user runs it."""
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
    assert result["fasttcp_bytes_per_connection"] <= 64
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
