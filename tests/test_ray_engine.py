"""`kprep extract --engine ray` on a real local Ray (loopback, 2 CPUs), no mocks.

Faults are injected the way tests/test_extract_faults.py does it
(the test-only fault spec, read by the driver and handed to the decoding
subprocess inside each Ray worker), so a Ray worker sees a real SIGSEGV or hang.
Frames are checked by their barcodes (kinetics_prep.synthetic).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pytest
import ray
from typer.testing import CliRunner

from kinetics_prep import extract as extract_module
from kinetics_prep.cli import app
from kinetics_prep.download.youtube import DOWNLOAD_TASK_CPUS, _ActorPacer
from kinetics_prep.rate_limit import RequestPacer
from kinetics_prep.ray_engine import RayEngineError, check_shared_folder, stream
from kinetics_prep.synthetic import read_counter, write_counter_clip

CLIPS = [f"c{i:02d}" for i in range(6)]


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray for the module (starting one costs seconds on a busy box)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=80 * 1024 * 1024,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def six_clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("six")
    for i, clip_id in enumerate(CLIPS):
        write_counter_clip(root / f"{clip_id}.mp4", num_frames=30 + 2 * i, width=160, height=120)
    return root


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "extract_results.jsonl").read_text().splitlines()]


def extract(*args: str | Path, code: int = 0) -> str:
    result = CliRunner().invoke(app, ["extract", *map(str, args)])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def assert_exact(out: Path, record: dict) -> None:
    codes = [read_counter(cv2.imread(str(out / name))[..., ::-1]) for name in record["frames"]]
    assert codes == record["frame_indices"], record["clip_id"]


def mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in (out / "frames").rglob("*.jpg")}


def test_missing_ray_address_is_a_one_line_error(six_clips, tmp_path):
    """First in the module: no Ray is connected yet, so the address is really tried."""
    assert not ray.is_initialized()
    output = extract(
        "--clips", six_clips, "--output-dir", tmp_path / "o", "--engine", "ray",
        "--ray-address", "127.0.0.1:1", code=2,
    )  # fmt: skip
    assert "--ray-address ('127.0.0.1:1')" in output


def test_ray_records_match_the_local_engine(local_ray, six_clips, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    extract("--clips", six_clips, "--output-dir", local, "--workers", "2")
    output = extract("--clips", six_clips, "--output-dir", remote, "--engine", "ray")
    assert "clips/s" in output and "ok" in output
    by_local = {r["clip_id"]: r for r in lines(local)}
    records = lines(remote)
    assert sorted(r["clip_id"] for r in records) == CLIPS  # one line per clip, no duplicates
    timing = {"seconds", "finished_at", "worker_peak_rss_mb"}
    for record in records:
        assert record["status"] == "ok"
        assert_exact(remote, record)
        assert record.keys() == by_local[record["clip_id"]].keys()
        same = {k: v for k, v in record.items() if k not in timing | {"video_path"}}
        assert same == {k: by_local[record["clip_id"]][k] for k in same}
    # Each node's decoding processes log to their own file, never one shared append target.
    assert not (remote / "extract_workers.log").exists()
    assert list(remote.glob("extract_workers.*.log"))


def test_segfault_and_hang_in_a_ray_worker_then_resume_on_the_local_engine(
    local_ray, six_clips, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    monkeypatch.setattr(extract_module, "_TEST_FAULTS", "crash:c02,hang:c04")
    output = extract("--clips", six_clips, "--output-dir", out, "--engine", "ray", "--timeout", "4")
    records = lines(out)
    assert sorted(r["clip_id"] for r in records) == CLIPS
    by_id = {r["clip_id"]: r for r in records}
    assert by_id["c02"]["status"] == "crashed" and "SIGSEGV" in by_id["c02"]["error"]
    assert by_id["c04"]["status"] == "timeout" and "--timeout 4" in by_id["c04"]["error"]
    assert "failed: crashed" in output and "failed: timeout" in output
    for clip_id in ("c00", "c01", "c03", "c05"):
        assert by_id[clip_id]["status"] == "ok"
        assert_exact(out, by_id[clip_id])
    assert not (out / "frames" / "c02").exists()

    # The local engine picks the run up: only the two failures are redone.
    monkeypatch.setattr(extract_module, "_TEST_FAULTS", "")
    before = mtimes(out)
    extract("--clips", six_clips, "--output-dir", out, "--retry-failed")
    redone = lines(out)[len(records) :]
    assert sorted(r["clip_id"] for r in redone) == ["c02", "c04"]
    assert all(r["status"] == "ok" for r in redone)
    for record in redone:
        assert_exact(out, record)
    assert {k: v for k, v in mtimes(out).items() if k in before} == before


def test_a_local_run_resumes_on_ray_without_redoing_finished_clips(
    local_ray, six_clips, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    monkeypatch.setattr(extract_module, "_TEST_FAULTS", "crash:c00,crash:c03")
    extract("--clips", six_clips, "--output-dir", out, "--workers", "2")
    first = lines(out)
    assert {r["clip_id"] for r in first if r["status"] == "crashed"} == {"c00", "c03"}
    monkeypatch.setattr(extract_module, "_TEST_FAULTS", "")
    before = mtimes(out)
    extract("--clips", six_clips, "--output-dir", out, "--engine", "ray", "--retry-failed")
    redone = lines(out)[len(first) :]
    assert sorted(r["clip_id"] for r in redone) == ["c00", "c03"]
    for record in redone:
        assert record["status"] == "ok"
        assert_exact(out, record)
    assert {k: v for k, v in mtimes(out).items() if k in before} == before
    # Nothing left to do: a third run (either engine) writes no record.
    extract("--clips", six_clips, "--output-dir", out, "--engine", "ray")
    assert len(lines(out)) == len(first) + 2


def test_every_node_must_see_the_inputs_and_the_output_folder(local_ray, tmp_path):
    check_shared_folder(tmp_path / "shared", [tmp_path])  # fine: one node, local disk
    with pytest.raises(RayEngineError, match=r"does not see the input '/no/such/clip.mp4'"):
        check_shared_folder(tmp_path / "shared", [Path("/no/such/clip.mp4")])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(RayEngineError, match="is not writable"):
        check_shared_folder(blocker / "out")
    assert not [p for p in (tmp_path / "shared").iterdir() if p.name.startswith(".kprep-probe")]


def test_stream_keeps_a_bounded_window_and_handles_each_item_once(local_ray):
    """A generator of items is pulled lazily: never more than `window` tasks in flight."""

    @ray.remote(num_cpus=0)
    def square(x: int) -> int:
        return x * x

    pulled: list[int] = []
    results: dict[int, int] = {}
    peak = 0

    def items():
        for x in range(40):
            pulled.append(x)
            yield x

    def submit(x: int):
        nonlocal peak
        peak = max(peak, len(pulled) - len(results))
        return square.remote(x)

    def emit(x: int, value: int) -> None:
        assert x not in results
        results[x] = value

    def lost(x: int, error: BaseException) -> None:
        raise AssertionError(f"{x}: {error}")

    stream(items(), submit, emit, lost, window=lambda: 3)
    assert results == {x: x * x for x in range(40)}
    assert peak <= 3


class _Timed(BaseHTTPRequestHandler):
    """Serves one counter clip at /v/<id>.mp4 and notes when each path is first asked for."""

    data = b""
    first: dict[str, float] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        self.first.setdefault(path, time.monotonic())
        data = self.data
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
        if body:
            try:
                self.wfile.write(data[start : end + 1])
            except (BrokenPipeError, ConnectionResetError):
                pass


def test_pacer_actor_is_one_budget_for_tasks_in_different_workers(local_ray):
    """Eight tasks run at once (2 CPUs / 0.25), each in its own Ray worker process; the one
    pacer actor hands them slots 0.5 s apart (2 requests/s for the whole cluster)."""
    pacer = ray.remote(num_cpus=0)(RequestPacer).remote(2.0)

    @ray.remote(num_cpus=DOWNLOAD_TASK_CPUS)
    def take_slot(handle) -> tuple[int, float, float]:
        before = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process here
        wait = _ActorPacer(handle).reserve()
        after = time.monotonic()
        return os.getpid(), before + wait, after + wait  # the slot lies in [before, after] + wait

    taken = ray.get([take_slot.remote(pacer) for _ in range(8)])
    assert len({pid for pid, _, _ in taken}) > 1  # really several processes
    for i, (_, lo_i, hi_i) in enumerate(taken):
        for _, lo_j, hi_j in taken[i + 1 :]:
            # However the slots sit in their intervals, they are at least 0.5 s apart.
            assert max(hi_j - lo_i, hi_i - lo_j) >= 0.5 - 1e-6, taken
    ray.kill(pacer)


def test_youtube_download_on_ray_with_a_request_budget(local_ray, tmp_path):
    """Loopback "YouTube" through yt-dlp in Ray tasks, paced by the job's pacer actor."""
    clip = write_counter_clip(tmp_path / "src.mp4", num_frames=150, width=160, height=120, gop=25)
    _Timed.data, _Timed.first = clip.read_bytes(), {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Timed)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    ids = [f"raypaced{i:03d}" for i in range(6)]
    csv = tmp_path / "ann.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        + "".join(f"abseiling,{yid},1,3,val\n" for yid in ids)
    )
    out = tmp_path / "out"

    try:
        result = CliRunner().invoke(
            app,
            ["download", "--annotations", str(csv), "--output-dir", str(out), "--engine", "ray",
             "--requests-per-second", "2", "--retries", "0",
             "--url-template", f"http://127.0.0.1:{httpd.server_address[1]}/v/{{youtube_id}}.mp4"],
        )  # fmt: skip
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.exit_code == 0, result.output
    records = [
        json.loads(line) for line in (out / "download_results.jsonl").read_text().splitlines()
    ]
    assert sorted(r["clip_id"] for r in records) == sorted(f"{y}_000001_000003" for y in ids)
    assert all(r["status"] == "ok" for r in records), records
    for record in records:
        assert (out / record["path"]).stat().st_size > 0
    assert len(_Timed.first) == 6
    with pytest.raises(ValueError):
        ray.get_actor("kprep-youtube-pacer")  # the job's pacer is gone with the job


def test_download_engine_ray_refuses_disk_bound_sources(tmp_path):
    csv = tmp_path / "ann.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\na,abcdefghijk,1,3,val\n")
    result = CliRunner().invoke(
        app,
        ["download", "--annotations", str(csv), "--output-dir", str(tmp_path / "o"),
         "--source", "local", "--clips", str(tmp_path), "--engine", "ray"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--engine ray runs --source youtube" in result.output
