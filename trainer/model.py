"""Load Gemma 4, put LoRA on the text layers only, decide what trains.

LoRA targets are chosen by a regex over full module names
(``language_model.layers.N.{self_attn,mlp}.{q,k,v,o,gate,up,down}_proj``):
the vision and audio towers have ``Gemma4ClippableLinear`` modules with the
same short names, which PEFT cannot wrap. Layers that reuse another layer's
KV cache have no k_proj / v_proj, so E4B (42 layers, 18 KV-shared) gets
42*5 + 24*2 = 258 LoRA modules.

The vision tower and the vision->text projector (``embed_vision``) stay frozen
unless ``image_encoder_lr`` / ``projector_lr`` > 0; then they train (saved with
the adapter via ``modules_to_save``) in their own optimizer parameter groups.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from trainer.errors import ModelLoadError, TrainError

logger = logging.getLogger(__name__)

VISION_PREFIXES = ("vision_tower",)
PROJECTOR_PREFIXES = ("embed_vision",)


@dataclass
class ModelInfo:
    """What was loaded and what trains (goes into training_summary.json)."""

    lora_modules: int = 0
    lora_module_names: list[str] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    dtype: str = "float32"
    trainable_by_part: dict[str, int] = field(default_factory=dict)


def part_of(name: str) -> str:
    """Which part of Gemma 4 a parameter belongs to: vision, projector, audio, text."""
    if ".vision_tower." in f".{name}" or name.startswith("vision_tower"):
        return "vision"
    if ".embed_vision." in f".{name}" or name.startswith("embed_vision"):
        return "projector"
    if "audio_tower" in name or "embed_audio" in name:
        return "audio"
    return "text"


EMBEDDING_PATTERN = re.compile(r"(^|\.)(embed_tokens|embed_tokens_per_layer|lm_head)\.")


def is_embedding(name: str) -> bool:
    """Token embeddings of the text model (and the LM head, tied to them in Gemma 4)."""
    return part_of(name) == "text" and bool(EMBEDDING_PATTERN.search(name))


def _embedding_lr(config) -> float:
    return config.learning_rate if config.embedding_lr is None else config.embedding_lr


def lora_target_names(model, pattern: str) -> list[str]:
    """Names of the ``nn.Linear`` modules whose full name matches ``pattern`` (as PEFT will)."""
    import torch

    regex = re.compile(pattern)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and regex.fullmatch(name)
    ]


def load_processor(model_id: str, *, max_soft_tokens: int | None = None):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_id)
    if max_soft_tokens:
        processor.image_processor.max_soft_tokens = max_soft_tokens
        processor.video_processor.max_soft_tokens = max_soft_tokens
    return processor


def load_model(config, *, device_dtype: str = "float32", model=None) -> tuple[Any, ModelInfo]:
    """Load the base model for ``config`` (a TrainConfig) and set up what trains.

    ``model``: use this already built Gemma 4 instead of loading ``config.model_id``.
    """
    import torch
    from transformers import Gemma4ForConditionalGeneration

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[device_dtype]
    if model is None:
        try:
            model = Gemma4ForConditionalGeneration.from_pretrained(
                config.model_id, dtype=dtype, attn_implementation=config.attn_implementation
            )
        except OSError as exc:
            raise ModelLoadError(
                f"--model-id {config.model_id!r} could not be loaded ({exc}); pass a local folder "
                "or a Hub id you can reach"
            ) from exc
    model.config.use_cache = False
    info = ModelInfo(dtype=device_dtype)
    train_vision = config.image_encoder_lr > 0
    train_projector = config.projector_lr > 0

    if config.use_lora:
        from peft import LoraConfig, get_peft_model

        names = lora_target_names(model, config.lora_target_modules)
        bad = [n for n in names if part_of(n) != "text"]
        if not names or bad:
            raise TrainError(
                f"--lora-target-modules matched {len(names)} Linear layers"
                + (f", {len(bad)} outside the text model (e.g. {bad[0]})" if bad else "")
                + ": it must match language_model.layers.N.{self_attn,mlp}.* only"
            )
        modules_to_save = []
        if train_vision:
            modules_to_save.append("vision_tower")
        if train_projector:
            modules_to_save.append("embed_vision")
        lora_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_target_modules,
            modules_to_save=modules_to_save or None,
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora_config)
        info.lora_module_names = [
            name
            for name, module in model.named_modules()
            if hasattr(module, "lora_A")
            and isinstance(getattr(module, "lora_A", None), torch.nn.ModuleDict)
        ]
        info.lora_modules = len(info.lora_module_names)
    else:
        for name, param in model.named_parameters():
            part = part_of(name)
            text_lr = _embedding_lr(config) if is_embedding(name) else config.learning_rate
            param.requires_grad = (
                (part == "text" and text_lr > 0)
                or (part == "vision" and train_vision)
                or (part == "projector" and train_projector)
            )

    # Trainable weights are optimised in fp32 even when the frozen base is bf16.
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    by_part: dict[str, int] = {}
    for name, param in model.named_parameters():
        info.total_params += param.numel()
        if param.requires_grad:
            info.trainable_params += param.numel()
            by_part[part_of(_strip_peft(name))] = (
                by_part.get(part_of(_strip_peft(name)), 0) + param.numel()
            )
    info.trainable_by_part = by_part
    if config.use_lora:
        logger.info(
            "LoRA r=%d alpha=%d on %d modules of the text layers; %s trainable params",
            config.lora_r,
            config.lora_alpha,
            info.lora_modules,
            f"{info.trainable_params:,}",
        )
    else:
        logger.info(
            "full fine-tuning (text layers lr %g, embeddings lr %g): %s trainable params",
            config.learning_rate,
            _embedding_lr(config),
            f"{info.trainable_params:,}",
        )
    for part in ("vision", "projector"):
        logger.info("%s: %s", part, "training" if by_part.get(part) else "frozen")
    return model, info


def _strip_peft(name: str) -> str:
    for prefix in ("base_model.model.", "base_model."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name.replace(".modules_to_save.default.", ".").replace(".original_module.", ".")


def parameter_groups(model, config) -> list[dict[str, Any]]:
    """Optimizer groups: text/LoRA at --learning-rate, vision and projector at their own
    rates, and the embeddings at theirs when full fine-tuning sets --embedding-lr."""
    groups: dict[str, dict[str, Any]] = {
        "text": {"params": [], "lr": config.learning_rate, "name": "text"},
        "embeddings": {"params": [], "lr": _embedding_lr(config), "name": "embeddings"},
        "vision": {"params": [], "lr": config.image_encoder_lr, "name": "vision"},
        "projector": {"params": [], "lr": config.projector_lr, "name": "projector"},
    }
    own_embedding_group = config.embedding_lr is not None and not config.use_lora
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        bare = _strip_peft(name)
        part = part_of(bare)
        if own_embedding_group and is_embedding(bare):
            part = "embeddings"
        groups["text" if part == "audio" else part]["params"].append(param)
    out = []
    for group in groups.values():
        if group["params"]:
            group["weight_decay"] = config.weight_decay
            out.append(group)
    return out
