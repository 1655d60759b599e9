"""Shared fixtures: synthetic clips made in the session, marker policy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip without CUDA, but fail when KPREP_REQUIRE_GPU=1."""
    require = os.environ.get("KPREP_REQUIRE_GPU") == "1"
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda or require:
        return
    skip = pytest.mark.skip(reason="needs CUDA (set KPREP_REQUIRE_GPU=1 to make this a failure)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    """Path of the ffmpeg CLI (installed by .ci/run from Debian)."""
    path = shutil.which("ffmpeg")
    if path is None:
        pytest.fail("ffmpeg CLI not found: install it (apt-get install -y ffmpeg), as .ci/run does")
    return path


@pytest.fixture
def make_counter_clip(tmp_path: Path):
    """Factory: ``make_counter_clip("a.mp4", num_frames=50)`` -> Path of a counter clip."""
    from kinetics_prep.synthetic import write_counter_clip

    def make(name: str = "clip.mp4", **kwargs) -> Path:
        kwargs.setdefault("num_frames", 50)
        kwargs.setdefault("width", 160)
        kwargs.setdefault("height", 120)
        return write_counter_clip(tmp_path / name, **kwargs)

    return make
