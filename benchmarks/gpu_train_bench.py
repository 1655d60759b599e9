"""Training throughput: a plain HF Trainer baseline vs kprep's training path, and
kprep's input pipeline on the CPU alone (``--data-only``).

On a GPU (default) it builds a random E4B-shaped Gemma 4 directly on the device
in bf16 (42 text layers, hidden 2560, FFN 10240, 8 heads / 2 KV, head_dim 256,
global head_dim 512, window 512, 18 KV-shared layers, per-layer input 256,
vocab 262144; vision 16 layers, hidden 768; no audio tower, which the recipe
never runs) and trains each variant for ``--steps`` optimizer steps of the seed
recipe (effective batch 8, LoRA r=16 on the text layers, paged_adamw_8bit,
bf16, gradient checkpointing) over 3 epochs of synthetic 4-frame samples of
340x256 frames (``steps x 8 / 3`` distinct samples, so a cache can be reused
as in the recipe's 3 epochs). Variants, side by side (samples/s including any
cache build, and peak GPU memory):

- ``baseline``: plain HF Trainer + PEFT, 1 x 8, the model's own loss over
  full-vocab logits, a tutorial-style collator (processor on the whole chat text);
- ``kprep``: ``trainer.train.train`` at the same recipe, 1 x 8, no vision cache;
- ``kprep_cache``: + the frozen-vision cache (memory);
- ``kprep_8x1``: + micro-batch 8 x accumulation 1 (same updates);
- ``kprep_auto``: + ``--auto-batch`` (largest micro-batch that fits);
- ``kprep_70``: ``kprep`` at ``--max-soft-tokens 70``;
- ``kprep_qlora``: ``--load-in-4bit`` (NF4 base from a saved copy of the
  random model) + cache, 1 x 8;
- ``kprep_zero2``: ``kprep`` through DeepSpeed ZeRO-2 (last: it leaves a
  process group behind).

``--data-only`` times the input pipeline with no model: JPEG decoding, the
E4B processor (280 soft tokens per frame) and collation, in the main process
the plain way (float pixels) and the way ``kprep train`` feeds a GPU
(``--workers`` DataLoader workers, prefetch 4, the identical fast image path
with uint8 pixels, ``trainer/pixels.py``), one sample per
batch as in the recipe, and reports samples/s against the published 1.859.

``--tiny`` runs the same code on a CPU with the packaged tiny model (for the
test suite: proves the script works end to end; its numbers mean nothing for
GPUs). Usage::

    python benchmarks/gpu_train_bench.py                 # GPU, 30 steps each
    python benchmarks/gpu_train_bench.py --data-only     # CPU input pipeline
    python benchmarks/gpu_train_bench.py --tiny --steps 3 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

PUBLISHED_SAMPLES_PER_S = 1.859
EPOCHS = 3
VARIANTS = (
    "baseline",
    "kprep",
    "kprep_cache",
    "kprep_8x1",
    "kprep_auto",
    "kprep_70",
    "kprep_qlora",
    "kprep_zero2",
)
# kprep settings per variant (on top of the recipe: 1 x grad-accum, 280 soft tokens).
KPREP_VARIANTS: dict[str, dict] = {
    "kprep": {"vision_cache": "off"},
    "kprep_cache": {"vision_cache": "memory"},
    "kprep_8x1": {"vision_cache": "memory", "micro": "all"},
    "kprep_auto": {"vision_cache": "memory", "auto_batch": True},
    "kprep_70": {"vision_cache": "off", "max_soft_tokens": 70},
    "kprep_qlora": {"vision_cache": "memory", "load_in_4bit": True},
    "kprep_zero2": {"vision_cache": "off", "deepspeed": "zero2"},
}


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


def write_frames_manifest(folder: Path, *, num_samples: int, width: int, height: int) -> Path:
    """A seed-format manifest of ``num_samples`` 4-frame samples of textured JPEG frames
    (Kinetics frames are 340x256); the answers alternate between two labels."""
    import numpy as np
    from PIL import Image

    from kinetics_prep.schema import DEFAULT_PROMPT

    rng = np.random.default_rng(0)
    entries = []
    for i in range(num_samples):
        content = []
        for f in range(4):
            rel = f"frames/clip{i:05d}/frame_{f + 1}.jpg"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            base = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
            noise = rng.normal(0, 25, size=(height, width, 3))
            img = np.clip(base + noise + 10 * f, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / rel, quality=90)
            content.append({"type": "image", "image": rel})
        content.append({"type": "text", "text": DEFAULT_PROMPT})
        label = ("tai chi", "abseiling")[i % 2]
        entries.append(
            {
                "id": f"clip{i:05d}",
                "messages": [
                    {"role": "user", "content": content},
                    {
                        "role": "assistant",
                        "content": [{"type": "text", "text": f"The video shows {label}."}],
                    },
                ],
            }
        )
    path = folder / "manifest.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


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


def saved_checkpoint(folder: Path, processor_dir: Path, *, tiny: bool) -> Path:
    """A checkpoint folder (weights + processor) for --load-in-4bit, which loads from disk."""
    from trainer.tiny import tiny_model_path

    if tiny:
        return tiny_model_path()
    if not (folder / "config.json").is_file():
        model = build_model(tiny=False)
        model.save_pretrained(str(folder))
        del model
        gc.collect()
        for f in processor_dir.iterdir():
            shutil.copy(f, folder / f.name)
    return folder


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
    samples = args.steps * args.grad_accum
    return {
        "samples_per_s": samples / metrics["train_runtime"],
        "train_loss": metrics["train_loss"],
        "micro_batch": 1,
    }


def run_kprep(model, model_id: Path, manifest: Path, out: Path, args, **settings) -> dict:
    from trainer.config import TrainConfig
    from trainer.train import train

    micro = args.grad_accum if settings.pop("micro", None) == "all" else 1
    if not args.tiny and "max_soft_tokens" not in settings:
        settings["max_soft_tokens"] = 280
    cfg = TrainConfig(
        model_id=str(model_id),
        data_path=str(manifest),
        output_dir=str(out),
        max_steps=args.steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=args.grad_accum // micro,
        save_steps=10**6,
        logging_steps=10,
        torch_threads=1 if args.tiny else None,
        dataloader_num_workers=0 if args.tiny else None,
        **settings,
    )
    summary = train(cfg, model=model)
    eff = summary["effective"]
    cache_s = eff["vision_cache"].get("build_seconds", 0.0) or 0.0
    samples = args.steps * args.grad_accum
    return {
        # End to end: the cache build counts against the variant that uses it.
        "samples_per_s": samples / (summary["train_runtime_s"] + cache_s),
        "train_loss": summary["train_loss"],
        "lora_modules": summary["lora_modules"],
        "trainable_params": summary["trainable_params"],
        "micro_batch": eff["micro_batch"],
        "vision_cache": eff["vision_cache"]["mode"],
        "cache_build_s": cache_s,
    }


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its reaped children."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def data_only(args) -> dict:
    """Input-pipeline samples/s on the CPU: plain (main process, float pixels) vs kprep's
    DataLoader (workers, prefetch, uint8 pixels)."""
    import torch

    from trainer.collator import VisionChatCollator
    from trainer.data import ConversationDataset, load_samples
    from trainer.model import load_processor
    from trainer.pixels import fast_processor

    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory(prefix="kprep-data-bench-") as tmp:
        tmp_path = Path(tmp)
        processor_dir = build_processor(tmp_path / "processor", tiny=False)
        manifest = write_frames_manifest(
            tmp_path / "data", num_samples=args.samples, width=340, height=256
        )
        processor = load_processor(str(processor_dir))
        dataset = ConversationDataset(load_samples(manifest))
        setups = {
            "plain (main process, float pixels)": (0, False),
            f"kprep ({args.workers} workers, prefetch 4, fast uint8 pixels)": (args.workers, True),
        }
        for name, (workers, uint8) in setups.items():
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=1,
                shuffle=True,
                num_workers=workers,
                prefetch_factor=4 if workers else None,
                collate_fn=VisionChatCollator(
                    fast_processor(processor) if uint8 else processor, uint8_pixels=uint8
                ),
            )
            cpu0 = _cpu_seconds()
            t0 = time.perf_counter()
            n = 0
            first = None
            for batch in loader:
                n += len(batch["input_ids"])
                if first is None:
                    first = time.perf_counter() - t0
            seconds = time.perf_counter() - t0
            del loader  # workers exit, so their CPU time is counted
            cpu = _cpu_seconds() - cpu0
            results[name] = {
                # Everything from creating the iterator (worker start-up included).
                "samples_per_s": round(n / seconds, 2),
                "vs_published": round(n / seconds / PUBLISHED_SAMPLES_PER_S, 2),
                # Once the first batch is out: the rate a long epoch runs at.
                "steady_samples_per_s": round((n - 1) / (seconds - first), 2) if n > 1 else None,
                "first_batch_s": round(first, 2),
                # CPU time of this process and its workers per sample: what the pipeline
                # costs, whatever else shares the machine. On idle cores it runs at
                # cores / this, where cores = 1 for the main process alone, else
                # min(workers, 2) (the 2-core box).
                "cpu_s_per_sample": round(cpu / n, 4),
                "idle_cores": max(1, min(workers, 2)),
                "samples_per_s_on_idle_cores": round(max(1, min(workers, 2)) * n / cpu, 2),
                "seconds": round(seconds, 2),
                "pixel_bytes_per_sample": int(
                    batch["pixel_values"].numel() * batch["pixel_values"].element_size()
                ),
            }
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    return results


def write_report(args, device: str, results: dict, seconds: float, *, complete: bool) -> None:
    report = {
        "device": device,
        "tiny": args.tiny,
        "steps": args.steps,
        "grad_accum": args.grad_accum,
        "epochs": EPOCHS,
        "published_samples_per_s": PUBLISHED_SAMPLES_PER_S,
        "complete": complete,
        "results": results,
        "total_s": round(seconds, 1),
    }
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.json)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="CPU, packaged tiny model (a smoke run)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps per variant (GPU 30, tiny 3)"
    )
    parser.add_argument(
        "--grad-accum", type=int, default=None, help="gradient accumulation (GPU 8, tiny 2)"
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--data-only", action="store_true", help="time the CPU input pipeline only (no model)"
    )
    parser.add_argument("--samples", type=int, default=96, help="--data-only: samples to load")
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2,
        help="--data-only: DataLoader workers for kprep's pipeline (default: the CPUs)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    if args.data_only:
        started = time.time()
        results = data_only(args)
        report = {
            "mode": "data-only",
            "cpus": args.workers,
            "samples": args.samples,
            "published_samples_per_s": PUBLISHED_SAMPLES_PER_S,
            "results": results,
            "total_s": round(time.time() - started, 1),
        }
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0

    args.steps = args.steps or (3 if args.tiny else 30)
    args.grad_accum = args.grad_accum or (2 if args.tiny else 8)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}; choose from {VARIANTS}")
    variants.sort(key=VARIANTS.index)  # ZeRO-2 last

    import torch

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
        n = max(1, args.steps * args.grad_accum // EPOCHS)
        if args.tiny:
            manifest = write_frames_manifest(tmp_path / "data", num_samples=n, width=64, height=48)
        else:
            manifest = write_frames_manifest(
                tmp_path / "data", num_samples=n, width=340, height=256
            )
        for variant in variants:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            t0 = time.time()
            out = tmp_path / variant
            settings = dict(KPREP_VARIANTS.get(variant, {}))
            model = None
            model_id = processor_dir
            if settings.get("load_in_4bit"):
                model_id = saved_checkpoint(
                    tmp_path / "e4b-checkpoint", processor_dir, tiny=args.tiny
                )
            else:
                model = build_model(tiny=args.tiny)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            if variant == "baseline":
                res = run_baseline(model, processor_dir, manifest, out, args)
            else:
                res = run_kprep(model, model_id, manifest, out, args, **settings)
            res["peak_gpu_gib"] = (
                round(torch.cuda.max_memory_allocated() / 2**30, 2)
                if torch.cuda.is_available()
                else None
            )
            res["wall_s"] = round(time.time() - t0, 1)
            results[variant] = res
            print(f"{variant}: {json.dumps(res)}", flush=True)
            if args.json:  # after every variant, so a run cut short still leaves figures
                write_report(args, device, results, time.time() - started, complete=False)
            del model
            gc.collect()

    base = results.get("baseline", {}).get("samples_per_s")
    print(
        f"\ndevice: {device}; {args.steps} optimizer steps x effective batch {args.grad_accum} "
        f"per variant ({EPOCHS} epochs of {n} samples)"
    )
    print(f"{'variant':<13} {'samples/s':>10} {'vs baseline':>12} {'vs 1.859':>9} {'peak GiB':>9}")
    for name, res in results.items():
        sps = res["samples_per_s"]
        res["vs_baseline"] = round(sps / base, 3) if base else None
        res["vs_published"] = round(sps / PUBLISHED_SAMPLES_PER_S, 3)
        ratio = f"{sps / base:.2f}x" if base else "-"
        print(
            f"{name:<13} {sps:>10.3f} {ratio:>12} {sps / PUBLISHED_SAMPLES_PER_S:>8.2f}x "
            f"{res['peak_gpu_gib'] if res['peak_gpu_gib'] is not None else '-':>9}"
        )
    total = round(time.time() - started, 1)
    print(f"total {total} s")
    if args.json:
        write_report(args, device, results, total, complete=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
