"""read_frames on synthetic counter clips made in this session: every returned
frame is identified by its barcode, across all three decoders and `auto`.

Recipes: counter clips via kinetics_prep.synthetic (PyAV, H.264 / VP9), a
rotated clip by stream-copying with ffmpeg's `rotate` tag, a VFR clip written
with explicit pts, and broken files made by cutting or overwriting bytes.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from kinetics_prep import decode
from kinetics_prep.decode import DecodedFrames, DecodeError, read_frames
from kinetics_prep.sampling import sample_indices
from kinetics_prep.synthetic import counter_frame, read_counter, write_counter_clip

DECODERS = ["decord", "pyav", "opencv", "auto"]
VFR_PTS_MS = [i * 20 if i < 30 else 600 + (i - 30) * 100 for i in range(60)]


def write_vfr_clip(path: Path) -> Path:
    """60 frames: 30 at 50 fps, then 30 at 10 fps (pts in ms)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=50)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.options = {"crf": "18", "preset": "veryfast"}
        for index, pts in enumerate(VFR_PTS_MS):
            frame = av.VideoFrame.from_ndarray(
                counter_frame(index, width=160, height=120), format="rgb24"
            )
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def clips(tmp_path_factory, ffmpeg) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decode_clips")
    made = {
        "h264": write_counter_clip(root / "h264.mp4", num_frames=100, width=160, height=120),
        "h264_gop": write_counter_clip(
            root / "gop.mp4", num_frames=100, width=160, height=120, gop=12
        ),
        "vp9": write_counter_clip(
            root / "vp9.webm", num_frames=60, width=160, height=120, codec="libvpx-vp9"
        ),
        "short": write_counter_clip(root / "short.mp4", num_frames=3, width=160, height=120),
        "vfr": write_vfr_clip(root / "vfr.mp4"),
    }
    made["rotated"] = root / "rotated.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-i", made["h264"], "-c", "copy",
         "-metadata:s:v:0", "rotate=90", made["rotated"]],
        check=True,
    )  # fmt: skip
    # Broken inputs.
    made["zero"] = root / "zero.mp4"
    made["zero"].write_bytes(b"")
    made["text"] = root / "notes.mp4"
    made["text"].write_text("not a video\n")
    made["audio"] = root / "audio.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", made["audio"]], check=True
    )
    data = made["h264"].read_bytes()
    made["truncated"] = root / "truncated.mp4"  # moov at the end: cut off
    made["truncated"].write_bytes(data[: len(data) // 2])
    damaged = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 2000):
        damaged[i] = (damaged[i] * 7 + 13) % 256
    made["corrupt"] = root / "corrupt.mp4"
    made["corrupt"].write_bytes(bytes(damaged))
    faststart = root / "faststart.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-i", made["h264"], "-c", "copy", "-movflags", "+faststart",
         faststart],
        check=True,
    )  # fmt: skip
    data = faststart.read_bytes()
    made["truncated_faststart"] = root / "truncated_faststart.mp4"  # header says 100 frames
    made["truncated_faststart"].write_bytes(data[: len(data) * 6 // 10])
    made["one"] = write_counter_clip(root / "one.mp4", num_frames=1, width=160, height=120)
    # Timestamps that lie: Xvid with B-frames (packed, "not coded" placeholder packets)
    # in AVI (the demuxer guesses pts) and in MKV (real pts, but of other frames);
    # H.264 in AVI (guessed pts, no packing). Debian's ffmpeg has libxvid.
    for name, codec, suffix in [
        ("xvid_avi", ["-c:v", "libxvid", "-bf", "2", "-q:v", "3"], "avi"),
        ("xvid_mkv", ["-c:v", "libxvid", "-bf", "2", "-q:v", "3"], "mkv"),
        ("h264_avi", ["-c", "copy"], "avi"),
    ]:
        made[name] = root / f"{name}.{suffix}"
        subprocess.run(
            [ffmpeg, "-v", "error", "-y", "-i", made["h264"], *codec, made[name]], check=True
        )
    return made


def decoder_output(path: Path) -> list[int]:
    """The barcode of every frame the decoder outputs, in output order (decode-all)."""
    import av

    codes: list[int] = []
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(video=0):
                codes.append(read_counter(frame.to_ndarray(format="rgb24")))
        except av.error.InvalidDataError:
            pass  # a truncated file: decode-all stops where the data does
    return codes


def barcodes(result: DecodedFrames) -> list[int]:
    return [read_counter(frame) for frame in result.frames]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    ("clip", "num_frames", "fps"),
    [("h264", 100, 25.0), ("h264_gop", 100, 25.0), ("vp9", 60, 25.0)],
)
@pytest.mark.parametrize("threads", [0, 1])
def test_exact_frames_on_every_decoder(clips, decoder, clip, num_frames, fps, threads):
    result = read_frames(clips[clip], decoder=decoder, threads=threads)
    expected = sample_indices(num_frames, 4)
    assert result.indices == expected
    assert barcodes(result) == expected
    assert result.num_frames == num_frames
    assert result.timestamps == pytest.approx([i / fps for i in expected], abs=1e-3)
    assert result.fps == pytest.approx(fps)
    assert (result.width, result.height) == (160, 120)
    assert all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for f in result.frames)
    assert result.decoder == (decoder if decoder != "auto" else "pyav")


@pytest.mark.parametrize("clip", ["h264", "h264_gop", "vp9", "vfr", "rotated"])
def test_all_decoders_return_bit_identical_pixels(clips, clip):
    """Same frame requested -> the same RGB array from every backend."""
    results = [read_frames(clips[clip], decoder=d, threads=1) for d in ("pyav", "decord", "opencv")]
    for other in results[1:]:
        assert other.indices == results[0].indices
        for a, b in zip(results[0].frames, other.frames, strict=True):
            assert np.array_equal(a, b), other.decoder


@pytest.mark.parametrize("clip", ["h264", "h264_gop", "vp9", "vfr", "rotated", "short"])
@pytest.mark.parametrize("sampling", ["center", "linspace", "random"])
def test_pyav_skipping_nonreference_frames_changes_no_pixel(clips, clip, sampling):
    """threads=1 skips non-reference frames that are not targets; threads=0 decodes all."""
    kwargs = {"num_frames": 8, "sampling": sampling, "seed": 11, "decoder": "pyav"}
    skipping = read_frames(clips[clip], threads=1, **kwargs)
    full = read_frames(clips[clip], threads=0, **kwargs)
    assert skipping.indices == full.indices and skipping.num_frames == full.num_frames
    assert skipping.timestamps == full.timestamps
    for a, b in zip(skipping.frames, full.frames, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("sampling", ["linspace", "random"])
def test_sampling_methods_return_those_frames(clips, decoder, sampling):
    result = read_frames(clips["h264"], num_frames=6, sampling=sampling, seed=3, decoder=decoder)
    expected = sample_indices(100, 6, method=sampling, seed=3)
    assert result.indices == expected
    assert barcodes(result) == expected


@pytest.mark.parametrize("decoder", DECODERS)
def test_rotation_is_applied(clips, decoder):
    result = read_frames(clips["rotated"], decoder=decoder)
    assert (result.width, result.height) == (120, 160)
    assert all(f.shape == (160, 120, 3) for f in result.frames)
    # The display matrix turns the picture a quarter turn; undoing it restores the barcode.
    assert [read_counter(np.rot90(f, -1)) for f in result.frames] == sample_indices(100, 4)


@pytest.mark.parametrize("decoder", DECODERS)
def test_vfr_indices_are_presentation_order_with_true_timestamps(clips, decoder):
    result = read_frames(clips["vfr"], decoder=decoder)
    expected = sample_indices(60, 4)
    assert barcodes(result) == expected
    assert result.timestamps == pytest.approx([VFR_PTS_MS[i] / 1000 for i in expected], abs=1e-3)


@pytest.mark.parametrize("decoder", DECODERS)
def test_short_clip_repeats_frames(clips, decoder):
    result = read_frames(clips["short"], num_frames=4, decoder=decoder)
    assert result.num_frames == 3
    assert result.indices == [0, 1, 1, 2]
    assert barcodes(result) == [0, 1, 1, 2]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    ("clip", "reasons"),
    [
        ("zero", {"empty_file"}),
        ("text", {"unreadable"}),
        ("audio", {"no_video_stream", "unreadable"}),
        ("truncated", {"unreadable"}),
    ],
)
def test_unusable_files_raise_one_line_decode_errors(clips, decoder, clip, reasons):
    with pytest.raises(DecodeError) as info:
        read_frames(clips[clip], decoder=decoder)
    assert info.value.reason in reasons
    assert "\n" not in str(info.value)
    if decoder in ("pyav", "auto") and clip == "audio":
        assert info.value.reason == "no_video_stream"


@pytest.mark.parametrize("threads", [0, 1])
@pytest.mark.parametrize("decoder", ["pyav", "auto"])
def test_mid_file_corruption_is_damaged_not_silently_short(clips, decoder, threads):
    with pytest.raises(DecodeError) as info:
        read_frames(clips["corrupt"], decoder=decoder, threads=threads)
    assert info.value.reason == "damaged"
    assert "re-download" in str(info.value)


@pytest.mark.parametrize("threads", [0, 1])
@pytest.mark.parametrize("decoder", DECODERS)
def test_truncated_with_header_never_returns_a_wrong_frame(clips, decoder, threads):
    """The header says 100 frames; whatever a decoder returns must be the frames it claims."""
    try:
        result = read_frames(clips["truncated_faststart"], decoder=decoder, threads=threads)
    except DecodeError as error:
        assert error.reason == "damaged"
        return
    assert result.num_frames < 100  # counted from the stream, not the header
    assert barcodes(result) == result.indices == sample_indices(result.num_frames, 4)


def test_missing_file(tmp_path):
    with pytest.raises(DecodeError, match="no such file") as info:
        read_frames(tmp_path / "nope.mp4")
    assert info.value.reason == "missing_file"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decoder": "ffmpeg"}, "decoder ('ffmpeg') must be one of auto, pyav, decord, opencv"),
        ({"sampling": "middle"}, "sampling ('middle')"),
        ({"num_frames": 0}, "num_frames (0)"),
    ],
)
def test_bad_arguments(clips, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_frames(clips["h264"], **kwargs)


def _failing(name: str):
    def backend(path, pick, threads):
        raise DecodeError(f"{name} is unavailable here")

    return backend


def test_auto_falls_back_and_rejects_a_silently_wrong_decoder(clips, monkeypatch):
    """A decoder that returns frames other than the requested ones is not trusted."""
    real = decode._BACKENDS["pyav"]

    def wrong_indices(path, pick, threads):
        result = real(path, pick, threads)
        return DecodedFrames(**{**result.__dict__, "indices": [i + 1 for i in result.indices]})

    monkeypatch.setitem(decode._BACKENDS, "pyav", wrong_indices)
    result = read_frames(clips["h264"])
    assert result.decoder == "decord"
    assert barcodes(result) == sample_indices(100, 4)


def test_damage_verdict_stops_auto(clips, monkeypatch):
    """Once PyAV finds damage, a laxer decoder must not turn the clip into a success."""
    monkeypatch.setitem(decode._BACKENDS, "decord", _failing("decord must not be asked"))
    with pytest.raises(DecodeError) as info:
        read_frames(clips["corrupt"])
    assert info.value.reason == "damaged"
    assert "must not be asked" not in str(info.value)


def test_opencv_fallback_is_verified_against_the_demuxed_packets(clips, monkeypatch):
    monkeypatch.setitem(decode._BACKENDS, "decord", _failing("decord"))
    monkeypatch.setitem(decode._BACKENDS, "pyav", _failing("pyav"))
    result = read_frames(clips["h264"])
    assert result.decoder == "opencv"
    assert barcodes(result) == sample_indices(100, 4)

    monkeypatch.setattr(decode, "_count_packets", lambda path: 50)
    with pytest.raises(DecodeError) as info:
        read_frames(clips["h264"])
    assert info.value.reason == "unverified"
    message = str(info.value)
    assert "refusing an unverifiable result" in message
    assert all(f"{name}: " in message for name in ("decord", "pyav", "opencv"))


ORDER_CLIPS = ["h264", "h264_gop", "vp9", "vfr", "rotated", "short", "one",
               "xvid_avi", "xvid_mkv", "h264_avi", "truncated_faststart"]  # fmt: skip


@pytest.mark.parametrize("clip", ORDER_CLIPS)
def test_frame_i_is_the_ith_frame_the_decoder_outputs_on_every_backend(clips, clip):
    """Every backend (and the fast path) agrees with decode-all on every container.

    On the Xvid AVI, main's sorted-packet-pts order returned a neighbouring
    frame (JPEG 11 recorded as frame 12); decord's seek returned frame 0 for 12.
    """
    reference = decoder_output(clips[clip])
    unturn = (lambda f: np.rot90(f, -1)) if clip == "rotated" else (lambda f: f)
    times = {}
    for decoder in DECODERS:
        for threads in (0, 1):
            try:
                result = read_frames(clips[clip], num_frames=8, decoder=decoder, threads=threads)
            except DecodeError as error:
                assert clip == "truncated_faststart" and error.reason == "damaged", error
                continue
            got = [read_counter(unturn(f)) for f in result.frames]
            if clip == "truncated_faststart":
                # Where a cut file's data ends differs by decoder (a partly decodable
                # last packet); its frames are in order, so frame i must show i.
                assert got == result.indices, (decoder, threads)
                continue
            assert result.num_frames == len(reference), (decoder, threads)
            assert result.indices == sample_indices(len(reference), 8)
            assert got == [reference[i] for i in result.indices], (decoder, threads)
            times[decoder, threads] = result.timestamps
    if clip == "truncated_faststart":
        return  # backends may stop at different places of a cut file
    assert len(times) == 2 * len(DECODERS)
    first = next(iter(times.values()))
    for key, value in times.items():  # timestamps of the same frames, from every backend
        assert value == pytest.approx(first, abs=1.5e-3), key


@pytest.mark.parametrize("decoder", DECODERS)
def test_xvid_avi_is_decoded_in_output_order_and_says_so(clips, decoder):
    reference = decoder_output(clips["xvid_avi"])
    assert reference != sorted(reference) or len(reference) < 100  # the file really is odd
    result = read_frames(clips["xvid_avi"], decoder=decoder, threads=1)
    assert barcodes(result) == [reference[i] for i in result.indices]
    assert "timestamps untrusted" in (result.note or "")
    fps = result.fps
    assert result.timestamps == pytest.approx([i / fps for i in result.indices], abs=1e-3)


def test_fast_path_is_kept_where_timestamps_are_trusted(clips, monkeypatch):
    """H.264 in MP4 takes the packet-index path: no sequential pass, no note."""
    calls = []
    monkeypatch.setattr(
        decode, "_read_pyav_sequential", lambda *a, **k: calls.append(a) or pytest.fail("slow")
    )
    for clip in ("h264", "h264_gop", "vfr", "vp9"):
        assert read_frames(clips[clip], decoder="pyav", threads=1).note is None
    assert not calls


def test_a_video_over_the_packet_index_limit_is_streamed(clips, monkeypatch):
    """A long video does not hold its packets in memory: one streamed pass, same frames."""
    fast = read_frames(clips["h264_gop"], decoder="pyav", threads=1)
    monkeypatch.setattr(decode, "PACKET_INDEX_LIMIT_BYTES", 2000)
    streamed = read_frames(clips["h264_gop"], decoder="pyav", threads=1)
    assert "over 2000 bytes of packets" in streamed.note
    assert streamed.indices == fast.indices and streamed.timestamps == fast.timestamps
    for a, b in zip(fast.frames, streamed.frames, strict=True):
        assert np.array_equal(a, b)
