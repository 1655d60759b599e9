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
