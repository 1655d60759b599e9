"""Download hygiene: the user's cookie file is never written; mirror lists are
http(s) only unless --allow-file-urls; archives and members are size-capped,
downloads have a deadline, refusals are bounded; no crash without
tarfile.data_filter; every row keeps a status record.

Served from the loopback server of tests/test_download.py (no internet).
"""

from __future__ import annotations

import os
import tarfile

import pytest
from test_download import (
    GOOD,
    LoopbackServer,
    invoke,
    make_tarball,
    records,
    report,
    write_csv,
)

from kinetics_prep.download import parse_mirror_list


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def counter_mp4(tmp_path_factory) -> bytes:
    from kinetics_prep.synthetic import write_counter_clip

    path = tmp_path_factory.mktemp("clip") / "c.mp4"
    return write_counter_clip(path, num_frames=100, width=96, height=64).read_bytes()


COOKIES = (
    "# Netscape HTTP Cookie File\n"
    "127.0.0.1\tFALSE\t/\tFALSE\t4102444800\tsession\tkeep-me\n"
)


def test_the_users_cookie_file_is_never_written(tmp_path, server, counter_mp4):
    """yt-dlp saves cookies on close; with 3 workers each must use its own copy."""
    ids = [GOOD, "other_clip1", "third_clip1"]
    for youtube_id in ids:
        server.files[f"/v/{youtube_id}.mp4"] = counter_mp4
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(COOKIES)
    os.chmod(cookies, 0o600)
    before = (cookies.read_bytes(), cookies.stat().st_mtime_ns)
    csv = write_csv(tmp_path / "a.csv", [("abseiling", y, 1, 3, "val") for y in ids])
    out = tmp_path / "out"
    result = invoke(
        "download", "--annotations", csv, "--output-dir", out, "--workers", "3",
        "--cookies", cookies, "--url-template", f"{server.base}/v/{{youtube_id}}.mp4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {r["status"] for r in records(out).values()} == {"ok"}
    assert (cookies.read_bytes(), cookies.stat().st_mtime_ns) == before
    assert not (out / ".partial").exists()  # the private copies went with the work folders


def test_file_urls_need_the_explicit_flag(tmp_path):
    archive = tmp_path / "part_0.tar.gz"
    archive.write_bytes(make_tarball([(f"{GOOD}_000001_000003.mp4", b"x" * 100, None)]))
    with pytest.raises(ValueError, match="pass --allow-file-urls"):
        parse_mirror_list(f"file://{archive}\n")
    assert parse_mirror_list(f"file://{archive}\n", allow_file=True) == [(f"file://{archive}", None)]
    urls = tmp_path / "urls.txt"
    urls.write_text(f"file://{archive}\n")
    csv = write_csv(tmp_path / "a.csv", [("abseiling", GOOD, 1, 3, "val")])
    args = ["download", "--annotations", csv, "--source", "mirror", "--mirror-urls", urls]
    refused = invoke(*args, "--output-dir", tmp_path / "o1")
    assert refused.exit_code == 2 and "--allow-file-urls" in refused.output
    assert not (tmp_path / "o1").exists()
    allowed = invoke(*args, "--output-dir", tmp_path / "o2", "--allow-file-urls")
    assert allowed.exit_code == 0, allowed.output
    assert records(tmp_path / "o2")[f"{GOOD}_000001_000003"]["status"] == "ok"


def mirror_args(tmp_path, server, archives: dict[str, bytes], rows):
    for name, data in archives.items():
        server.files[f"/m/{name}"] = data
    tmp_path.mkdir(parents=True, exist_ok=True)
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{server.base}/m/{name}\n" for name in archives))
    csv = write_csv(tmp_path / "a.csv", [("abseiling", y, 10, 20, "val") for y in rows])
    out = tmp_path / "out"
    args = ["download", "--annotations", csv, "--source", "mirror", "--mirror-urls", urls]
    return [*args, "--output-dir", out, "--backoff", "0", "--retries", "1"], out


def test_archive_size_cap_and_deadline_fail_the_archive_and_every_row_is_recorded(
    tmp_path, server
):
    rows = ["capped_clip", "slowly_clip"]
    big = make_tarball([(f"{rows[0]}_000010_000020.mp4", os.urandom(50_000), None)])
    slow = make_tarball([(f"{rows[1]}_000010_000020.mp4", os.urandom(1_000), None)])
    args, out = mirror_args(tmp_path, server, {"big.tar.gz": big}, rows)
    result = invoke(*args, "--max-archive-gb", "0.00002")  # 20 kB
    assert result.exit_code == 0, result.output
    (archive,) = report(out)["archives"]
    assert archive["status"] == "failed" and "--max-archive-gb" in archive["error"]
    assert {k: r["reason"] for k, r in records(out).items()} == {
        f"{rows[0]}_000010_000020": "archive_failed",
        f"{rows[1]}_000010_000020": "archive_failed",
    }
    assert not list((out / "archives").glob("*")) if (out / "archives").exists() else True

    args, out = mirror_args(tmp_path / "t", server, {"slow.tar.gz": slow}, rows)
    result = invoke(*args, "--archive-timeout", "0.000001")
    assert result.exit_code == 0, result.output
    (archive,) = report(out)["archives"]
    assert archive["status"] == "failed" and "--archive-timeout" in archive["error"]
    assert len(records(out)) == 2


def test_member_cap_and_a_bounded_refused_list(tmp_path, server):
    rows = ["hugemember1", "finemember1"]
    members = [(f"{rows[0]}_000010_000020.mp4", os.urandom(30_000), None),
               (f"{rows[1]}_000010_000020.mp4", b"ok" * 100, None)]  # fmt: skip
    members += [(f"../escape_{i}.mp4", b"evil", None) for i in range(120)]
    args, out = mirror_args(tmp_path, server, {"p.tar.gz": make_tarball(members)}, rows)
    result = invoke(*args, "--max-member-mb", "0.01")  # 10 kB
    assert result.exit_code == 0, result.output
    (archive,) = report(out)["archives"]
    assert archive["status"] == "ok"
    assert archive["refused_count"] == 121 and len(archive["refused"]) == 50
    recs = records(out)
    assert recs[f"{rows[1]}_000010_000020"]["status"] == "ok"
    huge = recs[f"{rows[0]}_000010_000020"]
    assert huge["reason"] == "too_large" and "--max-member-mb" in huge["error"]


def test_without_tarfile_data_filter_unsafe_members_are_still_refused(
    tmp_path, server, monkeypatch
):
    """Python < 3.11.4 has no tarfile.data_filter: same refusals, no crash mid-run."""
    monkeypatch.delattr(tarfile, "data_filter")
    rows = ["safe_member", "link_member"]
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = make_tarball(
        [
            (f"val/{rows[0]}_000010_000020.mp4", b"A" * 1000, None),
            ("../escaped_000010_000020.mp4", b"evil", None),
            (f"val/{rows[1]}_000010_000020.mp4", None, "/etc/passwd"),
        ]
    )
    args, out = mirror_args(tmp_path, server, {"p.tar.gz": archive}, rows)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    (summary,) = report(out)["archives"]
    reasons = {r["name"]: r["reason"] for r in summary["refused"]}
    assert "OutsideDestination" in reasons["../escaped_000010_000020.mp4"]
    assert "Link" in reasons[f"val/{rows[1]}_000010_000020.mp4"]
    recs = records(out)
    assert recs[f"{rows[0]}_000010_000020"]["status"] == "ok"
    assert recs[f"{rows[1]}_000010_000020"]["status"] == "failed"
    assert not (tmp_path / "escaped_000010_000020.mp4").exists()
    assert (out / "clips" / f"{rows[0]}_000010_000020.mp4").read_bytes() == b"A" * 1000
