"""``--source youtube``: yt-dlp's Python API fetches only the annotated segment.

The format is capped at ``max_height``, ffmpeg cuts at the segment (exactly
with ``exact_cuts``), errors are classified (private, removed, copyright,
geo_blocked, age_gated, rate_limited, network, other) and the transient ones
retried with backoff.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from kinetics_prep.annotations import ClipRow, is_youtube_id, youtube_url
from kinetics_prep.download.plan import (
    TRANSIENT_REASONS,
    DownloadConfig,
    backoff_delays,
    move_into_place,
    parse_rate,
)
from kinetics_prep.download.report import clip_record
from kinetics_prep.schema import CLIPS_DIR, VIDEO_SUFFIXES, is_video_file

log = logging.getLogger(__name__)


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


def run_youtube(
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
            return clip_record(
                row,
                "youtube",
                reason=reason,
                error=message,
                attempts=attempt,
                seconds=round(time.monotonic() - started, 3),
            )
        return clip_record(
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
        if config.cookies is not None:
            # yt-dlp saves cookies back on close: with several workers the user's file
            # would be rewritten concurrently (and can end up empty). Each download
            # reads its own copy; the user's file is never written.
            private = work / ".cookies.txt"
            shutil.copyfile(config.cookies, private)
            options["cookiefile"] = str(private)
        with YoutubeDL(options) as ydl:
            info = ydl.extract_info(video_url(row.youtube_id, config.url_template), download=True)
        produced = [
            Path(item["filepath"])
            for item in (info or {}).get("requested_downloads") or []
            if item.get("filepath")
        ]
        produced = [p for p in produced if p.is_file()] or sorted(
            p for p in work.iterdir() if is_video_file(p.name)
        )
        if not produced or produced[0].stat().st_size == 0:
            raise RuntimeError("yt-dlp finished without writing a video file")
        if not is_video_file(produced[0].name):
            raise RuntimeError(
                f"yt-dlp wrote {produced[0].name}, whose suffix extract does not read "
                f"({', '.join(VIDEO_SUFFIXES)})"
            )
        final = out / CLIPS_DIR / f"{row.clip_id}{produced[0].suffix.lower()}"
        move_into_place(produced[0], final)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _one_line(text: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())[:500]
