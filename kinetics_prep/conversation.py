"""Pure conversation building: one clip's frames + label -> the seed recipe's ``messages``.

Everything here is a keyword-only function of plain values (no I/O), so the
exact text a model is trained on is pinned by table-driven tests. The seed
format (``docs/schema.md``) is::

    [{"role": "user", "content": [{"type": "image", "image": "frames/c/frame_1.jpg"}, ...,
                                  {"type": "text", "text": <prompt>}]},
     {"role": "assistant", "content": [{"type": "text", "text": <answer>}]}]

The same conversation is also rendered in TRL's dataset layout (media items are
``{"type": "image", "text": None}`` placeholders; the pixels live in an
``images`` column) and in LLaVA's (``<image>`` placeholders in a human turn).
"""

from __future__ import annotations

import json
import string
import zlib
from collections.abc import Sequence
from typing import Any

DEFAULT_PROMPT = (
    "Please analyze the sequence of frames from this video. "
    "What specific action or event is happening?"
)
DEFAULT_ANSWER_TEMPLATE = "The video shows {label}."
LLAVA_IMAGE_TOKEN = "<image>"
LLAVA_VIDEO_TOKEN = "<video>"


class ConversationError(ValueError):
    """A prompt or answer template that cannot make a conversation."""


def check_answer_template(template: str) -> str:
    """Return ``template`` if it formats with exactly one field, ``{label}``.

    >>> check_answer_template("The video shows {label}.")
    'The video shows {label}.'
    """
    try:
        fields = [
            field for _, field, _, _ in string.Formatter().parse(template) if field is not None
        ]
    except ValueError as error:
        raise ConversationError(
            f"--answer-template ({template!r}) is not a valid format string ({error}); "
            "use {label} for the class name and {{ }} for literal braces"
        ) from None
    if fields != ["label"]:
        raise ConversationError(
            f"--answer-template ({template!r}) must contain {{label}} exactly once and no "
            f"other fields (found {fields or 'none'}); e.g. 'The video shows {{label}}.'"
        )
    return template


def answer_for(*, label: str, template: str = DEFAULT_ANSWER_TEMPLATE) -> str:
    """The assistant's answer for a canonical Kinetics ``label``."""
    return check_answer_template(template).format(label=label)


def parse_prompts(text: str, *, source: str = "--prompt-file") -> list[str]:
    """Prompts from a prompt file: a JSON list of strings, or one prompt per line.

    Blank lines and lines starting with ``#`` are ignored in the line form.
    """
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            loaded = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise ConversationError(f"{source} looks like JSON but is not valid: {error}") from None
        if not all(isinstance(item, str) for item in loaded):
            raise ConversationError(f"{source} must be a JSON list of strings")
        prompts = [item.strip() for item in loaded]
    else:
        prompts = [line.strip() for line in text.splitlines()]
        prompts = [line for line in prompts if line and not line.startswith("#")]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ConversationError(f"{source} holds no prompts: write one prompt per line")
    return prompts


def choose_prompt(*, prompts: Sequence[str], seed: int, sample_id: str) -> str:
    """One of ``prompts`` for this sample: fixed by (seed, id), not by list order.

    Hashing the id (rather than drawing from one RNG in sequence) means a
    sample keeps its prompt when other clips are added or left out.
    """
    if not prompts:
        raise ConversationError("at least one prompt is needed")
    if len(prompts) == 1:
        return prompts[0]
    return prompts[zlib.crc32(f"{seed}:{sample_id}".encode()) % len(prompts)]


def build_messages(
    *,
    prompt: str,
    answer: str,
    images: Sequence[str] = (),
    video: str | None = None,
) -> list[dict[str, Any]]:
    """The seed-format conversation: media items in order, then the prompt; then the answer."""
    if bool(images) == (video is not None):
        raise ConversationError("a sample has either frame images or one video, not both/neither")
    if not answer.strip():
        raise ConversationError("the answer is empty")
    content: list[dict[str, Any]] = (
        [{"type": "image", "image": path} for path in images]
        if images
        else [{"type": "video", "video": video}]
    )
    content.append({"type": "text", "text": prompt})
    return [
        {"role": "user", "content": content},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def to_trl_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL's layout: every content item is ``{"type", "text"}``; media items carry ``text=None``.

    The media themselves go to the ``images`` (or ``video``) column, in the
    same order as the placeholders.
    """
    out = []
    for message in messages:
        content = [
            {"type": item["type"], "text": item.get("text") if item["type"] == "text" else None}
            for item in message["content"]
        ]
        out.append({"role": message["role"], "content": content})
    return out


def media_paths(messages: Sequence[dict[str, Any]], kind: str = "image") -> list[str]:
    """The ``kind`` (``image`` / ``video``) paths of a seed-format conversation, in order."""
    return [
        item[kind]
        for message in messages
        for item in message.get("content", [])
        if isinstance(item, dict) and item.get("type") == kind
    ]


def text_of(message: dict[str, Any]) -> str:
    """The concatenated text items of one message."""
    return "".join(
        item.get("text") or ""
        for item in message.get("content", [])
        if isinstance(item, dict) and item.get("type") == "text"
    )


def to_llava(*, sample_id: str, messages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """LLaVA-style entry: ``image`` list (or ``video``) + ``conversations`` with placeholders.

    One ``<image>`` line per frame, in order, before the prompt, as LLaVA-NeXT
    and similar trainers expect for multi-image samples.
    """
    user, assistant = messages[0], messages[-1]
    images = media_paths([user], "image")
    videos = media_paths([user], "video")
    entry: dict[str, Any] = {"id": sample_id}
    if images:
        entry["image"] = images
        tokens = "\n".join([LLAVA_IMAGE_TOKEN] * len(images))
    else:
        entry["video"] = videos[0]
        tokens = LLAVA_VIDEO_TOKEN
    entry["conversations"] = [
        {"from": "human", "value": f"{tokens}\n{text_of(user)}"},
        {"from": "gpt", "value": text_of(assistant)},
    ]
    return entry
