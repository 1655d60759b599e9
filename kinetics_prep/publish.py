"""``kprep push PATH REPO_ID``: publish an Arrow dataset or a trained model, safely.

The kind is read from the folder's contents (:func:`folder_kind`): an Arrow
dataset written by ``kprep build-manifest`` goes to a dataset repo as parquet
shards + dataset card (``kinetics_prep.hub``); a ``kprep train`` output (or a
``kprep merge`` output) goes to a model repo with only its final artifacts
(:data:`MODEL_FILES`: weights and config, processor and tokenizer files, the
card, the training summary, the eval report and label map). Intermediate
``checkpoint-*`` folders, ``training_args.bin`` and optimizer state never
leave the machine.

The same rules hold for both kinds (:func:`publish_folder`):

- a new repo is created **private** unless ``public=True`` (``--public``);
- an existing repo gets ``--private`` / ``--public`` applied when given, and
  keeps its visibility otherwise;
- an existing repo whose card kprep did not write (no ``kprep`` tag) and that
  holds files is refused unless ``overwrite=True``; stale files are deleted
  (``delete_patterns``) only in a repo kprep made, or with ``overwrite``, and
  only those matching what kprep itself uploads;
- the repo's real visibility is read back after the push and reported.

A dry run writes exactly the folder a push uploads, atomically (a sibling
folder renamed into place), so a failure leaves no half-written folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from kinetics_prep.errors import HubError
from kinetics_prep.hub import StagedUpload, _check_repo_id, scrub, stage_upload
from kinetics_prep.model_card import CARD_MARKER, EVAL_REPORT_NAME, KPREP_TAG, render_model_card
from kinetics_prep.schema import LABEL_MAP_NAME, TRAINING_SUMMARY_NAME

log = logging.getLogger(__name__)

SUMMARY_NAME = TRAINING_SUMMARY_NAME
# The final artifacts of a training / merge output, top level only.
MODEL_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    SUMMARY_NAME,
    EVAL_REPORT_NAME,
    LABEL_MAP_NAME,
    "README.md",
)
# What a push may delete in a repo it is allowed to replace: stale files of
# the names kprep uploads (a dataset re-sharded, model weights re-split).
DELETE_PATTERNS = {
    "dataset": ["data/*-?????-of-?????.parquet"],
    "model": ["*.safetensors", "*.safetensors.index.json"],
}
_ARROW_MARKERS = ("dataset_dict.json", "state.json")


@dataclass
class RepoState:
    exists: bool
    kprep_made: bool = False
    empty: bool = True
    private: bool | None = None


@dataclass
class Published:
    """What :func:`push` did."""

    kind: str  # "dataset" | "model"
    repo_id: str
    url: str
    commit_url: str | None
    private: bool | None  # read back from the Hub after the push
    created: bool
    visibility_changed: bool
    deleted_patterns: list[str] | None
    staged: StagedUpload
    files: list[str] = field(default_factory=list)


def folder_kind(path: str | Path) -> str:
    """``"dataset"`` for an Arrow dataset folder, ``"model"`` for a training/merge output."""
    folder = Path(path)
    if not folder.is_dir():
        raise HubError(
            f"PATH ({str(folder)!r}) is not a folder: pass the *_arrow folder of "
            "`kprep build-manifest` or the --output-dir of `kprep train`"
        )
    names = {p.name for p in folder.iterdir()}
    if names & set(_ARROW_MARKERS):
        return "dataset"
    if "adapter_config.json" in names or (
        "config.json" in names and any(n.endswith(".safetensors") for n in names)
    ):
        return "model"
    raise HubError(
        f"PATH ({str(folder)!r}) is neither a saved Arrow dataset (dataset_dict.json) nor a "
        "trained model (adapter_config.json, or config.json + safetensors): pass the *_arrow "
        "folder of `kprep build-manifest` or the --output-dir of `kprep train`"
    )


def model_files(folder: str | Path) -> list[Path]:
    """The final artifacts in a model folder (:data:`MODEL_FILES`), never checkpoints."""
    folder = Path(folder)
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and any(fnmatch(p.name, pattern) for pattern in MODEL_FILES)
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except ValueError as error:
        raise HubError(
            f"{path} is not valid JSON ({error}): rerun the command that wrote it"
        ) from None


def model_card_for_push(
    folder: Path, *, repo_id: str, base_model_id: str | None, dataset_id: str | None
) -> str | None:
    """The card to upload: kprep's card re-rendered for ``repo_id``; None keeps the folder's.

    A README.md that kprep did not generate (no marker) is the user's and is
    uploaded as it is.
    """
    summary = _read_json(folder / SUMMARY_NAME)
    readme = folder / "README.md"
    if summary is None:
        return None
    if readme.is_file() and CARD_MARKER not in readme.read_text(encoding="utf-8"):
        return None
    merged = not (folder / "adapter_config.json").is_file() and bool(summary.get("adapter", True))
    return render_model_card(
        summary,
        eval_report=_read_json(folder / EVAL_REPORT_NAME),
        repo_id=repo_id,
        base_model_id=base_model_id,
        dataset_id=dataset_id,
        merged=merged,
    )


def stage_model(
    folder: str | Path,
    out_dir: str | Path,
    *,
    repo_id: str,
    base_model_id: str | None = None,
    dataset_id: str | None = None,
    link: bool = False,
) -> StagedUpload:
    """Copy (or hard-link) the final artifacts and write the card into ``out_dir``."""
    folder, out = Path(folder), Path(out_dir)
    files = model_files(folder)
    if not any(p.name in ("adapter_config.json", "config.json") for p in files):
        raise HubError(f"{folder} holds no adapter_config.json or config.json to publish")
    card = model_card_for_push(
        folder, repo_id=repo_id, base_model_id=base_model_id, dataset_id=dataset_id
    )
    if card is None and not (folder / "README.md").is_file():
        raise HubError(
            f"{folder} has neither a README.md nor a {SUMMARY_NAME} to write one from: "
            "push the --output-dir of `kprep train`"
        )
    out.mkdir(parents=True, exist_ok=True)
    staged = StagedUpload(folder=out)
    for src in files:
        dst = out / src.name
        if src.name == "README.md" and card is not None:
            continue
        if link:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
        else:
            shutil.copy2(src, dst)
        staged.files.append(dst)
    if card is not None:
        (out / "README.md").write_text(card, encoding="utf-8")
        staged.files.append(out / "README.md")
    staged.files.sort()
    staged.bytes = sum(p.stat().st_size for p in staged.files)
    return staged


def dry_run(
    path: str | Path,
    out_dir: str | Path,
    *,
    repo_id: str,
    base_model_id: str | None = None,
    dataset_id: str | None = None,
) -> tuple[str, StagedUpload]:
    """Write exactly what :func:`push` would upload into ``out_dir`` (new or empty), atomically."""
    _check_repo_id(repo_id)
    kind = folder_kind(path)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HubError(f"--dry-run folder ({str(out)!r}) is not empty: pass a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        staged = _stage(
            kind, path, tmp, repo_id=repo_id, base_model_id=base_model_id, dataset_id=dataset_id
        )
        os.replace(tmp, out)  # onto a missing or empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    staged.folder = out
    staged.files = [out / p.relative_to(tmp) for p in staged.files]
    return kind, staged


def _stage(kind, path, out, *, repo_id, base_model_id, dataset_id, link=False) -> StagedUpload:
    if kind == "dataset":
        return stage_upload(path, out, repo_id=repo_id)
    return stage_model(
        path, out, repo_id=repo_id, base_model_id=base_model_id, dataset_id=dataset_id, link=link
    )


def repo_state(api: Any, repo_id: str, repo_type: str) -> RepoState:
    """Whether ``repo_id`` exists, is empty, carries kprep's tag, and its visibility."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.repo_info(repo_id, repo_type=repo_type)
    except RepositoryNotFoundError:
        return RepoState(exists=False)
    files = [s.rfilename for s in (getattr(info, "siblings", None) or [])]
    card = getattr(info, "card_data", None)
    tags = (getattr(card, "tags", None) if card is not None else None) or []
    return RepoState(
        exists=True,
        kprep_made=KPREP_TAG in tags,
        empty=all(f == ".gitattributes" for f in files),
        private=getattr(info, "private", None),
    )


def publish_folder(
    api: Any,
    *,
    repo_id: str,
    repo_type: str,
    folder: str | Path,
    public: bool | None,
    overwrite: bool,
    commit_message: str,
) -> dict[str, Any]:
    """Create or check the repo per the rules above, upload ``folder``, read visibility back."""
    state = repo_state(api, repo_id, repo_type)
    if state.exists and not state.empty and not state.kprep_made and not overwrite:
        raise HubError(
            f"{repo_type} repo {repo_id!r} already holds files that kprep did not write (its "
            f"card has no '{KPREP_TAG}' tag): pass --overwrite to replace them, or pick a new "
            "repo id"
        )
    created = visibility_changed = False
    if not state.exists:
        api.create_repo(repo_id, repo_type=repo_type, private=not public, exist_ok=False)
        created = True
    elif public is not None and state.private != (not public):
        api.update_repo_settings(repo_id, repo_type=repo_type, private=not public)
        visibility_changed = True
    deletes = None
    if state.exists and not state.empty and (state.kprep_made or overwrite):
        deletes = DELETE_PATTERNS[repo_type]
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type=repo_type,
        folder_path=str(folder),
        commit_message=commit_message,
        delete_patterns=deletes,
    )
    after = api.repo_info(repo_id, repo_type=repo_type)
    return {
        "url": f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}",
        "commit_url": getattr(commit, "commit_url", None),
        "private": getattr(after, "private", None),
        "created": created,
        "visibility_changed": visibility_changed,
        "deleted_patterns": deletes,
    }


def push(
    path: str | Path,
    repo_id: str,
    *,
    public: bool | None = None,
    overwrite: bool = False,
    token: str | None = None,
    base_model_id: str | None = None,
    dataset_id: str | None = None,
    api_factory: Callable[..., Any] | None = None,
) -> Published:
    """Stage ``path`` (dataset or model) in a temporary sibling folder and upload it.

    ``public``: None keeps an existing repo's visibility and makes a new repo
    private; True / False set it. ``token=None`` uses ``HF_TOKEN`` or the saved
    login. The token goes to ``HfApi`` only; error messages are scrubbed of it.
    """
    import huggingface_hub

    _check_repo_id(repo_id)
    kind = folder_kind(path)
    source = Path(path)
    # A sibling of the source (same filesystem: model weights are hard-linked, not
    # copied), or a temporary folder when the source's parent is read-only.
    tmp = source.parent / f".kprep-push-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
    except OSError:
        tmp = Path(tempfile.mkdtemp(prefix="kprep-push-"))
    try:
        staged = _stage(
            kind,
            source,
            tmp,
            repo_id=repo_id,
            base_model_id=base_model_id,
            dataset_id=dataset_id,
            link=True,
        )
        files = sorted(p.relative_to(tmp).as_posix() for p in staged.files)
        if kind == "dataset":
            what = ", ".join(f"{k} {v}" for k, v in staged.splits.items())
        else:
            what = ", ".join(files)
        try:
            api = (api_factory or huggingface_hub.HfApi)(token=token, library_name="kprep")
            result = publish_folder(
                api,
                repo_id=repo_id,
                repo_type=kind,
                folder=tmp,
                public=public,
                overwrite=overwrite,
                commit_message=f"kprep push: {what}"[:400],
            )
        except HubError:
            raise
        except Exception as error:  # huggingface_hub raises HTTP, auth and value errors
            message = scrub(f"{type(error).__name__}: {error}", token).splitlines()[0]
            raise HubError(
                f"push to {repo_id!r} failed ({message}); check the repo id and that your token "
                "has write access (hf auth login, or --token)"
            ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Published(kind=kind, repo_id=repo_id, staged=staged, files=files, **result)
