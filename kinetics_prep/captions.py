"""Captions as answers: which of a clip's captions a sample is trained on. Pure, no I/O.

``first`` is what the reference dataset did (the first English VATEX caption);
``random`` picks one per clip from a hash of (seed, clip id), so a clip keeps
its caption when other clips are added or left out; ``all`` answers with the
first and keeps every caption as a reference for evaluation (the sample's
``captions``).

    >>> choose_caption(["A man rides.", "Someone on a horse."], mode="first", seed=0, sample_id="c")
    'A man rides.'
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

CAPTION_MODES = ("first", "random", "all")


def choose_caption(captions: Sequence[str], *, mode: str, seed: int, sample_id: str) -> str:
    """The caption that answers sample ``sample_id`` (see the module docstring)."""
    if mode not in CAPTION_MODES:
        raise ValueError(f"--caption ({mode!r}) must be one of {', '.join(CAPTION_MODES)}")
    if not captions:
        raise ValueError(f"sample {sample_id!r} has no caption to answer with")
    if mode == "random":
        return captions[zlib.crc32(f"{seed}:{sample_id}".encode()) % len(captions)]
    return captions[0]
