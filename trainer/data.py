"""Read what kinetics_prep writes (docs/schema.md) and turn each sample into model inputs.

Two sources:

- a seed-format manifest JSON (a list of ``{"messages": [...], ...}``); image and
  video paths are relative to ``image_folder`` (default: the JSON's folder);
- an Arrow dataset folder (``DatasetDict.save_to_disk``; pick ``split``): the
  frames are in the ``images`` column, raw-video rows carry a relative ``video``
  path resolved against ``image_folder`` (default: the Arrow folder's parent,
  the dataset folder that holds ``clips/``).

Raw-video entries are decoded here with kinetics_prep's decoders and sampling
(``kinetics_prep.decode.read_frames``), and the frames go to the Gemma 4 video
processor with their true fps (``VideoMetadata``) and ``do_sample_frames=False``,
so the timestamps in the prompt are real; the processor never opens files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """The training data cannot be read; the message says which file and what to do."""


@dataclass
class Sample:
    """One conversation: seed-format ``messages`` and where its media is."""

    id: str
    messages: list[dict[str, Any]]
    images: list[Any]  # absolute paths (JSON) or PIL images / {"bytes"/"path"} (Arrow)
    video: str | None  # absolute path of a raw clip, else None
    label: str | None = None  # the Kinetics class when the data names one
    captions: list[str] | None = None  # caption data: every reference caption kept


def _media_items(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            out += [c for c in content if isinstance(c, dict) and c.get("type") == kind]
    return out


def _check_messages(messages: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or len(messages) < 2:
        raise DataError(f"{where}: 'messages' must be a list of user then assistant turns")
    if messages[-1].get("role") != "assistant":
        raise DataError(f"{where}: the last message must be the assistant's answer")
    return messages


def load_samples(
    data_path: str | Path,
    *,
    image_folder: str | Path | None = None,
    split: str = "train",
    max_samples: int | None = None,
) -> list[Sample]:
    """Read a manifest JSON or an Arrow dataset folder into ``Sample`` s."""
    path = Path(data_path)
    if not path.exists():
        raise DataError(
            f"--data-path {path} does not exist: pass the manifest JSON or Arrow folder "
            "written by `kprep build-manifest`"
        )
    if path.is_dir():
        samples = _load_arrow(path, image_folder=image_folder, split=split, max_samples=max_samples)
    else:
        samples = _load_json(path, image_folder=image_folder, max_samples=max_samples)
    if not samples:
        raise DataError(f"--data-path {path} holds no samples")
    logger.info("loaded %d samples from %s", len(samples), path)
    return samples


def _load_json(path: Path, *, image_folder, max_samples) -> list[Sample]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(
            f"--data-path {path} is not valid JSON ({exc}): rebuild the manifest"
        ) from exc
    if not isinstance(entries, list):
        raise DataError(f"--data-path {path} must hold a JSON list of samples")
    root = Path(image_folder) if image_folder else path.parent
    if max_samples:
        entries = entries[:max_samples]
    samples = []
    for i, entry in enumerate(entries):
        where = f"{path} entry {i}"
        messages = _check_messages(
            entry.get("messages") if isinstance(entry, dict) else None, where
        )
        images = [str(root / item["image"]) for item in _media_items(messages, "image")]
        videos = [str(root / item["video"]) for item in _media_items(messages, "video")]
        if len(videos) > 1:
            raise DataError(f"{where}: one video per sample is supported, found {len(videos)}")
        for image in images[:1] + videos:
            if not Path(image).is_file():
                raise DataError(
                    f"{where}: {image} not found: pass --image-folder, the folder the paths are relative to"
                )
        samples.append(
            Sample(
                id=str(entry.get("id", i)),
                messages=messages,
                images=images,
                video=videos[0] if videos else None,
                label=entry.get("label"),
                captions=entry.get("captions"),
            )
        )
    return samples


def _load_arrow(path: Path, *, image_folder, split, max_samples) -> list[Sample]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise DataError(
            f"--data-path {path} is not a saved Arrow dataset: pass the *_arrow folder"
        ) from exc
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"--split {split!r} not in {path}: it has {', '.join(ds)}")
        ds = ds[split]
    if max_samples:
        ds = ds.select(range(min(max_samples, len(ds))))
    root = Path(image_folder) if image_folder else path.parent
    names = getattr(ds.features.get("label"), "names", None)
    samples = []
    for i, row in enumerate(ds):
        messages = _check_messages(row.get("messages"), f"{path} row {i}")
        video = row.get("video")
        n_images = len(_media_items(messages, "image"))
        images = list(row.get("images") or [])
        if len(images) != n_images:
            raise DataError(
                f"{path} row {i}: {n_images} image placeholders but {len(images)} images"
            )
        samples.append(
            Sample(
                id=str(row.get("id", i)),
                messages=messages,
                images=images,
                video=str(root / video) if video else None,
                label=_label_name(row.get("label"), names),
                captions=row.get("captions"),
            )
        )
    return samples


def _label_name(value: Any, names: list[str] | None) -> str | None:
    if value is None:
        return None
    if names is not None and isinstance(value, int):
        return names[value]
    return str(value)


def data_fingerprint(data_path: str | Path) -> str:
    """sha256 of the manifest file, or of an Arrow folder's files (names + bytes)."""
    path = Path(data_path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_image(item: Any):
    """A PIL RGB image from a path, a PIL image, or a datasets ``{"bytes", "path"}`` dict."""
    import io

    from PIL import Image

    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, dict):
        if item.get("bytes"):
            return Image.open(io.BytesIO(item["bytes"])).convert("RGB")
        item = item.get("path")
    with Image.open(item) as img:
        return img.convert("RGB")


def load_video(path: str, *, num_frames: int, sampling: str, decoder: str):
    """Decode ``num_frames`` frames with kinetics_prep; return (frames[T,H,W,3], VideoMetadata)."""
    import numpy as np
    from transformers.video_utils import VideoMetadata

    from kinetics_prep.decode import read_frames

    decoded = read_frames(path, num_frames=num_frames, sampling=sampling, decoder=decoder)
    frames = np.stack([np.asarray(f) for f in decoded.frames])
    metadata = VideoMetadata(
        total_num_frames=int(decoded.num_frames),
        fps=float(decoded.fps) if decoded.fps else None,
        width=int(decoded.width),
        height=int(decoded.height),
        frames_indices=[int(i) for i in decoded.indices],
        video_backend=str(decoded.decoder),
    )
    if decoded.fps:
        metadata.duration = decoded.num_frames / float(decoded.fps)
    return frames, metadata


class ConversationDataset:
    """Map-style dataset: ``ds[i]`` -> ``{"messages", "images", "video", "video_metadata"}``.

    Media is loaded lazily (in DataLoader workers), so a big manifest costs no
    memory up front.
    """

    def __init__(
        self,
        samples: list[Sample],
        *,
        num_frames: int = 4,
        sampling: str = "center",
        decoder: str = "auto",
    ) -> None:
        self.samples = samples
        self.num_frames = num_frames
        self.sampling = sampling
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        item: dict[str, Any] = {
            "id": sample.id,
            "messages": sample.messages,
            "images": [load_image(x) for x in sample.images],
            "video": None,
            "video_metadata": None,
        }
        if sample.video is not None:
            item["video"], item["video_metadata"] = load_video(
                sample.video,
                num_frames=self.num_frames,
                sampling=self.sampling,
                decoder=self.decoder,
            )
        return item
