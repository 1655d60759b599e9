"""Name the action in one clip (or one extracted frames folder) with a trained model.

The frames and the prompt are made exactly as for training: a clip is decoded
with kinetics_prep's decoders and the recipe's frame sampling (``center`` and
4 frames unless the training recipe says otherwise); a frames folder
(``frames/<clip_id>/frame_1.jpg ..``, what ``kprep extract`` writes) is read in
frame order. The prompt is the training data's own user turn (read from the
manifest recorded in ``training_summary.json``) with these frames in place of
its images. The answer is mapped to a label with the evaluation normaliser;
``rank=True`` adds the top-k labels by answer likelihood.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.evaluate import (
    AnswerMatcher,
    EvalError,
    EvalSample,
    Scorer,
    find_label_map,
    load_eval_model,
    load_label_map,
)

logger = logging.getLogger(__name__)

SUMMARY_NAME = "training_summary.json"
DEFAULT_PROMPT = (
    "Please analyze the sequence of frames from this video. "
    "What specific action or event is happening?"
)
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
        if self.sampling is not None and self.sampling not in ("center", "linspace", "random"):
            problems.append(f"--sampling ({self.sampling!r}) must be center, linspace or random")
        if problems:
            raise EvalError("; ".join(problems))


def training_summary(adapter: str | Path | None) -> dict[str, Any]:
    """The adapter folder's training_summary.json, or {} when there is none."""
    if adapter is None:
        return {}
    path = Path(adapter) / SUMMARY_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EvalError(f"{path} is not valid JSON ({exc}): retrain or pass --model-id") from exc


def training_prompt(data_path: str | Path | None) -> list[dict[str, Any]] | None:
    """The user turn of the first training sample (the prompt training used), if readable."""
    if not data_path:
        return None
    from trainer.data import DataError, load_samples

    try:
        sample = load_samples(data_path, max_samples=1)[0]
    except (DataError, OSError, IndexError):
        return None
    return [m for m in sample.messages[:-1]]


def prompt_with_frames(prompt_messages: list[dict[str, Any]] | None, n: int, text: str | None):
    """The user turn with ``n`` image items (in place of the training images) and its text."""
    if prompt_messages is None or text is not None:
        return [
            {
                "role": "user",
                "content": [{"type": "image"} for _ in range(n)]
                + [{"type": "text", "text": text or DEFAULT_PROMPT}],
            }
        ]
    out = []
    for message in prompt_messages:
        content = message.get("content")
        if isinstance(content, list) and any(c.get("type") in ("image", "video") for c in content):
            texts = [c for c in content if c.get("type") == "text"]
            content = [{"type": "image"} for _ in range(n)] + texts
        out.append({**message, "content": content})
    return out


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
            raise EvalError(
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
        raise EvalError(str(exc)) from exc
    frames = [Image.fromarray(resize_short_side(f, short_side)) for f in decoded.frames]
    return frames, [int(i) for i in decoded.indices]


def predict(config: PredictConfig) -> dict[str, Any]:
    """Predict the action of ``config.source``; returns answer, label and (with rank) top-k."""
    summary = training_summary(config.adapter)
    recipe = summary.get("recipe") or {}
    model_id = config.model_id or summary.get("model_id")
    if not model_id:
        raise EvalError(
            f"{config.adapter} has no {SUMMARY_NAME} naming the base model: pass --model-id"
        )
    data_path = (summary.get("data") or {}).get("path")
    if config.label_map:
        matcher = load_label_map(config.label_map)
    elif data_path:
        matcher = load_label_map(find_label_map(data_path))
    else:
        raise EvalError("no label map: pass --label-map (the dataset's label_map.json)")
    num_frames = config.num_frames or int(recipe.get("num_frames") or 4)
    sampling = config.sampling or recipe.get("frame_sampling") or "center"
    max_soft_tokens = config.max_soft_tokens or recipe.get("max_soft_tokens")
    frames, indices = load_frames(
        config.source,
        num_frames=num_frames,
        sampling=sampling,
        decoder=config.decoder,
        short_side=config.short_side,
    )
    messages = prompt_with_frames(training_prompt(data_path), len(frames), config.prompt)
    model, processor = load_eval_model(model_id, config.adapter, max_soft_tokens=max_soft_tokens)
    scorer = Scorer(model, processor, matcher, max_soft_tokens=max_soft_tokens)
    sample = EvalSample(id=str(config.source), prompt_messages=messages, images=frames, label="")
    text, scores = scorer.run(
        sample,
        frames,
        generate=True,
        rank=config.rank,
        max_new_tokens=config.max_new_tokens,
        batch_size=16,
    )
    result: dict[str, Any] = {
        "source": str(config.source),
        "answer": text,
        "label": matcher.match(text),
        "frame_indices": indices,
        "num_frames": len(frames),
        "sampling": sampling if indices is not None else None,
    }
    if scores is not None:
        order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[: config.top_k]
        result["ranked"] = [
            {"label": matcher.labels[i], "log_likelihood": round(scores[i], 4)} for i in order
        ]
    logger.info("%s -> %r (%s)", config.source, text, result["label"])
    return result


__all__ = ["AnswerMatcher", "PredictConfig", "load_frames", "predict", "prompt_with_frames"]
