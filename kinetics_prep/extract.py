"""``kprep extract``: every clip under a folder -> N sampled JPEG frames + one record.

The parent process finds the clips, decides which still need work (resume),
and hands them one at a time to worker processes. A worker decodes
(:mod:`kinetics_prep.decode`), writes the frames atomically
(:mod:`kinetics_prep.frames`) and sends back a record; only the parent writes
records (:mod:`kinetics_prep.records`). A worker that dies (a decoder segfault)
or overruns ``timeout`` is killed and replaced, and its clip gets a ``crashed``
or ``timeout`` record: one bad clip costs one clip, never the run.

Records go to ``OUT/extract_results.jsonl``; a sharded run (``num_shards > 1``)
writes ``OUT/extract_results.shard-<i>-of-<k>.jsonl`` so that K machines never
append to one file (unsafe on NFS). :func:`read_extract_records` merges them
(newest ``finished_at`` wins), and an unsharded run folds the shard records into
``extract_results.jsonl`` so the file the manifest reads is complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinetics_prep.decode import DECODER_CHOICES
from kinetics_prep.errors import ExtractConfigError, ExtractError
from kinetics_prep.sampling import SAMPLING_METHODS
from kinetics_prep.schema import (
    EXTRACT_RECORDS_NAME,
    EXTRACT_SHARD_GLOB,
    FRAMES_DIR,
    VIDEO_SUFFIXES,
    extract_records_name,
    is_video_file,
)

log = logging.getLogger(__name__)

MAX_NUM_FRAMES = 256
"""Bound of ``--num-frames``: past it a clip only repeats frames (and fills the disk)."""

FAILED_STATUSES = ("failed", "timeout", "crashed")
RAY_SYNC_INTERVAL = 0.2  # seconds between fsyncs of the records with --engine ray
ANNOTATION_KEYS = ("label", "youtube_id", "time_start", "time_end", "split")
# Test-only fault injection, set by tests with monkeypatch (no environment
# variable or flag, so no production run can turn it on by accident):
# "crash:<clip_id>,hang:<clip_id>,hang-start:<file>" makes the worker that gets
# that clip raise SIGSEGV or sleep, or the first worker to start (the one that
# creates <file>) hang before it is ready. Passed to workers in their settings.
_TEST_FAULTS = ""
# Seconds a new worker may take to import the decoders and say "ready" before
# it is killed and replaced (three in a row: the run stops with an error).
STARTUP_TIMEOUT = 60.0


def _default_workers() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


@dataclass
class ExtractConfig:
    """Everything one ``kprep extract`` run needs; checked on construction."""

    clips: Path = field(metadata={"help": "Folder of videos, searched recursively."})
    output_dir: Path = field(metadata={"help": "Gets frames/ and the records."})
    num_frames: int = field(default=4, metadata={"help": "Frames per clip."})
    workers: int = field(
        default_factory=_default_workers,
        metadata={"help": "Decoding processes.", "default_help": "CPUs"},
    )
    sampling: str = field(
        default="center",
        metadata={"help": "center | linspace | random | interior (the reference's)."},
    )
    seed: int = field(
        default=0, metadata={"help": "Seed for --sampling random (per clip: seed+id)."}
    )
    short_side: int | None = field(
        default=None,
        metadata={
            "help": "Shrink frames to this short side (px; never enlarged).",
            "default_help": "keep",
        },
    )
    resize: str | None = field(
        default=None,
        metadata={
            "help": "Squash frames to exactly WxH, like ffmpeg scale=W:H (e.g. 336x336).",
            "default_help": "keep",
        },
    )
    jpeg_quality: int = field(default=95, metadata={"help": "JPEG quality 1-100."})
    decoder: str = field(
        default="auto",
        metadata={"help": "auto (pyav, then decord, then opencv) | pyav | decord | opencv."},
    )
    shard_index: int = field(default=0, metadata={"help": "This machine's share (0-based)."})
    num_shards: int = field(default=1, metadata={"help": "How many machines share the clips."})
    retry_failed: bool = field(
        default=False,
        metadata={"help": "Redo clips that failed before.", "flags": ("--retry-failed",)},
    )
    timeout: float = field(
        default=120.0, metadata={"help": "Seconds per clip before its worker is killed."}
    )
    annotations: Path | None = field(
        default=None,
        metadata={"help": "Kinetics CSV/JSON: labels, times, split.", "default_help": "none"},
    )
    engine: str = field(
        default="local",
        metadata={"help": "local (processes here) | ray (a Ray cluster; kprep[ray])."},
    )
    ray_address: str | None = field(
        default=None,
        metadata={
            "help": "--engine ray: the Ray cluster to join.",
            "default_help": "the running one, else a local Ray",
        },
    )

    def __post_init__(self) -> None:
        self.clips = Path(self.clips)
        self.output_dir = Path(self.output_dir)
        if self.annotations is not None:
            self.annotations = Path(self.annotations)
        problems = []
        if not self.clips.is_dir():
            problems.append(f"--clips ({str(self.clips)!r}) is not a folder; pass the clips folder")
        if self.output_dir.exists() and not self.output_dir.is_dir():
            problems.append(f"--output-dir ({str(self.output_dir)!r}) exists and is not a folder")
        if not 1 <= self.num_frames <= MAX_NUM_FRAMES:
            problems.append(
                f"--num-frames ({self.num_frames}) must be between 1 and {MAX_NUM_FRAMES} "
                "(a 10 s Kinetics clip has about 300 frames; more would repeat frames)"
            )
        if self.workers < 1:
            problems.append(f"--workers ({self.workers}) must be >= 1")
        if self.sampling not in SAMPLING_METHODS:
            problems.append(
                f"--sampling ({self.sampling!r}) must be one of {', '.join(SAMPLING_METHODS)}"
            )
        if self.short_side is not None and self.short_side < 1:
            problems.append(f"--short-side ({self.short_side}) must be >= 1 pixel")
        if self.resize is not None:
            from kinetics_prep.frames import parse_size

            try:
                parse_size(self.resize)
            except ValueError as error:
                problems.append(str(error))
            if self.short_side is not None:
                problems.append(
                    f"--resize ({self.resize}) and --short-side ({self.short_side}) both set "
                    "the frame size: pass one"
                )
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"--jpeg-quality ({self.jpeg_quality}) must be in 1..100")
        if self.decoder not in DECODER_CHOICES:
            problems.append(
                f"--decoder ({self.decoder!r}) must be one of {', '.join(DECODER_CHOICES)}"
            )
        if self.num_shards < 1:
            problems.append(f"--num-shards ({self.num_shards}) must be >= 1")
        elif not 0 <= self.shard_index < self.num_shards:
            problems.append(
                f"--shard-index ({self.shard_index}) must be in 0..{self.num_shards - 1} "
                f"for --num-shards {self.num_shards}"
            )
        if not self.timeout > 0:
            problems.append(f"--timeout ({self.timeout:g}) must be > 0 seconds")
        if self.annotations is not None and not self.annotations.is_file():
            problems.append(f"--annotations ({str(self.annotations)!r}) is not a file")
        if self.engine not in ("local", "ray"):
            problems.append(f"--engine ({self.engine!r}) must be local or ray")
        if problems:
            raise ExtractConfigError("; ".join(problems))

    @property
    def records_path(self) -> Path:
        """This run's record file (one per shard when sharded)."""
        return self.output_dir / extract_records_name(self.shard_index, self.num_shards)


@dataclass(frozen=True)
class Clip:
    """One input video and the id its frames are stored under."""

    clip_id: str
    path: Path
    folder_label: str | None  # the parent folder's name when the clip sits in a class folder


@dataclass
class ExtractSummary:
    """What a run did; the CLI prints it as a table."""

    annotation_matches: int | None = None  # clips found in --annotations (None: not given)

    found: int = 0  # videos under --clips
    in_shard: int = 0  # of those, this shard's share
    skipped_ok: int = 0  # already extracted, left untouched
    skipped_failed: int = 0  # failed before and not retried (no --retry-failed)
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # reason -> count
    seconds: float = 0.0
    records_path: Path | None = None

    @property
    def processed(self) -> int:
        return self.ok + sum(self.failed.values())


# --- discovery ---------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_id(stem: str) -> str:
    """A path-safe clip id from a file stem (no separators, no leading dot)."""
    cleaned = _UNSAFE.sub("_", stem).lstrip(".")
    return cleaned or "clip"


def find_clips(root: str | Path) -> list[Clip]:
    """Every video under ``root`` (recursively, hidden entries skipped), sorted by path.

    ``clip_id`` is the safe file stem. When several files share it (``a.mp4`` and
    ``a.avi``, or ``x/a.mp4`` and ``y/a.mp4``) each gets ``<stem>_<8 hex of its
    relative path>`` instead, so no clip overwrites another's frames.
    """
    root = Path(root)
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if is_video_file(name):
                paths.append(Path(dirpath) / name)
    paths.sort(key=lambda p: p.relative_to(root).as_posix())
    stems = Counter(safe_id(p.stem) for p in paths)
    clips = []
    for path in paths:
        relative = path.relative_to(root)
        clip_id = safe_id(path.stem)
        if stems[clip_id] > 1:
            digest = hashlib.sha1(relative.as_posix().encode()).hexdigest()[:8]
            clip_id = f"{clip_id}_{digest}"
        folder = relative.parent.name if len(relative.parts) > 1 else None
        clips.append(Clip(clip_id=clip_id, path=path, folder_label=folder))
    return clips


def shard(clips: list[Clip], shard_index: int, num_shards: int) -> list[Clip]:
    """Round-robin share of the sorted clip list: every shard must see the same folder."""
    return clips[shard_index::num_shards]


# --- records -----------------------------------------------------------------


def read_extract_records(output_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The latest record per clip across ``extract_results.jsonl`` and any shard files.

    Newest ``finished_at`` wins; within one file, the last line wins.
    """
    from kinetics_prep.records import iter_records

    output_dir = Path(output_dir)
    files = [output_dir / EXTRACT_RECORDS_NAME, *sorted(output_dir.glob(EXTRACT_SHARD_GLOB))]
    latest: dict[str, dict[str, Any]] = {}
    for path in files:
        for record in iter_records(path):
            clip_id = record.get("clip_id")
            if clip_id is None:
                continue
            old = latest.get(clip_id)
            if old is None or record.get("finished_at", 0) >= old.get("finished_at", 0):
                latest[clip_id] = record
    return latest


def _is_done(record: dict[str, Any] | None, config: ExtractConfig) -> bool:
    """ok, its frames on disk (non-empty, inside the output folder), picked the way
    this run would pick them."""
    if record is None or record.get("status") != "ok" or not record.get("frames"):
        return False
    same_pick = len(record["frames"]) == config.num_frames and record.get("sampling") == (
        config.sampling
    )
    same_pick = same_pick and record.get("resize") == config.resize
    if same_pick and config.sampling == "random":
        same_pick = record.get("seed") == _clip_seed(config.seed, record["clip_id"])
    if not same_pick:
        return False
    from kinetics_prep.frames import frames_complete

    return frames_complete(config.output_dir, record["frames"])  # missing or empty: redo


def _clip_seed(seed: int, clip_id: str) -> int:
    """Per-clip seed so clips of equal length don't all get the same random offsets."""
    return zlib.crc32(f"{seed}:{clip_id}".encode())


# --- the work of one clip (runs in a worker) ---------------------------------


def _settings(config: ExtractConfig) -> dict[str, Any]:
    return {
        "output_dir": str(config.output_dir),
        "num_frames": config.num_frames,
        "sampling": config.sampling,
        "seed": config.seed,
        "short_side": config.short_side,
        "resize": config.resize,
        "jpeg_quality": config.jpeg_quality,
        "decoder": config.decoder,
        "fault": _TEST_FAULTS,
    }


def _inject_fault(clip_id: str, spec: str) -> None:
    """Crash or hang on purpose for named clips (tests prove the parent survives)."""
    for item in filter(None, spec.split(",")):
        kind, _, target = item.partition(":")
        if target == clip_id and kind == "crash":
            import signal

            os.kill(os.getpid(), signal.SIGSEGV)
        if target == clip_id and kind == "hang":
            time.sleep(3600)


def _inject_start_fault(spec: str) -> None:
    """``hang-start:<file>``: the first worker to start (it creates ``file``) hangs."""
    for item in filter(None, spec.split(",")):
        kind, _, target = item.partition(":")
        if kind == "hang-start":
            try:
                with open(target, "x"):
                    pass
            except FileExistsError:
                continue
            time.sleep(3600)


def _empty_record(clip_id: str, video_path: str) -> dict[str, Any]:
    return {
        "clip_id": clip_id,
        "video_path": video_path,
        "status": None,
        "error": None,
        "reason": None,
        "frame_indices": [],
        "timestamps": [],
        "num_frames": None,
        "fps": None,
        "width": None,
        "height": None,
        "decoder": None,
        "frames": [],
        "note": None,
    }


def process_clip(clip_id: str, video_path: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Decode, sample and write one clip; always returns a record (failures included)."""
    from kinetics_prep.decode import DecodeError, read_frames
    from kinetics_prep.frames import parse_size, write_frames
    from kinetics_prep.sampling import has_repeats

    started = time.monotonic()
    record = _empty_record(clip_id, video_path)
    record["sampling"] = settings["sampling"]
    if settings.get("resize"):
        record["resize"] = settings["resize"]
    seed = None
    if settings["sampling"] == "random":
        seed = _clip_seed(settings["seed"], clip_id)
        record["seed"] = seed
    _inject_fault(clip_id, settings.get("fault", ""))
    try:
        decoded = read_frames(
            video_path,
            num_frames=settings["num_frames"],
            sampling=settings["sampling"],
            seed=seed,
            decoder=settings["decoder"],
            threads=1,
        )
    except DecodeError as error:
        record.update(status="failed", error=str(error), reason=error.reason)
        record["seconds"] = round(time.monotonic() - started, 4)
        return record
    record.update(
        frame_indices=decoded.indices,
        timestamps=decoded.timestamps,
        num_frames=decoded.num_frames,
        fps=round(decoded.fps, 6),
        width=decoded.width,
        height=decoded.height,
        decoder=decoded.decoder,
        note=decoded.note,
    )
    if has_repeats(decoded.indices):
        repeat = (
            f"only {decoded.num_frames} frames decode for {settings['num_frames']} requested: "
            "frames repeated"
        )
        record["note"] = f"{decoded.note}; {repeat}" if decoded.note else repeat
    output_dir = Path(settings["output_dir"])
    try:
        names = write_frames(
            decoded.frames,
            output_dir / FRAMES_DIR / clip_id,
            short_side=settings["short_side"],
            quality=settings["jpeg_quality"],
            resize=parse_size(settings["resize"]) if settings.get("resize") else None,
        )
    except OSError as error:
        record.update(status="failed", error=f"cannot write frames: {error}", reason="write_error")
    else:
        record.update(status="ok", frames=[f"{FRAMES_DIR}/{clip_id}/{name}" for name in names])
    record["seconds"] = round(time.monotonic() - started, 4)
    return record


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _worker_entry() -> None:
    """``python -c`` entry of a worker: argv holds the task and result pipe fds.

    Workers are plain subprocesses rather than ``multiprocessing`` children, so
    they never re-import the caller's ``__main__`` (a script without a main
    guard, a notebook, stdin) and start the same way from every caller.
    """
    import sys
    from multiprocessing.connection import Connection

    logging.basicConfig(level=logging.WARNING)
    tasks = Connection(int(sys.argv[1]), writable=False)
    results = Connection(int(sys.argv[2]), readable=False)
    import av  # noqa: F401 - import the decoders before the first clip's clock starts
    import cv2  # noqa: F401

    try:
        settings = tasks.recv()
        _inject_start_fault(settings.get("fault", ""))
        results.send("ready")  # the parent starts a clip's clock only after this
    except (EOFError, OSError):
        return
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):
            return  # the parent is gone (killed): stop
        if task is None:
            return
        clip_id, video_path = task
        try:
            record = process_clip(clip_id, video_path, settings)
        except Exception as error:  # noqa: BLE001 - a bug for one clip must not end the run
            record = _empty_record(clip_id, video_path)
            record.update(status="failed", error=f"{type(error).__name__}: {error}", reason="bug")
        record["worker_peak_rss_mb"] = _peak_rss_mb()
        try:
            results.send(record)
        except (BrokenPipeError, OSError):
            return


# --- the pool of workers (parent side) ---------------------------------------


class _Worker:
    """One worker process, the parent's ends of its two pipes, and the clip it is on.

    The worker's stdout and stderr (the decoders' C-level chatter: FFmpeg,
    OpenCV) go to ``OUT/extract_workers.log``; every failure is a record anyway.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        package_root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        import socket

        log_name = settings.get("worker_log", "extract_workers.log")
        log_path = Path(settings["output_dir"]) / log_name.format(host=socket.gethostname())
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from kinetics_prep.extract import _worker_entry; "
                 "_worker_entry()", str(task_read), str(result_write)],
                pass_fds=(task_read, result_write),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=env,
            )  # fmt: skip
        os.close(task_read)
        os.close(result_write)
        self.tasks = Connection(task_write, readable=False)
        self.results = Connection(result_read, writable=False)
        self.clip: Clip | None = None
        self.started = 0.0
        self.spawned = time.monotonic()
        self.ready = False  # set when the worker says it has imported the decoders
        try:
            self.tasks.send(settings)
        except (BrokenPipeError, OSError):
            pass  # died at start: the first assign() fails and the worker is replaced

    def assign(self, clip: Clip) -> bool:
        """Hand ``clip`` over; False when the process is already gone (replace it)."""
        try:
            self.tasks.send((clip.clip_id, str(clip.path)))
        except (BrokenPipeError, OSError):
            return False
        self.clip = clip
        self.started = time.monotonic()
        return True

    def stop(self, *, kill: bool = False) -> None:
        import subprocess

        if kill:
            self.process.kill()
        else:
            try:
                self.tasks.send(None)
            except (BrokenPipeError, OSError):
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.tasks.close()
        self.results.close()


def _crashed_record(process: Any, clip: Clip, seconds: float) -> dict[str, Any]:
    """The record of a clip whose decoding process died, with how it exited."""
    try:
        code = process.wait(timeout=5)
    except Exception:  # noqa: BLE001 - still alive after closing its pipe
        code = None
    return _lost_record(
        clip,
        "crashed",
        f"the decoding process died ({_describe_exit(code)}); "
        "the file likely crashes the decoder: try another --decoder or re-download it",
        seconds,
    )


def _lost_record(clip: Clip, status: str, error: str, seconds: float) -> dict[str, Any]:
    record = _empty_record(clip.clip_id, str(clip.path))
    record.update(status=status, error=error, reason=status, seconds=round(seconds, 4))
    return record


def _run_pool(
    clips: list[Clip],
    config: ExtractConfig,
    emit: Callable[[dict[str, Any]], None],
) -> None:
    """Feed ``clips`` to ``config.workers`` processes; ``emit`` every record as it arrives."""
    from multiprocessing.connection import wait

    settings = _settings(config)
    pending = deque(clips)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    workers = [_Worker(settings) for _ in range(min(config.workers, len(clips)))]
    start_failures = 0

    def replace(index: int) -> None:
        workers[index].stop(kill=True)
        workers[index] = _Worker(settings)

    def feed(index: int) -> None:
        """Give worker ``index`` the next clip if it is ready and idle."""
        worker = workers[index]
        if worker.ready and worker.clip is None and pending:
            clip = pending.popleft()
            if not worker.assign(clip):  # died while idle: the clip goes back
                pending.appendleft(clip)
                replace(index)

    try:
        while pending or any(w.clip is not None for w in workers):
            for index in range(len(workers)):
                feed(index)
            watched = [w for w in workers if w.clip is not None or not w.ready]
            now = time.monotonic()
            deadlines = [w.started + config.timeout for w in workers if w.clip is not None]
            deadlines += [w.spawned + STARTUP_TIMEOUT for w in workers if not w.ready]
            wait_for = max(min(deadlines) - now, 0.0) if deadlines else None
            # A worker that dies closes its result pipe: EOF there means "died".
            ready = set(wait([w.results for w in watched], timeout=wait_for))
            now = time.monotonic()
            for index, worker in enumerate(workers):
                clip = worker.clip
                if worker.results in ready:
                    try:
                        message = worker.results.recv()
                    except (EOFError, OSError):
                        message = None
                    if message == "ready":
                        worker.ready = True
                        start_failures = 0
                        continue
                    if message is not None:
                        worker.clip = None
                        feed(index)  # keep the worker busy while the record is written
                        emit(message)
                        continue
                    if clip is None:  # died before taking a clip
                        start_failures += 1
                        if start_failures >= 3:
                            raise ExtractError(
                                "extract worker processes die on start; see "
                                f"{config.output_dir / 'extract_workers.log'}"
                            )
                        replace(index)
                        continue
                    lost = _crashed_record(worker.process, clip, now - worker.started)
                elif not worker.ready and now - worker.spawned >= STARTUP_TIMEOUT:
                    # Hung while starting (before its first clip): never wait forever.
                    start_failures += 1
                    log.warning(
                        "an extract worker did not start within %g s; replacing it",
                        STARTUP_TIMEOUT,
                    )
                    if start_failures >= 3:
                        raise ExtractError(
                            f"extract worker processes hang on start (> {STARTUP_TIMEOUT:g} s, "
                            f"3 times); see {config.output_dir / 'extract_workers.log'}"
                        )
                    replace(index)
                    continue
                elif clip is not None and now - worker.started >= config.timeout:
                    lost = _lost_record(
                        clip,
                        "timeout",
                        f"decoding took longer than --timeout {config.timeout:g} s; "
                        "the process was killed (raise --timeout for long clips)",
                        now - worker.started,
                    )
                else:
                    continue
                log.warning("%s: %s", clip.clip_id, lost["error"])
                replace(index)
                emit(lost)
    finally:
        for worker in workers:
            worker.stop(kill=worker.clip is not None or not worker.ready)


# --- extract on Ray -------------------------------------------------------------

# One crash-proof decoding subprocess per Ray worker process, kept between tasks
# (starting one costs the decoders' imports). Ray ends the job's worker
# processes when the driver disconnects; the subprocess then sees EOF and exits.
_WORKER: dict[str, Any] = {}
_READY_TIMEOUT = 120.0


def _ready_worker(settings: dict[str, Any]) -> Any:
    key = repr(sorted(settings.items()))
    worker = _WORKER.get("worker")
    if worker is not None and _WORKER.get("key") == key and worker.process.poll() is None:
        return worker
    if worker is not None:
        worker.stop(kill=True)
        _WORKER.clear()
    for _ in range(3):
        worker = _Worker(settings)
        if worker.results.poll(_READY_TIMEOUT):
            try:
                if worker.results.recv() == "ready":
                    worker.ready = True
                    _WORKER.update(worker=worker, key=key)
                    return worker
            except (EOFError, OSError):
                pass
        worker.stop(kill=True)
    import socket

    raise RuntimeError(
        f"extract worker processes die on start on {socket.gethostname()}; see "
        f"{Path(settings['output_dir']) / settings.get('worker_log', 'extract_workers.log')}"
    )


def extract_task(clip_id: str, video_path: str, settings: dict[str, Any], timeout: float) -> dict:
    """One clip in this Ray worker's decoding subprocess; always a record."""
    clip = Clip(clip_id=clip_id, path=Path(video_path), folder_label=None)
    worker = _ready_worker(settings)
    if not worker.assign(clip):  # died while idle: start a fresh one
        _WORKER.clear()
        worker = _ready_worker(settings)
        if not worker.assign(clip):
            raise RuntimeError("a fresh extract worker process refused its first clip")
    if worker.results.poll(timeout):
        try:
            record = worker.results.recv()
        except (EOFError, OSError):
            record = None
        if record is not None:
            worker.clip = None
            return record
        lost = _crashed_record(worker.process, clip, time.monotonic() - worker.started)
    else:
        lost = _lost_record(
            clip,
            "timeout",
            f"decoding took longer than --timeout {timeout:g} s; "
            "the process was killed (raise --timeout for long clips)",
            time.monotonic() - worker.started,
        )
    worker.stop(kill=True)
    _WORKER.clear()
    return lost


def _run_ray(
    clips: list[Any],
    config: Any,
    emit: Callable[[dict[str, Any]], None],
) -> None:
    """The Ray counterpart of ``extract._run_pool``: same records, same ``emit``."""
    from kinetics_prep.ray_engine import (
        TASK_RETRIES,
        _ray,
        check_shared_folder,
        connect,
        describe_loss,
        stream,
    )

    ray = _ray()
    opened = connect(config.ray_address, num_cpus=config.workers)
    try:
        sample = [clips[0].path, clips[-1].path] if clips else []
        check_shared_folder(config.output_dir, [config.clips, *sample])
        settings = _settings(config)
        # Each node appends to its own worker log: one shared append target is unsafe on NFS.
        settings["worker_log"] = "extract_workers.{host}.log"
        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES, retry_exceptions=False)(
            extract_task
        )
        settings_ref = ray.put(settings)

        def submit(clip: Any) -> Any:
            return task.remote(clip.clip_id, str(clip.path), settings_ref, config.timeout)

        def lost(clip: Any, error: BaseException) -> None:
            if isinstance(error, ray.exceptions.RayTaskError):
                record = _lost_record(clip, "failed", describe_loss(error), 0.0)
                record["reason"] = "bug"
            else:
                record = _lost_record(clip, "crashed", describe_loss(error), 0.0)
            log.warning("%s: %s", clip.clip_id, record["error"])
            emit(record)

        stream(clips, submit, lambda clip, record: emit(record), lost)
    finally:
        if opened:
            ray.shutdown()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        import signal

        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# --- the run -----------------------------------------------------------------


def _annotation_fields(config: ExtractConfig, clips: list[Clip]) -> dict[str, dict[str, Any]]:
    """clip_id -> label/youtube_id/times/split from --annotations, else the class folder."""
    metadata: dict[str, dict[str, Any]] = {}
    if config.annotations is not None:
        from kinetics_prep.annotations import load_clip_metadata

        metadata = load_clip_metadata(config.annotations)
    fields: dict[str, dict[str, Any]] = {}
    for clip in clips:
        values: dict[str, Any] = dict.fromkeys(ANNOTATION_KEYS)
        found = metadata.get(clip.clip_id)
        if found is not None:
            values.update({key: found.get(key) for key in ANNOTATION_KEYS})
        elif clip.folder_label is not None:
            values["label"] = _folder_label(clip.folder_label)
        fields[clip.clip_id] = values
    return fields


def _folder_label(folder: str) -> str:
    """Class folders use the label with ``_`` for spaces (``air_drumming``)."""
    from kinetics_prep.annotations import normalise_label

    return normalise_label(folder.replace("_", " "))


def extract_clips(
    config: ExtractConfig,
    *,
    on_start: Callable[[int], None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> ExtractSummary:
    """Extract every unfinished clip of this shard; returns what happened.

    ``on_start(total)`` is called once with the number of clips to process and
    ``on_record(record)`` after each one (the CLI drives its progress bar with
    them). Raises :class:`ExtractConfigError` when there is nothing to read.
    """
    from kinetics_prep.frames import remove_partials
    from kinetics_prep.records import RecordWriter, read_latest

    started = time.monotonic()
    all_clips = find_clips(config.clips)
    if not all_clips:
        raise ExtractConfigError(
            f"--clips ({str(config.clips)!r}) holds no videos "
            f"({', '.join(s[1:] for s in VIDEO_SUFFIXES)}); check the path"
        )
    mine = shard(all_clips, config.shard_index, config.num_shards)
    summary = ExtractSummary(found=len(all_clips), in_shard=len(mine))
    summary.records_path = config.records_path
    fields = _annotation_fields(config, mine)  # a bad --annotations file fails before any write
    if config.annotations is not None:
        summary.annotation_matches = sum(
            1 for values in fields.values() if values.get("youtube_id") is not None
        )
        if not summary.annotation_matches:
            log.info("--annotations %s matches none of the %d clips", config.annotations, len(mine))
    config.output_dir.mkdir(parents=True, exist_ok=True)

    previous = read_extract_records(config.output_dir)
    todo = []
    for clip in mine:
        record = previous.get(clip.clip_id)
        if _is_done(record, config):
            summary.skipped_ok += 1
        elif record is not None and record.get("status") in FAILED_STATUSES:
            if config.retry_failed:
                todo.append(clip)
            else:
                summary.skipped_failed += 1
        else:
            todo.append(clip)
    removed = remove_partials(config.output_dir / FRAMES_DIR, [c.clip_id for c in mine])
    if removed:
        log.info("removed %d unfinished frame folders left by an earlier run", removed)

    # Ray: one fsync per RAY_SYNC_INTERVAL, not per record (the driver's ceiling on NFS).
    sync = RAY_SYNC_INTERVAL if config.engine == "ray" else 0.0
    with RecordWriter(config.records_path, sync_interval=sync) as writer:
        if config.num_shards == 1:
            _fold_shard_records(previous, read_latest(config.records_path), writer)

        def emit(record: dict[str, Any]) -> None:
            record.update(fields.get(record["clip_id"], {}))
            record["finished_at"] = round(time.time(), 6)
            writer.write(record)
            if record["status"] == "ok":
                summary.ok += 1
            else:
                summary.failed[record.get("reason") or record["status"]] += 1
            if on_record is not None:
                on_record(record)

        if on_start is not None:
            on_start(len(todo))
        if todo and config.engine == "ray":
            _run_ray(todo, config, emit)
        elif todo:
            _run_pool(todo, config, emit)
    summary.seconds = time.monotonic() - started
    return summary


def _fold_shard_records(
    merged: dict[str, dict[str, Any]],
    main: dict[str, dict[str, Any]],
    writer: Any,
) -> None:
    """Copy records that only shard files hold into the main file (after a SLURM array)."""
    for clip_id, record in merged.items():
        if main.get(clip_id) != record:
            writer.write(record)
