"""Load what `kprep train` wrote: the one loader for eval, predict and merge.

``kprep train --output-dir DIR`` leaves either a LoRA adapter
(``adapter_config.json``: loaded onto its base with PEFT) or, with
``--no-use-lora``, a full model (``config.json``), plus the processor it
trained with and ``training_summary.json`` (which names the base model).
The processor comes from ``DIR`` when training saved one there, so prompts are
built exactly as in training; else from the base model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from kinetics_prep.schema import TRAINING_SUMMARY_NAME
from trainer.errors import ModelLoadError

logger = logging.getLogger(__name__)


def is_adapter_dir(path: str | Path) -> bool:
    """A LoRA adapter folder (PEFT's ``adapter_config.json``)."""
    return (Path(path) / "adapter_config.json").is_file()


def training_summary(folder: str | Path | None) -> dict[str, Any]:
    """``folder``'s training_summary.json, or {} when there is none."""
    if folder is None:
        return {}
    path = Path(folder) / TRAINING_SUMMARY_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelLoadError(
            f"{path} is not valid JSON ({exc}): retrain, or pass --model-id"
        ) from None


def check_trained_folder(adapter: str | Path) -> bool:
    """Check ``adapter`` is kprep train's output; True for LoRA, False for a full model."""
    folder = Path(adapter)
    if not folder.is_dir():
        raise ModelLoadError(f"--adapter {folder} is not a folder: pass kprep train's --output-dir")
    if is_adapter_dir(folder):
        return True
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"--adapter {folder} holds neither adapter_config.json nor a model config.json: "
            "pass the output folder of `kprep train`"
        )
    return False


def base_model_id(model_id: str | None, adapter: str | Path | None) -> str:
    """``model_id``, else the base the adapter's training summary names."""
    base = model_id or training_summary(adapter).get("model_id")
    if not base:
        raise ModelLoadError(
            f"{adapter} has no {TRAINING_SUMMARY_NAME} naming the base model: pass --model-id"
        )
    return str(base)


def load_finetuned(
    model_id: str,
    adapter: str | Path | None = None,
    *,
    max_soft_tokens: int | None = None,
    merge: bool = False,
):
    """(model, processor): the base ``model_id``, base + LoRA ``adapter``, or a full model.

    For inference (``merge=False``) the model is in bf16 on a GPU (fp32 on a
    CPU), on that device, in eval mode. ``merge=True`` loads fp32 on the CPU
    and folds a LoRA adapter into the weights (PEFT ``merge_and_unload``).
    """
    import torch
    from transformers import Gemma4ForConditionalGeneration

    from trainer.model import load_processor

    lora = check_trained_folder(adapter) if adapter is not None else False
    weights_from = model_id if adapter is None or lora else str(adapter)
    cuda = torch.cuda.is_available() and not merge
    dtype = torch.bfloat16 if cuda else torch.float32
    try:
        model = Gemma4ForConditionalGeneration.from_pretrained(weights_from, dtype=dtype)
    except OSError as exc:
        raise ModelLoadError(
            f"model {weights_from!r} cannot be loaded ({exc}): pass a local folder or a "
            "reachable Hub id"
        ) from exc
    if lora:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        if merge:
            model = model.merge_and_unload()
    own_processor = adapter is not None and (Path(adapter) / "processor_config.json").is_file()
    processor = load_processor(
        str(adapter) if own_processor else model_id, max_soft_tokens=max_soft_tokens
    )
    if not merge:
        model.to("cuda" if cuda else "cpu").eval()
    logger.info("loaded %s%s", weights_from, f" + LoRA {adapter}" if lora else "")
    return model, processor
