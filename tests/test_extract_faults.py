"""A decoder crash, a hang and a kill -9 cost one clip at most, never the run.

Crashes and hangs are forced inside the worker process through
``kinetics_prep.extract._TEST_FAULTS`` (``crash:<clip_id>`` raises SIGSEGV,
``hang:<clip_id>`` sleeps, ``hang-start:<file>`` hangs the first worker before it
is ready), set here with monkeypatch and handed to the workers by the parent, so
the parent sees a real dead or stuck process. No environment variable or flag
can turn it on in a user's run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from kinetics_prep import extract
from kinetics_prep.cli import app
from kinetics_prep.synthetic import read_counter, write_counter_clip


def make_clips(root: Path, count: int, num_frames: int = 40) -> Path:
    for i in range(count):
        write_counter_clip(root / f"c{i:02d}.mp4", num_frames=num_frames, width=160, height=120)
    return root


def records(out: Path) -> list[dict]:
    path = out / "extract_results.jsonl"
    result = []
    for line in path.read_text().splitlines():
        try:
            result.append(json.loads(line))
        except json.JSONDecodeError:  # a killed run may leave half a line
            continue
    return result


def assert_exact_frames(out: Path, record: dict) -> None:
    codes = [read_counter(cv2.imread(str(out / name))[..., ::-1]) for name in record["frames"]]
    assert codes == record["frame_indices"], record["clip_id"]


@pytest.fixture(scope="module")
def four_clips(tmp_path_factory) -> Path:
    return make_clips(tmp_path_factory.mktemp("four"), 4)


def test_a_segfaulting_decoder_costs_one_clip(four_clips, tmp_path, monkeypatch):
    monkeypatch.setattr(extract, "_TEST_FAULTS", "crash:c00")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["extract", "--clips", str(four_clips), "--output-dir", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    by_id = {r["clip_id"]: r for r in records(out)}
    assert by_id["c00"]["status"] == "crashed"
    assert "SIGSEGV" in by_id["c00"]["error"]
    # One worker only: the later clips ran in its replacement.
    for clip_id in ("c01", "c02", "c03"):
        assert by_id[clip_id]["status"] == "ok"
        assert_exact_frames(out, by_id[clip_id])
    assert "failed: crashed" in result.output
    assert not (out / "frames" / "c00").exists()


def test_a_hanging_decoder_is_killed_after_the_timeout(four_clips, tmp_path, monkeypatch):
    monkeypatch.setattr(extract, "_TEST_FAULTS", "hang:c01")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["extract", "--clips", str(four_clips), "--output-dir", str(out), "--workers", "2",
         "--timeout", "4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    by_id = {r["clip_id"]: r for r in records(out)}
    assert by_id["c01"]["status"] == "timeout"
    assert "--timeout 4" in by_id["c01"]["error"]
    assert [by_id[c]["status"] for c in ("c00", "c02", "c03")] == ["ok", "ok", "ok"]

    # --retry-failed (without the fault) completes it.
    monkeypatch.setattr(extract, "_TEST_FAULTS", "")
    result = CliRunner().invoke(
        app, ["extract", "--clips", str(four_clips), "--output-dir", str(out), "--retry-failed"]
    )
    assert result.exit_code == 0, result.output
    assert {r["clip_id"]: r["status"] for r in records(out)}["c01"] == "ok"


def test_kill_9_leaves_nothing_a_rerun_mistakes_for_finished(tmp_path):
    clips = make_clips(tmp_path / "clips", 24)
    out = tmp_path / "out"
    results = out / "extract_results.jsonl"
    command = [sys.executable, "-c", "from trainer.cli import main; main()", "extract",
               "--clips", str(clips), "--output-dir", str(out), "--workers", "2"]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if results.exists() and results.read_text().count("\n") >= 4:
            break
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # the run and its workers, as a scheduler would
    process.wait()
    first = records(out)
    assert 4 <= len(first) < 24, "the run should have been killed part-way"

    # Whatever has an ok record is complete and exact; everything else is redone.
    finished = {r["clip_id"]: r for r in first if r["status"] == "ok"}
    for record in finished.values():
        assert_exact_frames(out, record)
    before = {
        name: (out / name).stat().st_mtime_ns for r in finished.values() for name in r["frames"]
    }

    result = CliRunner().invoke(app, ["extract", "--clips", str(clips), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    final = {r["clip_id"]: r for r in records(out)}
    assert len(final) == 24 and all(r["status"] == "ok" for r in final.values())
    for record in final.values():
        assert_exact_frames(out, record)
    assert {name: (out / name).stat().st_mtime_ns for name in before} == before
    redone = [r["clip_id"] for r in records(out)[len(first) :]]
    assert sorted(redone) == sorted(set(final) - set(finished))
    assert not [p.name for p in (out / "frames").iterdir() if p.name.startswith(".")]


def test_half_written_record_line_does_not_swallow_the_next_one(four_clips, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    results = out / "extract_results.jsonl"
    results.write_text('{"clip_id": "c00", "status": "ok", "fra')  # killed mid-write
    result = CliRunner().invoke(
        app, ["extract", "--clips", str(four_clips), "--output-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    statuses = {r["clip_id"]: r["status"] for r in records(out)}
    assert statuses == {"c00": "ok", "c01": "ok", "c02": "ok", "c03": "ok"}


def test_library_call_from_a_script_without_main_guard_or_from_stdin(four_clips, tmp_path):
    """Workers never re-import the caller's __main__ (multiprocessing spawn would)."""
    for name in ("stdin", "no_guard"):
        script = (
            "from kinetics_prep.extract import ExtractConfig, extract_clips\n"
            f"summary = extract_clips(ExtractConfig(clips={str(four_clips)!r}, "
            f"output_dir={str(tmp_path / name)!r}, workers=2))\n"
            "print('ok', summary.ok)\n"
        )
        (tmp_path / f"{name}.py").write_text(script)
        command = [sys.executable, "-"] if name == "stdin" else [sys.executable, f"{name}.py"]
        done = subprocess.run(
            command,
            input=script if name == "stdin" else None,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[-2:] == ["ok", "4"], done.stdout
        assert {r["status"] for r in records(tmp_path / name)} == {"ok"}


def test_the_fault_hook_cannot_be_set_from_the_environment(four_clips, tmp_path, monkeypatch):
    """The old KPREP_EXTRACT_FAULT variable changes nothing in a run."""
    monkeypatch.setenv("KPREP_EXTRACT_FAULT", "crash:c00,hang:c01")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["extract", "--clips", str(four_clips), "--output-dir", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert {r["clip_id"]: r["status"] for r in records(out)} == dict.fromkeys(
        ("c00", "c01", "c02", "c03"), "ok"
    )


def test_a_worker_hanging_at_start_up_is_replaced(four_clips, tmp_path, monkeypatch):
    """Before its first clip there is no --timeout clock; the start-up bound kills it."""
    monkeypatch.setattr(extract, "_TEST_FAULTS", f"hang-start:{tmp_path / 'hung-once'}")
    monkeypatch.setattr(extract, "STARTUP_TIMEOUT", 3.0)
    out = tmp_path / "out"
    started = time.monotonic()
    result = CliRunner().invoke(
        app, ["extract", "--clips", str(four_clips), "--output-dir", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "hung-once").exists()  # the fault really fired
    assert time.monotonic() - started < 60
    assert {r["status"] for r in records(out)} == {"ok"} and len(records(out)) == 4
