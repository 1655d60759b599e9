"""Per-item status records as JSON Lines: failures are data.

Every stage (download, extract) appends one JSON object per item to a
``*_results.jsonl`` file in its output folder. The file is append-only and a
later line for the same key supersedes an earlier one, so a rerun or
``--retry-failed`` only ever appends. A run killed mid-write can leave a
truncated last line: readers skip it (with a warning), so nothing that was
complete is lost and the half-written item is simply redone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def end_torn_line(path: str | Path) -> None:
    """End a line torn by a killed run, so the next record starts on a line of its own.

    Readers skip the broken line (:func:`iter_records`); a missing or empty
    file is left alone.
    """
    try:
        with open(path, "rb+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
    except FileNotFoundError:
        return


class RecordWriter:
    """Appends records to a JSONL file, one flushed and fsynced line per record.

    Only one process (the parent) writes; workers send their records back to it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        end_torn_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield every complete record of ``path`` (missing file: nothing)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping an incomplete record (killed run?)", path, number)
                continue
            if isinstance(record, dict):
                yield record


def read_latest(path: str | Path, key: str = "clip_id") -> dict[str, dict[str, Any]]:
    """The last record per ``key`` value, in first-seen order."""
    latest: dict[str, dict[str, Any]] = {}
    for record in iter_records(path):
        value = record.get(key)
        if value is not None:
            latest[str(value)] = record
    return latest
