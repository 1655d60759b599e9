"""The packaged tiny Gemma 4: loads with from_pretrained, processes images and video, is reproducible."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from PIL import Image  # noqa: E402

from trainer.tiny import MODEL_SPECIFIC_TOKENS, build_tiny_gemma4, tiny_model_path  # noqa: E402

PROMPT = "Please analyze the sequence of frames from this video. What specific action or event is happening?"


def _messages(kind: str, n: int = 4) -> list[dict]:
    items = (
        [{"type": "image", "image": f"f{i}.jpg"} for i in range(n)]
        if kind == "image"
        else [{"type": "video", "video": "clip.mp4"}]
    )
    return [
        {"role": "user", "content": [*items, {"type": "text", "text": PROMPT}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The video shows abseiling."}]},
    ]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoProcessor, Gemma4ForConditionalGeneration

    path = tiny_model_path()
    return Gemma4ForConditionalGeneration.from_pretrained(path), AutoProcessor.from_pretrained(path)


def test_packaged_model_has_the_documented_shape(tiny):
    model, processor = tiny
    text = model.config.text_config
    assert model.config.audio_config is None and model.model.audio_tower is None
    assert text.hidden_size == 64 and 2 <= text.num_hidden_layers <= 4
    assert text.num_kv_shared_layers >= 1
    assert model.config.vision_config.num_hidden_layers == 1
    # A KV-shared layer has no k_proj / v_proj of its own.
    last = model.model.language_model.layers[-1].self_attn
    assert not hasattr(last, "k_proj") and hasattr(
        model.model.language_model.layers[0].self_attn, "k_proj"
    )
    # The init fixes from issue 6 are baked in.
    table = model.model.vision_tower.patch_embedder.position_embedding_table
    assert 0.4 < float(table.detach().std()) < 0.6
    embed = model.model.language_model.embed_tokens
    assert abs(float(embed.weight.detach().std()) * float(embed.scalar_embed_scale) - 0.125) < 0.01
    tok = processor.tokenizer
    for attr, token in MODEL_SPECIFIC_TOKENS.items():
        assert tok.convert_tokens_to_ids(token) != tok.unk_token_id, attr
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image|>")
    assert model.config.video_token_id == processor.video_token_id


def test_chat_template_renders_gemma4_turns(tiny):
    _, processor = tiny
    text = processor.apply_chat_template(_messages("image"), tokenize=False)
    assert text == (
        "<bos><|turn>user\n" + "<|image|>" * 4 + PROMPT + "<turn|>\n"
        "<|turn>model\nThe video shows abseiling.<turn|>\n"
    )
    prompt = processor.apply_chat_template(
        _messages("image")[:1], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith(prompt) and prompt.endswith("<|turn>model\n")


def test_image_sequence_and_video_forward_pass_with_a_sliding_window_covering_the_sample(tiny):
    from transformers.video_utils import VideoMetadata

    model, processor = tiny
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(4)]
    text = processor.apply_chat_template(_messages("image"), tokenize=False)
    batch = processor(text=[text], images=[frames], return_tensors="pt")
    # 64x64 frames at max_soft_tokens 70 -> 16x16 patches of 4 px pooled 2x2 -> 64 tokens per frame.
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 4 * 64
    assert batch["input_ids"].shape[1] < model.config.text_config.sliding_window
    out = model(**batch, labels=batch["input_ids"])
    assert torch.isfinite(out.loss)

    video = rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    meta = VideoMetadata(
        total_num_frames=100, fps=25.0, width=64, height=64, frames_indices=[0, 25, 50, 75]
    )
    vtext = processor.apply_chat_template(_messages("video"), tokenize=False)
    vbatch = processor(
        text=[vtext],
        videos=[video],
        videos_kwargs={"do_sample_frames": False, "video_metadata": [meta]},
        return_tensors="pt",
    )
    decoded = processor.tokenizer.decode(vbatch["input_ids"][0])
    # True timestamps from the real fps: frames 0, 25, 50, 75 at 25 fps are 0 s, 1 s, 2 s, 3 s.
    for stamp in ("00:00", "00:01", "00:02", "00:03"):
        assert stamp in decoded
    assert torch.isfinite(model(**vbatch, labels=vbatch["input_ids"]).loss)


def test_build_is_deterministic_and_overridable(tmp_path):
    from safetensors.torch import load_file

    a = build_tiny_gemma4(tmp_path / "a")
    packaged = load_file(str(tiny_model_path() / "model.safetensors"))
    rebuilt = load_file(str(a / "model.safetensors"))
    assert packaged.keys() == rebuilt.keys()
    assert all(torch.equal(packaged[k], rebuilt[k]) for k in packaged)
    b = build_tiny_gemma4(
        tmp_path / "b",
        text_config={
            "num_hidden_layers": 2,
            "layer_types": ["sliding_attention", "full_attention"],
            "num_kv_shared_layers": 0,
        },
    )
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(b).text_config.num_hidden_layers == 2
