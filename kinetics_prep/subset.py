"""Deterministic stratified subsets of a Kinetics annotation file ("Kinetics-3K").

A subset is chosen from the annotation rows alone, so anyone with the same
file and the same options gets the same clips. Within each class, rows are
ranked by ``sha256(f"{seed}:{clip_id}")``: the ranking does not depend on the
file's row order or on which other classes are chosen, so growing
``--per-class`` from 5 to 10 keeps the first 5.

``max_clips`` is split over the classes as evenly as the data allows
(water-filling): with 400 classes and 3,000 clips every class gets 7, and the
200 leftover clips go one each to the classes that rank first for the seed;
a class with too few rows gives its share to the others.

    >>> even_quotas({"a": 10, "b": 2, "c": 10}, total=12, seed=0)
    {'a': 5, 'b': 2, 'c': 5}
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinetics_prep.annotations import (
    ClipRow,
    atomic_write_text,
    normalise_label,
    normalise_split,
    read_annotations,
    write_annotations_csv,
)
from kinetics_prep.errors import SubsetError


@dataclass
class SubsetConfig:
    """Options of ``kprep subset``."""

    annotations: Path = field(metadata={"help": "Kinetics CSV or JSON to sample."})
    output: Path = field(
        metadata={
            "help": "CSV to write, e.g. manifests/k400_val_3k.csv.",
            "flags": ("--output", "-o"),
        }
    )
    classes: list[str] = field(
        default_factory=list,
        metadata={
            "help": "A class to keep (repeat the flag).",
            "default_help": "all",
        },
    )
    classes_file: Path | None = field(
        default=None, metadata={"help": "File with one class name per line."}
    )
    per_class: int | None = field(default=None, metadata={"help": "At most N clips per class."})
    max_clips: int | None = field(
        default=None, metadata={"help": "At most M clips, spread evenly over classes."}
    )
    split: str | None = field(default=None, metadata={"help": "Only rows of train / val / test."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (same seed, same subset)."})

    def __post_init__(self) -> None:
        self.annotations = Path(self.annotations)
        self.output = Path(self.output)
        problems: list[str] = []
        if self.per_class is not None and self.per_class < 1:
            problems.append(f"--per-class ({self.per_class}) must be >= 1")
        if self.max_clips is not None and self.max_clips < 1:
            problems.append(f"--max-clips ({self.max_clips}) must be >= 1")
        if self.split is not None:
            canonical = normalise_split(self.split)
            if canonical is None:
                problems.append(f"--split ({self.split!r}) must be train, val (validate) or test")
            else:
                self.split = canonical
        if self.output.exists() and self.annotations.exists():
            same = os.path.samefile(self.output, self.annotations)
        else:
            same = os.path.abspath(self.output) == os.path.abspath(self.annotations)
        if same:
            problems.append(
                f"--output ({str(self.output)!r}) is the --annotations file; "
                "write the subset to a new file"
            )
        elif self.output.exists() and not self.output.with_suffix(".subset.json").is_file():
            # kprep's subsets have their <stem>.subset.json beside them; anything else is the user's
            problems.append(
                f"--output ({str(self.output)!r}) exists and kprep did not write it (no "
                f"{self.output.with_suffix('.subset.json').name} beside it); refusing to "
                "replace it: choose another path, or move it away yourself"
            )
        if self.classes_file is not None:
            self.classes_file = Path(self.classes_file)
            if not self.classes_file.is_file():
                problems.append(f"--classes-file ({str(self.classes_file)!r}) is not a file")
        if problems:
            raise SubsetError("; ".join(problems))

    def class_names(self) -> list[str]:
        """``--classes`` plus the lines of ``--classes-file`` (``#`` comments skipped)."""
        names = list(self.classes)
        if self.classes_file is not None:
            for line in self.classes_file.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    names.append(line)
        return names


def rank_key(seed: int, clip_id: str) -> str:
    """The order within a class: a hash, so it ignores row order and other classes."""
    return hashlib.sha256(f"{seed}:{clip_id}".encode()).hexdigest()


def even_quotas(sizes: dict[str, int], *, total: int, seed: int) -> dict[str, int]:
    """Split ``total`` over classes as evenly as ``sizes`` allow (water-filling)."""
    quotas = {name: 0 for name in sizes}
    remaining = min(total, sum(sizes.values()))
    order = sorted(sizes, key=lambda name: rank_key(seed, f"class:{name}"))
    while remaining > 0:
        open_classes = [name for name in order if quotas[name] < sizes[name]]
        share = remaining // len(open_classes)
        if share == 0:
            for name in open_classes[:remaining]:
                quotas[name] += 1
            break
        for name in open_classes:
            take = min(share, sizes[name] - quotas[name])
            quotas[name] += take
            remaining -= take
    return dict(sorted(quotas.items()))


def select_subset(
    rows: Iterable[ClipRow],
    *,
    classes: Iterable[str] = (),
    per_class: int | None = None,
    max_clips: int | None = None,
    split: str | None = None,
    seed: int = 0,
) -> list[ClipRow]:
    """The chosen rows, sorted by label then rank. Pure and deterministic.

    Class names are matched to the file's labels leniently (``air_drumming``
    finds ``air drumming``); a name matching nothing is an error listing the
    closest labels.
    """
    pool = [row for row in rows if split is None or row.split == split]
    available = sorted({row.label for row in pool if row.label is not None})
    wanted = [normalise_label(name, available) for name in classes]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, available, n=2)
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            hints.append(f"{name!r}{hint}")
        where = f" in split {split!r}" if split else ""
        raise SubsetError(f"class(es) not in the annotations{where}: {', '.join(hints)}")
    keep = set(wanted) if wanted else None
    groups: dict[str, list[ClipRow]] = {}
    for row in pool:
        if row.label is None or (keep is not None and row.label not in keep):
            continue
        groups.setdefault(row.label, []).append(row)
    for label, members in groups.items():
        members.sort(key=lambda row: rank_key(seed, row.clip_id))
        if per_class is not None:
            groups[label] = members[:per_class]
    if max_clips is not None:
        quotas = even_quotas({k: len(v) for k, v in groups.items()}, total=max_clips, seed=seed)
        groups = {label: members[: quotas[label]] for label, members in groups.items()}
    return [row for label in sorted(groups) for row in groups[label]]


def build_subset(config: SubsetConfig, *, command: str | None = None) -> dict[str, Any]:
    """Read, select, write ``config.output`` (CSV) and ``<stem>.subset.json`` (how it was made).

    Returns that summary: rows, classes, per-class counts, skipped bad rows.
    """
    source_sha256 = hashlib.sha256(config.annotations.read_bytes()).hexdigest()  # before writing
    ann = read_annotations(config.annotations)
    chosen = select_subset(
        ann.rows,
        classes=config.class_names(),
        per_class=config.per_class,
        max_clips=config.max_clips,
        split=config.split,
        seed=config.seed,
    )
    if not chosen:
        raise SubsetError(
            f"no rows selected from {str(config.annotations)!r}: check --split and the classes"
        )
    counts: dict[str, int] = {}
    for row in chosen:
        counts[str(row.label)] = counts.get(str(row.label), 0) + 1
    write_annotations_csv(config.output, chosen)
    summary: dict[str, Any] = {
        "source": str(config.annotations),
        "source_sha256": source_sha256,
        "output": str(config.output),
        "command": command,
        "options": {
            "classes": config.class_names(),
            "per_class": config.per_class,
            "max_clips": config.max_clips,
            "split": config.split,
            "seed": config.seed,
        },
        "rows": len(chosen),
        "classes": len(counts),
        "per_class_min": min(counts.values()),
        "per_class_max": max(counts.values()),
        "invalid_rows_skipped": len(ann.errors),
        "counts": counts,
    }
    sidecar = config.output.with_suffix(".subset.json")
    atomic_write_text(sidecar, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
