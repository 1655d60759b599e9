"""YouTube on a fresh machine: the install's deno is found and handed to yt-dlp (offline).

The runtime is probed by yt-dlp's own code (it runs ``deno --version``), so
these tests prove the binary from the ``deno`` PyPI package really runs, even
with an empty PATH (``.venv/bin/kprep`` run without activating the venv).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from deno import find_deno_bin
from typer.testing import CliRunner
from yt_dlp import YoutubeDL

from kinetics_prep.cli import app
from kinetics_prep.download import DownloadConfig, youtube_options
from kinetics_prep.youtube_tools import check_tools, find_js_runtime

YOUTUBE_COOKIE = ".youtube.com\tTRUE\t/\tTRUE\t0\tPREF\tf6=40000000\n"


def test_the_installed_deno_is_found_without_path(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    runtime = find_js_runtime()
    assert runtime is not None
    assert (runtime.name, runtime.path) == ("deno", find_deno_bin())
    assert runtime.supported, runtime


def test_youtube_options_hand_the_runtime_to_yt_dlp(tmp_path):
    config = DownloadConfig(annotations=tmp_path / "a.csv", output_dir=tmp_path)
    options = youtube_options(config, time_start=0.0, time_end=10.0, outtmpl="x.%(ext)s")
    assert options["js_runtimes"] == {"deno": {"path": find_deno_bin()}}
    with YoutubeDL(options) as ydl:
        info = ydl._js_runtimes["deno"].info  # yt-dlp's own probe of the path it was given
    assert info is not None and info.supported and info.path == find_deno_bin()


def test_doctor_reports_every_piece_in_one_table(tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n" + YOUTUBE_COOKIE)
    result = CliRunner().invoke(app, ["doctor", "--cookies", str(cookies)])
    assert result.exit_code == 0, result.output
    for name in ("yt-dlp", "yt-dlp-ejs", "JS runtime", "ffmpeg", "cookies"):
        assert name in result.output
    assert all(check.ok for check in check_tools(cookies))


def test_doctor_names_each_missing_piece_and_how_to_get_it(tmp_path, monkeypatch):
    # ffmpeg off PATH, a cookies file that is not one: two one-line errors, exit 2.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    assert shutil.which("ffmpeg") is None
    bad = tmp_path / "cookies.txt"
    bad.write_text("session=abc\n")
    result = CliRunner().invoke(app, ["doctor", "--cookies", str(bad)])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.output
    assert errors[0].startswith("error: ffmpeg: not on PATH") and "apt-get install" in errors[0]
    assert errors[1].startswith("error: cookies:") and "Netscape" in errors[1]
    checks = {check.name: check for check in check_tools(bad)}
    assert checks["JS runtime"].ok  # the package's deno needs no PATH
    assert not checks["ffmpeg"].ok and not checks["cookies"].ok
    assert not check_tools(Path(tmp_path / "missing.txt"))[-1].ok
