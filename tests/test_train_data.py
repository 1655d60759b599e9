"""trainer.data: manifest reading, clear errors, raw video with real fps, data hash."""

from __future__ import annotations

import json

import pytest

from kinetics_prep.errors import SchemaError
from trainer.data import DataError, data_fingerprint, load_samples
from trainer.tiny import write_synthetic_manifest


def test_json_manifest_paths_resolve_against_the_image_folder(tmp_path):
    manifest = write_synthetic_manifest(tmp_path / "ds", num_samples=2)
    samples = load_samples(manifest)
    assert [len(s.images) for s in samples] == [4, 4]
    assert [s.label for s in samples] == ["moving left", "moving right"]  # the label travels
    assert all(str(p).startswith(str(tmp_path / "ds")) for p in samples[0].images)
    # The same JSON somewhere else needs --image-folder.
    moved = tmp_path / "elsewhere.json"
    moved.write_text(manifest.read_text())
    with pytest.raises(DataError, match="pass --image-folder"):
        load_samples(moved)
    assert len(load_samples(moved, image_folder=tmp_path / "ds", max_samples=1)) == 1


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ('{"a": 1}', "must hold a JSON list"),
        ('[{"messages": [{"role": "user", "content": []}]}]', "user then assistant"),
        ("[]", "holds no samples"),
    ],
)
def test_bad_manifests_fail_with_one_clear_line(tmp_path, content, match):
    """The contract's reader (SchemaError) and training's own checks (DataError, a SchemaError)."""
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(SchemaError, match=match) as info:
        load_samples(path)
    assert "\n" not in str(info.value)


def test_missing_data_path_says_what_to_pass(tmp_path):
    with pytest.raises(DataError, match="kprep build-manifest"):
        load_samples(tmp_path / "nope.json")


def test_data_fingerprint_follows_the_content(tmp_path):
    manifest = write_synthetic_manifest(tmp_path / "ds", num_samples=2)
    first = data_fingerprint(manifest)
    assert first == data_fingerprint(manifest) and len(first) == 64
    entries = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(entries[:1]))
    assert data_fingerprint(manifest) != first


def test_video_entries_decode_with_kinetics_prep_and_keep_the_real_fps(make_counter_clip):
    pytest.importorskip("transformers")
    from kinetics_prep.sampling import sample_indices
    from trainer.data import ConversationDataset

    clip = make_counter_clip("v.mp4", num_frames=60, fps=30.0)
    manifest = clip.parent / "v.json"
    manifest.write_text(
        json.dumps(
            [
                {
                    "messages": [
                        {"role": "user", "content": [{"type": "video", "video": "v.mp4"}]},
                        {
                            "role": "assistant",
                            "content": [{"type": "text", "text": "The video shows x."}],
                        },
                    ]
                }
            ]
        )
    )
    item = ConversationDataset(load_samples(manifest), num_frames=4, sampling="center")[0]
    assert item["video"].shape == (4, 120, 160, 3)
    meta = item["video_metadata"]
    assert meta.fps == pytest.approx(30.0)
    assert meta.total_num_frames == 60
    assert meta.frames_indices == sample_indices(60, 4, method="center")
    assert meta.timestamps == pytest.approx([i / 30.0 for i in meta.frames_indices])
