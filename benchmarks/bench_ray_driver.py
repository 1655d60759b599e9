"""The Ray driver's own cost per record: how many clips/s one kprep driver can take in.

Tasks that return at once (a real extract record, no decoding) are streamed
through ``kinetics_prep.ray_engine.stream`` into ``RecordWriter`` exactly as
``kprep extract --engine ray`` does, so the driver (Ray calls, JSON, fsync) is
the only thing being measured. Printed: records/s (the driver's ceiling),
driver CPU ms per record, and the wall ms one fsynced record line costs in the
output folder (run with ``--out`` on the shared filesystem to see its cost),
with one fsync per record and with the engine's grouped fsyncs, side by side::

    .venv/bin/python benchmarks/bench_ray_driver.py --records 3000 --cpus 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

RECORD = {
    "clip_id": "x", "video_path": "/shared/k700/clips/abseiling/-3B32lodo2M_000059_000069.mp4",
    "status": "ok", "error": None, "reason": None, "frame_indices": [31, 93, 156, 218],
    "timestamps": [1.24, 3.72, 6.24, 8.72], "num_frames": 250, "fps": 25.0, "width": 340,
    "height": 256, "decoder": "pyav", "frames": [f"frames/x/frame_{i}.jpg" for i in range(1, 5)],
    "note": None, "sampling": "center", "seconds": 0.0612, "worker_peak_rss_mb": 76.1,
    "label": "abseiling", "youtube_id": "-3B32lodo2M", "time_start": 59, "time_end": 69,
    "split": "train",
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--cpus", type=int, default=2, help="local Ray CPUs")
    parser.add_argument("--window", type=int, default=256, help="tasks in flight")
    parser.add_argument("--out", type=Path, default=None, help="folder for the records file")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode (median)")
    args = parser.parse_args()

    import ray

    from kinetics_prep.ray_engine import stream
    from kinetics_prep.records import RecordWriter

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024 * 1024)  # fmt: skip

    @ray.remote(num_cpus=1)
    def finished(i: int) -> dict:
        return {**RECORD, "clip_id": f"clip{i:07d}"}

    ray.get([finished.remote(i) for i in range(4 * args.cpus)])  # workers up and warm
    folder = args.out or Path(tempfile.mkdtemp(prefix="bench_driver_"))
    from kinetics_prep.extract import RAY_SYNC_INTERVAL

    modes = {"fsync every record": 0.0, f"fsync every {RAY_SYNC_INTERVAL} s": RAY_SYNC_INTERVAL}
    results = {}
    for _ in range(args.repeats):  # interleaved
        for name, interval in modes.items():
            path = folder / "driver_records.jsonl"
            path.unlink(missing_ok=True)
            with RecordWriter(path, sync_interval=interval) as writer:
                wall, cpu = time.perf_counter(), time.process_time()
                stream(
                    range(args.records),
                    finished.remote,
                    lambda i, record, writer=writer: writer.write(record),
                    lambda i, error: (_ for _ in ()).throw(error),
                    window=lambda: args.window,
                )
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            assert path.read_text().count("\n") == args.records
            path.unlink()
            results.setdefault(name, []).append((args.records / wall, 1000 * cpu / args.records))
    with RecordWriter(folder / "w.jsonl") as writer:
        start = time.perf_counter()
        for i in range(500):
            writer.write({**RECORD, "clip_id": f"w{i}"})
        write_ms = 1000 * (time.perf_counter() - start) / 500
    (folder / "w.jsonl").unlink()
    ray.shutdown()
    print(
        f"{args.records} records, {args.cpus} Ray CPUs, window {args.window}, median of {args.repeats}"
    )
    print(f"{'records file':24s} {'records/s':>10s} {'driver CPU/record':>18s}")
    rates = {}
    for name, runs in results.items():
        rates[name] = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:24s} {rates[name]:10.0f} {cpu:15.2f} ms")
    first, second = list(rates)
    print(f"grouped / every record: {rates[second] / rates[first]:.2f}x")
    print(f"one fsynced record line: {write_ms:.3f} ms in {folder}")


if __name__ == "__main__":
    main()
