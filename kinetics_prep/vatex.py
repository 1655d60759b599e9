"""VATEX caption files as an annotation source: clips, times and English captions.

VATEX (Wang et al., ICCV 2019) gives ten English (and ten Chinese) captions
for Kinetics-600 clips. Its JSON files (``vatex_training_v1.0.json``,
``vatex_validation_v1.0.json``, ``vatex_public_test_english_v1.1.json``) are
lists of::

    {"videoID": "Ptf_2VRj-V0_000122_000132", "enCap": ["A man ...", ...], "chCap": [...]}

``videoID`` is the Kinetics clip name ``<youtube_id>_<start:06d>_<end:06d>``
(the id itself may contain ``_``), so each entry maps to a YouTube id, a
segment and its captions; a test file may carry no ``enCap``. VATEX names no
action class: :func:`join_kinetics_labels` recovers it from Kinetics-600 CSVs
by clip id.

The reference dataset (``docs/schema.md``) answered every clip with the
*first* English caption of ``vatex_training_v1.0.json``.

The entries themselves are parsed in :mod:`kinetics_prep.annotations`
(``parse_vatex_entries``), so ``kprep download --annotations`` reads VATEX
files with the same rules. Like there, a bad entry is a :class:`RowError`
(file and entry number) and every other entry is still read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinetics_prep.annotations import (
    RowError,
    is_vatex,
    parse_vatex_entries,
    read_annotations,
    vatex_split,
)
from kinetics_prep.errors import AnnotationError

VATEX_CITATION = """@inproceedings{wang2019vatex,
  title     = {VaTeX: A Large-Scale, High-Quality Multilingual Dataset for Video-and-Language Research},
  author    = {Wang, Xin and Wu, Jiawei and Chen, Junkun and Li, Lei and Wang, Yuan-Fang and Wang, William Yang},
  booktitle = {ICCV},
  year      = {2019}
}"""
VATEX_LICENSE = "cc-by-4.0"


@dataclass(frozen=True)
class VatexClip:
    """One VATEX entry: the clip it names and its English captions (possibly none)."""

    clip_id: str
    youtube_id: str
    time_start: float
    time_end: float
    captions: tuple[str, ...]
    split: str
    label: str | None = None
    row: int = 0


@dataclass
class VatexFile:
    """Every readable entry of one VATEX file, and the entries that were not."""

    path: str
    clips: list[VatexClip]
    errors: list[RowError] = field(default_factory=list)

    def captions(self) -> dict[str, list[str]]:
        """``clip_id -> English captions`` (clips without captions are left out)."""
        return {c.clip_id: list(c.captions) for c in self.clips if c.captions}


split_from_name = vatex_split  # the split a VATEX file holds, from its name


def parse_vatex(data: Any, *, path: str, split: str | None = None) -> VatexFile:
    """Entries of a parsed VATEX file -> :class:`VatexFile`; pure (no I/O).

    The entries are read by :func:`kinetics_prep.annotations.parse_vatex_entries`,
    the same parser ``kprep download`` / ``extract --annotations`` use.
    """
    entries, errors = parse_vatex_entries(data, path=path, split=split)
    clips = [
        VatexClip(
            clip_id=row.clip_id,
            youtube_id=row.youtube_id,
            time_start=row.time_start,
            time_end=row.time_end,
            captions=captions,
            split=row.split,
            row=row.row,
        )
        for row, captions in entries
    ]
    return VatexFile(path=path, clips=clips, errors=errors)


def read_vatex(
    path: str | Path, *, kinetics: Sequence[str | Path] = (), split: str | None = None
) -> VatexFile:
    """Read a VATEX JSON file; with ``kinetics`` CSVs, add each clip's Kinetics-600 label."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise AnnotationError(f"VATEX file {str(path)!r} not found") from None
    except (OSError, ValueError) as error:
        raise AnnotationError(f"VATEX file {str(path)!r} cannot be read: {error}") from None
    loaded = parse_vatex(data, path=str(path), split=split)
    if kinetics:
        loaded.clips = join_kinetics_labels(loaded.clips, kinetics)
    return loaded


def join_kinetics_labels(
    clips: Iterable[VatexClip], kinetics: Sequence[str | Path]
) -> list[VatexClip]:
    """Each clip with the label its Kinetics annotation rows give (None when absent)."""
    labels: dict[str, str] = {}
    for csv_path in kinetics:
        for row in read_annotations(csv_path).rows:
            if row.label is not None:
                labels.setdefault(row.clip_id, row.label)
    out = []
    for clip in clips:
        label = labels.get(clip.clip_id)
        out.append(clip if label is None else _with_label(clip, label))
    return out


def _with_label(clip: VatexClip, label: str) -> VatexClip:
    from dataclasses import replace

    return replace(clip, label=label)


def load_captions(path: str | Path) -> dict[str, list[str]]:
    """``clip_id -> captions`` from a caption file, for ``build-manifest --captions``.

    Accepted forms: a VATEX JSON file (``videoID`` / ``enCap``); a JSON object
    ``{clip_id: [captions]}``; JSON lines ``{"clip_id": ..., "captions": [...]}``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise AnnotationError(f"--captions {str(path)!r} cannot be read ({error})") from None
    stripped = text.lstrip()
    try:
        if stripped.startswith(("[", "{")) and not _looks_like_jsonl(stripped):
            data = json.loads(text)
        else:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as error:
        raise AnnotationError(
            f"--captions {str(path)!r} is not JSON or JSON lines ({error})"
        ) from None
    if is_vatex(data):
        return parse_vatex(data, path=str(path)).captions()
    if isinstance(data, Mapping):
        return _mapping_captions(data.items(), path)
    if isinstance(data, list) and all(isinstance(e, dict) and "clip_id" in e for e in data):
        return _mapping_captions(((e["clip_id"], e.get("captions")) for e in data), path)
    raise AnnotationError(
        f"--captions {str(path)!r}: expected a VATEX file (videoID/enCap), "
        "{clip_id: [captions]} or JSON lines {clip_id, captions}"
    )


def _looks_like_jsonl(text: str) -> bool:
    first = text.split("\n", 1)[0].strip()
    if not first.startswith("{") or "\n" not in text.strip():
        return False
    try:
        json.loads(first)
    except ValueError:
        return False
    return True


def _mapping_captions(items: Iterable[tuple[Any, Any]], path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for clip_id, captions in items:
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise AnnotationError(
                f"--captions {str(path)!r}: captions of {clip_id!r} must be a list of strings"
            )
        kept = [c.strip() for c in captions if c.strip()]
        if kept:
            out[str(clip_id)] = kept
    return out
