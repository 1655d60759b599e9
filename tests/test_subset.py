"""Deterministic stratified subsets: pure selection tables and `kprep subset` end to end."""

from __future__ import annotations

import json
import random
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kinetics_prep.annotations import ClipRow, read_annotations
from kinetics_prep.cli import app
from kinetics_prep.subset import SubsetError, even_quotas, select_subset

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
REAL_K400_VAL = ROOT.parent / "shared" / "data" / "kinetics-400_val.csv"
MANIFEST = ROOT / "manifests" / "k400_val_3k.csv"


def make_rows(sizes: dict[str, int], split: str = "val") -> list[ClipRow]:
    rows = []
    for c, (label, size) in enumerate(sorted(sizes.items())):
        for i in range(size):
            yid = f"{c:03d}{label[:3]:_<3}{i:05d}"[:11]
            rows.append(
                ClipRow(label=label, youtube_id=yid, time_start=i, time_end=i + 10, split=split)
            )
    return rows


@pytest.mark.parametrize(
    ("sizes", "total", "expected"),
    [
        ({"a": 10, "b": 10}, 6, {"a": 3, "b": 3}),
        ({"a": 10, "b": 2, "c": 10}, 12, {"a": 5, "b": 2, "c": 5}),
        ({"a": 1, "b": 1}, 10, {"a": 1, "b": 1}),
        ({"a": 5, "b": 5, "c": 5}, 0, {"a": 0, "b": 0, "c": 0}),
    ],
)
def test_even_quotas(sizes, total, expected):
    assert even_quotas(sizes, total=total, seed=0) == expected


def test_even_quotas_remainder_goes_one_each_and_depends_on_seed():
    sizes = {f"c{i}": 50 for i in range(400)}
    quotas = even_quotas(sizes, total=3000, seed=0)
    assert sum(quotas.values()) == 3000
    assert sorted(set(quotas.values())) == [7, 8]
    assert sum(1 for q in quotas.values() if q == 8) == 200
    assert even_quotas(sizes, total=3000, seed=1) != quotas


@pytest.mark.parametrize(
    ("options", "counts"),
    [
        ({}, {"a": 6, "b": 4, "c": 2}),
        ({"per_class": 3}, {"a": 3, "b": 3, "c": 2}),
        ({"max_clips": 7}, {"a": 3, "b": 2, "c": 2}),
        ({"classes": ["a", "c"], "per_class": 5}, {"a": 5, "c": 2}),
        ({"per_class": 4, "max_clips": 3}, {"a": 1, "b": 1, "c": 1}),
    ],
)
def test_select_subset_counts(options, counts):
    rows = make_rows({"a": 6, "b": 4, "c": 2})
    chosen = select_subset(rows, **options)
    got: dict[str, int] = {}
    for row in chosen:
        got[str(row.label)] = got.get(str(row.label), 0) + 1
    if "max_clips" in options and "per_class" not in options:
        assert (
            sum(got.values()) == options["max_clips"] and max(got.values()) - min(got.values()) <= 1
        )
    else:
        assert got == counts
    assert [r.label for r in chosen] == sorted(r.label for r in chosen)


def test_selection_ignores_row_order_and_other_classes():
    rows = make_rows({"a": 20, "b": 20, "c": 20})
    chosen = select_subset(rows, per_class=5, seed=3)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert select_subset(shuffled, per_class=5, seed=3) == chosen
    only_a = select_subset(rows, classes=["a"], per_class=5, seed=3)
    assert only_a == [r for r in chosen if r.label == "a"]
    bigger = select_subset(rows, per_class=8, seed=3)
    assert {r.clip_id for r in chosen} <= {r.clip_id for r in bigger}
    assert select_subset(rows, per_class=5, seed=4) != chosen


def test_select_subset_split_and_lenient_class_names():
    rows = make_rows({"air drumming": 3}, "train") + make_rows({"air drumming": 2}, "val")
    chosen = select_subset(rows, classes=["Air_Drumming"], split="val")
    assert [r.split for r in chosen] == ["val", "val"]


def test_unknown_class_is_an_error_with_a_hint():
    rows = make_rows({"air drumming": 3, "abseiling": 2})
    with pytest.raises(SubsetError, match=r"'air drums' \(did you mean 'air drumming'\?\)"):
        select_subset(rows, classes=["air drums"])


def test_cli_subset_writes_a_csv_that_reads_back(tmp_path):
    fixture = ROOT / "tests" / "fixtures" / "annotations" / "k400_val.csv"
    classes = tmp_path / "classes.txt"
    classes.write_text("# two classes\nhurling (sport)\nmassaging_person's_head\n")
    out = tmp_path / "manifests" / "mini.csv"
    result = runner.invoke(
        app,
        ["subset", "--annotations", str(fixture), "--classes-file", str(classes),
         "--classes", "abseiling", "--per-class", "1", "--split", "validate", "--output", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 3 rows (3 classes, 1-1 per class)" in result.output
    rows = read_annotations(out).rows
    assert sorted(str(r.label) for r in rows) == [
        "abseiling",
        "hurling (sport)",
        "massaging person's head",
    ]
    source_ids = {r.clip_id for r in read_annotations(fixture).rows}
    assert {r.clip_id for r in rows} <= source_ids
    meta = json.loads(out.with_suffix(".subset.json").read_text())
    assert meta["rows"] == 3 and meta["options"]["split"] == "val"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--per-class", "0"], "--per-class (0) must be >= 1"),
        (["--split", "holdout"], "--split ('holdout') must be train, val (validate) or test"),
        (["--classes", "flying"], "class(es) not in the annotations: 'flying'"),
        (["--split", "train"], "no rows selected"),
    ],
)
def test_cli_subset_errors(tmp_path, args, message):
    fixture = ROOT / "tests" / "fixtures" / "annotations" / "k400_val.csv"
    out = tmp_path / "x.csv"
    result = runner.invoke(
        app, ["subset", "--annotations", str(fixture), "--output", str(out), *args]
    )
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not out.exists()


@pytest.mark.skipif(not REAL_K400_VAL.is_file(), reason="../shared/data not next to the clone")
def test_shipped_3k_manifest_is_what_its_recorded_command_builds(tmp_path):
    meta = json.loads(MANIFEST.with_suffix(".subset.json").read_text())
    argv = shlex.split(meta["command"])[1:]
    argv[argv.index("--annotations") + 1] = str(REAL_K400_VAL)
    argv[argv.index("--output") + 1] = str(tmp_path / "rebuilt.csv")
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rebuilt.csv").read_text() == MANIFEST.read_text()
    rows = read_annotations(MANIFEST).rows
    assert len(rows) == 3000 and len({r.label for r in rows}) == 400


def test_cli_subset_never_overwrites_its_source_or_a_users_file(tmp_path):
    fixture = ROOT / "tests" / "fixtures" / "annotations" / "k400_val.csv"
    source = tmp_path / "k400_val.csv"
    source.write_bytes(fixture.read_bytes())
    same = runner.invoke(
        app, ["subset", "--annotations", str(source), "--output", str(source), "--per-class", "1"]
    )
    assert same.exit_code == 2 and "is the --annotations file" in same.output
    assert source.read_bytes() == fixture.read_bytes()
    mine = tmp_path / "mine.csv"
    mine.write_text("my own list\n")
    refused = runner.invoke(
        app, ["subset", "--annotations", str(source), "--output", str(mine), "--per-class", "1"]
    )
    assert refused.exit_code == 2 and "kprep did not write it" in refused.output
    assert mine.read_text() == "my own list\n"
    out = tmp_path / "sub.csv"
    for _ in range(2):  # kprep's own subset (its .subset.json beside it) is replaced
        done = runner.invoke(
            app, ["subset", "--annotations", str(source), "--output", str(out), "--per-class", "1"]
        )
        assert done.exit_code == 0, done.output
    meta = json.loads(out.with_suffix(".subset.json").read_text())
    import hashlib

    assert meta["source_sha256"] == hashlib.sha256(fixture.read_bytes()).hexdigest()
