"""The demo's moving-shape clips: class = direction, reversed clip = the opposite class."""

from __future__ import annotations

import numpy as np
import pytest

from kinetics_prep.demo_clips import (
    DEMO_CLASSES,
    REVERSED_CLASS,
    moving_shape_frames,
    write_demo_clips,
)


def _centroid(frame: np.ndarray) -> tuple[float, float]:
    """(x, y) centre of the bright shape (brighter than any background)."""
    gray = frame.astype(float).mean(axis=2)
    ys, xs = np.nonzero(gray > 120)
    return float(xs.mean()), float(ys.mean())


@pytest.mark.parametrize(
    ("label", "axis", "sign"),
    [("moving left", 0, -1), ("moving right", 0, 1), ("moving up", 1, -1), ("moving down", 1, 1)],
)
def test_shape_moves_in_the_named_direction(label, axis, sign):
    for seed in range(20):
        frames = moving_shape_frames(label, num_frames=16, size=64, seed=seed)
        first, last = _centroid(frames[0]), _centroid(frames[-1])
        assert sign * (last[axis] - first[axis]) >= 64 / 3 - 1  # travels a third of the frame
        assert abs(last[1 - axis] - first[1 - axis]) < 1e-6  # and only along its axis
        steps = [_centroid(f)[axis] for f in frames]
        assert all(sign * (b - a) >= 0 for a, b in zip(steps, steps[1:], strict=False))  # monotone


def test_reversed_clip_looks_like_the_reversed_class():
    """A clip played backwards moves the way REVERSED_CLASS names (the demo's control)."""
    for label in DEMO_CLASSES:
        frames = moving_shape_frames(label, seed=3)[::-1]
        opposite = REVERSED_CLASS[label]
        axis = 0 if opposite in ("moving left", "moving right") else 1
        sign = 1 if opposite in ("moving right", "moving down") else -1
        assert sign * (_centroid(frames[-1])[axis] - _centroid(frames[0])[axis]) > 0
    assert {REVERSED_CLASS[REVERSED_CLASS[c]] for c in DEMO_CLASSES} == set(DEMO_CLASSES)


def test_same_seed_same_frames_and_bad_arguments():
    a = moving_shape_frames("moving up", seed=7)
    b = moving_shape_frames("moving up", seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="must be one of"):
        moving_shape_frames("moving sideways")
    with pytest.raises(ValueError, match="num_frames"):
        moving_shape_frames("moving up", num_frames=1)


def test_write_demo_clips_one_folder_per_class_decodable(tmp_path):
    import av

    clips = write_demo_clips(tmp_path, clips_per_class=2, num_frames=12, size=32)
    assert len(clips) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DEMO_CLASSES)
    for clip in clips:
        assert clip.path.parent.name == clip.label
        with av.open(str(clip.path)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(decoded) == 12 and decoded[0].shape == (32, 32, 3)
    # The encoded clip still moves the right way.
    right = next(c for c in clips if c.label == "moving right")
    with av.open(str(right.path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert _centroid(decoded[-1])[0] > _centroid(decoded[0])[0] + 5
    # A rerun keeps the files (same bytes, nothing rewritten).
    before = {c.path: c.path.stat().st_mtime_ns for c in clips}
    write_demo_clips(tmp_path, clips_per_class=2, num_frames=12, size=32)
    assert {c.path: c.path.stat().st_mtime_ns for c in clips} == before
