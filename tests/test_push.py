"""`kprep push`: the dry run loads with `datasets`; a real push is tested at the HfApi boundary.

Nothing leaves the machine: ``huggingface_hub.HfApi`` is replaced by a recorder
that copies what would be uploaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

pytest.register_assert_rewrite("manifest_data", "fake_hub")
from fake_hub import listing  # noqa: E402
from manifest_data import OK_CLIPS, counters, invoke  # noqa: E402

from kinetics_prep.hub import size_category  # noqa: E402

pytest_plugins = ["manifest_data", "fake_hub"]  # fixtures: fresh_root, fake_hub

TOKEN = "hf_TestTokenThatMustNeverBePrinted123"


@pytest.fixture
def arrow(fresh_root: Path) -> Path:
    invoke(
        "build-manifest", "--frames-dir", fresh_root, "--output", fresh_root / "kinetic_3K.json",
        "--val-fraction", "0.3", "--images", "paths",
    )  # fmt: skip
    return fresh_root / "kinetic_3K_arrow"


def test_dry_run_writes_parquet_and_card_that_load(arrow, tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    out = tmp_path / "upload"
    result = invoke("push", arrow, "me/kinetics-mini", "--dry-run", out)
    assert "dry run" in result.output
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet",
    ]
    local = datasets.load_from_disk(str(arrow))
    pushed = datasets.load_dataset(str(out))  # resolves splits through the card's `configs`
    assert {s: len(d) for s, d in pushed.items()} == {s: len(d) for s, d in local.items()}
    assert pushed["train"].features == local["train"].features
    for split in local:
        assert pushed[split]["id"] == local[split]["id"]
        raw = pushed[split].with_format("arrow")["images"].to_pylist()
        # embedded: bytes in the parquet, no path of this machine
        assert all(i["bytes"] and "/" not in i["path"] for row in raw for i in row)
        for row, frame_indices in zip(pushed[split], local[split]["frame_indices"], strict=True):
            assert counters(row["images"]) == frame_indices

    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0"
    assert data["task_categories"] == ["video-classification", "image-text-to-text"]
    assert data["size_categories"] == ["n<1K"]
    assert data["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*"},
        {"split": "validation", "path": "data/validation-*"},
    ]
    splits = {s["name"]: s["num_examples"] for s in data["dataset_info"]["splits"]}
    assert splits == {s: len(d) for s, d in local.items()}
    names = [f["name"] for f in data["dataset_info"]["features"]]
    assert names[:5] == ["id", "messages", "images", "video", "label"]
    text = card.text
    assert "| abseiling |" in text and "| tai chi |" in text  # counts per class
    assert "extract failed" in text  # failures by reason, from the build report
    assert "Terms of Service" in text and "@article{kay2017kinetics" in text
    assert "CC BY 4.0" in text and "uploaders' rights" in text  # the licence split
    assert "kprep" in data["tags"]  # the marker a later push recognises
    assert f"samples built: {OK_CLIPS}" in text


def test_dry_run_refuses_a_non_empty_folder_and_bad_repo_ids(arrow, tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = invoke("push", arrow, "me/x", "--dry-run", out, ok=False)
    assert result.exit_code == 2 and "not empty" in result.output
    assert (out / "keep.txt").read_text() == "mine"
    result = invoke("push", arrow, "no-namespace", "--dry-run", tmp_path / "n", ok=False)
    assert result.exit_code == 2 and "user-or-org/repo-name" in result.output
    result = invoke("push", tmp_path, "me/x", "--dry-run", tmp_path / "m", ok=False)
    assert result.exit_code == 2 and "neither a saved Arrow dataset" in " ".join(
        result.output.split()
    )


def test_push_to_a_new_repo_makes_it_private_and_uploads_what_the_dry_run_shows(
    arrow, tmp_path, fake_hub, caplog
):
    caplog.set_level(logging.DEBUG)
    result = invoke("push", arrow, "me/kinetics-mini", "--token", TOKEN)
    assert "pushed train" in result.output and "me/kinetics-mini" in result.output
    assert "(private)" in result.output  # read back from the Hub after the push
    assert fake_hub.kinds() == ["init", "repo_info", "create_repo", "upload_folder", "repo_info"]
    assert fake_hub.call("init") == {"token": TOKEN, "library_name": "kprep"}
    assert fake_hub.call("create_repo") == {
        "repo_id": "me/kinetics-mini", "repo_type": "dataset", "private": True, "exist_ok": False
    }  # fmt: skip
    upload = fake_hub.call("upload_folder")
    assert upload["repo_type"] == "dataset" and upload["repo_id"] == "me/kinetics-mini"
    assert upload["delete_patterns"] is None  # a new repo: nothing to delete
    dry = tmp_path / "dry"
    invoke("push", arrow, "me/kinetics-mini", "--dry-run", dry)
    assert listing(fake_hub.uploaded) == listing(dry)
    assert (fake_hub.uploaded / "README.md").read_text() == (dry / "README.md").read_text()
    assert not Path(upload["folder_path"]).exists()  # the staging folder is cleaned up
    assert not [p for p in arrow.parent.iterdir() if p.name.startswith(".kprep-push-")]
    assert TOKEN not in result.output
    assert TOKEN not in caplog.text
    assert TOKEN not in (fake_hub.uploaded / "README.md").read_text()


def test_public_is_an_explicit_choice(arrow, fake_hub):
    result = invoke("push", arrow, "me/kinetics-mini", "--public")
    assert fake_hub.call("create_repo")["private"] is False
    assert "(public)" in result.output


@pytest.mark.parametrize(
    "flags, private_after, settings",
    [([], False, None), (["--private"], True, True), (["--public"], False, None)],
)
def test_existing_kprep_repo_is_replaced_and_gets_the_visibility_asked_for(
    arrow, fake_hub, flags, private_after, settings
):
    fake_hub.add_repo(
        "dataset", "me/k", private=False, tags=["kinetics", "kprep"],
        files=[".gitattributes", "README.md", "data/train-00000-of-00003.parquet"],
    )  # fmt: skip
    result = invoke("push", arrow, "me/k", *flags)
    assert "create_repo" not in fake_hub.kinds()
    if settings is None:
        assert "update_repo_settings" not in fake_hub.kinds()  # kept as it was
    else:
        assert fake_hub.call("update_repo_settings") == {
            "repo_id": "me/k", "repo_type": "dataset", "private": settings
        }  # fmt: skip
    # its own stale shards (another shard count) go in the same commit; nothing else does
    assert fake_hub.call("upload_folder")["delete_patterns"] == ["data/*-?????-of-?????.parquet"]
    assert f"({'private' if private_after else 'public'})" in result.output


def test_a_repo_kprep_did_not_create_is_refused_without_overwrite(arrow, fake_hub):
    fake_hub.add_repo(
        "dataset", "them/data", private=False, tags=["images"],
        files=[".gitattributes", "README.md", "data/train.parquet"],
    )  # fmt: skip
    result = invoke("push", arrow, "them/data", "--private", ok=False)
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "kprep did not write" in message and "--overwrite" in message
    assert fake_hub.kinds() == ["init", "repo_info"]  # nothing created, changed or uploaded

    fake_hub.calls.clear()
    result = invoke("push", arrow, "them/data", "--overwrite")
    assert fake_hub.kinds() == ["init", "repo_info", "upload_folder", "repo_info"]
    assert fake_hub.call("upload_folder")["delete_patterns"] == ["data/*-?????-of-?????.parquet"]
    assert "(public)" in result.output  # its visibility is reported, not changed


def test_an_empty_existing_repo_is_used_without_deleting_anything(arrow, fake_hub):
    fake_hub.add_repo("dataset", "me/new", private=True, tags=None, files=[".gitattributes"])
    invoke("push", arrow, "me/new")
    assert fake_hub.kinds() == ["init", "repo_info", "upload_folder", "repo_info"]
    assert fake_hub.call("upload_folder")["delete_patterns"] is None


@pytest.mark.parametrize(
    "name, deleted",
    [("data/train-00000-of-00003.parquet", True), ("data/validation-00002-of-00010.parquet", True),
     ("data/mine.parquet", False), ("README.md", False), ("data/train.parquet", False)],
)  # fmt: skip
def test_delete_patterns_match_only_the_shards_kprep_writes(name, deleted):
    from huggingface_hub.utils import filter_repo_objects

    from kinetics_prep.publish import DELETE_PATTERNS

    kept = list(filter_repo_objects([name], allow_patterns=DELETE_PATTERNS["dataset"]))
    assert (kept == [name]) is deleted


def test_token_from_env_and_failures_are_scrubbed(arrow, fake_hub, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fake_hub.fail_with = PermissionError(f"401 Unauthorized for token {TOKEN}\nmore lines")
    result = invoke("push", arrow, "me/kinetics-mini", ok=False)
    assert result.exit_code == 2
    assert fake_hub.call("init")["token"] == TOKEN  # taken from HF_TOKEN
    assert "push to 'me/kinetics-mini' failed" in result.output
    assert "401 Unauthorized for token ***" in result.output
    assert "hf auth login" in result.output
    assert TOKEN not in result.output and TOKEN not in caplog.text
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    "rows, expected",
    [(0, "n<1K"), (999, "n<1K"), (3000, "1K<n<10K"), (545_317, "100K<n<1M"), (10**9, "n>100M")],
)
def test_size_category(rows, expected):
    assert size_category(rows) == expected


def test_push_help_does_not_show_an_env_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = invoke("push", "--help")
    assert TOKEN not in result.output and "Never printed" in " ".join(result.output.split())


def test_card_counts_come_from_the_build_report(arrow, tmp_path):
    report = json.loads((arrow / "kprep_build.json").read_text())
    out = tmp_path / "u"
    invoke("push", arrow, "me/x", "--dry-run", out)
    text = (out / "README.md").read_text()
    for reason, count in report["left_out"].items():
        assert f"| {reason} | {count} |" in text


def test_missing_frame_in_paths_mode_is_a_one_line_error(arrow, tmp_path):
    import datasets

    ds = datasets.load_from_disk(str(arrow))["train"]
    Path(ds.with_format("arrow")["images"].to_pylist()[0][0]["path"]).unlink()
    result = invoke("push", arrow, "me/x", "--dry-run", tmp_path / "u", ok=False)
    assert result.exit_code == 2
    assert "cannot embed the train images" in result.output and "kprep validate" in result.output


def test_zero_byte_frame_is_a_one_line_error_and_leaves_no_dry_run_folder(arrow, tmp_path):
    """Issue 12: a 0-byte frame (paths mode) -> one line, exit 2, no half-written folder."""
    import datasets

    ds = datasets.load_from_disk(str(arrow))["train"]
    Path(ds.with_format("arrow")["images"].to_pylist()[0][0]["path"]).write_bytes(b"")
    out = tmp_path / "u"
    result = invoke("push", arrow, "me/x", "--dry-run", out, ok=False)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "kprep validate" in result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".u")]
