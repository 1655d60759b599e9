"""The shared half of ``kprep download``: options, the plan, and the pure helpers.

Which rows this run does (shard, resume, ``--retry-failed``), how a clip file
is recognised (:func:`match_clip_name`, :data:`kinetics_prep.schema.VIDEO_SUFFIXES`),
and the parsing of the option values. The sources (``youtube``, ``mirror``,
``local``) live in their own modules; :mod:`kinetics_prep.download.report`
writes the records and the report.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinetics_prep.annotations import ClipRow, clip_id_for, is_youtube_id
from kinetics_prep.errors import DownloadConfigError
from kinetics_prep.schema import VIDEO_SUFFIXES

SOURCES = ("youtube", "mirror", "local")
LINK_MODES = ("auto", "hardlink", "symlink", "copy")
# Why a clip is missing. Only the transient ones are retried within a run.
REASONS = (
    "private",
    "removed",
    "copyright",
    "geo_blocked",
    "age_gated",
    "rate_limited",
    "network",
    "not_found",
    "archive_failed",
    "invalid_row",
    "unsupported_format",
    "other",
)
TRANSIENT_REASONS = frozenset({"rate_limited", "network"})
_LOOSE_CLIP_RE = re.compile(r"^(?P<id>[A-Za-z0-9_-]{11})_(?P<start>\d+)_(?P<end>\d+)$")


@dataclass
class DownloadConfig:
    """Options of ``kprep download`` (one field per flag)."""

    annotations: Path = field(metadata={"help": "Kinetics CSV or JSON file."})
    output_dir: Path = field(metadata={"help": "Clips, records and report go here."})
    source: str = field(default="youtube", metadata={"help": "youtube, mirror or local."})
    clips_dir: Path | None = field(
        default=None,
        metadata={"help": "local: folder of clips, any layout.", "flags": ("--clips",)},
    )
    mirror_urls: Path | None = field(
        default=None,
        metadata={"help": "mirror: file of .tar.gz URLs (optional sha256 after each)."},
    )
    workers: int = field(default=4, metadata={"help": "Parallel downloads."})
    retry_failed: bool = field(
        default=False,
        metadata={"help": "Retry only rows that failed before.", "flags": ("--retry-failed",)},
    )
    shard_index: int = field(default=0, metadata={"help": "This shard (0-based)."})
    num_shards: int = field(default=1, metadata={"help": "Number of shards."})
    max_height: int = field(default=360, metadata={"help": "youtube: highest format height."})
    exact_cuts: bool = field(
        default=True,
        metadata={
            "help": "youtube: re-encode at the cut points or not.",
            "flags": ("--exact-cuts/--fast-cuts",),
        },
    )
    cookies: Path | None = field(default=None, metadata={"help": "youtube: cookies.txt file."})
    proxy: str | None = field(default=None, metadata={"help": "Proxy URL for all requests."})
    rate_limit: str | None = field(
        default=None, metadata={"help": "Bandwidth cap per download, e.g. 2M."}
    )
    retries: int = field(default=3, metadata={"help": "Retries of transient failures."})
    backoff: float = field(
        default=5.0, metadata={"help": "Seconds before the first retry, doubled each time."}
    )
    socket_timeout: float = field(default=30.0, metadata={"help": "Seconds per read."})
    link_mode: str = field(
        default="auto",
        metadata={"help": "local: auto (hardlink, else copy), hardlink, symlink, copy."},
    )
    keep_archives: bool = field(
        default=False,
        metadata={"help": "mirror: keep the .tar.gz files.", "flags": ("--keep-archives",)},
    )
    url_template: str | None = field(
        default=None,
        metadata={
            "help": "youtube: fetch {youtube_id} from this URL instead of YouTube (a server "
            "you run; the tests use a loopback one)."
        },
    )
    allow_file_urls: bool = field(
        default=False,
        metadata={
            "help": "mirror: also accept file:// URLs (local tarballs).",
            "flags": ("--allow-file-urls",),
        },
    )
    max_archive_gb: float = field(
        default=64.0, metadata={"help": "mirror: refuse an archive larger than this (GB)."}
    )
    max_member_mb: float = field(
        default=1024.0,
        metadata={"help": "mirror: refuse a clip in an archive larger than this (MB)."},
    )
    archive_timeout: float = field(
        default=6 * 3600.0,
        metadata={"help": "mirror: seconds one archive download may take, all tries."},
    )

    def __post_init__(self) -> None:
        self.annotations = Path(self.annotations)
        self.output_dir = Path(self.output_dir)
        problems: list[str] = []
        if self.source not in SOURCES:
            problems.append(f"--source ({self.source!r}) must be one of {', '.join(SOURCES)}")
        if self.source == "local" and self.clips_dir is None:
            problems.append("--source local needs --clips DIR (the folder holding your clips)")
        if self.clips_dir is not None:
            self.clips_dir = Path(self.clips_dir)
            if not self.clips_dir.is_dir():
                problems.append(f"--clips ({str(self.clips_dir)!r}) is not a folder")
        if self.source == "mirror" and self.mirror_urls is None:
            problems.append("--source mirror needs --mirror-urls FILE (one .tar.gz URL per line)")
        if self.mirror_urls is not None:
            self.mirror_urls = Path(self.mirror_urls)
            if not self.mirror_urls.is_file():
                problems.append(f"--mirror-urls ({str(self.mirror_urls)!r}) is not a file")
            else:
                try:
                    parse_mirror_list(
                        self.mirror_urls.read_text(encoding="utf-8"),
                        allow_file=self.allow_file_urls,
                    )
                except ValueError as exc:
                    problems.append(f"--mirror-urls: {exc}")
        if self.workers < 1:
            problems.append(f"--workers ({self.workers}) must be >= 1")
        if self.num_shards < 1:
            problems.append(f"--num-shards ({self.num_shards}) must be >= 1")
        elif not 0 <= self.shard_index < self.num_shards:
            problems.append(
                f"--shard-index ({self.shard_index}) must be in [0, {self.num_shards - 1}]"
            )
        if self.max_height < 1:
            problems.append(f"--max-height ({self.max_height}) must be >= 1")
        if self.retries < 0:
            problems.append(f"--retries ({self.retries}) must be >= 0")
        if self.backoff < 0:
            problems.append(f"--backoff ({self.backoff}) must be >= 0")
        if self.socket_timeout <= 0:
            problems.append(f"--socket-timeout ({self.socket_timeout}) must be > 0")
        if self.link_mode not in LINK_MODES:
            problems.append(
                f"--link-mode ({self.link_mode!r}) must be one of {', '.join(LINK_MODES)}"
            )
        if self.cookies is not None:
            self.cookies = Path(self.cookies)
            if not self.cookies.is_file():
                problems.append(f"--cookies ({str(self.cookies)!r}) is not a file")
        if self.rate_limit is not None:
            try:
                parse_rate(self.rate_limit)
            except ValueError as exc:
                problems.append(str(exc))
        for flag, value in (
            ("--max-archive-gb", self.max_archive_gb),
            ("--max-member-mb", self.max_member_mb),
            ("--archive-timeout", self.archive_timeout),
        ):
            if not value > 0:
                problems.append(f"{flag} ({value}) must be > 0")
        if self.url_template is not None and "{youtube_id}" not in self.url_template:
            problems.append(f"--url-template ({self.url_template!r}) must contain {{youtube_id}}")
        if problems:
            raise DownloadConfigError("; ".join(problems))


def parse_rate(text: str) -> int:
    """``"500K"`` / ``"2M"`` / ``"1.5M"`` / ``"100000"`` -> bytes per second."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"--rate-limit ({text!r}) must be a positive size such as 500K or 2M")
    scale = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[match[2].upper()]
    return int(float(match[1]) * scale)


def shard_of(clip_id: str, num_shards: int) -> int:
    """Stable shard of a clip: independent of row order and of the other rows."""
    digest = hashlib.sha1(clip_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def backoff_delays(retries: int, base: float) -> list[float]:
    """Delays before each retry: ``base, 2*base, 4*base, ...`` (``retries`` of them)."""
    return [base * 2**attempt for attempt in range(retries)]


def match_clip_name(name: str, by_clip: dict[str, Any], by_youtube: dict[str, Any]) -> str | None:
    """Which wanted clip a file is, from its stem (whatever the suffix), else None.

    Callers check the suffix (:func:`kinetics_prep.schema.is_video_file`)
    themselves, so a clip named right with an unusable suffix can be reported.

    ``<id>_<start>_<end>`` (zero-padded or not) matches by clip id; a bare
    11-character stem matches the only wanted row with that YouTube id.
    """
    stem = Path(name).stem
    if stem in by_clip:
        return stem
    loose = _LOOSE_CLIP_RE.match(stem)
    if loose is not None:
        candidate = clip_id_for(
            youtube_id=loose["id"], time_start=int(loose["start"]), time_end=int(loose["end"])
        )
        return candidate if candidate in by_clip else None
    if is_youtube_id(stem) and stem in by_youtube:
        return by_youtube[stem]
    return None


def parse_mirror_list(text: str, *, allow_file: bool = False) -> list[tuple[str, str | None]]:
    """Lines of ``URL [sha256]`` (``#`` comments, blank lines ignored) -> pairs.

    Only ``http(s)://`` URLs: a list handed over by someone else must not make
    kprep read local files. ``file://`` only with ``allow_file`` (the explicit
    ``--allow-file-urls``, for tests and benchmarks on local tarballs).
    """
    entries: list[tuple[str, str | None]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        url = parts[0]
        checksum = parts[1].lower() if len(parts) > 1 else None
        if url.lower().startswith("file://") and not allow_file:
            raise ValueError(
                f"mirror list line {number}: {url!r} is a local file URL; "
                "pass --allow-file-urls to read local tarballs"
            )
        if not re.match(r"^(https?://|file://)", url, re.IGNORECASE):
            raise ValueError(f"mirror list line {number}: {url!r} is not an http(s) URL")
        if checksum is not None and not re.fullmatch(r"[0-9a-f]{64}", checksum):
            raise ValueError(f"mirror list line {number}: {parts[1]!r} is not a sha256 hex digest")
        entries.append((url, checksum))
    return entries


@dataclass
class Plan:
    rows: list[ClipRow]
    todo: list[ClipRow]
    skipped: int


def present_clips(clips: Path) -> dict[str, str]:
    """clip_id -> file name of finished clips (temp files start with a dot)."""
    found: dict[str, str] = {}
    for entry in os.scandir(clips):
        if entry.name.startswith("."):
            continue
        stem, ext = os.path.splitext(entry.name)
        if ext.lower() in VIDEO_SUFFIXES:
            found.setdefault(stem, entry.name)
    return found


def plan_rows(
    rows: list[ClipRow],
    latest: dict[str, dict[str, Any]],
    present: dict[str, str],
    config: DownloadConfig,
) -> Plan:
    if config.source == "mirror":
        mine = list(rows)  # mirror shards split the archive list, not the rows
    else:
        mine = [r for r in rows if shard_of(r.clip_id, config.num_shards) == config.shard_index]
    todo: list[ClipRow] = []
    skipped = 0
    for row in mine:
        record = latest.get(row.clip_id)
        status = record.get("status") if record else None
        on_disk = row.clip_id in present
        if status == "ok" and on_disk:
            skipped += 1
        elif status == "failed":
            if config.retry_failed:
                todo.append(row)
            else:
                skipped += 1
        elif config.retry_failed and not (status == "ok" and not on_disk):
            skipped += 1  # never tried: --retry-failed only redoes failures
        else:
            todo.append(row)
    return Plan(rows=mine, todo=todo, skipped=skipped)


def wanted_indexes(todo: list[ClipRow]) -> tuple[dict[str, ClipRow], dict[str, str]]:
    by_clip = {row.clip_id: row for row in todo}
    youtube_counts = Counter(row.youtube_id for row in todo)
    by_youtube = {
        row.youtube_id: row.clip_id for row in todo if youtube_counts[row.youtube_id] == 1
    }
    return by_clip, by_youtube


def move_into_place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
