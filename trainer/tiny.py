"""A tiny, randomly initialised Gemma 4 with a locally built processor.

Tests, the CPU demo and the tiny benchmark need a real
``Gemma4ForConditionalGeneration`` + ``Gemma4Processor`` that load with
``from_pretrained`` but never touch the Hub. ``build_tiny_gemma4`` makes one
deterministically (seeded); the result is committed under
``trainer/assets/tiny-gemma4/`` and found with ``tiny_model_path()``.

Shape (defaults): 4 text layers (hidden 64, the last two sharing KV, so LoRA
has fewer modules there, like E4B), sliding window 2048 (longer than any tiny
sequence, so every answer token can see every frame), a 1-layer vision tower
with 4-pixel patches and 2x2 pooling (a 64x64 frame at ``max_soft_tokens=70``
becomes 16x16 patches -> 64 soft tokens), no audio tower.

Two initialisation fixes make the random model learnable (see issue 6):
``patch_embedder.position_embedding_table`` is drawn from N(0, 0.5) instead of
all ones (with all ones every patch looks alike, so vision features cannot say
where things are), and the token embeddings are drawn so that after Gemma's
``sqrt(hidden)`` scale their std is 0.125.

The tokenizer is a byte-level BPE trained here on the prompts, answers and
Kinetics label names, with Gemma 4's special tokens (turn, image, video, audio)
and a chat template in Gemma 4's format::

    <bos><|turn>user\\n<|image|>...<|image|>Please analyze ...<turn|>\\n<|turn>model\\nThe video shows abseiling.<turn|>\\n
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

from kinetics_prep.fileio import atomic_write_json

logger = logging.getLogger(__name__)

TINY_SEED = 1234

# Gemma 4's special tokens, in id order (ids 0..N-1 in the tiny vocabulary).
SPECIAL_TOKENS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<|turn>",
    "<turn|>",
    "<|image>",
    "<image|>",
    "<|image|>",
    "<|video|>",
    "<|audio>",
    "<audio|>",
    "<|audio|>",
    "<|channel>",
    "<channel|>",
    "<|think|>",
]

# Attribute name -> token, as the real Gemma 4 tokenizer_config names them.
MODEL_SPECIFIC_TOKENS = {
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "video_token": "<|video|>",
    "audio_token": "<|audio|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
    "sot_token": "<|turn>",
    "eot_token": "<turn|>",
    "soc_token": "<|channel>",
    "eoc_token": "<channel|>",
    "think_token": "<|think|>",
}

# Gemma 4's chat format: <|turn>ROLE\n ... <turn|>\n, assistant is "model".
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<|turn>' + role + '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] | trim }}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<|image|>' }}"
    "{%- elif item['type'] == 'video' -%}{{ '<|video|>' }}"
    "{%- elif item['type'] == 'audio' -%}{{ '<|audio|>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<turn|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|turn>model\\n' }}{%- endif -%}"
)

DEFAULT_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "global_head_dim": 32,
    "sliding_window": 2048,
    "layer_types": [
        "sliding_attention",
        "full_attention",
        "sliding_attention",
        "full_attention",
    ],
    "num_kv_shared_layers": 2,
    "hidden_size_per_layer_input": 16,
    "max_position_embeddings": 4096,
    "final_logit_softcapping": 30.0,
}

DEFAULT_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "patch_size": 4,
    "pooling_kernel_size": 2,
    "position_embedding_size": 256,
}

DEFAULT_MAX_SOFT_TOKENS = 70
POSITION_TABLE_STD = 0.5
EMBED_STD = 0.125
VOCAB_SIZE = 1024


def tiny_model_path() -> Path:
    """The packaged tiny Gemma 4 folder (config, weights, processor files)."""
    path = Path(str(resources.files("trainer") / "assets" / "tiny-gemma4"))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"packaged tiny model missing at {path}: rebuild it with "
            "`python -c 'from trainer.tiny import build_tiny_gemma4, tiny_model_path; "
            "build_tiny_gemma4(tiny_model_path())'`"
        )
    return path


def _corpus() -> list[str]:
    """Text the tiny BPE is trained on: prompts, answers, label names, demo words."""
    from kinetics_prep import __name__ as _kp  # noqa: F401  (package data lives there)

    labels: list[str] = []
    data = resources.files("kinetics_prep") / "data"
    for name in ("kinetics400_labels.txt", "kinetics600_labels.txt", "kinetics700_labels.txt"):
        labels += [x.strip() for x in (data / name).read_text(encoding="utf-8").splitlines()]
    labels = sorted({x for x in labels if x})
    from kinetics_prep.schema import DEFAULT_PROMPT

    lines = [DEFAULT_PROMPT, "What is happening in this video?", "Answer with the action."]
    for direction in ("left", "right", "up", "down"):
        lines.append(f"The video shows moving {direction}.")
        lines.append(f"The video shows a shape moving {direction}.")
    lines += [f"The video shows {label}." for label in labels]
    lines += ["0123456789 00:00 00:01 00:02 a b c d e f g h i j k l m n o p q r s t u v w x y z"]
    return lines


def _build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus() * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        padding_side="right",
        extra_special_tokens=dict(MODEL_SPECIFIC_TOKENS),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    for i, tok in enumerate(SPECIAL_TOKENS):
        assert tokenizer.convert_tokens_to_ids(tok) == i, tok
    return tokenizer


def _special_token_config(ids: dict[str, int]) -> dict[str, int]:
    """Gemma4Config's special-token fields from the tokenizer's token ids."""
    return {
        "boi_token_id": ids["boi_token"],
        "eoi_token_id": ids["eoi_token"],
        "image_token_id": ids["image_token"],
        "video_token_id": ids["video_token"],
        "boa_token_id": ids["boa_token"],
        "eoa_token_index": ids["eoa_token"],
        "audio_token_id": ids["audio_token"],
    }


def build_tiny_gemma4(
    output_dir: str | Path,
    *,
    seed: int = TINY_SEED,
    text_config: dict[str, Any] | None = None,
    vision_config: dict[str, Any] | None = None,
    max_soft_tokens: int = DEFAULT_MAX_SOFT_TOKENS,
    position_table_std: float = POSITION_TABLE_STD,
    embed_std: float = EMBED_STD,
    vocab_size: int = VOCAB_SIZE,
) -> Path:
    """Build and save a tiny random Gemma 4 + processor into ``output_dir``.

    ``text_config`` / ``vision_config`` override keys of the defaults above
    (e.g. ``text_config={"num_hidden_layers": 2, "layer_types": [...]}``).
    Same arguments and seed give the same weights. Returns ``output_dir``.
    """
    import torch
    from transformers import (
        Gemma4AudioFeatureExtractor,
        Gemma4Config,
        Gemma4ForConditionalGeneration,
        Gemma4ImageProcessor,
        Gemma4Processor,
        Gemma4VideoProcessor,
        GenerationConfig,
    )

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(vocab_size)
    ids = {
        name: tokenizer.convert_tokens_to_ids(tok) for name, tok in MODEL_SPECIFIC_TOKENS.items()
    }

    text = {**DEFAULT_TEXT_CONFIG, **(text_config or {})}
    vision = {**DEFAULT_VISION_CONFIG, **(vision_config or {})}
    n_vocab = max(vocab_size, len(tokenizer))
    text.update(
        vocab_size=n_vocab,
        vocab_size_per_layer_input=n_vocab,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, ids["eot_token"]],
        bos_token_id=tokenizer.bos_token_id,
    )
    config = Gemma4Config(
        text_config=text,
        vision_config=vision,
        audio_config=None,
        **_special_token_config(ids),
    )
    torch.manual_seed(seed)
    model = Gemma4ForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        table = model.model.vision_tower.patch_embedder.position_embedding_table
        table.copy_(torch.randn(table.shape, generator=generator) * position_table_std)
        embed = model.model.language_model.embed_tokens
        scale = float(embed.scalar_embed_scale)
        embed.weight.copy_(
            torch.randn(embed.weight.shape, generator=generator) * (embed_std / scale)
        )
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, ids["eot_token"]],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(output_dir)

    patch, pool = vision["patch_size"], vision["pooling_kernel_size"]
    image_processor = Gemma4ImageProcessor(
        patch_size=patch, pooling_kernel_size=pool, max_soft_tokens=max_soft_tokens
    )
    video_processor = Gemma4VideoProcessor(
        patch_size=patch,
        pooling_kernel_size=pool,
        max_soft_tokens=max_soft_tokens,
        num_frames=4,
    )
    processor = Gemma4Processor(
        feature_extractor=Gemma4AudioFeatureExtractor(),
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
        image_seq_length=max_soft_tokens,
    )
    processor.save_pretrained(output_dir)
    atomic_write_json(
        output_dir / "tiny_build.json",
        {
            "seed": seed,
            "text_config": text,
            "vision_config": vision,
            "max_soft_tokens": max_soft_tokens,
            "position_table_std": position_table_std,
            "embed_std": embed_std,
            "built_by": "trainer.tiny.build_tiny_gemma4",
        },
    )
    logger.info("built tiny Gemma 4 in %s", output_dir)
    return output_dir


def write_synthetic_manifest(
    folder: str | Path,
    *,
    num_samples: int = 8,
    num_frames: int = 4,
    size: int = 64,
    labels: tuple[str, ...] = ("moving left", "moving right"),
    seed: int = 0,
    name: str = "manifest.json",
) -> Path:
    """Write a seed-format manifest of synthetic frame sequences (a square moving
    left or right) with its JPEG frames under ``folder``; return the JSON path.

    For tests and benchmarks of the training path without kinetics_prep's
    extraction; the entries are written by the contract's own writer
    (``kinetics_prep.schema.write_manifest``), as the real pipeline's are.
    """
    import random

    from PIL import Image, ImageDraw

    from kinetics_prep.schema import (
        DEFAULT_ANSWER_TEMPLATE,
        DEFAULT_PROMPT,
        FRAMES_DIR,
        Sample,
        write_manifest,
    )

    folder = Path(folder)
    rng = random.Random(seed)
    samples = []
    for i in range(num_samples):
        label = labels[i % len(labels)]
        clip = f"clip{i:04d}"
        (folder / FRAMES_DIR / clip).mkdir(parents=True, exist_ok=True)
        side = max(4, size // 6)
        y = rng.randrange(0, size - side)
        step = (size - side) // max(1, num_frames - 1)
        frames = []
        for f in range(num_frames):
            x = f * step if label.endswith("right") else (num_frames - 1 - f) * step
            img = Image.new("RGB", (size, size), (20, 20, 20))
            ImageDraw.Draw(img).rectangle([x, y, x + side, y + side], fill=(240, 200, 40))
            rel = f"{FRAMES_DIR}/{clip}/frame_{f + 1}.jpg"
            img.save(folder / rel, quality=90)
            frames.append(rel)
        samples.append(
            Sample(
                id=clip,
                prompt=DEFAULT_PROMPT,
                answer=DEFAULT_ANSWER_TEMPLATE.format(label=label),
                images=frames,
                label=label,
                split="train",
            )
        )
    return write_manifest(folder / name, samples)


# Gemma 4 E4B's shapes (google/gemma-4-e4b-it), for random same-shaped models in
# the GPU benchmark and for checking LoRA targeting without the real weights.
E4B_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 2560,
    "intermediate_size": 10240,
    "num_hidden_layers": 42,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "global_head_dim": 512,
    "sliding_window": 512,
    "num_kv_shared_layers": 18,
    "hidden_size_per_layer_input": 256,
    "vocab_size": 262144,
    "vocab_size_per_layer_input": 262144,
    "final_logit_softcapping": 30.0,
}
E4B_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 16,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "head_dim": 64,
    "patch_size": 16,
    "pooling_kernel_size": 3,
}


def e4b_shaped_config(tokenizer=None):
    """A ``Gemma4Config`` with E4B's shapes (no audio tower) whose special-token ids
    match ``tokenizer`` (default: the packaged tiny tokenizer)."""
    from transformers import AutoTokenizer, Gemma4Config

    tok = tokenizer or AutoTokenizer.from_pretrained(str(tiny_model_path()))
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in MODEL_SPECIFIC_TOKENS.items()}
    return Gemma4Config(
        text_config=dict(
            E4B_TEXT_CONFIG,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
        ),
        vision_config=dict(E4B_VISION_CONFIG),
        audio_config=None,
        **_special_token_config(ids),
    )
