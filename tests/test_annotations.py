"""Annotation reading, clip naming and labels: table-driven, on fixture files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kinetics_prep.annotations import (
    AnnotationError,
    clip_id_for,
    known_labels,
    label_slug,
    load_clip_metadata,
    normalise_label,
    normalise_split,
    parse_clip_id,
    read_annotations,
    validate_row,
    write_annotations_csv,
    youtube_url,
)
from kinetics_prep.schema import write_label_map

FIXTURES = Path(__file__).parent / "fixtures" / "annotations"
REAL_K400_VAL = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kinetics-400_val.csv"
)


@pytest.mark.parametrize(
    ("youtube_id", "start", "end", "expected"),
    [
        ("0wR5jVB-WPk", 417, 427, "0wR5jVB-WPk_000417_000427"),
        ("--6bJUbfpnQ", 17, 27, "--6bJUbfpnQ_000017_000027"),
        ("abc_def_ghi", 0, 10, "abc_def_ghi_000000_000010"),
        ("0wR5jVB-WPk", 17.9, 27.2, "0wR5jVB-WPk_000017_000027"),
        ("0wR5jVB-WPk", 1234567, 1234577, "0wR5jVB-WPk_1234567_1234577"),
    ],
)
def test_clip_id_for(youtube_id, start, end, expected):
    assert clip_id_for(youtube_id=youtube_id, time_start=start, time_end=end) == expected
    parsed = parse_clip_id(expected)
    assert parsed == (youtube_id, int(start), int(end))


@pytest.mark.parametrize("bad", ["../../etc/p", "short", "abc/def/ghi", "", "0wR5jVB-WPk0"])
def test_clip_id_for_refuses_unsafe_ids(bad):
    with pytest.raises(ValueError, match="11 characters"):
        clip_id_for(youtube_id=bad, time_start=0, time_end=10)
    with pytest.raises(ValueError, match="11 characters"):
        youtube_url(bad)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("--6bJUbfpnQ_000017_000027", ("--6bJUbfpnQ", 17, 27)),
        ("abc_def_ghi_000000_000010", ("abc_def_ghi", 0, 10)),
        ("--6bJUbfpnQ", None),
        ("clip_0001", None),
        ("--6bJUbfpnQ_17_27", None),
    ],
)
def test_parse_clip_id(name, expected):
    assert parse_clip_id(name) == expected


@pytest.mark.parametrize(
    ("youtube_id", "url"),
    [
        ("0wR5jVB-WPk", "https://www.youtube.com/watch?v=0wR5jVB-WPk"),
        ("--6bJUbfpnQ", "https://www.youtube.com/watch?v=--6bJUbfpnQ"),
    ],
)
def test_youtube_url_is_full_even_for_dash_ids(youtube_id, url):
    assert youtube_url(youtube_id) == url


@pytest.mark.parametrize(
    ("text", "known", "expected"),
    [
        ("  air   drumming ", None, "air drumming"),
        ('"hurling (sport)"', None, "hurling (sport)"),
        ("massaging person's head", None, "massaging person's head"),
        ("air_drumming", ["air drumming", "abseiling"], "air drumming"),
        ("Hurling (Sport)", ["hurling (sport)"], "hurling (sport)"),
        ("not a class", ["abseiling"], "not a class"),
    ],
)
def test_normalise_label(text, known, expected):
    assert normalise_label(text, known) == expected


@pytest.mark.parametrize(
    ("label", "slug"),
    [
        ("air drumming", "air_drumming"),
        ("massaging person's head", "massaging_person's_head"),
        ("hurling (sport)", "hurling_(sport)"),
        ("../../x", "_.._.._x"),
        ("a/b\\c", "a_b_c"),
        (".hidden", "_.hidden"),
        ("", "_"),
    ],
)
def test_label_slug_is_folder_safe(label, slug, tmp_path):
    assert label_slug(label) == slug
    assert "/" not in slug and "\\" not in slug and slug not in (".", "..")
    assert (tmp_path / slug).resolve().parent == tmp_path.resolve()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("train", "train"), ("val", "val"), ("validate", "val"), ("Validation", "val"),
     ("test", "test"), ("holdout", None), ("", None)],
)  # fmt: skip
def test_normalise_split(value, expected):
    assert normalise_split(value) == expected


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (dict(label="a", youtube_id="", time_start="1", time_end="2", split="val"), "missing youtube_id"),
        (dict(label="a", youtube_id="x/y", time_start="1", time_end="2", split="val"), "11 characters"),
        (dict(label="a", youtube_id="0wR5jVB-WPk", time_start="x", time_end="2", split="val"), "must be numbers"),
        (dict(label="a", youtube_id="0wR5jVB-WPk", time_start="5", time_end="2", split="val"), "time_start < time_end"),
        (dict(label="a", youtube_id="0wR5jVB-WPk", time_start="-1", time_end="2", split="val"), "0 <= time_start"),
        (dict(label="a", youtube_id="0wR5jVB-WPk", time_start="nan", time_end="2", split="val"), "must be numbers"),
        (dict(label="a", youtube_id="0wR5jVB-WPk", time_start="1", time_end="2", split="dev"), "unknown split 'dev'"),
        (dict(label="", youtube_id="0wR5jVB-WPk", time_start="1", time_end="2", split="train"), "missing label"),
        (dict(label="a", youtube_id="0wR5jVB-WPk", time_start="1", time_end="2", split="val", is_cc="x"), "is_cc"),
    ],
)  # fmt: skip
def test_validate_row_rejects(fields, reason):
    row, message = validate_row(**fields)
    assert row is None
    assert reason in message


def test_validate_row_accepts_test_row_without_label():
    row, message = validate_row(
        label=None, youtube_id="-0TnQqyqC9E", time_start="0", time_end="10", split="test"
    )
    assert message is None and row is not None
    assert row.label is None and row.clip_id == "-0TnQqyqC9E_000000_000010"


@pytest.mark.parametrize(
    ("name", "count", "splits", "sample_id", "sample_label"),
    [
        ("k400_val.csv", 9, {"val"}, "-huT_p-r_zA_001989_001999", "massaging person's head"),
        ("k400_test.csv", 2, {"test"}, "--33Lscn6sk_000004_000014", None),
        ("k600_train.csv", 3, {"train"}, "a1b2C3d4E5f_000005_000015", "dancing, salsa style"),
        (
            "k700_2020_validate.csv",
            2,
            {"val"},
            "--AQg8KEnJg_000011_000021",
            "massaging person's head",
        ),
        (
            "k400_train.json",
            3,
            {"train", "val", "test"},
            "--6bJUbfpnQ_000017_000027",
            "eating nachos",
        ),
    ],
)
def test_read_each_kinetics_version(name, count, splits, sample_id, sample_label):
    ann = read_annotations(FIXTURES / name)
    assert len(ann.rows) == count
    assert {row.split for row in ann.rows} == splits
    meta = load_clip_metadata(FIXTURES / name)
    assert set(meta[sample_id]) == {"label", "youtube_id", "time_start", "time_end", "split"}
    assert meta[sample_id]["label"] == sample_label
    assert meta[sample_id]["youtube_id"] == sample_id[:11]


def test_k400_real_rows_keep_is_cc_and_labels():
    ann = read_annotations(FIXTURES / "k400_val.csv")
    assert ann.errors == []
    assert [row.is_cc for row in ann.rows[:2]] == [0, 0]
    assert "hurling (sport)" in ann.labels
    assert set(ann.labels) <= set(known_labels("400"))
    first = ann.rows[0]
    assert (first.time_start, first.time_end, first.row) == (417.0, 427.0, 2)


def test_json_reports_entry_without_segment():
    ann = read_annotations(FIXTURES / "k400_train.json")
    assert [(e.row, "segment" in e.message) for e in ann.errors] == [(4, True)]
    test_row = next(row for row in ann.rows if row.split == "test")
    assert test_row.label is None


def test_bad_rows_are_reported_with_file_and_row_and_the_rest_read():
    path = FIXTURES / "bad_rows.csv"
    ann = read_annotations(path)
    assert [row.row for row in ann.rows] == [2, 9]
    assert ann.rows[1].label == "../../x"
    errors = {error.row: error.message for error in ann.errors}
    assert sorted(errors) == [3, 4, 5, 6, 7, 8, 10, 11, 12]
    assert errors[3] == "missing youtube_id"
    assert "'tooshort'" in errors[4]
    assert "'../../etc/pw'" in errors[5]
    assert "must be numbers" in errors[6]
    assert "0 <= time_start < time_end" in errors[7]
    assert "unknown split 'holdout'" in errors[8]
    assert "duplicate clip 0wR5jVB-WPk_000417_000427 (first at row 2)" in errors[10]
    assert "missing label" in errors[11]
    assert "7 cells but the header has 6" in errors[12]
    assert str(ann.errors[0]) == f"{path}:3: missing youtube_id"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "label,id,start,end\nx,0wR5jVB-WPk,1,2\n",
            "lacks column(s) youtube_id, time_start, time_end, split",
        ),
        ("", "is empty"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_unusable_files_raise_one_clear_error(tmp_path, content, message):
    path = tmp_path / ("a.json" if content.startswith(("{", "[")) else "a.csv")
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_annotations(path)


def test_missing_file_is_an_annotation_error(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        read_annotations(tmp_path / "nope.csv")


def test_csv_round_trip_keeps_ids_and_quotes(tmp_path):
    rows = read_annotations(FIXTURES / "k600_train.csv").rows
    out = write_annotations_csv(tmp_path / "sub.csv", rows)
    again = read_annotations(out).rows
    assert [(r.clip_id, r.label) for r in again] == [(r.clip_id, r.label) for r in rows]
    assert '"dancing, salsa style"' in out.read_text()


def test_label_map_is_stable_across_writes(tmp_path):
    path = tmp_path / "label_map.json"
    assert write_label_map(path, ["b", "a"]) == ["a", "b"]
    data = json.loads(path.read_text())
    data["answer_template"] = "The video shows {label}."
    path.write_text(json.dumps(data))
    assert write_label_map(path, ["c", "a", "0"]) == ["a", "b", "0", "c"]
    assert json.loads(path.read_text()) == {
        "labels": ["a", "b", "0", "c"],
        "answer_template": "The video shows {label}.",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["label_map.json"]


@pytest.mark.parametrize("version", ["400", "600", "700"])
def test_known_labels_are_packaged(version):
    labels = known_labels(version)
    assert len(labels) == int(version)
    assert len(set(labels)) == len(labels)


@pytest.mark.skipif(not REAL_K400_VAL.is_file(), reason="../shared/data not next to the clone")
def test_real_k400_val_reads_completely():
    ann = read_annotations(REAL_K400_VAL)
    assert ann.errors == []
    assert len(ann.rows) == 19906
    assert set(ann.labels) == set(known_labels("400"))
    assert {row.split for row in ann.rows} == {"val"}
