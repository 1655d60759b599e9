"""The published reference manifest (VATEX captions, no labels) through import, validate, trainer.

Its frames are not shipped, so each test writes small JPEGs at exactly the
relative paths the manifest names. The unit tests use a 20-entry excerpt
(tests/fixtures/reference/); one test takes the full 3,115-entry file from
``../shared/data`` when it sits beside the clone.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from kinetics_prep.cli import app
from kinetics_prep.conversation import media_paths, text_of

EXCERPT = Path(__file__).parent / "fixtures" / "reference" / "reference_kinetic_3K.head20.json"
FULL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "reference_kinetic_3K.json"


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (seed * 37 % 256, seed * 91 % 256, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def lay_out(manifest: Path, root: Path) -> list[dict]:
    """Copy ``manifest`` into ``root`` and write a JPEG at every image path it names."""
    entries = json.loads(manifest.read_text(encoding="utf-8"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "kinetic_3K.json").write_bytes(manifest.read_bytes())
    palette = [_jpeg(i) for i in range(8)]
    for n, entry in enumerate(entries):
        for k, name in enumerate(media_paths(entry["messages"], "image")):
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(palette[(n + k) % len(palette)])
    return entries


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def check_reference(manifest: Path, tmp_path: Path, *, images: str) -> None:
    root = tmp_path / "kinetics_3k"
    entries = lay_out(manifest, root)
    published = root / "kinetic_3K.json"

    # validate the JSON as published: a caption dataset, no label map needed
    result = run("validate", published, "--num-frames", "4", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["kind"] == "captions"
    assert report["samples"] == len(entries) and report["files_checked"] == 4 * len(entries)

    # import -> Arrow, then validate that too
    result = run("import-manifest", published, "--images", images)
    assert result.exit_code == 0, result.output
    arrow = root / "kinetic_3K_arrow"
    result = run("validate", arrow, "--num-frames", "4", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["kind"] == "captions"

    # the trainer reads both exactly as published
    from trainer.data import load_samples

    from_json = load_samples(published)

    def rooted(messages: list[dict]) -> list[dict]:  # the reader resolves image paths
        return [
            {**m, "content": [
                {**c, "image": str(root / c["image"])} if c["type"] == "image" else c
                for c in m["content"]
            ]}
            for m in messages
        ]  # fmt: skip

    assert [s.messages for s in from_json] == [rooted(e["messages"]) for e in entries]
    assert [s.images for s in from_json] == [
        [str(root / p) for p in media_paths(e["messages"], "image")] for e in entries
    ]
    from_arrow = load_samples(arrow, split="train")
    assert len(from_arrow) == len(entries)
    for sample, entry in zip(from_arrow, entries, strict=True):
        assert sample.id == Path(media_paths(entry["messages"], "image")[0]).parent.name
        assert text_of(sample.messages[-1]) == text_of(entry["messages"][-1])
        assert text_of(sample.messages[0]) == text_of(entry["messages"][0])
        assert len(sample.images) == 4

    import datasets

    ds = datasets.load_from_disk(str(arrow))["train"]
    row = ds[0]
    assert row["label"] is None
    assert row["captions"] == [text_of(entries[0]["messages"][-1])]
    assert row["youtube_id"] + "_" in row["id"]
    if images == "embed":
        first = root / media_paths(entries[0]["messages"], "image")[0]
        assert ds.with_format("arrow")[0]["images"].to_pylist()[0][0]["bytes"] == first.read_bytes()


def test_reference_excerpt_imports_validates_and_trains_as_published(tmp_path):
    check_reference(EXCERPT, tmp_path, images="embed")


@pytest.mark.skipif(not FULL.is_file(), reason="../shared/data not next to the clone")
def test_full_reference_manifest(tmp_path):
    entries = json.loads(FULL.read_text(encoding="utf-8"))
    assert len(entries) == 3115  # the numbers docs/schema.md states about it
    answers = [text_of(e["messages"][-1]) for e in entries]
    assert len(set(answers)) == 3115
    assert round(sum(len(a.split()) for a in answers) / len(answers), 1) == 14.7
    assert all(set(e) == {"messages"} for e in entries)
    check_reference(FULL, tmp_path, images="paths")


def test_excerpt_is_the_head_of_the_published_file():
    if not FULL.is_file():
        pytest.skip("../shared/data not next to the clone")
    head = json.loads(FULL.read_text(encoding="utf-8"))[:20]
    assert json.loads(EXCERPT.read_text(encoding="utf-8")) == head


def test_missing_frame_and_foreign_layout_are_one_line_errors(tmp_path):
    root = tmp_path / "ds"
    entries = lay_out(EXCERPT, root)
    gone = root / media_paths(entries[3]["messages"], "image")[2]
    gone.unlink()
    result = run("import-manifest", root / "kinetic_3K.json")
    assert result.exit_code == 2
    assert "entry 3" in result.output and "frame_3.jpg" in result.output
    assert "--image-root" in result.output
    assert not (root / "kinetic_3K_arrow").exists()

    gone.write_bytes(_jpeg(1))
    entries[5]["messages"][0]["content"].reverse()  # prompt before the frames
    (root / "odd.jsonl").write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    result = run("import-manifest", root / "odd.jsonl")
    assert result.exit_code == 2 and "entry 5" in result.output and "seed layout" in result.output


def test_jsonl_manifest_imports(tmp_path):
    root = tmp_path / "ds"
    entries = lay_out(EXCERPT, root)
    (root / "lines.jsonl").write_text("\n".join(json.dumps(e) for e in entries[:5]) + "\n")
    result = run("import-manifest", root / "lines.jsonl", "--output", root / "out_arrow")
    assert result.exit_code == 0, result.output
    import datasets

    assert datasets.load_from_disk(str(root / "out_arrow"))["train"].num_rows == 5


@pytest.mark.parametrize("escape", ["absolute", "dotdot"])
def test_a_frame_path_outside_the_image_root_is_refused(tmp_path, escape):
    """Imported frames get embedded and may be pushed: a crafted path cannot pull in other files."""
    root = tmp_path / "ds"
    entries = lay_out(EXCERPT, root)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(_jpeg(3))
    name = str(secret) if escape == "absolute" else "../secret.jpg"
    entries[2]["messages"][0]["content"][0]["image"] = name
    (root / "crafted.json").write_text(json.dumps(entries))
    result = run("import-manifest", root / "crafted.json")
    assert result.exit_code == 2, result.output
    assert "entry 2" in result.output and "must stay inside" in result.output
    assert not (root / "crafted_arrow").exists()
