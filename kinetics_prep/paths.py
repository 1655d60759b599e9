"""Containment: a path read from a record or manifest stays inside its root.

Frame paths in ``extract_results.jsonl`` are relative to the extract output
folder, and those are the files ``build-manifest`` embeds in the Arrow dataset
that ``kprep push`` uploads. A crafted record with ``/home/me/.ssh/id_rsa`` or
``../../secret.jpg`` must not pull that file into a published dataset, so
every such path is checked here: relative, no ``..`` part, and (after
resolving symlinks) inside the root. Video paths are different: they may
legitimately point elsewhere (clips kept on another disk) and are only ever
stored as references, never read into a dataset.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from kinetics_prep.errors import KprepError


class UnsafePathError(KprepError, ValueError):
    """A path from a record or manifest leaves its root."""


def inside(root: str | os.PathLike[str], relative: str, *, where: str) -> Path:
    """``root / relative`` when it stays inside ``root``; else :class:`UnsafePathError`.

    ``where`` names the row for the message (``"record 'clip_7' in x.jsonl"``).

    >>> inside("/data/out", "frames/a/frame_1.jpg", where="row 1").as_posix()
    '/data/out/frames/a/frame_1.jpg'
    """
    text = str(relative)
    problem = None
    if not text:
        problem = "is empty"
    elif (
        PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
        or (PureWindowsPath(text).drive)
    ):
        problem = "is absolute"
    elif ".." in PurePosixPath(text.replace("\\", "/")).parts:
        problem = "climbs out with '..'"
    root_path = Path(root)
    path = root_path / text
    if problem is None:
        real_root = os.path.realpath(root_path)
        real = os.path.realpath(path)
        if os.path.commonpath([real_root, real]) != real_root:
            problem = "leads out of it through a symlink"
    if problem is not None:
        raise UnsafePathError(
            f"{where}: path {text!r} {problem}; paths must stay inside {str(root_path)!r} "
            "(fix or remove that row)"
        )
    return path


__all__ = ["UnsafePathError", "inside"]
