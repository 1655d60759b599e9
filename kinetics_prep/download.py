"""Annotation rows -> trimmed clips in ``OUT/clips/<clip_id>.mp4``, every row accounted for.

Three sources fill the same folder and write the same records:

- ``youtube``: yt-dlp's Python API downloads only the annotated segment
  (``download_ranges`` + ffmpeg), format capped at ``max_height``; errors are
  classified (private, removed, copyright, geo_blocked, age_gated,
  rate_limited, network, other) and transient ones retried with backoff.
- ``mirror``: the public tarball mirror (a list of ``.tar.gz`` URLs). Archives
  download resumably (HTTP Range), are checked against an optional sha256,
  then read as a stream; members pass tarfile's ``data`` filter (absolute
  names are refused outright) and only regular files named like a wanted clip
  are kept.
- ``local``: an existing folder of clips in any layout, matched by the naming
  convention or by YouTube id, hard-linked (or copied / symlinked) in.

``OUT/download_results.jsonl`` gets one record per annotation row (see
``docs/download.md``); a rerun skips finished clips, ``retry_failed`` redoes
only failures. Every file lands under a temp name first and is renamed into
place, so a killed run leaves nothing a rerun mistakes for a finished clip.

This module and ``hub.py`` are the only ones that touch the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinetics_prep.annotations import (
    ClipRow,
    atomic_write_text,
    clip_id_for,
    is_youtube_id,
    read_annotations,
    write_label_map,
    youtube_url,
)
from kinetics_prep.records import RecordWriter, iter_records, read_latest

log = logging.getLogger(__name__)

SOURCES = ("youtube", "mirror", "local")
LINK_MODES = ("auto", "hardlink", "symlink", "copy")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".3gp")
RESULTS_NAME = "download_results.jsonl"
REPORT_NAME = "download_report.json"
ARCHIVES_NAME = "mirror_archives.jsonl"
LABEL_MAP_NAME = "label_map.json"
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
    "other",
)
TRANSIENT_REASONS = frozenset({"rate_limited", "network"})
_LOOSE_CLIP_RE = re.compile(r"^(?P<id>[A-Za-z0-9_-]{11})_(?P<start>\d+)_(?P<end>\d+)$")


class DownloadConfigError(ValueError):
    """Bad options; the message lists every problem, naming the flag and value."""


@dataclass
class DownloadConfig:
    """Options of ``kprep download`` (one field per flag)."""

    annotations: Path = field(metadata={"help": "Kinetics CSV or JSON annotation file"})
    output_dir: Path = field(metadata={"help": "OUT: clips/, records and report go here"})
    source: str = field(default="youtube", metadata={"help": "youtube, mirror or local"})
    clips_dir: Path | None = field(default=None, metadata={"help": "local: folder of clips"})
    mirror_urls: Path | None = field(
        default=None, metadata={"help": "mirror: file of .tar.gz URLs, optional sha256 after each"}
    )
    workers: int = field(default=4, metadata={"help": "parallel downloads (threads)"})
    retry_failed: bool = field(default=False, metadata={"help": "retry only failed rows"})
    shard_index: int = field(default=0, metadata={"help": "this shard, 0-based"})
    num_shards: int = field(default=1, metadata={"help": "how many shards split the rows"})
    max_height: int = field(default=360, metadata={"help": "youtube: format height cap"})
    exact_cuts: bool = field(default=True, metadata={"help": "youtube: re-encode at the cuts"})
    cookies: Path | None = field(default=None, metadata={"help": "youtube: Netscape cookies file"})
    proxy: str | None = field(default=None, metadata={"help": "proxy URL for all requests"})
    rate_limit: str | None = field(default=None, metadata={"help": "bytes/s cap, e.g. 2M"})
    retries: int = field(default=3, metadata={"help": "retries of transient failures"})
    backoff: float = field(default=5.0, metadata={"help": "first retry delay, doubled each time"})
    socket_timeout: float = field(default=30.0, metadata={"help": "seconds per network read"})
    link_mode: str = field(default="auto", metadata={"help": "local: auto/hardlink/symlink/copy"})
    keep_archives: bool = field(default=False, metadata={"help": "mirror: keep .tar.gz files"})
    url_template: str | None = field(
        default=None, metadata={"help": "URL for {youtube_id} instead of YouTube (tests)"}
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
                    parse_mirror_list(self.mirror_urls.read_text(encoding="utf-8"))
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
        if self.url_template is not None and "{youtube_id}" not in self.url_template:
            problems.append(f"--url-template ({self.url_template!r}) must contain {{youtube_id}}")
        if problems:
            raise DownloadConfigError("; ".join(problems))


# --------------------------------------------------------------------------- pure helpers


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


def format_selector(max_height: int) -> str:
    """yt-dlp format: best video+audio at most ``max_height`` tall (unknown height allowed).

    Falls back to the smallest available when nothing is that small, rather
    than failing the clip.
    """
    h = int(max_height)
    return f"bv*[height<=?{h}]+ba/b[height<=?{h}]/wv*+ba/w"


def video_url(youtube_id: str, template: str | None = None) -> str:
    """The URL handed to yt-dlp: the full YouTube URL, or ``template`` filled in (tests)."""
    if template is None:
        return youtube_url(youtube_id)
    if not is_youtube_id(youtube_id):
        raise ValueError(f"youtube_id ({youtube_id!r}) is not a YouTube id")
    return template.format(youtube_id=youtube_id)


# Ordered: the first matching rule wins (a copyright notice also says "unavailable").
_ERROR_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("copyright", re.compile(r"copyright", re.I)),
    (
        "geo_blocked",
        re.compile(r"in your country|from your location|geo[- ]?restrict|geo[- ]?block", re.I),
    ),
    ("age_gated", re.compile(r"confirm your age|age[- ]restricted|inappropriate for some", re.I)),
    (
        "rate_limited",
        re.compile(
            r"HTTP Error 429|Too Many Requests|rate[- ]limit|not a bot|"
            r"content isn.t available, try again later",
            re.I,
        ),
    ),
    (
        "private",
        re.compile(r"private video|video is private|members[- ]only|Premium members", re.I),
    ),
    (
        "removed",
        re.compile(
            r"video unavailable|video is unavailable|no longer available|been removed|"
            r"account .*terminated|does not exist|HTTP Error 404|HTTP Error 410",
            re.I,
        ),
    ),
    (
        "network",
        re.compile(
            r"timed out|timeout|connection (?:reset|refused|aborted)|name resolution|"
            r"Name or service not known|Failed to resolve|Network is unreachable|"
            r"Remote end closed|IncompleteRead|TransportError|urlopen error|SSL|"
            r"HTTP Error 5\d\d|Errno 1(?:04|10|11|13)",
            re.I,
        ),
    ),
)


def classify_error(message: str, exc: BaseException | None = None) -> str:
    """The reason a download failed, from yt-dlp's message (and exception class).

    >>> classify_error("ERROR: [youtube] 0wR5jVB-WPk: Private video. Sign in if you've been granted access to this video")
    'private'
    """
    if exc is not None:
        for error in _exception_chain(exc):
            if type(error).__name__ == "GeoRestrictedError":
                return "geo_blocked"
            status = getattr(error, "status", None)
            if status == 429:
                return "rate_limited"
    for reason, pattern in _ERROR_RULES:
        if pattern.search(message):
            return reason
    return "other"


def _exception_chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        error = stack.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        info = getattr(error, "exc_info", None)
        if isinstance(info, tuple) and len(info) > 1 and isinstance(info[1], BaseException):
            stack.append(info[1])
        cause = getattr(error, "cause", None)  # ExtractorError(cause=HTTPError(...))
        if isinstance(cause, BaseException):
            stack.append(cause)
        stack.extend([error.__cause__, error.__context__])


def match_clip_name(name: str, by_clip: dict[str, Any], by_youtube: dict[str, Any]) -> str | None:
    """Which wanted clip a file is, from its name (any extension), else None.

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


def parse_mirror_list(text: str) -> list[tuple[str, str | None]]:
    """Lines of ``URL [sha256]`` (``#`` comments, blank lines ignored) -> pairs."""
    entries: list[tuple[str, str | None]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        url = parts[0]
        checksum = parts[1].lower() if len(parts) > 1 else None
        if not re.match(r"^(https?|file)://", url):
            raise ValueError(f"mirror list line {number}: {url!r} is not an http(s) URL")
        if checksum is not None and not re.fullmatch(r"[0-9a-f]{64}", checksum):
            raise ValueError(f"mirror list line {number}: {parts[1]!r} is not a sha256 hex digest")
        entries.append((url, checksum))
    return entries


# --------------------------------------------------------------------------- records and report


def _record(row: ClipRow, source: str, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"clip_id": row.clip_id, **row.metadata(), "source": source}
    record.update(
        {
            "status": "failed",
            "reason": None,
            "error": None,
            "path": None,
            "bytes": 0,
            "seconds": 0.0,
        }
    )
    record.update(fields)
    return record


def build_report(
    rows: list[ClipRow], latest: dict[str, dict[str, Any]], invalid: int
) -> dict[str, Any]:
    """requested / downloaded / failed (by reason) / pending, overall and per split."""

    def empty() -> dict[str, Any]:
        return {"requested": 0, "downloaded": 0, "failed": 0, "pending": 0, "failed_by_reason": {}}

    total = empty()
    per_split: dict[str, dict[str, Any]] = {}
    for row in rows:
        bucket = per_split.setdefault(row.split, empty())
        record = latest.get(row.clip_id)
        status = record.get("status") if record else None
        for target in (total, bucket):
            target["requested"] += 1
            if status == "ok":
                target["downloaded"] += 1
            elif status == "failed":
                target["failed"] += 1
                reason = str(record.get("reason") or "other") if record else "other"
                target["failed_by_reason"][reason] = target["failed_by_reason"].get(reason, 0) + 1
            else:
                target["pending"] += 1
    for target in [total, *per_split.values()]:
        target["failed_by_reason"] = dict(sorted(target["failed_by_reason"].items()))
    return {**total, "invalid_rows": invalid, "per_split": dict(sorted(per_split.items()))}


# --------------------------------------------------------------------------- the run


@dataclass
class _Plan:
    rows: list[ClipRow]
    todo: list[ClipRow]
    skipped: int


def download(
    config: DownloadConfig,
    *,
    on_start: Callable[[int], None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Run one download pass and return the availability report (also saved as JSON).

    ``on_start(total)`` and ``on_record(record)`` let the CLI draw progress.
    """
    ann = read_annotations(config.annotations)
    out = config.output_dir
    clips = out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    write_label_map(out / LABEL_MAP_NAME, ann.labels)
    results = out / RESULTS_NAME
    _end_torn_line(results)
    latest = read_latest(results)
    present = _present_clips(clips)

    started = time.monotonic()
    counts: Counter[str] = Counter()
    with RecordWriter(results) as writer:

        def emit(record: dict[str, Any]) -> None:
            writer.write(record)
            latest[str(record["clip_id"])] = record
            counts[record["status"]] += 1
            if on_record is not None:
                on_record(record)

        _record_invalid_rows(writer, ann.errors, results)
        plan = _plan(ann.rows, latest, present, config)
        # A clip on disk without an ok record (killed between rename and record): done.
        todo: list[ClipRow] = []
        for row in plan.todo:
            name = present.get(row.clip_id)
            if name is not None and not config.retry_failed:
                size = (clips / name).stat().st_size
                emit(_record(row, config.source, status="ok", path=f"clips/{name}", bytes=size))
            else:
                todo.append(row)
        if on_start is not None:
            on_start(len(todo))
        log.info(
            "%d rows in shard %d/%d: %d to do, %d already done",
            len(plan.rows),
            config.shard_index,
            config.num_shards,
            len(todo),
            plan.skipped,
        )
        archives: list[dict[str, Any]] | None = None
        if config.source == "youtube":
            _run_youtube(todo, config, emit, sleep)
        elif config.source == "local":
            _run_local(todo, config, emit)
        else:
            archives = _run_mirror(todo, config, emit, sleep)

    try:
        (out / ".partial").rmdir()  # only when empty: a parallel shard may be using it
    except OSError:
        pass
    report = build_report(ann.rows, latest, len(ann.errors))
    report.update(
        {
            "annotations": str(config.annotations),
            "source": config.source,
            "shard": [config.shard_index, config.num_shards],
            "this_run": {
                "attempted": len(todo),
                "ok": counts["ok"],
                "failed": counts["failed"],
                "skipped": plan.skipped,
                "seconds": round(time.monotonic() - started, 3),
            },
        }
    )
    if archives is not None:
        report["archives"] = archives
    atomic_write_text(out / REPORT_NAME, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def _end_torn_line(path: Path) -> None:
    """Terminate a line torn by a killed run, so the next record starts on its own line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) != b"\n":
            handle.write(b"\n")


def _present_clips(clips: Path) -> dict[str, str]:
    """clip_id -> file name of finished clips (temp files start with a dot)."""
    found: dict[str, str] = {}
    for entry in os.scandir(clips):
        if entry.name.startswith("."):
            continue
        stem, ext = os.path.splitext(entry.name)
        if ext.lower() in VIDEO_EXTENSIONS:
            found.setdefault(stem, entry.name)
    return found


def _plan(
    rows: list[ClipRow],
    latest: dict[str, dict[str, Any]],
    present: dict[str, str],
    config: DownloadConfig,
) -> _Plan:
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
    return _Plan(rows=mine, todo=todo, skipped=skipped)


def _record_invalid_rows(writer: RecordWriter, errors: list[Any], results: Path) -> None:
    """One record per unreadable row, once (keyed by file and row number)."""
    done = {
        (r.get("annotation_file"), r.get("row"))
        for r in iter_records(results)
        if r.get("reason") == "invalid_row"
    }
    for error in errors:
        if (error.file, error.row) in done:
            continue
        writer.write(
            {
                "clip_id": None,
                "annotation_file": error.file,
                "row": error.row,
                "status": "failed",
                "reason": "invalid_row",
                "error": error.message,
            }
        )


def _move_into_place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)


# --------------------------------------------------------------------------- youtube


def youtube_options(
    config: DownloadConfig, *, time_start: float, time_end: float, outtmpl: str
) -> dict[str, Any]:
    """The yt-dlp options for one clip: segment only, capped format, mp4 out."""
    from yt_dlp.utils import download_range_func

    options: dict[str, Any] = {
        "format": format_selector(config.max_height),
        "format_sort": [f"res:{config.max_height}", "ext:mp4:m4a"],
        "merge_output_format": "mp4",
        "download_ranges": download_range_func(None, [(float(time_start), float(time_end))]),
        "force_keyframes_at_cuts": config.exact_cuts,
        "outtmpl": outtmpl,
        "noplaylist": True,
        "overwrites": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _YtdlpLogger(),
        "retries": 2,
        "fragment_retries": 2,
        "extractor_retries": 1,
        "socket_timeout": config.socket_timeout,
        "postprocessors": [{"key": "FFmpegVideoRemuxer", "preferedformat": "mp4"}],
    }
    if config.cookies is not None:
        options["cookiefile"] = str(config.cookies)
    if config.proxy:
        options["proxy"] = config.proxy
    if config.rate_limit:
        options["ratelimit"] = parse_rate(config.rate_limit)
    from kinetics_prep.youtube_tools import js_runtime_options

    runtimes = js_runtime_options()  # the deno binary of kprep's install, off PATH or not
    if runtimes:
        options["js_runtimes"] = runtimes
    return options


class _YtdlpLogger:
    """Route yt-dlp's chatter to logging (library code never prints)."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp warning: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp error: %s", msg)


def _run_youtube(
    todo: list[ClipRow],
    config: DownloadConfig,
    emit: Callable[[dict[str, Any]], None],
    sleep: Callable[[float], None],
) -> None:
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        futures = [pool.submit(_youtube_clip, row, config, sleep) for row in todo]
        try:
            for future in as_completed(futures):
                emit(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _youtube_clip(
    row: ClipRow, config: DownloadConfig, sleep: Callable[[float], None]
) -> dict[str, Any]:
    """One clip with retries of transient failures; always returns a record."""
    started = time.monotonic()
    delays = backoff_delays(config.retries, config.backoff)
    attempt = 0
    while True:
        attempt += 1
        try:
            path = _youtube_fetch(row, config)
        except Exception as exc:  # yt-dlp raises many kinds; each becomes a record
            message = _one_line(str(exc)) or type(exc).__name__
            reason = classify_error(message, exc)
            if reason in TRANSIENT_REASONS and attempt <= len(delays):
                log.info("%s: %s, retrying in %.1fs", row.clip_id, reason, delays[attempt - 1])
                sleep(delays[attempt - 1])
                continue
            return _record(
                row,
                "youtube",
                reason=reason,
                error=message,
                attempts=attempt,
                seconds=round(time.monotonic() - started, 3),
            )
        return _record(
            row,
            "youtube",
            status="ok",
            path=f"clips/{path.name}",
            bytes=path.stat().st_size,
            attempts=attempt,
            seconds=round(time.monotonic() - started, 3),
        )


def _youtube_fetch(row: ClipRow, config: DownloadConfig) -> Path:
    from yt_dlp import YoutubeDL

    out = config.output_dir
    work = out / ".partial" / row.clip_id
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        options = youtube_options(
            config,
            time_start=row.time_start,
            time_end=row.time_end,
            outtmpl=str(work / "clip.%(ext)s"),
        )
        with YoutubeDL(options) as ydl:
            info = ydl.extract_info(video_url(row.youtube_id, config.url_template), download=True)
        produced = [
            Path(item["filepath"])
            for item in (info or {}).get("requested_downloads") or []
            if item.get("filepath")
        ]
        produced = [p for p in produced if p.is_file()] or sorted(
            p for p in work.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS
        )
        if not produced or produced[0].stat().st_size == 0:
            raise RuntimeError("yt-dlp finished without writing a video file")
        final = out / "clips" / f"{row.clip_id}{produced[0].suffix.lower()}"
        _move_into_place(produced[0], final)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _one_line(text: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())[:500]


# --------------------------------------------------------------------------- local


def _wanted_indexes(todo: list[ClipRow]) -> tuple[dict[str, ClipRow], dict[str, str]]:
    by_clip = {row.clip_id: row for row in todo}
    youtube_counts = Counter(row.youtube_id for row in todo)
    by_youtube = {
        row.youtube_id: row.clip_id for row in todo if youtube_counts[row.youtube_id] == 1
    }
    return by_clip, by_youtube


def index_local_clips(root: Path, todo: list[ClipRow]) -> dict[str, Path]:
    """clip_id -> file under ``root`` (any depth), first in sorted order wins."""
    by_clip, by_youtube = _wanted_indexes(todo)
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            clip_id = match_clip_name(name, by_clip, by_youtube)
            if clip_id is not None and clip_id not in found:
                found[clip_id] = Path(folder) / name
    return found


def _place(src: Path, dest: Path, mode: str) -> None:
    """Link or copy ``src`` to ``dest`` through a temp name, then rename."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        if mode in ("auto", "hardlink"):
            try:
                os.link(src, tmp)
            except OSError:
                if mode == "hardlink":
                    raise
                shutil.copy2(src, tmp)
        elif mode == "symlink":
            os.symlink(src.resolve(), tmp)
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _run_local(
    todo: list[ClipRow], config: DownloadConfig, emit: Callable[[dict[str, Any]], None]
) -> None:
    assert config.clips_dir is not None
    found = index_local_clips(config.clips_dir, todo)
    clips = config.output_dir / "clips"
    for row in todo:
        started = time.monotonic()
        src = found.get(row.clip_id)
        if src is None:
            emit(
                _record(
                    row,
                    "local",
                    reason="not_found",
                    error=f"no file named {row.clip_id}.* or {row.youtube_id}.* under {config.clips_dir}",
                )
            )
            continue
        dest = clips / f"{row.clip_id}{src.suffix.lower()}"
        try:
            if not (dest.exists() and dest.resolve() == src.resolve()):
                _place(src, dest, config.link_mode)
        except OSError as exc:
            emit(_record(row, "local", reason="other", error=f"{src}: {exc}"))
            continue
        emit(
            _record(
                row,
                "local",
                status="ok",
                path=f"clips/{dest.name}",
                bytes=dest.stat().st_size,
                seconds=round(time.monotonic() - started, 3),
                origin=str(src),
            )
        )


# --------------------------------------------------------------------------- mirror


class ArchiveError(RuntimeError):
    """One archive could not be fetched or verified (the reason is the message)."""


def fetch_resumable(
    url: str,
    dest: Path,
    *,
    checksum: str | None = None,
    retries: int = 3,
    backoff: float = 5.0,
    timeout: float = 30.0,
    proxy: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    chunk_size: int = 1 << 20,
) -> int:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming with HTTP Range.

    A connection cut short keeps its bytes; the next try asks for the rest
    (``Range: bytes=N-``). A server that ignores Range (200) restarts from 0.
    Returns the size; raises :class:`ArchiveError` with a one-line reason.
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    handlers: list[Any] = []
    if proxy:
        handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    opener = urllib.request.build_opener(*handlers)
    delays = backoff_delays(retries, backoff)
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": "kprep"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            total = _fetch_once(opener, request, part, have, timeout, chunk_size)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                total = _total_from_content_range(exc.headers.get("Content-Range")) or have
            elif exc.code in (408, 429) or exc.code >= 500:
                total = None
                error = f"HTTP {exc.code} {exc.reason}"
            else:
                raise ArchiveError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
        except (OSError, urllib.error.URLError, ValueError) as exc:
            total, error = None, f"{type(exc).__name__}: {exc}"
        else:
            error = "connection closed early"
        size = part.stat().st_size if part.exists() else 0
        if total is not None and size >= total:
            break
        attempt += 1
        if attempt > len(delays):
            raise ArchiveError(
                f"{url}: {error} after {attempt} tries ({size} bytes kept in {part.name})"
            )
        log.info("%s: %s at %d bytes, resuming in %.1fs", url, error, size, delays[attempt - 1])
        sleep(delays[attempt - 1])
    if checksum is not None:
        digest = _sha256(part)
        if digest != checksum:
            part.unlink(missing_ok=True)
            raise ArchiveError(f"{url}: sha256 {digest} does not match the expected {checksum}")
    os.replace(part, dest)
    return dest.stat().st_size


def _fetch_once(
    opener: Any, request: urllib.request.Request, part: Path, have: int, timeout: float, chunk: int
) -> int | None:
    """One GET; appends to ``part``; returns the full size when known."""
    import http.client

    with opener.open(request, timeout=timeout) as response:
        status = response.status
        if have and status == 206:
            start = _start_from_content_range(response.headers.get("Content-Range"))
            if start != have:
                raise ValueError(f"server resumed at byte {start}, expected {have}")
            total = _total_from_content_range(response.headers.get("Content-Range"))
            mode = "ab"
        else:  # 200: the whole file again
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        with open(part, mode) as handle:
            try:
                while True:
                    data = response.read(chunk)
                    if not data:
                        break
                    handle.write(data)
            except http.client.IncompleteRead as exc:
                handle.write(exc.partial)
                handle.flush()
                raise ConnectionError("connection closed early") from exc
            handle.flush()
            os.fsync(handle.fileno())
    if total is None:
        total = part.stat().st_size  # no length announced: take what came
    return total


def _start_from_content_range(value: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(match[1]) if match else None


def _total_from_content_range(value: str | None) -> int | None:
    match = re.search(r"/(\d+)\s*$", value or "")
    return int(match[1]) if match else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_clips(
    archive: Path, staging: Path, wanted: Callable[[str], str | None]
) -> tuple[dict[str, Path], list[dict[str, str]], int]:
    """Stream ``archive``; extract regular files that ``wanted(name)`` maps to a clip id.

    Every member first passes tarfile's ``data`` filter (no ``..`` escapes, no
    links out, no device files) and absolute names are refused outright.
    Returns ``(clip_id -> extracted path, refused members, member count)``.
    """
    staging.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    refused: list[dict[str, str]] = []
    members = 0
    with tarfile.open(archive, mode="r|*") as tar:
        for member in tar:
            members += 1
            if member.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member.name):
                refused.append({"name": member.name, "reason": "absolute path"})
                continue
            try:
                tarfile.data_filter(member, str(staging))
            except tarfile.FilterError as exc:
                refused.append({"name": member.name, "reason": f"{type(exc).__name__}: {exc}"})
                continue
            if not member.isreg():
                continue
            clip_id = wanted(os.path.basename(member.name))
            if clip_id is None or clip_id in found:
                continue
            tar.extract(member, str(staging), filter="data")
            found[clip_id] = staging / member.name
    return found, refused, members


def _run_mirror(
    todo: list[ClipRow],
    config: DownloadConfig,
    emit: Callable[[dict[str, Any]], None],
    sleep: Callable[[float], None],
) -> list[dict[str, Any]]:
    assert config.mirror_urls is not None
    entries = parse_mirror_list(config.mirror_urls.read_text(encoding="utf-8"))
    out = config.output_dir
    state_path = out / ARCHIVES_NAME
    _end_torn_line(state_path)
    state = read_latest(state_path, key="url")
    by_clip, by_youtube = _wanted_indexes(todo)
    pending = set(by_clip)

    def needed(url: str) -> bool:
        done = state.get(url)
        if done is None or done.get("status") != "ok":
            return True
        return bool(pending & set(done.get("clips") or []))

    jobs = [(i, url, checksum) for i, (url, checksum) in enumerate(entries) if needed(url)]
    if not pending:
        jobs = []  # nothing wanted: do not fetch a single archive
    if config.num_shards > 1:
        jobs = [job for job in jobs if job[0] % config.num_shards == config.shard_index]
    archives: list[dict[str, Any]] = []
    clips = out / "clips"
    with RecordWriter(state_path) as state_writer, ThreadPoolExecutor(config.workers) as pool:

        def wanted(name: str) -> str | None:
            return match_clip_name(name, by_clip, by_youtube)

        futures = [
            pool.submit(_mirror_archive, index, url, checksum, config, wanted, sleep)
            for index, url, checksum in jobs
        ]
        for future in as_completed(futures):
            summary, found, work = future.result()
            try:
                for clip_id, path in sorted(found.items()):
                    if clip_id not in pending:
                        continue
                    dest = clips / f"{clip_id}{path.suffix.lower()}"
                    _move_into_place(path, dest)
                    pending.discard(clip_id)
                    emit(
                        _record(
                            by_clip[clip_id],
                            "mirror",
                            status="ok",
                            path=f"clips/{dest.name}",
                            bytes=dest.stat().st_size,
                            seconds=summary["seconds"],
                            archive=summary["url"],
                        )
                    )
            finally:
                shutil.rmtree(work, ignore_errors=True)
            state_writer.write(summary)
            state[summary["url"]] = summary
            archives.append(summary)

    # Missing rows are only final once every archive has been read (all shards).
    all_read = all(state.get(url, {}).get("status") in ("ok", "failed") for url, _ in entries)
    if config.num_shards == 1 or all_read:
        failed_urls = [url for url, _ in entries if state.get(url, {}).get("status") == "failed"]
        for clip_id in sorted(pending):
            if failed_urls:
                reason = "archive_failed"
                error = (
                    f"not in the archives read; {len(failed_urls)} failed, e.g. {failed_urls[0]}"
                )
            else:
                reason = "not_found"
                error = f"not in any of the {len(entries)} archives"
            emit(_record(by_clip[clip_id], "mirror", reason=reason, error=error))
    return archives


def _mirror_archive(
    index: int,
    url: str,
    checksum: str | None,
    config: DownloadConfig,
    wanted: Callable[[str], str | None],
    sleep: Callable[[float], None],
) -> tuple[dict[str, Any], dict[str, Path], Path]:
    """Fetch and read one archive; never raises (the summary says what went wrong)."""
    started = time.monotonic()
    out = config.output_dir
    name = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1]) or "archive"
    archive = out / "archives" / f"{index:05d}-{name}"
    work = out / ".partial" / f"archive-{index:05d}"
    shutil.rmtree(work, ignore_errors=True)
    summary: dict[str, Any] = {"url": url, "status": "failed", "error": None, "bytes": 0}
    found: dict[str, Path] = {}
    try:
        if not archive.exists():
            fetch_resumable(
                url,
                archive,
                checksum=checksum,
                retries=config.retries,
                backoff=config.backoff,
                timeout=config.socket_timeout,
                proxy=config.proxy,
                sleep=sleep,
            )
        summary["bytes"] = archive.stat().st_size
        found, refused, members = extract_clips(archive, work, wanted)
        summary.update(status="ok", members=members, clips=sorted(found), refused=refused)
        if refused:
            log.warning("%s: refused %d unsafe member(s)", url, len(refused))
        if not config.keep_archives:
            archive.unlink(missing_ok=True)
    except ArchiveError as exc:
        summary["error"] = str(exc)
    except (tarfile.TarError, OSError, EOFError) as exc:
        summary["error"] = f"cannot read {archive.name}: {type(exc).__name__}: {exc}"
        archive.unlink(missing_ok=True)
    summary["seconds"] = round(time.monotonic() - started, 3)
    return summary, found, work
