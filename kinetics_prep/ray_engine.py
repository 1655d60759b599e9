"""``--engine ray``: run extract (and download) work on a Ray cluster.

The driver (the ``kprep`` process) keeps every guarantee of the local engine:

- it is the only writer of records: a task returns its record to the driver,
  which writes one line per finished clip, flushed as results arrive, so a
  driver killed with ``kill -9`` loses only the clips in flight;
- it streams: at most ``window`` tasks are in flight (two per cluster CPU,
  re-read as nodes join or leave), refilled as results come back with
  ``ray.wait``; 650k clips never become 650k futures;
- a clip runs inside the same crash-proof subprocess worker as the local pool
  (:class:`kinetics_prep.extract._Worker`), one per Ray worker process, so a
  decoder segfault or hang becomes one ``crashed`` or ``timeout`` record and
  the Ray worker lives on;
- a node lost mid-run takes its Ray workers with it: Ray resubmits their
  tasks elsewhere (``max_retries``); a task that exhausts its retries becomes
  a ``crashed`` record, never a failed run.

Before any work the driver checks that the output folder is writable and that
every node sees it and the clips (a shared filesystem: NFS, Lustre, a mounted
bucket); ``docs/cluster.md`` says how to set one up.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from kinetics_prep.errors import KprepError

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
INSTALL_HINT = 'the ray engine needs Ray: pip install "kprep[ray]" on every node'
TASK_RETRIES = 3  # resubmissions of a task whose node or Ray worker died
WINDOW_PER_CPU = 2  # in-flight tasks per cluster CPU: one running, one queued behind it
_RESIZE_EVERY = 2.0  # seconds between reads of the cluster's CPU count


class RayEngineError(KprepError, RuntimeError):
    """Ray cannot run this job (not installed, no cluster, folder not shared)."""


# --- connecting ----------------------------------------------------------------


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise RayEngineError(INSTALL_HINT) from error
    return ray


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Join a Ray cluster or start a local one; True when this call connected.

    ``address`` None: join the cluster named by ``RAY_ADDRESS`` or started on
    this machine with ``ray start``; if there is none, start a local Ray with
    ``num_cpus`` CPUs. ``"local"``: always start a new local Ray. Anything else
    (``10.0.0.1:6379``, ``ray://head:10001``) is joined. Already connected
    (a library caller, a test): nothing happens and False is returned, so
    the caller does not disconnect a session it did not open.
    """
    ray = _ray()
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    local = {"num_cpus": num_cpus, "include_dashboard": False, **quiet}
    if address == "local":
        ray.init(address="local", **local)
        return True
    if address is None:
        try:
            ray.init(address="auto", **quiet)
        except ConnectionError:
            log.info("no running Ray cluster found: starting a local one")
            ray.init(address="local", **local)
        return True
    _probe(address)
    try:
        ray.init(address=address, **quiet)
    except ConnectionError as error:
        raise RayEngineError(
            f"--ray-address ({address!r}): cannot reach a Ray cluster there ({error}); "
            "start one with `ray start --head` or leave --ray-address unset for a local Ray"
        ) from error
    return True


def _probe(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at ``host:port`` (Ray retries long)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray resolves those itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise RayEngineError(
            f"--ray-address ({address!r}): nothing answers there ({error.strerror or error}); "
            "start the head with `ray start --head` or leave --ray-address unset for a local Ray"
        ) from error


def cluster_cpus() -> int:
    """CPUs of the nodes alive now (at least 1, so a cluster that is coming up still gets work)."""
    return max(int(_ray().cluster_resources().get("CPU", 0)), 1)


# --- the shared-folder check ---------------------------------------------------


def _node_sees(probe: str, folder: str, inputs: list[str]) -> str | None:
    """Runs on one node: None when ``probe`` is visible and ``folder`` writable, else why not."""
    host = socket.gethostname()
    if not os.path.isfile(probe):
        return f"node {host} does not see {folder!r} (no shared filesystem there?)"
    mine = os.path.join(folder, f".kprep-probe-{host}-{uuid.uuid4().hex[:8]}")
    try:
        with open(mine, "w") as handle:
            handle.write("probe\n")
        os.remove(mine)
    except OSError as error:
        return f"node {host} cannot write to {folder!r} ({error.strerror})"
    for path in inputs:
        if not os.path.exists(path):
            return f"node {host} does not see the input {path!r}"
    return None


def check_shared_folder(folder: Path, inputs: Iterable[Path] = ()) -> None:
    """Fail early unless ``folder`` is writable here and every alive node sees it and ``inputs``.

    The driver writes a probe file, then one small task per node (pinned with
    ``NodeAffinitySchedulingStrategy``) looks for it and writes its own.
    """
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".kprep-probe-{uuid.uuid4().hex[:12]}"
        probe.write_text("probe\n")
    except OSError as error:
        raise RayEngineError(
            f"--output-dir ({str(folder)!r}) is not writable ({error.strerror}); "
            "pass a folder on a filesystem every node mounts"
        ) from error
    try:
        check = ray.remote(num_cpus=0, max_retries=0)(_node_sees)
        refs = [
            check.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(str(probe.resolve()), str(folder.resolve()), [str(p) for p in inputs])
            for node in ray.nodes()
            if node.get("Alive")
        ]
        problems = sorted({p for p in ray.get(refs, timeout=120) if p})
    finally:
        probe.unlink(missing_ok=True)
    if problems:
        raise RayEngineError(
            "; ".join(problems) + ": the output and input folders must be on a shared "
            "filesystem mounted at the same path on every node (see docs/cluster.md)"
        )


# --- the streaming driver loop -------------------------------------------------


def stream(
    items: Iterable[Any],
    submit: Callable[[Any], Any],
    emit: Callable[[Any, Any], None],
    lost: Callable[[Any, BaseException], None],
    *,
    window: Callable[[], int] | None = None,
) -> None:
    """Submit ``items`` as tasks with at most ``window()`` in flight; handle each result once.

    ``submit(item)`` returns an ObjectRef; ``emit(item, result)`` gets each
    finished task's value on the driver, ``lost(item, error)`` each task that
    raised or exhausted its retries (worker or node died). Items are pulled
    from ``items`` lazily, so a generator of 650k clips stays a generator.
    """
    ray = _ray()
    size = window or (lambda: WINDOW_PER_CPU * cluster_cpus())
    source: Iterator[Any] = iter(items)
    in_flight: dict[Any, Any] = {}
    limit = size()
    resized = time.monotonic()
    exhausted = False
    while True:
        if time.monotonic() - resized > _RESIZE_EVERY:
            limit, resized = size(), time.monotonic()
        while not exhausted and len(in_flight) < limit:
            item = next(source, _END)
            if item is _END:
                exhausted = True
                break
            in_flight[submit(item)] = item
        if not in_flight:
            return
        refs = list(in_flight)
        done, rest = ray.wait(refs, num_returns=1, timeout=_RESIZE_EVERY)
        if done and rest:  # collect everything else that finished meanwhile
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            done += more
        for ref in done:
            item = in_flight.pop(ref)
            try:
                value = ray.get(ref)
            except ray.exceptions.RayError as error:
                lost(item, error)
            else:
                emit(item, value)


_END = object()


def describe_loss(error: BaseException) -> str:
    """One line for a task Ray gave up on (its Ray worker or node died on every try)."""
    ray = _ray()
    if isinstance(error, ray.exceptions.NodeDiedError | ray.exceptions.LocalRayletDiedError):
        what = "the node running it died"
    elif isinstance(error, ray.exceptions.WorkerCrashedError):
        what = "the Ray worker running it died"
    elif isinstance(error, ray.exceptions.OutOfMemoryError):
        what = "Ray killed its worker for memory"
    elif isinstance(error, ray.exceptions.TaskCancelledError):
        what = "the task was cancelled"
    else:
        text = " ".join(str(error).split())[:300]
        return f"{type(error).__name__}: {text}"
    return f"{what} on each of {TASK_RETRIES + 1} tries ({type(error).__name__})"


# --- extract on Ray -------------------------------------------------------------

# One crash-proof decoding subprocess per Ray worker process, kept between tasks
# (starting one costs the decoders' imports). Ray ends the job's worker
# processes when the driver disconnects; the subprocess then sees EOF and exits.
_WORKER: dict[str, Any] = {}
_READY_TIMEOUT = 120.0


def _ready_worker(settings: dict[str, Any]) -> Any:
    from kinetics_prep.extract import _Worker

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
    raise RuntimeError(
        f"extract worker processes die on start on {socket.gethostname()}; see "
        f"{Path(settings['output_dir']) / settings.get('worker_log', 'extract_workers.log')}"
    )


def extract_task(clip_id: str, video_path: str, settings: dict[str, Any], timeout: float) -> dict:
    """One clip in this Ray worker's decoding subprocess; always a record."""
    from kinetics_prep.extract import Clip, _describe_exit, _lost_record

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
        try:
            code = worker.process.wait(timeout=5)
        except Exception:  # noqa: BLE001 - still alive after closing its pipe
            code = None
        lost = _lost_record(
            clip,
            "crashed",
            f"the decoding process died ({_describe_exit(code)}); "
            "the file likely crashes the decoder: try another --decoder or re-download it",
            time.monotonic() - worker.started,
        )
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


def run_extract(
    clips: list[Any],
    config: Any,
    emit: Callable[[dict[str, Any]], None],
) -> None:
    """The Ray counterpart of ``extract._run_pool``: same records, same ``emit``."""
    from kinetics_prep.extract import _lost_record, _settings

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


# --- download on Ray --------------------------------------------------------------

DOWNLOAD_TASK_CPUS = 0.25  # network-bound: four downloads per CPU
PACER_NAME = "kprep-youtube-pacer"  # one per cluster: concurrent kprep jobs share the budget


class _ActorPacer:
    """The :class:`~kinetics_prep.rate_limit.RequestPacer` interface over its Ray actor."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def reserve(self) -> float:
        return float(_ray().get(self.handle.reserve.remote()))

    def hold(self, seconds: float) -> None:
        self.handle.hold.remote(seconds)


@functools.cache
def _warm_ytdlp() -> None:
    """Pay yt-dlp's first-use costs (imports, extractor list, JS runtime probe) once per
    Ray worker, before its first pacer slot, so a slot and its request stay close."""
    from yt_dlp import YoutubeDL

    from kinetics_prep.youtube_tools import js_runtime_options

    with YoutubeDL({"quiet": True, "js_runtimes": js_runtime_options()}) as ydl:
        ydl.get_info_extractor("Generic")
        ydl.get_info_extractor("Youtube")


def youtube_task(row: Any, config: Any, pacer: Any) -> dict[str, Any]:
    """One clip, as the local engine does it (retries, backoff, classification)."""
    from kinetics_prep.download.youtube import _youtube_clip

    _warm_ytdlp()
    return _youtube_clip(row, config, time.sleep, _ActorPacer(pacer) if pacer else None)


def run_youtube_download(
    rows: list[Any], config: Any, emit: Callable[[dict[str, Any]], None]
) -> None:
    """``--source youtube --engine ray``: one small task per clip, one request budget.

    With ``--requests-per-second`` every task asks the cluster's one pacer
    actor (named ``kprep-youtube-pacer``) for a slot before each request, so
    the cap holds for the whole cluster; a 429 anywhere holds everyone.
    """
    from kinetics_prep.download.report import clip_record

    ray = _ray()
    opened = connect(config.ray_address)
    try:
        inputs = [config.cookies] if config.cookies is not None else []
        check_shared_folder(config.output_dir, inputs)
        pacer, created = None, False
        if config.requests_per_second:
            from kinetics_prep.rate_limit import RequestPacer

            try:
                pacer = ray.get_actor(PACER_NAME)  # another kprep job's: share its budget
            except ValueError:
                actor = ray.remote(num_cpus=0)(RequestPacer)
                pacer = actor.options(name=PACER_NAME, get_if_exists=True).remote(
                    config.requests_per_second
                )
                created = True
        task = ray.remote(
            num_cpus=DOWNLOAD_TASK_CPUS, max_retries=TASK_RETRIES, retry_exceptions=False
        )(youtube_task)
        config_ref = ray.put(config)

        def lost(row: Any, error: BaseException) -> None:
            message = describe_loss(error)
            log.warning("%s: %s", row.clip_id, message)
            emit(clip_record(row, "youtube", reason="other", error=message))

        stream(
            rows,
            lambda row: task.remote(row, config_ref, pacer),
            lambda row, record: emit(record),
            lost,
            window=lambda: int(WINDOW_PER_CPU * cluster_cpus() / DOWNLOAD_TASK_CPUS),
        )
        if created:
            ray.kill(pacer)
    finally:
        if opened:
            ray.shutdown()
