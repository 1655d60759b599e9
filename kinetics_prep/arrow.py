"""The manifest's samples as a Hugging Face ``datasets`` DatasetDict on disk.

The folder is exactly what ``DatasetDict.save_to_disk`` writes (split folders
with ``data-*.arrow`` shards, ``dataset_info.json``, ``state.json``, and a
``dataset_dict.json``), so ``datasets.load_from_disk`` opens it. It is written
here with the library's own ``ArrowWriter`` and ``DatasetInfo`` rather than
``save_to_disk`` for two reasons:

- ``save_to_disk`` always embeds local image files (``embed_local_files=True``),
  so a "paths" dataset could not exist, and a Kinetics-700-sized list (650k
  rows, 2.6M frames) would be read byte by byte in Python;
- building columns with ``pyarrow`` in chunks (instead of ``Dataset.from_list``
  encoding every row's features in Python) keeps a 650k-row build to minutes
  and memory bounded to one chunk (see ``benchmarks/bench_arrow.py``).

``images="embed"`` stores each frame's JPEG bytes as they are on disk (no
re-encode) with its path relative to the image root; ``images="paths"`` stores
absolute paths only, so the folder is small but tied to this machine (``kprep
push`` embeds the bytes before uploading).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinetics_prep.fileio import atomic_write_json, replace_path
from kinetics_prep.schema import BUILD_REPORT_NAME, Sample, features_for, trl_messages

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

log = logging.getLogger(__name__)

MAX_SHARD_BYTES = 500 * 1024 * 1024  # the datasets library's default shard size
KINETICS_CITATION = """@article{kay2017kinetics,
  title   = {The Kinetics Human Action Video Dataset},
  author  = {Kay, Will and Carreira, Joao and Simonyan, Karen and Zhang, Brian and Hillier, Chloe and Vijayanarasimhan, Sudheendra and Viola, Fabio and Green, Tim and Back, Trevor and Natsev, Paul and Suleyman, Mustafa and Zisserman, Andrew},
  journal = {arXiv preprint arXiv:1705.06950},
  year    = {2017}
}"""
ANNOTATION_LICENSE = "cc-by-4.0"


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def rows_table(
    rows: Sequence[Sample],
    *,
    schema: pa.Schema,
    label_ids: Mapping[str, int],
    image_root: str,
    images: str = "embed",
) -> pa.Table:
    """One chunk of samples as a pyarrow Table in ``schema`` (column by column).

    ``Sample.images`` are relative to ``image_root`` (an absolute path).
    """
    import pyarrow as pa

    image_column: list[list[dict[str, Any]]]
    if images == "embed":
        image_column = [
            [{"bytes": _read(os.path.join(image_root, rel)), "path": rel} for rel in s.images]
            for s in rows
        ]
    else:
        image_column = [
            [
                {"bytes": None, "path": os.path.normpath(os.path.join(image_root, rel))}
                for rel in s.images
            ]
            for s in rows
        ]
    columns: dict[str, list[Any]] = {
        "id": [s.id for s in rows],
        "messages": [
            trl_messages(
                prompt=s.prompt,
                answer=s.answer,
                num_images=len(s.images),
                video=s.video is not None,
            )
            for s in rows
        ],
        "images": image_column,
        "video": [s.video for s in rows],
        "label": [label_ids[s.label] if s.label is not None else None for s in rows],
    }
    for name in (
        "youtube_id",
        "kinetics_split",
        "time_start",
        "time_end",
        "frame_indices",
        "timestamps",
    ):
        columns[name] = [s.metadata.get(name) for s in rows]
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_split(
    rows: Sequence[Sample],
    *,
    split_dir: Path,
    split: str,
    features: datasets.Features,
    info: datasets.DatasetInfo,
    images: str,
    image_root: str,
    chunk_rows: int,
    max_shard_bytes: int,
) -> int:
    """Write one split folder as ``Dataset.save_to_disk`` lays it out; returns its shard count."""
    from datasets.arrow_writer import ArrowWriter

    split_dir.mkdir(parents=True)
    schema = features.arrow_schema
    label_ids = {name: i for i, name in enumerate(features["label"].names)}
    shards: list[Path] = []
    writer = None
    shard_bytes = 0
    digest = _Fingerprint(split)
    for start in range(0, max(len(rows), 1), chunk_rows):
        chunk = rows[start : start + chunk_rows]
        if writer is None:
            shards.append(split_dir / f".shard-{len(shards)}.arrow")
            writer = ArrowWriter(features=features, path=str(shards[-1]), embed_local_files=False)
            shard_bytes = 0
        table = rows_table(
            chunk, schema=schema, label_ids=label_ids, image_root=image_root, images=images
        )
        writer.write_table(table)
        shard_bytes += table.nbytes
        digest.update(chunk)
        if shard_bytes >= max_shard_bytes:
            writer.finalize()
            writer = None
    if writer is not None:
        writer.finalize()
    names = []
    for index, shard in enumerate(shards):
        name = f"data-{index:05d}-of-{len(shards):05d}.arrow"
        shard.rename(split_dir / name)
        names.append(name)
    info.write_to_directory(str(split_dir))
    state: dict[str, Any] = {
        "_data_files": [{"filename": name} for name in names],
        "_fingerprint": digest.hexdigest(),
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": split,
    }
    (split_dir / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    return len(shards)


class _Fingerprint:
    """A content hash of a split (ids, labels, media, answers) for ``state.json``."""

    def __init__(self, split: str) -> None:
        import hashlib

        self._hash = hashlib.sha256(split.encode())

    def update(self, rows: Sequence[Sample]) -> None:
        for s in rows:
            self._hash.update(
                "\0".join(
                    [s.id, s.label or "", s.answer, s.prompt, s.video or "", *s.images]
                ).encode()
            )

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:16]


def write_arrow_dataset(
    splits: Mapping[str, Sequence[Sample]],
    *,
    out_dir: str | Path,
    labels: Sequence[str],
    images: str = "embed",
    image_root: str | Path = ".",
    build_report: Mapping[str, Any] | None = None,
    chunk_rows: int | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> Path:
    """Write ``splits`` as a DatasetDict folder at ``out_dir``, atomically.

    The folder is built beside ``out_dir`` under a temporary name and renamed
    into place only when complete; an older dataset there is replaced then, so
    a killed build leaves the previous one intact. Only a folder kprep wrote
    is replaced (:mod:`kinetics_prep.outputs`); anything else at ``out_dir``
    is an :class:`~kinetics_prep.outputs.OutputError`. ``Sample.images`` are
    relative to ``image_root`` (the manifest's folder).
    """
    from datasets import DatasetInfo

    if images not in ("embed", "paths"):
        raise ValueError(f"images ({images!r}) must be 'embed' or 'paths'")
    from kinetics_prep.outputs import check_replaceable, mark_folder

    out_dir = Path(out_dir)
    # Replace only an Arrow folder kprep wrote (marker, or the build report of older kprep).
    check_replaceable(
        out_dir,
        flag="Arrow dataset folder",
        legacy=(BUILD_REPORT_NAME,),
        hint="move it away, or pick another --output (its folder is <stem>_arrow)",
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    features = features_for(labels)
    info = DatasetInfo(
        description=(
            "Kinetics clips as vision-language conversations (frames + question -> action), "
            "built by kprep build-manifest."
        ),
        citation=KINETICS_CITATION,
        homepage="https://github.com/google-deepmind/kinetics-i3d",
        license=ANNOTATION_LICENSE,
        features=features,
    )
    if chunk_rows is None:
        chunk_rows = 256 if images == "embed" else 20_000
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the dataset is not
        for split, rows in splits.items():
            shards = _write_split(
                rows,
                split_dir=tmp / split,
                split=split,
                features=features,
                info=info,
                images=images,
                image_root=os.path.abspath(image_root),
                chunk_rows=chunk_rows,
                max_shard_bytes=max_shard_bytes,
            )
            log.info("arrow: %s: %d rows in %d shard(s)", split, len(rows), shards)
        (tmp / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}) + "\n")
        if build_report is not None:
            atomic_write_json(tmp / BUILD_REPORT_NAME, build_report)
        mark_folder(tmp, command="build-manifest")
        replace_path(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_build_report(dataset_dir: str | Path) -> dict[str, Any]:
    """The build report saved in an Arrow folder by build-manifest (empty if absent)."""
    path = Path(dataset_dir) / BUILD_REPORT_NAME
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
