"""Outputs kprep owns: replace only what kprep wrote, and replace it whole.

Two rules, one module (every command that replaces an output goes through here):

1. **Ownership.** kprep replaces a path only when it can tell that kprep
   wrote it: a folder holding a :data:`MARKER_NAME` file (written into every
   folder kprep creates as an output), or a file listed as an output of an
   earlier kprep run. Anything else is refused with a one-line
   :class:`OutputError` that names the flag and says how to proceed, like git
   refusing to overwrite untracked files.
2. **Replace by rename.** A new output is built under a hidden sibling name
   and renamed over the old one (:func:`replace_folder`), so a kill at any
   moment leaves the old output or the new one, never neither.

:class:`OutputSet` extends rule 2 to several outputs that belong together
(``build-manifest``'s manifest, split files, label map, Arrow folder and
report): they are staged in one hidden folder, then a commit record is
written atomically (the commit point) and the staged outputs are renamed in.
A kill before the commit record leaves the previous set untouched (the
staging folder is removed by the next run); a kill after it is rolled forward
by the next run (:func:`recover_output_set`), so readers never get a set that
is half old and half new once kprep has run again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from kinetics_prep.errors import KprepError
from kinetics_prep.fileio import atomic_write_json, replace_path

log = logging.getLogger(__name__)

MARKER_NAME = ".kprep-output.json"  # inside every output folder kprep creates


class OutputError(KprepError, ValueError):
    """An output path holds something kprep did not write; nothing was changed."""


def mark_folder(path: str | os.PathLike[str], *, command: str) -> None:
    """Record in ``path`` that kprep (``command``) wrote this folder."""
    atomic_write_json(
        Path(path) / MARKER_NAME,
        {"written_by": "kprep", "command": command, "time": round(time.time(), 3)},
    )


def is_kprep_folder(path: str | os.PathLike[str], *, legacy: Iterable[str] = ()) -> bool:
    """A folder kprep wrote: it holds the marker (or a ``legacy`` file older kprep wrote)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    return any((path / name).is_file() for name in (MARKER_NAME, *legacy))


def check_replaceable(
    path: str | os.PathLike[str],
    *,
    flag: str,
    owned_files: Iterable[str | os.PathLike[str]] = (),
    legacy: Iterable[str] = (),
    hint: str = "choose another path, or move it away yourself",
) -> None:
    """Raise :class:`OutputError` unless ``path`` is absent or kprep's to replace.

    A folder is kprep's when it holds the marker (or a ``legacy`` file); a file
    when it is one of ``owned_files`` (the outputs an earlier run listed).
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        if is_kprep_folder(path, legacy=legacy):
            return
        raise OutputError(
            f"{flag} ({str(path)!r}) is a folder kprep did not write (no {MARKER_NAME} "
            f"inside); refusing to replace it: {hint}"
        )
    owned = {os.path.abspath(p) for p in owned_files}
    if os.path.abspath(path) in owned:
        return
    raise OutputError(
        f"{flag} ({str(path)!r}) exists and kprep did not write it; refusing to replace it: {hint}"
    )


def replace_folder(
    final: str | os.PathLike[str],
    build: Callable[[Path], None],
    *,
    command: str,
    flag: str,
    legacy: Iterable[str] = (),
    hint: str = "choose another path, or move it away yourself",
) -> Path:
    """Build a new folder with ``build(tmp)`` beside ``final`` and rename it in.

    Refuses (before building) when ``final`` exists and is not kprep's. The new
    folder gets the marker; the old one is removed only after the rename.
    """
    final = Path(final)
    check_replaceable(final, flag=flag, legacy=legacy, hint=hint)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    try:
        build(tmp)
        mark_folder(tmp, command=command)
        replace_path(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# --------------------------------------------------------------------------- sets


def _journal(root: Path, name: str) -> Path:
    return root / f".{name}.commit.json"


def _fsync_tree(path: Path) -> None:
    """Flush every staged file to disk before the commit record vouches for them."""
    for dirpath, _, filenames in os.walk(path):
        for filename in filenames:
            fd = os.open(os.path.join(dirpath, filename), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class OutputSet:
    """Outputs in ``root`` that are replaced together (see the module docstring).

    >>> outputs = OutputSet(root, "kinetic_3K")           # doctest: +SKIP
    >>> write(outputs.stage(root / "kinetic_3K.json"))    # doctest: +SKIP
    >>> outputs.remove(root / "kinetic_3K.train.json")    # doctest: +SKIP
    >>> outputs.commit()                                  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str], name: str) -> None:
        self.root = Path(root)
        self.name = name
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging = self.root / f".{name}.staging-{uuid.uuid4().hex[:12]}"
        self.staging.mkdir()
        self._install: list[str] = []
        self._remove: list[str] = []
        self._committed = False

    def _member(self, final: str | os.PathLike[str]) -> str:
        final = Path(final)
        if os.path.abspath(final.parent) != os.path.abspath(self.root):
            raise ValueError(f"{final} is not directly inside {self.root}")
        return final.name

    def stage(self, final: str | os.PathLike[str]) -> Path:
        """Where to write the new version of ``final`` (a path in the staging folder)."""
        member = self._member(final)
        if member not in self._install:
            self._install.append(member)
        return self.staging / member

    def remove(self, final: str | os.PathLike[str]) -> None:
        """Delete ``final`` when the set is committed (a stale output of an earlier run)."""
        member = self._member(final)
        if member not in self._remove:
            self._remove.append(member)

    def commit(self) -> None:
        """Make the staged outputs the current ones (the commit point is one rename)."""
        _fsync_tree(self.staging)
        atomic_write_json(
            _journal(self.root, self.name),
            {"staging": self.staging.name, "install": self._install, "remove": self._remove},
        )
        self._committed = True  # from here on the staged set is the current one
        _apply(self.root, self.name)

    def discard(self) -> None:
        """Drop everything staged (before the commit point); the current outputs stay."""
        if not self._committed:
            shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, kind, *rest) -> None:
        if kind is not None:
            self.discard()


def _apply(root: Path, name: str) -> None:
    """Carry out a commit record (again, after a kill: each step is idempotent)."""
    journal = _journal(root, name)
    plan = json.loads(journal.read_text(encoding="utf-8"))
    staging = root / plan["staging"]
    for member in plan["install"]:
        source = staging / member
        if source.exists():
            replace_path(source, root / member)
        for old in root.glob(f".{member}.old-*"):  # left by a kill inside replace_path
            shutil.rmtree(old, ignore_errors=True)
    for member in plan["remove"]:
        target = root / member
        if target.is_file() or target.is_symlink():
            target.unlink()
    shutil.rmtree(staging, ignore_errors=True)
    journal.unlink()


def recover_output_set(root: str | os.PathLike[str], name: str) -> str | None:
    """Finish or drop an interrupted :class:`OutputSet` of ``name`` in ``root``.

    Returns ``"rolled forward"`` (killed after its commit point), ``"discarded"``
    (killed before it: the staged outputs are dropped), or None (nothing to do).
    """
    root = Path(root)
    outcome = None
    if _journal(root, name).is_file():
        _apply(root, name)
        outcome = "rolled forward"
        log.warning("%s: finished the %s outputs of an interrupted run", root, name)
    for staging in root.glob(f".{name}.staging-*"):
        shutil.rmtree(staging, ignore_errors=True)
        outcome = outcome or "discarded"
    return outcome


__all__ = [
    "MARKER_NAME",
    "OutputError",
    "OutputSet",
    "check_replaceable",
    "is_kprep_folder",
    "mark_folder",
    "recover_output_set",
    "replace_folder",
]
