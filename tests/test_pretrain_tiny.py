"""The demo's pretrained tiny base: its still-frame task, the script, the shipped weights."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from trainer.pretrain_tiny import (
    NAMING_PROMPT,
    PRETRAIN_PROMPT,
    PretrainConfig,
    position_answer,
    pretrain,
    pretrained_model_path,
    write_position_frames,
)


@pytest.mark.parametrize(
    ("x", "y", "side", "words"),
    [
        (0, 0, 10, "top left"),
        (54, 0, 10, "top right"),
        (27, 27, 10, "middle centre"),
        (0, 54, 10, "bottom left"),
        (48, 50, 16, "bottom right"),
    ],
)
def test_position_answer_names_the_third_of_the_centre(x, y, side, words):
    assert position_answer(x, y, side, 64) == f"The image shows a square at the {words}."


def test_still_frames_answer_where_the_square_is(tmp_path):
    from PIL import Image

    manifest = write_position_frames(tmp_path, samples=40, naming_share=0.25, seed=3)
    entries = json.loads(manifest.read_text())
    prompts = [e["messages"][0]["content"][1]["text"] for e in entries]
    assert set(prompts) == {PRETRAIN_PROMPT, NAMING_PROMPT}
    for entry, prompt in zip(entries, prompts, strict=True):
        images = [c for c in entry["messages"][0]["content"] if c["type"] == "image"]
        assert len(images) == 1  # one still frame: no motion, no order
        frame = np.asarray(Image.open(tmp_path / images[0]["image"]).convert("RGB"), dtype=float)
        assert frame.shape == (32, 32, 3)
        answer = entry["messages"][1]["content"][0]["text"]
        if prompt == NAMING_PROMPT:
            assert answer.startswith("The video shows ")
            continue
        ys, xs = np.nonzero(frame.mean(axis=2) > 100)
        cx, cy = xs.mean() * 2, ys.mean() * 2  # back to the 64-px frame it was drawn in
        column = ("left", "centre", "right")[min(int(3 * cx / 64), 2)]
        row = ("top", "middle", "bottom")[min(int(3 * cy / 64), 2)]
        # JPEG and the 2x shrink can move the centroid by a pixel at a third's border
        near_border = min(abs(v - 64 * k / 3) for v in (cx, cy) for k in (1, 2)) < 2
        assert near_border or answer.endswith(f"{row} {column}."), (answer, cx, cy)


def test_pretrain_script_runs_end_to_end(tmp_path):
    """Two steps of the real script: a loadable model folder with its build record."""
    from transformers import Gemma4ForConditionalGeneration

    out = tmp_path / "base"
    build = pretrain(
        PretrainConfig(output=str(out), samples=16, max_steps=2, batch_size=4, check_samples=9)
    )
    assert build["global_step"] == 2
    record = json.loads((out / "pretrain_build.json").read_text())
    assert record["config"]["max_steps"] == 2
    check = record["position_check"]
    assert check["samples"] == 9 and check["chance_top1"] == pytest.approx(1 / 9)
    assert 0 <= check["ranking_top1"] <= 1
    Gemma4ForConditionalGeneration.from_pretrained(str(out))
    # a second run replaces only a folder this script wrote
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not written by trainer.pretrain_tiny"):
        pretrain(PretrainConfig(output=str(other), samples=8, max_steps=1, batch_size=4))
    assert (other / "notes.txt").read_text() == "keep"


def test_shipped_base_was_built_by_the_documented_command():
    """The packaged weights come from `python -m trainer.pretrain_tiny` with its defaults."""
    path = pretrained_model_path()
    record = json.loads((path / "pretrain_build.json").read_text())
    config = asdict(PretrainConfig())
    config.pop("output")
    recorded = dict(record["config"])
    recorded.pop("output")
    assert recorded == config
    assert record["global_step"] == config["max_steps"]
    assert (path / "model.safetensors").stat().st_size < 4_000_000


def test_shipped_base_reads_where_the_square_is():
    """The shipped base has a working vision -> text path: on fresh stills it names the
    square's third per axis far above chance (9 answers, chance 0.11), the way a real
    pretrained Gemma 4 can describe one frame before LoRA teaches it motion."""
    from trainer.pretrain_tiny import position_accuracy

    record = json.loads((pretrained_model_path() / "pretrain_build.json").read_text())
    measured = position_accuracy(pretrained_model_path(), samples=120)
    assert measured["ranking_top1"] == pytest.approx(record["position_check"]["ranking_top1"])
    assert measured["ranking_top1"] >= 0.6, measured
    assert measured["generation_top1"] >= 0.6, measured
