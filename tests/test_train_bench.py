"""benchmarks/gpu_train_bench.py runs end to end (CPU, tiny model) and reports every variant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("deepspeed")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_train_bench.py"


def test_tiny_benchmark_runs_every_variant(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tiny",
            "--steps",
            "3",
            "--grad-accum",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {
        "baseline", "kprep", "kprep_cache", "kprep_8x1", "kprep_auto", "kprep_70",
        "kprep_qlora", "kprep_zero2",
    }  # fmt: skip
    for name, res in results.items():
        assert res["samples_per_s"] > 0, name
        assert res["train_loss"] > 0, name
        assert res["vs_published"] > 0 and res["vs_baseline"] > 0, name
    assert results["kprep"]["lora_modules"] == 24 and results["kprep"]["vision_cache"] == "off"
    assert results["kprep_cache"]["vision_cache"] == "memory"
    assert results["kprep_cache"]["cache_build_s"] > 0
    assert results["kprep_8x1"]["micro_batch"] == 2  # all of the effective batch of 2
    assert results["kprep_auto"]["micro_batch"] == 1  # CPU: keeps the configured split
    assert results["kprep_qlora"]["lora_modules"] == 24
    assert report["epochs"] == 3
    assert "vs baseline" in proc.stdout and "kprep_zero2" in proc.stdout


def test_data_only_mode_reports_the_input_pipeline(tmp_path):
    out = tmp_path / "data.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-only", "--samples", "4", "--workers", "2",
         "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    (plain, kprep) = report["results"].values()
    assert plain["samples_per_s"] > 0 and kprep["samples_per_s"] > 0
    assert kprep["pixel_bytes_per_sample"] * 4 == plain["pixel_bytes_per_sample"]  # uint8
    assert plain["pixel_bytes_per_sample"] == 4 * 2520 * 768 * 4  # 4 frames at 280 soft tokens


def test_gpu_mode_refuses_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "1"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--tiny" in proc.stderr
