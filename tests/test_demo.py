"""`kprep demo` and its clips: class = direction, reversed clip = the opposite class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kinetics_prep.demo_clips import (
    DEMO_CLASSES,
    REVERSED_CLASS,
    draw_geometry,
    geometry_space,
    moving_shape_frames,
    order_blind_ceiling,
    symmetric_under_reversal,
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
        frames = moving_shape_frames(label, num_frames=17, size=64, seed=seed)
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


def test_sampled_frames_are_symmetric_under_reversal():
    """4 centre samples of the demo's 17-frame clips are the mirror of themselves."""
    from kinetics_prep.sampling import sample_indices
    from trainer.demo import DemoConfig

    n = DemoConfig().clip_frames
    indices = sample_indices(n, 4, method="center")
    assert indices == [2, 6, 10, 14] and symmetric_under_reversal(indices, n)
    assert not symmetric_under_reversal(sample_indices(16, 4, method="center"), 16)


def test_generator_is_symmetric_under_time_reversal():
    """A backward clip is its forward twin (same draws) played backwards, frame for frame."""
    for seed in range(12):
        for forward, backward in (("moving right", "moving left"), ("moving down", "moving up")):
            a = moving_shape_frames(forward, seed=seed)
            b = moving_shape_frames(backward, seed=seed)
            assert all(np.array_equal(x, y) for x, y in zip(a[::-1], b, strict=True))
    # geometry_space is the distribution draw_geometry samples: a proper table, same support
    space = dict(geometry_space(64))
    assert sum(space.values()) == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(0)
    assert all(draw_geometry(rng, 64) in space for _ in range(2000))


def test_order_blind_ceiling_is_exactly_one_half():
    """Exact Bayes accuracy of an order-blind model on the demo's clips: 0.50 (issue 13)."""
    from trainer.demo import DemoConfig

    config = DemoConfig()
    ceiling = order_blind_ceiling(num_frames=config.clip_frames, size=config.clip_size)
    assert ceiling == pytest.approx(0.50, abs=0.005)
    # The same computation exposes the old 16-frame clips, whose sampled sets differ
    # from their reversed twins' (issue 13 measured about 0.82).
    assert order_blind_ceiling(num_frames=16, size=config.clip_size) > 0.80


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
    from trainer.demo import REPORT_KEYS

    out = tmp_path / "demo"
    result, report = _run_demo_cli(
        out, "--clips-per-class", "8", "--max-steps", "2", "--control-steps", "1"
    )
    for stage in ("clips", "extract", "manifest", "model", "train", "control", "eval", "sheet"):
        assert stage in report["stage_seconds"]
        assert stage in result.output
    for order in ("normal", "shuffled", "reversed"):
        assert f"| fine-tuned | {order} |" in result.output
    assert set(REPORT_KEYS) <= set(report)
    for key in ("top1", "top1_shuffled", "top1_reversed", "order_blind_control_top1"):
        assert 0 <= report[key] <= 1
    assert report["order_blind_ceiling"] == pytest.approx(0.5, abs=0.005)
    assert report["train_steps"] == 2 and report["control_steps"] == 1 and report["seed"] == 0
    assert report["labels"] == sorted(DEMO_CLASSES)
    assert set(report["splits"]) == {"train", "validation", "test"}
    assert sum(report["splits"].values()) == 32 and min(report["splits"].values()) >= 1
    assert report["targets_met"] is False  # 2 steps learn nothing
    run = Path(report["run_dir"])
    summary = json.loads((run / "training_summary.json").read_text())
    assert summary["trainable_params"] == report["trainable_parameters"]
    groups = summary["effective"]["param_groups"]
    # the product's default kind of run: a PEFT LoRA adapter on the text layers + projector,
    # no embedding or full fine-tuning
    assert report["lora_modules"] > 0
    assert (run / "adapter_config.json").is_file()
    assert (run / "adapter_model.safetensors").is_file()
    assert summary["adapter"] is True and summary["recipe"]["use_lora"] is True
    assert set(summary["trainable_by_part"]) == {"text", "projector"}
    assert "embeddings" not in groups
    assert groups["projector"] == pytest.approx(1e-3)
    assert summary["trainable_by_part"]["text"] < 0.2 * summary["total_params"]
    assert "tiny-gemma4-pretrained" in report["base_model"]
    demo_md = (out / "demo_report.md").read_text()
    assert "A LoRA adapter (" in demo_md
    # the splits do not overlap, and the figures come from the test split
    data = out / "seed-0" / "data"
    ids = {
        name: {e["id"] for e in json.loads((data / f"kinetic_demo.{name}.json").read_text())}
        for name in ("train", "validation", "test")
    }
    assert not (ids["train"] & ids["test"] or ids["train"] & ids["validation"])
    assert not ids["validation"] & ids["test"]
    evaluated = json.loads((out / "eval_report.json").read_text())
    assert evaluated["data_path"].endswith("kinetic_demo.test.json")
    assert {p["id"] for p in evaluated["runs"][0]["predictions"]} == ids["test"]
    # the control trained on the same samples with their frames permuted
    permuted = json.loads((data / "kinetic_demo.train_permuted.json").read_text())
    original = json.loads((data / "kinetic_demo.train.json").read_text())
    assert [e["id"] for e in permuted] == [e["id"] for e in original]
    frames = [
        [c["image"] for c in e["messages"][0]["content"] if c["type"] == "image"] for e in permuted
    ]
    assert any(f != sorted(f) for f in frames)
    assert (out / "seed-0" / "control" / "training_summary.json").is_file()
    # pictures, linked from the markdown reports
    for picture, least in (
        (run / "loss_curve.png", 5_000),
        (out / "eval_report_confusion.png", 5_000),
        (out / "contact_sheet.png", 10_000),
    ):
        assert picture.is_file() and picture.stat().st_size > least, picture
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(eval_report_confusion.png)" in (out / "eval_report.md").read_text()
    assert "(contact_sheet.png)" in demo_md and "loss_curve.png" in demo_md


def test_kprep_demo_keeps_each_seed_apart(tmp_path):
    """`kprep demo --seed 1` into a folder of a seed-0 demo writes its own clips and frames."""
    out = tmp_path / "demo"
    common = ("--clips-per-class", "4", "--max-steps", "1", "--no-control")
    _run_demo_cli(out, *common)
    seed0 = {p: p.read_bytes() for p in (out / "seed-0" / "clips").rglob("*.mp4")}
    _, report = _run_demo_cli(out, *common, "--seed", "1")
    assert report["seed"] == 1 and report["order_blind_control_top1"] is None
    seed1 = {
        p.relative_to(out / "seed-1"): p.read_bytes()
        for p in (out / "seed-1" / "clips").rglob("*.mp4")
    }
    assert len(seed1) == len(seed0) == 16
    assert all(seed1[p.relative_to(out / "seed-0")] != b for p, b in seed0.items())
    assert {p: p.read_bytes() for p in seed0} == seed0  # seed 0's clips untouched
    evaluated = json.loads((out / "eval_report.json").read_text())
    assert "seed-1" in evaluated["data_path"]


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
def test_kprep_demo_meets_issue_targets(full_demo):
    """Issue 13's targets on the test split, through the LoRA route: top1 >= 0.90,
    reversed <= 0.10, order-blind control <= 0.60, exact ceiling 0.50, whole demo within
    10 minutes. The default run (seed 0); docs/evaluation.md has seeds 0-4."""
    assert full_demo["eval_split"] == "test", full_demo
    assert full_demo["order_blind_ceiling"] == pytest.approx(0.5, abs=0.005)
    assert full_demo["top1"] >= 0.90, full_demo
    assert full_demo["top1_reversed"] <= 0.10, full_demo
    assert full_demo["order_blind_control_top1"] <= 0.60, full_demo
    assert full_demo["total_seconds"] <= 600, full_demo["stage_seconds"]
    assert full_demo["targets_met"] is True
    summary = json.loads((Path(full_demo["run_dir"]) / "training_summary.json").read_text())
    assert summary["adapter"] is True and set(summary["trainable_by_part"]) == {
        "text",
        "projector",
    }


def test_demo_settings_are_checked_together(tmp_path):
    from trainer.demo import DemoConfig, DemoError

    with pytest.raises(DemoError) as err:
        DemoConfig(
            max_steps=0,
            projector_lr=-1.0,
            frame_size=20,
            test_fraction=0.8,
            base_model=str(tmp_path / "nowhere"),
        )
    message = str(err.value)
    assert f"--base-model ({tmp_path / 'nowhere'}) has no config.json" in message
    assert "--max-steps (0) must be >= 1" in message
    assert "--projector-lr (-1.0) must be >= 0" in message
    assert "--val-fraction + --test-fraction" in message
    assert "--frame-size (20) must be a multiple of 8" in message
