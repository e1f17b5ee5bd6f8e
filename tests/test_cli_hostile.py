"""The fasttcp command under interruption and hostile arguments, as a shell user meets them:
the installed ``fasttcp`` script in a subprocess, real signals, real files."""
import csv
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fasttcp
from fasttcp._atomic import PARTIAL_MARK, atomic_output
from fasttcp.sample import SAMPLE_CAPTURE

FASTTCP = shutil.which("fasttcp", path=os.path.dirname(sys.executable))
pytestmark = pytest.mark.skipif(FASTTCP is None, reason="the fasttcp script is not installed")
STATUS = {signal.SIGINT: (130, "fasttcp: interrupted\n"),
          signal.SIGTERM: (143, "fasttcp: terminated\n")}
# a bound on every wait, generous: a run here takes seconds
PATIENCE = 120.0


def run(*args, cwd):
    return subprocess.run([FASTTCP, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=PATIENCE)


def partials(folder):
    return [name for name in os.listdir(folder) if PARTIAL_MARK in name]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A capture whose analysis takes a second or more: 2.5 M packets, gzip-compressed."""
    where = tmp_path_factory.mktemp("big")
    proc = run("generate", "big.pcap.gz", "--connections", "200000", cwd=where)
    assert proc.returncode == 0, proc.stderr
    return str(where / "big.pcap.gz")


def written(folder):
    """Bytes in the temporary outputs in `folder`, or -1 while there is none."""
    sizes = []
    for name in partials(folder):
        try:
            sizes.append(os.path.getsize(os.path.join(folder, name)))
        except OSError:     # renamed or removed meanwhile
            pass
    return sum(sizes) if sizes else -1


def interrupt_once_writing(args, folder, signum, after_bytes=0, attempts=5):
    """Runs ``fasttcp ARGS`` in `folder` and sends `signum` as soon as its temporary output
    holds `after_bytes` (0: as soon as it appears); retried a bounded number of times when the
    run ends before that. Returns the finished process of the first run the signal reached."""
    for _ in range(attempts):
        proc = subprocess.Popen([FASTTCP, *args], cwd=folder, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + PATIENCE
        sent = False
        while proc.poll() is None and time.monotonic() < deadline:
            if written(folder) >= after_bytes:
                proc.send_signal(signum)
                sent = True
                break
            time.sleep(0.002)
        proc.stdout_text, proc.stderr_text = proc.communicate(timeout=PATIENCE)
        if sent:
            return proc
        # too quick to catch: only a complete run may have finished
        assert proc.returncode == 0, proc.stderr_text
    pytest.fail(f"no run of {args} lasted long enough to be interrupted in {attempts} tries")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("after_bytes", [0, 1], ids=["reading", "writing"])
def test_interrupted_analyze_leaves_no_flows_file(big, tmp_path, signum, existing, after_bytes):
    """Interrupted once the flows' temporary is made (the capture is being read), or once rows
    reach it (about the last half of this run)."""
    out = tmp_path / "out.csv"
    if existing:
        out.write_text("an older run's flows\n")
    proc = interrupt_once_writing(["analyze", big, "--flows", str(out)], tmp_path, signum,
                                  after_bytes)
    status, message = STATUS[signum]
    assert proc.returncode == status, proc.stderr_text
    assert proc.stderr_text == message and proc.stdout_text == ""
    assert partials(tmp_path) == []
    if existing:
        assert out.read_text() == "an older run's flows\n"
    else:
        assert not out.exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_generate_leaves_no_capture(tmp_path, signum):
    out = tmp_path / "huge.pcap"
    proc = interrupt_once_writing(["generate", str(out), "--connections", "3000000"],
                                  tmp_path, signum, after_bytes=1)
    assert (proc.returncode, proc.stderr_text) == STATUS[signum]
    assert os.listdir(tmp_path) == []


def test_a_failed_run_leaves_no_flows_file(tmp_path):
    """A capture that turns out damaged after another was read: exit 1, no partial flows."""
    good, cut = tmp_path / "good.pcap", tmp_path / "cut.pcap"
    with gzip.open(SAMPLE_CAPTURE, "rb") as f:
        data = f.read()
    good.write_bytes(data)
    cut.write_bytes(data[:5000])
    out = tmp_path / "flows.csv"
    proc = run("analyze", str(good), str(cut), "--flows", str(out), cwd=tmp_path)
    assert proc.returncode == 1 and "truncated capture" in proc.stderr
    assert not out.exists() and partials(tmp_path) == []
    out.write_text("kept\n")
    proc = run("analyze", str(good), str(cut), "--flows", str(out), cwd=tmp_path)
    assert proc.returncode == 1 and out.read_text() == "kept\n" and partials(tmp_path) == []
    proc = run("analyze", str(good), "--flows", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with out.open() as f:
        assert len(list(csv.DictReader(f))) == 389     # the sample's connections
    assert partials(tmp_path) == []


def _mapped(pid):
    try:
        with open(f"/proc/{pid}/maps") as f:
            return f.read()
    except OSError:
        return ""


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_start_up_is_quiet(tmp_path, signum):
    """The signal is sent once numpy's core is loaded and before fasttcp's compiled modules
    are: in the middle of the imports, where a Ctrl-C used to print a traceback."""
    for _ in range(20):
        proc = subprocess.Popen([FASTTCP, "analyze"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        sent = False
        deadline = time.monotonic() + PATIENCE
        while proc.poll() is None and time.monotonic() < deadline:
            maps = _mapped(proc.pid)
            if "_multiarray_umath" in maps:
                if "/fasttcp/_" not in maps:
                    proc.send_signal(signum)
                    sent = True
                break
        out, err = proc.communicate(timeout=PATIENCE)
        if sent:
            break
    else:
        pytest.fail("never caught the command between numpy's imports and fasttcp's")
    assert (proc.returncode, err) == STATUS[signum] and out == ""


# -- usage errors and clear exceptions ------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["analyze", "--flows", ""], "--flows: write to a file ending in .csv or .parquet"),
    (["analyze", "--plot", ""], "--plot: give the image's file name"),
    (["analyze", "--plot", "out.xyz"], "--plot: images are written as "),
    (["generate", "x.pcap", "--rate", "1e-300"], "would arrive past int64 nanoseconds"),
    (["generate", "x.pcap", "--rate", "nan"], "rate must be a finite number"),
    # past 2106, where pcap's 32-bit seconds end, though within int64 nanoseconds
    (["generate", "x.pcap", "--rate", "1e-5", "--connections", "30000"], "past 2106"),
])
def test_usage_errors_are_one_line_and_write_nothing(tmp_path, args, message):
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 2     # argparse's usage line and the error
    assert os.listdir(tmp_path) == []


def test_a_plot_without_an_extension_is_a_png(tmp_path):
    """matplotlib picks the format by the name: the temporary must not add an extension."""
    proc = run("analyze", "--plot", "states", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "states").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["states"]


def test_huge_mix_weights_are_relative(tmp_path):
    """Weights near the float maximum used to overflow their sum into a traceback; they are
    relative, so 1e308:1e308 is the same mix as 1:1 (the same seed gives the same bytes)."""
    for name, mix in (("huge.pcap", "scan=1e308,syn_flood=1e308"),
                      ("one.pcap", "scan=1,syn_flood=1")):
        proc = run("generate", name, "--connections", "200", "--mix", mix, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "huge.pcap").read_bytes() == (tmp_path / "one.pcap").read_bytes()


def test_generate_refuses_timestamps_beyond_int64():
    from fasttcp.synth import generate
    with pytest.raises(ValueError, match="past int64 nanoseconds"):
        generate(10, rate=1e-300)
    with pytest.raises(ValueError, match="past int64 nanoseconds"):
        generate(1, start=np.iinfo(np.int64).max)
    assert len(np.concatenate(list(generate(10, rate=1e-3)))) > 0    # 10^4 s: fine


def test_write_pcap_refuses_timestamps_pcap_cannot_hold(tmp_path):
    from fasttcp.synth import PCAP_TS_END, write_pcap
    (batch,) = fasttcp.synth.generate(1, mix={"normal": 1.0}, start=PCAP_TS_END - 1)
    out = tmp_path / "late.pcap"
    with pytest.raises(ValueError, match="32-bit seconds of pcap"):
        write_pcap(out, [batch])
    assert os.listdir(tmp_path) == []


@pytest.fixture
def tracker():
    t = fasttcp.Tracker()
    a, b = fasttcp.addresses(["192.0.2.1", "192.0.2.2"])
    t.update(np.array([0, 1]), np.array([a, b]), np.array([1234, 80]), np.array([b, a]),
             np.array([80, 1234]), np.array([0x02, 0x12]))
    return t


@pytest.mark.parametrize("port, error", [(1234.7, TypeError), (1234.0, TypeError),
                                         (True, TypeError), (np.float64(1234), TypeError),
                                         ("1234", TypeError), (65536, ValueError),
                                         (-1, ValueError)])
def test_lookup_ports_must_be_integers_in_range(tracker, port, error):
    assert tracker.lookup("192.0.2.1", 1234, "192.0.2.2", 80) is not None
    assert tracker.lookup("192.0.2.1", np.uint16(1234), "192.0.2.2", 80) is not None
    with pytest.raises(error, match="sport"):
        tracker.lookup("192.0.2.1", port, "192.0.2.2", 80)
    with pytest.raises(error, match="dport"):
        tracker.lookup("192.0.2.1", 1234, "192.0.2.2", port)


@pytest.mark.parametrize("ports, error", [([1234.7], TypeError), ([True], TypeError),
                                          ([65536], ValueError), ([-1], ValueError)])
def test_lookup_many_ports_must_be_integers_in_range(tracker, ports, error):
    a, b = fasttcp.addresses(["192.0.2.1", "192.0.2.2"])
    assert tracker.lookup_many([a], [1234], [b], [80]).conn[0] >= 0
    with pytest.raises(error, match="sport"):
        tracker.lookup_many([a], ports, [b], [80])


def test_atomic_output_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temporary:
            with open(temporary, "w") as f:
                f.write("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    with atomic_output(target) as temporary:
        assert temporary.endswith(".txt") and os.path.dirname(temporary) == str(tmp_path)
        with open(temporary, "w") as f:
            f.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]
    with atomic_output(tmp_path / "no_extension") as temporary:
        assert os.path.splitext(temporary)[1] == ""    # what writers choose formats by
    with pytest.raises(FileNotFoundError, match="missing"):
        with atomic_output(tmp_path / "missing" / "out.txt"):
            pass
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(IsADirectoryError, match="dir.csv"):
        with atomic_output(tmp_path / "dir.csv"):
            pass
