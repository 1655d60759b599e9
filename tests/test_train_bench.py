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
            "2",
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
    assert set(report["results"]) == {"baseline", "kprep", "kprep_70", "kprep_zero2"}
    for name, res in report["results"].items():
        assert res["samples_per_s"] > 0, name
        assert res["train_loss"] > 0, name
    assert report["results"]["kprep"]["lora_modules"] == 24
    assert "vs baseline" in proc.stdout and "kprep_zero2" in proc.stdout


def test_gpu_mode_refuses_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "1"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--tiny" in proc.stderr
