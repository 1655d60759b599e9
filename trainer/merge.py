"""Merge a LoRA adapter into its base model and write a model card.

``merge(adapter, output)`` loads the base named in the adapter's
``training_summary.json`` (or ``model_id``), applies the adapter with PEFT's
``merge_and_unload``, and saves plain safetensors that load with
``Gemma4ForConditionalGeneration.from_pretrained(output)``, plus the processor.
A fully fine-tuned folder (``kprep train --no-use-lora``) is saved as it is.

The card (``README.md``) comes from the one model-card generator
(:func:`kinetics_prep.model_card.render_model_card`) that ``kprep train`` uses,
with the held-out evaluation table when an eval report from ``kprep eval`` is
given.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from kinetics_prep.fileio import atomic_write_json, atomic_write_text, replace_path
from kinetics_prep.model_card import EVAL_REPORT_NAME, looks_like_hub_id, render_model_card
from kinetics_prep.schema import TRAINING_SUMMARY_NAME
from trainer.errors import MergeError

logger = logging.getLogger(__name__)


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
        card = render_model_card(
            summary or {"model_id": base, "adapter": lora},
            eval_report=report,
            location=str(output),
            base_model_id=model_id if looks_like_hub_id(model_id) else None,
            merged=lora,
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
