"""Synthetic clips whose class can only be read from frame order (the CPU demo).

A bright square moves in a straight line across a dark background. The class is
the direction: ``moving left``, ``moving right``, ``moving up`` or ``moving
down``. Each clip played backwards is a clip of another class (left <-> right,
up <-> down) drawn with the same probability, and 4 centre-sampled frames of a
17-frame clip are the same set as those of its reversed twin, so a model that
ignores frame order cannot beat 50%: :func:`order_blind_ceiling` computes that
bound exactly from the generator's distribution (0.50; a test asserts it).
The same held-out clips with their frames reversed should be almost always
wrong::

    >>> frames = moving_shape_frames("moving right", num_frames=17, size=64, seed=3)
    >>> len(frames), frames[0].shape
    (17, (64, 64, 3))

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


@dataclass(frozen=True)
class ClipGeometry:
    """Where the square is: its side, and its path along and across the motion axis.

    The square's leading corner runs from ``start`` to ``start + travel`` along the
    axis (forward classes ``moving right`` / ``moving down``) or back from
    ``start + travel`` to ``start`` (``moving left`` / ``moving up``); ``across`` is
    its fixed offset on the other axis. All in pixels of a ``size`` x ``size`` frame.
    """

    side: int
    travel: int
    start: int
    across: int


def geometry_space(size: int) -> list[tuple[ClipGeometry, float]]:
    """Every geometry the generator can draw for ``size`` with its probability.

    The same draws as :func:`draw_geometry` (side, travel, start, across, each
    uniform over its integer range given the earlier ones). The geometry does
    not depend on the class, and colours are drawn independently of both, so
    this table plus :func:`square_positions` is the generator's whole
    class-relevant distribution (used by :func:`order_blind_ceiling`).
    """
    table = []
    sides = range(size // 6, size // 4 + 1)
    for side in sides:
        room = size - side
        travels = range(3 * room // 4, room + 1)
        for travel in travels:
            starts = range(0, room - travel + 1)
            acrosses = range(0, room + 1)
            p = 1.0 / (len(sides) * len(travels) * len(starts) * len(acrosses))
            for start in starts:
                for across in acrosses:
                    table.append((ClipGeometry(side, travel, start, across), p))
    return table


def draw_geometry(rng: np.random.Generator, size: int) -> ClipGeometry:
    """One draw from :func:`geometry_space`'s distribution."""
    side = int(rng.integers(size // 6, size // 4 + 1))
    room = size - side
    travel = int(rng.integers(3 * room // 4, room + 1))
    start = int(rng.integers(0, room - travel + 1))
    across = int(rng.integers(0, room + 1))
    return ClipGeometry(side, travel, start, across)


def square_positions(label: str, geometry: ClipGeometry, num_frames: int) -> list[tuple[int, int]]:
    """Top-left (x, y) of the square in each of ``num_frames`` frames.

    Forward classes step ``start + travel * k / (N - 1)`` rounded half up; the
    backward class of the same geometry is exactly that clip played backwards,
    so the generator's distribution is symmetric under time reversal (a
    reversed ``moving right`` clip is a ``moving left`` clip with the same
    probability)::

        >>> g = ClipGeometry(side=12, travel=40, start=3, across=7)
        >>> square_positions("moving right", g, 5)
        [(3, 7), (13, 7), (23, 7), (33, 7), (43, 7)]
        >>> square_positions("moving left", g, 5)
        [(43, 7), (33, 7), (23, 7), (13, 7), (3, 7)]
    """
    dx, dy = DEMO_DIRECTIONS[label]
    along = [
        geometry.start + (2 * geometry.travel * k + (num_frames - 1)) // (2 * (num_frames - 1))
        for k in range(num_frames)
    ]  # floor(start + travel * k / (N - 1) + 0.5), in integers
    if dx + dy < 0:  # left / up: the forward path, played backwards
        along = along[::-1]
    return [(a, geometry.across) if dx else (geometry.across, a) for a in along]


def moving_shape_frames(
    label: str,
    *,
    num_frames: int = 17,
    size: int = 64,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """RGB frames (size, size, 3) of one shape moving in the direction ``label`` names.

    A bright square (1/6 to 1/4 of the side, colour 128-255 per channel) on a
    dark background (0-59) crosses the frame: it travels at least three quarters
    of the free room (frame side minus square side) between the first and the
    last frame, in a straight line at constant speed (:func:`square_positions`);
    its geometry (:func:`draw_geometry`) and colours are drawn from ``rng``.
    Pass ``rng`` to draw from a shared generator, or ``seed`` for one clip.
    """
    if label not in DEMO_DIRECTIONS:
        raise ValueError(f"label ({label!r}) must be one of {', '.join(DEMO_CLASSES)}")
    if num_frames < 2:
        raise ValueError(f"num_frames ({num_frames}) must be >= 2: motion needs two frames")
    if size < 24:
        raise ValueError(f"size ({size}) must be >= 24 pixels")
    rng = rng if rng is not None else np.random.default_rng(seed)
    geometry = draw_geometry(rng, size)
    colour = rng.integers(128, 256, size=3).astype(np.uint8)
    background = np.empty((size, size, 3), dtype=np.uint8)
    background[:] = rng.integers(0, 60, size=3).astype(np.uint8)
    side = geometry.side
    frames = []
    for x, y in square_positions(label, geometry, num_frames):
        frame = background.copy()
        frame[y : y + side, x : x + side] = colour
        frames.append(frame)
    return frames


def symmetric_under_reversal(indices: list[int], num_frames: int) -> bool:
    """True when the sampled frames of a clip are those of its reversed twin.

    ``idx(i) + idx(K-1-i) == N-1`` for every i: e.g. centre sampling of K=4
    out of N=17 gives [2, 6, 10, 14] (2 + 14 = 6 + 10 = 16), but out of N=16
    it gives [2, 6, 10, 14], whose mirror is [1, 5, 9, 13].
    """
    k = len(indices)
    return all(indices[i] + indices[k - 1 - i] == num_frames - 1 for i in range(k))


def order_blind_ceiling(
    *,
    num_frames: int = 17,
    size: int = 64,
    indices: list[int] | None = None,
    classes: tuple[str, ...] = DEMO_CLASSES,
) -> float:
    """The exact Bayes accuracy of a classifier that sees the sampled frames as a set.

    Enumerates :func:`geometry_space` for every class (equal priors) and keys
    each clip by what an order-blind model can see: the square's side and the
    *unordered* multiset of its positions in the sampled frames (``indices``,
    default: centre sampling of 4, :func:`kinetics_prep.sampling.sample_indices`).
    The ceiling is ``sum over keys of max over classes P(class, key)``. Colours
    are drawn independently of class and geometry, so they cannot add to it.
    With symmetric indices and the time-symmetric generator every key is
    equally likely under a class and its reversed class: the ceiling is 0.50.
    """
    from collections import defaultdict

    from kinetics_prep.sampling import sample_indices

    if indices is None:
        indices = sample_indices(num_frames, 4, method="center")
    joint: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    prior = 1.0 / len(classes)
    space = geometry_space(size)
    for label in classes:
        for geometry, p in space:
            path = square_positions(label, geometry, num_frames)
            key = (geometry.side, tuple(sorted(path[i] for i in indices)))
            joint[key][label] += prior * p
    return float(sum(max(by_class.values()) for by_class in joint.values()))


def write_demo_clips(
    output_dir: str | Path,
    *,
    clips_per_class: int = 150,
    num_frames: int = 17,
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
