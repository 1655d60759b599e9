"""The training side on CUDA (packaged tiny Gemma 4): every test here is marked `gpu`.

Skipped without CUDA; with KPREP_REQUIRE_GPU=1 a missing GPU fails them instead
(tests/conftest.py). benchmarks/gpu_check.sh runs them first on a GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from trainer.config import TrainConfig  # noqa: E402
from trainer.tiny import tiny_model_path  # noqa: E402

TINY = str(tiny_model_path())
ROOT = Path(__file__).resolve().parents[1]


def _config(data, out, **kw) -> TrainConfig:
    base = dict(
        model_id=TINY,
        data_path=str(data),
        output_dir=str(out),
        max_steps=4,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        logging_steps=1,
        save_steps=2,
        learning_rate=1e-3,
    )
    base.update(kw)
    return TrainConfig(**base)


def _losses(summary) -> list[float]:
    return [e["loss"] for e in summary["log_history"] if "loss" in e]


@pytest.fixture(scope="module")
def cuda():
    if not torch.cuda.is_available():
        pytest.fail("no CUDA device (KPREP_REQUIRE_GPU=1 makes the gpu tests fail without one)")
    return torch.device("cuda")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import write_moving_shape_dataset

    return write_moving_shape_dataset(tmp_path_factory.mktemp("gpu_data"))


@pytest.fixture(scope="module")
def recipe_run(cuda, data, tmp_path_factory):
    """The recipe on CUDA: bf16, paged_adamw_8bit, gradient checkpointing, vision cache auto."""
    from trainer.train import train

    out = tmp_path_factory.mktemp("gpu_recipe")
    return out, train(_config(data / "demo.train.json", out))


def test_bf16_paged_adamw_8bit_training(recipe_run):
    out, summary = recipe_run
    eff = summary["effective"]
    assert eff["device"] == "cuda" and eff["bf16"] is True
    assert eff["optimizer_class"].startswith("bitsandbytes.optim")
    assert eff["vision_cache"]["mode"] == "memory" and eff["vision_cache"]["dtype"] == "bfloat16"
    assert summary["global_step"] == 4 and all(loss > 0 for loss in _losses(summary))
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    assert all(v.dtype == torch.float32 for v in adapter.values())  # fp32 adapters


def test_vision_cache_on_cuda_matches_the_uncached_run(recipe_run, data, tmp_path):
    from trainer.train import train

    _, cached = recipe_run
    plain = train(_config(data / "demo.train.json", tmp_path / "off", vision_cache="off"))
    # bf16 compute: the same ops in the same order, so equal up to bf16 rounding.
    assert _losses(plain) == pytest.approx(_losses(cached), rel=2e-2)


def test_resume_on_cuda_reaches_the_same_adapter(recipe_run, data, tmp_path):
    import shutil

    from trainer.train import train

    out, _ = recipe_run
    run = tmp_path / "resumed"
    run.mkdir()
    shutil.copytree(out / "checkpoint-2", run / "checkpoint-2")
    summary = train(_config(data / "demo.train.json", run, resume=True))
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["global_step"] == 4
    full = load_file(str(out / "adapter_model.safetensors"))
    resumed = load_file(str(run / "adapter_model.safetensors"))
    for key in full:
        assert torch.allclose(full[key], resumed[key], atol=1e-3), key


def test_eval_generation_and_ranking_on_cuda(recipe_run, data, tmp_path):
    from trainer.cli import app

    out, _ = recipe_run
    report = tmp_path / "eval.json"
    torch.cuda.reset_peak_memory_stats()
    result = CliRunner().invoke(
        app,
        ["eval", "--data-path", str(data / "demo.validation.json"), "--model-id", TINY,
         "--adapter", str(out), "--method", "both", "--max-new-tokens", "6",
         "--output", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = json.loads(report.read_text())["runs"][-1]
    assert 0.0 <= run["generation"]["top1"] <= 1.0
    assert 0.0 <= run["ranking"]["top1"] <= run["ranking"]["top2"] <= 1.0
    assert torch.cuda.max_memory_allocated() > 0  # the model ran on the GPU


def test_merge_on_cuda_equals_the_adapter(recipe_run, data, cuda, tmp_path):
    from peft import PeftModel
    from transformers import AutoProcessor, Gemma4ForConditionalGeneration

    from trainer.cli import app
    from trainer.collator import VisionChatCollator
    from trainer.data import ConversationDataset, load_samples

    out, _ = recipe_run
    merged = tmp_path / "merged"
    result = CliRunner().invoke(app, ["merge", "--adapter", str(out), "--output", str(merged)])
    assert result.exit_code == 0, result.output
    processor = AutoProcessor.from_pretrained(str(out))
    item = ConversationDataset(load_samples(data / "demo.validation.json", max_samples=1))[0]
    batch = VisionChatCollator(processor)([item])
    batch.pop("labels")
    batch = {k: v.to(cuda) for k, v in batch.items()}
    with torch.no_grad():
        a = Gemma4ForConditionalGeneration.from_pretrained(str(merged)).to(cuda)(**batch).logits
        base = Gemma4ForConditionalGeneration.from_pretrained(TINY)
        b = PeftModel.from_pretrained(base, str(out)).to(cuda)(**batch).logits
    assert torch.allclose(a, b, atol=1e-3)


def test_raw_video_training_on_cuda(cuda, make_counter_clip, tmp_path):
    from trainer.train import train

    clips = [make_counter_clip(f"c{i}.mp4", num_frames=40 + 10 * i) for i in range(2)]
    entries = [
        {
            "id": clip.stem,
            "messages": [
                {"role": "user", "content": [{"type": "video", "video": clip.name},
                                             {"type": "text", "text": "What happens?"}]},
                {"role": "assistant",
                 "content": [{"type": "text", "text": f"The video shows counting {i}."}]},
            ],
        }
        for i, clip in enumerate(clips)
    ]  # fmt: skip
    manifest = clips[0].parent / "video.json"
    manifest.write_text(json.dumps(entries))
    summary = train(
        _config(manifest, tmp_path / "video", max_steps=2, max_soft_tokens=70, save_steps=10)
    )
    assert summary["effective"]["device"] == "cuda" and summary["global_step"] == 2
    assert summary["effective"]["vision_cache"]["mode"] == "memory"


def test_qlora_on_cuda(cuda, data, tmp_path):
    from trainer.train import train

    summary = train(
        _config(data / "demo.train.json", tmp_path / "qlora", load_in_4bit=True, save_steps=10)
    )
    assert summary["effective"]["load_in_4bit"] is True and summary["effective"]["bf16"] is True
    assert summary["lora_modules"] == 24 and all(loss > 0 for loss in _losses(summary))
    cfg = json.loads((tmp_path / "qlora" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["base_model_name_or_path"] == TINY


def test_auto_batch_probes_the_gpu(cuda, data, tmp_path):
    from trainer.train import train

    summary = train(
        _config(
            data / "demo.train.json",
            tmp_path / "auto",
            per_device_train_batch_size=1,
            gradient_accumulation_steps=4,
            auto_batch=True,
            max_steps=2,
            save_steps=10,
        )
    )
    eff = summary["effective"]
    assert eff["effective_batch"] == 4 and eff["probed"]
    assert eff["micro_batch"] * eff["accumulation"] == 4
    assert eff["micro_batch"] == 4  # a tiny model fits whole on any GPU


def test_deepspeed_zero2_through_the_launcher(cuda, data, tmp_path):
    """`kprep train --num-gpus 1` runs the real `deepspeed` launcher (one worker, ZeRO-2)."""
    out = tmp_path / "ds"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    bindir = Path(sys.executable).parent
    env["PATH"] = str(bindir) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(
        [str(bindir / "kprep") if (bindir / "kprep").exists() else "kprep", "train",
         "--model-id", TINY, "--data-path", str(data / "demo.train.json"),
         "--output-dir", str(out), "--max-steps", "2", "--per-device-train-batch-size", "2",
         "--gradient-accumulation-steps", "1", "--save-steps", "10", "--num-gpus", "1"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "launching: deepspeed --num_gpus 1" in proc.stdout
    summary = json.loads((out / "training_summary.json").read_text())
    eff = summary["effective"]
    assert eff["deepspeed_zero_stage"] == 2 and eff["device"] == "cuda" and eff["world_size"] == 1
    assert summary["global_step"] == 2
