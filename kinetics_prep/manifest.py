"""``kprep build-manifest``: extract records -> the seed-format manifest JSON (+ Arrow).

Reads ``extract_results.jsonl`` (and shard files) from the extract output
folder, joins optional annotation metadata on ``clip_id``, and writes, beside
``--output`` (the image root, see ``docs/schema.md``):

- ``<stem>.json``: every usable clip as ``{"id", "messages", <metadata>}``;
- ``<stem>.train.json`` / ``<stem>.validation.json`` when ``val_fraction > 0``;
- ``label_map.json``: the label id order and the answer template;
- ``<stem>_arrow/``: the same samples as a ``datasets`` DatasetDict;
- ``<stem>.report.json``: what was built and what was left out, by reason.

Clips that cannot become a sample (extract failed, frames gone, no label, ...)
are counted by reason, never silently dropped and never a crash. The outputs
are one set (:class:`kinetics_prep.outputs.OutputSet`): staged together and
installed after one commit record, so a kill leaves the previous set or the
new one. Only outputs an earlier build listed (or an Arrow folder with kprep's
marker) are replaced; anything else is refused before any work. Nothing is
written when no clip is usable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinetics_prep.conversation import answer_for, check_answer_template, choose_prompt
from kinetics_prep.errors import ConversationError, ManifestError
from kinetics_prep.fileio import atomic_write_json
from kinetics_prep.outputs import OutputError, OutputSet, check_replaceable, recover_output_set
from kinetics_prep.paths import UnsafePathError, inside
from kinetics_prep.schema import (
    BUILD_REPORT_NAME,
    CLIPS_DIR,
    DEFAULT_ANSWER_TEMPLATE,
    DEFAULT_MANIFEST,
    DEFAULT_PROMPT,
    EXTRACT_RECORDS_NAME,
    LABEL_MAP_NAME,
    SPLITS,
    VIDEO_SUFFIXES,
    Sample,
    arrow_dir,
    report_path,
    split_path,
    write_label_map,
    write_manifest,
)

log = logging.getLogger(__name__)

DEFAULT_OUTPUT = DEFAULT_MANIFEST
MEDIA_CHOICES = ("images", "video")
FORMAT_CHOICES = ("seed", "llava")
IMAGES_CHOICES = ("embed", "paths")

# Reasons a clip is left out (keys of ManifestSummary.left_out).
NOT_IN_ANNOTATIONS = "not in --annotations"
NO_LABEL = "no label"
FRAMES_MISSING = "frames missing"
VIDEO_MISSING = "video file missing"


@dataclass
class ManifestConfig:
    """Everything ``kprep build-manifest`` needs; checked on creation."""

    frames_dir: Path = field(
        metadata={"help": "The --output-dir of `kprep extract` (records + frames/)."}
    )
    output: Path = field(
        default=DEFAULT_OUTPUT,
        metadata={"help": "Manifest JSON; its folder is the image root all paths are relative to."},
    )
    annotations: Path | None = field(
        default=None,
        metadata={
            "help": "Kinetics CSV/JSON joined on clip_id (labels, times, split).",
            "default_help": "none",
        },
    )
    prompts: list[str] = field(
        default_factory=lambda: [DEFAULT_PROMPT],
        metadata={"help": "User prompts (one chosen per sample by seed).", "cli": False},
    )
    answer_template: str = field(
        default=DEFAULT_ANSWER_TEMPLATE,
        metadata={"help": "Answer text; {label} is the class name ('{label}' for the bare label)."},
    )
    media: str = field(
        default="images", metadata={"help": "images (the frames) | video (the clip)."}
    )
    val_fraction: float = field(
        default=0.0,
        metadata={"help": "Share held out as validation, grouped by YouTube video."},
    )
    seed: int = field(default=0, metadata={"help": "Seed for prompt choice and the split."})
    format: str = field(default="seed", metadata={"help": "seed (the recipe's messages) | llava."})
    arrow: bool = field(default=True, metadata={"help": "Also write <stem>_arrow/."})
    images: str = field(
        default="embed",
        metadata={"help": "Arrow images: embed (JPEG bytes) | paths (absolute paths)."},
    )

    def __post_init__(self) -> None:
        self.frames_dir = Path(self.frames_dir)
        self.output = Path(self.output)
        self.annotations = Path(self.annotations) if self.annotations is not None else None
        problems = []
        if self.media not in MEDIA_CHOICES:
            problems.append(f"--media ({self.media!r}) must be one of {', '.join(MEDIA_CHOICES)}")
        if self.format not in FORMAT_CHOICES:
            problems.append(
                f"--format ({self.format!r}) must be one of {', '.join(FORMAT_CHOICES)}"
            )
        if self.images not in IMAGES_CHOICES:
            problems.append(
                f"--images ({self.images!r}) must be one of {', '.join(IMAGES_CHOICES)}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"--val-fraction ({self.val_fraction}) must be >= 0 and < 1")
        if self.output.suffix != ".json":
            problems.append(f"--output ({str(self.output)!r}) must end in .json")
        if not self.prompts or not all(p.strip() for p in self.prompts):
            problems.append("--prompt must not be empty")
        try:
            check_answer_template(self.answer_template)
        except ConversationError as error:
            problems.append(str(error))
        if not self.frames_dir.is_dir():
            problems.append(
                f"--frames-dir ({str(self.frames_dir)!r}) is not a folder: pass the "
                "--output-dir of `kprep extract`"
            )
        if self.annotations is not None and not self.annotations.is_file():
            problems.append(f"--annotations ({str(self.annotations)!r}) does not exist")
        if problems:
            raise ManifestError("; ".join(problems))

    @property
    def image_root(self) -> Path:
        return self.output.parent

    @property
    def stem(self) -> str:
        return self.output.stem

    def split_path(self, split: str) -> Path:
        return split_path(self.output, split)

    @property
    def arrow_dir(self) -> Path:
        return arrow_dir(self.output)

    @property
    def label_map_path(self) -> Path:
        return self.output.with_name(LABEL_MAP_NAME)

    @property
    def report_path(self) -> Path:
        return report_path(self.output)


@dataclass
class ManifestSummary:
    """What a build did: counts for the CLI table and the dataset card."""

    records: int = 0
    samples: int = 0
    left_out: Counter = field(default_factory=Counter)
    splits: dict[str, int] = field(default_factory=dict)
    per_label: dict[str, int] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    arrow_dir: Path | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "samples": self.samples,
            "left_out": dict(sorted(self.left_out.items())),
            "splits": self.splits,
            "per_label": self.per_label,
            "num_labels": len(self.labels),
            "outputs": [str(p) for p in self.outputs],
            "arrow_dir": str(self.arrow_dir) if self.arrow_dir else None,
        }


# --------------------------------------------------------------------------- pure parts


def left_out_reason(record: Mapping[str, Any]) -> str | None:
    """Why an extract record cannot be a sample (None when it is ok)."""
    status = record.get("status")
    if status == "ok" and record.get("frames"):
        return None
    if status == "ok":
        return "extract ok but no frames"
    reason = record.get("reason")
    return f"extract {status}: {reason}" if reason and reason != status else f"extract {status}"


def group_key(*, clip_id: str, youtube_id: str | None) -> str:
    """The unit that must not straddle splits: the YouTube video (else the clip itself)."""
    if youtube_id:
        return youtube_id
    from kinetics_prep.annotations import parse_clip_id

    parsed = parse_clip_id(clip_id)
    return parsed[0] if parsed else clip_id


def assign_splits(
    groups: Mapping[str, str], *, val_fraction: float, seed: int = 0
) -> dict[str, str]:
    """``sample id -> "train" | "validation"``, whole groups at a time.

    Groups are ordered by a seeded hash of their key and moved to validation
    until it holds ``round(val_fraction * n)`` samples, so the split depends
    only on (seed, the set of groups), never on file order, and every clip of
    one YouTube video lands on the same side. Worked example: 10 clips in 5
    videos of 2 clips, ``val_fraction=0.3`` -> target 3 -> two videos (4 clips)
    go to validation, since a video is never cut in half. At least one group
    always stays in train.
    """
    out = dict.fromkeys(groups, "train")
    if val_fraction <= 0 or not groups:
        return out
    members: dict[str, list[str]] = {}
    for sample_id, group in groups.items():
        members.setdefault(group, []).append(sample_id)
    if len(members) < 2:
        raise ManifestError(
            f"--val-fraction ({val_fraction}) needs clips from at least 2 YouTube videos; "
            f"all {len(groups)} clips come from one: use --val-fraction 0"
        )
    target = max(1, round(val_fraction * len(groups)))

    def rank(group: str) -> tuple[str, str]:
        return hashlib.sha1(f"{seed}:{group}".encode()).hexdigest(), group

    ordered = sorted(members, key=rank)
    held = 0
    for group in ordered[:-1]:  # the last group always stays in train
        if held >= target:
            break
        for sample_id in members[group]:
            out[sample_id] = "validation"
        held += len(members[group])
    return out


def relative_to_root(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str:
    """``path`` relative to the image root, POSIX separators (``../`` when outside it)."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


# --------------------------------------------------------------------------- samples


def _video_for(record: Mapping[str, Any], clip_id: str, root: Path) -> str | None:
    """The clip's video relative to the root, preferring a copy inside it.

    Tried in order: the recorded path's tail from its last ``clips`` folder
    under the root (the dataset folder may have moved since extract), then
    ``root/clips/<clip_id>.*``, then the recorded path itself.
    """
    recorded = record.get("video_path")
    candidates = []
    if recorded:
        parts = Path(recorded).parts
        if CLIPS_DIR in parts:
            last = len(parts) - 1 - parts[::-1].index(CLIPS_DIR)
            candidates.append(root.joinpath(*parts[last:]))
    candidates += [root / CLIPS_DIR / f"{clip_id}{suffix}" for suffix in VIDEO_SUFFIXES]
    if recorded:
        candidates.append(Path(recorded))
    for candidate in candidates:
        if candidate.is_file():
            return relative_to_root(candidate, root)
    return None


def collect_samples(
    records: Mapping[str, Mapping[str, Any]],
    *,
    frames_dir: Path,
    image_root: Path,
    metadata: Mapping[str, Mapping[str, Any]] | None,
    prompts: Sequence[str],
    answer_template: str,
    media: str,
    seed: int,
) -> tuple[list[Sample], Counter]:
    """Every usable record as a Sample (sorted by id) and the left-out counts by reason."""
    samples: list[Sample] = []
    left_out: Counter = Counter()
    frames_abs = os.path.abspath(frames_dir)
    # one relpath for the folder, not one per frame (2.6M frames for Kinetics-700)
    prefix = relative_to_root(frames_abs, image_root)
    for clip_id in sorted(records):
        record = records[clip_id]
        reason = left_out_reason(record)
        if reason is not None:
            left_out[reason] += 1
            continue
        meta: Mapping[str, Any] = record
        if metadata is not None:
            found = metadata.get(clip_id)
            if found is None:
                left_out[NOT_IN_ANNOTATIONS] += 1
                continue
            meta = {**record, **{k: v for k, v in found.items() if v is not None}}
        label = meta.get("label")
        if not label:
            left_out[NO_LABEL] += 1
            continue
        names = record["frames"]
        try:  # these files get embedded and may be pushed: never outside --frames-dir
            files = [
                os.path.normpath(inside(frames_abs, name, where=f"extract record {clip_id!r}"))
                for name in names
            ]
        except UnsafePathError as error:
            raise ManifestError(f"{error}; in {frames_dir}/{EXTRACT_RECORDS_NAME}") from None
        if not all(os.path.isfile(f) for f in files):
            left_out[FRAMES_MISSING] += 1
            continue
        images = [posixpath.normpath(f"{prefix}/{name}") for name in names]
        video = None
        if media == "video":
            video = _video_for(record, clip_id, image_root)
            if video is None:
                left_out[VIDEO_MISSING] += 1
                continue
        samples.append(
            Sample(
                id=clip_id,
                label=str(label),
                prompt=choose_prompt(prompts=prompts, seed=seed, sample_id=clip_id),
                answer=answer_for(label=str(label), template=answer_template),
                images=[] if video else images,
                video=video,
                split="train",
                metadata={
                    "kinetics_split": meta.get("split"),
                    "youtube_id": meta.get("youtube_id"),
                    "time_start": _float(meta.get("time_start")),
                    "time_end": _float(meta.get("time_end")),
                    "frame_indices": [int(i) for i in record.get("frame_indices") or []] or None,
                    "timestamps": [float(t) for t in record.get("timestamps") or []] or None,
                },
            )
        )
    return samples, left_out


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


# --------------------------------------------------------------------------- writing


def _read_inputs(config: ManifestConfig) -> tuple[dict[str, dict[str, Any]], Any]:
    """The extract records (at least one) and the optional annotation metadata."""
    from kinetics_prep.extract import read_extract_records

    records = read_extract_records(config.frames_dir)
    if not records:
        raise ManifestError(
            f"--frames-dir ({str(config.frames_dir)!r}) has no {EXTRACT_RECORDS_NAME} records: "
            "run `kprep extract --output-dir` into it first"
        )
    metadata = None
    if config.annotations is not None:
        from kinetics_prep.annotations import load_clip_metadata

        metadata = load_clip_metadata(config.annotations)
    return records, metadata


def _split(samples: list[Sample], config: ManifestConfig) -> dict[str, list[Sample]]:
    """Set each sample's split (whole YouTube videos at a time); the non-empty splits."""
    groups = {
        s.id: group_key(clip_id=s.id, youtube_id=s.metadata.get("youtube_id")) for s in samples
    }
    split_of = assign_splits(groups, val_fraction=config.val_fraction, seed=config.seed)
    for sample in samples:
        sample.split = split_of[sample.id]
    by_split = {name: [s for s in samples if s.split == name] for name in SPLITS}
    return {name: rows for name, rows in by_split.items() if rows}


def _check_outputs(config: ManifestConfig) -> set[str]:
    """The files an earlier build listed as its outputs; refuse any other existing output.

    kprep replaces only what it wrote (:mod:`kinetics_prep.outputs`): files named
    in the previous ``<stem>.report.json``, an Arrow folder with kprep's marker.
    ``label_map.json`` is merged (ids kept), never discarded, so it is always ours
    to update.
    """
    owned: set[str] = set()
    hint = "move it away, or pick another --output"
    if config.report_path.exists():
        try:
            previous = json.loads(config.report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict) or not isinstance(previous.get("outputs"), list):
            raise ManifestError(
                f"{str(config.report_path)!r} exists and is not a kprep build report; "
                f"refusing to replace it: {hint}"
            )
        # Every output is a sibling of the report: match by name, so a build run from
        # another working directory (relative paths in the report) still finds them.
        root = config.report_path.parent
        owned = {
            os.path.abspath(root / Path(p).name) for p in previous["outputs"] if isinstance(p, str)
        }
    try:
        check_replaceable(config.output, flag="--output", owned_files=owned, hint=hint)
        if config.val_fraction > 0:
            for name in SPLITS:
                check_replaceable(
                    config.split_path(name), flag="split file", owned_files=owned, hint=hint
                )
        if config.arrow:
            check_replaceable(
                config.arrow_dir,
                flag="Arrow dataset folder",
                legacy=(BUILD_REPORT_NAME,),
                hint=f"{hint}, or pass --no-arrow",
            )
    except OutputError as error:
        raise ManifestError(str(error)) from None
    return owned


def _write_json_files(
    config: ManifestConfig,
    outputs: OutputSet,
    samples: list[Sample],
    by_split: Mapping[str, list[Sample]],
    summary: ManifestSummary,
    owned: set[str],
) -> None:
    """Stage the manifest, its split files (kprep's stale ones removed) and the label map."""
    write_manifest(outputs.stage(config.output), samples, format=config.format)
    summary.outputs.append(config.output)
    for name in SPLITS:
        path = config.split_path(name)
        if config.val_fraction > 0 and name in by_split:
            write_manifest(outputs.stage(path), by_split[name], format=config.format)
            summary.outputs.append(path)
        elif path.is_file() and os.path.abspath(path) in owned:
            outputs.remove(path)  # an earlier build's split no longer matches the manifest
        elif path.exists():
            log.warning("left %s alone: kprep did not write it", path)
    label_map = outputs.stage(config.label_map_path)
    if config.label_map_path.is_file():  # merged: existing ids keep their order
        shutil.copyfile(config.label_map_path, label_map)
    summary.labels = write_label_map(
        label_map, sorted(summary.per_label), answer_template=config.answer_template
    )
    summary.outputs.append(config.label_map_path)


def _config_json(config: ManifestConfig) -> dict[str, Any]:
    return {
        "frames_dir": str(config.frames_dir),
        "annotations": str(config.annotations) if config.annotations else None,
        "prompts": config.prompts,
        "answer_template": config.answer_template,
        "media": config.media,
        "val_fraction": config.val_fraction,
        "seed": config.seed,
        "format": config.format,
        "images": config.images if config.arrow else None,
    }


def build_manifest(config: ManifestConfig) -> ManifestSummary:
    """Build every output of ``kprep build-manifest``; see the module docstring."""
    started = time.monotonic()
    if recover_output_set(config.image_root, config.stem) == "rolled forward":
        log.warning("completed the outputs of a build-manifest run killed while installing them")
    owned = _check_outputs(config)  # refuse before any work if an output is not ours
    records, metadata = _read_inputs(config)
    samples, left_out = collect_samples(
        records,
        frames_dir=config.frames_dir,
        image_root=config.image_root,
        metadata=metadata,
        prompts=config.prompts,
        answer_template=config.answer_template,
        media=config.media,
        seed=config.seed,
    )
    summary = ManifestSummary(records=len(records), samples=len(samples), left_out=left_out)
    if not samples:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(left_out.items()))
        raise ManifestError(
            f"no usable clips among {len(records)} records in {str(config.frames_dir)!r} "
            f"({reasons}); nothing was written"
        )
    by_split = _split(samples, config)
    summary.splits = {name: len(rows) for name, rows in by_split.items()}
    summary.per_label = dict(sorted(Counter(str(s.label) for s in samples).items()))
    with OutputSet(config.image_root, config.stem) as outputs:  # one set: all or nothing
        _write_json_files(config, outputs, samples, by_split, summary, owned)
        report = summary.to_json()
        report["config"] = _config_json(config)
        if config.arrow:
            from kinetics_prep.arrow import write_arrow_dataset

            write_arrow_dataset(
                by_split,
                out_dir=outputs.stage(config.arrow_dir),
                labels=summary.labels,
                images=config.images,
                image_root=config.image_root,
                build_report=report,
            )
            summary.arrow_dir = config.arrow_dir
            summary.outputs.append(config.arrow_dir)
            report["arrow_dir"] = str(config.arrow_dir)
        report["outputs"] = [str(p) for p in summary.outputs] + [str(config.report_path)]
        atomic_write_json(outputs.stage(config.report_path), report)
        summary.outputs.append(config.report_path)
        outputs.commit()  # all of them become current together
    summary.seconds = time.monotonic() - started
    log.info("built %d samples (%s) in %.1f s", summary.samples, summary.splits, summary.seconds)
    return summary
