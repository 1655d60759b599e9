"""Synthetic clips whose class can only be read from frame order (the CPU demo).

A blue-white shape moves in a straight line across a background whose red
grows to the right and green downwards (a scene lit unevenly). The class is
the direction: ``moving left``, ``moving right``, ``moving up`` or ``moving
down``. Each clip played backwards is a clip of another class (left <-> right,
up <-> down), so a model that ignores frame order cannot beat 50%, and the same
held-out clips with their frames reversed should be almost always wrong::

    >>> frames = moving_shape_frames("moving right", num_frames=16, size=64, seed=3)
    >>> len(frames), frames[0].shape
    (16, (64, 64, 3))

Clips are written one folder per class (``OUT/moving left/moving_left_0000.mp4``),
the Kinetics layout ``kprep extract`` takes labels from. Start point, travel
and the position across the motion are drawn per clip from a seeded generator,
so the same seed writes the same clips.
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

    The shape (a blue-white disc, a fifth of the side across) travels at least
    half of the frame between the first and the last frame, in a straight line
    at constant speed; its start, travel and offset across the motion are drawn
    from ``rng``. Pass ``rng`` to draw from a shared generator, or ``seed`` for one clip.
    """
    if label not in DEMO_DIRECTIONS:
        raise ValueError(f"label ({label!r}) must be one of {', '.join(DEMO_CLASSES)}")
    if num_frames < 2:
        raise ValueError(f"num_frames ({num_frames}) must be >= 2: motion needs two frames")
    if size < 24:
        raise ValueError(f"size ({size}) must be >= 24 pixels")
    rng = rng if rng is not None else np.random.default_rng(seed)
    dx, dy = DEMO_DIRECTIONS[label]
    side = size // 5
    room = size - side
    travel = int(rng.integers(size // 2, room + 1))
    start = int(rng.integers(0, room - travel + 1))
    across = int(rng.integers(0, room + 1))
    # A blue-white disc over a scene lit unevenly: red grows to the right, green
    # downwards. Covering brighter or darker background changes the frame's mean
    # colour linearly with the disc's position, a cue a tiny random model's
    # features already carry (a linear probe on them reads the direction).
    colour = np.array([80, 80, 230], dtype=np.float32)
    base = np.array([0, 0, 20], dtype=np.float32)
    ramp = np.linspace(0.0, 150.0, size, dtype=np.float32)
    background = np.empty((size, size, 3), dtype=np.float32)
    background[..., 0] = base[0] + ramp[None, :]
    background[..., 1] = base[1] + ramp[:, None]
    background[..., 2] = base[2]
    background = background.clip(0, 255).astype(np.uint8)
    colour = colour.astype(np.uint8)
    ys, xs = np.mgrid[0:side, 0:side]
    centre = (side - 1) / 2
    mask = (ys - centre) ** 2 + (xs - centre) ** 2 <= (side / 2) ** 2
    frames = []
    for k in range(num_frames):
        along = start + travel * k / (num_frames - 1)
        if dx + dy < 0:  # left / up: run the same path from the far side
            along = room - along
        x, y = (along, across) if dx else (across, along)
        x, y = int(round(x)), int(round(y))
        frame = background.copy()
        patch = frame[y : y + side, x : x + side]
        patch[mask] = colour
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
