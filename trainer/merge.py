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
import shutil
import uuid
from pathlib import Path
from typing import Any

from kinetics_prep.fileio import atomic_write_json, atomic_write_text, replace_path
from kinetics_prep.schema import TRAINING_SUMMARY_NAME
from trainer.errors import MergeError
from trainer.report import markdown_table

logger = logging.getLogger(__name__)

EVAL_REPORT_NAME = "eval_report.json"


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


def _front_matter(
    *, base_model: str, name: str, use_lora: bool, eval_report: dict[str, Any] | None
) -> list[str]:
    """The YAML metadata block (Hub model card fields, model-index with the eval metrics)."""
    lines = ["---", f"base_model: {_yaml_scalar(base_model)}"]
    lines += ["library_name: transformers", "pipeline_tag: image-text-to-text", "tags:"]
    tags = ["gemma4", "kinetics", "action-recognition", "video", "kprep"]
    lines += [f"- {tag}" for tag in tags + (["lora"] if use_lora else [])]
    if eval_report:
        dataset = Path(str(eval_report.get("data_path", "held-out"))).name
        lines += [
            "model-index:",
            f"- name: {_yaml_scalar(name)}",
            "  results:",
            "  - task:",
            "      type: video-classification",
            "      name: Action recognition",
            "    dataset:",
            f"      name: {_yaml_scalar(dataset)}",
            "      type: kinetics",
            f"      split: {_yaml_scalar(eval_report.get('split', 'validation'))}",
            "    metrics:",
        ]
        for row in _metric_rows(eval_report):
            lines.append("    - type: accuracy")
            lines.append(f"      name: {_yaml_scalar(row['name'])}")
            lines.append(f"      value: {round(float(row['value']), 4)}")
    lines.append("---")
    return lines


def _intro(*, base_model: str, name: str, use_lora: bool, merged: bool) -> list[str]:
    """Title, one paragraph on what the model is, and how to load it."""
    kind = "LoRA fine-tune" if use_lora else "full fine-tune of the text model"
    link = base_model if "/" in base_model and not Path(base_model).exists() else ""
    return [
        f"# {name}",
        "",
        f"A {kind} of [{base_model}]({link}) "
        "that names the action in a short sequence of video frames, trained with "
        "[kprep](https://github.com/) on a Kinetics-format dataset."
        + (" The adapter is merged into the weights." if merged and use_lora else ""),
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import AutoProcessor, Gemma4ForConditionalGeneration",
        "",
        f'model = Gemma4ForConditionalGeneration.from_pretrained("{name}")',
        f'processor = AutoProcessor.from_pretrained("{name}")',
        "```",
        "",
        f"or from the command line: `kprep predict CLIP.mp4 --model-id {name} "
        "--label-map label_map.json` (the training dataset's label map, written by "
        "`kprep build-manifest`).",
        "",
    ]


def _table(title: str, header: str, rows: list[tuple[str, Any]]) -> list[str]:
    """A ``## title`` section with a two-column table of the rows whose value is set."""
    lines = [f"## {title}", "", f"| {header} | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows if value is not None]
    return lines + [""]


def _recipe_rows(summary: dict[str, Any], use_lora: bool) -> list[tuple[str, Any]]:
    recipe = summary.get("recipe") or {}
    effective = summary.get("effective") or {}
    return [
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


def _data_section(summary: dict[str, Any]) -> list[str]:
    data = summary.get("data") or {}
    return [
        "## Data",
        "",
        f"- training data: `{data.get('path')}` (split `{data.get('split')}`), "
        f"{data.get('samples')} samples",
        f"- sha256 of the data: `{data.get('sha256')}`",
        "- input: frames sampled at segment centres, in order, with the prompt of the manifest",
        "",
    ]


def _runtime_rows(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    effective = summary.get("effective") or {}
    versions = summary.get("versions") or {}
    return [
        ("device", f"{effective.get('device')} x {effective.get('world_size')}"),
        ("optimizer steps", summary.get("global_step")),
        ("epochs", summary.get("epochs")),
        ("train runtime (s)", summary.get("train_runtime_s")),
        ("samples/s", summary.get("train_samples_per_second")),
        ("final loss", summary.get("final_loss")),
        ("loss definition", summary.get("loss_definition")),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
    ]


def _evaluation_section(eval_report: dict[str, Any] | None) -> list[str]:
    lines = ["## Evaluation", ""]
    if not eval_report:
        return lines + [
            "No evaluation report was given (`kprep merge --eval-report REPORT.json`).",
            "",
        ]
    lines.append(
        f"Held-out `{eval_report.get('data_path')}`: {eval_report.get('num_samples')} samples, "
        f"{eval_report.get('num_labels')} classes (chance top-1 {100 * eval_report.get('chance_top1', 0):.1f}%). "
        "Generation: greedy answer mapped to a label by exact normalised match (unmatched answers "
        "count as wrong). Ranking: likelihood of every class's answer. `reversed` / `shuffled` "
        "rows re-run the same samples with the frames permuted: a model that reads frame order "
        "drops there. See kprep's docs/evaluation.md."
    )
    return lines + ["", markdown_table(eval_report).rstrip("\n"), ""]


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
    use_lora = summary.get("adapter", recipe.get("use_lora", True))
    lines = _front_matter(
        base_model=base_model, name=name, use_lora=use_lora, eval_report=eval_report
    )
    lines.append("")
    lines += _intro(base_model=base_model, name=name, use_lora=use_lora, merged=merged)
    lines += _table("Training recipe", "setting", _recipe_rows(summary, use_lora))
    lines += _data_section(summary)
    lines += _table("Runtime", "measure", _runtime_rows(summary))
    lines += _evaluation_section(eval_report)
    return "\n".join(lines)


def read_eval_report(path: str | Path) -> dict[str, Any]:
    """A `kprep eval --output` report, checked."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MergeError(
            f"--eval-report {path} cannot be read ({exc}): pass kprep eval's --output JSON"
        ) from None
    if not isinstance(report, dict) or "runs" not in report:
        raise MergeError(f"--eval-report {path} is not a kprep eval report (no 'runs')")
    return report


def merge(
    adapter: str | Path,
    output: str | Path,
    *,
    model_id: str | None = None,
    eval_report: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write merged safetensors + processor + README.md into ``output``; returns it.

    The folder is built as a hidden sibling and renamed into place, so a
    killed merge leaves the old ``output`` (or none), never half a model.
    """
    from trainer.loading import check_trained_folder, load_finetuned, training_summary

    adapter = Path(adapter)
    output = Path(output)
    if not adapter.is_dir():
        raise MergeError(f"--adapter {adapter} is not a folder: pass kprep train's --output-dir")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        if not overwrite:
            raise MergeError(
                f"--output {output} exists and is not empty: pass --overwrite or a new folder"
            )
        from kinetics_prep.outputs import OutputError, check_replaceable

        try:  # --overwrite replaces only a folder kprep merge wrote (never `.`, the adapter)
            check_replaceable(output, flag="--output", hint="pass a new folder")
        except OutputError as error:
            raise MergeError(str(error)) from None
        if output.resolve() in (adapter.resolve(), *adapter.resolve().parents):
            raise MergeError(f"--output {output} holds the --adapter {adapter}: pass a new folder")
    lora = check_trained_folder(adapter)
    summary = training_summary(adapter)
    base = model_id or summary.get("model_id")
    if lora and not base:
        raise MergeError(
            f"{adapter} has no {TRAINING_SUMMARY_NAME} naming the base model: pass --model-id"
        )
    base = str(base or adapter)
    report = read_eval_report(eval_report) if eval_report is not None else None
    model, processor = load_finetuned(base, adapter, merge=True)

    tmp = output.parent / f".{output.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        processor.save_pretrained(str(tmp))
        if summary:
            shutil.copy2(adapter / TRAINING_SUMMARY_NAME, tmp / TRAINING_SUMMARY_NAME)
        if report is not None:
            atomic_write_json(tmp / EVAL_REPORT_NAME, report)
        card = model_card(
            summary, base_model=base, name=output.name, eval_report=report, merged=lora
        )
        atomic_write_text(tmp / "README.md", card)
        from kinetics_prep.outputs import mark_folder

        mark_folder(tmp, command="merge")
        replace_path(tmp, output)  # the old folder (kprep's, checked above) goes only after
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
