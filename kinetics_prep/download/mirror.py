"""``--source mirror``: the public tarball mirror (a list of ``.tar.gz`` URLs).

Archives download resumably (HTTP Range), are checked against an optional
sha256, then read as a stream; members pass tarfile's ``data`` filter
(absolute names are refused outright) and only regular files named like a
wanted clip, with a :data:`kinetics_prep.schema.VIDEO_SUFFIXES` suffix, are
kept. A wanted clip found only under another suffix is recorded as
``unsupported_format``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from kinetics_prep.annotations import ClipRow
from kinetics_prep.download.plan import (
    DownloadConfig,
    backoff_delays,
    match_clip_name,
    move_into_place,
    parse_mirror_list,
    wanted_indexes,
)
from kinetics_prep.download.report import clip_record
from kinetics_prep.errors import ArchiveError
from kinetics_prep.records import RecordWriter, read_latest
from kinetics_prep.schema import CLIPS_DIR, MIRROR_ARCHIVES_NAME, VIDEO_SUFFIXES, is_video_file

log = logging.getLogger(__name__)


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


def extract_archive_members(
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


def run_mirror(
    todo: list[ClipRow],
    config: DownloadConfig,
    emit: Callable[[dict[str, Any]], None],
    sleep: Callable[[float], None],
) -> list[dict[str, Any]]:
    assert config.mirror_urls is not None
    entries = parse_mirror_list(config.mirror_urls.read_text(encoding="utf-8"))
    out = config.output_dir
    state_path = out / MIRROR_ARCHIVES_NAME
    state = read_latest(state_path, key="url")
    by_clip, by_youtube = wanted_indexes(todo)
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
    clips = out / CLIPS_DIR
    with RecordWriter(state_path) as state_writer, ThreadPoolExecutor(config.workers) as pool:
        unsupported: dict[str, str] = {}  # clip_id -> a member named like it, wrong suffix

        def wanted(name: str) -> str | None:
            clip_id = match_clip_name(name, by_clip, by_youtube)
            if clip_id is not None and not is_video_file(name):
                unsupported.setdefault(clip_id, name)
                return None
            return clip_id

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
                    move_into_place(path, dest)
                    pending.discard(clip_id)
                    emit(
                        clip_record(
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
            if clip_id in unsupported:
                reason = "unsupported_format"
                error = (
                    f"found only as {unsupported[clip_id]!r}, not one of "
                    f"{', '.join(VIDEO_SUFFIXES)}: convert it and use --source local"
                )
            elif failed_urls:
                reason = "archive_failed"
                error = (
                    f"not in the archives read; {len(failed_urls)} failed, e.g. {failed_urls[0]}"
                )
            else:
                reason = "not_found"
                error = f"not in any of the {len(entries)} archives"
            emit(clip_record(by_clip[clip_id], "mirror", reason=reason, error=error))
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
        found, refused, members = extract_archive_members(archive, work, wanted)
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
