"""kprep replaces only what it wrote, and build-manifest's outputs change as one set.

Uses the real extract output of tests/manifest_data.py. A kill is simulated by
making one step of the build raise (before and after its commit point).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.register_assert_rewrite("manifest_data")
from manifest_data import invoke  # noqa: E402

from kinetics_prep import outputs  # noqa: E402
from kinetics_prep.outputs import recover_output_set  # noqa: E402

pytest_plugins = ["manifest_data"]  # fixtures: extracted_root, fresh_root

STEM = "kinetic_3K"


def build(root: Path, *args, ok: bool = True):
    return invoke(
        "build-manifest", "--frames-dir", root, "--output", root / f"{STEM}.json", *args, ok=ok
    )


def snapshot(root: Path) -> dict[str, bytes]:
    """Every build output (files, and the files of the Arrow folder) by relative path."""
    names = [f"{STEM}.json", f"{STEM}.train.json", f"{STEM}.validation.json", "label_map.json",
             f"{STEM}.report.json"]  # fmt: skip
    found = {n: (root / n).read_bytes() for n in names if (root / n).is_file()}
    arrow = root / f"{STEM}_arrow"
    if arrow.is_dir():
        for path in sorted(arrow.rglob("*")):
            if path.is_file():
                found[str(path.relative_to(root))] = path.read_bytes()
    return found


def test_a_build_killed_before_its_commit_leaves_the_previous_set(fresh_root, monkeypatch):
    build(fresh_root, "--val-fraction", "0.3")
    before = snapshot(fresh_root)
    assert f"{STEM}.train.json" in before

    from kinetics_prep import arrow

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the Arrow write is the slowest step: killed there

    monkeypatch.setattr(arrow, "write_arrow_dataset", killed)
    with pytest.raises(KeyboardInterrupt):
        from kinetics_prep.manifest import ManifestConfig, build_manifest

        build_manifest(
            ManifestConfig(
                frames_dir=fresh_root, output=fresh_root / f"{STEM}.json", prompts=["Other?"]
            )
        )
    assert snapshot(fresh_root) == before  # manifest, splits, label map, Arrow, report
    assert not list(fresh_root.glob(f".{STEM}.*"))  # the staging folder is gone too


def test_a_build_killed_after_its_commit_is_finished_by_the_next_run(fresh_root, monkeypatch):
    build(fresh_root, "--val-fraction", "0.3")
    real = outputs.replace_path
    calls = []

    def dies_on_second(new, final):
        calls.append(final)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(new, final)

    monkeypatch.setattr(outputs, "replace_path", dies_on_second)
    result = build(fresh_root, "--prompt", "Other?", ok=False)  # no --val-fraction: splits go
    assert result.exit_code == 130  # CliRunner's exit code for KeyboardInterrupt
    monkeypatch.setattr(outputs, "replace_path", real)
    # A mix on disk right now; the commit record says what the new set is.
    assert recover_output_set(fresh_root, STEM) == "rolled forward"
    manifest = json.loads((fresh_root / f"{STEM}.json").read_text())
    assert {e["messages"][0]["content"][-1]["text"] for e in manifest} == {"Other?"}
    report = json.loads((fresh_root / f"{STEM}.report.json").read_text())
    assert report["config"]["prompts"] == ["Other?"]
    assert not (fresh_root / f"{STEM}.train.json").exists()
    assert not (fresh_root / f"{STEM}.validation.json").exists()
    from datasets import load_from_disk

    assert len(load_from_disk(str(fresh_root / f"{STEM}_arrow"))["train"]) == len(manifest)
    assert not list(fresh_root.glob(f".{STEM}.*")) and not list(fresh_root.glob(".*.old-*"))


def test_a_manifest_path_holding_a_users_file_is_refused(fresh_root):
    mine = fresh_root / f"{STEM}.json"
    mine.write_text("my notes\n")
    result = build(fresh_root, ok=False)
    assert result.exit_code == 2
    assert "kprep did not write it" in result.output and "--output" in result.output
    assert mine.read_text() == "my notes\n"
    assert not (fresh_root / f"{STEM}_arrow").exists()


def test_an_arrow_path_holding_a_users_folder_is_refused(fresh_root):
    theirs = fresh_root / f"{STEM}_arrow"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("mine\n")
    result = build(fresh_root, ok=False)
    assert result.exit_code == 2
    assert "kprep did not write" in result.output and "--no-arrow" in result.output
    assert (theirs / "keep.txt").read_text() == "mine\n"
    assert not (fresh_root / f"{STEM}.json").exists()  # refused before writing anything
    build(fresh_root, "--no-arrow")  # the way out the message names
    assert (theirs / "keep.txt").read_text() == "mine\n"


def test_rebuild_removes_only_split_files_kprep_wrote(fresh_root):
    build(fresh_root, "--val-fraction", "0.3")
    build(fresh_root)  # no --val-fraction: kprep's stale split files go
    assert not (fresh_root / f"{STEM}.train.json").exists()
    users = fresh_root / f"{STEM}.validation.json"
    users.write_text("[]\n")  # now the user's own file under that name
    build(fresh_root)
    assert users.read_text() == "[]\n"


def test_kprep_rebuilds_its_own_outputs(fresh_root):
    build(fresh_root, "--val-fraction", "0.3")
    build(fresh_root, "--val-fraction", "0.3", "--prompt", "Again?")
    assert (fresh_root / f"{STEM}_arrow" / outputs.MARKER_NAME).is_file()
    report = json.loads((fresh_root / f"{STEM}.report.json").read_text())
    assert report["config"]["prompts"] == ["Again?"]


def test_videos_outside_the_image_root_stay_references(fresh_root, tmp_path):
    """--media video may point anywhere; the dataset and a push carry only the path."""
    output = tmp_path / "elsewhere" / "m.json"
    invoke("build-manifest", "--frames-dir", fresh_root, "--output", output, "--media", "video")
    entries = json.loads(output.read_text())
    videos = [e["messages"][0]["content"][0]["video"] for e in entries]
    assert all(v.startswith("../") for v in videos)  # outside the image root
    staged = tmp_path / "staged"
    invoke("push", output.with_name("m_arrow"), "me/kinetics", "--dry-run", staged)
    clip = (output.parent / videos[0]).resolve().read_bytes()
    probe = clip[len(clip) // 2 : len(clip) // 2 + 64]  # compressed video data
    for path in [*output.parent.rglob("*"), *staged.rglob("*")]:
        if path.is_file():
            assert probe not in path.read_bytes(), path


def test_a_rebuild_from_another_working_directory_still_owns_its_outputs(fresh_root, monkeypatch):
    """The report may list relative paths; ownership does not depend on the cwd."""
    monkeypatch.chdir(fresh_root.parent)
    invoke("build-manifest", "--frames-dir", "ds", "--output", f"ds/{STEM}.json")
    monkeypatch.chdir(fresh_root)
    invoke("build-manifest", "--frames-dir", ".", "--output", f"{STEM}.json")
