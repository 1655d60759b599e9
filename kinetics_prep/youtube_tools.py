"""What ``--source youtube`` needs besides yt-dlp, found and checked without the network.

Current yt-dlp solves YouTube's JavaScript challenges with the ``yt-dlp-ejs``
scripts run by a JavaScript runtime. kprep's install brings both from PyPI
(``yt-dlp-ejs`` and ``deno``, whose wheel ships the ``deno`` binary), but the
binary lands in the environment's ``bin/`` folder, which is not on ``PATH``
when ``.venv/bin/kprep`` is run without activating the venv. So kprep finds the
runtime itself (:func:`find_js_runtime`) and hands its path to yt-dlp
(``js_runtimes``, see :func:`js_runtime_options`).

:func:`check_tools` is ``kprep doctor``: one row each for yt-dlp, the
challenge solver scripts, the JS runtime, ffmpeg and the cookies file, each
with the fix when it is missing.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Runtimes yt-dlp can use, in kprep's order of preference.
RUNTIMES = ("deno", "node", "bun")
FIX_RUNTIME = 'pip install "deno>=2.3" (kprep\'s install does this) or put deno/node on PATH'


@dataclass(frozen=True)
class JsRuntime:
    name: str  # yt-dlp's key: deno | node | bun
    path: str
    version: str
    supported: bool  # new enough for yt-dlp


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""  # one line: how to get it, when not ok


def _ytdlp_runtime_info(name: str, path: str) -> JsRuntime | None:
    """yt-dlp's own probe of a runtime (runs ``<path> --version``; offline)."""
    import yt_dlp  # noqa: F401 - registers the runtimes in yt_dlp.globals
    from yt_dlp.globals import supported_js_runtimes

    runtime_class = supported_js_runtimes.value.get(name)
    if runtime_class is None:
        return None
    info = runtime_class(path=path).info
    if info is None:
        return None
    return JsRuntime(name=name, path=info.path, version=info.version, supported=info.supported)


def _deno_from_pypi() -> str | None:
    try:
        from deno import find_deno_bin
    except ImportError:
        return None
    try:
        return find_deno_bin()
    except FileNotFoundError:
        return None


def find_js_runtime() -> JsRuntime | None:
    """The first usable runtime: the ``deno`` PyPI package's binary, then deno/node/bun on PATH."""
    candidates = [("deno", _deno_from_pypi())]
    candidates += [(name, shutil.which(name)) for name in RUNTIMES]
    fallback = None
    for name, path in candidates:
        if not path:
            continue
        runtime = _ytdlp_runtime_info(name, path)
        if runtime is not None and runtime.supported:
            return runtime
        fallback = fallback or runtime
    return fallback


@functools.cache
def _runtime_once() -> JsRuntime | None:
    return find_js_runtime()  # probing runs a subprocess: once per process, not per clip


def js_runtime_options(runtime: JsRuntime | None = None) -> dict[str, dict[str, str]]:
    """yt-dlp's ``js_runtimes`` option: the runtime found, by absolute path; {} if none."""
    runtime = runtime or _runtime_once()
    if runtime is None:
        return {}
    return {runtime.name: {"path": runtime.path}}


def _check_ytdlp() -> Check:
    try:
        from yt_dlp.version import __version__
    except ImportError:
        return Check("yt-dlp", False, "not installed", 'pip install -U "yt-dlp>=2025.11.12"')
    return Check("yt-dlp", True, __version__)


def _check_solver() -> Check:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return Check("challenge solver (yt-dlp-ejs)", True, version("yt-dlp-ejs"))
    except PackageNotFoundError:
        return Check(
            "challenge solver (yt-dlp-ejs)", False, "not installed", "pip install yt-dlp-ejs"
        )


def _check_runtime() -> Check:
    runtime = find_js_runtime()
    if runtime is None:
        return Check("JS runtime", False, "none found (deno, node, bun)", FIX_RUNTIME)
    detail = f"{runtime.name} {runtime.version} ({runtime.path})"
    if not runtime.supported:
        return Check("JS runtime", False, f"{detail}: too old for yt-dlp", FIX_RUNTIME)
    return Check("JS runtime", True, detail)


def _check_ffmpeg() -> Check:
    path = shutil.which("ffmpeg")
    fix = "install ffmpeg (apt-get install -y ffmpeg, brew install ffmpeg, conda install ffmpeg)"
    if path is None:
        return Check("ffmpeg", False, "not on PATH (yt-dlp cuts the segments with it)", fix)
    try:
        done = subprocess.run(
            [path, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return Check("ffmpeg", False, f"{path} does not run ({error})", fix)
    first = " ".join((done.stdout.splitlines() or ["?"])[0].split()[:3])
    return Check(
        "ffmpeg", done.returncode == 0, f"{first} ({path})", "" if done.returncode == 0 else fix
    )


def _check_cookies(cookies: Path | None) -> Check:
    from http.cookiejar import LoadError, MozillaCookieJar

    if cookies is None:
        return Check("cookies", True, "none given (optional: --cookies FILE for age-gated clips)")
    fix = (
        f"export a Netscape cookies.txt from a logged-in browser to {str(cookies)!r} "
        "(yt-dlp --cookies-from-browser firefox --cookies FILE)"
    )
    jar = MozillaCookieJar(str(cookies))
    try:
        jar.load(ignore_discard=True, ignore_expires=True)
    except FileNotFoundError:
        return Check("cookies", False, f"{str(cookies)!r} does not exist", fix)
    except (LoadError, OSError, UnicodeDecodeError) as error:
        return Check(
            "cookies", False, f"{str(cookies)!r} is not a Netscape cookies file ({error})", fix
        )
    youtube = sum(1 for c in jar if c.domain.lstrip(".").endswith("youtube.com"))
    if not youtube:
        return Check("cookies", False, f"{len(jar)} cookies, none for youtube.com", fix)
    return Check("cookies", True, f"{len(jar)} cookies, {youtube} for youtube.com ({cookies})")


def check_tools(cookies: str | Path | None = None) -> list[Check]:
    """One row per thing ``--source youtube`` needs; nothing here uses the network."""
    return [
        _check_ytdlp(),
        _check_solver(),
        _check_runtime(),
        _check_ffmpeg(),
        _check_cookies(Path(cookies) if cookies is not None else None),
    ]
