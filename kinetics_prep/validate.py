"""``kprep validate``: check a manifest JSON or Arrow folder against its image root.

Every problem is a :class:`Problem` row (kind, sample, message) collected into
a :class:`ValidationReport`; one bad sample never hides the others. Checks:

- every image / video file exists and decodes (embedded Arrow bytes included);
- each image sample has the expected number of frames (``num_frames``, else
  the most common count) and its frames are in order (``frame_<k>`` numbers
  and ``frame_indices`` increase);
- ids are unique (across splits for Arrow), answers are non-empty;
- labels are in ``label_map.json`` and each answer is the recorded
  ``answer_template`` applied to its label;
- no YouTube video has clips on both sides of the train/validation split.

A file that cannot be read at all raises :class:`ValidationError`.
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from kinetics_prep.errors import ConfigError, SchemaError, ValidationError
from kinetics_prep.schema import (
    BAD_MESSAGES,
    LABEL_MAP_NAME,
    MEDIA_MISMATCH,
    BadEntry,
    LabelMap,
    Sample,
    iter_entries,
    read_label_map,
)

log = logging.getLogger(__name__)

_FRAME_NUMBER = re.compile(r"frame_(\d+)\.[A-Za-z0-9]+$")

# Problem kinds (keys of ValidationReport.counts()); BAD_MESSAGES and
# MEDIA_MISMATCH come from the reader (kinetics_prep.schema).
DUPLICATE_ID = "duplicate id"
MISSING_FILE = "missing file"
UNDECODABLE = "does not decode"
FRAME_COUNT = "wrong frame count"
FRAME_ORDER = "frames out of order"
EMPTY_ANSWER = "empty answer"
UNKNOWN_LABEL = "label not in label map"
ANSWER_MISMATCH = "answer does not match label"
NO_LABEL_MAP = "no label map"
LEAKAGE = "youtube video in both splits"
__all__ = [
    "ANSWER_MISMATCH",
    "BAD_MESSAGES",
    "DUPLICATE_ID",
    "EMPTY_ANSWER",
    "FRAME_COUNT",
    "FRAME_ORDER",
    "LEAKAGE",
    "MEDIA_MISMATCH",
    "MISSING_FILE",
    "NO_LABEL_MAP",
    "UNDECODABLE",
    "UNKNOWN_LABEL",
    "Problem",
    "ValidationError",
    "ValidateOptions",
    "ValidationReport",
    "report_json",
    "validate_dataset",
]


@dataclass
class ValidateOptions:
    """The options of ``kprep validate`` (its flags are generated from these fields)."""

    image_root: Path | None = field(
        default=None,
        metadata={"help": "Folder paths are relative to.", "default_help": "the dataset's folder"},
    )
    num_frames: int | None = field(
        default=None,
        metadata={"help": "Frames each sample must have.", "default_help": "the common count"},
    )
    label_map: Path | None = field(
        default=None, metadata={"help": "label_map.json.", "default_help": "next to the dataset"}
    )
    decode: bool = field(default=True, metadata={"help": "Decode every file."})

    def __post_init__(self) -> None:
        if self.num_frames is not None and self.num_frames < 1:
            raise ConfigError(f"--num-frames ({self.num_frames}) must be >= 1")


@dataclass(frozen=True)
class Problem:
    kind: str
    sample: str
    message: str


@dataclass
class ValidationReport:
    """What was checked and every problem found."""

    source: str
    format: str  # json | arrow
    image_root: str
    samples: int = 0
    files_checked: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    expected_frames: int | None = None
    labels: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))


def _decode_image(source: Any) -> None:
    from PIL import Image

    handle = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    with Image.open(handle) as image:
        image.load()


def _decode_video(path: str) -> None:
    from kinetics_prep.decode import read_frames

    read_frames(path, num_frames=1, sampling="center", decoder="auto", threads=1)


def _media(sample: Sample) -> list[tuple[str, bytes | Path]]:
    """(name, embedded bytes or file path) per frame, as the reader returned them."""
    out: list[tuple[str, bytes | Path]] = []
    for image in sample.images:
        if isinstance(image, dict):
            name = image.get("path") or "<embedded>"
            out.append((name, image["bytes"]) if image.get("bytes") else (name, Path(name)))
        else:
            out.append((str(image), Path(image)))
    return out


def _label_map(path: Path, given: bool) -> LabelMap | None:
    if not path.is_file():
        if given:
            raise ValidationError(f"--label-map {path} does not exist")
        return None
    try:
        return read_label_map(path)
    except SchemaError as error:
        raise ValidationError(f"--label-map: {error}") from None


# --------------------------------------------------------------------------- checks


def _frame_order_ok(names: Sequence[str], frame_indices: Sequence[int] | None) -> bool:
    numbers = []
    for name in names:
        match = _FRAME_NUMBER.search(name)
        if match is not None:
            numbers.append(int(match.group(1)))
    if len(numbers) == len(names) and any(b <= a for a, b in pairwise(numbers)):
        return False
    if frame_indices:
        if len(frame_indices) != len(names):
            return False
        if any(b < a for a, b in pairwise(frame_indices)):
            return False
    return True


class _Checker:
    """The per-sample checks, then the checks across samples (frame count, leakage)."""

    def __init__(self, report: ValidationReport, label_map: LabelMap | None, decode: bool) -> None:
        self.report = report
        self.label_map = label_map
        self.decode = decode
        self.known = set(label_map.labels) if label_map else set()
        template = label_map.answer_template if label_map else None
        self.answers = {template.format(label=x): x for x in self.known} if template else {}
        self.seen: set[str] = set()
        self.frame_counts: Counter = Counter()
        self.image_samples: list[tuple[str, int]] = []
        self.sides: dict[str, set[str]] = {}

    def problem(self, kind: str, sample: str, message: str) -> None:
        self.report.problems.append(Problem(kind, sample, message))

    def add(self, item: Sample | BadEntry) -> None:
        self.report.samples += 1
        if isinstance(item, BadEntry):
            self.problem(item.kind, item.id, item.message)
            return
        if item.split is not None:
            self.report.splits[item.split] = self.report.splits.get(item.split, 0) + 1
        if item.id in self.seen:
            self.problem(DUPLICATE_ID, item.id, f"id {item.id!r} appears again")
        self.seen.add(item.id)
        if not item.answer.strip():
            self.problem(EMPTY_ANSWER, item.id, "the assistant's answer is empty")
        self.check_label(item)
        youtube_id = item.metadata.get("youtube_id")
        if youtube_id and item.split:
            self.sides.setdefault(youtube_id, set()).add(item.split)
        self.check_media(item)

    def check_label(self, item: Sample) -> None:
        if self.label_map is None:
            return
        where = self.label_map.path
        wanted = self.label_map.answer(item.label) if item.label is not None else None
        if item.label is not None and item.label not in self.known:
            self.problem(UNKNOWN_LABEL, item.id, f"label {item.label!r} not in {where}")
        elif wanted is not None and item.answer != wanted:
            self.problem(ANSWER_MISMATCH, item.id, f"answer {item.answer!r}, expected {wanted!r}")
        elif self.answers and item.label is None and item.answer not in self.answers:
            self.problem(
                UNKNOWN_LABEL, item.id, f"answer {item.answer!r} names no label in the map"
            )

    def check_media(self, item: Sample) -> None:
        media = _media(item)
        for name, source in media:
            self.report.files_checked += 1
            if isinstance(source, Path) and not source.is_file():
                self.problem(MISSING_FILE, item.id, f"{source} not found")
                continue
            if self.decode:
                try:
                    _decode_image(source)
                except Exception as error:  # PIL raises many types for bad files
                    self.problem(UNDECODABLE, item.id, f"{name}: {error}")
        if item.video is not None:
            self.report.files_checked += 1
            video = Path(item.video)
            if not video.is_file():
                self.problem(MISSING_FILE, item.id, f"{video} not found")
            elif self.decode:
                from kinetics_prep.decode import DecodeError

                try:
                    _decode_video(str(video))
                except DecodeError as error:
                    self.problem(UNDECODABLE, item.id, str(error))
        if media:
            self.frame_counts[len(media)] += 1
            self.image_samples.append((item.id, len(media)))
            if not _frame_order_ok([n for n, _ in media], item.metadata.get("frame_indices")):
                self.problem(FRAME_ORDER, item.id, "frame numbers / frame_indices do not increase")

    def finish(self, num_frames: int | None) -> None:
        expected: int | None = num_frames or (
            self.frame_counts.most_common(1)[0][0] if self.frame_counts else None
        )
        self.report.expected_frames = expected
        for sample_id, count in self.image_samples:
            if count != expected:
                self.problem(FRAME_COUNT, sample_id, f"{count} frames, expected {expected}")
        for youtube_id, split_names in sorted(self.sides.items()):
            if len(split_names) > 1:
                self.problem(LEAKAGE, youtube_id, f"clips in {', '.join(sorted(split_names))}")


def validate_dataset(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    num_frames: int | None = None,
    label_map: str | Path | None = None,
    decode: bool = True,
) -> ValidationReport:
    """Check a manifest JSON or an Arrow folder; see the module docstring.

    ``image_root`` defaults to the JSON's folder (or the Arrow folder's parent);
    ``label_map`` to ``label_map.json`` there. ``decode=False`` only checks
    that files exist (fast, for huge lists).
    """
    path = Path(path)
    if not path.exists():
        raise ValidationError(f"{path} does not exist: pass a manifest JSON or an *_arrow folder")
    root = Path(image_root) if image_root is not None else path.parent
    report = ValidationReport(
        source=str(path), format="arrow" if path.is_dir() else "json", image_root=str(root)
    )
    map_path = Path(label_map) if label_map is not None else path.parent / LABEL_MAP_NAME
    labels = _label_map(map_path, given=label_map is not None)
    report.labels = len(labels.labels) if labels else 0
    if labels is None:
        report.problems.append(
            Problem(NO_LABEL_MAP, "-", f"no {LABEL_MAP_NAME} next to {path}: pass --label-map")
        )
    checker = _Checker(report, labels, decode)
    try:
        for item in iter_entries(path, image_root=root):
            checker.add(item)
    except SchemaError as error:
        raise ValidationError(str(error)) from None
    checker.finish(num_frames)
    log.info("validated %s: %d samples, %d problems", path, report.samples, len(report.problems))
    return report


def report_json(report: ValidationReport) -> dict[str, Any]:
    """The report as plain JSON (``kprep validate --json``)."""
    return {
        "source": report.source,
        "format": report.format,
        "image_root": report.image_root,
        "ok": report.ok,
        "samples": report.samples,
        "files_checked": report.files_checked,
        "splits": report.splits,
        "expected_frames": report.expected_frames,
        "labels": report.labels,
        "counts": report.counts(),
        "problems": [p.__dict__ for p in report.problems],
    }
