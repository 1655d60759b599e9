"""The training run: HF Trainer (optionally DeepSpeed ZeRO-2) over the kprep dataset.

``train(config) -> summary`` is the one entry point (the CLI and the demo call
it). Outputs in ``config.output_dir``:

- ``adapter_model.safetensors`` + ``adapter_config.json`` (LoRA; loads with
  ``PeftModel.from_pretrained(base, output_dir)``), or the full model with
  ``--no-use-lora``;
- the processor files (chat template, tokenizer, image/video processors);
- ``training_summary.json``: versions, recipe, runtime, samples/s, steps,
  final loss, data hash, LoRA module count;
- ``checkpoint-N/`` every ``save_steps`` (optimizer, scheduler, RNG, step),
  which ``--resume`` continues from.

The logged loss is the mean per-token loss over each optimizer step's whole
accumulated batch (see ``trainer.collator.mean_token_loss``), identical in
scale for any gradient-accumulation setting.

Multi-GPU / multi-node: ``launcher_command`` builds the ``deepspeed`` launcher
line that runs this module once per GPU (``python -m trainer.train --config
resolved.json``); only rank 0 logs and writes the summary.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from kinetics_prep.fileio import atomic_write_text
from kinetics_prep.schema import TRAIN_CONFIG_NAME, TRAINING_SUMMARY_NAME
from trainer.config import NO_DEEPSPEED, ConfigError, TrainConfig, packaged_config

logger = logging.getLogger(__name__)

LOSS_DEFINITION = (
    "mean next-token cross-entropy per trained token over each optimizer step's "
    "accumulated batch (all micro-batches, all processes)"
)


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)


def resolve_deepspeed(value: str | None, *, max_grad_norm: float) -> dict[str, Any] | None:
    """The DeepSpeed config dict for ``--deepspeed`` (None: no DeepSpeed).

    ``"zero2"`` / ``""`` / ``"default"`` mean the packaged ZeRO-2 config. Its
    ``gradient_clipping`` is set from ``--max-grad-norm`` so the two never disagree.
    """
    if value is None or value.lower() in NO_DEEPSPEED:
        return None
    path = packaged_config("zero2.json") if value in ("", "zero2", "default") else Path(value)
    if not path.is_file():
        raise ConfigError(
            f"--deepspeed {value!r}: no such config file; pass a JSON file or 'zero2' for the packaged one"
        )
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"--deepspeed {path} is not valid JSON: {exc}") from exc
    ds["gradient_clipping"] = max_grad_norm
    return ds


def launcher_command(
    config_path: str | Path,
    *,
    num_gpus: int | None = None,
    hostfile: str | None = None,
    master_port: int | None = None,
    python: str | None = None,
) -> list[str]:
    """The deepspeed launcher command that runs ``train`` on every GPU (pure function).

    >>> launcher_command("out/train_config.json", num_gpus=2)[:3]
    ['deepspeed', '--num_gpus', '2']
    """
    if num_gpus is None and hostfile is None:
        raise ConfigError("launcher_command needs --num-gpus or --hostfile")
    cmd = ["deepspeed"]
    if hostfile is not None:
        cmd += ["--hostfile", str(hostfile)]
    if num_gpus is not None:
        cmd += ["--num_gpus", str(num_gpus)]
    if master_port is not None:
        cmd += ["--master_port", str(master_port)]
    # --module: each worker runs `python -m trainer.train`, so the package's own
    # folder never lands on sys.path (its config.py / data.py would shadow others).
    cmd += ["--module", "trainer.train", "--config", str(config_path)]
    return cmd


def check_output_dir(config: TrainConfig) -> None:
    """Refuse an ``--output-dir`` that already holds anything but kprep's own bookkeeping.

    Training there would overwrite the earlier run's adapter and rotate away
    its checkpoints (or overwrite a user's files: PEFT writes README.md), so
    only an absent or empty folder is used, or one with a run to ``--resume``.
    Launched ranks other than 0 skip the check (rank 0 may already be writing).
    """
    from kinetics_prep.outputs import MARKER_NAME, mark_folder

    if int(os.environ.get("RANK", "0") or 0) > 0:
        return
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {out} is a file: pass a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    entries = [e for e in entries if e not in (MARKER_NAME, TRAIN_CONFIG_NAME)]
    if entries and not config.resume:
        raise ConfigError(
            f"--output-dir {out} is not empty ({len(entries)} entries, e.g. {entries[0]!r}); "
            "kprep train never overwrites a folder: pass a new --output-dir, or --resume to "
            "continue the run in it"
        )
    out.mkdir(parents=True, exist_ok=True)
    mark_folder(out, command="train")


def write_resolved_config(config: TrainConfig) -> Path:
    """Write the full config (with launcher fields cleared) for the launched workers."""
    check_output_dir(config)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = config.to_dict()
    data.update(num_gpus=None, hostfile=None, local_rank=-1)
    if data.get("deepspeed") is None:
        data["deepspeed"] = "zero2"  # multi-GPU always goes through DeepSpeed
    path = out / TRAIN_CONFIG_NAME
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in (
        "kprep",
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "deepspeed",
        "bitsandbytes",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _ensure_single_process_dist_env() -> list[str]:
    """DeepSpeed needs a process group even for one process (gloo on CPU).

    Returns the variables it set, for ``_end_single_process_dist``.
    """
    wanted = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(29500 + os.getpid() % 1000),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
    }
    added = [k for k in wanted if k not in os.environ]
    # accelerate / transformers also leave ACCELERATE_USE_DEEPSPEED=true and friends.
    added += [k for k in ("ACCELERATE_USE_DEEPSPEED",) if k not in os.environ]
    for key in added:
        if key in wanted:
            os.environ[key] = wanted[key]
    return added


def _end_single_process_dist(added: list[str]) -> None:
    """Undo a single-process DeepSpeed setup so a later run in the same process
    (tests, the benchmark, the demo) starts clean instead of inheriting DeepSpeed."""
    import torch.distributed as dist
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    AcceleratorState._reset_state(reset_partial_state=True)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key in added:
        os.environ.pop(key, None)


def _setup_logging() -> None:
    import transformers

    if _rank() != 0:
        logging.getLogger("trainer").setLevel(logging.WARNING)
        transformers.logging.set_verbosity_error()


def train(config: TrainConfig, *, model: Any = None) -> dict[str, Any]:
    """Fine-tune per ``config``; return the summary dict (also written to training_summary.json).

    ``model`` (optional) is an already built ``Gemma4ForConditionalGeneration`` to
    train instead of loading ``config.model_id`` (the processor still comes from
    ``config.model_id``); the GPU benchmark uses it for random E4B-shaped models.
    """
    import torch

    if config.data_path is None:
        raise ConfigError("--data-path is required: the manifest JSON or Arrow folder to train on")
    check_output_dir(config)
    _setup_logging()
    started = time.time()
    threads_before = torch.get_num_threads()
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    cuda = torch.cuda.is_available()
    bf16 = config.bf16
    if bf16 and not cuda:
        logger.info("note: no CUDA device, training in float32 on the CPU (bf16 switched off)")
        bf16 = False
    deepspeed = resolve_deepspeed(config.deepspeed, max_grad_norm=config.max_grad_norm)
    single_process_ds = deepspeed is not None and "LOCAL_RANK" not in os.environ
    added_env = _ensure_single_process_dist_env() if deepspeed is not None else []
    try:
        return _train(config, model, deepspeed=deepspeed, bf16=bf16, cuda=cuda, started=started)
    finally:
        torch.set_num_threads(threads_before)
        if single_process_ds:
            _end_single_process_dist(added_env)


def _dataset(config: TrainConfig):
    """(samples, lazily loading dataset) of the training data."""
    from trainer.data import ConversationDataset, load_samples

    samples = load_samples(
        config.data_path,
        image_folder=config.image_folder,
        split=config.split,
        max_samples=config.max_samples,
    )
    dataset = ConversationDataset(
        samples,
        num_frames=config.num_frames,
        sampling=config.frame_sampling,
        decoder=config.decoder,
    )
    return samples, dataset


def _resume_checkpoint(config: TrainConfig) -> str | None:
    """The newest complete ``checkpoint-N`` in the output folder with ``--resume``, else None.

    A checkpoint an interrupted save left incomplete is skipped with a note
    (``trainer.checkpoints``), so the run continues from the one before it.
    """
    from trainer.checkpoints import newest_complete

    if not config.resume:
        return None
    output_dir = Path(config.output_dir)
    newest, skipped = newest_complete(output_dir)
    for folder, missing in skipped:
        logger.warning(
            "--resume: skipping %s, an interrupted save (no %s)", folder.name, ", ".join(missing)
        )
    resume_from = str(newest) if newest is not None else None
    if resume_from is None:
        logger.warning("--resume: no checkpoint-* in %s, starting from step 0", output_dir)
    else:
        logger.info("resuming from %s", resume_from)
    return resume_from


def total_steps(
    *,
    max_steps: int,
    num_samples: int,
    batch_size: int,
    grad_accum: int,
    world_size: int,
    epochs: float,
) -> int:
    """Optimizer steps of a run (as the HF Trainer counts them, to within its rounding)."""
    if max_steps > 0:
        return max_steps
    batches = math.ceil(num_samples / max(batch_size * world_size, 1))
    per_epoch = max(batches // grad_accum + int(batches % grad_accum > 0), 1)
    return max(math.ceil(epochs * per_epoch), 1)


def warmup_steps(*, warmup_ratio: float, total: int) -> int:
    """Warmup steps for ``warmup_ratio`` of ``total``, leaving at least one step at a non-zero rate.

    The HF schedule runs step ``s`` of ``W`` warmup steps at ``s / W`` of the
    peak rate, so step 0 trains at 0. Rounding the ratio up (as transformers
    does) gives ``W = 1`` for any run under 34 steps at 0.03, and a one-step
    run (``--max-steps 1``) would train nothing. Capping ``W`` at ``total - 1``
    keeps the last step at a non-zero rate:

    >>> warmup_steps(warmup_ratio=0.03, total=1), warmup_steps(warmup_ratio=0.03, total=2)
    (0, 1)
    >>> warmup_steps(warmup_ratio=0.03, total=1000)
    30
    """
    if warmup_ratio <= 0 or total <= 1:
        return 0
    return min(math.ceil(warmup_ratio * total), total - 1)


def trainable_fingerprint(model) -> dict[str, tuple[float, float]]:
    """(sum, sum of squares) in float64 of every trainable tensor: cheap, and any update moves it."""
    import torch

    out = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                data = param.detach().double()
                out[name] = (float(data.sum()), float(data.pow(2).sum()))
    return out


def _training_arguments(
    config: TrainConfig, *, deepspeed, bf16: bool, cuda: bool, micro: int, accum: int, workers: int,
    warmup: int | None = None,
):
    """``micro`` x ``accum``: the micro-batch split (``--auto-batch`` may change it);
    ``workers``: DataLoader workers (``trainer.workers``)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(config.output_dir),
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        # whole steps (see warmup_steps); transformers 5 reads a value < 1 as a ratio
        warmup_steps=config.warmup_ratio if warmup is None else warmup,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=config.optim,
        bf16=bf16,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to=config.report_to,
        seed=config.seed,
        dataloader_num_workers=workers,
        dataloader_prefetch_factor=config.dataloader_prefetch_factor if workers else None,
        dataloader_pin_memory=cuda,
        remove_unused_columns=False,
        deepspeed=deepspeed,
        use_cpu=not cuda,
        disable_tqdm=True,
    )


def _train(config: TrainConfig, model: Any, *, deepspeed, bf16: bool, cuda: bool, started: float):
    from transformers import set_seed

    from trainer import auto_batch, vision_cache
    from trainer.card import card_facts, copy_label_map, write_card
    from trainer.collator import VisionChatCollator, mean_token_loss
    from trainer.data import data_fingerprint
    from trainer.hf_trainer import KprepTrainer, LogLastStep
    from trainer.model import load_model, load_processor, parameter_groups
    from trainer.pixels import fast_processor
    from trainer.workers import dataloader_workers

    samples, dataset = _dataset(config)
    processor = load_processor(config.model_id, max_soft_tokens=config.max_soft_tokens)
    # Workers ship uint8 patches from the fast (identical) image path; see trainer/pixels.py.
    collator = VisionChatCollator(
        fast_processor(processor), max_soft_tokens=config.max_soft_tokens, uint8_pixels=True
    )
    # LoRA: the frozen base is stored in bf16 (PEFT keeps the adapters in fp32).
    # Full fine-tuning keeps fp32 master weights; autocast computes in bf16.
    weights = "bfloat16" if (bf16 and config.use_lora) else "float32"
    set_seed(config.seed)  # --seed covers the LoRA initialisation too, not only the Trainer
    model, info = load_model(config, device_dtype=weights, model=model)
    group_lrs = {g["name"]: g["lr"] for g in parameter_groups(model, config)}
    logger.info("optimizer parameter groups (learning rates): %s", group_lrs)

    # Speed (tests/test_speed.py: same losses and updates): the frozen-vision cache,
    # the micro-batch split, DataLoader workers.
    workers = dataloader_workers(config.dataloader_num_workers, cuda=cuda)
    cache = vision_cache.prepare(
        config, model, dataset, collator, data_sha256=data_fingerprint(config.data_path),
        cuda=cuda, bf16=bf16, num_workers=workers,
    )  # fmt: skip
    if cache is not None:
        dataset, collator = cache.dataset, cache.collator
    micro, accum, batch_info = auto_batch.choose(
        config, model, dataset, collator, cuda=cuda, bf16=bf16
    )

    resume_from = _resume_checkpoint(config)
    steps = total_steps(
        max_steps=config.max_steps,
        num_samples=len(dataset),
        batch_size=micro,
        grad_accum=accum,
        world_size=int(os.environ.get("WORLD_SIZE", "1") or 1),
        epochs=config.num_train_epochs,
    )
    warmup = warmup_steps(warmup_ratio=config.warmup_ratio, total=steps)
    args = _training_arguments(
        config, deepspeed=deepspeed, bf16=bf16, cuda=cuda, micro=micro, accum=accum,
        workers=workers, warmup=warmup,
    )  # fmt: skip
    before = trainable_fingerprint(model)
    trainer = KprepTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        compute_loss_func=mean_token_loss,
        callbacks=[LogLastStep()],
        kprep_config=config,
    )
    result = trainer.train(resume_from_checkpoint=resume_from)
    after = trainable_fingerprint(model)
    moved = sum(1 for name, value in before.items() if after.get(name) != value)

    output_dir = Path(config.output_dir)
    trainer.save_model(str(output_dir))
    if not trainer.is_world_process_zero():
        return {}
    processor.save_pretrained(str(output_dir))
    summary = _summary(
        config,
        trainer,
        dict(result.metrics),
        info=info,
        effective={
            "bf16": bf16,
            "device": "cuda" if cuda else "cpu",
            "world_size": int(args.world_size),
            "deepspeed_zero_stage": (deepspeed or {}).get("zero_optimization", {}).get("stage"),
            "optimizer": type(trainer.optimizer).__name__,
            "optimizer_class": _innermost_optimizer(trainer.optimizer),
            "param_groups": group_lrs,
            "load_in_4bit": config.load_in_4bit,
            "vision_cache": cache.info if cache is not None else {"mode": "off"},
            "dataloader_num_workers": workers,
            **batch_info,
        },
        num_samples=len(samples),
        sample_ids=[str(sample.id) for sample in samples],
        resumed_from=resume_from,
        started=started,
    )
    summary.update(card_facts(config, samples=samples, model=model, deepspeed=deepspeed, cuda=cuda))
    summary["warmup_steps"] = warmup
    summary["weights_changed"] = moved > 0
    summary["trainable_tensors_changed"] = f"{moved}/{len(before)}"
    if not moved:
        logger.warning(
            "no trainable weight changed in %d steps: check --learning-rate, --warmup-ratio "
            "and --max-steps",
            summary["global_step"],
        )
    summary["loss_curve"] = _loss_curve(trainer.state.log_history, output_dir)
    atomic_write_text(
        output_dir / TRAINING_SUMMARY_NAME, json.dumps(summary, indent=2, default=str) + "\n"
    )
    copy_label_map(summary, output_dir)
    write_card(output_dir, summary=summary)  # replaces PEFT's placeholder README.md
    logger.info(
        "done: %d steps, final loss %s, %.3f samples/s -> %s",
        summary["global_step"],
        summary["final_loss"],
        summary["train_samples_per_second"] or 0.0,
        output_dir,
    )
    return summary


def _loss_curve(log_history, output_dir: Path) -> str | None:
    """Draw ``loss_curve.png`` beside the summary; its file name, or None without matplotlib."""
    try:
        from trainer.plots import LOSS_CURVE_NAME, loss_curve
    except ImportError as exc:  # pragma: no cover - matplotlib is in the train extra
        logger.warning("no loss curve (%s): pip install matplotlib", exc)
        return None
    loss_curve(log_history, output_dir / LOSS_CURVE_NAME, title=f"kprep train: {output_dir.name}")
    return LOSS_CURVE_NAME


def _summary(
    config: TrainConfig,
    trainer,
    metrics: dict[str, Any],
    *,
    info,
    effective: dict[str, Any],
    num_samples: int,
    sample_ids: list[str] | None = None,
    resumed_from: str | None,
    started: float,
) -> dict[str, Any]:
    """training_summary.json: versions, recipe, what ran, data hash, runtime and losses."""
    from trainer.data import data_fingerprint

    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "kprep_summary_version": 1,
        "model_id": config.model_id,
        "output_dir": str(config.output_dir),
        "adapter": config.use_lora,
        "versions": _versions(),
        "recipe": config.to_dict(),
        "effective": effective,
        "data": {
            "path": str(config.data_path),
            "sha256": data_fingerprint(config.data_path),
            "samples": num_samples,
            "split": config.split,
            # kprep eval warns when it scores any of these (not a held-out evaluation)
            "sample_ids": sample_ids,
        },
        "lora_modules": info.lora_modules,
        "trainable_params": info.trainable_params,
        "trainable_by_part": info.trainable_by_part,
        "total_params": info.total_params,
        "global_step": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "resumed_from": resumed_from,
        "final_loss": losses[-1] if losses else None,
        "train_loss": metrics.get("train_loss"),
        "loss_definition": LOSS_DEFINITION,
        "log_history": trainer.state.log_history,
        "train_runtime_s": metrics.get("train_runtime"),
        "train_samples_per_second": metrics.get("train_samples_per_second"),
        "train_steps_per_second": metrics.get("train_steps_per_second"),
        "wall_seconds": round(time.time() - started, 3),
    }


def _innermost_optimizer(optimizer) -> str:
    """Class name of the real optimizer under accelerate / DeepSpeed wrappers."""
    for _ in range(4):
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    return f"{type(optimizer).__module__}.{type(optimizer).__name__}"


def _main(argv: list[str] | None = None) -> int:
    """Worker entry for the deepspeed launcher: ``-m trainer.train --config resolved.json``."""
    import argparse

    parser = argparse.ArgumentParser(
        description="kprep train worker (started by the deepspeed launcher)"
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=-1)
    ns = parser.parse_args(argv)
    if ns.local_rank >= 0:
        os.environ.setdefault("LOCAL_RANK", str(ns.local_rank))
    logging.basicConfig(level=logging.INFO if _rank() == 0 else logging.WARNING)
    train(TrainConfig.from_sources(config_file=ns.config))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
