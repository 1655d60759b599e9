"""Test data for the manifest/Arrow/validate/push tests: real `kprep extract` on synthetic clips.

Recipe: three class folders of counter clips (``kinetics_prep.synthetic``) named
like Kinetics (``<youtube_id>_<start>_<end>.mp4``, so several clips share a
YouTube video), plus one broken file; ``kprep extract --clips ROOT/clips
--output-dir ROOT`` then writes ``ROOT/frames`` and ``ROOT/extract_results.jsonl``
exactly as in real use. Each frame carries its index as a barcode, so a reader
can prove the frames come back in order.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kinetics_prep.cli import app
from kinetics_prep.synthetic import read_counter, write_counter_clip

# class folder -> clips as (youtube_id, start, end); ids repeat across clips (and classes).
CLIPS = {
    "abseiling": [("AAAAAAAAAAA", 0, 10), ("AAAAAAAAAAA", 20, 30), ("BBBBBBBBBBB", 0, 10)],
    "air_drumming": [("CCCCCCCCCCC", 5, 15), ("DDDDDDDDDDD", 0, 10), ("DDDDDDDDDDD", 30, 40)],
    "tai_chi": [("EEEEEEEEEEE", 0, 10), ("FFFFFFFFFFF", 0, 10), ("BBBBBBBBBBB", 40, 50)],
}
BROKEN = "HHHHHHHHHHH_000000_000010"
OK_CLIPS = sum(len(v) for v in CLIPS.values())


def clip_id(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


def label_of() -> dict[str, str]:
    """clip_id -> canonical label (folder name with spaces)."""
    return {clip_id(*c): folder.replace("_", " ") for folder, clips in CLIPS.items() for c in clips}


def invoke(*args: Any, ok: bool = True) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def make_extracted(root: Path) -> Path:
    """Clips under root/clips/<class>/ and their real extract output in root."""
    n = 24
    for folder, clips in CLIPS.items():
        for youtube_id, start, end in clips:
            n += 3
            write_counter_clip(
                root / "clips" / folder / f"{clip_id(youtube_id, start, end)}.mp4",
                num_frames=n,
                width=96,
                height=64,
            )
    (root / "clips" / "abseiling" / f"{BROKEN}.mp4").write_bytes(b"not a video at all" * 10)
    invoke("extract", "--clips", root / "clips", "--output-dir", root, "--workers", "2")
    return root


@pytest.fixture(scope="session")
def extracted_root(tmp_path_factory) -> Path:
    """A read-only extract output; copy it (``fresh_root``) before changing anything."""
    return make_extracted(tmp_path_factory.mktemp("extracted"))


@pytest.fixture
def fresh_root(extracted_root: Path, tmp_path: Path) -> Path:
    """A private copy of the extract output (clips, frames, records)."""
    root = tmp_path / "ds"
    shutil.copytree(extracted_root, root)
    return root


def seed_reader(manifest: Path) -> list[dict[str, Any]]:
    """The published recipe's loader: reads only ``messages`` and opens the images.

    Paths are relative to the JSON's folder; returns prompt, answer and the
    opened frames per sample.
    """
    root = manifest.parent
    samples = []
    for entry in json.loads(manifest.read_text()):
        user, assistant = entry["messages"]
        images = [
            Image.open(root / item["image"]).convert("RGB")
            for item in user["content"]
            if item["type"] == "image"
        ]
        prompt = [item["text"] for item in user["content"] if item["type"] == "text"]
        samples.append(
            {
                "images": images,
                "prompt": prompt[0],
                "answer": assistant["content"][0]["text"],
            }
        )
    return samples


def counters(images: list[Image.Image]) -> list[int]:
    """The frame index drawn into each image."""
    return [read_counter(np.asarray(image)) for image in images]
