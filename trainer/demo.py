"""`kprep demo`: the whole pipeline on a CPU, showing that training teaches frame order.

Stages, each a function below and each through the same library function as its
`kprep` command:

1. ``clips`` (:func:`make_clips`): synthetic 17-frame clips of a square moving
   left / right / up / down (:mod:`kinetics_prep.demo_clips`), one folder per
   class, under ``DIR/seed-N/`` (a folder per seed: another seed never reuses
   them). A clip played backwards is a clip of the opposite class, drawn with
   the same probability, and the 4 sampled frames of a clip are the same set
   as those of its reversed twin, so a model that ignores frame order cannot
   beat 50%: ``order_blind_ceiling`` is computed exactly
   (:func:`kinetics_prep.demo_clips.order_blind_ceiling`, 0.50).
2. ``extract`` (`kprep extract`): 4 frames per clip at segment centres
   (indices 2, 6, 10, 14 of 17), shrunk to ``frame_size`` pixels.
3. ``manifest`` (`kprep build-manifest`): the seed-format JSON and the label
   map; :func:`split_three_ways` then cuts it into train / validation / test
   with the product's own seeded group split (validation for tuning, test for
   every reported figure).
4. ``model`` / ``train`` (`kprep train`'s default kind of run): a LoRA adapter
   (r 16, alpha 32) on the text layers' q/k/v/o/gate/up/down projections,
   saved as a PEFT adapter, with the vision->text projector training through
   ``--projector-lr``; no embedding or full fine-tuning. The base is the
   packaged *pretrained* tiny Gemma 4 (:mod:`trainer.pretrain_tiny`: trained
   on ONE still frame to name where a square is, nothing about motion or
   order), as real LoRA adapts a pretrained Gemma 4.
5. ``control``: the same mode and recipe (``control_steps`` steps) on the same clips with every training sample's
   frames permuted at random, so order carries no signal: its test top-1 must
   stay near the order-blind ceiling.
6. ``eval`` (`kprep eval`, which loads a LoRA adapter with
   ``PeftModel.from_pretrained``): test top-1 with the frames in order,
   shuffled and reversed, and the control's in order.
7. ``sheet``: ``contact_sheet.png``, a few test clips' frames in order and
   reversed with the model's answer to each.

``DIR/demo_report.json`` holds the figures (keys in :data:`REPORT_KEYS`),
``DIR/eval_report.json`` / ``.md`` the full evaluation.

Why a pretrained base: on the random tiny model the read-out is the tied
embedding matrix (std 0.016 at hidden 64), which LoRA cannot change, and the
random body has no vision->text path to adapt; LoRA sat at chance there
(issue 13). See :mod:`trainer.pretrain_tiny` for how the base is built.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kinetics_prep.fileio import atomic_write_json, atomic_write_text
from kinetics_prep.schema import split_path
from trainer.errors import DemoError

logger = logging.getLogger(__name__)

DEMO_STEM = "kinetic_demo"
REPORT_NAME = "demo_report.json"
SHEET_NAME = "contact_sheet.png"
MARKER = ".kprep-demo"  # marks a seed folder kprep demo created (its runs may be replaced)
TARGETS: dict[str, Any] = {
    "top1": 0.90,  # at least
    "top1_reversed": 0.10,  # at most
    "order_blind_control_top1": 0.60,  # at most
    "order_blind_ceiling": (0.495, 0.505),  # within
    "total_seconds": 600,  # at most
}
REPORT_KEYS = (
    "top1",
    "top1_shuffled",
    "top1_reversed",
    "order_blind_ceiling",
    "order_blind_control_top1",
    "lora_modules",
    "trainable_parameters",
    "splits",
    "seed",
    "train_seconds",
    "total_seconds",
    "targets_met",
)

Stage = Callable[[str, str], None]  # (stage, message)


@dataclass
class DemoConfig:
    """Settings of `kprep demo`."""

    output_dir: str = "dataset/demo"
    clips_per_class: int = 125
    val_fraction: float = 0.15  # validation: for tuning, never reported
    test_fraction: float = 0.2  # test: every reported figure
    clip_size: int = 64
    clip_frames: int = 17  # 4 centre samples of 17 frames are symmetric under reversal
    frame_size: int = 32
    max_steps: int = 600
    control_steps: int = 600  # the order-blind control trains as long as the demo
    batch_size: int = 8
    learning_rate: float = 2e-3  # the text layers' LoRA adapters
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    projector_lr: float = 1e-3
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine"
    control: bool = True  # also train the order-blind control
    eval_split: str = "test"  # "validation" while tuning
    base_model: str | None = None  # default: the packaged pretrained tiny Gemma 4
    workers: int = 2
    torch_threads: int | None = 1  # tiny ops: 1 thread is ~8x faster than 2 on a busy 2-core box
    seed: int = 0
    max_eval_samples: int | None = None
    sheet_clips: int = 4
    answer_template: str = "The video shows {label}."

    def __post_init__(self) -> None:
        problems = []
        counts = (
            "clips_per_class",
            "max_steps",
            "control_steps",
            "batch_size",
            "workers",
            "clip_frames",
            "lora_r",
        )
        rates = ("learning_rate", "projector_lr")
        minimums = {**dict.fromkeys(counts, 1), **dict.fromkeys(rates, 0)}
        for name, least in minimums.items():
            if getattr(self, name) < least:
                problems.append(
                    f"--{name.replace('_', '-')} ({getattr(self, name)}) must be >= {least}"
                )
        for name in ("val_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                problems.append(
                    f"--{name.replace('_', '-')} ({getattr(self, name)}) must be in (0, 1)"
                )
        if self.val_fraction + self.test_fraction >= 0.9:
            problems.append(
                f"--val-fraction + --test-fraction ({self.val_fraction + self.test_fraction}) "
                "must be < 0.9: training needs the rest"
            )
        if self.eval_split not in ("validation", "test"):
            problems.append(f"--eval-split ({self.eval_split!r}) must be validation or test")
        if self.frame_size % 8 or self.frame_size < 16:
            problems.append(
                f"--frame-size ({self.frame_size}) must be a multiple of 8 and >= 16 "
                "(the demo model's patch 4 x pooling 2)"
            )
        if self.clip_size < self.frame_size:
            problems.append(
                f"--clip-size ({self.clip_size}) must be >= --frame-size ({self.frame_size})"
            )
        if self.base_model and not (Path(self.base_model) / "config.json").is_file():
            problems.append(
                f"--base-model ({self.base_model}) has no config.json: pass a Gemma 4 model folder"
            )
        if self.clip_frames < 4:
            problems.append(f"--clip-frames ({self.clip_frames}) must be >= 4 (4 are sampled)")
        if problems:
            raise DemoError("; ".join(problems))

    @property
    def seed_dir(self) -> Path:
        return Path(self.output_dir) / f"seed-{self.seed}"


def build_demo_model(output_dir: str | Path, *, seed: int = 1234) -> Path:
    """The packaged tiny Gemma 4 recipe, with a linear position table and no resize.

    The vision position table (2, P, hidden) becomes ``table[axis, i] = (i / 8 - 1) * u_axis``
    for a fixed random unit-scale direction ``u_axis`` per axis: patch column
    ``i`` (row for axis 1) shifts a patch's embedding along ``u_axis`` in
    proportion to ``i``. Everything else is ``build_tiny_gemma4``'s.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from trainer.tiny import build_tiny_gemma4

    output_dir = Path(output_dir)
    build_tiny_gemma4(output_dir, seed=seed)
    weights = output_dir / "model.safetensors"
    tensors = load_file(str(weights))
    key = next(k for k in tensors if k.endswith("patch_embedder.position_embedding_table"))
    table = tensors[key]
    axes, size, hidden = table.shape
    generator = torch.Generator().manual_seed(seed + 2)
    ramp = torch.arange(size, dtype=torch.float32)[:, None] / 8 - 1
    linear = torch.stack(
        [ramp * torch.randn(hidden, generator=generator)[None, :] * 0.5 for _ in range(axes)]
    )
    tensors[key] = linear.to(table.dtype).contiguous()
    save_file(tensors, str(weights), metadata={"format": "pt"})
    config_path = output_dir / "processor_config.json"
    processor_config = json.loads(config_path.read_text(encoding="utf-8"))
    processor_config["image_processor"]["do_resize"] = False
    config_path.write_text(json.dumps(processor_config, indent=2) + "\n", encoding="utf-8")
    build = output_dir / "tiny_build.json"
    info = json.loads(build.read_text(encoding="utf-8"))
    info.update(
        position_table="linear: (i / 8 - 1) * 0.5 * N(0, 1) direction per axis",
        image_processor_do_resize=False,
        built_by="trainer.demo.build_demo_model",
    )
    build.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return output_dir


def _stage(on_stage: Stage | None, name: str, message: str) -> None:
    logger.info("[%s] %s", name, message)
    if on_stage is not None:
        on_stage(name, message)


def _replaceable(folder: Path) -> None:
    """Remove a run folder of an earlier demo, only inside a seed folder kprep created."""
    if not folder.exists():
        return
    check_outputs(folder.parent)
    shutil.rmtree(folder)


def check_outputs(seed_dir: Path) -> None:
    """Refuse, before any work, run folders in ``seed_dir`` that kprep demo did not write."""
    for folder in (seed_dir / "run", seed_dir / "control"):
        if folder.exists() and not (seed_dir / MARKER).is_file():
            raise DemoError(
                f"{folder} exists and kprep did not write it (no {MARKER} in {seed_dir}): "
                "pass another --output-dir"
            )


def make_clips(config: DemoConfig) -> list:
    """Stage 1: the seed's clips under ``DIR/seed-N/clips`` (kept across reruns of that seed)."""
    from kinetics_prep.demo_clips import write_demo_clips

    seed_dir = config.seed_dir
    seed_dir.mkdir(parents=True, exist_ok=True)
    (seed_dir / MARKER).write_text("written by kprep demo\n", encoding="utf-8")
    return write_demo_clips(
        seed_dir / "clips",
        clips_per_class=config.clips_per_class,
        num_frames=config.clip_frames,
        size=config.clip_size,
        seed=config.seed,
    )


def extract_frames(config: DemoConfig):
    """Stage 2: `kprep extract` of the seed's clips into ``DIR/seed-N/data``."""
    from kinetics_prep.extract import ExtractConfig, extract_clips

    data = config.seed_dir / "data"
    extracted = extract_clips(
        ExtractConfig(
            clips=config.seed_dir / "clips",
            output_dir=data,
            num_frames=4,
            sampling="center",
            short_side=config.frame_size,
            workers=config.workers,
        )
    )
    if extracted.ok + extracted.skipped_ok == 0:
        failed = sum(extracted.failed.values())
        raise DemoError(f"extract: no clip was extracted ({failed} failed): see {data}")
    return extracted


def split_three_ways(config: DemoConfig) -> dict[str, Path]:
    """Stage 3: `kprep build-manifest`, then train / validation / test split files.

    ``build_manifest`` holds out ``val_fraction + test_fraction`` of the clips
    (its seeded group split); the held-out part is cut again by the same
    function (:func:`kinetics_prep.manifest.assign_splits`, another seed) into
    validation and test. Returns the three JSON paths.
    """
    from kinetics_prep.manifest import ManifestConfig, assign_splits, build_manifest

    data = config.seed_dir / "data"
    manifest = data / f"{DEMO_STEM}.json"
    build_manifest(
        ManifestConfig(
            frames_dir=data,
            output=manifest,
            val_fraction=config.val_fraction + config.test_fraction,
            seed=config.seed,
            answer_template=config.answer_template,
        )
    )
    held = json.loads(split_path(manifest, "validation").read_text("utf-8"))
    share = config.test_fraction / (config.val_fraction + config.test_fraction)
    side = assign_splits({e["id"]: e["id"] for e in held}, val_fraction=share, seed=config.seed + 1)
    paths = {"train": split_path(manifest, "train")}
    for name, picked in (("validation", "train"), ("test", "validation")):
        rows = [dict(e, split=name) for e in held if side[e["id"]] == picked]
        paths[name] = split_path(manifest, name)
        _atomic_json(paths[name], rows)
    return paths


def permuted_copy(train_json: Path, output: Path, *, seed: int) -> Path:
    """The control's training data: each sample's frames in a random order of its own.

    Same samples, same answers; only the order of the image entries changes (a
    seeded uniform permutation per sample), so frame order says nothing about
    the class.
    """
    import random

    rows = json.loads(train_json.read_text("utf-8"))
    for index, row in enumerate(rows):
        content = row["messages"][0]["content"]
        images = [c for c in content if c.get("type") == "image"]
        random.Random(f"{seed}:{index}").shuffle(images)
        it = iter(images)
        row["messages"][0]["content"] = [
            next(it) if c.get("type") == "image" else c for c in content
        ]
    _atomic_json(output, rows)
    return output


def _atomic_json(path: Path, value: Any) -> None:
    atomic_write_json(path, value)


def base_model_path(config: DemoConfig) -> Path:
    """The base the demo's LoRA adapts: ``--base-model``, else the packaged pretrained tiny Gemma 4."""
    if config.base_model:
        return Path(config.base_model)
    from trainer.pretrain_tiny import pretrained_model_path

    return pretrained_model_path()


def train_run(
    config: DemoConfig, data_json: Path, run_dir: Path, *, steps: int | None = None
) -> dict[str, Any]:
    """Stage 4 / 5: `kprep train`: a LoRA adapter on the text layers, the projector at its lr."""
    from trainer.config import TrainConfig
    from trainer.train import train

    _replaceable(run_dir)
    steps = steps or config.max_steps
    return train(
        TrainConfig(
            model_id=str(base_model_path(config)),
            data_path=str(data_json),
            output_dir=str(run_dir),
            max_steps=steps,
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=1,
            learning_rate=config.learning_rate,
            use_lora=True,
            lora_r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            projector_lr=config.projector_lr,
            optim="adamw_torch",
            lr_scheduler_type=config.lr_scheduler,
            warmup_ratio=config.warmup_ratio,
            bf16=False,
            gradient_checkpointing=False,
            save_steps=steps + 1,
            save_total_limit=1,
            logging_steps=max(steps // 20, 1),
            seed=config.seed,
            torch_threads=config.torch_threads,
        )
    )


def evaluate_run(
    config: DemoConfig,
    data_json: Path,
    run_dir: Path,
    *,
    orders: tuple[str, ...],
    output: Path,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Stage 6: `kprep eval` of an adapter on the evaluation split."""
    from trainer.evaluate import EvalConfig, evaluate

    return evaluate(
        EvalConfig(
            model_id=str(base_model_path(config)),
            data_path=str(data_json),
            split=config.eval_split,
            adapter=str(run_dir),
            frame_orders=orders,
            method="both",
            batch_size=8,
            max_new_tokens=12,
            top_k=2,
            seed=config.seed,
            max_samples=config.max_eval_samples,
            torch_threads=config.torch_threads,
            output=str(output),
        ),
        progress=progress,
    )


def _result(report: dict[str, Any], order: str, method: str) -> float | None:
    for run in report["runs"]:
        if run["frame_order"] == order and method in run:
            return float(run[method]["top1"])
    return None


def targets_met(result: dict[str, Any]) -> bool:
    """Whether the figures meet :data:`TARGETS` (a missing figure fails)."""
    low, high = TARGETS["order_blind_ceiling"]
    checks = [
        result.get("top1") is not None and result["top1"] >= TARGETS["top1"],
        result.get("top1_reversed") is not None
        and result["top1_reversed"] <= TARGETS["top1_reversed"],
        result.get("order_blind_control_top1") is not None
        and result["order_blind_control_top1"] <= TARGETS["order_blind_control_top1"],
        low <= result["order_blind_ceiling"] <= high,
        result["total_seconds"] <= TARGETS["total_seconds"],
    ]
    return all(checks)


def run_demo(
    config: DemoConfig,
    *,
    on_stage: Stage | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run every stage; write and return the demo report."""
    import torch

    from kinetics_prep.demo_clips import order_blind_ceiling
    from kinetics_prep.sampling import sample_indices

    threads_before = torch.get_num_threads()
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_dir = config.seed_dir
    run_dir, control_dir = seed_dir / "run", seed_dir / "control"
    seconds: dict[str, float] = {}
    started = time.time()
    check_outputs(seed_dir)  # before any work
    try:
        t = time.time()
        clips = make_clips(config)
        indices = sample_indices(config.clip_frames, 4, method="center")
        ceiling = order_blind_ceiling(
            num_frames=config.clip_frames, size=config.clip_size, indices=indices
        )
        seconds["clips"] = time.time() - t
        _stage(
            on_stage,
            "clips",
            f"{len(clips)} clips in {seed_dir / 'clips'}; frames {indices} of "
            f"{config.clip_frames}: exact order-blind ceiling {ceiling:.4f} "
            f"({seconds['clips']:.1f} s)",
        )

        t = time.time()
        extracted = extract_frames(config)
        seconds["extract"] = time.time() - t
        _stage(
            on_stage,
            "extract",
            f"{extracted.ok} clips extracted, {extracted.skipped_ok} already done, "
            f"{sum(extracted.failed.values())} failed ({seconds['extract']:.1f} s)",
        )

        t = time.time()
        paths = split_three_ways(config)
        splits = {k: len(json.loads(p.read_text("utf-8"))) for k, p in paths.items()}
        seconds["manifest"] = time.time() - t
        _stage(on_stage, "manifest", f"splits {splits} ({seconds['manifest']:.1f} s)")

        t = time.time()
        base = base_model_path(config)
        seconds["model"] = time.time() - t
        _stage(on_stage, "model", f"LoRA on {base} ({seconds['model']:.1f} s)")

        t = time.time()
        summary = train_run(config, paths["train"], run_dir)
        seconds["train"] = time.time() - t
        _stage(
            on_stage,
            "train",
            f"LoRA: {summary.get('lora_modules')} modules, {summary.get('trainable_params')} "
            f"trainable parameters, {summary.get('global_step')} steps, final loss "
            f"{summary.get('final_loss')} ({seconds['train']:.1f} s)",
        )

        control_summary = None
        if config.control:
            t = time.time()
            control_json = permuted_copy(
                paths["train"],
                paths["train"].with_name(f"{DEMO_STEM}.train_permuted.json"),
                seed=config.seed,
            )
            control_summary = train_run(
                config, control_json, control_dir, steps=config.control_steps
            )
            seconds["control"] = time.time() - t
            _stage(
                on_stage,
                "control",
                f"order-blind control (frames permuted per sample): "
                f"{control_summary.get('global_step')} steps, final loss "
                f"{control_summary.get('final_loss')} ({seconds['control']:.1f} s)",
            )

        t = time.time()
        eval_json = paths[config.eval_split]
        report = evaluate_run(
            config,
            eval_json,
            run_dir,
            orders=("normal", "shuffled", "reversed"),
            output=out / "eval_report.json",
            progress=progress,
        )
        control_top1 = None
        if config.control:
            control_report = evaluate_run(
                config,
                eval_json,
                control_dir,
                orders=("normal",),
                output=out / "control_eval_report.json",
            )
            control_top1 = _result(control_report, "normal", "generation")
        seconds["eval"] = time.time() - t
        _stage(
            on_stage,
            "eval",
            f"{report['num_samples']} {config.eval_split} samples ({seconds['eval']:.1f} s)",
        )

        t = time.time()
        sheet = write_contact_sheet(report, eval_json, out / SHEET_NAME, count=config.sheet_clips)
        seconds["sheet"] = time.time() - t
        _stage(on_stage, "sheet", f"{sheet} ({seconds['sheet']:.1f} s)")
    finally:
        torch.set_num_threads(threads_before)

    result: dict[str, Any] = {
        "top1": _result(report, "normal", "generation"),
        "top1_shuffled": _result(report, "shuffled", "generation"),
        "top1_reversed": _result(report, "reversed", "generation"),
        "top1_ranking": _result(report, "normal", "ranking"),
        "top1_ranking_shuffled": _result(report, "shuffled", "ranking"),
        "top1_ranking_reversed": _result(report, "reversed", "ranking"),
        "order_blind_ceiling": round(ceiling, 6),
        "order_blind_control_top1": control_top1,
        "eval_split": config.eval_split,
        "lora_modules": summary.get("lora_modules"),
        "trainable_parameters": summary.get("trainable_params"),
        "trainable_by_part": summary.get("trainable_by_part"),
        "base_model": str(base_model_path(config)),
        "splits": splits,
        "seed": config.seed,
        "sampled_frames": indices,
        "train_seconds": round(seconds["train"], 2),
        "total_seconds": round(time.time() - started, 2),
        "stage_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "train_steps": summary.get("global_step"),
        "control_steps": (control_summary or {}).get("global_step"),
        "train_samples_per_second": summary.get("train_samples_per_second"),
        "final_loss": summary.get("final_loss"),
        "control_final_loss": (control_summary or {}).get("final_loss"),
        "labels": report.get("labels"),
        "chance_top1": report["chance_top1"],
        "targets": TARGETS,
        "config": asdict(config),
        "eval_report": str(out / "eval_report.json"),
        "contact_sheet": str(sheet),
        "run_dir": str(run_dir),
        "control_dir": str(control_dir) if config.control else None,
    }
    result["targets_met"] = targets_met(result)
    _atomic_json(out / REPORT_NAME, result)
    _atomic_json(seed_dir / REPORT_NAME, result)
    markdown = demo_markdown(result, out)
    atomic_write_text((out / REPORT_NAME).with_suffix(".md"), markdown)
    result["eval"] = report
    return result


def demo_markdown(result: dict[str, Any], out: Path) -> str:
    """``demo_report.md``: the figures against their targets, and the pictures."""

    def fig(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    low, high = TARGETS["order_blind_ceiling"]
    split = result["eval_split"]
    rows = [
        ("top-1, frames in order", fig(result["top1"]), f">= {TARGETS['top1']}"),
        ("top-1, frames reversed", fig(result["top1_reversed"]), f"<= {TARGETS['top1_reversed']}"),
        (
            "top-1, frames shuffled",
            fig(result["top1_shuffled"]),
            "none (about 0.5 for an order reader)",
        ),
        (
            "order-blind control top-1",
            fig(result["order_blind_control_top1"]),
            f"<= {TARGETS['order_blind_control_top1']}",
        ),
        ("exact order-blind ceiling", f"{result['order_blind_ceiling']:.4f}", f"{low} .. {high}"),
        ("whole demo (s)", f"{result['total_seconds']:.0f}", f"<= {TARGETS['total_seconds']}"),
    ]
    run = Path(result["run_dir"])
    lines = [
        f"# kprep demo, seed {result['seed']}",
        "",
        f"A LoRA adapter ({result['lora_modules']} modules, "
        f"{result['trainable_parameters']:,} trainable parameters) on `{result['base_model']}`; "
        f"splits {result['splits']}; figures from the **{split}** split. "
        f"Targets met: **{result['targets_met']}**.",
        "",
        f"| figure ({split} split) | value | target |",
        "|---|---:|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        "Full evaluation: [eval_report.md](eval_report.md).",
        "",
        f"![contact sheet]({SHEET_NAME})",
        "",
        f"![training loss]({run.relative_to(out).as_posix()}/loss_curve.png)",
        "",
    ]
    if result.get("control_dir"):
        control = Path(result["control_dir"]).relative_to(out).as_posix()
        lines += [f"![order-blind control training loss]({control}/loss_curve.png)", ""]
    lines += ["![confusion matrices](eval_report_confusion.png)", ""]
    return "\n".join(lines)


def write_contact_sheet(
    report: dict[str, Any], eval_json: Path, path: Path, *, count: int = 4
) -> Path:
    """A PNG: ``count`` evaluated clips, frames in order and reversed, with the answers.

    One row per (clip, order): its 4 frames left to right as the model saw them
    (``frame k`` = the k-th sampled frame of the clip), the clip's label, and
    the model's generated answer, green when it names the direction the frames
    show in that order (the label in order, the opposite class reversed) and
    red otherwise. Clips: the first of each class in the evaluation split, then
    the next ones, ``count`` in all.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from kinetics_prep.demo_clips import REVERSED_CLASS
    from trainer.data import load_samples

    images_of = {s.id: list(s.images) for s in load_samples(str(eval_json))}
    runs = {r["frame_order"]: r for r in report["runs"] if r.get("model") != "base"}
    orders = [o for o in ("normal", "reversed") if o in runs]
    rows = []
    predictions = runs[orders[0]]["predictions"]
    picked: list[dict[str, Any]] = []
    for pred in predictions:  # one clip per class first, then the next ones
        if pred["label"] not in {p["label"] for p in picked}:
            picked.append(pred)
    picked += [p for p in predictions if p not in picked]
    for first in picked[:count]:
        for order in orders:
            pred = next(p for p in runs[order]["predictions"] if p["id"] == first["id"])
            rows.append((order, pred))
    fig, axes = plt.subplots(len(rows), 4, figsize=(6.0, 1.9 * len(rows)), squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.3 / len(rows), bottom=0.03, hspace=0.55)
    fig.subplots_adjust(wspace=0.06)
    for r, (order, pred) in enumerate(rows):
        images = images_of.get(pred["id"], [])
        perm = pred.get("frame_order") or list(range(len(images)))
        for c in range(4):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(perm) and perm[c] < len(images):
                ax.imshow(Image.open(images[perm[c]]).convert("RGB"), interpolation="nearest")
                ax.set_xlabel(f"frame {perm[c] + 1}", fontsize=7, labelpad=1)
        shown = pred["label"] if order == "normal" else REVERSED_CLASS.get(pred["label"], "?")
        answer = pred.get("generated_label")
        said = answer or f"{str(pred.get('generated'))[:16]!r} (no label)"
        axes[r][0].text(
            0,
            1.08,
            f"{pred['id']}, frames {order}: shows {shown}; model: {said}",
            transform=axes[r][0].transAxes,
            fontsize=8,
            color="green" if answer == shown else "red",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
    return path
