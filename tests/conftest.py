"""Shared fixtures: synthetic clips made in the session, marker policy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip without CUDA, but fail when KPREP_REQUIRE_GPU=1."""
    require = os.environ.get("KPREP_REQUIRE_GPU") == "1"
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda or require:
        return
    skip = pytest.mark.skip(reason="needs CUDA (set KPREP_REQUIRE_GPU=1 to make this a failure)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a small shared CPU run far faster on one thread (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    """Path of the ffmpeg CLI (installed by .ci/run from Debian)."""
    path = shutil.which("ffmpeg")
    if path is None:
        pytest.fail("ffmpeg CLI not found: install it (apt-get install -y ffmpeg), as .ci/run does")
    return path


@pytest.fixture
def make_counter_clip(tmp_path: Path):
    """Factory: ``make_counter_clip("a.mp4", num_frames=50)`` -> Path of a counter clip."""
    from kinetics_prep.synthetic import write_counter_clip

    def make(name: str = "clip.mp4", **kwargs) -> Path:
        kwargs.setdefault("num_frames", 50)
        kwargs.setdefault("width", 160)
        kwargs.setdefault("height", 120)
        return write_counter_clip(tmp_path / name, **kwargs)

    return make


def write_moving_shape_dataset(
    root: Path, *, per_class: int = 3, val_per_class: int = 1, size: int = 32
) -> Path:
    """A seed-format image-sequence dataset (docs/schema.md) of demo moving-shape clips.

    Writes root/frames/<id>/frame_k.jpg, root/demo.json (+ .train/.validation)
    and root/label_map.json. Returns root.
    """
    from PIL import Image

    from kinetics_prep.demo_clips import DEMO_CLASSES, moving_shape_frames
    from kinetics_prep.schema import (
        DEFAULT_ANSWER_TEMPLATE,
        DEFAULT_PROMPT,
        LABEL_MAP_NAME,
        Sample,
        split_path,
        write_label_map,
        write_manifest,
    )

    samples = []
    for c, label in enumerate(DEMO_CLASSES):
        for i in range(per_class + val_per_class):
            clip_id = f"{label.replace(' ', '_')}_{i:04d}"
            frames = moving_shape_frames(label, num_frames=16, size=size, seed=100 * c + i)
            paths = []
            for k, index in enumerate((2, 6, 10, 14), start=1):
                path = root / "frames" / clip_id / f"frame_{k}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(frames[index]).save(path, quality=95)
                paths.append(f"frames/{clip_id}/frame_{k}.jpg")
            samples.append(
                Sample(
                    id=clip_id,
                    prompt=DEFAULT_PROMPT,
                    answer=DEFAULT_ANSWER_TEMPLATE.format(label=label),
                    images=paths,
                    label=label,
                    split="train" if i < per_class else "validation",
                )
            )
    manifest = root / "demo.json"
    write_manifest(manifest, samples)
    for split in ("train", "validation"):
        write_manifest(split_path(manifest, split), [s for s in samples if s.split == split])
    write_label_map(
        root / LABEL_MAP_NAME,
        list(DEMO_CLASSES),
        answer_template=DEFAULT_ANSWER_TEMPLATE,
        sort=False,
    )
    return root


@pytest.fixture(scope="session")
def tiny_lora_run(tmp_path_factory):
    """A tiny moving-shape dataset and a 3-step LoRA run of the packaged tiny Gemma 4 on it.

    Returns (dataset folder, adapter folder, base model folder). Used by the
    eval / predict / merge tests.
    """
    pytest.importorskip("torch")
    from trainer.config import TrainConfig
    from trainer.tiny import tiny_model_path
    from trainer.train import train

    root = tmp_path_factory.mktemp("tiny_lora_run")
    data = write_moving_shape_dataset(root / "data")
    base = tiny_model_path()
    adapter = root / "adapter"
    train(
        TrainConfig(
            model_id=str(base),
            data_path=str(data / "demo.train.json"),
            output_dir=str(adapter),
            max_steps=3,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=1,
            learning_rate=5e-2,
            optim="adamw_torch",
            bf16=False,
            gradient_checkpointing=False,
            save_steps=1000,
            logging_steps=1,
            lora_dropout=0.0,
        )
    )
    return data, adapter, base
