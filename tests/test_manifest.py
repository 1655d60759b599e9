"""`kprep build-manifest` end to end on frames that real `kprep extract` took from synthetic clips."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

pytest.register_assert_rewrite("manifest_data")  # its asserts report like test asserts
from manifest_data import BROKEN, OK_CLIPS, counters, invoke, label_of, seed_reader  # noqa: E402

from kinetics_prep.conversation import DEFAULT_PROMPT, choose_prompt  # noqa: E402
from kinetics_prep.manifest import (  # noqa: E402
    ManifestError,
    assign_splits,
    group_key,
    relative_to_root,
)

pytest_plugins = ["manifest_data"]  # fixtures: extracted_root, fresh_root


def build(root: Path, *args, output: Path | None = None) -> tuple[Path, str]:
    output = output or root / "kinetic_3K.json"
    result = invoke("build-manifest", "--frames-dir", root, "--output", output, *args)
    return output, result.output


def test_seed_format_round_trips_through_a_seed_reader(fresh_root):
    manifest, output = build(fresh_root)
    samples = seed_reader(manifest)
    entries = json.loads(manifest.read_text())
    assert len(samples) == OK_CLIPS
    labels = label_of()
    for sample, entry in zip(samples, entries, strict=True):
        assert len(sample["images"]) == 4
        frames = counters(sample["images"])
        assert frames == sorted(frames) and len(set(frames)) == 4  # real frames, in order
        assert frames == entry["frame_indices"]
        assert sample["prompt"] == DEFAULT_PROMPT
        assert sample["answer"] == f"The video shows {labels[entry['id']]}."
        assert entry["label"] == labels[entry["id"]]
        assert entry["youtube_id"] is None  # no annotations: metadata is null, not invented
        assert [i["image"] for i in entry["messages"][0]["content"][:4]] == [
            f"frames/{entry['id']}/frame_{k}.jpg" for k in range(1, 5)
        ]
    assert entry["messages"][1]["role"] == "assistant"
    assert BROKEN not in {e["id"] for e in entries}
    # the broken clip is counted by reason in the table and the report
    assert "left out: extract failed" in output
    report = json.loads((fresh_root / "kinetic_3K.report.json").read_text())
    assert sum(report["left_out"].values()) == 1
    assert next(iter(report["left_out"])).startswith("extract failed")
    label_map = json.loads((fresh_root / "label_map.json").read_text())
    assert label_map == {
        "labels": ["abseiling", "air drumming", "tai chi"],
        "answer_template": "The video shows {label}.",
    }


def test_paths_are_relative_to_the_json_folder_when_it_is_elsewhere(fresh_root, tmp_path):
    manifest, _ = build(fresh_root, "--no-arrow", output=tmp_path / "elsewhere" / "deep" / "m.json")
    entry = json.loads(manifest.read_text())[0]
    first = entry["messages"][0]["content"][0]["image"]
    assert first == f"../../ds/frames/{entry['id']}/frame_1.jpg"
    assert len(seed_reader(manifest)) == OK_CLIPS  # opens every image from the new root
    assert not (tmp_path / "elsewhere" / "deep" / "m_arrow").exists()


def test_prompts_are_chosen_per_sample_by_seed(fresh_root, tmp_path):
    prompts = ["What is happening?", "Name the action.", "Which activity is this?"]
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("# one per line\n" + "\n".join(prompts) + "\n\n")
    manifest, _ = build(fresh_root, "--prompt-file", prompt_file, "--seed", "3", "--no-arrow")
    entries = json.loads(manifest.read_text())
    chosen = [s["prompt"] for s in seed_reader(manifest)]
    assert chosen == [choose_prompt(prompts=prompts, seed=3, sample_id=e["id"]) for e in entries]
    assert len(set(chosen)) > 1
    again, _ = build(fresh_root, "--prompt-file", prompt_file, "--seed", "3", "--no-arrow")
    assert again.read_text() == manifest.read_text()
    # --prompt repeated works the same way and combines with the file
    manifest, _ = build(fresh_root, "--prompt", "Only this?", "--no-arrow")
    assert {s["prompt"] for s in seed_reader(manifest)} == {"Only this?"}


def test_answer_template(fresh_root):
    manifest, _ = build(fresh_root, "--answer-template", "{label}", "--no-arrow")
    labels = label_of()
    for entry in json.loads(manifest.read_text()):
        assert entry["messages"][1]["content"][0]["text"] == labels[entry["id"]]
    assert json.loads((fresh_root / "label_map.json").read_text())["answer_template"] == "{label}"
    before = manifest.read_text()
    result = invoke(
        "build-manifest", "--frames-dir", fresh_root, "--output", manifest,
        "--answer-template", "The action is {action}.", ok=False,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--answer-template" in result.output and "{label}" in result.output
    assert manifest.read_text() == before  # nothing lost


def test_media_video_points_at_the_clip(fresh_root):
    manifest, _ = build(fresh_root, "--media", "video", "--no-arrow")
    entries = json.loads(manifest.read_text())
    assert len(entries) == OK_CLIPS
    for entry in entries:
        user = entry["messages"][0]["content"]
        assert [i["type"] for i in user] == ["video", "text"]
        label_folder = entry["label"].replace(" ", "_")
        assert user[0]["video"] == f"clips/{label_folder}/{entry['id']}.mp4"
        assert (fresh_root / user[0]["video"]).is_file()


def test_media_video_falls_back_to_clips_folder_and_counts_missing(fresh_root, tmp_path):
    # records point at a folder that is gone; clips/<clip_id>.mp4 under the root is used
    records = fresh_root / "extract_results.jsonl"
    lines = [json.loads(x) for x in records.read_text().splitlines()]
    gone = [{**r, "video_path": f"/gone/{Path(r['video_path']).name}"} for r in lines]
    records.write_text("".join(json.dumps(r) + "\n" for r in gone))
    moved = fresh_root / "clips"
    flat = fresh_root / "clips_flat"
    flat.mkdir()
    for path in moved.rglob("*.mp4"):
        path.rename(flat / path.name)
    moved.rename(tmp_path / "gone")
    flat.rename(fresh_root / "clips")
    missing = sorted((fresh_root / "clips").glob("C*.mp4"))[0]
    missing.unlink()
    manifest, output = build(fresh_root, "--media", "video", "--no-arrow")
    videos = [e["messages"][0]["content"][0]["video"] for e in json.loads(manifest.read_text())]
    assert len(videos) == OK_CLIPS - 1
    assert all(v.startswith("clips/") and v.count("/") == 1 for v in videos)
    assert "video file missing" in output


def test_val_split_is_grouped_by_youtube_video_and_deterministic(fresh_root):
    manifest, output = build(fresh_root, "--val-fraction", "0.4", "--seed", "7", "--no-arrow")
    train = json.loads((fresh_root / "kinetic_3K.train.json").read_text())
    val = json.loads((fresh_root / "kinetic_3K.validation.json").read_text())
    everything = json.loads(manifest.read_text())
    assert train and val
    assert sorted(e["id"] for e in train + val) == sorted(e["id"] for e in everything)
    assert {e["split"] for e in train} == {"train"} and {e["split"] for e in val} == {"validation"}

    def videos(entries):
        return {group_key(clip_id=e["id"], youtube_id=e["youtube_id"]) for e in entries}

    assert not videos(train) & videos(val)  # no leakage
    assert len(val) >= round(0.4 * OK_CLIPS)
    first = {e["id"]: e["split"] for e in everything}
    build(fresh_root, "--val-fraction", "0.4", "--seed", "7", "--no-arrow")
    assert {e["id"]: e["split"] for e in json.loads(manifest.read_text())} == first
    # a rebuild without a split removes the now stale split files
    build(fresh_root, "--no-arrow")
    assert not (fresh_root / "kinetic_3K.train.json").exists()
    assert not (fresh_root / "kinetic_3K.validation.json").exists()
    assert {e["split"] for e in json.loads(manifest.read_text())} == {"train"}


def test_llava_export(fresh_root):
    manifest, _ = build(fresh_root, "--format", "llava", "--no-arrow")
    entries = json.loads(manifest.read_text())
    labels = label_of()
    for entry in entries:
        assert len(entry["image"]) == 4
        human, gpt = entry["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"] == "<image>\n" * 4 + DEFAULT_PROMPT
        assert gpt["value"] == f"The video shows {labels[entry['id']]}."
        assert all((fresh_root / p).is_file() for p in entry["image"])


def test_annotations_join_on_clip_id(fresh_root, tmp_path):
    ids = sorted(label_of())
    csv = tmp_path / "ann.csv"
    rows = ["label,youtube_id,time_start,time_end,split"]
    for cid in ids[1:]:  # the first clip is not annotated
        youtube_id, start, end = cid[:11], int(cid[12:18]), int(cid[19:25])
        rows.append(f'"massaging person\'s head",{youtube_id},{start},{end},val')
    csv.write_text("\n".join(rows) + "\n")
    manifest, output = build(fresh_root, "--annotations", csv, "--no-arrow")
    entries = json.loads(manifest.read_text())
    assert [e["id"] for e in entries] == ids[1:]
    for entry in entries:
        assert entry["label"] == "massaging person's head"
        assert entry["youtube_id"] == entry["id"][:11]
        assert entry["time_end"] - entry["time_start"] == 10.0
        assert entry["kinetics_split"] == "val"
    assert "not in --annotations" in output


def test_frames_deleted_after_extract_are_left_out_and_counted(fresh_root):
    victim = sorted((fresh_root / "frames").iterdir())[0]
    (victim / "frame_3.jpg").unlink()
    manifest, output = build(fresh_root, "--no-arrow")
    assert victim.name not in {e["id"] for e in json.loads(manifest.read_text())}
    assert "frames missing" in output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--media", "audio"], "--media ('audio') must be one of images, video"),
        (["--val-fraction", "1.5"], "--val-fraction (1.5) must be >= 0 and < 1"),
        (["--images", "links"], "--images ('links') must be one of embed, paths"),
        (["--format", "csv"], "--format ('csv') must be one of seed, llava"),
        (["--output", "x.txt"], "must end in .json"),
        (["--annotations", "nope.csv"], "--annotations ('nope.csv') does not exist"),
    ],
)
def test_bad_arguments_are_one_line_errors(fresh_root, args, message):
    result = invoke("build-manifest", "--frames-dir", fresh_root, *args, ok=False)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_unusable_inputs_write_nothing(tmp_path, fresh_root):
    result = invoke("build-manifest", "--frames-dir", tmp_path / "nope", ok=False)
    assert result.exit_code == 2 and "kprep extract" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("build-manifest", "--frames-dir", empty, "--output", empty / "m.json", ok=False)
    assert result.exit_code == 2 and "run `kprep extract" in " ".join(result.output.split())
    # every record failed: an error, and the previous manifest stays as it was
    manifest, _ = build(fresh_root, "--no-arrow")
    before = manifest.read_text()
    records = fresh_root / "extract_results.jsonl"
    lines = [json.loads(x) for x in records.read_text().splitlines()]
    records.write_text("".join(json.dumps({**r, "status": "timeout"}) + "\n" for r in lines))
    result = invoke("build-manifest", "--frames-dir", fresh_root, "--output", manifest, ok=False)
    assert result.exit_code == 2
    assert "no usable clips" in result.output and "nothing was written" in result.output
    assert manifest.read_text() == before
    prompt_file = fresh_root / "empty.txt"
    prompt_file.write_text("\n# nothing\n")
    result = invoke(
        "build-manifest", "--frames-dir", fresh_root, "--prompt-file", prompt_file, ok=False
    )
    assert result.exit_code == 2 and "holds no prompts" in result.output


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    "groups, fraction, expected_val",
    [
        ({"a1": "A", "a2": "A", "b1": "B"}, 0.0, set()),
        # whole groups only: never a cut video, never an empty train side
        ({"a1": "A", "a2": "A"}, 0.5, None),
        ({f"c{i}": f"G{i}" for i in range(10)}, 0.3, 3),
        ({f"c{i}": f"G{i // 2}" for i in range(10)}, 0.3, 4),  # 5 videos of 2 clips -> 2 videos
        ({f"c{i}": f"G{i}" for i in range(4)}, 0.01, 1),  # at least one sample held out
    ],
)
def test_assign_splits_table(groups, fraction, expected_val):
    if expected_val is None:
        with pytest.raises(ManifestError, match="at least 2 YouTube videos"):
            assign_splits(groups, val_fraction=fraction, seed=0)
        return
    split = assign_splits(groups, val_fraction=fraction, seed=0)
    val = {k for k, v in split.items() if v == "validation"}
    if isinstance(expected_val, set):
        assert val == expected_val
    else:
        assert len(val) == expected_val
    by_group: dict[str, set[str]] = {}
    for sample_id, group in groups.items():
        by_group.setdefault(group, set()).add(split[sample_id])
    assert all(len(sides) == 1 for sides in by_group.values())
    assert "train" in split.values()
    # independent of input order
    reordered = dict(reversed(list(groups.items())))
    assert assign_splits(reordered, val_fraction=fraction, seed=0) == split


def test_assign_splits_seed_changes_the_choice_but_not_the_size():
    groups = {f"c{i}": f"G{i}" for i in range(40)}
    splits = [assign_splits(groups, val_fraction=0.25, seed=s) for s in range(5)]
    sizes = {Counter(s.values())["validation"] for s in splits}
    assert sizes == {10}
    assert len({tuple(sorted(s.items())) for s in splits}) > 1


@pytest.mark.parametrize(
    "clip_id, youtube_id, expected",
    [
        ("abcdefghijk_000010_000020", None, "abcdefghijk"),
        ("abc-_fghijk_000010_000020", "given_id_xx", "given_id_xx"),
        ("my_own_clip", None, "my_own_clip"),
    ],
)
def test_group_key(clip_id, youtube_id, expected):
    assert group_key(clip_id=clip_id, youtube_id=youtube_id) == expected


@pytest.mark.parametrize(
    "path, root, expected",
    [
        ("/d/frames/c/frame_1.jpg", "/d", "frames/c/frame_1.jpg"),
        ("/x/frames/c/frame_1.jpg", "/d/m", "../../x/frames/c/frame_1.jpg"),
        ("/d/clips/c.mp4", "/d/", "clips/c.mp4"),
    ],
)
def test_relative_to_root(path, root, expected):
    assert relative_to_root(path, root) == expected


def test_doc_command_lines_parse_against_the_real_cli():
    """Every `kprep build-manifest/validate/push` line in README.md and docs/ uses real flags."""
    import re
    import shlex

    import typer.main

    from kinetics_prep.cli import app

    root = Path(__file__).resolve().parents[1]
    group = typer.main.get_command(app)
    lines = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text()
        lines += re.findall(r"^(kprep (?:build-manifest|validate|push) .*)$", text, re.M)
        lines += re.findall(r"`(kprep (?:build-manifest|validate|push) [^`]*)`", text)
    lines = [line for line in lines if "--help" not in line and "DATASET" not in line]
    assert any(line.startswith("kprep build-manifest --frames-dir") for line in lines)
    for line in lines:
        args = shlex.split(line.split("#")[0])[1:]
        command = group.get_command(None, args[0])
        assert command is not None, line
        command.make_context(args[0], args[1:])  # raises on unknown flags / bad values


@pytest.mark.parametrize(
    "bad", ["/etc/hostname", "../outside.jpg", "frames/../../outside.jpg", "link/frame_1.jpg"]
)
def test_record_frame_paths_must_stay_inside_the_frames_dir(fresh_root, tmp_path, bad):
    """A crafted record cannot pull a file from elsewhere into the (pushable) dataset."""
    secret = tmp_path / "outside.jpg"
    secret.write_bytes((fresh_root / "frames").rglob("*.jpg").__next__().read_bytes())
    (fresh_root / "link").symlink_to(tmp_path)
    crafted = {"clip_id": "evil", "status": "ok", "frames": [bad] * 4, "label": "abseiling",
               "frame_indices": [0, 1, 2, 3], "video_path": str(secret)}  # fmt: skip
    with open(fresh_root / "extract_results.jsonl", "a") as handle:
        handle.write(json.dumps(crafted) + "\n")
    result = invoke(
        "build-manifest", "--frames-dir", fresh_root, "--output", fresh_root / "m.json", ok=False
    )
    assert result.exit_code == 2
    message = result.output.strip()
    assert "extract record 'evil'" in message and repr(bad) in message
    assert "must stay inside" in message and "\n" not in message.replace("\n", " ").strip()
    assert not (fresh_root / "m.json").exists() and not (fresh_root / "m_arrow").exists()
