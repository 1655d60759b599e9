"""Read the sampled frames of one clip, with decord, PyAV or OpenCV behind one interface.

Every backend is a function ``(path, pick, threads) -> DecodedFrames``: it
counts the frames the stream really has, calls ``pick(count)`` (the sampling
maths of :mod:`kinetics_prep.sampling`) for the 0-based indices, and returns
exactly those frames as RGB uint8 arrays with the container's rotation applied.
Frame ``i`` is the ``i``-th frame the decoder outputs (display order), as
decode-all tools count. Where packet pts cannot be trusted (AVI's guessed pts,
MPEG-4 Part 2 packed B-frames, missing or repeated pts; see
:func:`_index_packets`) every backend reads sequentially in output order.
What each backend trusts for the count:

- ``decord``: its frame index, built from the demuxed packets (not the
  header); asking for a frame that does not decode raises, so ``auto`` moves on.
- ``pyav``: demuxes every packet once (milliseconds), picks targets from the
  packet count, then decodes from the keyframe before each target up to it,
  plus the whole last GOP (so a truncated tail is caught), converting only the
  targets, matched by exact pts (never by seeking to a time, wrong on VFR). A decode error
  (truncated or corrupt file) is a ``damaged`` failure; if the codec yields
  fewer frames than packets, the whole stream is decoded, the targets are
  re-picked from the frames that did decode and ``note`` says so.
- ``opencv``: grabs (decodes without converting) every frame; the count is
  what was grabbed. The header count is only a first guess for the targets.

``auto`` tries PyAV, decord, OpenCV in that order and stops at PyAV's
``damaged`` verdict (the others would not notice the damage). PyAV comes first
because it was as fast as decord here and catches damage, while importing
decord2 alone costs ~1 GB RSS per process (docs/performance.md). A fallback result is checked
before it is accepted (right number of frames, one shape, indices in range,
timestamps in order; OpenCV's count must agree with PyAV's packet count),
because some decoders return wrong frames silently on damaged input.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kinetics_prep.errors import KprepError
from kinetics_prep.sampling import SAMPLING_METHODS, sample_indices

log = logging.getLogger(__name__)

DECODERS = ("pyav", "decord", "opencv")  # the order `auto` tries them in
DECODER_CHOICES = ("auto", *DECODERS)


@dataclass(frozen=True)
class DecodedFrames:
    """The sampled frames of one clip and where they came from."""

    frames: list[np.ndarray]  # RGB uint8 (H, W, 3), rotation applied
    indices: list[int]  # 0-based indices of ``frames`` in decoder output (display) order
    timestamps: list[float]  # presentation times of ``frames`` in seconds
    num_frames: int  # frames that decode (what the indices were picked from)
    fps: float
    width: int  # of the frames as returned (after rotation)
    height: int
    decoder: str  # "decord", "pyav" or "opencv"
    note: str | None = None  # why an ok result is unusual, e.g. fewer frames than packets


class DecodeError(KprepError):
    """The clip cannot give the requested frames; ``reason`` is a short category for summaries.

    Extract records it per clip (a failure is data); only a one-clip command
    (``kprep predict``) lets it reach the CLI, as a one-line error.
    """

    def __init__(self, message: str, *, reason: str = "decode_error") -> None:
        super().__init__(message)
        self.reason = reason


Pick = Callable[[int], list[int]]


def _one_line(error: BaseException, limit: int = 200) -> str:
    """Decoder errors can span many lines of C++ log; keep the first meaningful one."""
    text = " ".join(str(error).split())
    if not text:
        text = type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_frames(
    path: str | os.PathLike[str],
    *,
    num_frames: int = 4,
    sampling: str = "center",
    seed: int | None = None,
    decoder: str = "auto",
    threads: int = 0,
) -> DecodedFrames:
    """Decode the ``num_frames`` frames that ``sampling`` picks from the clip at ``path``.

    ``threads`` is the decoder's thread count (0: the library decides); the
    extract workers pass 1 because they already run one process per core.
    Raises :class:`DecodeError` with a one-line message when the clip is unusable.
    """
    if decoder not in DECODER_CHOICES:
        raise ValueError(f"decoder ({decoder!r}) must be one of {', '.join(DECODER_CHOICES)}")
    if sampling not in SAMPLING_METHODS:
        raise ValueError(f"sampling ({sampling!r}) must be one of {', '.join(SAMPLING_METHODS)}")
    if num_frames < 1:
        raise ValueError(f"num_frames ({num_frames}) must be >= 1")
    path = Path(path)
    if not path.is_file():
        raise DecodeError(f"{path}: no such file", reason="missing_file")
    if path.stat().st_size == 0:
        raise DecodeError(f"{path}: file is empty (0 bytes); re-download it", reason="empty_file")

    def pick(count: int) -> list[int]:
        return sample_indices(count, num_frames, method=sampling, seed=seed)

    if decoder != "auto":
        result = _BACKENDS[decoder](str(path), pick, threads)
        _check(result, pick)
        return result

    errors: list[tuple[str, DecodeError]] = []
    for name in DECODERS:
        try:
            result = _BACKENDS[name](str(path), pick, threads)
            _check(result, pick)
            if errors:
                _verify_fallback(str(path), result)
                log.info("%s: %s failed (%s); used %s", path, errors[0][0], errors[0][1], name)
            return result
        except DecodeError as error:
            errors.append((name, error))
            if error.reason == "damaged":
                break  # a verdict on the file, not a decoder limitation: don't look further
    # PyAV's diagnosis is the most specific (it tells "no video stream" from "not a video"),
    # unless it only says "decode_error" and another backend knows better.
    ranked = sorted(errors, key=lambda item: (item[0] != "pyav", item[1].reason == "decode_error"))
    if ranked[0][1].reason == "decode_error":
        ranked.sort(key=lambda item: item[1].reason == "decode_error")
    best = ranked[0][1]
    detail = "; ".join(
        f"{name}: {_one_line(error, 300 if rank == 0 else 120)}"
        for rank, (name, error) in enumerate(ranked)
    )
    raise DecodeError(f"{path.name}: {detail}", reason=best.reason)


def _check(result: DecodedFrames, pick: Pick) -> None:
    """Refuse a result that is not what was asked for (wrong count, shapes, indices)."""
    expected = pick(result.num_frames)
    problems = []
    if result.indices != expected:
        problems.append(f"indices {result.indices} != requested {expected}")
    if len(result.frames) != len(expected) or len(result.timestamps) != len(expected):
        problems.append(f"{len(result.frames)} frames for {len(expected)} requested")
    shapes = {frame.shape for frame in result.frames}
    if len(shapes) > 1 or any(f.dtype != np.uint8 or f.ndim != 3 for f in result.frames):
        problems.append(f"inconsistent frames {sorted(shapes)}")
    if any(b < a - 1e-6 for a, b in zip(result.timestamps, result.timestamps[1:], strict=False)):
        problems.append(f"timestamps out of order {result.timestamps}")
    if problems:
        raise DecodeError(f"{result.decoder} returned a wrong result: {'; '.join(problems)}")


def _verify_fallback(path: str, result: DecodedFrames) -> None:
    """OpenCV can return wrong frames silently; accept it only if PyAV's demux agrees."""
    if result.decoder != "opencv":
        return  # PyAV matches frames by exact pts; decord was exact in every test.
    packets = _count_packets(path)
    if packets is None or result.num_frames > packets:
        raise DecodeError(
            f"opencv decoded {result.num_frames} frames but the container has "
            f"{packets if packets is not None else 'no readable'} video packets; "
            "refusing an unverifiable result",
            reason="unverified",
        )


def _count_packets(path: str) -> int | None:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            return sum(1 for p in container.demux(stream) if p.size)
    except Exception:  # noqa: BLE001 - any failure means "cannot verify"
        return None


def _untrusted_timestamps(path: str) -> tuple[str | None, float]:
    """For decord and OpenCV: why PyAV's demux distrusts the pts (None: trusted), and
    the stream's start time. Demux only (milliseconds); nothing is held."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return None, 0.0
            stream = container.streams.video[0]
            _, untrusted = _index_packets(container, stream, hold=False)
            start = stream.start_time
            tb = float(stream.time_base) if stream.time_base else 0.0
            return (untrusted[1] if untrusted else None), (float(start) * tb if start else 0.0)
    except Exception:  # noqa: BLE001 - the backend's own open reports unreadable files
        return None, 0.0


# --- decord ------------------------------------------------------------------


def _read_decord(path: str, pick: Pick, threads: int) -> DecodedFrames:
    import decord

    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
    except Exception as error:  # noqa: BLE001 - decord raises RuntimeError or DECORDError
        reason = "no_video_stream" if "video stream" in str(error) else "unreadable"
        raise DecodeError(f"decord cannot open it: {_one_line(error)}", reason=reason) from None
    note = None
    try:
        count = len(reader)
        if count < 1:
            raise DecodeError("decord found no frames", reason="no_frames")
        fps = float(reader.get_avg_fps())
        why, start = _untrusted_timestamps(path)
        if why is None:
            indices = pick(count)
            batch = reader.get_batch(indices).asnumpy()
            times = reader.get_frame_timestamp(indices)[:, 0]
        else:
            # decord's index sorts the guessed pts: read in decoder output order instead.
            count, indices, batch = _decord_sequential(reader, pick, count)
            times = [start + i / fps if fps else 0.0 for i in indices]
            note = f"timestamps untrusted ({why}): frames counted in decoder output order"
    except DecodeError:
        raise
    except Exception as error:  # noqa: BLE001
        raise DecodeError(f"decord failed: {_one_line(error)}") from None
    finally:
        del reader
    frames = [np.ascontiguousarray(frame) for frame in batch]
    height, width = frames[0].shape[:2]
    return DecodedFrames(
        frames=frames,
        indices=list(indices),
        timestamps=[round(float(t), 6) for t in times],
        num_frames=count,
        fps=fps,
        width=width,
        height=height,
        decoder="decord",
        note=note,
    )


def _decord_sequential(reader, pick: Pick, guess: int) -> tuple[int, list[int], list[np.ndarray]]:
    """Frame ``i`` = the ``i``-th frame ``reader.next()`` returns; keeps only the targets."""

    def run(targets: set[int], stop: int | None) -> tuple[int, dict[int, np.ndarray]]:
        reader.seek(0)
        taken: dict[int, np.ndarray] = {}
        index = 0
        while stop is None or index <= stop:
            try:
                frame = reader.next()
            except StopIteration:
                break
            if index in targets:
                taken[index] = frame.asnumpy()
            index += 1
        return index, taken

    count, taken = run(set(pick(guess)), None)
    if count < 1:
        raise DecodeError("decord decoded no frames", reason="no_frames")
    indices = pick(count)
    if not set(indices) <= taken.keys():
        _, taken = run(set(indices), max(indices))
    return count, indices, [taken[i] for i in indices]


# --- PyAV --------------------------------------------------------------------


def _rotate(array: np.ndarray, rotation: float) -> np.ndarray:
    """Apply the display-matrix rotation (degrees counter-clockwise) as ffmpeg would."""
    turns = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(array, turns)) if turns else array


_REFORMATTER = None


def _reformatter():
    """One per process: ``frame.to_ndarray(format=...)`` builds a new SwsContext per
    frame (~6 ms at 340x256 here); a kept reformatter reuses it (~0.4 ms)."""
    global _REFORMATTER
    if _REFORMATTER is None:
        from av.video.reformatter import VideoReformatter

        _REFORMATTER = VideoReformatter()
    return _REFORMATTER


# Compressed bytes of packets the fast path may hold in memory; a longer video is
# decoded in one streamed pass instead (frames counted, nothing but targets kept).
PACKET_INDEX_LIMIT_BYTES = 256 * 1024 * 1024

# Containers whose demuxer invents packet pts instead of reading them.
_GUESSED_PTS_FORMATS = ("avi",)
_PACKED_CODECS = ("mpeg4", "msmpeg4v3", "msmpeg4v2", "msmpeg4")  # MPEG-4 Part 2 (Xvid, DivX)


class _Untrusted(Exception):
    """The packet timestamps cannot index frames; decode sequentially instead."""

    def __init__(self, guess: int | None, why: str) -> None:
        super().__init__(why)
        self.guess = guess  # a first guess at the frame count (packets), or None
        self.why = why


def _index_packets(container, stream, *, hold: bool = True) -> tuple[list, tuple[int, str] | None]:
    """Demux every video packet once; say why their pts cannot be trusted, if so.

    Returns the packets (empty when the index is not used) and ``None`` or
    ``(packet count, reason)``. Untrusted: a demuxer that guesses pts (AVI),
    MPEG-4 Part 2 (Xvid/DivX packed B-frames with "not coded" placeholder
    packets), a packet without pts or with a repeated one, or more than
    :data:`PACKET_INDEX_LIMIT_BYTES` of packets (memory bound, not trust).
    """
    names = set((container.format.name or "").split(","))
    why = None
    if names & set(_GUESSED_PTS_FORMATS):
        why = f"the {container.format.name} demuxer guesses packet pts"
    elif stream.codec_context.name in _PACKED_CODECS:
        # Xvid/DivX pack B-frames into the previous packet and add "not coded"
        # placeholders: in MKV/MP4 too, the packet pts then belong to other frames.
        why = f"{stream.codec_context.name} (MPEG-4 Part 2) may pack B-frames"
    packets: list = []
    seen: set[int] = set()
    count = held = 0
    for packet in container.demux(stream):
        if not packet.size:
            continue
        count += 1
        if why is not None:
            continue  # keep counting, hold nothing
        if packet.pts is None:
            why = f"packet {count - 1} has no pts"
        elif packet.pts in seen:
            why = f"pts {packet.pts} repeats"
        elif hold and held + packet.size > PACKET_INDEX_LIMIT_BYTES:
            why = f"over {PACKET_INDEX_LIMIT_BYTES} bytes of packets (long video)"
        else:
            seen.add(packet.pts)
            if hold:
                held += packet.size
                packets.append(packet)
            continue
        packets, seen = [], set()
    return packets, (None if why is None else (count, why))


def _open_video(path: str, threads: int):
    """PyAV's container of ``path`` and its first video stream, decoding on ``threads``.

    One-line :class:`DecodeError` when it cannot be opened or has no video
    stream (the container is closed then); otherwise the caller closes it.
    """
    import av

    try:
        container = av.open(path)
    except Exception as error:  # noqa: BLE001 - InvalidDataError, FileNotFoundError, ...
        raise DecodeError(f"pyav cannot open it: {_one_line(error)}", reason="unreadable") from None
    try:
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no"
            raise DecodeError(f"no video stream ({kinds} streams only)", reason="no_video_stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        if threads == 1:
            context.thread_count = 1
        else:
            context.thread_type = "AUTO"
            context.thread_count = threads
    except BaseException:
        container.close()
        raise
    return container, stream


def _read_pyav_sequential(
    path: str, pick: Pick, threads: int, *, guess: int | None, why: str
) -> DecodedFrames:
    """Frame ``i`` is the ``i``-th frame the decoder outputs (as decode-all tools count).

    One streamed pass counts the frames and converts the targets picked from
    ``guess``; a second pass (stopping at the last target) runs only when the
    real count picks other frames. Memory holds the targets and two ints per
    frame. Timestamps are the frames' own pts when those increase in output
    order, else ``start + i / fps`` (guessed pts: the container is constant-rate).
    """

    def run(targets: set[int], stop: int | None):
        taken: dict[int, np.ndarray] = {}
        pts: list[int | None] = []
        container, stream = _open_video(path, threads)
        try:
            info = (stream.time_base, stream.average_rate, stream.start_time)
            try:
                for frame in container.decode(stream):
                    index = len(pts)
                    pts.append(frame.pts)
                    if index in targets:
                        rgb = _reformatter().reformat(frame, format="rgb24").to_ndarray()
                        taken[index] = _rotate(rgb, frame.rotation)
                    if stop is not None and index >= stop:
                        break
            except Exception as error:  # noqa: BLE001 - InvalidDataError on damaged data
                raise DecodeError(
                    f"decoding failed after {len(pts)} frames: {_one_line(error)}"
                    " (truncated or corrupt file; re-download it)",
                    reason="damaged",
                ) from None
        finally:
            container.close()
        return pts, taken, info

    pts, taken, (time_base, rate, start) = run(set(pick(guess)) if guess else set(), None)
    if not pts:
        raise DecodeError("no frame decodes", reason="no_frames")
    indices = pick(len(pts))
    if not set(indices) <= taken.keys():
        _, taken, _ = run(set(indices), max(indices))
    tb = float(time_base) if time_base else 0.0
    fps = float(rate) if rate else 0.0
    increasing = (
        all(p is not None for p in pts)
        and all(
            b > a  # type: ignore[operator]
            for a, b in zip(pts, pts[1:], strict=False)
        )
    )
    if tb and increasing:
        times = [float(pts[i]) * tb for i in indices]  # type: ignore[operator]
        if not fps and len(pts) > 1:
            fps = (len(pts) - 1) / ((pts[-1] - pts[0]) * tb)  # type: ignore[operator]
    else:
        offset = float(start) * tb if start is not None and tb else 0.0
        times = [offset + i / fps if fps else 0.0 for i in indices]
    frames = [taken[i] for i in indices]
    height, width = frames[0].shape[:2]
    note = f"timestamps untrusted ({why}): frames counted in decoder output order"
    if guess is not None and guess != len(pts):
        note += f"; {guess} packets gave {len(pts)} frames"
    return DecodedFrames(
        frames=frames,
        indices=indices,
        timestamps=[round(t, 6) for t in times],
        num_frames=len(pts),
        fps=fps,
        width=width,
        height=height,
        decoder="pyav",
        note=note,
    )


def _read_pyav(path: str, pick: Pick, threads: int) -> DecodedFrames:
    try:
        return _read_pyav_indexed(path, pick, threads)
    except _Untrusted as untrusted:
        return _read_pyav_sequential(path, pick, threads, guess=untrusted.guess, why=untrusted.why)


def _read_pyav_indexed(path: str, pick: Pick, threads: int) -> DecodedFrames:
    """The fast path: the packet index, used only where the packet pts can be trusted."""
    container, stream = _open_video(path, threads)
    context = stream.codec_context
    try:
        try:
            packets, untrusted = _index_packets(container, stream)
        except Exception as error:  # noqa: BLE001
            raise DecodeError(f"pyav cannot demux it: {_one_line(error)}") from None
        if untrusted is not None:
            raise _Untrusted(*untrusted)
        if not packets:
            raise DecodeError("the video stream has no packets", reason="no_frames")
        # Presentation order = sorted pts; the targets are picked from the packet count.
        order: list[int] = sorted(int(p.pts or 0) for p in packets)  # pts is never None here
        wanted = {order[i] for i in pick(len(order))}
        try:
            decoded_pts, arrays, stopped, expected = _decode_needed_gops(
                context, packets, wanted, skip_nonref=threads == 1
            )
            full = False
            if stopped is None and (
                (expected is not None and len(decoded_pts) != expected)
                or not wanted <= arrays.keys()
            ):
                # Fewer frames than packets, or a target did not come out of its GOP
                # (open GOP?): decode the whole stream and count what comes out.
                context.flush_buffers()
                decoded_pts, arrays, stopped = _decode_pass(context, packets, wanted)
                full = True
        except _Untrusted as late:  # found while decoding: the packet count is the guess
            raise _Untrusted(len(order), late.why) from None
        if stopped is not None:
            raise DecodeError(
                f"decoding failed ({len(order)} packets): {stopped}"
                " (truncated or corrupt file; re-download it)",
                reason="damaged",
            )
        note = None
        if full and len(decoded_pts) != len(order):
            # Count from what decodes: re-pick from the frames the codec produced.
            if not decoded_pts:
                raise DecodeError("no frame decodes", reason="no_frames")
            missing = set(order) - set(decoded_pts)
            if missing and min(missing) > max(decoded_pts):
                # A threaded decoder may swallow the error; a lost tail is still damage.
                raise DecodeError(
                    f"the last {len(missing)} of {len(order)} packets do not decode"
                    " (truncated file; re-download it)",
                    reason="damaged",
                )
            note = f"{len(order)} packets gave {len(decoded_pts)} frames; sampled those"
            order = sorted(decoded_pts)
            wanted = {order[i] for i in pick(len(order))}
            if not wanted <= arrays.keys():
                context.flush_buffers()
                _, arrays, _ = _decode_pass(context, packets, wanted)
        indices = pick(len(order))
        frames = [arrays[order[i]] for i in indices]
        time_base = float(stream.time_base) if stream.time_base else 0.0
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        if not fps and len(order) > 1 and time_base:
            fps = (len(order) - 1) / ((order[-1] - order[0]) * time_base)
    finally:
        container.close()
    height, width = frames[0].shape[:2]
    return DecodedFrames(
        frames=frames,
        indices=indices,
        timestamps=[round(order[i] * time_base, 6) for i in indices],
        num_frames=len(order),
        fps=fps,
        width=width,
        height=height,
        decoder="pyav",
        note=note,
    )


def _decode_needed_gops(
    context, packets: list, wanted: set[int], *, skip_nonref: bool
) -> tuple[list[int], dict[int, np.ndarray], str | None, int | None]:
    """The packet-index method: decode from the keyframe before each target up to it.

    A GOP runs from a keyframe to the packet before the next one (decode order).
    GOPs without a target are skipped; a GOP with targets is decoded until its
    last target comes out. The last GOP is always decoded to the end so that a
    truncated tail is caught. With ``skip_nonref`` (single-threaded decoding
    only) non-reference frames that are not targets are not decoded at all
    before the last target: no other frame depends on them, so the targets are
    unchanged (the barcode tests check it).

    Returns the pts of frames from the last GOP, the converted targets, why
    decoding stopped (or None), and how many frames the last GOP must have
    produced (None when non-reference frames were skipped in it).
    """
    starts = [0] + [i for i, p in enumerate(packets) if p.is_keyframe and i > 0]
    bounds = list(zip(starts, [*starts[1:], len(packets)], strict=True))
    decoded: list[int] = []
    arrays: dict[int, np.ndarray] = {}
    expected: int | None = 0
    for n, (first, last) in enumerate(bounds):
        segment = packets[first:last]
        targets = {p.pts for p in segment} & wanted
        final = n == len(bounds) - 1
        if not targets and not final:
            continue
        skip_until = -1
        if skip_nonref:
            skip_until = max((i for i, p in enumerate(segment) if p.pts in targets), default=-1)
        got, converted, stopped = _decode_pass(
            context, segment, wanted, until=None if final else targets, skip_until=skip_until
        )
        arrays.update(converted)
        if final:
            decoded.extend(got)
            expected = len(segment) if skip_until < 0 else None
        if stopped is not None:
            return decoded, arrays, stopped, expected
        context.flush_buffers()
    return decoded, arrays, None, expected


def _decode_pass(
    context,
    packets: list,
    wanted: set[int],
    until: set[int] | None = None,
    skip_until: int = -1,
) -> tuple[list[int], dict[int, np.ndarray], str | None]:
    """Decode ``packets`` in order, converting only frames whose pts is ``wanted``.

    With ``until``, stop as soon as those pts have come out (no drain). Packets
    up to position ``skip_until`` that are not wanted are fed with
    ``skip_frame=NONREF``. Returns every decoded pts, the converted frames by
    pts, and why decoding stopped early on an error (None otherwise).
    """
    decoded: list[int] = []
    arrays: dict[int, np.ndarray] = {}

    def take(frames) -> None:
        for frame in frames:
            if frame.pts is None or (decoded and frame.pts <= decoded[-1]):
                # The decoder's output order is the display order; pts that do not
                # follow it were guessed (AVI, packed B-frames): they cannot index.
                raise _Untrusted(None, f"decoded frame pts {frame.pts} after {decoded[-1:]}")
            decoded.append(frame.pts)
            if frame.pts in wanted and frame.pts not in arrays:
                rgb = _reformatter().reformat(frame, format="rgb24").to_ndarray()
                arrays[frame.pts] = _rotate(rgb, frame.rotation)

    stopped = None
    skipping = False
    try:
        for position, packet in enumerate(packets):
            skip = position < skip_until and packet.pts not in wanted
            if skip != skipping:
                context.skip_frame = "NONREF" if skip else "DEFAULT"
                skipping = skip
            take(context.decode(packet))
            if until is not None and until <= arrays.keys():
                return decoded, arrays, None
    except _Untrusted:
        raise
    except Exception as error:  # noqa: BLE001 - InvalidDataError on damaged data
        stopped = _one_line(error)
    finally:
        if skipping:
            context.skip_frame = "DEFAULT"
    try:
        take(context.decode(None))  # drain frames still held for reordering
    except _Untrusted:
        raise
    except Exception as error:  # noqa: BLE001
        stopped = stopped or _one_line(error)
    return decoded, arrays, stopped


# --- OpenCV ------------------------------------------------------------------


def _read_opencv(path: str, pick: Pick, threads: int) -> DecodedFrames:
    import cv2

    def grab_pass(targets: set[int]) -> tuple[int, dict[int, tuple[np.ndarray, float]], float]:
        capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
        if not capture.isOpened():
            raise DecodeError(
                "opencv cannot open it (not a video, or no video stream)", reason="unreadable"
            )
        try:
            fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            taken: dict[int, tuple[np.ndarray, float]] = {}
            count = 0
            while capture.grab():  # decode without colour conversion
                if count in targets:
                    ok, bgr = capture.retrieve()
                    if not ok:
                        raise DecodeError(f"opencv grabbed frame {count} but cannot convert it")
                    msec = capture.get(cv2.CAP_PROP_POS_MSEC)
                    taken[count] = (cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), msec / 1000.0)
                count += 1
            return count, taken, fps
        finally:
            capture.release()

    probe = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    guess = max(int(probe.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0) if probe.isOpened() else 0
    probe.release()
    targets = set(pick(guess)) if guess > 0 else set()
    count, taken, fps = grab_pass(targets)
    if count < 1:
        raise DecodeError("opencv decoded no frames", reason="no_frames")
    indices = pick(count)
    note = None
    if count != guess:
        note = f"header says {guess} frames, {count} decode; sampled the {count} that decode"
    if not set(indices) <= taken.keys():
        count_again, taken, fps = grab_pass(set(indices))
        if count_again != count:
            raise DecodeError(f"opencv decoded {count} then {count_again} frames; unstable")
    frames = [taken[i][0] for i in indices]
    times = [taken[i][1] for i in indices]
    why, start = _untrusted_timestamps(path)
    if why is not None:  # OpenCV reads the guessed pts; count in output order instead
        times = [start + i / fps if fps else 0.0 for i in indices]
        note = f"timestamps untrusted ({why}); " + (note or "frames in decoder output order")
    height, width = frames[0].shape[:2]
    return DecodedFrames(
        frames=frames,
        indices=indices,
        timestamps=[round(t, 6) for t in times],
        num_frames=count,
        fps=fps,
        width=width,
        height=height,
        decoder="opencv",
        note=note,
    )


_BACKENDS: dict[str, Callable[[str, Pick, int], DecodedFrames]] = {
    "decord": _read_decord,
    "pyav": _read_pyav,
    "opencv": _read_opencv,
}

__all__ = ["DECODERS", "DECODER_CHOICES", "DecodeError", "DecodedFrames", "read_frames"]
