"""Benchmark the Arrow dataset build (paths mode) against naive `datasets` builds, in one run.

A Kinetics-700-sized list is 650k rows of 4 frames. Rows are synthetic
``Sample`` s (like build-manifest makes) whose frames point at a handful of
real JPEGs, so only the dataset build is timed, not frame extraction.

Methods, each writing a ``load_from_disk``-able folder and checked by loading it:

- kprep: ``kinetics_prep.arrow.write_arrow_dataset(images="paths")``
  (pyarrow columns per 20k-row chunk, library ArrowWriter, no embedding);
- baseline A: ``Dataset.from_list(rows, features=...)`` then ``save_to_disk``
  (the obvious code; note ``save_to_disk`` embeds every referenced image, so a
  "paths" dataset is not even possible this way);
- baseline B: ``Dataset.from_generator(rows, features=...)`` then ``save_to_disk``
  (the streaming idiom for lists that do not fit in memory).

Baselines run on ``--baseline-rows`` (they are slow); kprep runs on the same
count for the ratio and on ``--rows`` for the absolute figure. Optionally
``--e2e-clips N`` times the whole ``build_manifest`` (records -> JSON + label
map + Arrow) on N clips of hard-linked frames. Usage::

    .venv/bin/python benchmarks/bench_arrow.py --rows 650000 --baseline-rows 20000 --e2e-clips 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def make_jpegs(folder: Path, count: int = 8) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"frame_{i + 1}.jpg"
        Image.new("RGB", (340, 256), (i * 30 % 255, 80, 160)).save(path, quality=90)
        paths.append(path)
    return paths


def make_samples(n: int, jpegs: list[Path], labels: list[str]) -> list[Any]:
    from kinetics_prep.schema import Sample

    samples = []
    for i in range(n):
        files = [str(jpegs[(i + k) % len(jpegs)]) for k in range(4)]
        clip = f"yt{i:09d}_000010_000020"
        label = labels[i % len(labels)]
        samples.append(
            Sample(
                id=clip,
                label=label,
                prompt="Please analyze the sequence of frames from this video. "
                "What specific action or event is happening?",
                answer=f"The video shows {label}.",
                images=files,  # absolute: the image root does not apply
                split="train",
                metadata={
                    "youtube_id": clip[:11],
                    "kinetics_split": "train",
                    "time_start": 10.0,
                    "time_end": 20.0,
                    "frame_indices": [31, 93, 156, 218],
                    "timestamps": [1.24, 3.72, 6.24, 8.72],
                },
            )
        )
    return samples


def row_dict(s: Any, label_ids: dict[str, int]) -> dict[str, Any]:
    """What a naive builder hands to `datasets`: the TRL row as python dicts."""
    return {
        "id": s.id,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "text": None}] * 4
                + [{"type": "text", "text": s.prompt}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": s.answer}]},
        ],
        "images": list(s.images),
        "video": None,
        "label": label_ids[s.label],
        "captions": s.captions,
        **s.metadata,
    }


def run_kprep(samples: list[Any], labels: list[str], out: Path) -> float:
    from kinetics_prep.arrow import write_arrow_dataset

    start = time.perf_counter()
    write_arrow_dataset({"train": samples}, out_dir=out, labels=labels, images="paths")
    return time.perf_counter() - start


def run_from_list(samples: list[Any], labels: list[str], out: Path) -> float:
    import datasets

    from kinetics_prep.schema import features_for

    label_ids = {name: i for i, name in enumerate(labels)}
    start = time.perf_counter()
    ds = datasets.Dataset.from_list(
        [row_dict(s, label_ids) for s in samples], features=features_for(labels)
    )
    datasets.DatasetDict({"train": ds}).save_to_disk(str(out))
    return time.perf_counter() - start


def run_from_generator(samples: list[Any], labels: list[str], out: Path) -> float:
    import datasets

    from kinetics_prep.schema import features_for

    label_ids = {name: i for i, name in enumerate(labels)}

    def rows():
        for s in samples:
            yield row_dict(s, label_ids)

    start = time.perf_counter()
    cache = out.with_name(out.name + "_cache")
    ds = datasets.Dataset.from_generator(
        rows, features=features_for(labels), cache_dir=str(cache), keep_in_memory=False
    )
    datasets.DatasetDict({"train": ds}).save_to_disk(str(out))
    seconds = time.perf_counter() - start
    shutil.rmtree(cache, ignore_errors=True)
    return seconds


def check(out: Path, n: int) -> None:
    import datasets

    ds = datasets.load_from_disk(str(out))["train"]
    assert len(ds) == n, (len(ds), n)
    assert len(ds[n - 1]["images"]) == 4


def run_e2e(clips: int, jpegs: list[Path], labels: list[str], work: Path) -> dict[str, Any]:
    """build_manifest on `clips` real records whose frames are hard links to a few JPEGs."""
    from kinetics_prep.manifest import ManifestConfig, build_manifest

    root = work / "e2e"
    records = []
    for i in range(clips):
        clip = f"yt{i:09d}_000010_000020"
        folder = root / "frames" / clip
        folder.mkdir(parents=True)
        for k in range(1, 5):
            os.link(jpegs[(i + k) % len(jpegs)], folder / f"frame_{k}.jpg")
        records.append(
            {
                "clip_id": clip,
                "video_path": f"clips/{clip}.mp4",
                "status": "ok",
                "error": None,
                "frame_indices": [31, 93, 156, 218],
                "timestamps": [1.24, 3.72, 6.24, 8.72],
                "frames": [f"frames/{clip}/frame_{k}.jpg" for k in range(1, 5)],
                "label": labels[i % len(labels)],
                "youtube_id": clip[:11],
            }
        )
    (root / "extract_results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = ManifestConfig(
        frames_dir=root, output=root / "m.json", images="paths", val_fraction=0.05
    )
    start = time.perf_counter()
    summary = build_manifest(config)
    seconds = time.perf_counter() - start
    check_dir = root / "m_arrow"
    import datasets

    assert sum(len(d) for d in datasets.load_from_disk(str(check_dir)).values()) == clips
    return {"clips": clips, "seconds": round(seconds, 2), "splits": summary.splits}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=650_000)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--e2e-clips", type=int, default=0)
    parser.add_argument("--labels", type=int, default=700)
    args = parser.parse_args(argv)

    import datasets

    datasets.disable_progress_bars()
    labels = [f"action {i:03d}" for i in range(args.labels)]
    work = Path(tempfile.mkdtemp(prefix="bench-arrow-"))
    try:
        jpegs = make_jpegs(work / "jpegs")
        small = make_samples(args.baseline_rows, jpegs, labels)
        results: dict[str, Any] = {"baseline_rows": args.baseline_rows, "rows": args.rows}
        raw: dict[str, float] = {}
        for name, method in [
            ("kprep", run_kprep),
            ("from_list+save_to_disk", run_from_list),
            ("from_generator+save_to_disk", run_from_generator),
        ]:
            out = work / f"{name}_small"
            raw[name] = method(small, labels, out)
            check(out, len(small))
            results[f"{name} @{args.baseline_rows}"] = round(raw[name], 3)
            shutil.rmtree(out)
        for name in ("from_list+save_to_disk", "from_generator+save_to_disk"):
            results[f"speedup vs {name}"] = round(raw[name] / raw["kprep"], 1)
            per_row = raw[name] / args.baseline_rows
            results[f"{name} extrapolated @{args.rows} (min)"] = round(per_row * args.rows / 60, 1)
        del small
        big = make_samples(args.rows, jpegs, labels)
        out = work / "kprep_big"
        seconds = run_kprep(big, labels, out)
        check(out, len(big))
        results[f"kprep @{args.rows} (min)"] = round(seconds / 60, 2)
        results["kprep arrow MB"] = round(
            sum(p.stat().st_size for p in out.rglob("*.arrow")) / 1e6, 1
        )
        del big
        shutil.rmtree(out)
        if args.e2e_clips:
            results["build_manifest e2e"] = run_e2e(args.e2e_clips, jpegs, labels, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import resource

    # peak RSS of this whole process (Linux reports ru_maxrss in KiB)
    results["peak RSS MB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
