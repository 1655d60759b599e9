"""RequestPacer: the token-bucket maths, on a clock the test drives."""

from __future__ import annotations

import doctest

import pytest

import kinetics_prep.rate_limit
from kinetics_prep.rate_limit import RequestPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_slots_are_spaced_by_the_rate_after_the_burst():
    clock = Clock()
    pacer = RequestPacer(rate=4.0, burst=2, clock=clock)
    assert [pacer.reserve() for _ in range(5)] == [0.0, 0.0, 0.25, 0.5, 0.75]
    clock.now += 10.0  # idle: the bucket refills, but never beyond the burst
    assert [pacer.reserve() for _ in range(3)] == [0.0, 0.0, 0.25]


def test_a_429_holds_everyone():
    clock = Clock()
    pacer = RequestPacer(rate=100.0, clock=clock)
    assert pacer.reserve() == 0.0
    pacer.hold(5.0)
    clock.now += 1.0
    assert pacer.reserve() == pytest.approx(4.0)


def test_rate_must_be_positive_and_the_docstring_example_holds():
    with pytest.raises(ValueError, match=r"rate \(0\) must be > 0"):
        RequestPacer(rate=0)
    assert doctest.testmod(kinetics_prep.rate_limit).failed == 0
