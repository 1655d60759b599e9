"""Table tests for the pure sampling maths (kinetics_prep.sampling)."""

from __future__ import annotations

import pytest

from kinetics_prep.sampling import has_repeats, sample_indices


@pytest.mark.parametrize(
    ("num_frames", "num_samples", "method", "expected"),
    [
        # center: floor((i + 0.5) * N / K)
        (250, 4, "center", [31, 93, 156, 218]),
        (300, 4, "center", [37, 112, 187, 262]),
        (8, 4, "center", [1, 3, 5, 7]),
        (4, 4, "center", [0, 1, 2, 3]),
        (1, 1, "center", [0]),
        (10, 1, "center", [5]),
        (119, 4, "center", [14, 44, 74, 104]),
        # short clips repeat frames
        (3, 4, "center", [0, 1, 1, 2]),
        (2, 4, "center", [0, 0, 1, 1]),
        (1, 4, "center", [0, 0, 0, 0]),
        # linspace: 0 .. N-1 inclusive, truncated (np.linspace(..).astype(int))
        (250, 4, "linspace", [0, 83, 166, 249]),
        (10, 4, "linspace", [0, 3, 6, 9]),
        (5, 5, "linspace", [0, 1, 2, 3, 4]),
        (2, 4, "linspace", [0, 0, 0, 1]),
        (1, 4, "linspace", [0, 0, 0, 0]),
        (100, 1, "linspace", [0]),
    ],
)
def test_sample_indices_table(num_frames, num_samples, method, expected):
    assert sample_indices(num_frames, num_samples, method=method) == expected


@pytest.mark.parametrize("num_frames", [1, 2, 3, 7, 50, 250, 301])
@pytest.mark.parametrize("num_samples", [1, 4, 8])
def test_random_takes_one_seeded_pick_per_segment(num_frames, num_samples):
    first = sample_indices(num_frames, num_samples, method="random", seed=7)
    again = sample_indices(num_frames, num_samples, method="random", seed=7)
    assert first == again
    assert len(first) == num_samples
    for i, index in enumerate(first):
        start, stop = i * num_frames // num_samples, (i + 1) * num_frames // num_samples
        if stop > start:
            assert start <= index < stop
        else:  # empty segment of a short clip: its start, a repeat
            assert index == min(start, num_frames - 1)
    assert first == sorted(first)


def test_random_seeds_differ():
    draws = {tuple(sample_indices(250, 4, method="random", seed=s)) for s in range(20)}
    assert len(draws) > 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 0, "num_samples": 4}, "num_frames (0) must be an int >= 1"),
        ({"num_frames": 10, "num_samples": 0}, "num_samples (0) must be an int >= 1"),
        ({"num_frames": 10, "num_samples": 4, "method": "middle"}, "method ('middle')"),
        ({"num_frames": 2.5, "num_samples": 4}, "num_frames (2.5)"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sample_indices(**kwargs)


@pytest.mark.parametrize(
    ("indices", "expected"), [([0, 1, 2, 3], False), ([0, 0, 1, 1], True), ([5], False)]
)
def test_has_repeats(indices, expected):
    assert has_repeats(indices) is expected


@pytest.mark.parametrize(
    ("num_frames", "num_samples", "expected"),
    [
        # interior: ceil((i + 1) * N / (K + 1)), the first frame at/after (i+1)/(K+1) of the clip
        (250, 4, [50, 100, 150, 200]),  # 10 s at 25 fps: 2, 4, 6, 8 s exactly
        (300, 4, [60, 120, 180, 240]),
        (137, 4, [28, 55, 83, 110]),  # 27.4, 54.8, 82.2, 109.6 round up
        (97, 4, [20, 39, 59, 78]),
        (10, 1, [5]),
        (9, 2, [3, 6]),
        (5, 4, [1, 2, 3, 4]),  # never frame 0
        (4, 4, [1, 2, 3, 3]),  # ceil(16/5) = 4 is past the end: the last frame
        (2, 4, [1, 1, 1, 1]),
        (1, 4, [0, 0, 0, 0]),
    ],
)
def test_interior_table(num_frames, num_samples, expected):
    got = sample_indices(num_frames, num_samples, method="interior")
    assert got == expected
    assert got == sorted(got) and all(0 <= i < num_frames for i in got)


@pytest.mark.parametrize("num_frames", [5, 137, 250, 301, 1000])
def test_interior_is_first_frame_at_or_after_the_time(num_frames):
    """Frame j shows at j/fps: the pick is the smallest j with j/fps >= (i+1)/(K+1) * N/fps."""
    fps = 30
    for i, index in enumerate(sample_indices(num_frames, 4, method="interior")):
        t = (i + 1) / 5 * num_frames / fps
        assert index / fps >= t - 1e-9
        assert index == 0 or (index - 1) / fps < t - 1e-9 or index == num_frames - 1
