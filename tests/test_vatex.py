"""VATEX caption files (kinetics_prep.vatex): reading, captions, labels, and `kprep download`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kinetics_prep.annotations import AnnotationError, read_annotations
from kinetics_prep.captions import choose_caption
from kinetics_prep.cli import app
from kinetics_prep.records import read_latest
from kinetics_prep.vatex import (
    is_vatex,
    load_captions,
    parse_vatex,
    read_vatex,
    split_from_name,
)

CAPS = [f"Caption {k} of the clip." for k in range(10)]
ENTRIES = [
    {"videoID": "Ptf_2VRj-V0_000122_000132", "enCap": CAPS, "chCap": ["一"] * 10},
    {"videoID": "--6bJUbfpnQ_000017_000027", "enCap": [" A man rides. ", "", "Horse."]},
    {"videoID": "a_b_c_d_e_f_000001_000011"},  # id with underscores; public test: no enCap
    {"videoID": "tooshort_000001_000011", "enCap": ["x"]},
    {"videoID": "Ptf_2VRj-V0_000122_000132", "enCap": ["again"]},
    {"videoID": "abcdefghijk_000020_000010", "enCap": ["x"]},
    {"enCap": ["no id"]},
]


def test_parse_maps_ids_times_captions_and_reports_bad_entries():
    loaded = parse_vatex(ENTRIES, path="vatex_training_v1.0.json")
    assert [c.clip_id for c in loaded.clips] == [
        "Ptf_2VRj-V0_000122_000132", "--6bJUbfpnQ_000017_000027", "a_b_c_d_e_f_000001_000011",
    ]  # fmt: skip
    first = loaded.clips[0]
    assert (first.youtube_id, first.time_start, first.time_end) == ("Ptf_2VRj-V0", 122.0, 132.0)
    assert first.captions == tuple(CAPS) and first.split == "train" and first.label is None
    assert loaded.clips[1].captions == ("A man rides.", "Horse.")  # trimmed, empties dropped
    assert loaded.clips[2].youtube_id == "a_b_c_d_e_f" and loaded.clips[2].captions == ()
    assert [(e.row, e.message.split(" ")[0]) for e in loaded.errors] == [
        (4, "videoID"), (5, "duplicate"), (6, "videoID"), (7, "entry"),
    ]  # fmt: skip
    assert "abcdefghijk_000020_000010" in loaded.errors[2].message
    assert loaded.captions() == {
        "Ptf_2VRj-V0_000122_000132": CAPS,
        "--6bJUbfpnQ_000017_000027": ["A man rides.", "Horse."],
    }


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("vatex_training_v1.0.json", "train"),
        ("vatex_validation_v1.0.json", "val"),
        ("vatex_public_test_english_v1.1.json", "test"),
        ("my_captions.json", "train"),
    ],
)
def test_split_from_file_name(name, split):
    assert split_from_name(name) == split


def test_read_annotations_reads_vatex_and_kinetics_labels_join(tmp_path):
    path = tmp_path / "vatex_validation_v1.0.json"
    path.write_text(json.dumps(ENTRIES))
    ann = read_annotations(path)  # what download / extract --annotations use
    assert [r.clip_id for r in ann.rows][:2] == [
        "Ptf_2VRj-V0_000122_000132",
        "--6bJUbfpnQ_000017_000027",
    ]
    assert {r.split for r in ann.rows} == {"val"} and len(ann.errors) == 4
    k600 = tmp_path / "k600_train.csv"
    k600.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        '"riding or walking with horse",--6bJUbfpnQ,17,27,train\n'
        "abseiling,zzzzzzzzzzz,0,10,train\n"
    )
    clips = read_vatex(path, kinetics=[k600]).clips
    assert [c.label for c in clips] == [None, "riding or walking with horse", None]
    assert is_vatex(ENTRIES) and not is_vatex([1, 2]) and not is_vatex({"a": 1})


def test_load_captions_forms(tmp_path):
    vatex = tmp_path / "v.json"
    vatex.write_text(json.dumps(ENTRIES[:2]))
    assert load_captions(vatex)["--6bJUbfpnQ_000017_000027"] == ["A man rides.", "Horse."]
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"c1": ["a", " "], "c2": "b"}))
    assert load_captions(mapping) == {"c1": ["a"], "c2": ["b"]}
    lines = tmp_path / "l.jsonl"
    lines.write_text('{"clip_id": "c1", "captions": ["a"]}\n{"clip_id": "c2", "captions": ["b"]}\n')
    assert load_captions(lines) == {"c1": ["a"], "c2": ["b"]}
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"c1": [1]}))
    with pytest.raises(AnnotationError, match="list of strings"):
        load_captions(bad)
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(AnnotationError, match="expected a VATEX file"):
        load_captions(tmp_path / "x.json")


def test_choose_caption_modes():
    assert choose_caption(CAPS, mode="first", seed=0, sample_id="a") == CAPS[0]
    assert choose_caption(CAPS, mode="all", seed=0, sample_id="a") == CAPS[0]
    picks = {choose_caption(CAPS, mode="random", seed=s, sample_id="a") for s in range(30)}
    assert len(picks) > 3 and picks <= set(CAPS)
    assert choose_caption(CAPS, mode="random", seed=4, sample_id="a") == choose_caption(
        CAPS, mode="random", seed=4, sample_id="a"
    )
    with pytest.raises(ValueError, match="--caption"):
        choose_caption(CAPS, mode="best", seed=0, sample_id="a")


def test_download_vatex_file_from_a_local_folder(tmp_path):
    path = tmp_path / "vatex_training_v1.0.json"
    path.write_text(json.dumps(ENTRIES[:3]))
    src = tmp_path / "have"
    src.mkdir()
    (src / "Ptf_2VRj-V0_000122_000132.mp4").write_bytes(b"a" * 5)
    (src / "a_b_c_d_e_f_000001_000011.mp4").write_bytes(b"b" * 7)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["download", "--annotations", str(path), "--source", "local", "--clips", str(src),
         "--output-dir", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = read_latest(out / "download_results.jsonl")
    assert records["Ptf_2VRj-V0_000122_000132"]["status"] == "ok"
    assert records["a_b_c_d_e_f_000001_000011"]["bytes"] == 7
    assert records["--6bJUbfpnQ_000017_000027"]["reason"] == "not_found"
    assert records["Ptf_2VRj-V0_000122_000132"]["split"] == "train"
    assert sorted(p.name for p in (out / "clips").iterdir()) == [
        "Ptf_2VRj-V0_000122_000132.mp4",
        "a_b_c_d_e_f_000001_000011.mp4",
    ]
    report = json.loads((out / "download_report.json").read_text())
    assert report["downloaded"] == 2
