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
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from kinetics_prep.model_card import looks_like_hub_id, render_model_card
from trainer.evaluate import EvalError, is_adapter_dir

logger = logging.getLogger(__name__)

SUMMARY_NAME = "training_summary.json"


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
        card = render_model_card(
            summary or {"model_id": str(base), "adapter": lora},
            eval_report=report,
            location=str(output),
            base_model_id=model_id if looks_like_hub_id(model_id) else None,
            merged=lora,
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
