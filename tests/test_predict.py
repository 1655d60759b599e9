"""`kprep predict`: one clip or frames folder -> the action, with training's sampling and prompt."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kinetics_prep.demo_clips import DEMO_CLASSES
from trainer.evaluate import EvalError
from trainer.predict import DEFAULT_PROMPT, load_frames, prompt_with_frames


def test_prompt_with_frames_keeps_the_training_text():
    training = [
        {"role": "user", "content": [{"type": "image", "image": "a.jpg"}] * 4
         + [{"type": "text", "text": "What happens?"}]},
    ]  # fmt: skip
    out = prompt_with_frames(training, 3, None)
    assert out == [
        {
            "role": "user",
            "content": [{"type": "image"}] * 3 + [{"type": "text", "text": "What happens?"}],
        }
    ]
    assert prompt_with_frames(None, 2, None)[0]["content"][-1]["text"] == DEFAULT_PROMPT
    assert prompt_with_frames(training, 2, "Other?")[0]["content"][-1]["text"] == "Other?"


def test_load_frames_from_clip_uses_center_sampling(tmp_path):
    from kinetics_prep.demo_clips import write_demo_clips

    clip = write_demo_clips(tmp_path, clips_per_class=1, num_frames=16, size=32)[0].path
    frames, indices = load_frames(clip, num_frames=4, sampling="center")
    assert indices == [2, 6, 10, 14]  # floor((i + 0.5) * 16 / 4)
    assert len(frames) == 4 and frames[0].size == (32, 32)
    frames, indices = load_frames(clip, num_frames=4, sampling="center", short_side=16)
    assert frames[0].size == (16, 16)


def test_load_frames_from_folder_in_frame_order(tmp_path):
    from PIL import Image

    for k in (10, 2, 1):
        Image.new("RGB", (8, 8), (k, 0, 0)).save(tmp_path / f"frame_{k}.jpg")
    (tmp_path / "notes.txt").write_text("x")
    frames, indices = load_frames(tmp_path)
    assert indices is None
    assert [f.getpixel((4, 4))[0] for f in frames] == pytest.approx([1, 2, 10], abs=3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvalError, match="frame_<k>.jpg"):
        load_frames(empty)
    with pytest.raises(EvalError, match="no such file"):
        load_frames(tmp_path / "nope.mp4")


def test_kprep_predict_clip_and_frames_folder(tiny_lora_run, tmp_path):
    from kinetics_prep.demo_clips import write_demo_clips
    from trainer.cli import app

    data, adapter, _ = tiny_lora_run
    clip = write_demo_clips(tmp_path / "clips", clips_per_class=1, size=32)[0].path
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(clip), "--adapter", str(adapter), "--rank",
                                 "--top-k", "3", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["frame_indices"] == [2, 6, 10, 14] and out["sampling"] == "center"
    assert isinstance(out["answer"], str)
    assert out["label"] is None or out["label"] in DEMO_CLASSES
    assert [r["label"] for r in out["ranked"]] != [] and len(out["ranked"]) == 3
    assert {r["label"] for r in out["ranked"]} <= set(DEMO_CLASSES)
    scores = [r["log_likelihood"] for r in out["ranked"]]
    assert scores == sorted(scores, reverse=True)

    frames_dir = next((data / "frames").iterdir())
    text = runner.invoke(app, ["predict", str(frames_dir), "--adapter", str(adapter), "--rank"])
    assert text.exit_code == 0, text.output
    assert "answer:" in text.output and "1. " in text.output


def test_kprep_predict_errors(tiny_lora_run, tmp_path):
    from trainer.cli import app

    _, adapter, _ = tiny_lora_run
    runner = CliRunner()
    missing = runner.invoke(app, ["predict", str(tmp_path / "nope.mp4"), "--adapter", str(adapter)])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    no_frames = runner.invoke(app, ["predict", str(empty), "--adapter", str(adapter)])
    assert no_frames.exit_code == 2 and "frame_<k>.jpg" in no_frames.output
    no_model = runner.invoke(app, ["predict", str(empty)])
    assert no_model.exit_code == 2 and "--adapter" in no_model.output
