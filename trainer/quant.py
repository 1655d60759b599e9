"""QLoRA: a 4-bit NF4 text model under LoRA adapters (bitsandbytes + PEFT).

``--load-in-4bit`` loads ``--model-id`` with a ``BitsAndBytesConfig``: NF4
weights, double quantisation (the quantisation constants are quantised too),
bf16 compute on a GPU. Only the text model's ``nn.Linear`` layers become
``bitsandbytes.nn.Linear4bit``; ``llm_int8_skip_modules`` keeps the vision
tower, the projector (``embed_vision``), the audio tower and the LM head (tied
to the token embeddings) in bf16, and embeddings are never quantised.

Preparation for k-bit training follows PEFT's ``prepare_model_for_kbit_training``
(every base weight frozen; inputs that require grad, so gradient checkpointing
reaches the adapters) except its fp32 up-cast of all non-4-bit weights: on E4B
that would turn ~3.4B embedding parameters (``embed_tokens`` +
``embed_tokens_per_layer``) from bf16 into fp32, ~13.6 GB instead of ~6.8 GB,
which defeats the point of a 4-bit base. They stay in bf16, as in kprep's bf16
LoRA path.

The adapter is an ordinary PEFT adapter (``adapter_config.json`` names
``--model-id``); ``kprep eval`` / ``predict`` / ``merge`` load it on the
unquantised base, so ``merge`` folds it into full-precision weights.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

# transformers matches these from the start of the full module name (or as a
# suffix), so a bare "embed_vision" would not skip "model.embed_vision.*".
SKIP_MODULES = [
    r"(?:.*\.)?vision_tower",
    r"(?:.*\.)?embed_vision",
    r"(?:.*\.)?audio_tower",
    r"(?:.*\.)?embed_audio",
    "lm_head",
]


def bnb_config(*, bf16: bool):
    """The ``BitsAndBytesConfig`` of ``--load-in-4bit``."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float32,
        llm_int8_skip_modules=list(SKIP_MODULES),
    )


def from_pretrained_kwargs(*, bf16: bool, cuda: bool) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments: the quantisation config and the device map."""
    import os

    device: Any = int(os.environ.get("LOCAL_RANK", "0") or 0) if cuda else "cpu"
    return {"quantization_config": bnb_config(bf16=bf16), "device_map": {"": device}}


def prepare_for_kbit_training(model):
    """Freeze the base and make the inputs require grad (see the module docstring)."""
    for param in model.parameters():
        param.requires_grad = False
    model.enable_input_require_grads()
    return model


def quantized_module_names(model) -> list[str]:
    """Names of the modules stored in 4 bits."""
    import bitsandbytes as bnb

    return [name for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
