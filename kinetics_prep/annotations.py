"""Kinetics annotation files: reading, clip naming and labels.

The official Kinetics-400/600/700(-2020) CSVs all look alike but differ in
small ways that break naive readers:

- columns ``label,youtube_id,time_start,time_end,split[,is_cc]``; ``label`` is
  absent in the test files, ``is_cc`` only exists in Kinetics-400;
- Kinetics-700-2020 spells the validation split ``validate``, the others
  ``val`` (both are read as ``val``);
- labels contain commas, parentheses and apostrophes
  (``"massaging person's head"``, ``hurling (sport)``), so a real CSV parser
  is used, never ``line.split(",")``.

The JSON form (``{youtube_id: {"annotations": {"label", "segment"}, "subset",
"url"}}``) is read too. A bad row is reported as a :class:`RowError` with file
and row number while every other row is still read: one typo must not cost a
19,906-row file.

Clip names follow the convention of the official crawler, the tarball mirror
and video2dataset::

    >>> clip_id_for(youtube_id="--6bJUbfpnQ", time_start=17, time_end=27)
    '--6bJUbfpnQ_000017_000027'

Ids and labels are never trusted as paths: a YouTube id must match the
11-character rule (so it holds no ``/`` or ``..``) and labels reach the file
system only through :func:`label_slug`.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kinetics_prep.errors import AnnotationError
from kinetics_prep.fileio import atomic_write_text

YOUTUBE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{11}$")
# The clip naming convention; the id part is greedy so ids with `_` still parse.
CLIP_ID_RE = re.compile(r"^(?P<youtube_id>[A-Za-z0-9_-]{11})_(?P<start>\d{6,})_(?P<end>\d{6,})$")

SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("youtube_id", "time_start", "time_end", "split")
KINETICS_VERSIONS = ("400", "600", "700")


@dataclass(frozen=True)
class RowError:
    """One unreadable row: where it is and why, for the report."""

    file: str
    row: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}: {self.message}"


@dataclass(frozen=True)
class ClipRow:
    """One valid annotation row. ``label`` is None in test files."""

    label: str | None
    youtube_id: str
    time_start: float
    time_end: float
    split: str
    is_cc: int | None = None
    row: int = 0

    @property
    def clip_id(self) -> str:
        return clip_id_for(
            youtube_id=self.youtube_id, time_start=self.time_start, time_end=self.time_end
        )

    def metadata(self) -> dict[str, Any]:
        """The keys carried into download and extract records."""
        return {
            "label": self.label,
            "youtube_id": self.youtube_id,
            "time_start": self.time_start,
            "time_end": self.time_end,
            "split": self.split,
        }


@dataclass
class Annotations:
    """Everything read from one file: the valid rows and the rejected ones."""

    path: str
    rows: list[ClipRow]
    errors: list[RowError]

    @property
    def labels(self) -> list[str]:
        return sorted({row.label for row in self.rows if row.label is not None})


# --------------------------------------------------------------------------- pure helpers


def is_youtube_id(value: str) -> bool:
    """True for an 11-character YouTube id (letters, digits, ``-``, ``_``)."""
    return bool(YOUTUBE_ID_RE.match(value))


def clip_id_for(*, youtube_id: str, time_start: float, time_end: float) -> str:
    """``<youtube_id>_<start:06d>_<end:06d>``: the name every Kinetics source uses.

    Times are truncated to whole seconds like the official crawler's ``%06d``.
    """
    if not is_youtube_id(youtube_id):
        raise ValueError(
            f"youtube_id ({youtube_id!r}) must be 11 characters of letters, digits, '-' or '_'"
        )
    start, end = int(time_start), int(time_end)
    if start < 0 or end < start:
        raise ValueError(f"times ({time_start}, {time_end}) must satisfy 0 <= start <= end")
    return f"{youtube_id}_{start:06d}_{end:06d}"


def parse_clip_id(clip_id: str) -> tuple[str, int, int] | None:
    """``(youtube_id, start, end)`` from a conventional clip name (no extension), else None."""
    match = CLIP_ID_RE.match(clip_id)
    if match is None:
        return None
    return match["youtube_id"], int(match["start"]), int(match["end"])


def youtube_url(youtube_id: str) -> str:
    """The full watch URL. Always pass this, never the bare id: ids may start with ``-``."""
    if not is_youtube_id(youtube_id):
        raise ValueError(
            f"youtube_id ({youtube_id!r}) must be 11 characters of letters, digits, '-' or '_'"
        )
    return f"https://www.youtube.com/watch?v={youtube_id}"


def normalise_label(text: str, known: Iterable[str] | None = None) -> str:
    """The canonical label: trimmed, inner whitespace collapsed, quotes kept.

    With ``known`` labels, a slug or a case variant (``air_drumming``,
    ``Air Drumming``) maps back to the canonical spelling (``air drumming``).
    """
    label = " ".join(text.strip().split())
    if len(label) >= 2 and label[0] == label[-1] == '"':
        label = label[1:-1].strip()
    if known is not None:
        index = {_fold(name): name for name in known}
        return index.get(_fold(label), label)
    return label


def _fold(label: str) -> str:
    return " ".join(label.replace("_", " ").lower().split())


def label_slug(label: str) -> str:
    """A folder-safe name for ``label``: spaces to ``_``, no separators, no leading dots.

    >>> label_slug("massaging person's head")
    "massaging_person's_head"
    >>> label_slug("../../x")
    '_.._.._x'
    """
    slug = re.sub(r"\s+", "_", label.strip())
    slug = re.sub(r"[^\w()'.,+&-]", "_", slug)
    if slug.startswith("."):
        slug = "_" + slug
    return slug or "_"


def normalise_split(value: str) -> str | None:
    """``train`` / ``val`` / ``test`` (``validate``, K700-2020's name, is ``val``), else None."""
    return SPLIT_ALIASES.get(value.strip().lower())


def known_labels(version: str = "400") -> list[str]:
    """The canonical class names of Kinetics-``version`` (400, 600, 700), packaged."""
    if version not in KINETICS_VERSIONS:
        raise ValueError(f"version ({version!r}) must be one of {', '.join(KINETICS_VERSIONS)}")
    text = resources.files("kinetics_prep").joinpath(f"data/kinetics{version}_labels.txt")
    return [line.strip() for line in text.read_text(encoding="utf-8").splitlines() if line.strip()]


def _parse_time(value: Any) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def validate_row(
    *,
    label: Any,
    youtube_id: Any,
    time_start: Any,
    time_end: Any,
    split: Any,
    is_cc: Any = None,
    row: int = 0,
) -> tuple[ClipRow | None, str | None]:
    """One raw row -> ``(ClipRow, None)`` or ``(None, reason)``; pure, table-tested."""
    yid = "" if youtube_id is None else str(youtube_id).strip()
    if not yid:
        return None, "missing youtube_id"
    if not is_youtube_id(yid):
        return None, f"youtube_id {yid!r} is not 11 characters of letters, digits, '-' or '_'"
    start, end = _parse_time(time_start), _parse_time(time_end)
    if start is None or end is None:
        return None, f"time_start/time_end ({time_start!r}, {time_end!r}) must be numbers"
    if start < 0 or end <= start:
        return None, f"times ({start:g}, {end:g}) must satisfy 0 <= time_start < time_end"
    split_name = normalise_split("" if split is None else str(split))
    if split_name is None:
        return None, f"unknown split {split!r} (expected train, val/validate or test)"
    canonical = normalise_label(str(label)) if label is not None else ""
    if not canonical and split_name != "test":
        return None, f"missing label in a {split_name} row"
    cc: int | None = None
    if is_cc is not None and str(is_cc).strip() != "":
        try:
            cc = int(float(str(is_cc)))
        except ValueError:
            return None, f"is_cc {is_cc!r} must be 0 or 1"
    return (
        ClipRow(
            label=canonical or None,
            youtube_id=yid,
            time_start=start,
            time_end=end,
            split=split_name,
            is_cc=cc,
            row=row,
        ),
        None,
    )


# --------------------------------------------------------------------------- readers


def read_annotations(path: str | Path) -> Annotations:
    """Read a Kinetics CSV or JSON annotation file: valid rows plus per-row errors.

    Duplicate clips (same id and times) keep the first row and report the rest.
    Raises :class:`AnnotationError` only when the file as a whole is unusable.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(
            f"annotation file {str(path)!r} not found: pass a Kinetics CSV or JSON"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"annotation file {str(path)!r} cannot be read: {exc}") from exc
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        raw = _json_rows(path, text)
    else:
        raw = _csv_rows(path, text)
    rows: list[ClipRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for number, fields in raw:
        if "_bad" in fields:
            errors.append(RowError(str(path), number, fields["_bad"]))
            continue
        clip, reason = validate_row(**fields, row=number)
        if clip is None:
            errors.append(RowError(str(path), number, reason or "invalid row"))
            continue
        first = seen.get(clip.clip_id)
        if first is not None:
            errors.append(
                RowError(str(path), number, f"duplicate clip {clip.clip_id} (first at row {first})")
            )
            continue
        seen[clip.clip_id] = number
        rows.append(clip)
    return Annotations(path=str(path), rows=rows, errors=errors)


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        raise AnnotationError(f"annotation file {str(path)!r} is empty") from None
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise AnnotationError(
            f"annotation file {str(path)!r} lacks column(s) {', '.join(missing)} "
            f"(header: {','.join(header)}); expected label,youtube_id,time_start,time_end,split"
        )
    index = {name: header.index(name) for name in header}
    out: list[tuple[int, dict[str, Any]]] = []
    for cells in reader:
        number = reader.line_num
        if not cells or all(not cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            # e.g. an unquoted comma in a label: the cells no longer line up.
            out.append((number, {"_bad": f"{len(cells)} cells but the header has {len(header)}"}))
            continue

        def cell(name: str, cells: list[str] = cells) -> str | None:
            return cells[index[name]] if name in index else None

        out.append(
            (
                number,
                {
                    "label": cell("label"),
                    "youtube_id": cell("youtube_id"),
                    "time_start": cell("time_start"),
                    "time_end": cell("time_end"),
                    "split": cell("split"),
                    "is_cc": cell("is_cc"),
                },
            )
        )
    return out


def _json_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"annotation file {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AnnotationError(
            f"annotation file {str(path)!r} must be a JSON object {{youtube_id: {{annotations, subset}}}}"
        )
    out: list[tuple[int, dict[str, Any]]] = []
    for number, (key, entry) in enumerate(data.items(), start=1):
        if not isinstance(entry, dict):
            out.append((number, {"_bad": f"entry {key!r} is not an object"}))
            continue
        ann = entry.get("annotations") or {}
        segment = ann.get("segment") if isinstance(ann, dict) else None
        if not isinstance(segment, list | tuple) or len(segment) != 2:
            out.append((number, {"_bad": f"entry {key!r} has no [start, end] segment"}))
            continue
        out.append(
            (
                number,
                {
                    "label": ann.get("label"),
                    "youtube_id": key,
                    "time_start": segment[0],
                    "time_end": segment[1],
                    "split": entry.get("subset"),
                    "is_cc": None,
                },
            )
        )
    return out


def load_clip_metadata(path: str | Path) -> dict[str, dict[str, Any]]:
    """``clip_id -> {label, youtube_id, time_start, time_end, split}`` for every valid row.

    What ``kprep extract --annotations`` merges into its records; bad rows are
    skipped here (``read_annotations`` reports them).
    """
    return {row.clip_id: row.metadata() for row in read_annotations(path).rows}


# --------------------------------------------------------------------------- writers


def write_annotations_csv(path: str | Path, rows: Iterable[ClipRow]) -> Path:
    """Write rows as a Kinetics CSV (``label,youtube_id,time_start,time_end,split``), atomically.

    Times are written as integers when whole, like the official files, so the
    output reads back with the same clip ids.
    """
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
    for row in rows:
        writer.writerow(
            [
                row.label or "",
                row.youtube_id,
                _fmt_time(row.time_start),
                _fmt_time(row.time_end),
                row.split,
            ]
        )
    return atomic_write_text(path, buffer.getvalue())


def _fmt_time(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
