"""benchmarks/bench_decode_costs.py (figures quoted in docs/performance.md) runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_decode_costs_bench_reports_every_figure():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_decode_costs.py"),
            "--frames",
            "20",
            "--repeats",
            "1",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    conversion = report["rgb_conversion"]
    assert conversion["to_ndarray_ms"] > 0 and conversion["reused_reformatter_ms"] > 0
    for key in ("import_bare", "import_worker", "import_worker_plus_decord"):
        assert report[key]["peak_rss_mb"] > 0
    # importing more modules can only raise the peak RSS of a fresh interpreter
    assert report["import_worker"]["peak_rss_mb"] > report["import_bare"]["peak_rss_mb"]
    assert report["decord_adds"]["peak_rss_mb"] >= 0
