"""``kprep download``: annotation rows -> ``OUT/clips/<clip_id>.<suffix>``, every row accounted for.

Three sources fill the same folder and write the same records:
:mod:`~kinetics_prep.download.youtube`, :mod:`~kinetics_prep.download.mirror`
and :mod:`~kinetics_prep.download.local`. ``OUT/download_results.jsonl`` gets
one record per annotation row (see ``docs/download.md``); a rerun skips
finished clips, ``retry_failed`` redoes only failures. Every file lands under a
temp name first and is renamed into place, so a killed run leaves nothing a
rerun mistakes for a finished clip.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from kinetics_prep.annotations import ClipRow, read_annotations
from kinetics_prep.download.local import run_local
from kinetics_prep.download.mirror import run_mirror
from kinetics_prep.download.plan import DownloadConfig, plan_rows, present_clips
from kinetics_prep.download.report import build_report, clip_record, record_invalid_rows
from kinetics_prep.download.youtube import run_youtube
from kinetics_prep.fileio import atomic_write_json
from kinetics_prep.records import RecordWriter, read_latest
from kinetics_prep.schema import (
    CLIPS_DIR,
    DOWNLOAD_RECORDS_NAME,
    DOWNLOAD_REPORT_NAME,
    LABEL_MAP_NAME,
    write_label_map,
)

log = logging.getLogger(__name__)


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
    clips = out / CLIPS_DIR
    clips.mkdir(parents=True, exist_ok=True)
    write_label_map(out / LABEL_MAP_NAME, ann.labels)
    results = out / DOWNLOAD_RECORDS_NAME
    latest = read_latest(results)
    present = present_clips(clips)

    started = time.monotonic()
    counts: Counter[str] = Counter()
    with RecordWriter(results) as writer:

        def emit(record: dict[str, Any]) -> None:
            writer.write(record)
            latest[str(record["clip_id"])] = record
            counts[record["status"]] += 1
            if on_record is not None:
                on_record(record)

        record_invalid_rows(writer, ann.errors, results)
        plan = plan_rows(ann.rows, latest, present, config)
        todo = _adopt_present(plan.todo, present, config, emit)
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
        archives = _run_source(todo, config, emit, sleep)

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
    atomic_write_json(out / DOWNLOAD_REPORT_NAME, report)
    return report


def _adopt_present(
    rows: list[ClipRow],
    present: dict[str, str],
    config: DownloadConfig,
    emit: Callable[[dict[str, Any]], None],
) -> list[ClipRow]:
    """Record clips already on disk without an ok record (killed between rename and
    record) as done; return the rows still to fetch."""
    todo: list[ClipRow] = []
    clips = config.output_dir / CLIPS_DIR
    for row in rows:
        name = present.get(row.clip_id)
        if name is not None and not config.retry_failed:
            size = (clips / name).stat().st_size
            path = f"{CLIPS_DIR}/{name}"
            emit(clip_record(row, config.source, status="ok", path=path, bytes=size))
        else:
            todo.append(row)
    return todo


def _run_source(
    todo: list[ClipRow],
    config: DownloadConfig,
    emit: Callable[[dict[str, Any]], None],
    sleep: Callable[[float], None],
) -> list[dict[str, Any]] | None:
    """Fetch ``todo`` from the configured source; the mirror also returns its archives."""
    if config.source == "youtube":
        run_youtube(todo, config, emit, sleep)
        return None
    if config.source == "local":
        run_local(todo, config, emit)
        return None
    return run_mirror(todo, config, emit, sleep)
