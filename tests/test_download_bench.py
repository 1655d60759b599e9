"""The download benchmark runs end to end in its quick mode (no timing asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_download.py"


def test_bench_download_quick_mode_moves_every_clip(ffmpeg, capsys):
    spec = importlib.util.spec_from_file_location("bench_download", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--quick"])
    assert results["subset_rows"] == 40
    assert results["local_rows"] == results["mirror_rows"] == 40
    assert results["youtube_fast_clips"] == results["youtube_exact_clips"] == 1
    assert "youtube source (exact cuts): 1 clips" in capsys.readouterr().out
