"""Benchmark the annotation reader, the subset builder and the three download sources.

Everything is local: the K400 val CSV when ``../shared/data`` is next to the
clone (else a synthetic one of the same size), a folder of small files for the
local source, ``.tar.gz`` archives read through ``file://`` for the mirror
source, and synthetic 30 s 340x256 clips served from a loopback HTTP server
(with Range support) for the youtube source, cut by yt-dlp + ffmpeg with
``--fast-cuts`` and ``--exact-cuts``. Prints one line per measurement and a
JSON summary. Usage::

    .venv/bin/python benchmarks/bench_download.py               # full: 3,000 rows, 8 clips
    .venv/bin/python benchmarks/bench_download.py --quick       # seconds, for the test
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import tarfile
import tempfile
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from kinetics_prep.annotations import read_annotations, write_annotations_csv
from kinetics_prep.download import DownloadConfig, download
from kinetics_prep.subset import SubsetConfig, build_subset

ROOT = Path(__file__).resolve().parents[1]
REAL_K400_VAL = ROOT.parent / "shared" / "data" / "kinetics-400_val.csv"


def serve_folder(folder: Path) -> ThreadingHTTPServer:
    """Serve ``folder`` on 127.0.0.1 with byte ranges (ffmpeg seeks in mp4 files)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = folder / self.path.lstrip("/").split("?", 1)[0]
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start, end, code = 0, len(data) - 1, 200
            match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
            if match:
                start, code = int(match[1]), 206
                end = min(int(match[2]), end) if match[2] else end
            self.send_response(code)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            try:
                self.wfile.write(data[start : end + 1])
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def synthetic_csv(path: Path, rows: int, classes: int) -> Path:
    lines = ["label,youtube_id,time_start,time_end,split"]
    for i in range(rows):
        lines.append(f"class {i % classes:03d},bench{i:06d},{i % 300},{i % 300 + 10},val")
    path.write_text("\n".join(lines) + "\n")
    return path


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test")
    parser.add_argument("--subset", type=int, default=3000, help="rows in the subset")
    parser.add_argument("--clips", type=int, default=8, help="youtube-source clips")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.subset, args.clips = 40, 1
    results: dict[str, float | int] = {}
    with tempfile.TemporaryDirectory(prefix="kprep-bench-download-") as tmp:
        work = Path(tmp)
        source = REAL_K400_VAL
        if args.quick or not source.is_file():
            source = synthetic_csv(
                work / "ann.csv", 400 if args.quick else 19906, 40 if args.quick else 400
            )
        ann, seconds = timed(read_annotations, source)
        results.update(annotation_rows=len(ann.rows), read_annotations_s=seconds)
        print(f"read_annotations: {len(ann.rows)} rows in {seconds:.3f} s ({source.name})")

        subset_csv = work / "subset.csv"
        config = SubsetConfig(annotations=source, output=subset_csv, max_clips=args.subset)
        summary, seconds = timed(build_subset, config)
        results.update(subset_rows=summary["rows"], subset_s=seconds)
        print(f"subset: {summary['rows']} rows, {summary['classes']} classes in {seconds:.3f} s")
        rows = read_annotations(subset_csv).rows

        local = work / "local"
        for row in rows:
            folder = local / str(row.label).replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{row.clip_id}.mp4").write_bytes(b"\0" * 1000)
        cfg = DownloadConfig(
            annotations=subset_csv, output_dir=work / "out_local", source="local", clips_dir=local
        )
        report, seconds = timed(download, cfg)
        _, rerun = timed(download, cfg)
        results.update(local_rows=report["downloaded"], local_s=seconds, local_rerun_s=rerun)
        print(f"local source: {report['downloaded']} clips in {seconds:.2f} s; rerun {rerun:.2f} s")

        payload = os.urandom(50_000)
        archives = []
        for part in range(4):
            path = work / f"part_{part}.tar.gz"
            with tarfile.open(path, "w:gz", compresslevel=1) as tar:
                for row in rows[part::4]:
                    info = tarfile.TarInfo(f"val/{row.clip_id}.mp4")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
            archives.append(path)
        urls = work / "urls.txt"
        urls.write_text("".join(f"file://{p}\n" for p in archives))
        megabytes = sum(p.stat().st_size for p in archives) / 1e6
        cfg = DownloadConfig(
            annotations=subset_csv, output_dir=work / "out_mirror", source="mirror", mirror_urls=urls, workers=args.workers,
            allow_file_urls=True,  # local tarballs: the explicit opt-in
        )  # fmt: skip
        report, seconds = timed(download, cfg)
        results.update(mirror_rows=report["downloaded"], mirror_mb=megabytes, mirror_s=seconds)
        print(
            f"mirror source: {report['downloaded']} clips from {megabytes:.0f} MB in {seconds:.2f} s"
        )

        from kinetics_prep.synthetic import write_counter_clip

        videos = work / "videos"
        write_counter_clip(
            videos / "clip.mp4", num_frames=750 if not args.quick else 250, width=340, height=256
        )
        ids = [f"benchclip{i:02d}" for i in range(args.clips)]
        for youtube_id in ids:
            os.link(videos / "clip.mp4", videos / f"{youtube_id}.mp4")
        end = 7 if args.quick else 12
        yt_rows = [
            replace(row, youtube_id=youtube_id, time_start=2, time_end=end)
            for row, youtube_id in zip(rows, ids, strict=False)
        ]
        csv = write_annotations_csv(work / "yt.csv", yt_rows)
        server = serve_folder(videos)
        template = f"http://127.0.0.1:{server.server_address[1]}/{{youtube_id}}.mp4"
        try:
            for exact in (False, True):
                cfg = DownloadConfig(
                    annotations=csv, output_dir=work / f"out_yt_{exact}", url_template=template,
                    workers=args.workers, exact_cuts=exact, retries=0,
                )  # fmt: skip
                report, seconds = timed(download, cfg)
                key = "exact" if exact else "fast"
                results.update(
                    {f"youtube_{key}_clips": report["downloaded"], f"youtube_{key}_s": seconds}
                )
                print(
                    f"youtube source ({key} cuts): {report['downloaded']} clips in {seconds:.2f} s"
                )
        finally:
            server.shutdown()
            server.server_close()
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
