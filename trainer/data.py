"""Read what kinetics_prep writes (docs/schema.md) and turn each sample into model inputs.

The samples are ``kinetics_prep.schema.Sample`` s from the contract's one reader
(their ``label`` travels on to evaluation). Two sources:

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
import logging
from pathlib import Path
from typing import Any

from kinetics_prep.schema import Sample, read_samples
from trainer.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["ConversationDataset", "DataError", "Sample", "data_fingerprint", "load_samples"]


def load_samples(
    data_path: str | Path,
    *,
    image_folder: str | Path | None = None,
    split: str = "train",
    max_samples: int | None = None,
) -> list[Sample]:
    """The samples of a manifest JSON or an Arrow folder's ``split``, media checked.

    Reading is ``kinetics_prep.schema.read_samples`` (the one reader of the
    contract); this adds what training needs on top: at least one sample, and
    the first frame / the video of every JSON sample on disk (a wrong image
    root fails here, not hours into a run).
    """
    path = Path(data_path)
    if not path.exists():
        raise DataError(
            f"--data-path {path} does not exist: pass the manifest JSON or Arrow folder "
            "written by `kprep build-manifest`"
        )
    samples = read_samples(
        path,
        image_root=image_folder,
        split=split if path.is_dir() else None,
        max_samples=max_samples,
    )
    if not samples:
        raise DataError(f"--data-path {path} holds no samples")
    for sample in samples:
        media = [x for x in sample.images[:1] if isinstance(x, str)]
        for file in media + ([sample.video] if sample.video else []):
            if not Path(file).is_file():
                raise DataError(
                    f"{path} sample {sample.id!r}: {file} not found: pass --image-folder, "
                    "the folder the paths are relative to"
                )
    logger.info("loaded %d samples from %s", len(samples), path)
    return samples


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
        return self.item(self.samples[index])

    def item(self, sample: Sample) -> dict[str, Any]:
        """The model-ready item of one sample (eval and predict build theirs here too)."""
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
