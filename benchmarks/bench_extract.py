"""Benchmark `kprep extract` against the usual alternatives on the same clips, in one run.

Methods (each writes 4 segment-centre JPEGs per clip to its own folder):

- kprep, 1 worker and N workers (``extract_clips`` in a fresh process, so the
  workers' start is included; peak RSS per worker is the largest
  ``worker_peak_rss_mb`` its records report, i.e. ``ru_maxrss`` of each worker);
- kprep 1 worker with ``--decoder decord``, for its speed and memory;
- ffmpeg CLI per clip: ``ffprobe -count_packets`` for the frame count, then
  ``ffmpeg -vf select='eq(n,a)+eq(n,b)+...'`` (ffmpeg's default threading);
- naive decode-all-then-pick with OpenCV: ``cap.read()`` every frame, keep the
  centres, ``cv2.imwrite`` (OpenCV's default threading).

Clips are Kinetics-like: 340x256 H.264, 10 s at 25 fps, synthetic counter
frames, in two sets: keyframe every 250 frames (x264's default: the whole clip is
one GOP, the worst case for index-based decoding) and every 50 frames (2 s, like
YouTube sources and re-encodes of real footage, where scene cuts add keyframes). Prints clips/s per method and the ratios the issue
sets targets for. Usage::

    .venv/bin/python benchmarks/bench_extract.py --clips 24 --workers 2 --repeats 3

``--engine ray`` times only the local pool against ``kprep extract --engine ray``
(a local Ray of ``--workers`` CPUs, started before the clock) and prints each
one's driver CPU time per record::

    .venv/bin/python benchmarks/bench_extract.py --engine ray --clips 48 --workers 2 --gops 50
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kinetics_prep.sampling import sample_indices
from kinetics_prep.synthetic import write_counter_clip

_KPREP_CHILD = """
import json, sys, time
from kinetics_prep.extract import ExtractConfig, extract_clips
clips, out, workers, decoder = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
engine = sys.argv[5] if len(sys.argv) > 5 else "local"
if engine == "ray":  # the cluster is up before the clock starts, as on a real cluster
    import ray
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024 * 1024)
config = ExtractConfig(clips=clips, output_dir=out, workers=workers, decoder=decoder,
                       engine=engine)
start, cpu = time.perf_counter(), time.process_time()
summary = extract_clips(config)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
from kinetics_prep.records import iter_records
rss = max(r["worker_peak_rss_mb"] for r in iter_records(config.records_path))
print(json.dumps({"seconds": seconds, "ok": summary.ok, "worker_rss_mb": rss,
                  "driver_cpu_ms_per_record": 1000 * cpu / max(summary.processed, 1)}))
"""


def make_clips(folder: Path, count: int, gop: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"clip{i:03d}.mp4"
        if not path.exists():
            write_counter_clip(path, num_frames=250, width=340, height=256, gop=gop)
        paths.append(path)
    return paths


def run_kprep(clips: Path, out: Path, workers: int, decoder: str, engine: str = "local") -> dict:
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-c", _KPREP_CHILD, str(clips), str(out), str(workers), decoder, engine],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_ffmpeg(paths: list[Path], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    for path in paths:
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
             "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        targets = sample_indices(int(probe.stdout.strip().split(",")[0]), 4)
        folder = out / path.stem
        folder.mkdir(parents=True)
        select = "+".join(f"eq(n\\,{i})" for i in targets)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(path), "-vf", f"select={select}",
             "-fps_mode", "passthrough", "-q:v", "2", str(folder / "frame_%d.jpg")],
            check=True,
        )  # fmt: skip
    return time.perf_counter() - start


def run_naive_opencv(paths: list[Path], out: Path, threads: int = 0) -> float:
    """threads 0: OpenCV's default (FFmpeg decodes with all cores)."""
    import cv2

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    for path in paths:
        params = [cv2.CAP_PROP_N_THREADS, threads] if threads else []
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        capture.release()
        folder = out / path.stem
        folder.mkdir(parents=True)
        for n, index in enumerate(sample_indices(len(frames), 4), start=1):
            cv2.imwrite(
                str(folder / f"frame_{n}.jpg"), frames[index], [cv2.IMWRITE_JPEG_QUALITY, 95]
            )
    return time.perf_counter() - start


def bench(clip_dir: Path, paths: list[Path], work: Path, workers: int, repeats: int) -> None:
    n = len(paths)
    times: dict[str, list[float]] = {}
    rss: dict[str, float] = {}
    many = f"kprep {workers} workers"
    methods = {
        "kprep 1 worker": lambda: run_kprep(clip_dir, work / "k1", 1, "auto"),
        many: lambda: run_kprep(clip_dir, work / "kn", workers, "auto"),
        "kprep 1 worker --decoder decord": lambda: run_kprep(clip_dir, work / "kd", 1, "decord"),
        "ffmpeg CLI select per clip": lambda: run_ffmpeg(paths, work / "ff"),
        "naive OpenCV decode-all": lambda: run_naive_opencv(paths, work / "cv"),
        "naive OpenCV decode-all, 1 thread": lambda: run_naive_opencv(paths, work / "c1", 1),
    }
    for _ in range(repeats):  # interleaved, so drift on a shared box hits all methods
        for name, method in methods.items():
            result = method()
            if isinstance(result, dict):
                assert result["ok"] == n, result
                times.setdefault(name, []).append(result["seconds"])
                rss[name] = max(rss.get(name, 0.0), result["worker_rss_mb"])
            else:
                times.setdefault(name, []).append(result)

    rate = {name: n / statistics.median(values) for name, values in times.items()}
    print(f"{'method':40s} {'clips/s':>8s} {'peak RSS/worker':>16s}")
    for name, value in rate.items():
        memory = f"{rss[name]:.0f} MB" if name in rss else "-"
        print(f"{name:40s} {value:8.2f} {memory:>16s}")
    one, n_rate = rate["kprep 1 worker"], rate[many]
    ffmpeg, naive = rate["ffmpeg CLI select per clip"], rate["naive OpenCV decode-all"]
    naive1 = rate["naive OpenCV decode-all, 1 thread"]
    print(f"kprep 1 worker / ffmpeg CLI:             {one / ffmpeg:.2f}x (target >= 3)")
    print(f"kprep 1 worker / naive OpenCV:           {one / naive:.2f}x (target >= 1.5)")
    print(f"kprep 1 worker / naive OpenCV 1 thread:  {one / naive1:.2f}x (same cores)")
    print(f"{many} / naive OpenCV:          {n_rate / naive:.2f}x (same cores)")
    print(f"{many} / 1 worker:              {n_rate / one:.2f}x (target >= 1.8 at 2)")
    peak = max(rss["kprep 1 worker"], rss[many])
    print(f"peak RSS per worker (auto):              {peak:.0f} MB (target <= 200)")


def bench_engines(clip_dir: Path, n: int, work: Path, workers: int, repeats: int) -> None:
    """The local pool and the Ray engine on the same clips and CPUs, interleaved."""
    local, remote = f"kprep local pool, {workers} workers", f"kprep --engine ray, {workers} CPUs"
    methods = {
        local: lambda: run_kprep(clip_dir, work / "kl", workers, "auto"),
        remote: lambda: run_kprep(clip_dir, work / "kr", workers, "auto", "ray"),
    }
    runs: dict[str, list[dict]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            result = method()
            assert result["ok"] == n, result
            runs[name].append(result)
    rate = {name: n / statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    print(f"{'method':40s} {'clips/s':>8s} {'driver CPU/record':>18s}")
    for name, rs in runs.items():
        cpu = statistics.median(r["driver_cpu_ms_per_record"] for r in rs)
        print(f"{name:40s} {rate[name]:8.2f} {cpu:15.2f} ms")
    print(
        f"ray / local pool:                        {rate[remote] / rate[local]:.2f}x (target >= 0.85)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24, help="number of synthetic clips")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="N for kprep")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method (median)")
    parser.add_argument(
        "--gops", default="250,50", help="keyframe intervals to test (250: x264 default, one GOP)"
    )
    parser.add_argument("--cache", type=Path, default=None, help="keep the clips here")
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="ray: only the local pool vs --engine ray (a local Ray of --workers CPUs)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    cache = args.cache or work / "clips"
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} at start; median of {args.repeats} runs")
    for gop in (int(g) for g in args.gops.split(",")):
        clip_dir = cache / f"gop{gop}"
        paths = make_clips(clip_dir, args.clips, gop)
        print(f"\n{len(paths)} clips, 340x256 H.264 10 s 25 fps, keyframe every {gop} frames")
        if args.engine == "ray":
            bench_engines(clip_dir, len(paths), work, args.workers, args.repeats)
        else:
            bench(clip_dir, paths, work, args.workers, args.repeats)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
