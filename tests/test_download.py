"""`kprep download` through the CLI, every source served from a loopback HTTP server.

Nothing here touches the internet: the youtube source is pointed (
``--url-template``) at synthetic clips on 127.0.0.1, which yt-dlp's generic
extractor downloads with its real section-download path (ffmpeg); the mirror
source reads tarballs (one malicious, one cut short mid-transfer, one 404) from
the same server; the local source reads a folder made in the test.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kinetics_prep.cli import app
from kinetics_prep.download import (
    DownloadConfig,
    DownloadConfigError,
    backoff_delays,
    classify_error,
    format_selector,
    match_clip_name,
    parse_mirror_list,
    parse_rate,
    shard_of,
    video_url,
    youtube_options,
)
from kinetics_prep.records import iter_records, read_latest

runner = CliRunner()

# Clip ids used throughout (11-character YouTube ids, one starting with '-').
GOOD = "-good_clip1"
GONE = "gone_clip_2"
BUSY = "busy_clip_3"


class LoopbackServer:
    """A tiny HTTP server with Range support, scripted failures and a request log."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.status: dict[str, int] = {}
        self.cut_once: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = self.path.split("?", 1)[0]
                wanted = self.headers.get("Range")
                server.requests.append((self.command, path, wanted))
                try:
                    if path in server.status:
                        self.send_error(server.status[path])
                        return
                    data = server.files.get(path)
                    if data is None:
                        self.send_error(404, "File not found")
                        return
                    start, end, code = 0, len(data) - 1, 200
                    match = re.match(r"bytes=(\d+)-(\d*)", wanted or "")
                    if match:
                        start = int(match[1])
                        end = min(int(match[2]), end) if match[2] else end
                        if start >= len(data):
                            self.send_response(416)
                            self.send_header("Content-Range", f"bytes */{len(data)}")
                            self.send_header("Content-Length", "0")
                            self.end_headers()
                            return
                        code = 206
                    chunk = data[start : end + 1]
                    self.send_response(code)
                    self.send_header(
                        "Content-Type", "video/mp4" if path.endswith(".mp4") else "application/gzip"
                    )
                    self.send_header("Accept-Ranges", "bytes")
                    self.send_header("Content-Length", str(len(chunk)))
                    if code == 206:
                        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                    self.end_headers()
                    if not body:
                        return
                    if self.command == "GET" and path in server.cut_once:
                        server.cut_once.discard(path)
                        self.wfile.write(chunk[: len(chunk) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def hits(self, path: str) -> int:
        return sum(1 for _, p, _ in self.requests if p == path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def counter_mp4(tmp_path_factory) -> bytes:
    """A 12 s, 25 fps counter clip: frame i shows i, so cuts can be checked exactly."""
    from kinetics_prep.synthetic import write_counter_clip

    path = tmp_path_factory.mktemp("src") / "counter.mp4"
    write_counter_clip(path, num_frames=300, width=192, height=144, gop=25)
    return path.read_bytes()


def write_csv(path: Path, rows: list[tuple[str, str, int, int, str]]) -> Path:
    lines = ["label,youtube_id,time_start,time_end,split"]
    lines += [f'"{label}",{yid},{start},{end},{split}' for label, yid, start, end, split in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def invoke(*args: str | Path):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def records(out: Path) -> dict[str, dict]:
    return read_latest(out / "download_results.jsonl")


def report(out: Path) -> dict:
    return json.loads((out / "download_report.json").read_text())


def first_frame_and_count(path: Path) -> tuple[int, int, float]:
    import av

    from kinetics_prep.synthetic import read_counter

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return read_counter(frames[0]), len(frames), len(frames) / 25.0


# --------------------------------------------------------------------------- pure helpers


# Real messages as yt-dlp prints them (YouTube's reasons, yt-dlp's own wording).
@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("ERROR: [youtube] 0wR5jVB-WPk: Private video. Sign in if you've been granted access to this video. Use --cookies-from-browser or --cookies for the authentication.", "private"),
        ("ERROR: [youtube] 0wR5jVB-WPk: Join this channel to get access to members-only content like this video, and other exclusive perks.", "private"),
        ("ERROR: [youtube] 0wR5jVB-WPk: Video unavailable", "removed"),
        ("ERROR: [youtube] 0wR5jVB-WPk: Video unavailable. This video has been removed by the uploader", "removed"),
        ("ERROR: [youtube] 0wR5jVB-WPk: Video unavailable. This video is no longer available because the YouTube account associated with this video has been terminated.", "removed"),
        ("ERROR: [youtube] 0wR5jVB-WPk: This video has been removed for violating YouTube's Terms of Service", "removed"),
        ("ERROR: [generic] gone_clip_2: Unable to download webpage: HTTP Error 404: File not found (caused by <HTTPError 404: File not found>)", "removed"),
        ("ERROR: [youtube] 0wR5jVB-WPk: Video unavailable. This video is no longer available due to a copyright claim by Sony Music", "copyright"),
        ("ERROR: [youtube] 0wR5jVB-WPk: Video unavailable. This video contains content from SME, who has blocked it on copyright grounds.", "copyright"),
        ("ERROR: [youtube] 0wR5jVB-WPk: The uploader has not made this video available in your country", "geo_blocked"),
        ("ERROR: [youtube] 0wR5jVB-WPk: This video is not available from your location due to geo restriction", "geo_blocked"),
        ("ERROR: [youtube] 0wR5jVB-WPk: Sign in to confirm your age. This video may be inappropriate for some users. Use --cookies-from-browser or --cookies for the authentication.", "age_gated"),
        ("ERROR: [youtube] 0wR5jVB-WPk: Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or --cookies for the authentication.", "rate_limited"),
        ("ERROR: unable to download video data: HTTP Error 429: Too Many Requests", "rate_limited"),
        ("ERROR: [youtube] 0wR5jVB-WPk: This content isn't available, try again later. The current session has been rate-limited by YouTube for up to an hour.", "rate_limited"),
        ("ERROR: [youtube] 0wR5jVB-WPk: Unable to download API page: <urlopen error [Errno -3] Temporary failure in name resolution> (caused by TransportError(...))", "network"),
        ("ERROR: [youtube] 0wR5jVB-WPk: Unable to download webpage: The read operation timed out (caused by TransportError('The read operation timed out'))", "network"),
        ("ERROR: unable to download video data: [Errno 104] Connection reset by peer", "network"),
        ("ERROR: [youtube] Zv09PB3YQAs: Unable to download API page: [Errno -2] Name or service not known (caused by TransportError('[Errno -2] Name or service not known'))", "network"),
        ("ERROR: [youtube] 0wR5jVB-WPk: Requested format is not available. Use --list-formats for a list of available formats", "other"),
        ("ERROR: ffmpeg exited with code 1", "other"),
    ],
)  # fmt: skip
def test_classify_error_on_real_messages(message, reason):
    assert classify_error(message) == reason


def test_classify_error_uses_exception_classes():
    from yt_dlp.networking.exceptions import HTTPError
    from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError

    geo = DownloadError(
        "ERROR: blocked", exc_info=(GeoRestrictedError, GeoRestrictedError("x"), None)
    )
    assert classify_error("ERROR: blocked", geo) == "geo_blocked"

    class Response:
        status = 429
        reason = "Too Many Requests"
        headers: dict = {}

        def close(self) -> None:
            pass

    err = HTTPError(Response())
    assert classify_error("something", err) == "rate_limited"
    wrapped = DownloadError(
        "ERROR: [generic] x: Unable to download webpage",
        exc_info=(ExtractorError, ExtractorError("Unable to download webpage", cause=err), None),
    )
    assert (
        classify_error("ERROR: [generic] x: Unable to download webpage", wrapped) == "rate_limited"
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [("500K", 512000), ("2M", 2097152), ("1.5M", 1572864), ("100000", 100000), ("1G", 1073741824), ("2MiB", 2097152)],
)  # fmt: skip
def test_parse_rate(text, value):
    assert parse_rate(text) == value


@pytest.mark.parametrize("bad", ["", "fast", "-1M", "0", "2X"])
def test_parse_rate_rejects(bad):
    with pytest.raises(ValueError, match="--rate-limit"):
        parse_rate(bad)


@pytest.mark.parametrize(
    ("height", "selector"),
    [
        (360, "bv*[height<=?360]+ba/b[height<=?360]/wv*+ba/w"),
        (240, "bv*[height<=?240]+ba/b[height<=?240]/wv*+ba/w"),
    ],
)
def test_format_selector(height, selector):
    assert format_selector(height) == selector


def test_youtube_options_carry_every_flag(tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n")
    config = DownloadConfig(
        annotations=tmp_path / "a.csv",
        output_dir=tmp_path,
        max_height=240,
        cookies=cookies,
        proxy="socks5://127.0.0.1:9050",
        rate_limit="1M",
        exact_cuts=False,
    )
    opts = youtube_options(config, time_start=17.0, time_end=27.0, outtmpl="x.%(ext)s")
    assert opts["format"] == format_selector(240)
    assert opts["format_sort"][0] == "res:240"
    assert opts["cookiefile"] == str(cookies)
    assert opts["proxy"] == "socks5://127.0.0.1:9050"
    assert opts["ratelimit"] == 1048576
    assert opts["force_keyframes_at_cuts"] is False
    ranges = list(opts["download_ranges"]({"duration": 60}, None))
    assert ranges == [{"start_time": 17.0, "end_time": 27.0}]


@pytest.mark.parametrize(
    ("youtube_id", "template", "url"),
    [
        ("--6bJUbfpnQ", None, "https://www.youtube.com/watch?v=--6bJUbfpnQ"),
        ("-good_clip1", "http://127.0.0.1:1/v/{youtube_id}.mp4", "http://127.0.0.1:1/v/-good_clip1.mp4"),
    ],
)  # fmt: skip
def test_video_url_is_always_a_full_url(youtube_id, template, url):
    assert video_url(youtube_id, template) == url
    assert not video_url(youtube_id, template).startswith("-")


def test_backoff_doubles():
    assert backoff_delays(3, 2.0) == [2.0, 4.0, 8.0]
    assert backoff_delays(0, 2.0) == []


def test_shard_of_is_stable_and_covers_all():
    ids = [f"abcdefghij{c}_000000_000010" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    shards = [shard_of(i, 3) for i in ids]
    assert shards == [shard_of(i, 3) for i in ids]
    assert set(shards) == {0, 1, 2}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("--6bJUbfpnQ_000017_000027.mp4", "--6bJUbfpnQ_000017_000027"),
        ("--6bJUbfpnQ_17_27.webm", "--6bJUbfpnQ_000017_000027"),
        ("0wR5jVB-WPk.mkv", "0wR5jVB-WPk_000417_000427"),
        ("dup_youtube.mp4", None),  # two wanted rows share this id: ambiguous
        ("--6bJUbfpnQ_000000_000010.mp4", None),
        ("notes.mp4", None),
    ],
)
def test_match_clip_name(name, expected):
    by_clip = dict.fromkeys(
        ["--6bJUbfpnQ_000017_000027", "0wR5jVB-WPk_000417_000427", "dup_youtube_000001_000011", "dup_youtube_000020_000030"]
    )  # fmt: skip
    by_youtube = {
        "--6bJUbfpnQ": "--6bJUbfpnQ_000017_000027",
        "0wR5jVB-WPk": "0wR5jVB-WPk_000417_000427",
    }
    assert match_clip_name(name, by_clip, by_youtube) == expected


def test_parse_mirror_list():
    digest = "a" * 64
    text = f"# K400 val\nhttps://m.example/k400/val/part_0.tar.gz {digest}\n\nhttps://m.example/part_1.tar.gz\n"
    assert parse_mirror_list(text) == [
        ("https://m.example/k400/val/part_0.tar.gz", digest),
        ("https://m.example/part_1.tar.gz", None),
    ]
    with pytest.raises(ValueError, match="line 1: 'ftp://x' is not an http"):
        parse_mirror_list("ftp://x\n")
    with pytest.raises(ValueError, match="line 1: 'zz' is not a sha256"):
        parse_mirror_list("https://m/a.tar.gz zz\n")


def test_config_collects_every_problem(tmp_path):
    with pytest.raises(DownloadConfigError) as info:
        DownloadConfig(
            annotations=tmp_path / "a.csv",
            output_dir=tmp_path / "out",
            source="local",
            workers=0,
            num_shards=2,
            shard_index=2,
            rate_limit="fast",
        )
    message = str(info.value)
    for part in ["--clips DIR", "--workers (0)", "--shard-index (2)", "--rate-limit ('fast')"]:
        assert part in message


# --------------------------------------------------------------------------- youtube source


def test_youtube_source_downloads_only_the_segment_and_classifies_failures(
    tmp_path, server, counter_mp4, ffmpeg
):
    server.files[f"/v/{GOOD}.mp4"] = counter_mp4
    server.status[f"/v/{BUSY}.mp4"] = 429
    csv = write_csv(
        tmp_path / "ann.csv",
        [("air drumming", GOOD, 2, 6, "val"), ("abseiling", GONE, 0, 10, "val"), ("abseiling", BUSY, 1, 5, "train")],
    )  # fmt: skip
    out = tmp_path / "out"
    args = ["download", "--annotations", csv, "--source", "youtube", "--output-dir", out]
    args += [
        "--url-template",
        f"{server.base}/v/{{youtube_id}}.mp4",
        "--retries",
        "2",
        "--backoff",
        "0",
    ]
    result = invoke(*args, "--workers", "2")
    assert result.exit_code == 0, result.output

    clip = out / "clips" / f"{GOOD}_000002_000006.mp4"
    first, count, seconds = first_frame_and_count(clip)
    assert abs(first - 50) <= 1  # frame 50 is t = 2.0 s: the cut is where asked
    assert 3.8 <= seconds <= 4.2  # only the 4 s segment came down, not the 12 s video
    assert clip.stat().st_size < len(counter_mp4)

    recs = records(out)
    assert set(recs) == {f"{GOOD}_000002_000006", f"{GONE}_000000_000010", f"{BUSY}_000001_000005"}
    good = recs[f"{GOOD}_000002_000006"]
    assert good["status"] == "ok" and good["reason"] is None
    assert good["path"] == f"clips/{GOOD}_000002_000006.mp4"
    assert good["bytes"] == clip.stat().st_size and good["label"] == "air drumming"
    assert (recs[f"{GONE}_000000_000010"]["status"], recs[f"{GONE}_000000_000010"]["reason"]) == (
        "failed",
        "removed",
    )
    busy = recs[f"{BUSY}_000001_000005"]
    assert (busy["reason"], busy["attempts"]) == ("rate_limited", 3)
    assert server.hits(f"/v/{BUSY}.mp4") == 3  # one try + two retries

    rep = report(out)
    assert (rep["requested"], rep["downloaded"], rep["failed"]) == (3, 1, 2)
    assert rep["per_split"]["val"]["failed_by_reason"] == {"removed": 1}
    assert rep["per_split"]["train"]["failed_by_reason"] == {"rate_limited": 1}
    assert "rate_limited" in result.output and "removed" in result.output
    assert json.loads((out / "label_map.json").read_text()) == {
        "labels": ["abseiling", "air drumming"]
    }
    assert not (out / ".partial").exists()  # per-clip work folders are cleaned up

    # A rerun skips every row: finished clips and known failures alike.
    before = len(server.requests)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert len(server.requests) == before
    assert len(list(iter_records(out / "download_results.jsonl"))) == 3

    # --retry-failed retries only the failures: the 404 is now served, the good clip untouched.
    server.files[f"/v/{GONE}.mp4"] = counter_mp4
    good_hits = server.hits(f"/v/{GOOD}.mp4")
    result = invoke(*args, "--retry-failed")
    assert result.exit_code == 0, result.output
    assert server.hits(f"/v/{GOOD}.mp4") == good_hits
    assert server.hits(f"/v/{GONE}.mp4") >= 1
    recs = records(out)
    assert recs[f"{GONE}_000000_000010"]["status"] == "ok"
    assert recs[f"{BUSY}_000001_000005"]["reason"] == "rate_limited"
    assert report(out)["downloaded"] == 2


def test_youtube_resume_trusts_renamed_clips_not_temp_files(tmp_path, server):
    """A clip renamed into place before the run was killed counts; a temp file does not."""
    csv = write_csv(tmp_path / "ann.csv", [("a", GOOD, 2, 6, "val"), ("b", GONE, 0, 10, "val")])
    out = tmp_path / "out"
    (out / "clips").mkdir(parents=True)
    (out / "clips" / f"{GOOD}_000002_000006.mp4").write_bytes(b"finished")
    (out / "clips" / f".{GONE}_000000_000010.mp4.77.tmp").write_bytes(b"half")
    (out / "download_results.jsonl").write_text(
        '{"clip_id": "x", "status": "ok"}\n{"clip_id": "trunc'
    )
    result = invoke(
        "download", "--annotations", csv, "--output-dir", out, "--retries", "0",
        "--url-template", f"{server.base}/v/{{youtube_id}}.mp4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert server.hits(f"/v/{GOOD}.mp4") == 0
    assert server.hits(f"/v/{GONE}.mp4") >= 1
    recs = records(out)
    assert recs[f"{GOOD}_000002_000006"]["status"] == "ok"
    assert recs[f"{GONE}_000000_000010"]["reason"] == "removed"


# --------------------------------------------------------------------------- mirror source


def make_tarball(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """``(name, data, symlink_target)`` members -> .tar.gz bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, target in members:
            info = tarfile.TarInfo(name)
            if target is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = target
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return buffer.getvalue()


def test_mirror_source_resumes_refuses_unsafe_members_and_reports_404(tmp_path, server):
    ids = {name: f"{name}_000010_000020" for name in ["mirrorclipA", "mirrorclipB", "mirrorclipC", "mirrorclipD", "mirrorclipE"]}  # fmt: skip
    outside = tmp_path / "outside"
    outside.mkdir()
    archive1 = make_tarball(
        [
            ("val/", None, None),
            (f"val/{ids['mirrorclipA']}.mp4", b"clip A" * 1000, None),
            (f"../{ids['mirrorclipB']}.mp4", b"evil", None),
            (f"{outside}/{ids['mirrorclipC']}.mp4", b"evil", None),
            (f"val/{ids['mirrorclipD']}.mp4", None, "/etc/passwd"),
            ("val/unrelated_000000_000010.mp4", b"not asked for", None),
        ]
    )
    archive2 = make_tarball([(f"part1/{ids['mirrorclipE']}.mp4", os.urandom(200_000), None)])
    server.files["/k400/val/part_0.tar.gz"] = archive1
    server.files["/k400/val/part_1.tar.gz"] = archive2
    server.cut_once.add("/k400/val/part_1.tar.gz")
    mirror = tmp_path / "urls.txt"
    mirror.write_text(
        f"{server.base}/k400/val/part_0.tar.gz {hashlib.sha256(archive1).hexdigest()}\n"
        f"{server.base}/k400/val/part_1.tar.gz\n"
        f"{server.base}/k400/val/part_404.tar.gz\n"
    )
    csv = write_csv(tmp_path / "ann.csv", [("a", name, 10, 20, "val") for name in ids])
    out = tmp_path / "data" / "out"
    args = ["download", "--annotations", csv, "--source", "mirror", "--mirror-urls", mirror]
    args += ["--output-dir", out, "--backoff", "0", "--retries", "2"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output

    clips = sorted(p.name for p in (out / "clips").iterdir())
    assert clips == [f"{ids['mirrorclipA']}.mp4", f"{ids['mirrorclipE']}.mp4"]
    assert (out / "clips" / f"{ids['mirrorclipE']}.mp4").read_bytes() == archive2_payload(archive2)
    # Nothing escaped: not beside the output, not at the absolute path, no link followed.
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "data" / f"{ids['mirrorclipB']}.mp4").exists()
    assert not any(p.name.endswith(".mp4") for p in (tmp_path / "data").iterdir())

    # The cut transfer resumed where it stopped, with a Range request.
    ranges = [r for m, p, r in server.requests if p == "/k400/val/part_1.tar.gz" and m == "GET"]
    assert ranges[0] is None and re.fullmatch(r"bytes=\d+-", ranges[1] or "")
    assert int(ranges[1][6:-1]) == len(archive2) // 2

    rep = report(out)
    by_url = {a["url"].rsplit("/", 1)[-1]: a for a in rep["archives"]}
    assert by_url["part_0.tar.gz"]["status"] == "ok"
    refused = {r["name"]: r["reason"] for r in by_url["part_0.tar.gz"]["refused"]}
    assert "OutsideDestinationError" in refused[f"../{ids['mirrorclipB']}.mp4"]
    assert refused[f"{outside}/{ids['mirrorclipC']}.mp4"] == "absolute path"
    assert "Link" in refused[f"val/{ids['mirrorclipD']}.mp4"]
    assert by_url["part_404.tar.gz"]["status"] == "failed"
    assert "HTTP 404" in by_url["part_404.tar.gz"]["error"]
    recs = records(out)
    assert [recs[ids[n]]["status"] for n in sorted(ids)] == [
        "ok",
        "failed",
        "failed",
        "failed",
        "ok",
    ]
    assert recs[ids["mirrorclipB"]]["reason"] == "archive_failed"  # part_404 might have held it
    assert not (out / "archives").exists() or list((out / "archives").iterdir()) == []

    # --retry-failed fetches only archives that may hold the missing clips.
    hits = {p: server.hits(p) for p in ["/k400/val/part_0.tar.gz", "/k400/val/part_1.tar.gz"]}
    result = invoke(*args, "--retry-failed")
    assert result.exit_code == 0, result.output
    assert {p: server.hits(p) for p in hits} == hits
    assert server.hits("/k400/val/part_404.tar.gz") >= 2


def archive2_payload(archive: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = tar.getmembers()[0]
        handle = tar.extractfile(member)
        assert handle is not None
        return handle.read()


def test_mirror_checksum_mismatch_fails_the_archive_and_rows_are_not_found_when_all_read(
    tmp_path, server
):
    good = make_tarball([("mirrorclipA_000010_000020.mp4", b"A" * 100, None)])
    bad = make_tarball([("mirrorclipB_000010_000020.mp4", b"B" * 100, None)])
    server.files["/a.tar.gz"] = good
    server.files["/b.tar.gz"] = bad
    mirror = tmp_path / "urls.txt"
    mirror.write_text(f"{server.base}/a.tar.gz\n{server.base}/b.tar.gz {'0' * 64}\n")
    csv = write_csv(
        tmp_path / "ann.csv",
        [("a", "mirrorclipA", 10, 20, "val"), ("b", "mirrorclipB", 10, 20, "val"), ("c", "mirrorclipC", 10, 20, "val")],
    )  # fmt: skip
    out = tmp_path / "out"
    args = ["download", "--annotations", csv, "--source", "mirror", "--mirror-urls", mirror]
    result = invoke(*args, "--output-dir", out, "--retries", "0")
    assert result.exit_code == 0, result.output
    rep = report(out)
    assert (
        "does not match"
        in next(a for a in rep["archives"] if a["url"].endswith("b.tar.gz"))["error"]
    )
    assert rep["failed_by_reason"] == {"archive_failed": 2}

    mirror.write_text(
        f"{server.base}/a.tar.gz\n{server.base}/b.tar.gz {hashlib.sha256(bad).hexdigest()}\n"
    )
    result = invoke(*args, "--output-dir", out, "--retry-failed")
    assert result.exit_code == 0, result.output
    recs = records(out)
    assert recs["mirrorclipB_000010_000020"]["status"] == "ok"
    assert recs["mirrorclipC_000010_000020"]["reason"] == "not_found"
    assert server.hits("/a.tar.gz") == 1


# --------------------------------------------------------------------------- local source


def test_local_source_matches_any_layout_and_links(tmp_path):
    src = tmp_path / "my_clips"
    (src / "abseiling" / "deep").mkdir(parents=True)
    (src / "abseiling" / "deep" / "0wR5jVB-WPk_000417_000427.mp4").write_bytes(b"a" * 10)
    (src / "--6bJUbfpnQ.mkv").write_bytes(b"b" * 20)
    (src / "3caPS4FHFF8_36_46.mp4").write_bytes(b"c" * 30)
    (src / "readme.txt").write_text("not a clip")
    csv = write_csv(
        tmp_path / "ann.csv",
        [
            ("abseiling", "0wR5jVB-WPk", 417, 427, "val"),
            ("eating nachos", "--6bJUbfpnQ", 17, 27, "train"),
            ("abseiling", "3caPS4FHFF8", 36, 46, "val"),
            ("abseiling", "3yaoNwz99xM", 62, 72, "val"),
        ],
    )
    out = tmp_path / "out"
    result = invoke(
        "download", "--annotations", csv, "--source", "local", "--clips", src, "--output-dir", out
    )
    assert result.exit_code == 0, result.output
    clips = out / "clips"
    assert sorted(p.name for p in clips.iterdir()) == [
        "--6bJUbfpnQ_000017_000027.mkv",
        "0wR5jVB-WPk_000417_000427.mp4",
        "3caPS4FHFF8_000036_000046.mp4",
    ]
    linked = clips / "0wR5jVB-WPk_000417_000427.mp4"
    assert linked.stat().st_ino == (src / "abseiling" / "deep" / linked.name).stat().st_ino
    recs = records(out)
    assert recs["3yaoNwz99xM_000062_000072"]["reason"] == "not_found"
    assert recs["--6bJUbfpnQ_000017_000027"]["bytes"] == 20
    rep = report(out)
    assert rep["per_split"] == {
        "train": {"requested": 1, "downloaded": 1, "failed": 0, "pending": 0, "failed_by_reason": {}},
        "val": {"requested": 3, "downloaded": 2, "failed": 1, "pending": 0, "failed_by_reason": {"not_found": 1}},
    }  # fmt: skip

    # The missing clip turns up: --retry-failed links it, copies when asked.
    (src / "3yaoNwz99xM_000062_000072.mp4").write_bytes(b"d")
    result = invoke(
        "download", "--annotations", csv, "--source", "local", "--clips", src,
        "--output-dir", out, "--retry-failed", "--link-mode", "copy",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    copied = clips / "3yaoNwz99xM_000062_000072.mp4"
    assert copied.read_bytes() == b"d"
    assert copied.stat().st_ino != (src / copied.name).stat().st_ino
    assert report(out)["downloaded"] == 4


def test_shards_split_the_rows_without_overlap(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for i in range(12):
        yid = f"shardclip{i:02d}"
        (src / f"{yid}_000000_000010.mp4").write_bytes(b"x")
        rows.append(("a", yid, 0, 10, "train"))
    csv = write_csv(tmp_path / "ann.csv", rows)
    out = tmp_path / "out"
    seen = []
    for shard in range(3):
        result = invoke(
            "download", "--annotations", csv, "--source", "local", "--clips", src,
            "--output-dir", out, "--num-shards", "3", "--shard-index", str(shard),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        seen.append({r["clip_id"] for r in iter_records(out / "download_results.jsonl")})
    assert len(seen[-1]) == 12
    assert seen[0] < seen[1] < seen[2]
    assert report(out)["downloaded"] == 12
    assert len(list(iter_records(out / "download_results.jsonl"))) == 12


def test_invalid_rows_become_records_once(tmp_path):
    csv = tmp_path / "ann.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "a,0wR5jVB-WPk,1,11,val\n"
        "a,../../etc/pw,1,11,val\n"
        "a,3caPS4FHFF8,9,1,val\n"
    )
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "out"
    for _ in range(2):
        result = invoke(
            "download",
            "--annotations",
            csv,
            "--source",
            "local",
            "--clips",
            src,
            "--output-dir",
            out,
        )
        assert result.exit_code == 0, result.output
    invalid = [
        r for r in iter_records(out / "download_results.jsonl") if r["reason"] == "invalid_row"
    ]
    assert [r["row"] for r in invalid] == [3, 4]
    assert "'../../etc/pw'" in invalid[0]["error"]
    assert report(out)["invalid_rows"] == 2
    assert "2 invalid annotation rows" in result.output
    assert not (tmp_path / "etc").exists()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source", "ftp"], "--source ('ftp') must be one of youtube, mirror, local"),
        (["--source", "local"], "--source local needs --clips DIR"),
        (["--source", "mirror"], "--source mirror needs --mirror-urls FILE"),
        (["--workers", "0"], "--workers (0) must be >= 1"),
        (["--num-shards", "2", "--shard-index", "5"], "--shard-index (5) must be in [0, 1]"),
        (
            ["--cookies", "/nonexistent/cookies.txt"],
            "--cookies ('/nonexistent/cookies.txt') is not a file",
        ),
    ],
)
def test_bad_flags_fail_with_one_line_and_touch_nothing(tmp_path, extra, message):
    csv = write_csv(tmp_path / "ann.csv", [("a", GOOD, 0, 10, "val")])
    out = tmp_path / "out"
    out.mkdir()
    (out / "download_results.jsonl").write_text('{"clip_id": "keep", "status": "ok"}\n')
    result = invoke("download", "--annotations", csv, "--output-dir", out, *extra)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert (out / "download_results.jsonl").read_text() == '{"clip_id": "keep", "status": "ok"}\n'


def test_missing_annotations_and_bad_mirror_list_are_one_line_errors(tmp_path):
    out = tmp_path / "out"
    result = invoke("download", "--annotations", tmp_path / "nope.csv", "--output-dir", out)
    assert result.exit_code == 2
    assert "not found: pass a Kinetics CSV or JSON" in " ".join(result.output.split())
    csv = write_csv(tmp_path / "ann.csv", [("a", GOOD, 0, 10, "val")])
    urls = tmp_path / "urls.txt"
    urls.write_text("not-a-url\n")
    result = invoke(
        "download",
        "--annotations",
        csv,
        "--output-dir",
        out,
        "--source",
        "mirror",
        "--mirror-urls",
        urls,
    )
    assert result.exit_code == 2
    assert "mirror list line 1: 'not-a-url' is not an http(s) URL" in " ".join(
        result.output.split()
    )


def test_mirror_shards_split_archives_and_a_final_pass_records_the_missing(tmp_path, server):
    for i in range(4):
        server.files[f"/p{i}.tar.gz"] = make_tarball(
            [(f"mirrorclip{i}_000000_000010.mp4", b"x" * 10, None)]
        )
    mirror = tmp_path / "urls.txt"
    mirror.write_text("".join(f"{server.base}/p{i}.tar.gz\n" for i in range(4)))
    csv = write_csv(tmp_path / "ann.csv", [("a", f"mirrorclip{i}", 0, 10, "val") for i in range(5)])
    out = tmp_path / "out"
    base = [
        "download",
        "--annotations",
        csv,
        "--source",
        "mirror",
        "--mirror-urls",
        mirror,
        "--output-dir",
        out,
    ]
    expected = [(2, 0, 3), (4, 1, 0)]  # the second shard sees every archive read: final
    for shard in range(2):
        result = invoke(*base, "--num-shards", "2", "--shard-index", str(shard))
        assert result.exit_code == 0, result.output
        rep = report(out)
        assert (rep["downloaded"], rep["failed"], rep["pending"]) == expected[shard]
    assert all(server.hits(f"/p{i}.tar.gz") == 1 for i in range(4))
    assert records(out)["mirrorclip4_000000_000010"]["reason"] == "not_found"
    result = invoke(*base, "--retry-failed")
    assert result.exit_code == 0, result.output
    assert all(server.hits(f"/p{i}.tar.gz") == 1 for i in range(4))  # nothing fetched again
    assert records(out)["mirrorclip4_000000_000010"]["reason"] == "not_found"


def test_readme_and_doc_commands_parse():
    """Every kprep subset/download/extract/build-manifest line in README.md and
    docs/download.md uses real flags."""
    import shlex

    import typer.main

    root = Path(__file__).resolve().parents[1]
    group = typer.main.get_command(app)
    lines = []
    for doc in [root / "README.md", root / "docs" / "download.md"]:
        text = doc.read_text().replace("\\\n", " ")
        lines += [
            m.strip()
            for m in re.findall(
                r"^(kprep (?:subset|download|extract|build-manifest) --.*)$", text, re.M
            )
        ]
        lines += [m.strip("`") for m in re.findall(r"`kprep subset [^`]*`", text)]
    assert len(lines) >= 7
    for line in lines:
        if "|" in line or "[" in line:
            continue  # the synopsis line, with alternatives
        argv = shlex.split(line)[1:]
        command = group.commands[argv[0]]  # type: ignore[attr-defined]
        command.make_context(argv[0], argv[1:])  # raises on an unknown flag or bad value


def test_downloaded_clips_feed_extract_with_annotations(tmp_path, make_counter_clip):
    """download (local) -> extract --annotations: labels, split and times reach the records."""
    src = tmp_path / "incoming"
    src.mkdir()
    make_counter_clip("incoming/--6bJUbfpnQ.mp4", num_frames=40)
    csv = write_csv(tmp_path / "ann.csv", [("hurling (sport)", "--6bJUbfpnQ", 17, 27, "validate")])
    out = tmp_path / "dataset"
    result = invoke(
        "download", "--annotations", csv, "--source", "local", "--clips", src, "--output-dir", out
    )
    assert result.exit_code == 0, result.output
    result = invoke(
        "extract",
        "--clips",
        out / "clips",
        "--output-dir",
        out,
        "--annotations",
        csv,
        "--workers",
        "1",
    )
    assert result.exit_code == 0, result.output
    extracted = read_latest(out / "extract_results.jsonl")["--6bJUbfpnQ_000017_000027"]
    assert extracted["status"] == "ok"
    assert (extracted["label"], extracted["split"], extracted["time_start"]) == (
        "hurling (sport)",
        "val",
        17.0,
    )
    assert json.loads((out / "label_map.json").read_text())["labels"] == ["hurling (sport)"]


# --------------------------------------------------------------------------- one suffix list


@pytest.mark.parametrize("suffix", [".m4v", ".3gp", ".flv", ".MP4"])
def test_every_clip_download_keeps_is_found_by_extract(tmp_path, counter_mp4, suffix):
    """Issue 10 bug 2: download kept .m4v/.flv/.3gp clips that extract never found."""
    from kinetics_prep.extract import find_clips
    from kinetics_prep.schema import VIDEO_SUFFIXES

    src = tmp_path / "my_clips"
    src.mkdir()
    # the container format is probed from the bytes, the suffix only selects the file
    (src / f"0wR5jVB-WPk_000417_000427{suffix}").write_bytes(counter_mp4)
    csv = write_csv(tmp_path / "ann.csv", [("abseiling", "0wR5jVB-WPk", 417, 427, "val")])
    out = tmp_path / "out"
    result = invoke(
        "download", "--annotations", csv, "--source", "local", "--clips", src, "--output-dir", out
    )
    assert result.exit_code == 0, result.output
    kept = [r for r in records(out).values() if r["status"] == "ok"]
    assert [Path(r["path"]).suffix for r in kept] == [suffix.lower()]
    assert suffix.lower() in VIDEO_SUFFIXES
    assert [c.clip_id for c in find_clips(out / "clips")] == ["0wR5jVB-WPk_000417_000427"]
    frames = tmp_path / "frames"
    result = invoke("extract", "--clips", out / "clips", "--output-dir", frames, "--workers", "1")
    assert result.exit_code == 0, result.output
    extracted = read_latest(frames / "extract_results.jsonl")
    assert {k: v["status"] for k, v in extracted.items()} == {"0wR5jVB-WPk_000417_000427": "ok"}


def test_mirror_rejects_a_clip_named_right_with_a_suffix_extract_cannot_read(tmp_path, server):
    wanted = "mirrorclipA_000010_000020"
    archive = make_tarball([(f"val/{wanted}.txt", b"not a video", None)])
    server.files["/k400/val/part_0.tar.gz"] = archive
    mirror = tmp_path / "urls.txt"
    mirror.write_text(f"{server.base}/k400/val/part_0.tar.gz\n")
    csv = write_csv(tmp_path / "ann.csv", [("abseiling", "mirrorclipA", 10, 20, "val")])
    out = tmp_path / "out"
    result = invoke(
        "download", "--annotations", csv, "--source", "mirror", "--mirror-urls", mirror,
        "--output-dir", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = records(out)[wanted]
    assert record["status"] == "failed" and record["reason"] == "unsupported_format"
    assert f"{wanted}.txt" in record["error"]
    assert not list((out / "clips").iterdir())
