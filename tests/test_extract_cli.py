"""`kprep extract` through the CLI on synthetic clips made in this session.

Every saved JPEG is identified by its barcode (kinetics_prep.synthetic), so the
tests prove the exact frames were written, not just that files exist.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from kinetics_prep.cli import app
from kinetics_prep.sampling import sample_indices
from kinetics_prep.synthetic import read_counter, write_counter_clip

ANNOTATED = "abcdefghijk_000010_000020"  # <youtube_id>_<start:06d>_<end:06d>
CONTRACT_KEYS = {
    "clip_id", "video_path", "status", "error", "frame_indices", "timestamps", "num_frames",
    "fps", "width", "height", "decoder", "frames", "label", "youtube_id", "time_start",
    "time_end", "split", "seconds",
}  # fmt: skip
SMALL = {"width": 160, "height": 120}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, ffmpeg) -> Path:
    """One folder per class like a Kinetics copy, plus loose and broken files."""
    root = tmp_path_factory.mktemp("clips")
    write_counter_clip(root / "abseiling" / f"{ANNOTATED}.mp4", num_frames=60, **SMALL)
    write_counter_clip(root / "abseiling" / "same.mp4", num_frames=40, **SMALL)
    write_counter_clip(root / "air_drumming" / "same.mp4", num_frames=44, **SMALL)
    write_counter_clip(root / "loose.mkv", num_frames=30, **SMALL)
    write_counter_clip(root / "loose.webm", num_frames=36, codec="libvpx-vp9", **SMALL)
    write_counter_clip(root / "tiny.mp4", num_frames=2, **SMALL)
    (root / "zero.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("not a video\n")
    (root / "readme.txt").write_text("ignored: not a video suffix\n")
    write_counter_clip(root / ".hidden.mp4", num_frames=10, **SMALL)
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", root / "audio_only.mp4"],
        check=True,
    )
    data = (root / "loose.mkv").read_bytes()
    (root / "cut.mp4").write_bytes(
        write_counter_clip(root / "tmp.mp4", num_frames=30, **SMALL).read_bytes()[:3000]
    )
    (root / "tmp.mp4").unlink()
    assert data
    return root


def run(*args: str | Path) -> str:
    result = CliRunner().invoke(app, ["extract", *map(str, args)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def lines(out: Path, name: str = "extract_results.jsonl") -> list[dict]:
    path = out / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def latest(out: Path, name: str = "extract_results.jsonl") -> dict[str, dict]:
    return {record["clip_id"]: record for record in lines(out, name)}


def frame_barcodes(out: Path, record: dict) -> list[int]:
    codes = []
    for name in record["frames"]:
        image = cv2.imread(str(out / name))
        assert image is not None, name
        codes.append(read_counter(image[..., ::-1]))
    return codes


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """inode and mtime of every frame file: proves a rerun left them untouched."""
    return {
        str(path.relative_to(out)): (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in sorted((out / "frames").rglob("*.jpg"))
    }


def by_video(records: dict[str, dict], name: str) -> dict:
    (record,) = [r for r in records.values() if r["video_path"].endswith(name)]
    return record


def test_extract_writes_exact_frames_and_one_record_per_clip(clip_dir, tmp_path):
    out = tmp_path / "out"
    output = run("--clips", clip_dir, "--output-dir", out, "--workers", "2")
    records = latest(out)
    assert len(lines(out)) == len(records) == 10  # .hidden.mp4 and readme.txt are not clips
    for record in records.values():
        assert CONTRACT_KEYS <= record.keys()
        assert Path(record["video_path"]).is_file()

    ok = {cid: r for cid, r in records.items() if r["status"] == "ok"}
    assert len(ok) == 6
    for record in ok.values():
        assert record["error"] is None
        assert record["frames"] == [
            f"frames/{record['clip_id']}/frame_{i}.jpg" for i in range(1, 5)
        ]
        assert record["frame_indices"] == sample_indices(record["num_frames"], 4)
        assert frame_barcodes(out, record) == record["frame_indices"]
        assert record["timestamps"] == pytest.approx([i / 25 for i in record["frame_indices"]])
        assert (record["width"], record["height"], record["fps"]) == (160, 120, 25.0)
        assert record["decoder"] in ("decord", "pyav", "opencv")

    # Same stem in two class folders: two distinct ids, neither overwrote the other.
    same = sorted(
        (r for r in ok.values() if r["clip_id"].startswith("same_")), key=lambda r: r["num_frames"]
    )
    assert [r["num_frames"] for r in same] == [40, 44]
    assert [r["label"] for r in same] == ["abseiling", "air drumming"]  # from the class folder
    assert by_video(records, "loose.mkv")["label"] is None  # not in a class folder
    assert by_video(records, "loose.mkv")["clip_id"] != by_video(records, "loose.webm")["clip_id"]

    tiny = records["tiny"]
    assert tiny["status"] == "ok" and tiny["frame_indices"] == [0, 0, 1, 1]
    assert "repeated" in tiny["note"]
    assert frame_barcodes(out, tiny) == [0, 0, 1, 1]

    failed = {cid: r for cid, r in records.items() if r["status"] != "ok"}
    assert {cid: r["reason"] for cid, r in failed.items()} == {
        "zero": "empty_file",
        "notes": "unreadable",
        "audio_only": "no_video_stream",
        "cut": "unreadable",
    }
    for record in failed.values():
        assert record["status"] == "failed" and record["frames"] == []
        assert record["error"] and "\n" not in record["error"]
        assert not (out / "frames" / record["clip_id"]).exists()
    assert "failed: empty_file" in output and "ok" in output and "clips/s" in output
    assert not [p for p in (out / "frames").iterdir() if p.name.startswith(".")]


def test_rerun_skips_finished_clips_and_retry_failed_retries_only_failures(clip_dir, tmp_path):
    out = tmp_path / "out"
    run("--clips", clip_dir, "--output-dir", out)
    before, first = snapshot(out), lines(out)
    failed_ids = {r["clip_id"] for r in first if r["status"] != "ok"}

    output = run("--clips", clip_dir, "--output-dir", out)
    assert lines(out) == first  # nothing redone, nothing appended
    assert snapshot(out) == before
    assert "already done (skipped)" in output and "--retry-failed" in output

    run("--clips", clip_dir, "--output-dir", out, "--retry-failed")
    appended = lines(out)[len(first) :]
    assert {r["clip_id"] for r in appended} == failed_ids
    assert snapshot(out) == before  # ok clips untouched


def test_ok_record_whose_frames_vanished_is_redone(clip_dir, tmp_path):
    out = tmp_path / "out"
    run("--clips", clip_dir, "--output-dir", out)
    first = lines(out)
    shutil.rmtree(out / "frames" / "tiny")
    run("--clips", clip_dir, "--output-dir", out)
    appended = lines(out)[len(first) :]
    assert [r["clip_id"] for r in appended] == ["tiny"]
    assert frame_barcodes(out, appended[0]) == [0, 0, 1, 1]


def test_ok_record_whose_frame_is_empty_is_redone(clip_dir, tmp_path):
    """A crash after the record but before the data reached the disk leaves empty files."""
    out = tmp_path / "out"
    run("--clips", clip_dir, "--output-dir", out)
    first = lines(out)
    (out / "frames" / "tiny" / "frame_2.jpg").write_bytes(b"")
    run("--clips", clip_dir, "--output-dir", out)
    appended = lines(out)[len(first) :]
    assert [r["clip_id"] for r in appended] == ["tiny"]
    assert frame_barcodes(out, appended[0]) == [0, 0, 1, 1]
    assert (out / "frames" / "tiny" / "frame_2.jpg").stat().st_size > 0


def test_frames_are_fsynced_before_the_folder_is_renamed_in(tmp_path, monkeypatch):
    """write_frames (the worker's last step before its ok record) makes the data durable."""
    import numpy as np

    from kinetics_prep import frames

    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(frames.os, "fsync", spy)
    shot = np.zeros((8, 8, 3), dtype=np.uint8)
    names = frames.write_frames([shot, shot], tmp_path / "frames" / "c")
    files = [s for s in synced if s.endswith(".jpg")]
    assert len(files) == 2 and all(".partial-" in f for f in files)  # before the rename
    assert synced[-1] == str(tmp_path / "frames")  # the rename itself, last
    assert [p.name for p in sorted((tmp_path / "frames" / "c").iterdir())] == names


def test_shards_split_the_clips_and_an_unsharded_rerun_folds_them(clip_dir, tmp_path):
    out = tmp_path / "out"
    for index in range(3):
        run("--clips", clip_dir, "--output-dir", out, "--shard-index", index, "--num-shards", 3)
    shards = [latest(out, f"extract_results.shard-{i:05d}-of-00003.jsonl") for i in range(3)]
    assert not (out / "extract_results.jsonl").exists()
    ids = [set(s) for s in shards]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 10  # disjoint and complete
    assert [len(s) for s in ids] == [4, 3, 3]  # round-robin over the sorted list

    # Same split on a second pass: every shard finds its clips done.
    run("--clips", clip_dir, "--output-dir", out, "--shard-index", 1, "--num-shards", 3)
    assert latest(out, "extract_results.shard-00001-of-00003.jsonl") == shards[1]

    before = snapshot(out)
    output = run("--clips", clip_dir, "--output-dir", out)
    merged = {k: v for s in shards for k, v in s.items()}
    assert latest(out) == merged  # extract_results.jsonl now holds every clip
    assert snapshot(out) == before and "10 clips" not in output


def test_annotations_fill_label_times_and_split(clip_dir, tmp_path):
    csv = tmp_path / "val.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "air drumming,abcdefghijk,10,20,val\n"
        "juggling balls,zzzzzzzzzzz,0,10,val\n"
    )
    out = tmp_path / "out"
    run("--clips", clip_dir, "--output-dir", out, "--annotations", csv)
    records = latest(out)
    assert {
        k: records[ANNOTATED][k] for k in ("label", "youtube_id", "time_start", "time_end", "split")
    } == {
        "label": "air drumming",  # the annotation wins over the class folder
        "youtube_id": "abcdefghijk",
        "time_start": 10.0,
        "time_end": 20.0,
        "split": "val",
    }
    assert by_video(records, "abseiling/same.mp4")["label"] == "abseiling"
    assert records["tiny"]["label"] is None and records["tiny"]["youtube_id"] is None


@pytest.mark.parametrize("decoder", ["pyav", "opencv"])
def test_decoder_choice_sampling_and_frame_options(clip_dir, tmp_path, decoder):
    out = tmp_path / "out"
    args = ["--clips", clip_dir, "--output-dir", out, "--decoder", decoder, "--num-frames", 6,
            "--sampling", "random", "--seed", 5, "--short-side", 96, "--jpeg-quality", 90]  # fmt: skip
    run(*args)
    records = {k: r for k, r in latest(out).items() if r["status"] == "ok"}
    assert len(records) == 6
    for record in records.values():
        assert record["decoder"] == decoder
        assert record["frame_indices"] == sample_indices(
            record["num_frames"], 6, method="random", seed=record["seed"]
        )
        assert frame_barcodes(out, record) == record["frame_indices"]
        assert cv2.imread(str(out / record["frames"][0])).shape == (96, 128, 3)
    seeds = {r["seed"] for r in records.values()}
    assert len(seeds) == len(records)  # per-clip seeds

    again = tmp_path / "again"
    run(*[again if a == out else a for a in args])
    assert {k: r["frame_indices"] for k, r in latest(again).items()} == {
        k: r["frame_indices"] for k, r in latest(out).items()
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clips", "{missing}"], "--clips ('{missing}') is not a folder"),
        (["--num-frames", "0"], "--num-frames (0) must be >= 1"),
        (["--shard-index", "3", "--num-shards", "3"], "--shard-index (3) must be in 0..2"),
        (["--decoder", "ffmpeg"], "--decoder ('ffmpeg') must be one of auto, pyav, decord, opencv"),
        (["--jpeg-quality", "0"], "--jpeg-quality (0) must be in 1..100"),
        (["--sampling", "middle"], "--sampling ('middle')"),
        (["--workers", "0", "--timeout", "0"], "--workers (0) must be >= 1; --timeout (0)"),
        (["--clips", "{empty}"], "holds no videos"),
        (["--annotations", "{missing}"], "--annotations ('{missing}') is not a file"),
        (["--annotations", "{bad_csv}"], "annotation file"),
    ],
)
def test_unusable_arguments_exit_2_with_one_line(clip_dir, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("what,is,this\n1,2,3\n")
    values = {
        "missing": tmp_path / "nope",
        "empty": tmp_path / "empty",
        "bad_csv": tmp_path / "bad.csv",
    }
    args = [a.format(**values) for a in args]
    message = message.format(**values)
    base = ["--clips", str(clip_dir), "--output-dir", str(tmp_path / "out")]
    result = CliRunner().invoke(app, ["extract", *base, *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out" / "extract_results.jsonl").exists()


def test_help_lists_the_flags():
    result = CliRunner().invoke(app, ["extract", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--clips", "--output-dir", "--num-frames", "--workers", "--sampling", "--seed",
                 "--short-side", "--jpeg-quality", "--decoder", "--shard-index", "--num-shards",
                 "--retry-failed", "--timeout", "--annotations"):  # fmt: skip
        assert flag in result.output


def test_console_script_runs(clip_dir, tmp_path):
    """The installed `kprep` entry point, as a user runs it."""
    kprep = (
        Path(os.environ.get("VIRTUAL_ENV", Path(__file__).parents[1] / ".venv")) / "bin" / "kprep"
    )
    if not kprep.exists():
        kprep = Path(shutil.which("kprep") or "kprep")
    out = tmp_path / "out"
    done = subprocess.run(
        [kprep, "extract", "--clips", clip_dir / "abseiling", "--output-dir", out, "--workers", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(r["status"] for r in lines(out)) == ["ok", "ok"]


def test_rerun_with_another_frame_count_redoes_the_clips(clip_dir, tmp_path):
    out = tmp_path / "out"
    run("--clips", clip_dir / "abseiling", "--output-dir", out)
    run("--clips", clip_dir / "abseiling", "--output-dir", out, "--num-frames", "2")
    records = latest(out)
    assert len(lines(out)) == 4 and len(records) == 2
    for record in records.values():
        assert len(record["frames"]) == 2
        assert frame_barcodes(out, record) == sample_indices(record["num_frames"], 2)
        assert sorted(p.name for p in (out / "frames" / record["clip_id"]).iterdir()) == [
            "frame_1.jpg",
            "frame_2.jpg",
        ]
