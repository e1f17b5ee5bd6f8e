"""What the ``fasttcp`` command loads before it works: start-up time is part of every run.

Each check runs in a fresh interpreter, since this one has imported everything already.
"""
import json
import os
import subprocess
import sys
import tempfile

import pytest

# modules the analyze path has no use for: the generator, the benchmark workloads, the
# optional packages (dask, pandas, pyarrow, matplotlib, tqdm without a terminal)
NOT_AT_START = ("fasttcp.synth", "fasttcp.dask", "fasttcp.bench", "fasttcp.workloads",
                "fasttcp.reference", "dask", "distributed", "pandas", "pyarrow", "matplotlib",
                "tqdm")


def loaded_after(code: str, env: dict = None) -> dict:
    """Runs `code` in a fresh interpreter; returns its sys.modules names and environment."""
    script = (f"import json, os, sys\n{code}\n"
              "print(json.dumps({'modules': sorted(sys.modules), 'env': dict(os.environ)}))")
    # away from the source tree, whose fasttcp has no compiled modules after `pip install .`
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env=env, stdin=subprocess.DEVNULL,
                         cwd=tempfile.gettempdir()).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import fasttcp",
    "from _fasttcp_launcher import main\nmain(['analyze', '--json'])",
])
def test_import_and_analyze_load_no_optional_modules(code):
    modules = loaded_after(code)["modules"]
    assert "fasttcp.tracker" in modules     # the check sees what was loaded
    assert sorted(set(NOT_AT_START) & set(modules)) == []


def test_generate_still_loads_the_generator(tmp_path):
    code = (f"from _fasttcp_launcher import main\n"
            f"main(['generate', {str(tmp_path / 'g.pcap')!r}, '--connections', '5'])")
    assert "fasttcp.synth" in loaded_after(code)["modules"]


@pytest.mark.parametrize("user_setting", [None, "4"])
def test_launcher_keeps_openblas_to_one_thread_unless_told(user_setting):
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    if user_setting is not None:
        env["OPENBLAS_NUM_THREADS"] = user_setting
    code = "from _fasttcp_launcher import main\nmain(['analyze', '--json'])"
    assert loaded_after(code, env)["env"]["OPENBLAS_NUM_THREADS"] == (user_setting or "1")
