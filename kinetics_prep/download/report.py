"""``kprep download``'s records (one per annotation row) and its availability report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kinetics_prep.annotations import ClipRow
from kinetics_prep.records import RecordWriter, iter_records


def clip_record(row: ClipRow, source: str, **fields: Any) -> dict[str, Any]:
    """The record of one row: failed with no reason until ``fields`` say otherwise."""
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


def record_invalid_rows(writer: RecordWriter, errors: list[Any], results: Path) -> None:
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
