"""Pretrain the demo's tiny Gemma 4 on a single-frame task, so LoRA has a base to adapt.

Why: ``kprep demo`` trains the way the product does (LoRA on the text layers,
the projector through ``--projector-lr``). On a *random* tiny Gemma 4 that
cannot work: the read-out is the tied embedding matrix (std 0.016 at hidden
64), which LoRA cannot change, and the random body has no vision->text path to
adapt (issue 13 measured top-1 at chance after 1,500 LoRA steps). Real LoRA
starts from a pretrained Gemma 4, so the demo does too: this script pretrains
the tiny model once, on a *different* task, and the weights ship as package
data (``trainer/assets/tiny-gemma4-pretrained/``).

The pretraining task names where a square is in ONE still frame::

    user:  <|image|> Where is the square in this image?
    model: The image shows a square at the top left.

(rows top / middle / bottom, columns left / centre / right). The frames look
like demo frames (a bright square on a dark background, drawn at 64 px and
shrunk to 32 px with the extract stage's own resize and JPEG code), but each
sample is one still image: nothing here carries motion or frame order. A
tenth of the samples (``naming_share``) ask ``Name an action.`` and answer
``The video shows <name>.``, half of them (``demo_name_share``) one of the
demo's four direction names, the rest a Kinetics-400 label, drawn at random
and unrelated to the image: a language prior (a real Gemma 4 can write
"moving left"; LoRA cannot train the tied read-out, so the words of the
demo's answers must already be readable).

It trains through :func:`trainer.train.train` (full fine-tuning: text layers
3e-4, token embeddings 1e-3, vision tower 3e-4, projector 1e-3; 1,200 steps of
batch 16), starting from :func:`trainer.demo.build_demo_model` (the packaged
tiny model with a linear vision position table and no processor resize).
What made it learn, measured (docs/evaluation.md): at text 1e-3 / embeddings
3e-3 the model learnt the answer templates and then ignored the image (every
still answered "middle centre"); at the rates above it reads the image, and
with a quarter of the samples naming actions instead of a tenth, one of two
seeds did not pick the image up within 1,200 steps. Rebuild the shipped
weights with::

    python -m trainer.pretrain_tiny --output trainer/assets/tiny-gemma4-pretrained

The build ends with a position check on 120 fresh stills (``position_check``
in ``pretrain_build.json``); rerun it on any base with::

    python -m trainer.pretrain_tiny --evaluate trainer/assets/tiny-gemma4-pretrained

Same arguments and seed give the same data and the same training run
(``pretrain_build.json`` in the output records them and the final loss).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PRETRAIN_PROMPT = "Where is the square in this image?"
NAMING_PROMPT = "Name an action."
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")
PRETRAINED_DIR = "tiny-gemma4-pretrained"
# Files of a pretrained model folder that the package ships (no optimizer state).
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "tiny_build.json",
    "pretrain_build.json",
)


@dataclass
class PretrainConfig:
    """Settings of the pretraining run (the defaults built the shipped weights)."""

    output: str = f"trainer/assets/{PRETRAINED_DIR}"
    samples: int = 4000
    size: int = 64  # drawn at this size ...
    frame_size: int = 32  # ... and shrunk to this, as the demo's extract stage does
    naming_share: float = 0.1  # share of "name an action" samples (the language prior)
    demo_name_share: float = 0.5  # share of those naming one of the demo's four directions
    max_steps: int = 1200
    batch_size: int = 16
    learning_rate: float = 3e-4  # text layers (full fine-tuning)
    embedding_lr: float = 1e-3  # token embeddings = the tied read-out
    image_encoder_lr: float = 3e-4  # vision tower
    projector_lr: float = 1e-3
    seed: int = 0
    torch_threads: int | None = 1
    check_samples: int = 120  # held-out stills for the position check after training (0: skip)


def position_answer(x: int, y: int, side: int, size: int) -> str:
    """The answer for a square whose top-left corner is (x, y): its centre's third per axis.

    >>> position_answer(0, 0, 10, 64), position_answer(50, 27, 10, 64)
    ('The image shows a square at the top left.', 'The image shows a square at the middle right.')
    """
    cx, cy = x + side / 2, y + side / 2
    column = COLUMNS[min(int(3 * cx / size), 2)]
    row = ROWS[min(int(3 * cy / size), 2)]
    return f"The image shows a square at the {row} {column}."


def action_names() -> list[str]:
    """What the naming samples name: Kinetics-400 labels and the demo's four directions."""
    from kinetics_prep.demo_clips import DEMO_CLASSES

    text = (resources.files("kinetics_prep") / "data" / "kinetics400_labels.txt").read_text(
        encoding="utf-8"
    )
    return sorted({x.strip() for x in text.splitlines() if x.strip()} | set(DEMO_CLASSES))


def write_position_frames(
    folder: str | Path,
    *,
    samples: int,
    size: int = 64,
    frame_size: int = 32,
    naming_share: float = 0.5,
    demo_name_share: float = 0.5,
    seed: int = 0,
) -> Path:
    """Write ``samples`` one-frame samples (JPEG + manifest entry); return the manifest path.

    Square side, colours and position are drawn like the demo clips' (side 1/6 to
    1/4 of ``size``, colour 128-255, background 0-59), the position uniformly
    over the frame. A ``naming_share`` of the samples ask ``NAMING_PROMPT``
    instead and answer ``The video shows <a random action name>.``: a language
    prior (a real Gemma 4 knows how to write such a sentence), unrelated to
    the image, so the read-out of those words is trained but nothing links
    them to what the frame shows.
    """
    import numpy as np

    from kinetics_prep.demo_clips import DEMO_CLASSES
    from kinetics_prep.frames import encode_jpeg, resize_short_side

    folder = Path(folder)
    rng = np.random.default_rng([seed, 1313])
    names = action_names()
    entries: list[dict[str, Any]] = []
    for i in range(samples):
        side = int(rng.integers(size // 6, size // 4 + 1))
        room = size - side
        x, y = (int(v) for v in rng.integers(0, room + 1, size=2))
        colour = rng.integers(128, 256, size=3).astype(np.uint8)
        frame = np.empty((size, size, 3), dtype=np.uint8)
        frame[:] = rng.integers(0, 60, size=3).astype(np.uint8)
        frame[y : y + side, x : x + side] = colour
        clip = f"still{i:05d}"
        rel = f"frames/{clip}/frame_1.jpg"
        (folder / "frames" / clip).mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(encode_jpeg(resize_short_side(frame, frame_size), 95))
        prompt, answer = PRETRAIN_PROMPT, position_answer(x, y, side, size)
        label = answer.removeprefix("The image shows a square at the ").removesuffix(".")
        if rng.random() < naming_share:
            pool = DEMO_CLASSES if rng.random() < demo_name_share else names
            prompt, label = NAMING_PROMPT, pool[int(rng.integers(len(pool)))]
            answer = f"The video shows {label}."
        entries.append(
            {
                "id": clip,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "image": rel},
                            {"type": "text", "text": prompt},
                        ],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                ],
                "label": label,
                "split": "train",
            }
        )
    path = folder / "pretrain.json"
    path.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    return path


def pretrained_model_path() -> Path:
    """The packaged pretrained tiny Gemma 4 (built by this module)."""
    path = Path(str(resources.files("trainer") / "assets" / PRETRAINED_DIR))
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"packaged pretrained tiny model missing at {path}: rebuild it with "
            "`python -m trainer.pretrain_tiny`"
        )
    return path


def pretrain(config: PretrainConfig) -> dict[str, Any]:
    """Build the demo base, pretrain it on still frames, keep only the model files."""
    from trainer.config import TrainConfig
    from trainer.demo import build_demo_model
    from trainer.train import train

    started = time.time()
    output = Path(config.output)
    if output.exists() and not (output / "pretrain_build.json").is_file():
        raise FileExistsError(
            f"{output} exists and was not written by trainer.pretrain_tiny "
            "(no pretrain_build.json): choose another --output"
        )
    with tempfile.TemporaryDirectory(prefix="kprep-pretrain-") as tmp:
        work = Path(tmp)
        base = build_demo_model(work / "base")
        manifest = write_position_frames(
            work / "data",
            samples=config.samples,
            size=config.size,
            frame_size=config.frame_size,
            naming_share=config.naming_share,
            demo_name_share=config.demo_name_share,
            seed=config.seed,
        )
        run = work / "run"
        summary = train(
            TrainConfig(
                model_id=str(base),
                data_path=str(manifest),
                output_dir=str(run),
                max_steps=config.max_steps,
                per_device_train_batch_size=config.batch_size,
                gradient_accumulation_steps=1,
                learning_rate=config.learning_rate,
                embedding_lr=config.embedding_lr,
                image_encoder_lr=config.image_encoder_lr,
                projector_lr=config.projector_lr,
                use_lora=False,
                optim="adamw_torch",
                lr_scheduler_type="cosine",
                warmup_ratio=0.05,
                bf16=False,
                gradient_checkpointing=False,
                save_steps=config.max_steps + 1,
                save_total_limit=1,
                logging_steps=max(config.max_steps // 20, 1),
                seed=config.seed,
                torch_threads=config.torch_threads,
            )
        )
        staged = work / "staged"
        staged.mkdir()
        for name in MODEL_FILES:
            source = run / name if (run / name).is_file() else base / name
            if source.is_file():
                shutil.copy2(source, staged / name)
        build = {
            "built_by": "trainer.pretrain_tiny",
            "command": "python -m trainer.pretrain_tiny",
            "task": (
                f"one still frame: '{PRETRAIN_PROMPT}' -> '{position_answer(0, 0, 10, 64)}' "
                f"(3x3 positions), or '{NAMING_PROMPT}' -> 'The video shows <random action>.'"
            ),
            "config": asdict(config),
            "final_loss": summary.get("final_loss"),
            "global_step": summary.get("global_step"),
            "train_seconds": summary.get("train_runtime_s"),
            "losses": [e["loss"] for e in summary.get("log_history", []) if "loss" in e],
        }
        if config.check_samples:
            build["position_check"] = position_accuracy(staged, samples=config.check_samples)
        (staged / "pretrain_build.json").write_text(
            json.dumps(build, indent=2) + "\n", encoding="utf-8"
        )
        if output.exists():
            shutil.rmtree(output)  # written by this script: checked before training
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(output))
    build["seconds"] = round(time.time() - started, 1)
    logger.info("pretrained tiny Gemma 4 -> %s (final loss %s)", output, build["final_loss"])
    return build


def position_accuracy(model_dir: str | Path, *, samples: int = 120, seed: int = 7) -> dict:
    """Held-out top-1 of a base on the position task (9 classes, chance 1/9), via `kprep eval`.

    Fresh stills (another seed than training, no naming samples), ranked over
    the 9 answers and generated greedily.
    """
    from kinetics_prep.schema import LABEL_MAP_NAME
    from trainer.evaluate import EvalConfig, evaluate

    with tempfile.TemporaryDirectory(prefix="kprep-position-") as tmp:
        folder = Path(tmp)
        manifest = write_position_frames(folder, samples=samples, naming_share=0.0, seed=seed)
        labels = [f"{row} {column}" for row in ROWS for column in COLUMNS]
        label_map = folder / LABEL_MAP_NAME
        label_map.write_text(
            json.dumps(
                {"labels": labels, "answer_template": "The image shows a square at the {label}."}
            ),
            encoding="utf-8",
        )
        report = evaluate(
            EvalConfig(
                model_id=str(model_dir),
                data_path=str(manifest),
                label_map=str(label_map),
                method="both",
                max_new_tokens=24,
                batch_size=9,
                torch_threads=1,
            )
        )
    run = report["runs"][0]
    answers: dict[str, int] = {}
    for row in run["predictions"]:
        answers[str(row["generated_label"])] = answers.get(str(row["generated_label"]), 0) + 1
    return {
        "samples": samples,
        "chance_top1": 1 / len(labels),
        "ranking_top1": run["ranking"]["top1"],
        "generation_top1": run["generation"]["top1"],
        "generated_labels": dict(sorted(answers.items(), key=lambda kv: -kv[1])),
    }


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--evaluate", metavar="MODEL_DIR", help="Only measure a base's position top-1."
    )
    defaults = PretrainConfig()
    for name, value in asdict(defaults).items():
        kind = type(value) if value is not None else int
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    evaluate_dir = vars(args).pop("evaluate")
    if evaluate_dir:
        logger.info("%s", json.dumps(position_accuracy(evaluate_dir), indent=2))
        return 0
    build = pretrain(PretrainConfig(**vars(args)))
    logger.info("%s", json.dumps({k: v for k, v in build.items() if k != "losses"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
