"""Batch conversations for Gemma 4: chat template, processor, label masking.

For each sample the prompt (every turn but the last, plus the generation
prompt) goes through the processor with its images or video; the answer text
that the chat template puts after the prompt is tokenized on its own and
appended. So the boundary is exact, with no searching for marker tokens:

    <bos><|turn>user\\n<|image>...<image|>Please analyze ...<turn|>\\n<|turn>model\\n | The video shows abseiling.<turn|> | \\n
    \\___________________________ labels -100 ______________________________/   \\____ trained on ____/   -100

Labels are the answer tokens up to and including the end-of-turn marker
(``<turn|>``); prompt, image/video soft tokens and padding are -100. Each
sample is checked: the answer must follow the generation prompt
(:func:`answer_suffix`), and the decoded trained tokens must equal the
assistant's text plus the marker.

Inference uses the same two pieces, so it cannot drift from training:
:func:`locate_answer` gives eval's ranking the exact tokens training labels,
and :meth:`VisionChatCollator.encode_prompt` builds the prompt inputs (images
or a video with its metadata) as :meth:`VisionChatCollator.encode` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kinetics_prep.schema import text_of
from trainer.errors import MaskingError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
_BATCH_KEYS = (
    "pixel_values",
    "image_position_ids",
    "pixel_values_videos",
    "video_position_ids",
    "num_frames_per_video",
)


def answer_suffix(prompt: str, full: str, answer: str) -> str:
    r"""The text the template puts after the generation prompt for the answer turn.

    Normally ``full == prompt + suffix``. Some Gemma 4 templates end the
    generation prompt with an empty thought block (``<|channel>thought\n<channel|>``)
    that the rendered conversation lacks; then the suffix is what follows the
    common prefix, and training sees exactly what inference will: the
    generation prompt, then the answer.

    >>> answer_suffix("U<|turn>model\n", "U<|turn>model\nHi.<turn|>\n", "Hi.")
    'Hi.<turn|>\n'
    >>> thought = "U<|turn>model\n<|channel>thought\n<channel|>"
    >>> answer_suffix(thought, "U<|turn>model\nHi.<turn|>\n", "Hi.")
    'Hi.<turn|>\n'
    """
    if full.startswith(prompt):
        suffix = full[len(prompt) :]
    else:
        n = 0
        for a, b in zip(prompt, full, strict=False):
            if a != b:
                break
            n += 1
        suffix = full[n:]
    if answer.strip() and not suffix.lstrip().startswith(answer.strip()):
        raise MaskingError(
            "the chat template does not render the answer right after the generation prompt, "
            f"so it cannot be located (after the prompt it renders {suffix[:60]!r}): "
            "use Gemma 4's chat template"
        )
    return suffix


def end_of_turn_token(tokenizer) -> str:
    """Gemma 4's end-of-turn marker (``<turn|>``), else the tokenizer's eos token."""
    eot = getattr(tokenizer, "eot_token", None)
    return eot if eot else tokenizer.eos_token


def render_prompt(processor, prompt_messages: list[dict[str, Any]]) -> str:
    """The prompt text: every turn before the answer, then the generation prompt."""
    return processor.apply_chat_template(
        list(prompt_messages), tokenize=False, add_generation_prompt=True
    )


@dataclass
class AnswerSpan:
    """Where a conversation's answer is: after ``prompt``, as ``ids``; ``ids[:n_train]`` is
    what training learns (the answer through the end-of-turn marker)."""

    prompt: str
    ids: list[int]
    n_train: int

    @property
    def trained_ids(self) -> list[int]:
        return self.ids[: self.n_train]


def locate_answer(processor, messages: list[dict[str, Any]]) -> AnswerSpan:
    """The one place that finds the answer of ``messages`` (last turn = the answer).

    Training labels ``span.trained_ids`` after the prompt (the collator);
    inference scores the same tokens after the same prompt (eval's ranking),
    so the two cannot disagree about a chat template, e.g. one whose
    generation prompt ends with an empty thought block (:func:`answer_suffix`).
    """
    tokenizer = processor.tokenizer
    prompt = render_prompt(processor, messages[:-1])
    full = processor.apply_chat_template(list(messages), tokenize=False)
    part = answer_suffix(prompt, full, text_of(messages[-1]))
    ids = tokenizer(part, add_special_tokens=False)["input_ids"]
    eot_id = tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))
    n_train = ids.index(eot_id) + 1 if eot_id in ids else len(ids)
    return AnswerSpan(prompt=prompt, ids=list(ids), n_train=n_train)


class VisionChatCollator:
    """``collator(items) -> batch`` for ``Gemma4ForConditionalGeneration``.

    ``items`` come from ``trainer.data.ConversationDataset``. ``max_soft_tokens``
    overrides the processor's vision token budget per image / video frame.
    Inference builds its prompt inputs with the same object
    (:meth:`encode_prompt`), so eval and predict take every input training takes.
    """

    def __init__(
        self,
        processor,
        *,
        max_soft_tokens: int | None = None,
        check: bool = True,
        min_padding: int = 1,
    ):
        self.processor = processor
        # One pad column makes the attention masks explicit tensors even for a
        # batch of one, which Gemma 4 needs to run its KV-shared layers on the
        # answer positions only (see logits_to_keep_for). Its label is -100.
        self.min_padding = min_padding
        self.tokenizer = processor.tokenizer
        self.max_soft_tokens = max_soft_tokens
        self.check = check
        self.end_of_turn = end_of_turn_token(self.tokenizer)
        self.end_of_turn_id = self.tokenizer.convert_tokens_to_ids(self.end_of_turn)
        self.pad_id = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id
        )

    # --- the prompt with its media (training and inference) ---------------------------
    def prompt_features(self, prompt: str, item: dict[str, Any]):
        """The processor's output for the prompt text and the item's images or video."""
        kwargs: dict[str, Any] = {
            "text": [prompt],
            "return_tensors": "pt",
            "add_special_tokens": False,  # the chat template already has <bos>
        }
        if item.get("images"):
            kwargs["images"] = [item["images"]]
            if self.max_soft_tokens:
                kwargs["images_kwargs"] = {"max_soft_tokens": self.max_soft_tokens}
        if item.get("video") is not None:
            kwargs["videos"] = [item["video"]]
            videos_kwargs: dict[str, Any] = {"do_sample_frames": False}
            if item.get("video_metadata") is not None:
                videos_kwargs["video_metadata"] = [item["video_metadata"]]
            if self.max_soft_tokens:
                videos_kwargs["max_soft_tokens"] = self.max_soft_tokens
            kwargs["videos_kwargs"] = videos_kwargs
        return self.processor(**kwargs)

    def encode_prompt(self, item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(prompt text, model inputs of batch size 1) for inference.

        ``item`` is a dataset item whose ``messages`` are the turns before the
        answer; the inputs are built exactly as :meth:`encode` builds a
        training sample's prompt.
        """
        prompt = render_prompt(self.processor, item["messages"])
        enc = self.prompt_features(prompt, item)
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        for key in ("mm_token_type_ids", *_BATCH_KEYS):
            if key in enc:
                inputs[key] = enc[key]
        return prompt, inputs

    # --- one sample -------------------------------------------------------------------
    def encode(self, item: dict[str, Any]) -> dict[str, Any]:
        import torch

        messages = item["messages"]
        span = locate_answer(self.processor, messages)
        enc = self.prompt_features(span.prompt, item)
        prompt_ids = enc["input_ids"][0]
        answer = torch.tensor(span.ids, dtype=prompt_ids.dtype)
        input_ids = torch.cat([prompt_ids, answer])
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        start = len(prompt_ids)
        labels[start : start + span.n_train] = answer[: span.n_train]
        if self.check:
            self._check(labels, text_of(messages[-1]))
        out: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": labels,
        }
        if "mm_token_type_ids" in enc:
            out["mm_token_type_ids"] = torch.cat(
                [enc["mm_token_type_ids"][0], torch.zeros(len(span.ids), dtype=torch.long)]
            )
        for key in _BATCH_KEYS:
            if key in enc:
                out[key] = enc[key]
        return out

    def _check(self, labels, answer: str) -> None:
        trained = [int(t) for t in labels if int(t) != IGNORE_INDEX]
        decoded = self.tokenizer.decode(trained, skip_special_tokens=False)
        expected_end = self.end_of_turn if self.end_of_turn_id in trained else ""
        if (
            decoded.strip() != (answer.strip() + expected_end)
            and decoded.strip() != (answer.strip() + " " + expected_end).strip()
        ):
            raise MaskingError(
                f"label masking check failed: trained tokens decode to {decoded!r}, "
                f"expected the answer {answer!r} plus {expected_end!r}"
            )

    # --- a batch ----------------------------------------------------------------------
    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        encoded = [self.encode(item) for item in items]
        length = max(len(e["input_ids"]) for e in encoded) + self.min_padding

        def pad(key: str, value: int):
            rows = []
            for e in encoded:
                row = e[key]
                rows.append(torch.cat([row, row.new_full((length - len(row),), value)]))
            return torch.stack(rows)

        batch: dict[str, Any] = {
            "input_ids": pad("input_ids", self.pad_id),
            "attention_mask": pad("attention_mask", 0),
            "labels": pad("labels", IGNORE_INDEX),
        }
        if all("mm_token_type_ids" in e for e in encoded):
            batch["mm_token_type_ids"] = pad("mm_token_type_ids", 0)
        for key in _BATCH_KEYS:
            parts = [e[key] for e in encoded if key in e]
            if parts:
                batch[key] = torch.cat(parts, dim=0)
        return batch


def logits_to_keep_for(labels) -> int:
    """How many trailing positions need logits: from just before the first trained token.

    Passed to Gemma 4 as ``logits_to_keep``, this skips the vocabulary projection
    for the prompt and image tokens, and lets the KV-shared layers (18 of 42 on
    E4B), which only read keys/values computed by earlier layers, run on those
    positions alone. The loss is unchanged: no trained token is dropped.

    >>> import torch
    >>> logits_to_keep_for(torch.tensor([[-100, -100, -100, 7, 8, -100]]))
    4
    """
    trained = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    if len(trained) == 0:
        return 0  # 0 keeps every position
    return int(labels.shape[-1] - int(trained[0]) + 1)


def token_loss_sum(logits, labels):
    """Sum of next-token cross-entropy over labelled positions, and their count (fp32).

    ``logits`` may cover only the last positions (``logits_to_keep``); the labels
    are aligned to them.
    """
    import torch

    if logits.shape[-2] < labels.shape[-1]:
        labels = labels[..., -logits.shape[-2] :]
    shift_labels = labels[..., 1:]
    mask = shift_labels != IGNORE_INDEX
    picked = logits[..., :-1, :][mask].float()
    loss = torch.nn.functional.cross_entropy(picked, shift_labels[mask], reduction="sum")
    return loss, mask.sum()


def mean_token_loss(outputs, labels, num_items_in_batch=None):
    """Per-token mean loss over the whole accumulated batch (the Trainer's ``compute_loss_func``).

    With gradient accumulation the Trainer passes ``num_items_in_batch``, the
    number of trained tokens in all micro-batches of the optimizer step (over
    all processes), and sums the returned micro-batch losses. Dividing each
    micro-batch's token-loss *sum* by that total makes the logged loss the
    true per-token mean, the same for GA=1 and GA=8. (Averaging per micro-batch
    and then summing over 8 micro-steps reports 8x the loss.)
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    total, count = token_loss_sum(logits, labels)
    denom = num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1)
    if hasattr(denom, "to"):
        denom = denom.to(total.device)
    return total / denom
