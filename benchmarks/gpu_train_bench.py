"""Training throughput: a plain HF Trainer baseline vs kprep's training path.

On a GPU (default) it builds a random E4B-shaped Gemma 4 directly on the device
in bf16 (42 text layers, hidden 2560, FFN 10240, 8 heads / 2 KV, head_dim 256,
global head_dim 512, window 512, 18 KV-shared layers, per-layer input 256,
vocab 262144; vision 16 layers, hidden 768; no audio tower, which the recipe
never runs) and trains each variant for ``--steps`` optimizer steps of the seed
recipe (batch 1, gradient accumulation 8, LoRA r=16 on the text layers,
paged_adamw_8bit, bf16, gradient checkpointing) on synthetic 4-frame samples of
336x336 frames. Variants, side by side (samples/s and peak GPU memory):

- ``baseline``: plain HF Trainer + PEFT, the model's own loss over full-vocab
  logits, a tutorial-style collator (processor on the whole chat text);
- ``kprep``: ``trainer.train.train`` without DeepSpeed (280 soft tokens/frame);
- ``kprep_70``: the same at ``--max-soft-tokens 70``;
- ``kprep_zero2``: the same as ``kprep`` through DeepSpeed ZeRO-2 (last, since it
  leaves a process group behind).

``--tiny`` runs the same code on a CPU with the packaged tiny model (for the
test suite: proves the script works end to end; its numbers mean nothing for
GPUs). Usage::

    python benchmarks/gpu_train_bench.py                 # GPU, ~30 steps each
    python benchmarks/gpu_train_bench.py --tiny --steps 2 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

PUBLISHED_SAMPLES_PER_S = 1.859
VARIANTS = ("baseline", "kprep", "kprep_70", "kprep_zero2")


def build_processor(folder: Path, *, tiny: bool) -> Path:
    """The tiny model's tokenizer + chat template with E4B's image/video processors."""
    from transformers import AutoProcessor

    from trainer.tiny import E4B_VISION_CONFIG, tiny_model_path

    processor = AutoProcessor.from_pretrained(str(tiny_model_path()))
    if not tiny:
        for proc in (processor.image_processor, processor.video_processor):
            proc.patch_size = E4B_VISION_CONFIG["patch_size"]
            proc.pooling_kernel_size = E4B_VISION_CONFIG["pooling_kernel_size"]
            proc.max_soft_tokens = 280
    processor.save_pretrained(str(folder))
    return folder


def build_model(*, tiny: bool, seed: int = 0):
    """A fresh model for one variant (same seed -> same weights for every variant)."""
    import torch
    from transformers import Gemma4ForConditionalGeneration

    from trainer.tiny import e4b_shaped_config, tiny_model_path

    torch.manual_seed(seed)
    if tiny:
        return Gemma4ForConditionalGeneration.from_pretrained(str(tiny_model_path()))
    config = e4b_shaped_config()
    with torch.device("cuda"):
        model = Gemma4ForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    return model


def run_baseline(model, processor_dir: Path, manifest: Path, out: Path, args) -> dict:
    """Plain HF Trainer + PEFT: model's own loss, tutorial-style collator."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor, Trainer, TrainingArguments

    from trainer.config import DEFAULT_LORA_TARGET
    from trainer.data import ConversationDataset, load_samples

    processor = AutoProcessor.from_pretrained(str(processor_dir))
    pad_id = processor.tokenizer.pad_token_id
    image_id = processor.image_token_id

    def collate(items):
        texts = [processor.apply_chat_template(i["messages"], tokenize=False) for i in items]
        batch = processor(
            text=texts, images=[i["images"] for i in items], padding=True, return_tensors="pt"
        )
        labels = batch["input_ids"].clone()
        labels[(labels == pad_id) | (labels == image_id)] = -100
        batch["labels"] = labels
        batch.pop("num_soft_tokens_per_image", None)
        return dict(batch)

    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.05,
            target_modules=DEFAULT_LORA_TARGET,
            task_type="CAUSAL_LM",
        ),
    )
    cuda = torch.cuda.is_available()
    targs = TrainingArguments(
        output_dir=str(out),
        max_steps=args.steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=2e-4,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        optim="paged_adamw_8bit",
        bf16=cuda,
        activation_checkpointing=True,
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        remove_unused_columns=False,
        use_cpu=not cuda,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=peft_model,
        args=targs,
        train_dataset=ConversationDataset(load_samples(manifest)),
        data_collator=collate,
    )
    metrics = trainer.train().metrics
    return {
        "samples_per_s": metrics["train_samples_per_second"],
        "train_loss": metrics["train_loss"],
    }


def run_kprep(model, processor_dir: Path, manifest: Path, out: Path, args, **overrides) -> dict:
    from trainer.config import TrainConfig
    from trainer.train import train

    cfg = TrainConfig(
        model_id=str(processor_dir),
        data_path=str(manifest),
        output_dir=str(out),
        max_steps=args.steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=args.grad_accum,
        save_steps=10**6,
        logging_steps=10,
        torch_threads=1 if args.tiny else None,
        **overrides,
    )
    summary = train(cfg, model=model)
    return {
        "samples_per_s": summary["train_samples_per_second"],
        "train_loss": summary["train_loss"],
        "lora_modules": summary["lora_modules"],
        "trainable_params": summary["trainable_params"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="CPU, packaged tiny model (a smoke run)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps per variant (GPU 30, tiny 2)"
    )
    parser.add_argument(
        "--grad-accum", type=int, default=None, help="gradient accumulation (GPU 8, tiny 2)"
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 30)
    args.grad_accum = args.grad_accum or (2 if args.tiny else 8)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}; choose from {VARIANTS}")
    variants.sort(key=VARIANTS.index)  # ZeRO-2 last

    import torch

    from trainer.tiny import write_synthetic_manifest

    if not args.tiny and not torch.cuda.is_available():
        print("error: no CUDA device; run with --tiny for the CPU smoke run", file=sys.stderr)
        return 2
    if args.tiny:
        torch.set_num_threads(1)
    device = "cpu (tiny model)" if args.tiny else torch.cuda.get_device_name(0)
    started = time.time()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="kprep-bench-") as tmp:
        tmp_path = Path(tmp)
        processor_dir = build_processor(tmp_path / "processor", tiny=args.tiny)
        size = 64 if args.tiny else 336
        n = args.steps * args.grad_accum
        manifest = write_synthetic_manifest(
            tmp_path / "data", num_samples=n, size=size, num_frames=4
        )
        for variant in variants:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.time()
            model = build_model(tiny=args.tiny)
            out = tmp_path / variant
            if variant == "baseline":
                res = run_baseline(model, processor_dir, manifest, out, args)
            elif variant == "kprep":
                res = run_kprep(
                    model,
                    processor_dir,
                    manifest,
                    out,
                    args,
                    max_soft_tokens=280 if not args.tiny else 70,
                )
            elif variant == "kprep_70":
                res = run_kprep(model, processor_dir, manifest, out, args, max_soft_tokens=70)
            else:
                res = run_kprep(
                    model, processor_dir, manifest, out, args,
                    max_soft_tokens=280 if not args.tiny else 70, deepspeed="zero2",
                )  # fmt: skip
            res["peak_gpu_gib"] = (
                round(torch.cuda.max_memory_allocated() / 2**30, 2)
                if torch.cuda.is_available()
                else None
            )
            res["wall_s"] = round(time.time() - t0, 1)
            results[variant] = res
            print(f"{variant}: {json.dumps(res)}", flush=True)
            del model
            gc.collect()

    base = results.get("baseline", {}).get("samples_per_s")
    print(
        f"\ndevice: {device}; {args.steps} optimizer steps x GA {args.grad_accum} x batch 1 per variant"
    )
    print(f"{'variant':<13} {'samples/s':>10} {'vs baseline':>12} {'vs 1.859':>9} {'peak GiB':>9}")
    for name, res in results.items():
        sps = res["samples_per_s"]
        ratio = f"{sps / base:.2f}x" if base else "-"
        print(
            f"{name:<13} {sps:>10.3f} {ratio:>12} {sps / PUBLISHED_SAMPLES_PER_S:>8.2f}x "
            f"{res['peak_gpu_gib'] if res['peak_gpu_gib'] is not None else '-':>9}"
        )
    total = round(time.time() - started, 1)
    print(f"total {total} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": device,
                    "tiny": args.tiny,
                    "steps": args.steps,
                    "grad_accum": args.grad_accum,
                    "published_samples_per_s": PUBLISHED_SAMPLES_PER_S,
                    "results": results,
                    "total_s": total,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
