"""``kprep import-manifest``: an existing seed-format manifest + its frames -> kprep's Arrow dataset.

For a user who already has a dataset in the seed layout (``docs/schema.md``),
such as the published reference ``kinetic_3K.json``: a JSON list (or JSON
lines) of ``{"messages": [user: image items + prompt, assistant: answer]}``
whose image paths are relative to an image root. It becomes the same
``<stem>_arrow/`` DatasetDict that ``kprep build-manifest`` writes (with a
build report, so ``kprep push`` writes a dataset card), without re-extracting
frames; ``kprep validate`` and ``kprep push`` then work on it.

Nothing is changed on the way: each entry's conversation must be exactly what
:func:`kinetics_prep.conversation.build_messages` makes from its prompt,
answer and media (checked entry by entry), ids are the entry's ``id`` or the
clip folder of its frames (``frames/<clip_id>/frame_1.jpg``), and the answer is
kept as the sample's only caption unless the entry lists ``captions``. A
missing frame or an entry in another layout stops the import with a message
naming it, before anything is written.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinetics_prep.annotations import parse_clip_id
from kinetics_prep.errors import ConversationError, ManifestError
from kinetics_prep.manifest import IMAGES_CHOICES
from kinetics_prep.paths import UnsafePathError, inside
from kinetics_prep.schema import (
    BUILD_REPORT_NAME,
    Sample,
    arrow_dir,
    build_messages,
    media_paths,
    text_of,
)

log = logging.getLogger(__name__)


@dataclass
class ImportConfig:
    """What ``kprep import-manifest`` needs; checked on creation (flags come from the fields)."""

    manifest: Path = field(
        metadata={"help": "Seed-format manifest: JSON list or JSON lines.", "cli": False}
    )
    image_root: Path | None = field(
        default=None,
        metadata={"help": "Folder the image paths are relative to.", "default_help": "its folder"},
    )
    output: Path | None = field(
        default=None,
        metadata={"help": "Arrow folder to write.", "default_help": "<stem>_arrow beside it"},
    )
    images: str = field(
        default="embed", metadata={"help": "embed (JPEG bytes) | paths (absolute paths)."}
    )
    split: str = field(default="train", metadata={"help": "Split the samples go to."})

    def __post_init__(self) -> None:
        self.manifest = Path(self.manifest)
        self.image_root = Path(self.image_root) if self.image_root else self.manifest.parent
        if self.output is None:
            self.output = arrow_dir(self.manifest)
        self.output = Path(self.output)
        problems = []
        if not self.manifest.is_file():
            problems.append(f"manifest ({str(self.manifest)!r}) is not a file")
        if not self.image_root.is_dir():
            problems.append(f"--image-root ({str(self.image_root)!r}) is not a folder")
        if self.images not in IMAGES_CHOICES:
            problems.append(
                f"--images ({self.images!r}) must be one of {', '.join(IMAGES_CHOICES)}"
            )
        if not self.split or not self.split.replace("_", "").isalnum():
            problems.append(f"--split ({self.split!r}) must be a name such as train")
        if self.output.exists() and not (self.output / BUILD_REPORT_NAME).is_file():
            problems.append(
                f"--output ({str(self.output)!r}) exists and is not a kprep Arrow folder: "
                "pass a new folder"
            )
        if problems:
            raise ManifestError("; ".join(problems))


@dataclass
class ImportSummary:
    samples: int = 0
    labels: list[str] = field(default_factory=list)
    prompts: Counter = field(default_factory=Counter)
    frames_per_sample: Counter = field(default_factory=Counter)
    arrow_dir: Path | None = None
    seconds: float = 0.0


def read_entries(path: Path) -> list[dict[str, Any]]:
    """A manifest's entries: a JSON list, or one JSON object per line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path} cannot be read ({error})") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError as error:
                raise ManifestError(
                    f"{path} is neither a JSON list nor JSON lines (line {number}: {error})"
                ) from None
        data = entries
    if isinstance(data, dict):
        data = [data]  # a one-line JSONL file
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise ManifestError(f"{path} must hold a list of {{'messages': [...]}} entries")
    return data


def sample_from_entry(entry: dict[str, Any], *, index: int, image_root: Path, where: str) -> Sample:
    """One seed-format entry as a :class:`Sample`, unchanged (see the module docstring)."""
    messages = entry.get("messages")
    if not isinstance(messages, list) or len(messages) != 2:
        raise ManifestError(f"{where}: 'messages' must be one user turn and one assistant turn")
    images = media_paths(messages[:1], "image")
    videos = media_paths(messages[:1], "video")
    prompt, answer = text_of(messages[0]), text_of(messages[1])
    try:
        rebuilt = build_messages(
            prompt=prompt, answer=answer, images=images, video=videos[0] if videos else None
        )
    except ConversationError as error:
        raise ManifestError(f"{where}: {error}") from None
    if rebuilt != messages:
        raise ManifestError(
            f"{where}: the conversation is not in the seed layout (user: media items then one "
            "text item; assistant: one text item), so it cannot be imported unchanged"
        )
    sample_id = entry.get("id")
    if sample_id is None:
        first = images[0] if images else videos[0]
        sample_id = Path(first).parent.name if images else Path(first).stem
    sample_id = str(sample_id or index)
    for name in images:  # these files get embedded and may be pushed: never outside the root
        try:
            inside(image_root, name, where=where)
        except UnsafePathError as error:
            raise ManifestError(str(error)) from None
        if not (image_root / name).is_file():
            raise ManifestError(
                f"{where}: frame {name!r} not found under --image-root {str(image_root)!r}; "
                "pass the folder the paths are relative to"
            )
    captions = entry.get("captions")
    if captions is None:
        captions = [answer]
    parsed = parse_clip_id(sample_id)
    return Sample(
        id=sample_id,
        prompt=prompt,
        answer=answer,
        images=images,
        video=videos[0] if videos else None,
        label=entry.get("label") or None,
        split=str(entry.get("split") or "train"),
        metadata={
            "youtube_id": entry.get("youtube_id") or (parsed[0] if parsed else None),
            "kinetics_split": entry.get("kinetics_split"),
            "time_start": _float(entry.get("time_start"), parsed[1] if parsed else None),
            "time_end": _float(entry.get("time_end"), parsed[2] if parsed else None),
            "frame_indices": entry.get("frame_indices"),
            "timestamps": entry.get("timestamps"),
        },
        captions=[str(c) for c in captions],
    )


def _float(value: Any, fallback: float | None) -> float | None:
    if value is None:
        return None if fallback is None else float(fallback)
    return float(value)


def import_manifest(config: ImportConfig) -> ImportSummary:
    """Read, check and write the Arrow dataset of ``config.manifest``; see the module docstring."""
    from kinetics_prep.arrow import write_arrow_dataset

    started = time.monotonic()
    entries = read_entries(config.manifest)
    if not entries:
        raise ManifestError(f"{config.manifest} holds no entries; nothing was written")
    assert config.image_root is not None and config.output is not None
    samples = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = f"{config.manifest} entry {index}"
        sample = sample_from_entry(entry, index=index, image_root=config.image_root, where=where)
        if sample.id in seen:
            raise ManifestError(f"{where}: id {sample.id!r} repeats entry {seen[sample.id]}")
        seen[sample.id] = index
        sample.split = config.split
        samples.append(sample)
    summary = ImportSummary(samples=len(samples))
    summary.labels = sorted({s.label for s in samples if s.label})
    summary.prompts = Counter(s.prompt for s in samples)
    summary.frames_per_sample = Counter(len(s.images) for s in samples)
    report = {
        "records": len(entries),
        "samples": len(samples),
        "left_out": {},
        "splits": {config.split: len(samples)},
        "num_labels": len(summary.labels),
        "config": {
            "imported_from": str(config.manifest),
            "image_root": str(config.image_root),
            "prompts": [p for p, _ in summary.prompts.most_common()],
            "media": "video" if any(s.video for s in samples) else "images",
            "images": config.images,
        },
    }
    write_arrow_dataset(
        {config.split: samples},
        out_dir=config.output,
        labels=summary.labels,
        images=config.images,
        image_root=config.image_root,
        build_report=report,
    )
    summary.arrow_dir = config.output
    summary.seconds = time.monotonic() - started
    log.info("imported %d samples into %s", len(samples), config.output)
    return summary
