"""Merge a LoRA adapter into its base model and write a model card.

``merge(adapter, output)`` loads the base named in the adapter's
``training_summary.json`` (or ``model_id``), applies the adapter with PEFT's
``merge_and_unload``, and saves plain safetensors that load with
``Gemma4ForConditionalGeneration.from_pretrained(output)``, plus the processor.
A fully fine-tuned folder (``kprep train --no-use-lora``) is saved as it is.

The card (``README.md`` with YAML metadata) has what the published card had —
base model, recipe, data, runtime, samples/s — and what it lacked: the
held-out evaluation table (with the frame-order control) when an eval report
from ``kprep eval`` is given, and the exact final loss definition.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from trainer.evaluate import EvalError, is_adapter_dir, markdown_table

logger = logging.getLogger(__name__)

SUMMARY_NAME = "training_summary.json"


def _yaml_scalar(value: Any) -> str:
    """A YAML scalar via JSON (a JSON string/number/bool is valid YAML)."""
    return json.dumps(value)


def _metric_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for run in report.get("runs", []):
        if run.get("model") == "base" and report.get("adapter"):
            continue
        order = run["frame_order"]
        suffix = "" if order == "normal" else f", frames {order}"
        if "generation" in run:
            rows.append(
                {"name": f"top-1 accuracy (generation{suffix})", "value": run["generation"]["top1"]}
            )
        if "ranking" in run:
            k = run["ranking"]["top_k"]
            rows.append(
                {"name": f"top-1 accuracy (ranking{suffix})", "value": run["ranking"]["top1"]}
            )
            rows.append(
                {"name": f"top-{k} accuracy (ranking{suffix})", "value": run["ranking"][f"top{k}"]}
            )
    return rows


def model_card(
    summary: dict[str, Any],
    *,
    base_model: str,
    name: str,
    eval_report: dict[str, Any] | None = None,
    merged: bool = True,
) -> str:
    """README.md text: YAML metadata, then recipe, data, runtime and evaluation sections."""
    recipe = summary.get("recipe") or {}
    data = summary.get("data") or {}
    effective = summary.get("effective") or {}
    versions = summary.get("versions") or {}
    use_lora = summary.get("adapter", recipe.get("use_lora", True))
    lines = ["---"]
    lines.append(f"base_model: {_yaml_scalar(base_model)}")
    lines.append("library_name: transformers")
    lines.append("pipeline_tag: image-text-to-text")
    lines.append("tags:")
    for tag in ["gemma4", "kinetics", "action-recognition", "video", "kprep"] + (
        ["lora"] if use_lora else []
    ):
        lines.append(f"- {tag}")
    if eval_report:
        lines.append("model-index:")
        lines.append(f"- name: {_yaml_scalar(name)}")
        lines.append("  results:")
        lines.append("  - task:")
        lines.append("      type: video-classification")
        lines.append("      name: Action recognition")
        lines.append("    dataset:")
        lines.append(
            f"      name: {_yaml_scalar(Path(str(eval_report.get('data_path', 'held-out'))).name)}"
        )
        lines.append("      type: kinetics")
        lines.append(f"      split: {_yaml_scalar(eval_report.get('split', 'validation'))}")
        lines.append("    metrics:")
        for row in _metric_rows(eval_report):
            lines.append("    - type: accuracy")
            lines.append(f"      name: {_yaml_scalar(row['name'])}")
            lines.append(f"      value: {round(float(row['value']), 4)}")
    lines.append("---")
    lines.append("")
    lines.append(f"# {name}")
    lines.append("")
    kind = "LoRA fine-tune" if use_lora else "full fine-tune of the text model"
    lines.append(
        f"A {kind} of [{base_model}]({base_model if '/' in base_model and not Path(base_model).exists() else ''}) "
        "that names the action in a short sequence of video frames, trained with "
        "[kprep](https://github.com/) on a Kinetics-format dataset."
        + (" The adapter is merged into the weights." if merged and use_lora else "")
    )
    lines.append("")
    lines.append("## Usage")
    lines.append("")
    lines.append("```python")
    lines.append("from transformers import AutoProcessor, Gemma4ForConditionalGeneration")
    lines.append("")
    lines.append(f'model = Gemma4ForConditionalGeneration.from_pretrained("{name}")')
    lines.append(f'processor = AutoProcessor.from_pretrained("{name}")')
    lines.append("```")
    lines.append("")
    lines.append(
        f"or from the command line: `kprep predict CLIP.mp4 --model-id {name} "
        "--label-map label_map.json` (the training dataset's label map, written by "
        "`kprep build-manifest`)."
    )
    lines.append("")
    lines.append("## Training recipe")
    lines.append("")
    lines.append("| setting | value |")
    lines.append("|---|---|")
    recipe_rows = [
        ("method", "LoRA" if use_lora else "full fine-tuning (text model)"),
        (
            "LoRA r / alpha / dropout",
            f"{recipe.get('lora_r')} / {recipe.get('lora_alpha')} / {recipe.get('lora_dropout')}"
            if use_lora
            else None,
        ),
        ("LoRA modules", summary.get("lora_modules") if use_lora else None),
        ("trainable parameters", summary.get("trainable_params")),
        ("trainable by part", summary.get("trainable_by_part")),
        ("epochs / max steps", f"{recipe.get('num_train_epochs')} / {recipe.get('max_steps')}"),
        (
            "batch per device x grad. accumulation",
            f"{recipe.get('per_device_train_batch_size')} x {recipe.get('gradient_accumulation_steps')}",
        ),
        (
            "learning rate (text / embeddings / vision / projector)",
            f"{recipe.get('learning_rate')} / {_embedding_lr_text(recipe, use_lora)} / "
            f"{recipe.get('image_encoder_lr')} / {recipe.get('projector_lr')}",
        ),
        ("schedule, warmup", f"{recipe.get('lr_scheduler_type')}, {recipe.get('warmup_ratio')}"),
        ("optimizer", effective.get("optimizer") or recipe.get("optim")),
        ("weight decay, grad clip", f"{recipe.get('weight_decay')}, {recipe.get('max_grad_norm')}"),
        ("precision", "bf16" if effective.get("bf16") else "fp32"),
        ("vision soft tokens per frame", recipe.get("max_soft_tokens") or "processor default"),
        ("DeepSpeed ZeRO stage", effective.get("deepspeed_zero_stage")),
        ("seed", recipe.get("seed")),
    ]
    for key, value in recipe_rows:
        if value is not None:
            lines.append(f"| {key} | {value} |")
    lines.append("")
    lines.append("## Data")
    lines.append("")
    lines.append(
        f"- training data: `{data.get('path')}` (split `{data.get('split')}`), {data.get('samples')} samples"
    )
    lines.append(f"- sha256 of the data: `{data.get('sha256')}`")
    lines.append(
        "- input: frames sampled at segment centres, in order, with the prompt of the manifest"
    )
    lines.append("")
    lines.append("## Runtime")
    lines.append("")
    lines.append("| measure | value |")
    lines.append("|---|---|")
    runtime_rows = [
        ("device", f"{effective.get('device')} x {effective.get('world_size')}"),
        ("optimizer steps", summary.get("global_step")),
        ("epochs", summary.get("epochs")),
        ("train runtime (s)", summary.get("train_runtime_s")),
        ("samples/s", summary.get("train_samples_per_second")),
        ("final loss", summary.get("final_loss")),
        ("loss definition", summary.get("loss_definition")),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
    ]
    for key, value in runtime_rows:
        if value is not None:
            lines.append(f"| {key} | {value} |")
    lines.append("")
    lines.append("## Evaluation")
    lines.append("")
    if eval_report:
        lines.append(
            f"Held-out `{eval_report.get('data_path')}`: {eval_report.get('num_samples')} samples, "
            f"{eval_report.get('num_labels')} classes (chance top-1 {100 * eval_report.get('chance_top1', 0):.1f}%). "
            "Generation: greedy answer mapped to a label by exact normalised match (unmatched answers "
            "count as wrong). Ranking: likelihood of every class's answer. `reversed` / `shuffled` "
            "rows re-run the same samples with the frames permuted: a model that reads frame order "
            "drops there. See kprep's docs/evaluation.md."
        )
        lines.append("")
        lines.append(markdown_table(eval_report).rstrip("\n"))
    else:
        lines.append("No evaluation report was given (`kprep merge --eval-report REPORT.json`).")
    lines.append("")
    return "\n".join(lines)


def merge(
    adapter: str | Path,
    output: str | Path,
    *,
    model_id: str | None = None,
    eval_report: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write merged safetensors + processor + README.md into ``output``; returns it."""
    import torch
    from transformers import Gemma4ForConditionalGeneration

    from trainer.model import load_processor

    adapter = Path(adapter)
    output = Path(output)
    if not adapter.is_dir():
        raise EvalError(f"--adapter {adapter} is not a folder: pass kprep train's --output-dir")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise EvalError(
            f"--output {output} exists and is not empty: pass --overwrite or a new folder"
        )
    summary: dict[str, Any] = {}
    if (adapter / SUMMARY_NAME).is_file():
        summary = json.loads((adapter / SUMMARY_NAME).read_text(encoding="utf-8"))
    base = model_id or summary.get("model_id")
    lora = is_adapter_dir(adapter)
    if lora and not base:
        raise EvalError(f"{adapter} has no {SUMMARY_NAME} naming the base model: pass --model-id")
    report = None
    if eval_report is not None:
        try:
            report = json.loads(Path(eval_report).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EvalError(
                f"--eval-report {eval_report} cannot be read ({exc}): pass kprep eval's --output JSON"
            ) from exc
        if "runs" not in report:
            raise EvalError(f"--eval-report {eval_report} is not a kprep eval report (no 'runs')")

    if lora:
        from peft import PeftModel

        model = Gemma4ForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    elif (adapter / "config.json").is_file():
        model = Gemma4ForConditionalGeneration.from_pretrained(str(adapter), dtype=torch.float32)
        base = base or str(adapter)
    else:
        raise EvalError(f"--adapter {adapter} holds neither adapter_config.json nor config.json")
    processor = load_processor(
        str(adapter) if (adapter / "processor_config.json").is_file() else base
    )

    tmp = output.parent / f".{output.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        processor.save_pretrained(str(tmp))
        if summary:
            shutil.copy2(adapter / SUMMARY_NAME, tmp / SUMMARY_NAME)
        if report is not None:
            (tmp / "eval_report.json").write_text(
                json.dumps(report, indent=2) + "\n", encoding="utf-8"
            )
        card = model_card(
            summary, base_model=str(base), name=output.name, eval_report=report, merged=lora
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("merged %s into %s -> %s", adapter, base, output)
    return output


def _embedding_lr_text(recipe: dict, use_lora: bool) -> str:
    """The token embeddings' learning rate as training used it (LoRA keeps them frozen)."""
    if use_lora:
        return "frozen"
    rate = recipe.get("embedding_lr")
    return str(recipe.get("learning_rate") if rate is None else rate)
