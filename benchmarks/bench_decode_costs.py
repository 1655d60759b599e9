"""Small decode costs that docs/performance.md quotes, each measured side by side.

1. RGB conversion of a decoded 340x256 PyAV frame: ``frame.to_ndarray(format="rgb24")``
   (a new SwsContext per call) against one reused ``VideoReformatter`` (what
   ``kinetics_prep.decode`` does), median ms per frame and the ratio.
2. Import cost in a fresh interpreter: wall time and peak RSS (``VmHWM``)
   of ``import numpy, av, cv2`` (what an extract worker imports) against the
   same plus ``import decord`` (decord2), and of a bare interpreter.

Usage (the figures in docs/performance.md)::

    .venv/bin/python benchmarks/bench_decode_costs.py --frames 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORT_PROBE = """
import json, sys, time
t = time.perf_counter()
for name in sys.argv[1:]:
    __import__(name)
seconds = time.perf_counter() - t
with open("/proc/self/status") as status:  # VmHWM: this process's peak RSS, reset at exec
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_rss_mb": hwm / 1024}))
"""


def conversion_ms(frames: int) -> dict[str, float]:
    import av
    from av.video.reformatter import VideoReformatter

    from kinetics_prep.synthetic import write_counter_clip

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_counter_clip(clip, num_frames=frames, width=340, height=256)
        with av.open(str(clip)) as container:
            decoded = [f for _, f in zip(range(frames), container.decode(video=0), strict=False)]
    fresh, reused = [], []
    reformatter = VideoReformatter()
    for frame in decoded:  # interleaved, so load changes hit both alike
        t = time.perf_counter()
        frame.to_ndarray(format="rgb24")
        fresh.append(time.perf_counter() - t)
        t = time.perf_counter()
        reformatter.reformat(frame, format="rgb24").to_ndarray()
        reused.append(time.perf_counter() - t)
    a, b = statistics.median(fresh) * 1e3, statistics.median(reused) * 1e3
    return {
        "to_ndarray_ms": round(a, 3),
        "reused_reformatter_ms": round(b, 3),
        "ratio": round(a / b, 1),
    }


def import_cost(*modules: str, repeats: int = 3) -> dict[str, float]:
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", IMPORT_PROBE, *modules],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for _ in range(repeats)
    ]
    return {
        "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
        "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = {
        "rgb_conversion": conversion_ms(args.frames),
        "import_bare": import_cost(repeats=args.repeats),
        "import_worker": import_cost("numpy", "av", "cv2", repeats=args.repeats),
        "import_worker_plus_decord": import_cost(
            "numpy", "av", "cv2", "decord", repeats=args.repeats
        ),
    }
    w, d = result["import_worker"], result["import_worker_plus_decord"]
    result["decord_adds"] = {
        "seconds": round(d["seconds"] - w["seconds"], 3),
        "peak_rss_mb": round(d["peak_rss_mb"] - w["peak_rss_mb"], 1),
    }
    print(json.dumps(result, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
