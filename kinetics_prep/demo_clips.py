"""Synthetic clips whose class can only be read from frame order (the CPU demo).

A bright square moves in a straight line across a dark background. The class is
the direction: ``moving left``, ``moving right``, ``moving up`` or ``moving
down``. Each clip played backwards is a clip of another class (left <-> right,
up <-> down), so a model that ignores frame order cannot beat 50%, and the same
held-out clips with their frames reversed should be almost always wrong::

    >>> frames = moving_shape_frames("moving right", num_frames=16, size=64, seed=3)
    >>> len(frames), frames[0].shape
    (16, (64, 64, 3))

Clips are written one folder per class (``OUT/moving left/moving_left_0000.mp4``),
the Kinetics layout ``kprep extract`` takes labels from. Size, colours, start
point, travel and the position across the motion are drawn per clip from a
seeded generator, so the same seed writes the same clips.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Direction of motion per class, as (dx, dy) in image coordinates (y grows downwards).
DEMO_DIRECTIONS: dict[str, tuple[int, int]] = {
    "moving left": (-1, 0),
    "moving right": (1, 0),
    "moving up": (0, -1),
    "moving down": (0, 1),
}
DEMO_CLASSES: tuple[str, ...] = tuple(DEMO_DIRECTIONS)
# The class of a clip played backwards.
REVERSED_CLASS: dict[str, str] = {
    "moving left": "moving right",
    "moving right": "moving left",
    "moving up": "moving down",
    "moving down": "moving up",
}


@dataclass(frozen=True)
class DemoClip:
    """One written clip: where it is and its class."""

    path: Path
    label: str


def moving_shape_frames(
    label: str,
    *,
    num_frames: int = 16,
    size: int = 64,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """RGB frames (size, size, 3) of one shape moving in the direction ``label`` names.

    A bright square (1/6 to 1/4 of the side, colour 128-255 per channel) on a
    dark background (0-59) crosses the frame: it travels at least three quarters
    of the free room (frame side minus square side) between the first and the
    last frame, in a straight line at constant speed; its size,
    colours, start, travel and offset across the motion are drawn from ``rng``.
    Pass ``rng`` to draw from a shared generator, or ``seed`` for one clip.
    """
    if label not in DEMO_DIRECTIONS:
        raise ValueError(f"label ({label!r}) must be one of {', '.join(DEMO_CLASSES)}")
    if num_frames < 2:
        raise ValueError(f"num_frames ({num_frames}) must be >= 2: motion needs two frames")
    if size < 24:
        raise ValueError(f"size ({size}) must be >= 24 pixels")
    rng = rng if rng is not None else np.random.default_rng(seed)
    dx, dy = DEMO_DIRECTIONS[label]
    side = int(rng.integers(size // 6, size // 4 + 1))
    room = size - side
    travel = int(rng.integers(3 * room // 4, room + 1))
    start = int(rng.integers(0, room - travel + 1))
    across = int(rng.integers(0, room + 1))
    colour = rng.integers(128, 256, size=3).astype(np.uint8)
    background = np.empty((size, size, 3), dtype=np.uint8)
    background[:] = rng.integers(0, 60, size=3).astype(np.uint8)
    frames = []
    for k in range(num_frames):
        along = start + travel * k / (num_frames - 1)
        if dx + dy < 0:  # left / up: run the same path from the far side
            along = room - along
        x, y = (along, across) if dx else (across, along)
        x, y = int(round(x)), int(round(y))
        frame = background.copy()
        frame[y : y + side, x : x + side] = colour
        frames.append(frame)
    return frames


def write_demo_clips(
    output_dir: str | Path,
    *,
    clips_per_class: int = 150,
    num_frames: int = 16,
    size: int = 64,
    fps: float = 8.0,
    seed: int = 0,
    classes: tuple[str, ...] = DEMO_CLASSES,
) -> list[DemoClip]:
    """Write ``clips_per_class`` H.264 clips per class under ``output_dir/<class>/``.

    Clip ``i`` of class ``c`` is ``output_dir/c/<c with _>_<i:04d>.mp4``; files that
    already exist are kept (a rerun with the same arguments writes nothing new).
    """
    from kinetics_prep.synthetic import write_clip

    if clips_per_class < 1:
        raise ValueError(f"clips_per_class ({clips_per_class}) must be >= 1")
    unknown = [c for c in classes if c not in DEMO_DIRECTIONS]
    if unknown:
        raise ValueError(f"classes {unknown} unknown: choose from {', '.join(DEMO_CLASSES)}")
    output_dir = Path(output_dir)
    clips: list[DemoClip] = []
    for class_index, label in enumerate(classes):
        folder = output_dir / label
        stem = label.replace(" ", "_")
        for i in range(clips_per_class):
            path = folder / f"{stem}_{i:04d}.mp4"
            clips.append(DemoClip(path=path, label=label))
            if path.is_file() and path.stat().st_size > 0:
                continue
            rng = np.random.default_rng([seed, class_index, i])
            frames = moving_shape_frames(label, num_frames=num_frames, size=size, rng=rng)
            tmp = path.with_name(f".{path.stem}.tmp.mp4")
            write_clip(tmp, frames, fps=fps, crf=12)
            tmp.replace(path)
    logger.info("%d demo clips under %s", len(clips), output_dir)
    return clips
