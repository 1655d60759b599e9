"""Pure conversation building: one clip's frames + label -> the seed recipe's ``messages``.

Everything here is a keyword-only function of plain values (no I/O), so the
exact text a model is trained on is pinned by table-driven tests. The seed
format (``docs/schema.md``) is::

    [{"role": "user", "content": [{"type": "image", "image": "frames/c/frame_1.jpg"}, ...,
                                  {"type": "text", "text": <prompt>}]},
     {"role": "assistant", "content": [{"type": "text", "text": <answer>}]}]

The message builders themselves (seed, TRL and LLaVA layouts) and the default
prompt belong to the dataset contract, ``kinetics_prep.schema``, and are
re-exported here; this module adds the prompt and answer choices.
"""

from __future__ import annotations

import json
import string
import zlib
from collections.abc import Sequence

from kinetics_prep.errors import ConversationError
from kinetics_prep.schema import (
    DEFAULT_ANSWER_TEMPLATE,
    DEFAULT_PROMPT,
    build_messages,
    media_paths,
    text_of,
    to_llava,
    to_trl_messages,
)

__all__ = [
    "DEFAULT_ANSWER_TEMPLATE",
    "DEFAULT_PROMPT",
    "ConversationError",
    "answer_for",
    "build_messages",
    "check_answer_template",
    "choose_prompt",
    "media_paths",
    "parse_prompts",
    "text_of",
    "to_llava",
    "to_trl_messages",
]


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
