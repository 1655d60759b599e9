"""LoRA targeting on the real E4B shapes (built on the meta device: no weights, no memory)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


def test_e4b_gets_258_lora_modules_on_text_layers_only():
    from transformers import Gemma4ForConditionalGeneration

    from trainer.config import TrainConfig
    from trainer.model import load_model
    from trainer.tiny import e4b_shaped_config

    with torch.device("meta"):
        base = Gemma4ForConditionalGeneration(e4b_shaped_config())
    # The vision tower has Linear layers with the same short names (inside
    # Gemma4ClippableLinear): a name list would hit them, the regex must not.
    assert any(
        n.endswith("vision_tower.encoder.layers.0.self_attn.q_proj.linear")
        for n, _ in base.named_modules()
    )
    model, info = load_model(TrainConfig(data_path="unused.json"), model=base)
    # 42 layers x (q, o, gate, up, down) + 24 non-shared layers x (k, v).
    assert info.lora_modules == 42 * 5 + 24 * 2 == 258
    assert all(".language_model.layers." in n for n in info.lora_module_names)
    assert info.trainable_params == 34_881_536  # ~34.9M, as published
    assert info.trainable_by_part == {"text": 34_881_536}
