"""Label masking: only the assistant answer and its end-of-turn marker are trained."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

from trainer.collator import IGNORE_INDEX, MaskingError, VisionChatCollator  # noqa: E402
from trainer.data import ConversationDataset, load_samples  # noqa: E402
from trainer.model import load_processor  # noqa: E402
from trainer.tiny import tiny_model_path, write_synthetic_manifest  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def processor():
    return load_processor(str(tiny_model_path()))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    manifest = write_synthetic_manifest(folder, num_samples=3, labels=("moving left", "tai chi"))
    ds = ConversationDataset(load_samples(manifest))
    return [ds[i] for i in range(len(ds))]


def test_only_answer_and_end_of_turn_are_trained(processor, items):
    batch = VisionChatCollator(processor)(items)
    tok = processor.tokenizer
    for row, item in enumerate(items):
        assert batch["input_ids"][row, 0] == tok.bos_token_id != batch["input_ids"][row, 1]
        labels = batch["labels"][row]
        trained = labels[labels != IGNORE_INDEX].tolist()
        answer = item["messages"][-1]["content"][0]["text"]
        assert tok.decode(trained) == answer + "<turn|>"
        # The trained tokens are exactly the input tokens at those positions.
        positions = (labels != IGNORE_INDEX).nonzero().flatten()
        assert batch["input_ids"][row, positions].tolist() == trained
        # Image soft tokens and the prompt are never trained.
        image_pos = batch["input_ids"][row] == processor.image_token_id
        assert image_pos.sum() == 4 * 64
        assert (labels[image_pos] == IGNORE_INDEX).all()
        # The prompt ends with the generation prompt, right before the answer.
        first = int(positions[0])
        assert tok.decode(batch["input_ids"][row, :first]).endswith("<|turn>model\n")
    # Padding is masked and excluded from attention.
    pad = batch["attention_mask"] == 0
    assert (batch["labels"][pad] == IGNORE_INDEX).all()
    assert batch["pixel_values"].shape[0] == 4 * len(items)


def test_padding_is_on_the_right_and_batch_matches_single_samples(processor, items):
    collate = VisionChatCollator(processor)
    batch = collate(items)
    for row, item in enumerate(items):
        single = collate([item])
        n = single["input_ids"].shape[1]
        assert batch["input_ids"][row, :n].tolist() == single["input_ids"][0].tolist()
        assert batch["labels"][row, :n].tolist() == single["labels"][0].tolist()
        assert (batch["attention_mask"][row, n:] == 0).all()


def test_video_entry_uses_real_fps_metadata(processor):
    from transformers.video_utils import VideoMetadata

    frames = np.zeros((4, 64, 64, 3), dtype=np.uint8)
    meta = VideoMetadata(
        total_num_frames=300, fps=30.0, width=64, height=64, frames_indices=[0, 90, 180, 270]
    )
    item = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "video", "video": "a.mp4"}, {"type": "text", "text": "What?"}],
            },
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "The video shows tai chi."}],
            },
        ],
        "images": [],
        "video": frames,
        "video_metadata": meta,
    }
    batch = VisionChatCollator(processor)([item])
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert "00:00" in text and "00:03" in text and "00:06" in text and "00:09" in text
    assert int(batch["num_frames_per_video"][0]) == 4
    trained = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert processor.tokenizer.decode(trained) == "The video shows tai chi.<turn|>"


def test_a_template_that_moves_the_answer_is_refused(processor, items):
    import copy

    broken = copy.copy(processor)
    # Renders the assistant turn before the user turn: the answer is not after the prompt.
    broken.chat_template = (
        "{% for m in messages|reverse %}{% for c in m['content'] %}{% if c['type'] == 'text' %}"
        "{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}MODEL:{% endif %}"
    )
    with pytest.raises(MaskingError, match="label masking check failed"):
        VisionChatCollator(broken).encode({**items[0], "images": []})
    # A template that never renders the assistant's words.
    broken.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    with pytest.raises(MaskingError, match="cannot be located"):
        VisionChatCollator(broken).encode({**items[0], "images": []})


def test_mean_token_loss_divides_by_all_tokens_of_the_accumulated_batch():
    import torch

    from trainer.collator import mean_token_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, 1, 2, -100, -100], [-100, -100, 3, 4, 5]])
    full = mean_token_loss({"logits": logits}, labels)
    # Reference: cross-entropy over the 5 trained positions, averaged.
    shift = labels[:, 1:]
    ref = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 7), shift.reshape(-1), ignore_index=-100
    )
    assert torch.allclose(full, ref)
    # Split into two micro-batches with the total count: the sum equals the full mean.
    parts = [
        mean_token_loss({"logits": logits[i : i + 1]}, labels[i : i + 1], torch.tensor(5))
        for i in (0, 1)
    ]
    assert torch.allclose(sum(parts), ref)


def test_logits_to_keep_gives_the_same_loss_and_gradients_and_shortens_kv_shared_layers(
    processor, items
):
    import torch
    from transformers import Gemma4ForConditionalGeneration

    from trainer.collator import logits_to_keep_for, mean_token_loss

    model = Gemma4ForConditionalGeneration.from_pretrained(str(tiny_model_path()))
    shared = model.model.language_model.layers[-1]  # a KV-shared layer
    seen = []
    hook = shared.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    for batch_items in (items[:1], items):
        batch = VisionChatCollator(processor)(batch_items)
        labels = batch.pop("labels")
        keep = logits_to_keep_for(labels)
        grads = []
        losses = []
        for kwargs in ({}, {"logits_to_keep": keep}):
            model.zero_grad()
            loss = mean_token_loss(model(**batch, **kwargs), labels)
            loss.backward()
            losses.append(float(loss))
            grads.append(model.model.language_model.layers[0].mlp.up_proj.weight.grad.clone())
        assert losses[0] == pytest.approx(losses[1], rel=1e-6)
        assert torch.allclose(grads[0], grads[1], atol=1e-6)
        assert seen[-1] == keep < batch["input_ids"].shape[1] // 10
    hook.remove()


def test_generation_prompt_with_an_empty_thought_block_trains_what_inference_sees(processor, items):
    """Larger Gemma 4 templates end the generation prompt with an empty thought block."""
    import copy

    from trainer.tiny import CHAT_TEMPLATE

    thinking = copy.copy(processor)
    thinking.chat_template = CHAT_TEMPLATE.replace(
        "{{ '<|turn>model\\n' }}{%- endif -%}",
        "{{ '<|turn>model\\n<|channel>thought\\n<channel|>' }}{%- endif -%}",
    )
    assert "<channel|>" in thinking.chat_template
    batch = VisionChatCollator(thinking)([items[0]])
    labels = batch["labels"][0]
    trained = labels[labels != IGNORE_INDEX].tolist()
    tok = processor.tokenizer
    assert tok.decode(trained) == items[0]["messages"][-1]["content"][0]["text"] + "<turn|>"
    first = int((labels != IGNORE_INDEX).nonzero()[0])
    assert tok.decode(batch["input_ids"][0, :first]).endswith(
        "<|turn>model\n<|channel>thought\n<channel|>"
    )


def test_docstring_examples():
    import doctest

    import trainer.collator

    assert doctest.testmod(trainer.collator).failed == 0
