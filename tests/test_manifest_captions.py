"""`kprep build-manifest --captions`: caption answers on real extract output (manifest_data)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

pytest.register_assert_rewrite("manifest_data")
from manifest_data import OK_CLIPS, invoke, label_of  # noqa: E402

from kinetics_prep.captions import choose_caption  # noqa: E402

pytest_plugins = ["manifest_data"]  # fixtures: extracted_root, fresh_root


def captions_file(tmp_path, skip: int = 2):
    """Captions for all but ``skip`` of the usable clips, as a {clip_id: [captions]} file."""
    ids = sorted(label_of())
    caps = {cid: [f"Caption {k} of {cid}." for k in range(5)] for cid in ids[skip:]}
    path = tmp_path / "caps.json"
    path.write_text(json.dumps(caps))
    return path, caps


@pytest.mark.parametrize("mode", ["first", "random", "all"])
def test_caption_modes(fresh_root, tmp_path, mode):
    path, caps = captions_file(tmp_path)
    out = fresh_root / "kinetic_3K.json"
    result = invoke(
        "build-manifest", "--frames-dir", fresh_root, "--output", out,
        "--captions", path, "--caption", mode, "--seed", "3",
    )  # fmt: skip
    assert "no caption in --captions" in result.output
    entries = json.loads(out.read_text())
    assert len(entries) == OK_CLIPS - 2
    report = json.loads(out.with_name("kinetic_3K.report.json").read_text())
    assert report["left_out"]["no caption in --captions"] == 2
    assert report["config"]["caption"] == mode
    for entry in entries:
        answer = entry["messages"][1]["content"][0]["text"]
        mine = caps[entry["id"]]
        assert answer == choose_caption(mine, mode=mode, seed=3, sample_id=entry["id"])
        assert entry["captions"] == (mine if mode == "all" else [answer])
        assert entry["label"] == label_of()[entry["id"]]  # the class folder still names it
    if mode == "random":
        assert len(Counter(e["messages"][1]["content"][0]["text"][:9] for e in entries)) > 1
    label_map = json.loads(out.with_name("label_map.json").read_text())
    assert label_map["answer_template"] is None
    result = invoke("validate", out.with_name("kinetic_3K_arrow"), "--json")
    assert json.loads(result.output)["ok"]

    import datasets

    ds = datasets.load_from_disk(str(out.with_name("kinetic_3K_arrow")))["train"]
    names = ds.features["label"].names
    row = ds[0]
    assert row["captions"] == entries[0]["captions"]
    assert names[row["label"]] == entries[0]["label"]


def test_validate_flags_an_answer_that_is_not_a_caption(fresh_root, tmp_path):
    path, _ = captions_file(tmp_path, skip=0)
    out = fresh_root / "kinetic_3K.json"
    invoke("build-manifest", "--frames-dir", fresh_root, "--output", out, "--captions", path,
           "--no-arrow")  # fmt: skip
    entries = json.loads(out.read_text())
    entries[1]["messages"][1]["content"][0]["text"] = "Something else."
    out.write_text(json.dumps(entries))
    result = invoke("validate", out, "--json", ok=False)
    assert result.exit_code == 1
    assert json.loads(result.output)["counts"] == {"answer not among captions": 1}


def test_bad_caption_flags(fresh_root, tmp_path):
    result = invoke(
        "build-manifest", "--frames-dir", fresh_root, "--captions", tmp_path / "none.json",
        "--caption", "best", ok=False,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--caption ('best')" in result.output and "--captions" in result.output


def test_push_card_of_a_caption_build(fresh_root, tmp_path):
    path, _ = captions_file(tmp_path)
    out = fresh_root / "kinetic_3K.json"
    invoke("build-manifest", "--frames-dir", fresh_root, "--output", out, "--captions", path)
    dry = tmp_path / "upload"
    invoke("push", out.with_name("kinetic_3K_arrow"), "me/captions", "--dry-run", dry)
    card = (dry / "README.md").read_text()
    assert "answers: captions from" in card and "wang2019vatex" in card
    assert "kay2017kinetics" in card
