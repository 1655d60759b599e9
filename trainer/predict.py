"""Name the action in one clip (or one extracted frames folder) with a trained model.

The frames and the prompt are made exactly as for training: a clip is decoded
with kinetics_prep's decoders and the recipe's frame sampling (``center`` and
4 frames unless the training recipe says otherwise); a frames folder
(``frames/<clip_id>/frame_1.jpg ..``, what ``kprep extract`` writes) is read in
frame order. The prompt is the training data's own prompt (read from the
manifest recorded in ``training_summary.json``) with these frames in place of
its images; when training read raw videos (``{"type": "video"}``), a clip goes
in as a video with its real fps, as in training. The model-ready input is
built by the training collator (through :class:`trainer.evaluate.Scorer`). The
answer is mapped to a label with the evaluation normaliser; ``rank=True`` adds
the top-k labels by answer likelihood.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinetics_prep.errors import KprepError
from kinetics_prep.sampling import SAMPLING_METHODS
from kinetics_prep.schema import DEFAULT_PROMPT, Sample, trl_messages
from trainer.errors import ConfigError, PredictError

logger = logging.getLogger(__name__)

_FRAME_RE = re.compile(r"^frame_(\d+)\.(jpe?g|png)$", re.IGNORECASE)


@dataclass
class PredictConfig:
    """What `kprep predict` needs; unset fields come from the adapter's training summary."""

    source: str
    adapter: str | None = None
    model_id: str | None = None
    rank: bool = False
    top_k: int = 5
    num_frames: int | None = None
    sampling: str | None = None
    decoder: str = "auto"
    label_map: str | None = None
    prompt: str | None = None
    max_new_tokens: int = 24
    max_soft_tokens: int | None = None
    short_side: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not Path(self.source).exists():
            problems.append(f"{self.source} does not exist: pass a clip file or a frames folder")
        if self.adapter is None and self.model_id is None:
            problems.append("pass --adapter (kprep train's output) or --model-id")
        if self.top_k < 1:
            problems.append(f"--top-k ({self.top_k}) must be >= 1")
        if self.num_frames is not None and self.num_frames < 1:
            problems.append(f"--num-frames ({self.num_frames}) must be >= 1")
        if self.sampling is not None and self.sampling not in SAMPLING_METHODS:
            problems.append(
                f"--sampling ({self.sampling!r}) must be one of {', '.join(SAMPLING_METHODS)}"
            )
        if problems:
            raise ConfigError("; ".join(problems))


def training_sample(data_path: str | Path | None) -> Sample | None:
    """The first training sample (its prompt and media kind are what training used), if readable."""
    if not data_path:
        return None
    from trainer.data import load_samples

    try:
        return load_samples(data_path, max_samples=1)[0]
    except (KprepError, OSError):
        return None


def prompt_messages(prompt: str | None, *, num_images: int = 0, video: bool = False):
    """The user turn: ``num_images`` image items (or one video item), then the prompt text."""
    messages = trl_messages(
        prompt=prompt or DEFAULT_PROMPT, answer="", num_images=num_images, video=video
    )
    return messages[:-1]


def load_frames(
    source: str | Path,
    *,
    num_frames: int = 4,
    sampling: str = "center",
    decoder: str = "auto",
    short_side: int | None = None,
) -> tuple[list[Any], list[int] | None]:
    """(PIL frames in order, decoded frame indices or None) from a clip or a frames folder."""
    from PIL import Image

    source = Path(source)
    if source.is_dir():
        found = []
        for path in source.iterdir():
            match = _FRAME_RE.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        if not found:
            raise PredictError(
                f"{source} holds no frame_<k>.jpg files: pass a clip or a frames/<clip_id> folder"
            )
        frames = []
        for _, path in sorted(found):
            with Image.open(path) as img:
                frames.append(img.convert("RGB"))
        return frames, None
    from kinetics_prep.decode import DecodeError, read_frames
    from kinetics_prep.frames import resize_short_side

    try:
        decoded = read_frames(source, num_frames=num_frames, sampling=sampling, decoder=decoder)
    except DecodeError as exc:
        raise PredictError(str(exc)) from exc
    frames = [Image.fromarray(resize_short_side(f, short_side)) for f in decoded.frames]
    return frames, [int(i) for i in decoded.indices]


def _input_item(config: PredictConfig, trained: Sample | None, recipe: dict[str, Any]):
    """(model-ready item without an answer, decoded frame indices or None, sampling or None).

    A clip goes in as training saw its data: as a video (with its real fps)
    when training read raw videos, else as image frames; a frames folder is
    always image frames.
    """
    from trainer.data import load_video

    num_frames = config.num_frames or int(recipe.get("num_frames") or 4)
    sampling = config.sampling or recipe.get("frame_sampling") or "center"
    prompt = config.prompt or (trained.prompt if trained is not None else None)
    source = Path(config.source)
    if trained is not None and trained.video is not None and source.is_file():
        from kinetics_prep.decode import DecodeError

        try:
            video, metadata = load_video(
                str(source), num_frames=num_frames, sampling=sampling, decoder=config.decoder
            )
        except DecodeError as exc:
            raise PredictError(str(exc)) from exc
        item = {
            "messages": prompt_messages(prompt, video=True),
            "images": [],
            "video": video,
            "video_metadata": metadata,
        }
        return item, list(metadata.frames_indices), sampling
    frames, indices = load_frames(
        source,
        num_frames=num_frames,
        sampling=sampling,
        decoder=config.decoder,
        short_side=config.short_side,
    )
    item = {
        "messages": prompt_messages(prompt, num_images=len(frames)),
        "images": frames,
        "video": None,
        "video_metadata": None,
    }
    return item, indices, sampling if indices is not None else None


def predict(config: PredictConfig) -> dict[str, Any]:
    """Predict the action of ``config.source``; returns answer, label and (with rank) top-k."""
    from trainer.evaluate import Scorer, num_frames_of
    from trainer.labels import find_label_map, load_label_map
    from trainer.loading import base_model_id, load_finetuned, training_summary

    summary = training_summary(config.adapter)
    recipe = summary.get("recipe") or {}
    model_id = base_model_id(config.model_id, config.adapter)
    data_path = (summary.get("data") or {}).get("path")
    if config.label_map:
        matcher = load_label_map(config.label_map)
    elif data_path:
        matcher = load_label_map(find_label_map(data_path))
    else:
        raise PredictError("no label map: pass --label-map (the dataset's label_map.json)")
    max_soft_tokens = config.max_soft_tokens or recipe.get("max_soft_tokens")
    item, indices, sampling = _input_item(config, training_sample(data_path), recipe)
    model, processor = load_finetuned(model_id, config.adapter, max_soft_tokens=max_soft_tokens)
    scorer = Scorer(model, processor, matcher, max_soft_tokens=max_soft_tokens)
    text, scores = scorer.run(
        item, generate=True, rank=config.rank, max_new_tokens=config.max_new_tokens, batch_size=16
    )
    result: dict[str, Any] = {
        "source": str(config.source),
        "answer": text,
        "label": matcher.match(text),
        "frame_indices": indices,
        "num_frames": num_frames_of(item),
        "sampling": sampling,
        "input": "video" if item["video"] is not None else "images",
    }
    if scores is not None:
        order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[: config.top_k]
        result["ranked"] = [
            {"label": matcher.labels[i], "log_likelihood": round(scores[i], 4)} for i in order
        ]
    logger.info("%s -> %r (%s)", config.source, text, result["label"])
    return result


__all__ = ["PredictConfig", "load_frames", "predict", "prompt_messages"]
