"""`kprep extract --sampling interior --resize 336x336` against ffmpeg itself.

The reference dataset's frames were made with ``ffmpeg -ss <t> -i clip
-frames:v 1 -vf scale=336:336`` at ``t = (i+1)/(K+1)`` of the clip's duration.
Here the same ffmpeg command runs on barcode clips (kinetics_prep.synthetic),
so the frame it lands on is read back from its pixels and compared with what
kprep wrote.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kinetics_prep.cli import app
from kinetics_prep.frames import parse_size
from kinetics_prep.synthetic import read_counter, write_counter_clip

# (name, frames, fps): exact-second times, then rates where (i+1)N/5 is fractional
CLIPS = [("even", 250, 25.0), ("odd", 137, 30.0), ("ntsc", 97, 29.97)]


def _duration(ffmpeg: str, path: Path) -> float:
    ffprobe = str(Path(ffmpeg).with_name("ffprobe"))
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(out.stdout)


def _ffmpeg_frame(ffmpeg: str, path: Path, t: float, size: str) -> np.ndarray:
    png = subprocess.run(
        [ffmpeg, "-v", "error", "-ss", f"{t:.6f}", "-i", path, "-frames:v", "1",
         "-vf", f"scale={size.replace('x', ':')}", "-f", "image2pipe", "-c:v", "png", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    import io

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, ffmpeg):
    root = tmp_path_factory.mktemp("recipe")
    for name, frames, fps in CLIPS:
        write_counter_clip(root / "clips" / f"{name}.mp4", num_frames=frames, fps=fps)
    result = CliRunner().invoke(
        app,
        ["extract", "--clips", str(root / "clips"), "--output-dir", str(root / "out"),
         "--sampling", "interior", "--resize", "336x336", "--workers", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return root


@pytest.mark.parametrize(("name", "num_frames", "fps"), CLIPS)
def test_interior_336_matches_ffmpeg_seek_and_scale(extracted, ffmpeg, name, num_frames, fps):
    clip = extracted / "clips" / f"{name}.mp4"
    duration = _duration(ffmpeg, clip)
    records = {
        json.loads(line)["clip_id"]: json.loads(line)
        for line in (extracted / "out" / "extract_results.jsonl").read_text().splitlines()
    }
    record = records[name]
    assert record["status"] == "ok" and record["sampling"] == "interior"
    assert record["resize"] == "336x336"
    for i, frame_name in enumerate(record["frames"]):
        ours = np.asarray(Image.open(extracted / "out" / frame_name).convert("RGB"))
        theirs = _ffmpeg_frame(ffmpeg, clip, (i + 1) / 5 * duration, "336x336")
        assert ours.shape == theirs.shape == (336, 336, 3)  # squashed from 340x256
        assert read_counter(ours) == read_counter(theirs) == record["frame_indices"][i]
        # same scaler (swscale bicubic); ffmpeg scales YUV, kprep RGB, + JPEG q95
        diff = np.abs(ours.astype(int) - theirs.astype(int)).mean()
        assert diff < 3.0, f"{name} frame {i}: mean abs diff {diff:.2f}"


def test_resize_flag_errors():
    assert parse_size("336x336") == (336, 336)
    for bad in ("336", "x336", "0x10", "a x b", "336:336"):
        with pytest.raises(ValueError, match="--resize"):
            parse_size(bad)


def test_resize_and_short_side_are_exclusive(tmp_path):
    (tmp_path / "clips").mkdir()
    result = CliRunner().invoke(
        app,
        ["extract", "--clips", str(tmp_path / "clips"), "--output-dir", str(tmp_path / "o"),
         "--resize", "336x336", "--short-side", "256"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--resize" in result.output and "--short-side" in result.output
