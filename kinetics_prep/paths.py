"""Containment: a path read from a record or manifest stays inside its root.

Frame paths in ``extract_results.jsonl`` are relative to the extract output
folder, and those are the files ``build-manifest`` embeds in the Arrow dataset
that ``kprep push`` uploads. A crafted record with ``/home/me/.ssh/id_rsa`` or
``../../secret.jpg`` must not pull that file into a published dataset, so
every such path is checked here: relative, no ``..`` part, and (after
resolving symlinks) inside the root. Video paths are different: they may
legitimately point elsewhere (clips kept on another disk) and are only ever
stored as references, never read into a dataset.

Output paths: :func:`check_output`, run by every command that writes before
any work starts, so a path that cannot work is a one-line error before
minutes of decoding, training or evaluating, not a traceback after them::

    check_output(cfg.output, "--output", kind="file", inputs={"--data-path": cfg.data_path})

It refuses an output that exists as the wrong kind (a folder where a file
goes, or the reverse), sits under a file, cannot be written (the output, or
the nearest folder that exists above it), or is one of the command's inputs
(the same file or folder) or, with ``contain_inputs=False``, a folder holding
one of them (``train --output-dir`` at the data folder). Who may *replace* an
existing output is :mod:`kinetics_prep.outputs`' business.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

from kinetics_prep.errors import KprepError, OutputPathError


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


PathLike = str | os.PathLike[str]


def _resolved(path: PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve(strict=False)


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and parent in child.parents


def _writable_folder(folder: Path) -> bool:
    """Create and drop a temp file there: true for root too, false on a read-only mount."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_output(
    path: PathLike,
    flag: str,
    *,
    kind: Literal["file", "dir"],
    inputs: Mapping[str, PathLike | None] | None = None,
    contain_inputs: bool = True,
) -> Path:
    """Raise :class:`OutputPathError` when ``path`` cannot be the output; returns it as a Path.

    ``inputs`` maps each input's flag to its path (``None`` entries are
    skipped; a Hub id that is not a local path never matches anything).
    """
    out = Path(path)
    shown = str(out)
    if out.exists() or out.is_symlink():
        if kind == "file" and out.is_dir():
            raise OutputPathError(
                f"{flag} ({shown!r}) is a folder; pass a file path (e.g. {shown}/report.json)"
            )
        if kind == "dir" and not out.is_dir():
            raise OutputPathError(f"{flag} ({shown!r}) exists and is not a folder; pass a folder")
        if not os.access(out, os.W_OK) or (out.is_dir() and not _writable_folder(out)):
            raise OutputPathError(f"{flag} ({shown!r}) is not writable; pick another path")
    else:
        above = _resolved(out).parent
        while not above.exists():
            above = above.parent
        if not above.is_dir():
            raise OutputPathError(
                f"{flag} ({shown!r}) sits under a file ({str(above)!r}); pass a path in a folder"
            )
        if not _writable_folder(above):
            raise OutputPathError(
                f"{flag} ({shown!r}) cannot be created: {str(above)!r} is not writable"
            )
    target = _resolved(out)
    for name, value in (inputs or {}).items():
        if value is None or str(value) == "":
            continue
        source = _resolved(value)
        if source == target:
            what = "folder" if source.is_dir() else "file"
            raise OutputPathError(
                f"{flag} ({shown!r}) is the {name} {what} itself: kprep never writes over "
                f"its inputs; pass another {flag}"
            )
        if kind == "dir" and not contain_inputs and _inside(source, target):
            raise OutputPathError(
                f"{flag} ({shown!r}) holds {name} ({str(value)!r}): writing there could replace "
                f"your files; pass a new or empty {flag}"
            )
    return out


def local_path(value: str | None) -> Path | None:
    """``value`` as a Path when it names something on disk (a model folder), else None (a Hub id)."""
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.exists() else None


__all__ = ["UnsafePathError", "check_output", "inside", "local_path"]
