"""`kprep validate`: clean datasets pass; each kind of damage is found, counted, exit 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.register_assert_rewrite("manifest_data")
from manifest_data import OK_CLIPS, invoke  # noqa: E402

from kinetics_prep import validate as v  # noqa: E402
from kinetics_prep.arrow import write_arrow_dataset  # noqa: E402
from kinetics_prep.schema import Sample  # noqa: E402

pytest_plugins = ["manifest_data"]  # fixtures: extracted_root, fresh_root


@pytest.fixture
def built(fresh_root: Path) -> Path:
    invoke(
        "build-manifest", "--frames-dir", fresh_root, "--output", fresh_root / "kinetic_3K.json",
        "--val-fraction", "0.3",
    )  # fmt: skip
    return fresh_root


def check(path: Path, *args) -> tuple[int, dict]:
    result = invoke("validate", path, "--json", *args, ok=False)
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.output)


@pytest.mark.parametrize("name", ["kinetic_3K.json", "kinetic_3K.train.json", "kinetic_3K_arrow"])
def test_clean_outputs_pass(built, name):
    code, report = check(built / name)
    assert code == 0 and report["ok"] and report["problems"] == []
    assert report["expected_frames"] == 4 and report["labels"] == 3
    if name == "kinetic_3K.json" or name.endswith("_arrow"):
        assert report["samples"] == OK_CLIPS and report["files_checked"] == 4 * OK_CLIPS
        assert set(report["splits"]) == {"train", "validation"}
    result = invoke("validate", built / name)
    assert "ok" in result.output


def test_video_manifest_passes_and_its_clips_are_decoded(fresh_root):
    out = fresh_root / "video.json"
    invoke("build-manifest", "--frames-dir", fresh_root, "--output", out, "--media", "video")
    assert check(out)[0] == 0
    assert check(fresh_root / "video_arrow")[0] == 0
    clip = next((fresh_root / "clips").rglob("*.mp4"))
    clip.write_bytes(b"\x00" * 500)
    code, report = check(out)
    assert code == 1 and report["counts"] == {v.UNDECODABLE: 1}


def test_every_kind_of_damage_is_reported(built):
    manifest = built / "kinetic_3K.json"
    entries = json.loads(manifest.read_text())
    frames = lambda e: [c for c in e["messages"][0]["content"] if c["type"] == "image"]  # noqa: E731
    (built / frames(entries[0])[1]["image"]).unlink()  # missing file
    (built / frames(entries[1])[2]["image"]).write_bytes(b"not a jpeg")  # does not decode
    entries[2]["id"] = entries[3]["id"]  # duplicate id
    entries[4]["messages"][1]["content"][0]["text"] = " "  # empty answer
    entries[5]["label"] = "juggling"  # not in the label map
    entries[6]["messages"][1]["content"][0]["text"] = "The video shows juggling."  # mismatch
    content = entries[7]["messages"][0]["content"]
    content[0], content[1] = content[1], content[0]  # frames out of order
    del entries[8]["messages"][0]["content"][3]  # 3 frames, expected 4
    entries[8]["frame_indices"] = entries[8]["frame_indices"][:3]
    entries.append({"id": "broken", "messages": [{"role": "user", "content": []}]})
    entries[0]["youtube_id"] = entries[1]["youtube_id"] = "XXXXXXXXXXX"
    entries[0]["split"], entries[1]["split"] = "train", "validation"  # leakage
    manifest.write_text(json.dumps(entries))
    code, report = check(manifest)
    assert code == 1 and not report["ok"]
    assert report["counts"] == {
        v.MISSING_FILE: 1,
        v.UNDECODABLE: 1,
        v.DUPLICATE_ID: 1,
        v.EMPTY_ANSWER: 1,
        v.UNKNOWN_LABEL: 1,
        v.ANSWER_MISMATCH: 2,  # the empty answer is also not the label's answer
        v.FRAME_ORDER: 1,
        v.FRAME_COUNT: 1,
        v.BAD_MESSAGES: 1,
        v.LEAKAGE: 1,
    }
    by_kind = {p["kind"]: p for p in report["problems"]}
    assert by_kind[v.FRAME_COUNT]["sample"] == entries[8]["id"]
    assert by_kind[v.LEAKAGE]["sample"] == "XXXXXXXXXXX"
    # --num-frames 3 makes the 4-frame samples the wrong ones
    code, report = check(manifest, "--num-frames", "3")
    assert report["counts"][v.FRAME_COUNT] == OK_CLIPS - 1
    # the human report lists problems and exits 1 too
    result = invoke("validate", manifest, "--show", "2", ok=False)
    assert result.exit_code == 1 and "more (--show N or --json)" in result.output


def test_no_label_map_is_a_problem_and_a_bad_one_an_error(built, tmp_path):
    copy = tmp_path / "alone.json"
    shutil.copy(built / "kinetic_3K.json", copy)
    code, report = check(copy, "--image-root", built)
    assert code == 1 and report["counts"] == {v.NO_LABEL_MAP: 1}
    code, report = check(copy, "--image-root", built, "--label-map", built / "label_map.json")
    assert code == 0
    # without --image-root the frames are not found relative to the copy's folder
    code, report = check(copy, "--label-map", built / "label_map.json")
    assert report["counts"] == {v.MISSING_FILE: 4 * OK_CLIPS}
    result = invoke("validate", copy, "--label-map", tmp_path / "none.json", ok=False)
    assert result.exit_code == 2 and "does not exist" in result.output


def test_arrow_damage(built, tmp_path):
    import datasets

    invoke(
        "build-manifest", "--frames-dir", built, "--output", built / "p.json", "--images", "paths"
    )
    ds = datasets.load_from_disk(str(built / "p_arrow"))["train"]
    first = ds.with_format("arrow")["images"].to_pylist()[0][0]["path"]
    Path(first).unlink()
    code, report = check(built / "p_arrow", "--label-map", built / "label_map.json")
    assert code == 1 and report["counts"] == {v.MISSING_FILE: 1}
    # embedded bytes that are not an image; a label outside the map; a repeated id
    good = next((built / "frames").glob("*/frame_2.jpg")).read_bytes()
    src = tmp_path / "src"
    for name, data in [("x/frame_1.jpg", b"garbage"), ("x/frame_2.jpg", good),
                       ("y/frame_1.jpg", good), ("y/frame_2.jpg", good)]:  # fmt: skip
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    rows = [
        Sample(id="a", label="abseiling", prompt="Q?", answer="The video shows abseiling.",
               images=["x/frame_1.jpg", "x/frame_2.jpg"]),
        Sample(id="a", label="yoga", prompt="Q?", answer="The video shows yoga.",
               images=["y/frame_1.jpg", "y/frame_2.jpg"]),
    ]  # fmt: skip
    write_arrow_dataset(
        {"train": rows}, out_dir=tmp_path / "t_arrow", labels=["abseiling", "yoga"], image_root=src
    )
    (tmp_path / "label_map.json").write_text(
        json.dumps({"labels": ["abseiling"], "answer_template": "The video shows {label}."})
    )
    code, report = check(tmp_path / "t_arrow")
    assert report["counts"] == {v.UNDECODABLE: 1, v.DUPLICATE_ID: 1, v.UNKNOWN_LABEL: 1}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a readable JSON manifest"),
        ('{"messages": []}', "must hold a JSON list"),
    ],
)
def test_unreadable_inputs_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "m.json"
    path.write_text(content)
    result = invoke("validate", path, ok=False)
    assert result.exit_code == 2 and message in result.output
    result = invoke("validate", tmp_path / "nope.json", ok=False)
    assert result.exit_code == 2 and "does not exist" in result.output
    (tmp_path / "empty_arrow").mkdir()
    result = invoke("validate", tmp_path / "empty_arrow", ok=False)
    assert result.exit_code == 2 and "not a saved Arrow dataset" in " ".join(result.output.split())


def test_llava_export_is_validated_too(fresh_root):
    out = fresh_root / "llava.json"
    invoke("build-manifest", "--frames-dir", fresh_root, "--output", out, "--format", "llava")
    code, report = check(out)
    assert code == 0 and report["samples"] == OK_CLIPS and report["files_checked"] == 4 * OK_CLIPS
    entries = json.loads(out.read_text())
    entries[0]["conversations"][0]["value"] = entries[0]["conversations"][0]["value"][8:]
    (fresh_root / entries[1]["image"][0]).unlink()
    entries[2]["conversations"] = [{"from": "human", "value": "<image>"}]
    out.write_text(json.dumps(entries))
    code, report = check(out)
    assert code == 1
    assert report["counts"] == {v.MEDIA_MISMATCH: 1, v.MISSING_FILE: 1, v.BAD_MESSAGES: 1}
