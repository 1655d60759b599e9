"""benchmarks/gpu_check.sh: its wiring, proven on a CPU with --dry-run.

The dry run uses this interpreter (no install), runs the `gpu` tests (they
skip without CUDA), the training benchmark's --tiny mode (two variants here,
to keep CI short) and the data-only mode, and writes the same summary.json and
log as a GPU run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def test_script_parses():
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_dry_run_writes_the_summary_and_log(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the real check")
    if shutil.which("timeout") is None:
        pytest.fail("coreutils `timeout` not found")
    out = tmp_path / "gpu-check-out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "KPREP_DRY_VARIANTS": "baseline,kprep_cache",
        "PYTHONPATH": str(SCRIPT.parents[1]),
        # A shared CI CPU is slower than the GPU machine the default limits are for.
        "LIMIT_TESTS": "600",
        "LIMIT_BENCH": "600",
        "LIMIT_DATA": "300",
    }
    env.pop("KPREP_REQUIRE_GPU", None)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["ok"] is True
    assert [s["step"] for s in summary["steps"]] == [
        "environment",
        "gpu_tests",
        "bench",
        "data_bench",
    ]
    assert all(s["rc"] == 0 and s["seconds"] <= s["limit_s"] for s in summary["steps"])
    assert summary["environment"]["cuda_available"] is False
    assert summary["environment"]["torch"]
    tests = summary["gpu_tests"]
    assert tests["tests"] >= 9 and tests["skipped"] == tests["tests"] and not tests["failed"]
    assert set(summary["bench"]["results"]) == {"baseline", "kprep_cache"}
    assert summary["bench"]["complete"] is True
    assert len(summary["data_bench"]["results"]) == 2
    log = (out / "gpu_check.log").read_text()
    assert "step bench" in log and "kprep_cache" in log and "summary:" in log
