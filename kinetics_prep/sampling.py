"""Which frames to take from a clip: pure index maths, no I/O.

All methods work on ``num_frames`` = N frames that actually decode, counted in
presentation order (never the container header, which lies on truncated
files), and return ``num_samples`` = K 0-based indices in ascending order.

``center`` (default; TSN / mmaction2 test mode) cuts the clip into K equal
segments and takes the middle frame of each::

    index_i = floor((i + 0.5) * N / K)         i = 0 .. K-1

    >>> sample_indices(250, 4)            # a 10-s, 25-fps Kinetics clip
    [31, 93, 156, 218]

``linspace`` spreads K indices over 0 .. N-1 inclusive, truncated to int (as
pytorchvideo and LLaVA-NeXT do), so the first and last frames are included::

    >>> sample_indices(250, 4, method="linspace")
    [0, 83, 166, 249]

``random`` (training-time jitter) takes one seeded uniform pick inside each of
the K segments ``[floor(i*N/K), floor((i+1)*N/K))``; the same seed gives the
same indices on every machine (``random.Random``, not the global state).

Short clips (N < K) repeat frames rather than fail: every method still returns
K indices, so each sample has the same number of images. ``center`` repeats
naturally (``sample_indices(2, 4) == [0, 0, 1, 1]``); ``linspace`` and
``random`` do too. :func:`has_repeats` tells the caller, which records it.
"""

from __future__ import annotations

import random as _random

SAMPLING_METHODS = ("center", "linspace", "random")


def sample_indices(
    num_frames: int,
    num_samples: int,
    *,
    method: str = "center",
    seed: int | None = None,
) -> list[int]:
    """K frame indices out of N decoded frames (see the module docstring for the maths)."""
    problems = []
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        problems.append(f"num_frames ({num_frames!r}) must be an int >= 1 (frames that decoded)")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        problems.append(f"num_samples ({num_samples!r}) must be an int >= 1")
    if method not in SAMPLING_METHODS:
        problems.append(f"method ({method!r}) must be one of {', '.join(SAMPLING_METHODS)}")
    if problems:
        raise ValueError("; ".join(problems))

    n, k = num_frames, num_samples
    if method == "center":
        # Integer form of floor((i + 0.5) * n / k): exact, no float rounding.
        return [((2 * i + 1) * n) // (2 * k) for i in range(k)]
    if method == "linspace":
        if k == 1:
            return [0]
        return [(i * (n - 1)) // (k - 1) for i in range(k)]
    rng = _random.Random(seed)
    picks = []
    for i in range(k):
        start = (i * n) // k
        stop = ((i + 1) * n) // k
        picks.append(rng.randrange(start, stop) if stop > start else min(start, n - 1))
    return picks


def has_repeats(indices: list[int]) -> bool:
    """True when some frame is used twice (a clip shorter than the sample count)."""
    return len(set(indices)) < len(indices)
