"""`kprep train` end to end on CPU with the packaged tiny Gemma 4.

One LoRA run (module fixture) is inspected by several tests: LoRA lands on the
text layers only, adapters change and frozen weights do not, the outputs
reload with plain PeftModel, resume continues from a checkpoint to the same
weights. Other runs cover video input, Arrow input, GA invariance of the logged
loss, full fine-tuning, vision/projector learning rates and DeepSpeed ZeRO-2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from trainer.config import TrainConfig  # noqa: E402
from trainer.tiny import tiny_model_path, write_synthetic_manifest  # noqa: E402

TINY = str(tiny_model_path())


def _config(data_path, output_dir, **kw) -> TrainConfig:
    base = dict(
        model_id=TINY,
        data_path=str(data_path),
        output_dir=str(output_dir),
        max_steps=4,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        logging_steps=1,
        save_steps=2,
        torch_threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def _changed_weights(model_dir) -> set[str]:
    """Names of the tiny base's weights that differ in the full model saved at ``model_dir``."""
    from transformers import Gemma4ForConditionalGeneration

    before = _base_state()
    after = Gemma4ForConditionalGeneration.from_pretrained(str(model_dir)).state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def _base_state():
    from transformers import Gemma4ForConditionalGeneration

    return {
        k: v.clone()
        for k, v in Gemma4ForConditionalGeneration.from_pretrained(TINY).state_dict().items()
    }


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return write_synthetic_manifest(
        folder, num_samples=8, labels=("moving left", "tai chi", "moving right")
    )


@pytest.fixture(scope="module")
def lora_run(manifest, tmp_path_factory):
    from trainer.train import train

    out = tmp_path_factory.mktemp("lora")
    summary = train(_config(manifest, out))  # the recipe's paged_adamw_8bit (bitsandbytes) on CPU
    return out, summary


def test_lora_lands_only_on_text_layers(lora_run):
    out, summary = lora_run
    adapter = load_file(str(out / "adapter_model.safetensors"))
    modules = {k.split(".lora_")[0] for k in adapter if ".lora_" in k}
    # 2 layers with q/k/v/o + 3 MLP, 2 KV-shared layers without k/v: 2*7 + 2*5.
    assert summary["lora_modules"] == len(modules) == 24
    assert all(".language_model.layers." in m for m in modules)
    assert not any("vision" in k or "audio" in k or "embed_vision" in k for k in adapter)
    assert summary["trainable_by_part"] == {"text": summary["trainable_params"]}
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and cfg["lora_alpha"] == 32 and cfg["base_model_name_or_path"] == TINY


def test_adapters_change_and_base_and_vision_weights_do_not(lora_run):
    from peft import PeftModel
    from transformers import Gemma4ForConditionalGeneration

    out, _ = lora_run
    adapter = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero
    before = _base_state()
    model = PeftModel.from_pretrained(
        Gemma4ForConditionalGeneration.from_pretrained(TINY), str(out)
    )
    merged = model.merge_and_unload().state_dict()
    changed = {k for k in before if not torch.equal(before[k], merged[k])}
    assert changed and all(
        ".language_model.layers." in k and k.endswith("proj.weight") for k in changed
    )
    assert not any("vision_tower" in k or "embed_vision" in k for k in changed)


def test_outputs_reload_with_plain_peft_and_change_the_model(lora_run, manifest):
    from peft import PeftModel
    from transformers import AutoProcessor, Gemma4ForConditionalGeneration

    from trainer.collator import VisionChatCollator
    from trainer.data import ConversationDataset, load_samples

    out, summary = lora_run
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "processor_config.json",
    ):
        assert (out / name).is_file(), name
    processor = AutoProcessor.from_pretrained(str(out))
    batch = VisionChatCollator(processor)([ConversationDataset(load_samples(manifest))[0]])
    batch.pop("labels")
    base = Gemma4ForConditionalGeneration.from_pretrained(TINY).eval()
    with torch.no_grad():
        base_logits = base(**batch).logits
        tuned = PeftModel.from_pretrained(base, str(out)).eval()
        tuned_logits = tuned(**batch).logits
    assert not torch.allclose(base_logits, tuned_logits)

    saved = json.loads((out / "training_summary.json").read_text())
    assert saved["global_step"] == 4 and saved["final_loss"] == summary["final_loss"]
    assert saved["effective"]["bf16"] is False  # CPU: switched off with a note
    assert saved["data"]["sha256"] and saved["data"]["samples"] == 8
    assert saved["train_samples_per_second"] > 0 and saved["train_runtime_s"] > 0
    assert saved["versions"]["transformers"] and saved["recipe"]["lora_r"] == 16
    assert saved["effective"]["optimizer_class"].startswith("bitsandbytes.optim")  # 8-bit AdamW


def test_resume_continues_from_the_newest_checkpoint_with_optimizer_and_scheduler(
    lora_run, manifest, tmp_path
):
    from trainer.train import train

    out, _ = lora_run
    interrupted = tmp_path / "run"
    interrupted.mkdir()
    # A run killed after step 2: only checkpoint-2 exists.
    shutil.copytree(out / "checkpoint-2", interrupted / "checkpoint-2")
    assert (interrupted / "checkpoint-2" / "optimizer.pt").is_file()
    assert (interrupted / "checkpoint-2" / "scheduler.pt").is_file()
    summary = train(_config(manifest, interrupted, resume=True))
    assert summary["resumed_from"].endswith("checkpoint-2")
    assert summary["global_step"] == 4
    # The history of steps 1-2 comes back from the checkpoint; only 3-4 ran again.
    logged_steps = [e["step"] for e in summary["log_history"] if "loss" in e]
    assert logged_steps == [1, 2, 3, 4]
    assert summary["train_steps_per_second"] is not None
    # Same weights as the uninterrupted run: optimizer moments, LR schedule and RNG were restored.
    full = load_file(str(out / "adapter_model.safetensors"))
    resumed = load_file(str(interrupted / "adapter_model.safetensors"))
    for key in full:
        assert torch.allclose(full[key], resumed[key], atol=1e-6), key
    lr_full = [
        e["learning_rate"]
        for e in json.loads((out / "training_summary.json").read_text())["log_history"]
        if "loss" in e
    ]
    lr_resumed = [e["learning_rate"] for e in summary["log_history"] if "loss" in e]
    assert lr_resumed == lr_full  # the scheduler continued, it did not restart


def test_logged_loss_is_the_per_token_mean_for_ga1_and_ga8(tmp_path):
    """GA=1 x batch 8 and GA=8 x batch 1 log the same first-step loss: the true per-token mean."""
    from trainer.collator import VisionChatCollator, mean_token_loss
    from trainer.data import ConversationDataset, load_samples
    from trainer.model import load_processor
    from trainer.train import train

    # Answers of different token lengths, so a mean of per-sample means would differ.
    data = write_synthetic_manifest(
        tmp_path / "d",
        num_samples=8,
        labels=("tai chi", "moving left while spinning slowly around"),
    )
    common = dict(max_steps=1, optim="adamw_torch", lora_dropout=0.0, learning_rate=1e-4)
    ga1 = train(
        _config(
            data,
            tmp_path / "ga1",
            per_device_train_batch_size=8,
            gradient_accumulation_steps=1,
            **common,
        )
    )
    ga8 = train(
        _config(
            data,
            tmp_path / "ga8",
            per_device_train_batch_size=1,
            gradient_accumulation_steps=8,
            **common,
        )
    )
    loss1 = ga1["log_history"][0]["loss"]
    loss8 = ga8["log_history"][0]["loss"]

    # Reference: the untrained model's mean cross-entropy per answer token over all 8 samples.
    from transformers import Gemma4ForConditionalGeneration

    processor = load_processor(TINY)
    ds = ConversationDataset(load_samples(data))
    batch = VisionChatCollator(processor)([ds[i] for i in range(len(ds))])
    labels = batch.pop("labels")
    with torch.no_grad():
        base = Gemma4ForConditionalGeneration.from_pretrained(TINY)
        ref = float(mean_token_loss(base(**batch), labels))
        # The subtler bug, a mean of per-sample means, is distinguishable on this data.
        per_sample = []
        for i in range(len(ds)):
            one = VisionChatCollator(processor)([ds[i]])
            one_labels = one.pop("labels")
            per_sample.append(float(mean_token_loss(base(**one), one_labels)))
    assert abs(sum(per_sample) / len(per_sample) - ref) > 1e-3 * ref
    assert loss1 == pytest.approx(ref, rel=1e-4)
    assert loss8 == pytest.approx(ref, rel=1e-4)  # not 8x (the published 14.45 vs ~1.8)
    assert ga1["train_loss"] == pytest.approx(ga8["train_loss"], rel=1e-4)


def test_video_entries_train_through_the_cli(make_counter_clip, tmp_path):
    from typer.testing import CliRunner

    from trainer.cli import app

    clips = [make_counter_clip(f"c{i}.mp4", num_frames=40 + 10 * i) for i in range(2)]
    entries = [
        {
            "id": clip.stem,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "video", "video": clip.name},
                        {"type": "text", "text": "What happens?"},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": f"The video shows counting {i}."}],
                },
            ],
        }
        for i, clip in enumerate(clips)
    ]
    manifest = clips[0].parent / "video.json"
    manifest.write_text(json.dumps(entries))
    out = tmp_path / "video_out"
    result = CliRunner().invoke(
        app,
        [
            "train", "--model_id", TINY, "--data_path", str(manifest), "--output_dir", str(out),
            "--max-steps", "2", "--per-device-train-batch-size", "2", "--logging-steps", "5",
            "--optim", "adamw_torch", "--max-soft-tokens", "70", "--num-frames", "4",
            "--torch-threads", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    summary = json.loads((out / "training_summary.json").read_text())
    # logging_steps 5 > 2 steps: the final step is still logged.
    assert summary["final_loss"] == summary["log_history"][-2]["loss"]
    assert summary["global_step"] == 2 and all(
        e["loss"] > 0 for e in summary["log_history"] if "loss" in e
    )
    assert (out / "adapter_model.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert "- video\n" in card.split("---")[1] and "image-sequence" not in card.split("---")[1]
    assert "raw video clips, 4 frames decoded per clip (center sampling)" in card


def test_arrow_dataset_split_trains(tmp_path):
    import datasets
    from PIL import Image

    from trainer.train import train

    def row(i, label):
        return {
            "id": f"r{i}",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "text": None}] * 2
                    + [{"type": "text", "text": "What?"}],
                },
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": f"The video shows {label}."}],
                },
            ],
            "images": [Image.new("RGB", (64, 48), (i * 40 % 255, 10, 10)) for _ in range(2)],
            "video": None,
        }

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "messages": datasets.List(
                {
                    "role": datasets.Value("string"),
                    "content": datasets.List(
                        {"type": datasets.Value("string"), "text": datasets.Value("string")}
                    ),
                }
            ),
            "images": datasets.List(datasets.Image()),
            "video": datasets.Value("string"),
        }
    )
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(
                [row(i, "tai chi") for i in range(4)], features=features
            ),
            "validation": datasets.Dataset.from_list([row(9, "abseiling")], features=features),
        }
    )
    arrow = tmp_path / "kinetic_3K_arrow"
    dd.save_to_disk(str(arrow))
    summary = train(
        _config(arrow, tmp_path / "out", max_steps=2, optim="adamw_torch", split="train")
    )
    assert summary["data"]["samples"] == 4 and summary["global_step"] == 2
    # the card's example is the first train row as stored (images: their embedded size)
    assert summary["example"]["id"] == "r0" and summary["example"]["messages"] == row(0, "")[
        "messages"
    ][:1] + [
        {"role": "assistant", "content": [{"type": "text", "text": "The video shows tai chi."}]}
    ]
    assert all(i["bytes"].endswith(" bytes") for i in summary["example"]["images"])
    assert '"id": "r0"' in (tmp_path / "out" / "README.md").read_text()


def test_full_fine_tune_and_vision_projector_learning_rates(manifest, tmp_path):

    from trainer.train import train

    out = tmp_path / "full"
    summary = train(
        _config(
            manifest,
            out,
            max_steps=2,
            use_lora=False,
            optim="adamw_torch",
            projector_lr=1e-3,
            save_steps=10,
        )
    )
    assert summary["lora_modules"] == 0 and set(summary["trainable_by_part"]) == {
        "text",
        "projector",
    }
    assert summary["effective"]["param_groups"] == {"text": 2e-4, "projector": 1e-3}
    changed = _changed_weights(out)
    assert any(".language_model.layers." in k for k in changed)
    assert any("embed_vision" in k for k in changed)
    assert not any("vision_tower" in k for k in changed)  # image_encoder_lr 0: frozen


def test_lora_with_image_encoder_lr_saves_the_trained_vision_tower(manifest, tmp_path):
    from trainer.train import train

    out = tmp_path / "lora_vision"
    summary = train(
        _config(
            manifest,
            out,
            max_steps=2,
            warmup_ratio=0.0,
            optim="adamw_torch",
            image_encoder_lr=1e-3,
            save_steps=10,
        )
    )
    assert summary["effective"]["param_groups"] == {"text": 2e-4, "vision": 1e-3}
    adapter = load_file(str(out / "adapter_model.safetensors"))
    before = _base_state()
    vision = {k: v for k, v in adapter.items() if "vision_tower" in k}
    assert vision, "the vision tower must be saved with the adapter"
    assert any(
        not torch.equal(v, before[k.replace("base_model.model.", "")])
        for k, v in vision.items()
        if k.replace("base_model.model.", "") in before
    )


@pytest.mark.slow
def test_deepspeed_zero2_on_cpu(manifest, tmp_path):
    from trainer.train import train

    out = tmp_path / "ds"
    summary = train(_config(manifest, out, max_steps=2, deepspeed="zero2", save_steps=10))
    assert summary["effective"]["deepspeed_zero_stage"] == 2
    card = (out / "README.md").read_text()
    assert "| DeepSpeed | ZeRO stage 2 |" in card
    shown = card.split("DeepSpeed configuration:\n\n```json\n")[1].split("```")[0]
    assert json.loads(shown) == summary["deepspeed_config"]
    assert summary["deepspeed_config"]["zero_optimization"]["stage"] == 2
    assert summary["global_step"] == 2
    assert Path(out / "adapter_model.safetensors").is_file()
    # A later run in the same process does not inherit DeepSpeed's state.
    import os

    assert "ACCELERATE_USE_DEEPSPEED" not in os.environ and "LOCAL_RANK" not in os.environ
    after = train(_config(manifest, tmp_path / "plain", max_steps=1, optim="adamw_torch"))
    assert after["effective"]["deepspeed_zero_stage"] is None
    assert "DeepSpeed" not in after["effective"]["optimizer"]


@pytest.mark.slow
def test_launcher_worker_entry_trains_from_the_resolved_config(manifest, tmp_path):
    """What each process started by the deepspeed launcher runs: -m trainer.train --config ..."""
    import os
    import subprocess
    import sys

    from trainer.train import launcher_command, write_resolved_config

    cfg = _config(manifest, tmp_path / "worker", max_steps=1, optim="adamw_torch", num_gpus=1)
    resolved = write_resolved_config(cfg)
    cmd = launcher_command(resolved, num_gpus=1)
    module_args = cmd[cmd.index("--module") + 1 :]  # ["trainer.train", "--config", path]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    proc = subprocess.run(
        [sys.executable, "-m", *module_args, "--local_rank=0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "worker" / "training_summary.json").read_text())
    assert summary["effective"]["deepspeed_zero_stage"] == 2 and summary["global_step"] == 1
    assert summary["recipe"]["num_gpus"] is None  # workers never relaunch


def test_the_documented_usage_snippet_loads_the_adapter(lora_run):
    """docs/training.md's PeftModel snippet, run against the tiny model and a real run."""
    import re

    out, _ = lora_run
    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "PeftModel" in b]
    code = snippet.replace("google/gemma-4-e4b-it", TINY).replace("outputs/k3k-lora", str(out))
    scope: dict = {}
    exec(code, scope)
    assert type(scope["model"]).__name__.startswith("PeftModel")
    assert scope["processor"].tokenizer.eot_token == "<turn|>"


@pytest.mark.gpu
def test_recipe_on_gpu_uses_bf16_and_paged_8bit_adamw(manifest, tmp_path):
    from trainer.train import train

    summary = train(_config(manifest, tmp_path / "gpu", max_steps=2, torch_threads=None))
    assert summary["effective"]["device"] == "cuda" and summary["effective"]["bf16"] is True
    assert summary["effective"]["optimizer_class"].startswith("bitsandbytes.optim")
    assert summary["final_loss"] > 0


def test_embedding_lr_trains_only_the_embeddings_when_the_text_layers_are_frozen(
    manifest, tmp_path
):
    """--no-use-lora --learning-rate 0 --embedding-lr X: token embeddings (tied LM head)
    and the projector train in their own groups; every text layer stays as it was."""

    from trainer.train import train

    out = tmp_path / "emb"
    summary = train(
        _config(
            manifest,
            out,
            max_steps=2,
            use_lora=False,
            optim="adamw_torch",
            learning_rate=0.0,
            embedding_lr=3e-3,
            projector_lr=1e-3,
            save_steps=10,
        )
    )
    assert summary["effective"]["param_groups"] == {"embeddings": 3e-3, "projector": 1e-3}
    changed = _changed_weights(out)
    assert any(k.endswith("embed_tokens.weight") for k in changed)
    assert any("embed_vision" in k for k in changed)
    assert not any(".language_model.layers." in k for k in changed)
    assert not any("vision_tower" in k for k in changed)


def test_embedding_lr_with_lora_or_with_nothing_to_train_fails_in_one_line(manifest, tmp_path):
    from trainer.config import ConfigError

    with pytest.raises(ConfigError, match="--embedding-lr .* needs --no-use-lora"):
        _config(manifest, tmp_path / "a", embedding_lr=1e-3)
    with pytest.raises(ConfigError, match="--learning-rate .* nothing would train"):
        _config(manifest, tmp_path / "b", use_lora=False, learning_rate=0.0, embedding_lr=0.0)
