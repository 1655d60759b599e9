"""Synthetic video whose every frame says which frame it is.

Tests, benchmarks and the demo make their clips here, in the session, with
PyAV (no ffmpeg CLI, no network). Each frame carries its 0-based index as a
barcode of ``BITS`` black/white blocks across the top band, large enough to
survive H.264/VP9 compression, so a decoded frame can be identified exactly::

    >>> frame = counter_frame(37, width=128, height=96)
    >>> read_counter(frame)
    37
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

BITS = 12  # up to 4096 frames
_BAND = 0.25  # fraction of the height used by the barcode


def counter_frame(index: int, *, width: int, height: int) -> np.ndarray:
    """An RGB uint8 frame (H, W, 3) whose top band encodes ``index`` in binary.

    The rest of the frame is a smooth gradient that shifts with the index, so
    the encoder sees motion like in real video.
    """
    if not 0 <= index < 2**BITS:
        raise ValueError(f"index ({index}) must be in [0, {2**BITS})")
    frame = np.empty((height, width, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    frame[..., 0] = (xs * 255 // max(width - 1, 1) + index * 3) % 256
    frame[..., 1] = (ys * 255 // max(height - 1, 1)) % 256
    frame[..., 2] = (index * 7) % 256
    band = max(int(height * _BAND), 8)
    block = width // BITS
    for bit in range(BITS):
        on = (index >> (BITS - 1 - bit)) & 1
        frame[:band, bit * block : (bit + 1) * block] = 255 if on else 0
    return frame


def read_counter(frame: np.ndarray) -> int:
    """Decode the index drawn by :func:`counter_frame` from an RGB frame of any size."""
    height, width = frame.shape[:2]
    band = max(int(height * _BAND), 8)
    block = width / BITS
    gray = frame[: int(band * 0.8), :, :3].mean(axis=2)
    value = 0
    for bit in range(BITS):
        lo = int(bit * block + block * 0.25)
        hi = max(int((bit + 1) * block - block * 0.25), lo + 1)
        value = (value << 1) | int(gray[:, lo:hi].mean() > 127)
    return value


def write_clip(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float = 25.0,
    codec: str = "libx264",
    gop: int | None = None,
    crf: int = 18,
) -> Path:
    """Encode RGB frames to ``path`` with PyAV (container from the suffix)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iterator = iter(frames)
    first = next(iterator)
    height, width = first.shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream: Any = container.add_stream(codec, rate=rate)  # a VideoStream for this codec
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        options: dict[str, str] = {}
        if codec in ("libx264", "libx265"):
            options = {"crf": str(crf), "preset": "veryfast"}
        elif codec == "libvpx-vp9":
            options = {"crf": str(crf + 12), "b": "0", "deadline": "realtime", "cpu-used": "8"}
        if gop is not None:
            stream.gop_size = gop
        stream.options = options

        def encode(array: np.ndarray) -> None:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)

        encode(first)
        for array in iterator:
            encode(array)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_counter_clip(
    path: str | Path,
    *,
    num_frames: int = 250,
    width: int = 340,
    height: int = 256,
    fps: float = 25.0,
    codec: str = "libx264",
    gop: int | None = None,
) -> Path:
    """A clip of ``num_frames`` counter frames (Kinetics-like default: 340x256, 10 s)."""
    if num_frames < 1:
        raise ValueError(f"num_frames ({num_frames}) must be >= 1")
    frames = (counter_frame(i, width=width, height=height) for i in range(num_frames))
    return write_clip(path, frames, fps=fps, codec=codec, gop=gop)
