"""``kprep push``: the Arrow dataset as parquet shards + a dataset card, on the Hub or on disk.

:func:`stage_upload` writes exactly what goes to the Hub into a folder, laid
out as ``Dataset.push_to_hub`` lays out a repository::

    README.md                              # card: YAML metadata + description
    data/<split>-00000-of-0000N.parquet    # images embedded (bytes, not paths)

``kprep push --dry-run DIR`` stops there; a real push stages into a temporary
folder and uploads that same folder with ``HfApi.upload_folder`` (deleting
stale shards of an earlier push in the same commit), so what a dry run shows
is what a push sends. This is the only module that talks to the network. The
token goes to ``HfApi`` and nowhere else: it is never logged, and error
messages are scrubbed of it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinetics_prep.errors import HubError

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

MAX_SHARD_BYTES = 500 * 1024 * 1024  # push_to_hub's default
TASK_CATEGORIES = ["video-classification", "image-text-to-text"]
VIDEO_TERMS_NOTE = (
    "The Kinetics annotations (labels, YouTube ids, times) are licensed CC BY 4.0 by "
    "Google DeepMind. The frames come from YouTube videos that remain subject to YouTube's "
    "Terms of Service and their uploaders' rights; they are not covered by that license. "
    "Use them for research, and remove clips whose videos were taken down on request."
)


@dataclass
class PushOptions:
    """The options of ``kprep push`` (its flags are generated from these fields)."""

    private: bool = field(
        default=False, metadata={"help": "Create the repo private.", "flags": ("--private",)}
    )
    token: str | None = field(
        default=None,
        metadata={
            "help": "Hub token. Never printed.",
            "default_help": "HF_TOKEN or the saved login",
            "envvar": "HF_TOKEN",
        },
    )
    dry_run: Path | None = field(
        default=None,
        metadata={
            "help": "Write the parquet shards + README.md here instead of uploading.",
            "default_help": "upload",
        },
    )


@dataclass
class StagedUpload:
    """What :func:`stage_upload` wrote."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    bytes: int = 0


@dataclass
class PushResult:
    repo_id: str
    url: str
    commit_url: str | None
    staged: StagedUpload


def size_category(num_rows: int) -> str:
    """The Hub's ``size_categories`` bucket for ``num_rows`` (e.g. 3000 -> ``1K<n<10K``)."""
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
    ]
    for bound, name in bounds:
        if num_rows < bound:
            return name
    return "n>100M"


def scrub(text: str, token: str | None) -> str:
    """``text`` with ``token`` replaced by ``***`` (error messages may quote requests)."""
    return text.replace(token, "***") if token else text


def load_dataset_dict(dataset_dir: str | Path) -> datasets.DatasetDict:
    """The Arrow folder written by build-manifest (schema's reader), errors as HubError."""
    from kinetics_prep.errors import SchemaError
    from kinetics_prep.schema import load_arrow

    try:
        return load_arrow(dataset_dir)
    except SchemaError as error:
        raise HubError(f"DATASET {error}") from None


def _estimated_bytes(ds: datasets.Dataset) -> int:
    """Arrow bytes plus the referenced image files (paths mode), sampled on up to 200 rows."""
    total = sum(os.path.getsize(f["filename"]) for f in ds.cache_files)
    if len(ds) == 0:
        return total
    sample = ds.select(range(min(200, len(ds)))).with_format("arrow")["images"].to_pylist()
    external = [
        os.path.getsize(image["path"])
        for images in sample
        for image in images or []
        if not image.get("bytes") and image.get("path") and os.path.isfile(image["path"])
    ]
    if external:
        total += int(sum(external) / min(200, len(ds)) * len(ds))
    return total


def _write_shards(
    ds: datasets.Dataset, *, split: str, data_dir: Path, max_shard_bytes: int
) -> list[Path]:
    """Parquet shards with every image's bytes embedded, as push_to_hub names them."""
    from datasets.table import embed_table_storage

    num_shards = max(1, min(len(ds), math.ceil(_estimated_bytes(ds) / max_shard_bytes)))
    files = []
    for index in range(num_shards):
        shard = ds.shard(num_shards=num_shards, index=index, contiguous=True)
        shard = shard.with_format("arrow").map(
            embed_table_storage, batched=True, batch_size=100, keep_in_memory=True
        )
        path = data_dir / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
        shard.with_format(None).to_parquet(str(path))
        files.append(path)
    return files


def dataset_card(
    dd: datasets.DatasetDict,
    *,
    repo_id: str,
    build_report: Mapping[str, Any],
    parquet_bytes: int = 0,
) -> str:
    """README.md for the Hub: YAML metadata (license, tasks, size, features, splits) + text."""
    from huggingface_hub import DatasetCard

    card_data = _card_metadata(dd, repo_id=repo_id, parquet_bytes=parquet_bytes)
    lines = _card_text(dd, repo_id=repo_id, build_report=build_report)
    return str(DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def _card_metadata(dd: datasets.DatasetDict, *, repo_id: str, parquet_bytes: int) -> Any:
    """The card's YAML: license, tasks, size, features, splits, data files."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    first = next(iter(dd.values()))
    total = sum(len(ds) for ds in dd.values())
    card_data = DatasetCardData(
        license="cc-by-4.0",
        language=["en"],
        task_categories=TASK_CATEGORIES,
        size_categories=[size_category(total)],
        pretty_name=f"{repo_id.split('/')[-1]} (Kinetics frames as conversations)",
        tags=["kinetics", "action-recognition", "video", "vision-language", "kprep"],
    )
    info = DatasetInfo(features=first.features, splits=SplitDict(), download_size=parquet_bytes)
    info.dataset_size = 0
    for name, ds in dd.items():
        nbytes = sum(os.path.getsize(f["filename"]) for f in ds.cache_files)
        info.splits.add(SplitInfo(name=name, num_bytes=nbytes, num_examples=len(ds)))
        info.dataset_size += nbytes
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    MetadataConfigs(
        {"default": {"data_files": [{"split": s, "path": f"data/{s}-*"} for s in dd]}}
    ).to_dataset_card_data(card_data)
    return card_data


def _card_text(
    dd: datasets.DatasetDict, *, repo_id: str, build_report: Mapping[str, Any]
) -> list[str]:
    """The card's Markdown lines: splits, classes, how it was built, use, license."""
    first = next(iter(dd.values()))
    total = sum(len(ds) for ds in dd.values())
    label_feature = first.features["label"]
    per_class: dict[str, Counter] = {}
    for name, ds in dd.items():
        per_class[name] = Counter(label_feature.int2str(i) for i in ds["label"])
    classes = sorted(set().union(*per_class.values()))
    config = build_report.get("config", {})
    left_out = build_report.get("left_out", {})
    lines = [
        f"# {repo_id}",
        "",
        "Kinetics action-recognition clips turned into vision-language conversations: "
        "each sample is a user turn with the clip's frames (in order) and a question, and an "
        "assistant turn naming the action. Built by kprep "
        "(`kprep extract` + `kprep build-manifest`) for "
        "fine-tuning Gemma 4 with TRL or kprep's own trainer.",
        "",
        "## Splits",
        "",
        "| split | samples |",
        "|---|---:|",
        *[f"| {name} | {len(ds)} |" for name, ds in dd.items()],
        "",
        "Train/validation are split by YouTube video: no video has clips on both sides.",
        "",
        "## Classes",
        "",
        f"{len(classes)} classes present (label ids follow `label` ClassLabel names, "
        f"{len(label_feature.names)} in all).",
        "",
        "| class | " + " | ".join(dd) + " |",
        "|---|" + "---:|" * len(dd),
        *[f"| {c} | " + " | ".join(str(per_class[s][c]) for s in dd) + " |" for c in classes],
        "",
        "## How it was built",
        "",
        f"- media: {config.get('media', 'images')}; frames per clip: {_frames_per_sample(first)}",
        f"- prompts: {json.dumps(config.get('prompts'), ensure_ascii=False)}",
        f"- answer template: `{config.get('answer_template')}`",
        f"- validation fraction: {config.get('val_fraction')} (seed {config.get('seed')})",
        f"- extract records read: {build_report.get('records', 'unknown')}; "
        f"samples built: {build_report.get('samples', total)}",
        "",
        "Clips left out, by reason:",
        "",
        "| reason | clips |",
        "|---|---:|",
        *([f"| {reason} | {count} |" for reason, count in left_out.items()] or ["| none | 0 |"]),
        "",
        "## Use",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("{repo_id}")',
        'ds["train"][0]["messages"], ds["train"][0]["images"]  # TRL vision SFT layout',
        "```",
        "",
        "## License",
        "",
        VIDEO_TERMS_NOTE,
        "",
        "## Citation",
        "",
        "```bibtex",
        _citation(first),
        "```",
        "",
    ]
    return lines


def _frames_per_sample(ds: datasets.Dataset) -> str:
    if len(ds) == 0:
        return "0"
    counts = Counter(len(x or []) for x in ds.select(range(min(100, len(ds))))["images"])
    return ", ".join(str(c) for c in sorted(counts))


def _citation(ds: datasets.Dataset) -> str:
    from kinetics_prep.arrow import KINETICS_CITATION

    return ds.info.citation or KINETICS_CITATION


def stage_upload(
    dataset_dir: str | Path,
    out_dir: str | Path,
    *,
    repo_id: str,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> StagedUpload:
    """Write the parquet shards and README.md that a push uploads into ``out_dir``."""
    from kinetics_prep.arrow import read_build_report

    _check_repo_id(repo_id)
    dd = load_dataset_dict(dataset_dir)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise HubError(f"--dry-run folder ({str(out)!r}) is not empty: pass a new folder")
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    staged = StagedUpload(folder=out)
    for split, ds in dd.items():
        try:
            staged.files += _write_shards(
                ds, split=split, data_dir=data_dir, max_shard_bytes=max_shard_bytes
            )
        except OSError as error:  # a paths-mode frame that is gone
            raise HubError(
                f"cannot embed the {split} images ({error}); run `kprep validate "
                f"{dataset_dir}` and rebuild the dataset"
            ) from None
        staged.splits[split] = len(ds)
    staged.bytes = sum(p.stat().st_size for p in staged.files)
    card = dataset_card(
        dd,
        repo_id=repo_id,
        build_report=read_build_report(dataset_dir),
        parquet_bytes=staged.bytes,
    )
    readme = out / "README.md"
    readme.write_text(card, encoding="utf-8")
    staged.files.append(readme)
    log.info("staged %d files (%d bytes) in %s", len(staged.files), staged.bytes, out)
    return staged


def _check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(" " in p for p in parts):
        raise HubError(f"REPO_ID ({repo_id!r}) must look like 'user-or-org/dataset-name'")


def push_dataset(
    dataset_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> PushResult:
    """Stage the upload in a temporary folder and send it as one commit to a dataset repo.

    ``token=None`` uses the login saved by ``hf auth login`` / ``HF_TOKEN``.
    """
    from huggingface_hub import HfApi

    _check_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="kprep-push-") as tmp:
        staged = stage_upload(dataset_dir, tmp, repo_id=repo_id, max_shard_bytes=max_shard_bytes)
        try:
            api = HfApi(token=token, library_name="kprep")
            repo = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=tmp,
                commit_message=f"kprep push: {', '.join(f'{k} {v}' for k, v in staged.splits.items())}",
                delete_patterns=["data/*.parquet"],
            )
        except Exception as error:  # huggingface_hub raises HTTP, auth and value errors
            message = scrub(f"{type(error).__name__}: {error}", token).splitlines()[0]
            raise HubError(
                f"push to {repo_id!r} failed ({message}); check the repo id and that your token "
                "has write access (hf auth login, or --token)"
            ) from None
    return PushResult(
        repo_id=repo_id,
        url=str(repo),
        commit_url=getattr(commit, "commit_url", None),
        staged=staged,
    )
