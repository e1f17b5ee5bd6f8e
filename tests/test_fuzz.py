"""The fuzzers (fuzz/): every input they ever found stays fixed, they run briefly in every test
run, and for as long as asked with ``pytest -m fuzz`` (FASTTCP_FUZZ_SECONDS, default 300 each).
"""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "fuzz"
FINDINGS = Path(__file__).resolve().parent / "data" / "fuzz"
HARNESSES = {"capture": "fuzz_capture.py", "batch": "fuzz_batch.py",
             "snapshot": "fuzz_snapshot.py"}

atheris = pytest.importorskip("atheris", reason="the fuzzers need atheris (test extras)")


def harness(name):
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", FUZZ / HARNESSES[name])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("finding", sorted(p.name for p in FINDINGS.iterdir()))
def test_findings_stay_fixed(finding):
    """Inputs the fuzzers once failed on: each must now pass its harness's checks."""
    kind = finding.split("-", 1)[0]
    harness(kind).check((FINDINGS / finding).read_bytes())


def run_fuzzer(name, seconds, tmp_path):
    corpus = tmp_path / name          # libFuzzer adds what it finds to the corpus: use a copy
    shutil.copytree(FUZZ / "corpus" / name, corpus)
    proc = subprocess.run([sys.executable, str(FUZZ / HARNESSES[name]), str(corpus),
                           f"-max_total_time={seconds}", f"-artifact_prefix={tmp_path}/",
                           "-timeout=10"], capture_output=True, text=True,
                          timeout=seconds + 120)
    found = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-"))]
    assert proc.returncode == 0 and not found, (found, proc.stderr[-3000:])


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_fuzzers_briefly(name, tmp_path):
    run_fuzzer(name, 5, tmp_path)


@pytest.mark.fuzz
@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_fuzzers_at_length(name, tmp_path):
    run_fuzzer(name, int(os.environ.get("FASTTCP_FUZZ_SECONDS", "300")), tmp_path)


def test_corpus_is_what_make_corpus_writes(tmp_path):
    copy = tmp_path / "fuzz"
    shutil.copytree(FUZZ, copy)
    shutil.rmtree(copy / "corpus")
    subprocess.run([sys.executable, str(copy / "make_corpus.py")], check=True)
    for kind in HARNESSES:
        made = sorted((copy / "corpus" / kind).iterdir())
        kept = sorted((FUZZ / "corpus" / kind).iterdir())
        assert [p.name for p in made] == [p.name for p in kept]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(made, kept))
