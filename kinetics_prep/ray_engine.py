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
