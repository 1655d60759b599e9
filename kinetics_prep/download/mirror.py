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
from kinetics_prep.records import RecordWriter, read_merged, sharded_name
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
    max_bytes: int | None = None,
    deadline: float | None = None,
) -> int:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming with HTTP Range.

    A connection cut short keeps its bytes; the next try asks for the rest
    (``Range: bytes=N-``). A server that ignores Range (200) restarts from 0.
    More than ``max_bytes`` (announced or received) or past ``deadline`` (a
    ``time.monotonic()`` value, over all tries) is a failure, not a retry.
    Returns the size; raises :class:`ArchiveError` with a one-line reason.
    """
    limits = _Limits(url, max_bytes, deadline)
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
            total = _fetch_once(opener, request, part, have, timeout, chunk_size, limits)
        except ArchiveError:
            part.unlink(missing_ok=True)  # over a cap: nothing worth resuming
            raise
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
        limits.check_time(extra=delays[attempt - 1])
        log.info("%s: %s at %d bytes, resuming in %.1fs", url, error, size, delays[attempt - 1])
        sleep(delays[attempt - 1])
    if checksum is not None:
        digest = _sha256(part)
        if digest != checksum:
            part.unlink(missing_ok=True)
            raise ArchiveError(f"{url}: sha256 {digest} does not match the expected {checksum}")
    os.replace(part, dest)
    return dest.stat().st_size


class _Limits:
    """The size cap and overall deadline of one archive download."""

    def __init__(self, url: str, max_bytes: int | None, deadline: float | None) -> None:
        self.url, self.max_bytes, self.deadline = url, max_bytes, deadline

    def check_size(self, size: int | None) -> None:
        if size is not None and self.max_bytes is not None and size > self.max_bytes:
            raise ArchiveError(
                f"{self.url}: {size} bytes is over the {self.max_bytes}-byte cap "
                "(--max-archive-gb); raise it if the archive is genuine"
            )

    def check_time(self, extra: float = 0.0) -> None:
        if self.deadline is not None and time.monotonic() + extra > self.deadline:
            raise ArchiveError(
                f"{self.url}: not finished within --archive-timeout; raise it for slow links"
            )


def _fetch_once(
    opener: Any,
    request: urllib.request.Request,
    part: Path,
    have: int,
    timeout: float,
    chunk: int,
    limits: _Limits | None = None,
) -> int | None:
    """One GET; appends to ``part``; returns the full size when known."""
    import http.client

    limits = limits or _Limits(request.full_url, None, None)
    limits.check_time()
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
        limits.check_size(total)
        received = have if mode == "ab" else 0
        with open(part, mode) as handle:
            try:
                while True:
                    data = response.read(chunk)
                    if not data:
                        break
                    handle.write(data)
                    received += len(data)
                    limits.check_size(received)
                    limits.check_time()
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


MAX_REFUSED = 50  # refused members listed per archive (all are counted)


def extract_archive_members(
    archive: Path,
    staging: Path,
    wanted: Callable[[str], str | None],
    *,
    max_member_bytes: int | None = None,
    too_large: dict[str, str] | None = None,
) -> tuple[dict[str, Path], list[dict[str, str]], int, int]:
    """Stream ``archive``; extract regular files that ``wanted(name)`` maps to a clip id.

    Every member first passes tarfile's ``data`` filter (no ``..`` escapes, no
    links out, no device files; :func:`_data_filter` is the same check on a
    Python without it) and absolute names are refused outright. A wanted
    member over ``max_member_bytes`` is refused and noted in ``too_large``
    (clip id -> member name). Only :data:`MAX_REFUSED` refusals are listed.
    Returns ``(clip_id -> extracted path, refused members, member count,
    refused count)``.
    """
    staging.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    refused: list[dict[str, str]] = []
    refused_total = 0
    members = 0

    def refuse(name: str, reason: str) -> None:
        nonlocal refused_total
        refused_total += 1
        if len(refused) < MAX_REFUSED:
            refused.append({"name": name[:300], "reason": reason[:300]})

    with tarfile.open(archive, mode="r|*") as tar:
        for member in tar:
            members += 1
            if member.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member.name):
                refuse(member.name, "absolute path")
                continue
            try:
                _data_filter(member, str(staging))
            except tarfile.FilterError as exc:
                refuse(member.name, f"{type(exc).__name__}: {exc}")
                continue
            if not member.isreg():
                continue
            clip_id = wanted(os.path.basename(member.name))
            if clip_id is None or clip_id in found:
                continue
            if max_member_bytes is not None and member.size > max_member_bytes:
                refuse(member.name, f"{member.size} bytes, over --max-member-mb")
                if too_large is not None:
                    too_large.setdefault(clip_id, member.name)
                continue
            found[clip_id] = _extract_regular(tar, member, staging)
    return found, refused, members, refused_total


def _data_filter(member: tarfile.TarInfo, dest: str) -> None:
    """tarfile's ``data`` filter, or the same checks where Python lacks it (< 3.11.4)."""
    builtin = getattr(tarfile, "data_filter", None)
    if builtin is not None:
        builtin(member, dest)
        return
    error = getattr(tarfile, "FilterError", None)
    if error is None:  # very old tarfile: give it the class the callers catch
        error = type("FilterError", (tarfile.TarError,), {})
        tarfile.FilterError = error  # type: ignore[attr-defined,misc,assignment]
    root = os.path.realpath(dest)

    def inside(path: str) -> bool:
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    name = member.name
    if not inside(os.path.join(dest, name)):
        raise error(f"OutsideDestinationError: {name!r} would be extracted outside {dest}")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise error(f"SpecialFileError: {name!r} is a special file")
    if member.issym():
        target = os.path.join(dest, os.path.dirname(name), member.linkname)
        if os.path.isabs(member.linkname) or not inside(target):
            raise error(f"AbsoluteLinkError/LinkOutsideDestinationError: {name!r}")
    if member.islnk():
        if os.path.isabs(member.linkname) or not inside(os.path.join(dest, member.linkname)):
            raise error(f"LinkOutsideDestinationError: {name!r}")


def _extract_regular(tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path) -> Path:
    """Copy one regular member's bytes under ``staging`` (no modes, owners or links)."""
    target = staging / member.name
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    if source is None:  # cannot happen for a regular file
        raise tarfile.ReadError(f"cannot read {member.name}")
    with source, open(target, "wb") as handle:
        shutil.copyfileobj(source, handle, 1 << 20)
    return target


def run_mirror(
    todo: list[ClipRow],
    config: DownloadConfig,
    emit: Callable[[dict[str, Any]], None],
    sleep: Callable[[float], None],
) -> list[dict[str, Any]]:
    assert config.mirror_urls is not None
    entries = parse_mirror_list(
        config.mirror_urls.read_text(encoding="utf-8"), allow_file=config.allow_file_urls
    )
    out = config.output_dir
    state_path = out / sharded_name(MIRROR_ARCHIVES_NAME, config.shard_index, config.num_shards)
    state = read_merged(out, MIRROR_ARCHIVES_NAME, key="url")
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
        too_large: dict[str, str] = {}  # clip_id -> a member named like it, over the cap

        def wanted(name: str) -> str | None:
            clip_id = match_clip_name(name, by_clip, by_youtube)
            if clip_id is not None and not is_video_file(name):
                unsupported.setdefault(clip_id, name)
                return None
            return clip_id

        futures = [
            pool.submit(_mirror_archive, index, url, checksum, config, wanted, sleep, too_large)
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
            summary["finished_at"] = round(time.time(), 6)
            state_writer.write(summary)
            state[summary["url"]] = summary
            archives.append(summary)

    # Missing rows are only final once every archive has been read (all shards).
    state = {**read_merged(out, MIRROR_ARCHIVES_NAME, key="url"), **state}
    all_read = all(state.get(url, {}).get("status") in ("ok", "failed") for url, _ in entries)
    if config.num_shards == 1 or all_read:
        failed_urls = [url for url, _ in entries if state.get(url, {}).get("status") == "failed"]
        for clip_id in sorted(pending):
            if clip_id in too_large:
                reason = "too_large"
                error = f"{too_large[clip_id]!r} is over --max-member-mb {config.max_member_mb:g}"
            elif clip_id in unsupported:
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
    too_large: dict[str, str] | None = None,
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
                max_bytes=int(config.max_archive_gb * 1e9),
                deadline=started + config.archive_timeout,
            )
        summary["bytes"] = archive.stat().st_size
        found, refused, members, refused_total = extract_archive_members(
            archive,
            work,
            wanted,
            max_member_bytes=int(config.max_member_mb * 1e6),
            too_large=too_large,
        )
        summary.update(status="ok", members=members, clips=sorted(found), refused=refused)
        summary["refused_count"] = refused_total
        if refused_total:
            log.warning("%s: refused %d unsafe member(s)", url, refused_total)
        if not config.keep_archives:
            archive.unlink(missing_ok=True)
    except ArchiveError as exc:
        summary["error"] = str(exc)
    except (tarfile.TarError, OSError, EOFError) as exc:
        summary["error"] = f"cannot read {archive.name}: {type(exc).__name__}: {exc}"
        archive.unlink(missing_ok=True)
    summary["seconds"] = round(time.monotonic() - started, 3)
    return summary, found, work
