"""The dataset contract between ``kinetics_prep`` and ``trainer``, in code.

``docs/schema.md`` describes it in prose; this module is the only place that
knows it. Torch-free, and nothing heavy at import time (``datasets`` is
imported inside the Arrow functions).

- **File names**: the default manifest, its split files, Arrow folder and
  build report; ``label_map.json``; the download and extract record files;
  the training summary.
- **One sample type**, :class:`Sample`: id, frames *or* one video, prompt,
  answer, an optional ``label`` (a caption dataset has none), and free-form
  ``metadata`` (YouTube id, times, frame indices, ...).
- **Messages**: :func:`build_messages` (seed layout), :func:`trl_messages`
  (TRL layout, media as placeholders), and the accessors :func:`text_of`,
  :func:`media_paths`, :func:`user_media`.
- **The Arrow** ``Features``: :func:`features_for`.
- **One reader** for JSON manifests (a JSON list or JSON Lines, seed or LLaVA
  layout) and Arrow folders (split-aware): :func:`iter_entries` yields every
  entry as a :class:`Sample` or a :class:`BadEntry` (for ``kprep validate``,
  which reports every problem); :func:`read_samples` raises on the first bad
  one (for training, eval and predict).
- **The label map**: :func:`read_label_map` / :func:`write_label_map`.
- **The video suffixes** every stage accepts: :data:`VIDEO_SUFFIXES`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinetics_prep.errors import SchemaError
from kinetics_prep.fileio import atomic_write_json

if TYPE_CHECKING:
    import datasets

# --------------------------------------------------------------------------- file names

DEFAULT_MANIFEST = Path("dataset/kinetics_3k/kinetic_3K.json")
"""Where ``kprep build-manifest`` writes by default; its folder is the image root."""
SPLITS = ("train", "validation")
LABEL_MAP_NAME = "label_map.json"
BUILD_REPORT_NAME = "kprep_build.json"  # inside the Arrow folder
EXTRACT_RECORDS_NAME = "extract_results.jsonl"
EXTRACT_SHARD_GLOB = "extract_results.shard-*.jsonl"
DOWNLOAD_RECORDS_NAME = "download_results.jsonl"
DOWNLOAD_REPORT_NAME = "download_report.json"
MIRROR_ARCHIVES_NAME = "mirror_archives.jsonl"
TRAINING_SUMMARY_NAME = "training_summary.json"
TRAIN_CONFIG_NAME = "train_config.json"
CLIPS_DIR = "clips"  # OUT/clips/<clip_id>.<suffix> (download) ; <root>/clips (video media)
FRAMES_DIR = "frames"  # OUT/frames/<clip_id>/frame_<k>.jpg (extract)

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".3gp")
"""Every container a clip may have: download keeps only these, extract finds all of them."""


def extract_records_name(shard_index: int = 0, num_shards: int = 1) -> str:
    """The extract record file of one shard (the main file when unsharded)."""
    if num_shards == 1:
        return EXTRACT_RECORDS_NAME
    return f"extract_results.shard-{shard_index:05d}-of-{num_shards:05d}.jsonl"


def split_path(manifest: str | os.PathLike[str], split: str) -> Path:
    """``<stem>.<split>.json`` beside the manifest."""
    manifest = Path(manifest)
    return manifest.with_name(f"{manifest.stem}.{split}.json")


def arrow_dir(manifest: str | os.PathLike[str]) -> Path:
    """``<stem>_arrow/`` beside the manifest."""
    manifest = Path(manifest)
    return manifest.with_name(f"{manifest.stem}_arrow")


def report_path(manifest: str | os.PathLike[str]) -> Path:
    """``<stem>.report.json`` beside the manifest."""
    manifest = Path(manifest)
    return manifest.with_name(f"{manifest.stem}.report.json")


def label_map_path(dataset: str | os.PathLike[str]) -> Path:
    """The label map of a manifest JSON or an Arrow folder: ``label_map.json`` beside it."""
    return Path(dataset).parent / LABEL_MAP_NAME


def is_video_file(name: str) -> bool:
    """A visible file whose suffix is one of :data:`VIDEO_SUFFIXES` (any case)."""
    return not name.startswith(".") and name.lower().endswith(VIDEO_SUFFIXES)


# --------------------------------------------------------------------------- conversation text

DEFAULT_PROMPT = (
    "Please analyze the sequence of frames from this video. "
    "What specific action or event is happening?"
)
DEFAULT_ANSWER_TEMPLATE = "The video shows {label}."
LLAVA_IMAGE_TOKEN = "<image>"
LLAVA_VIDEO_TOKEN = "<video>"

# Columns of the Arrow dataset that are sample metadata (not id/messages/media/label).
METADATA_COLUMNS = (
    "kinetics_split",
    "youtube_id",
    "time_start",
    "time_end",
    "frame_indices",
    "timestamps",
)


# --------------------------------------------------------------------------- the sample


@dataclass
class Sample:
    """One conversation of the dataset and where its media is.

    ``images`` are frame references in order: paths relative to the image
    root (what writers store), absolute paths (what :func:`read_samples`
    returns for a JSON manifest), or ``{"bytes", "path"}`` dicts (Arrow rows,
    storage as is: nothing is decoded). ``video`` is one clip path instead of
    frames. ``label`` is the Kinetics class name, ``None`` where the answer
    is free text (a caption). ``metadata`` holds the other columns
    (:data:`METADATA_COLUMNS`, and anything a future source adds).
    """

    id: str
    prompt: str
    answer: str
    images: list[Any] = field(default_factory=list)
    video: str | None = None
    label: str | None = None
    split: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The seed-format conversation (``docs/schema.md``)."""
        return build_messages(
            prompt=self.prompt, answer=self.answer, images=self.images, video=self.video
        )

    def entry(self) -> dict[str, Any]:
        """The seed-format manifest entry: id, messages, label, split, then metadata."""
        out: dict[str, Any] = {
            "id": self.id,
            "messages": self.messages,
            "label": self.label,
            "split": self.split,
        }
        for key in METADATA_COLUMNS:
            out[key] = self.metadata.get(key)
        out.update({k: v for k, v in self.metadata.items() if k not in out})
        return out

    def llava_entry(self) -> dict[str, Any]:
        """The ``--format llava`` entry: ``image`` list / ``video`` + ``conversations``."""
        entry = to_llava(sample_id=self.id, messages=self.messages)
        entry.update(label=self.label, split=self.split, youtube_id=self.metadata.get("youtube_id"))
        return entry


@dataclass(frozen=True)
class BadEntry:
    """An entry that is not a sample (``kind`` is a validate problem kind)."""

    kind: str
    id: str
    message: str


BAD_MESSAGES = "bad messages"
MEDIA_MISMATCH = "media count mismatch"


# --------------------------------------------------------------------------- messages


def build_messages(
    *,
    prompt: str,
    answer: str,
    images: Sequence[Any] = (),
    video: str | None = None,
) -> list[dict[str, Any]]:
    """The seed-format conversation: media items in order, then the prompt; then the answer.

    >>> build_messages(prompt="What?", answer="A.", images=["f1.jpg"])[0]["content"]
    [{'type': 'image', 'image': 'f1.jpg'}, {'type': 'text', 'text': 'What?'}]
    """
    from kinetics_prep.errors import ConversationError

    if bool(images) == (video is not None):
        raise ConversationError("a sample has either frame images or one video, not both/neither")
    if not answer.strip():
        raise ConversationError("the answer is empty")
    content: list[dict[str, Any]] = (
        [{"type": "image", "image": path} for path in images]
        if images
        else [{"type": "video", "video": video}]
    )
    content.append({"type": "text", "text": prompt})
    return [
        {"role": "user", "content": content},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def trl_messages(
    *, prompt: str, answer: str, num_images: int = 0, video: bool = False
) -> list[dict[str, Any]]:
    """TRL's layout: every item is ``{"type", "text"}``; media items carry ``text=None``.

    The media go to the ``images`` (or ``video``) column in the same order.
    Built directly, without the seed dicts: the Arrow build calls this 650k times.
    """
    media: list[dict[str, Any]] = (
        [{"type": "video", "text": None}]
        if video
        else [{"type": "image", "text": None}] * num_images
    )
    return [
        {"role": "user", "content": [*media, {"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def to_trl_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Any seed-format conversation in TRL's layout (see :func:`trl_messages`)."""
    out = []
    for message in messages:
        content = [
            {"type": item["type"], "text": item.get("text") if item["type"] == "text" else None}
            for item in message["content"]
        ]
        out.append({"role": message["role"], "content": content})
    return out


def _items(messages: Sequence[Mapping[str, Any]], kind: str) -> Iterator[Mapping[str, Any]]:
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            for item in content:
                if isinstance(item, Mapping) and item.get("type") == kind:
                    yield item


def media_paths(messages: Sequence[Mapping[str, Any]], kind: str = "image") -> list[Any]:
    """The ``kind`` (``image`` / ``video``) references of a conversation, in order.

    TRL-layout placeholders (no ``image`` key) count as ``None`` entries.
    """
    return [item.get(kind) for item in _items(messages, kind)]


def user_media(messages: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any]]:
    """``(images, videos)`` of the user turns (everything before the answer)."""
    turns = messages[:-1]
    return media_paths(turns, "image"), media_paths(turns, "video")


def text_of(message: Mapping[str, Any]) -> str:
    """The concatenated text items of one message."""
    return "".join(item.get("text") or "" for item in _items([message], "text"))


def to_llava(*, sample_id: str, messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """LLaVA-style entry: ``image`` list (or ``video``) + ``conversations`` with placeholders.

    One ``<image>`` line per frame, in order, before the prompt, as LLaVA-NeXT
    and similar trainers expect for multi-image samples.
    """
    user, assistant = messages[0], messages[-1]
    images = media_paths([user], "image")
    videos = media_paths([user], "video")
    entry: dict[str, Any] = {"id": sample_id}
    if images:
        entry["image"] = images
        tokens = "\n".join([LLAVA_IMAGE_TOKEN] * len(images))
    else:
        entry["video"] = videos[0]
        tokens = LLAVA_VIDEO_TOKEN
    entry["conversations"] = [
        {"from": "human", "value": f"{tokens}\n{text_of(user)}"},
        {"from": "gpt", "value": text_of(assistant)},
    ]
    return entry


# --------------------------------------------------------------------------- Arrow features


def features_for(labels: Sequence[str]) -> datasets.Features:
    """The explicit ``Features`` of docs/schema.md, with ``label`` as ``ClassLabel(labels)``."""
    from datasets import ClassLabel, Features, Image, List, Value

    return Features(
        {
            "id": Value("string"),
            "messages": List(
                {
                    "role": Value("string"),
                    "content": List({"type": Value("string"), "text": Value("string")}),
                }
            ),
            "images": List(Image()),
            "video": Value("string"),
            "label": ClassLabel(names=list(labels)),
            "youtube_id": Value("string"),
            "kinetics_split": Value("string"),
            "time_start": Value("float64"),
            "time_end": Value("float64"),
            "frame_indices": List(Value("int32")),
            "timestamps": List(Value("float64")),
        }
    )


# --------------------------------------------------------------------------- label map


@dataclass
class LabelMap:
    """``label_map.json``: label ids (list order) and the answer template, if recorded."""

    labels: list[str]
    answer_template: str | None = None
    path: Path | None = None

    def answer(self, label: str) -> str | None:
        """The answer the template gives ``label`` (None without a template)."""
        return self.answer_template.format(label=label) if self.answer_template else None


def read_label_map(path: str | os.PathLike[str]) -> LabelMap:
    """Read ``label_map.json``; a missing or malformed file is a :class:`SchemaError`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaError(
            f"label map {str(path)!r} does not exist: pass the {LABEL_MAP_NAME} that "
            "`kprep build-manifest` wrote"
        ) from None
    except (OSError, ValueError) as error:
        raise SchemaError(f"label map {str(path)!r} cannot be read ({error})") from None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, list):
        raise SchemaError(f"label map {str(path)!r} has no 'labels' list")
    template = data.get("answer_template")
    return LabelMap(
        labels=[str(x) for x in labels],
        answer_template=template if isinstance(template, str) else None,
        path=path,
    )


def write_label_map(
    path: str | os.PathLike[str],
    labels: Sequence[str],
    *,
    answer_template: str | None = None,
    sort: bool = True,
) -> list[str]:
    """Write ``{"labels": [...]}`` and return the id order.

    Ids stay stable: an existing map keeps its order (and its other keys) and
    new labels are appended, sorted (or in the given order with
    ``sort=False``). ``answer_template`` is recorded when given.
    """
    path = Path(path)
    existing: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            loaded = None
        if isinstance(loaded, dict) and isinstance(loaded.get("labels"), list):
            existing = loaded
    order = [str(label) for label in existing.get("labels", [])]
    have = set(order)
    new = [label for label in dict.fromkeys(labels) if label and label not in have]
    order += sorted(new) if sort else new
    payload = dict(existing)
    payload["labels"] = order
    if answer_template is not None:
        payload["answer_template"] = answer_template
    atomic_write_json(path, payload)
    return order


# --------------------------------------------------------------------------- the reader


def load_arrow(path: str | os.PathLike[str]) -> datasets.DatasetDict:
    """An Arrow folder as a DatasetDict (a bare saved Dataset becomes its ``train`` split)."""
    import datasets

    path = Path(path)
    if not path.is_dir():
        raise SchemaError(
            f"{str(path)!r} is not a folder: pass the *_arrow folder that "
            "`kprep build-manifest` wrote"
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise SchemaError(
            f"{str(path)!r} is not a saved Arrow dataset ({error}); pass the *_arrow folder"
        ) from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def _resolve(root: Path, name: str) -> str:
    return name if os.path.isabs(name) else str(root / name)


def _json_entries(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SchemaError(f"{path} cannot be read ({error})") from None
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        entries = json.loads(text)
    except ValueError as error:
        raise SchemaError(
            f"{path} is not a readable JSON manifest: not valid JSON ({error}); "
            "rebuild it with `kprep build-manifest`"
        ) from None
    if not isinstance(entries, list):
        raise SchemaError(f"{path} must hold a JSON list of samples (kprep build-manifest)")
    return entries


def _metadata(entry: Mapping[str, Any], skip: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in skip}


_ENTRY_KEYS = ("id", "messages", "label", "split", "conversations", "image", "video")


def _seed_sample(entry: Any, index: int, root: Path) -> Sample | BadEntry:
    sample_id = str(entry.get("id", index)) if isinstance(entry, dict) else str(index)
    if isinstance(entry, dict) and "conversations" in entry and "messages" not in entry:
        return _llava_sample(entry, sample_id, root)
    messages = entry.get("messages") if isinstance(entry, dict) else None
    if (
        not isinstance(messages, list)
        or len(messages) < 2
        or not all(isinstance(m, dict) for m in messages)
        or messages[-1].get("role") != "assistant"
    ):
        return BadEntry(BAD_MESSAGES, sample_id, "'messages' must be user then assistant turns")
    assert isinstance(entry, dict)
    images, videos = user_media(messages)
    if len(videos) > 1:
        return BadEntry(
            MEDIA_MISMATCH, sample_id, f"one video per sample is supported, found {len(videos)}"
        )
    label = entry.get("label")
    return Sample(
        id=sample_id,
        prompt="".join(text_of(m) for m in messages[:-1]),
        answer=text_of(messages[-1]),
        images=[_resolve(root, str(name)) for name in images],
        video=_resolve(root, str(videos[0])) if videos else None,
        label=None if label is None else str(label),
        split=entry.get("split"),
        metadata=_metadata(entry, _ENTRY_KEYS),
    )


def _llava_sample(entry: dict[str, Any], sample_id: str, root: Path) -> Sample | BadEntry:
    turns = entry.get("conversations")
    if (
        not isinstance(turns, list)
        or len(turns) < 2
        or not all(isinstance(t, dict) for t in turns)
        or turns[-1].get("from") != "gpt"
    ):
        return BadEntry(BAD_MESSAGES, sample_id, "'conversations' must be human turn(s) then gpt")
    images = entry.get("image") or []
    images = [images] if isinstance(images, str) else list(images)
    prompt = "".join(str(t.get("value", "")) for t in turns[:-1])
    placeholders = prompt.count(LLAVA_IMAGE_TOKEN)
    if placeholders != len(images):
        return BadEntry(
            MEDIA_MISMATCH, sample_id, f"{placeholders} image placeholders but {len(images)} images"
        )
    for token in (LLAVA_IMAGE_TOKEN, LLAVA_VIDEO_TOKEN):
        prompt = prompt.replace(token + "\n", "").replace(token, "")
    video = entry.get("video")
    label = entry.get("label")
    return Sample(
        id=sample_id,
        prompt=prompt,
        answer=str(turns[-1].get("value") or ""),
        images=[_resolve(root, str(name)) for name in images],
        video=_resolve(root, str(video)) if video else None,
        label=None if label is None else str(label),
        split=entry.get("split"),
        metadata=_metadata(entry, _ENTRY_KEYS),
    )


def _arrow_entries(
    path: Path, root: Path, split: str | None, max_samples: int | None
) -> Iterator[Sample | BadEntry]:
    loaded = load_arrow(path)
    if split is not None and split not in loaded:
        raise SchemaError(f"--split {split!r} not in {path}: it has {', '.join(loaded)}")
    names = [split] if split is not None else list(loaded)
    for name in names:
        ds = loaded[name]
        missing = {"id", "messages", "images"} - set(ds.column_names)
        if missing:
            raise SchemaError(f"{path} split {name!r} lacks columns {sorted(missing)}")
        if max_samples:
            ds = ds.select(range(min(max_samples, len(ds))))
        label_names = getattr(ds.features.get("label"), "names", None)
        # raw storage: images stay {"bytes", "path"}, nothing is decoded here
        rows = (row for batch in ds.with_format("arrow").iter(1000) for row in batch.to_pylist())
        for index, row in enumerate(rows):
            yield _arrow_sample(row, index, name, root, label_names)


def _arrow_sample(
    row: dict[str, Any], index: int, split: str, root: Path, label_names: list[str] | None
) -> Sample | BadEntry:
    sample_id = str(row.get("id", index))
    messages = row.get("messages") or []
    if len(messages) < 2 or messages[-1].get("role") != "assistant":
        return BadEntry(BAD_MESSAGES, sample_id, "'messages' must be user then assistant turns")
    placeholders = len(media_paths(messages[:-1], "image"))
    images = []
    for image in row.get("images") or []:
        if image.get("bytes"):
            images.append({"bytes": image["bytes"], "path": image.get("path")})
        else:
            images.append({"bytes": None, "path": _resolve(root, image.get("path") or "")})
    if placeholders != len(images):
        return BadEntry(
            MEDIA_MISMATCH, sample_id, f"{placeholders} image placeholders but {len(images)} images"
        )
    label = row.get("label")
    if label_names is not None and isinstance(label, int):
        label = label_names[label]
    video = row.get("video")
    return Sample(
        id=sample_id,
        prompt="".join(text_of(m) for m in messages[:-1]),
        answer=text_of(messages[-1]),
        images=images,
        video=_resolve(root, video) if video else None,
        label=None if label is None else str(label),
        split=split,
        metadata={k: row[k] for k in METADATA_COLUMNS if k in row},
    )


def iter_entries(
    path: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    max_samples: int | None = None,
) -> Iterator[Sample | BadEntry]:
    """Every entry of a manifest (``.json`` list / ``.jsonl``) or Arrow folder, in order.

    Media paths come back absolute, resolved against ``image_root`` (default:
    the JSON's folder, or the Arrow folder's parent: the dataset folder that
    holds ``frames/`` and ``clips/``). ``split`` picks one Arrow split (all
    when None); a JSON manifest is one split already (``<stem>.<split>.json``),
    so ``split`` does not filter it. A file that cannot be read at all raises
    :class:`SchemaError`; a bad entry is yielded as a :class:`BadEntry`.
    """
    path = Path(path)
    if not path.exists():
        raise SchemaError(
            f"{path} does not exist: pass the manifest JSON or *_arrow folder written by "
            "`kprep build-manifest`"
        )
    root = Path(image_root) if image_root is not None else path.parent
    if path.is_dir():
        yield from _arrow_entries(path, root, split, max_samples)
        return
    entries = _json_entries(path)
    count = 0
    for index, entry in enumerate(entries):
        if max_samples and count >= max_samples:
            return
        count += 1
        yield _seed_sample(entry, index, root)


def read_samples(
    path: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    max_samples: int | None = None,
) -> list[Sample]:
    """:func:`iter_entries` as a list; the first bad entry raises :class:`SchemaError`."""
    samples = []
    for item in iter_entries(path, image_root=image_root, split=split, max_samples=max_samples):
        if isinstance(item, BadEntry):
            raise SchemaError(f"{path}: sample {item.id!r}: {item.message}")
        samples.append(item)
    return samples


def write_manifest(
    path: str | os.PathLike[str], samples: Sequence[Sample], *, format: str = "seed"
) -> Path:
    """Write ``samples`` as a manifest JSON list (one entry per line), atomically.

    (``indent=`` would switch ``json`` to its pure-Python encoder, 3x slower on
    650k entries.)
    """
    from kinetics_prep.fileio import atomic_write_text

    entries = [s.llava_entry() if format == "llava" else s.entry() for s in samples]
    if not entries:
        return atomic_write_text(path, "[]\n")
    lines = ",\n".join(json.dumps(e, ensure_ascii=False) for e in entries)
    return atomic_write_text(path, f"[\n{lines}\n]\n")
