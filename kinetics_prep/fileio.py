"""Atomic writes: a file or folder appears complete under its name, or not at all.

Everything kprep writes goes to a temporary sibling first (same folder, so the
final ``os.replace`` is a rename on one filesystem), is fsynced, then renamed.
A killed run leaves at most a hidden ``.<name>.*.tmp`` that no reader mistakes
for finished work.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp sibling + fsync + rename; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text (newlines written as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], payload: Any, *, indent: int = 2) -> Path:
    """``payload`` as indented UTF-8 JSON plus a final newline, atomically."""
    return atomic_write_text(path, json.dumps(payload, ensure_ascii=False, indent=indent) + "\n")


def replace_path(new: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Rename ``new`` (file or folder) to ``final``; an existing ``final`` is replaced.

    A folder cannot be renamed over a non-empty folder, so the old one is
    first moved aside under a hidden name and removed only after the new one
    is in place: at every moment ``final`` is either the old or the new
    version.
    """
    new, final = Path(new), Path(final)
    old = None
    if final.is_dir() and not final.is_symlink():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
