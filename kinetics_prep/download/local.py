"""``--source local``: an existing folder of clips, in any layout, linked or copied in.

Files match the naming convention (``<youtube_id>_<start>_<end>``) or a bare
YouTube id; only :data:`kinetics_prep.schema.VIDEO_SUFFIXES` files count.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kinetics_prep.annotations import ClipRow
from kinetics_prep.download.plan import DownloadConfig, match_clip_name, wanted_indexes
from kinetics_prep.download.report import clip_record
from kinetics_prep.schema import CLIPS_DIR, is_video_file


def index_local_clips(root: Path, todo: list[ClipRow]) -> dict[str, Path]:
    """clip_id -> file under ``root`` (any depth), first in sorted order wins."""
    by_clip, by_youtube = wanted_indexes(todo)
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if not is_video_file(name):
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


def run_local(
    todo: list[ClipRow], config: DownloadConfig, emit: Callable[[dict[str, Any]], None]
) -> None:
    assert config.clips_dir is not None
    found = index_local_clips(config.clips_dir, todo)
    clips = config.output_dir / CLIPS_DIR
    for row in todo:
        started = time.monotonic()
        src = found.get(row.clip_id)
        if src is None:
            emit(
                clip_record(
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
            emit(clip_record(row, "local", reason="other", error=f"{src}: {exc}"))
            continue
        emit(
            clip_record(
                row,
                "local",
                status="ok",
                path=f"clips/{dest.name}",
                bytes=dest.stat().st_size,
                seconds=round(time.monotonic() - started, 3),
                origin=str(src),
            )
        )
