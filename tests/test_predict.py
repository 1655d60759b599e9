"""`kprep predict`: one clip or frames folder -> the action, with training's sampling and prompt."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kinetics_prep.demo_clips import DEMO_CLASSES
from kinetics_prep.schema import DEFAULT_PROMPT
from trainer.errors import PredictError
from trainer.predict import load_frames, prompt_messages


def test_prompt_messages_hold_the_media_then_the_text():
    out = prompt_messages("What happens?", num_images=3)
    assert out == [
        {
            "role": "user",
            "content": [{"type": "image", "text": None}] * 3
            + [{"type": "text", "text": "What happens?"}],
        }
    ]
    assert prompt_messages(None, num_images=2)[0]["content"][-1]["text"] == DEFAULT_PROMPT
    video = prompt_messages("Q?", video=True)[0]["content"]
    assert [c["type"] for c in video] == ["video", "text"]


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
    with pytest.raises(PredictError, match="frame_<k>.jpg"):
        load_frames(empty)
    with pytest.raises(PredictError, match="no such file"):
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
    assert out["input"] == "images"  # the adapter trained on image sequences
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


def test_kprep_predict_feeds_a_clip_as_video_when_training_read_videos(tiny_lora_run, tmp_path):
    """Training on {"type": "video"} samples: predict gives the clip to the model as a video
    (decoded with the recipe's sampling, real fps), through the training collator."""
    import shutil

    from kinetics_prep.demo_clips import write_demo_clips
    from kinetics_prep.schema import Sample, write_label_map, write_manifest
    from trainer.cli import app

    _, adapter, _ = tiny_lora_run
    clips = write_demo_clips(tmp_path / "data" / "clips", clips_per_class=1, size=32)
    samples = [
        Sample(id=c.path.stem, prompt="What happens?", answer=f"The video shows {c.label}.",
               video=str(c.path.relative_to(tmp_path / "data")), label=c.label)
        for c in clips
    ]  # fmt: skip
    manifest = write_manifest(tmp_path / "data" / "video.json", samples)
    write_label_map(tmp_path / "data" / "label_map.json", DEMO_CLASSES,
                    answer_template="The video shows {label}.")  # fmt: skip
    video_adapter = tmp_path / "adapter"
    shutil.copytree(adapter, video_adapter)
    summary = json.loads((video_adapter / "training_summary.json").read_text())
    summary["data"]["path"] = str(manifest)
    (video_adapter / "training_summary.json").write_text(json.dumps(summary))
    result = CliRunner().invoke(
        app, ["predict", str(clips[0].path), "--adapter", str(video_adapter), "--rank", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["input"] == "video" and out["num_frames"] == 4
    assert out["frame_indices"] == [2, 6, 10, 14] and out["sampling"] == "center"
    assert {r["label"] for r in out["ranked"]} <= set(DEMO_CLASSES)


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
