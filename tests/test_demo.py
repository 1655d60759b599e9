"""`kprep demo` and its clips: class = direction, reversed clip = the opposite class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kinetics_prep.demo_clips import (
    DEMO_CLASSES,
    REVERSED_CLASS,
    moving_shape_frames,
    write_demo_clips,
)


def _centroid(frame: np.ndarray) -> tuple[float, float]:
    """(x, y) centre of the square (brighter than any background)."""
    ys, xs = np.nonzero(frame.astype(float).mean(axis=2) > 100)
    return float(xs.mean()), float(ys.mean())


@pytest.mark.parametrize(
    ("label", "axis", "sign"),
    [("moving left", 0, -1), ("moving right", 0, 1), ("moving up", 1, -1), ("moving down", 1, 1)],
)
def test_shape_moves_in_the_named_direction(label, axis, sign):
    for seed in range(20):
        frames = moving_shape_frames(label, num_frames=16, size=64, seed=seed)
        first, last = _centroid(frames[0]), _centroid(frames[-1])
        side = int(((frames[0].astype(float).mean(axis=2) > 100).sum()) ** 0.5)
        room = 64 - side
        assert sign * (last[axis] - first[axis]) >= 0.75 * room - 1  # crosses the frame
        assert abs(last[1 - axis] - first[1 - axis]) < 1e-6  # and only along its axis
        steps = [_centroid(f)[axis] for f in frames]
        assert all(sign * (b - a) >= 0 for a, b in zip(steps, steps[1:], strict=False))  # monotone


def test_reversed_clip_looks_like_the_reversed_class():
    """A clip played backwards moves the way REVERSED_CLASS names (the demo's control)."""
    for label in DEMO_CLASSES:
        frames = moving_shape_frames(label, seed=3)[::-1]
        opposite = REVERSED_CLASS[label]
        axis = 0 if opposite in ("moving left", "moving right") else 1
        sign = 1 if opposite in ("moving right", "moving down") else -1
        assert sign * (_centroid(frames[-1])[axis] - _centroid(frames[0])[axis]) > 0
    assert {REVERSED_CLASS[REVERSED_CLASS[c]] for c in DEMO_CLASSES} == set(DEMO_CLASSES)


def test_same_seed_same_frames_and_bad_arguments():
    a = moving_shape_frames("moving up", seed=7)
    b = moving_shape_frames("moving up", seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="must be one of"):
        moving_shape_frames("moving sideways")
    with pytest.raises(ValueError, match="num_frames"):
        moving_shape_frames("moving up", num_frames=1)


def test_write_demo_clips_one_folder_per_class_decodable(tmp_path):
    import av

    clips = write_demo_clips(tmp_path, clips_per_class=2, num_frames=12, size=32)
    assert len(clips) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DEMO_CLASSES)
    for clip in clips:
        assert clip.path.parent.name == clip.label
        with av.open(str(clip.path)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(decoded) == 12 and decoded[0].shape == (32, 32, 3)
    # The encoded clip still moves the right way.
    right = next(c for c in clips if c.label == "moving right")
    with av.open(str(right.path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert _centroid(decoded[-1])[0] > _centroid(decoded[0])[0] + 5
    # A rerun keeps the files (same bytes, nothing rewritten).
    before = {c.path: c.path.stat().st_mtime_ns for c in clips}
    write_demo_clips(tmp_path, clips_per_class=2, num_frames=12, size=32)
    assert {c.path: c.path.stat().st_mtime_ns for c in clips} == before


def _run_demo_cli(output_dir, *extra):
    from typer.testing import CliRunner

    from trainer.cli import app

    result = CliRunner().invoke(app, ["demo", "--output-dir", str(output_dir), *extra])
    assert result.exit_code == 0, result.output
    return result, json.loads((output_dir / "demo_report.json").read_text())


def test_kprep_demo_wires_every_stage(tmp_path):
    """A miniature demo: every stage runs through its real code path and reports."""
    out = tmp_path / "demo"
    result, report = _run_demo_cli(out, "--clips-per-class", "4", "--max-steps", "2")
    for stage in ("clips", "extract", "manifest", "model", "train", "eval"):
        assert stage in report["stage_seconds"]
        assert stage in result.output
    assert "| fine-tuned | normal |" in result.output
    assert "| fine-tuned | shuffled |" in result.output
    assert "| fine-tuned | reversed |" in result.output
    for key in ("top1", "top1_shuffled", "top1_reversed", "train_seconds"):
        assert 0 <= report[key] <= (1 if key.startswith("top1") else 600)
    assert report["train_steps"] == 2
    assert report["labels"] == sorted(DEMO_CLASSES)
    assert sum(report["samples"].values()) == 16
    # the real pipeline's files: extract records, manifest + split, label map, Arrow, model
    data = out / "data"
    assert (data / "extract_results.jsonl").is_file()
    assert (data / "kinetic_demo.validation.json").is_file()
    assert json.loads((data / "label_map.json").read_text())["labels"] == sorted(DEMO_CLASSES)
    assert (data / "kinetic_demo_arrow").is_dir()
    assert (
        json.loads((out / "model" / "processor_config.json").read_text())["image_processor"][
            "do_resize"
        ]
        is False
    )
    assert (out / "run" / "training_summary.json").is_file()
    assert (out / "eval_report.json").is_file() and (out / "eval_report.md").is_file()


def test_demo_model_position_table_is_linear(tmp_path):
    import torch
    from safetensors.torch import load_file

    from trainer.demo import build_demo_model

    build_demo_model(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    table = next(v for k, v in tensors.items() if k.endswith("position_embedding_table"))
    steps = table[:, 1:] - table[:, :-1]  # constant step per axis
    assert torch.allclose(steps, steps[:, :1].expand_as(steps), atol=1e-5)
    assert steps[0, 0].norm() > 0 and not torch.allclose(steps[0, 0], steps[1, 0])


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory):
    """One full `kprep demo` run with its defaults, shared by the slow tests."""
    _, report = _run_demo_cli(tmp_path_factory.mktemp("full_demo") / "demo")
    return report


@pytest.mark.slow
def test_kprep_demo_reads_frame_order(full_demo):
    """Above the order-blind ceiling in order, below chance reversed, within 10 minutes.

    Measured on the 2-core machine (default seed): top1 0.99, shuffled 0.33,
    reversed 0.01, about 5 minutes.
    """
    report = full_demo
    assert report["top1"] > 0.50, report  # an order-blind model cannot beat 0.50
    assert report["top1_reversed"] <= 0.20, report
    assert report["top1_shuffled"] <= 0.50, report
    assert report["top1"] - report["top1_reversed"] >= 0.40, report
    assert report["total_seconds"] <= 600, report["stage_seconds"]


@pytest.mark.slow
def test_kprep_demo_meets_issue_targets(full_demo):
    """The issue's full targets: top1 >= 0.80, reversed <= 0.20, shuffled <= 0.50."""
    assert full_demo["top1"] >= 0.80, full_demo
    assert full_demo["targets_met"] is True
    # what trained: the embeddings and the projector, the text layers frozen
    summary = json.loads((Path(full_demo["run_dir"]) / "training_summary.json").read_text())
    assert set(summary["trainable_by_part"]) == {"text", "projector"}
    assert summary["effective"]["param_groups"] == {"embeddings": 1e-2, "projector": 3e-3}


def test_demo_settings_are_checked_together():
    from trainer.demo import DemoConfig, DemoError

    with pytest.raises(DemoError) as err:
        DemoConfig(max_steps=0, embedding_lr=-1.0, frame_size=20)
    message = str(err.value)
    assert "--max-steps (0) must be >= 1" in message
    assert "--embedding-lr (-1.0) must be >= 0" in message
    assert "--frame-size (20) must be a multiple of 8" in message
