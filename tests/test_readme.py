"""The README's Python examples run as written."""
import os
import re

import numpy as np
import pytest

from fasttcp import addresses

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
with open(README, encoding="utf-8") as f:
    BLOCKS = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)     # examples may write files
    exec(compile(code, README, "exec"), {})


def test_printed_results_are_as_shown(tmp_path, monkeypatch, capsys):
    """A block's `# ...` lines right after a print() are what it prints."""
    monkeypatch.chdir(tmp_path)
    for code in BLOCKS:
        shown = re.findall(r"^print\(.*\)\n((?:# .*\n)+)", code, flags=re.M)
        if not shown:
            continue
        exec(compile(code, README, "exec"), {})
        printed = capsys.readouterr().out
        for lines in shown:
            for line in lines.splitlines():
                assert line[2:] in printed


def test_quick_start_results_are_as_shown():
    namespace = {}
    exec(compile(next(b for b in BLOCKS if "res = t.update(" in b), README, "exec"), namespace)
    t, res = namespace["t"], namespace["res"]
    assert (res.new, res.valid, res.invalid, res.ignored) == (1, 3, 0, 0)
    assert [t.model.states[s] for s in res.state] == [
        "SYN_SENT/LISTEN", "SYN_SENT/SYN_RCVD", "ESTABLISHED/ESTABLISHED",
        "ESTABLISHED/ESTABLISHED"]
    info = t.lookup("192.0.2.80", 443, "10.0.0.1", 51000)
    assert (info.orig_pkts, info.resp_pkts, info.orig_bytes, info.direction) == (3, 1, 517, "resp")
    assert t.histogram()["ESTABLISHED/ESTABLISHED"] == 1 and len(t) == 1
    assert t.histogram(by="resp")["ESTABLISHED"] == 1


def test_synflood_model_counts_half_open_connections():
    namespace = {}
    exec(compile(next(b for b in BLOCKS if "HALF_OPEN" in b), README, "exec"), namespace)
    t = namespace["t"]
    n = 100  # spoofed SYNs, then one full handshake
    src = addresses([f"198.51.100.{i}" for i in range(n)])
    t.update(ts=np.arange(n), src=src, sport=np.full(n, 1234), dst=np.full(n, 0x0A000002),
             dport=np.full(n, 80), flags=np.full(n, 0x02))
    assert t.histogram()["HALF_OPEN"] == n
    assert t.model.next_state("NEW", "orig", "ACK") == ("OPEN", "pickup")
    assert t.model.next_state("OPEN", "resp", "XMAS") == ("invalid", "")
