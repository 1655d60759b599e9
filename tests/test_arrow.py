"""The Arrow DatasetDict that build-manifest writes: loads, decodes, matches the JSON and the contract."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.register_assert_rewrite("manifest_data")
from manifest_data import OK_CLIPS, counters, invoke, label_of  # noqa: E402

from kinetics_prep.arrow import features_for, write_arrow_dataset  # noqa: E402
from kinetics_prep.schema import Sample  # noqa: E402

pytest_plugins = ["manifest_data"]  # fixtures: extracted_root, fresh_root


def build(root: Path, *args) -> Path:
    invoke("build-manifest", "--frames-dir", root, "--output", root / "kinetic_3K.json", *args)
    return root / "kinetic_3K_arrow"


def test_embedded_arrow_loads_decodes_and_matches_the_json(fresh_root):
    import datasets

    arrow = build(fresh_root, "--val-fraction", "0.3")
    dd = datasets.load_from_disk(str(arrow))
    assert set(dd) == {"train", "validation"}
    labels = json.loads((fresh_root / "label_map.json").read_text())["labels"]
    for split, ds in dd.items():
        assert ds.features == features_for(labels)  # explicit Features, the schema.md table
        entries = {
            e["id"]: e for e in json.loads((fresh_root / f"kinetic_3K.{split}.json").read_text())
        }
        assert sorted(ds["id"]) == sorted(entries)
        for row in ds:
            entry = entries[row["id"]]
            images = row["images"]
            assert len(images) == 4
            assert counters(images) == entry["frame_indices"]  # decoded pixels, in order
            assert (
                ds.features["label"].int2str(row["label"])
                == entry["label"]
                == label_of()[row["id"]]
            )
            user, assistant = row["messages"]
            assert [c["type"] for c in user["content"]] == ["image"] * 4 + ["text"]
            assert all(c["text"] is None for c in user["content"][:4])
            assert user["content"][4]["text"] == entry["messages"][0]["content"][4]["text"]
            assert assistant["content"] == [
                {"type": "text", "text": entry["messages"][1]["content"][0]["text"]}
            ]
            assert row["video"] is None
            assert row["frame_indices"] == entry["frame_indices"]
            assert row["timestamps"] == pytest.approx(entry["timestamps"])
    # embedded: the folder holds the JPEG bytes unchanged, with the relative path
    raw = dd["train"].with_format("arrow")["images"].to_pylist()[0][0]
    assert raw["path"].startswith("frames/") and raw["path"].endswith("/frame_1.jpg")
    assert raw["bytes"] == (fresh_root / raw["path"]).read_bytes()
    report = json.loads((arrow / "kprep_build.json").read_text())
    assert report["samples"] == OK_CLIPS and sum(report["left_out"].values()) == 1


def test_paths_mode_stores_absolute_paths_that_decode(fresh_root):
    import datasets

    arrow = build(fresh_root, "--images", "paths")
    ds = datasets.load_from_disk(str(arrow))["train"]
    raw = ds.with_format("arrow")["images"].to_pylist()
    assert all(i["bytes"] is None and os.path.isabs(i["path"]) for row in raw for i in row)
    assert [counters(row["images"]) for row in ds] == ds["frame_indices"]
    size = sum(p.stat().st_size for p in arrow.rglob("*.arrow"))
    embedded = build(fresh_root)
    assert size * 3 < sum(p.stat().st_size for p in embedded.rglob("*.arrow"))


def test_video_media_rows_have_a_video_and_no_images(fresh_root):
    import datasets

    arrow = build(fresh_root, "--media", "video")
    ds = datasets.load_from_disk(str(arrow))["train"]
    assert len(ds) == OK_CLIPS
    for row in ds:
        assert row["images"] == []
        assert (arrow.parent / row["video"]).is_file()
        assert [c["type"] for c in row["messages"][0]["content"]] == ["video", "text"]


def test_trainer_reads_it_through_its_own_loader(fresh_root):
    """The contract both ways: trainer.data.load_samples on our JSON and our Arrow folder."""
    from trainer.data import load_image, load_samples

    arrow = build(fresh_root, "--val-fraction", "0.3")
    from_arrow = load_samples(arrow, split="validation")
    from_json = load_samples(fresh_root / "kinetic_3K.validation.json")
    assert [s.id for s in from_arrow] == [s.id for s in from_json]
    for a, j in zip(from_arrow, from_json, strict=True):
        assert len(a.images) == len(j.images) == 4
        pixels = [np.asarray(load_image(x)) for x in a.images]
        assert all(
            np.array_equal(p, np.asarray(load_image(q)))
            for p, q in zip(pixels, j.images, strict=True)
        )
        assert a.messages[-1] == {"role": "assistant", "content": [
            {"type": "text", "text": j.messages[-1]["content"][0]["text"]}]}  # fmt: skip


def _samples(n: int, files: list[Path], label: str = "abseiling") -> list[Sample]:
    return [
        Sample(
            id=f"c{i:04d}",
            label=label,
            prompt="Q?",
            answer=f"The video shows {label}.",
            images=[f.relative_to(files[0].parents[2]).as_posix() for f in files],
            split="train",
            metadata={"frame_indices": [0, 1], "timestamps": [0.0, 0.5]},
        )
        for i in range(n)
    ]


def test_shards_roll_over_and_load_in_order(tmp_path, fresh_root):
    import datasets

    files = sorted((fresh_root / "frames").glob("*/frame_1.jpg"))[:2]
    out = write_arrow_dataset(
        {"train": _samples(50, files)},
        out_dir=tmp_path / "x_arrow",
        labels=["abseiling"],
        image_root=fresh_root,
        images="embed",
        chunk_rows=7,
        max_shard_bytes=20_000,
    )
    shards = sorted((out / "train").glob("data-*.arrow"))
    assert len(shards) > 2
    assert shards[0].name == f"data-00000-of-{len(shards):05d}.arrow"
    ds = datasets.load_from_disk(str(out))["train"]
    assert ds["id"] == [f"c{i:04d}" for i in range(50)]


def test_a_failed_rebuild_keeps_the_previous_dataset(tmp_path, fresh_root, monkeypatch):
    import datasets

    import kinetics_prep.arrow as arrow_module

    files = sorted((fresh_root / "frames").glob("*/frame_1.jpg"))[:2]
    out = tmp_path / "built" / "x_arrow"
    write_arrow_dataset(
        {"train": _samples(5, files)}, out_dir=out, labels=["abseiling"], image_root=fresh_root
    )
    real = arrow_module.rows_table
    calls = []

    def flaky(rows, **kwargs):
        calls.append(len(rows))
        if len(calls) == 2:
            raise OSError("disk full")
        return real(rows, **kwargs)

    monkeypatch.setattr(arrow_module, "rows_table", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_arrow_dataset(
            {"train": _samples(30, files)},
            out_dir=out,
            labels=["abseiling"],
            image_root=fresh_root,
            chunk_rows=10,
        )
    assert len(datasets.load_from_disk(str(out))["train"]) == 5
    assert sorted(p.name for p in out.parent.iterdir()) == ["x_arrow"]  # no temp folders left


def test_bench_arrow_quick_mode_builds_and_checks_every_method():
    """benchmarks/bench_arrow.py runs end to end (its methods load-check their output)."""
    import importlib.util

    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_arrow.py"
    spec = importlib.util.spec_from_file_location("bench_arrow", bench)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(
        ["--rows", "300", "--baseline-rows", "60", "--e2e-clips", "40", "--labels", "5"]
    )
    assert {"kprep @60", "from_list+save_to_disk @60", "from_generator+save_to_disk @60"} <= set(
        results
    )
    assert results["kprep arrow MB"] > 0
    assert sum(results["build_manifest e2e"]["splits"].values()) == 40


def test_trl_vision_sft_trains_on_the_arrow_dataset(fresh_root, tmp_path):
    """TRL's SFTTrainer takes the split as is (messages + images) and feeds the frames to Gemma 4."""
    pytest.importorskip("trl", reason="TRL is in the [dev] extra")
    import datasets
    import torch
    from transformers import AutoProcessor, Gemma4ForConditionalGeneration
    from trl import SFTConfig, SFTTrainer

    from trainer.tiny import tiny_model_path

    arrow = build(fresh_root, "--val-fraction", "0.3")
    train = datasets.load_from_disk(str(arrow))["train"]
    model = Gemma4ForConditionalGeneration.from_pretrained(tiny_model_path(), dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(tiny_model_path())
    seen: list[tuple[int, ...]] = []

    def record(module, args, kwargs):
        if kwargs.get("pixel_values") is not None:
            seen.append(tuple(kwargs["pixel_values"].shape))

    model.register_forward_pre_hook(record, with_kwargs=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_length=None,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=train, processing_class=processor)
    result = trainer.train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)
    assert len(seen) == 2 and all(shape[0] == 2 * 4 for shape in seen)  # 4 frames per sample
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
