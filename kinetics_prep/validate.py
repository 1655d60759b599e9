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

A caption dataset (free-text answers, e.g. VATEX captions or the reference
``kinetic_3K.json``) needs no label map: when no map is found and no sample
carries a label, the label checks do not apply (``kind == "captions"``), and a
sample's ``captions``, when present, must be non-empty and hold its answer.

A file that cannot be read at all raises :class:`ValidationError`.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from kinetics_prep.conversation import LLAVA_IMAGE_TOKEN, media_paths, text_of

log = logging.getLogger(__name__)

LABEL_MAP_NAME = "label_map.json"
_FRAME_NUMBER = re.compile(r"frame_(\d+)\.[A-Za-z0-9]+$")

# Problem kinds (keys of ValidationReport.counts()).
BAD_MESSAGES = "bad messages"
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
MEDIA_MISMATCH = "media count mismatch"
BAD_CAPTIONS = "answer not among captions"


class ValidationError(ValueError):
    """The dataset cannot be read at all (not JSON, not an Arrow folder, ...)."""


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
    kind: str = "labels"  # labels | captions (free-text answers, no label map needed)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))


@dataclass
class _Item:
    """One sample, whatever it was read from, in the shape the checks need."""

    id: str
    split: str | None
    label: str | None
    answer: str
    images: list[tuple[str, bytes | Path]]  # (name as stored, embedded bytes or file path)
    placeholders: int
    video: str | None
    frame_indices: list[int] | None
    youtube_id: str | None
    captions: list[str] | None = None


def _decode_image(source: Any) -> None:
    from PIL import Image

    handle = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    with Image.open(handle) as image:
        image.load()


def _decode_video(path: str) -> None:
    from kinetics_prep.decode import read_frames

    read_frames(path, num_frames=1, sampling="center", decoder="auto", threads=1)


def _resolve(root: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else root / path


# --------------------------------------------------------------------------- readers


def _json_items(path: Path, root: Path) -> Iterator[_Item | Problem]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValidationError(f"{path} is not a readable JSON manifest ({error})") from None
    if not isinstance(entries, list):
        raise ValidationError(f"{path} must hold a JSON list of samples (kprep build-manifest)")
    for index, entry in enumerate(entries):
        sample_id = str(entry.get("id", index)) if isinstance(entry, dict) else str(index)
        if isinstance(entry, dict) and "conversations" in entry and "messages" not in entry:
            yield _llava_item(entry, sample_id, root)
            continue
        messages = entry.get("messages") if isinstance(entry, dict) else None
        if (
            not isinstance(messages, list)
            or len(messages) < 2
            or not all(isinstance(m, dict) for m in messages)
            or messages[-1].get("role") != "assistant"
        ):
            yield Problem(BAD_MESSAGES, sample_id, "'messages' must be user turn(s) then assistant")
            continue
        images = media_paths(messages, "image")
        videos = media_paths(messages, "video")
        yield _Item(
            id=sample_id,
            split=entry.get("split"),
            label=entry.get("label"),
            answer=text_of(messages[-1]),
            images=[(name, _resolve(root, name)) for name in images],
            placeholders=len(images),
            video=videos[0] if videos else None,
            frame_indices=entry.get("frame_indices"),
            youtube_id=entry.get("youtube_id"),
            captions=entry.get("captions"),
        )


def _llava_item(entry: dict[str, Any], sample_id: str, root: Path) -> _Item | Problem:
    """A ``--format llava`` entry: ``image`` list / ``video`` + ``conversations``."""
    turns = entry.get("conversations")
    if (
        not isinstance(turns, list)
        or len(turns) < 2
        or not all(isinstance(t, dict) for t in turns)
        or turns[-1].get("from") != "gpt"
    ):
        return Problem(BAD_MESSAGES, sample_id, "'conversations' must be human turn(s) then gpt")
    images = entry.get("image") or []
    images = [images] if isinstance(images, str) else list(images)
    prompt = "".join(str(t.get("value", "")) for t in turns[:-1])
    return _Item(
        id=sample_id,
        split=entry.get("split"),
        label=entry.get("label"),
        answer=str(turns[-1].get("value") or ""),
        images=[(name, _resolve(root, name)) for name in images],
        placeholders=prompt.count(LLAVA_IMAGE_TOKEN),
        video=entry.get("video"),
        frame_indices=entry.get("frame_indices"),
        youtube_id=entry.get("youtube_id"),
        captions=entry.get("captions"),
    )


def _arrow_items(path: Path) -> Iterator[_Item | Problem]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise ValidationError(
            f"{path} is not a saved Arrow dataset ({error}); pass the *_arrow folder"
        ) from None
    splits = loaded if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    for split, ds in splits.items():
        missing = {"id", "messages", "images"} - set(ds.column_names)
        if missing:
            raise ValidationError(f"{path} split {split!r} lacks columns {sorted(missing)}")
        label_feature = ds.features.get("label")
        names = getattr(label_feature, "names", None)
        rows = (row for batch in ds.with_format("arrow").iter(1000) for row in batch.to_pylist())
        for row in rows:  # raw storage: images stay {"bytes", "path"}, nothing is decoded yet
            messages = row["messages"]
            sample_id = str(row["id"])
            placeholders = sum(
                1 for m in messages for c in m["content"] if c.get("type") == "image"
            )
            images = []
            for image in row["images"] or []:
                name = image.get("path") or "<embedded>"
                if image.get("bytes"):
                    images.append((name, image["bytes"]))
                else:
                    images.append((name, _resolve(path.parent, name)))
            label = row.get("label")
            yield _Item(
                id=sample_id,
                split=split,
                label=names[label] if names is not None and label is not None else label,
                answer=text_of(messages[-1]) if messages else "",
                images=images,
                placeholders=placeholders,
                video=row.get("video"),
                frame_indices=row.get("frame_indices"),
                youtube_id=row.get("youtube_id"),
                captions=row.get("captions"),
            )


def _load_label_map(path: Path | None) -> tuple[list[str] | None, str | None]:
    if path is None or not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValidationError(f"--label-map {path} cannot be read ({error})") from None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, list):
        raise ValidationError(f"--label-map {path} has no 'labels' list")
    return [str(x) for x in labels], data.get("answer_template")


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
    is_arrow = path.is_dir()
    root = Path(image_root) if image_root is not None else path.parent
    report = ValidationReport(
        source=str(path), format="arrow" if is_arrow else "json", image_root=str(root)
    )
    map_path = Path(label_map) if label_map is not None else path.parent / LABEL_MAP_NAME
    if label_map is not None and not map_path.is_file():
        raise ValidationError(f"--label-map {map_path} does not exist")
    labels, template = _load_label_map(map_path)
    report.labels = len(labels or [])
    labelled = False  # any sample with a label (then a missing map is a problem)
    known = set(labels or [])
    answers = {template.format(label=x): x for x in labels or []} if template else {}

    items = _arrow_items(path) if is_arrow else _json_items(path, root)
    seen: set[str] = set()
    frame_counts: Counter = Counter()
    image_items: list[_Item] = []
    sides: dict[str, set[str]] = {}
    for item in items:
        if isinstance(item, Problem):
            report.problems.append(item)
            report.samples += 1
            continue
        report.samples += 1
        problems = report.problems
        if item.split is not None:
            report.splits[item.split] = report.splits.get(item.split, 0) + 1
        if item.id in seen:
            problems.append(Problem(DUPLICATE_ID, item.id, f"id {item.id!r} appears again"))
        seen.add(item.id)
        if not item.answer.strip():
            problems.append(Problem(EMPTY_ANSWER, item.id, "the assistant's answer is empty"))
        labelled = labelled or item.label is not None
        if item.captions is not None and (
            not all(isinstance(c, str) and c.strip() for c in item.captions)
            or item.answer not in item.captions
        ):
            problems.append(
                Problem(BAD_CAPTIONS, item.id, f"answer {item.answer!r} is not one of its captions")
            )
        if labels is not None:
            if item.label is not None and item.label not in known:
                problems.append(
                    Problem(UNKNOWN_LABEL, item.id, f"label {item.label!r} not in {map_path}")
                )
            elif template and item.label is not None:
                wanted = template.format(label=item.label)
                if item.answer != wanted:
                    problems.append(
                        Problem(
                            ANSWER_MISMATCH,
                            item.id,
                            f"answer {item.answer!r}, expected {wanted!r}",
                        )
                    )
            elif template and item.label is None and item.answer not in answers:
                problems.append(
                    Problem(
                        UNKNOWN_LABEL, item.id, f"answer {item.answer!r} names no label in the map"
                    )
                )
        if item.youtube_id and item.split:
            sides.setdefault(item.youtube_id, set()).add(item.split)
        if item.placeholders != len(item.images):
            problems.append(
                Problem(
                    MEDIA_MISMATCH,
                    item.id,
                    f"{item.placeholders} image placeholders but {len(item.images)} images",
                )
            )
        for name, source in item.images:
            report.files_checked += 1
            if isinstance(source, Path) and not source.is_file():
                problems.append(Problem(MISSING_FILE, item.id, f"{source} not found"))
                continue
            if decode:
                try:
                    _decode_image(source)
                except Exception as error:  # PIL raises many types for bad files
                    problems.append(Problem(UNDECODABLE, item.id, f"{name}: {error}"))
        if item.video is not None:
            report.files_checked += 1
            video = _resolve(root, item.video)
            if not video.is_file():
                problems.append(Problem(MISSING_FILE, item.id, f"{video} not found"))
            elif decode:
                from kinetics_prep.decode import DecodeError

                try:
                    _decode_video(str(video))
                except DecodeError as error:
                    problems.append(Problem(UNDECODABLE, item.id, str(error)))
        if item.images:
            frame_counts[len(item.images)] += 1
            image_items.append(item)
            if not _frame_order_ok([n for n, _ in item.images], item.frame_indices):
                problems.append(
                    Problem(FRAME_ORDER, item.id, "frame numbers / frame_indices do not increase")
                )
    if labels is None and labelled:
        report.problems.insert(
            0, Problem(NO_LABEL_MAP, "-", f"no {LABEL_MAP_NAME} next to {path}: pass --label-map")
        )
    if not labelled and not template:
        report.kind = "captions"
    expected: int | None = num_frames or (
        frame_counts.most_common(1)[0][0] if frame_counts else None
    )
    report.expected_frames = expected
    for item in image_items:
        if len(item.images) != expected:
            report.problems.append(
                Problem(FRAME_COUNT, item.id, f"{len(item.images)} frames, expected {expected}")
            )
    for youtube_id, split_names in sorted(sides.items()):
        if len(split_names) > 1:
            report.problems.append(
                Problem(LEAKAGE, youtube_id, f"clips in {', '.join(sorted(split_names))}")
            )
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
        "kind": report.kind,
        "counts": report.counts(),
        "problems": [p.__dict__ for p in report.problems],
    }
