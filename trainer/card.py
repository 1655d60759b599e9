"""The training side of the model card: what ``kprep train`` records for it, and writing it.

``card_facts`` adds to ``training_summary.json`` what the card needs beyond
the trainer's numbers (the reproducing command, the base model's Hub id, one
manifest entry, the answer form, the DeepSpeed JSON, the device);
``write_card`` renders ``README.md`` from the summary with
:func:`kinetics_prep.model_card.render_model_card` (replacing PEFT's
placeholder card); ``record_evaluation`` stores a ``kprep eval`` report in
the folder and refreshes the card with it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from kinetics_prep.errors import SchemaError
from kinetics_prep.fileio import atomic_write_json, atomic_write_text
from kinetics_prep.model_card import EVAL_REPORT_NAME, render_model_card, resolve_base_model
from kinetics_prep.schema import (
    LABEL_MAP_NAME,
    TRAINING_SUMMARY_NAME,
    label_map_path,
    read_label_map,
)

logger = logging.getLogger(__name__)

SUMMARY_NAME = TRAINING_SUMMARY_NAME
CARD_NAME = "README.md"
# Set by the launcher / the run itself, not choices that reproduce a run.
_NOT_IN_COMMAND = ("local_rank",)


def reproduce_command(config: Any) -> list[str]:
    """``kprep train`` with every setting that differs from the defaults (argv list).

    >>> from trainer.config import TrainConfig
    >>> reproduce_command(TrainConfig(data_path="d.json", max_steps=5, bf16=False))
    ['kprep', 'train', '--data-path', 'd.json', '--max-steps', '5', '--no-bf16']
    """
    defaults = type(config).defaults()
    args = ["kprep", "train"]
    for name, value in config.to_dict().items():
        if name in _NOT_IN_COMMAND or value == defaults.get(name) or value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{name.replace('_', '-')}")
        else:
            args += [flag, str(value)]
    # A launched worker's config has --num-gpus cleared; one node's world size restores it.
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)) or world)
    if world > 1 and world == local and "--num-gpus" not in args:
        args += ["--num-gpus", str(world)]
    return args


def example_entry(data_path: str | Path, *, split: str = "train") -> dict[str, Any] | None:
    """The first entry of the training data as stored (Arrow images: their paths/sizes)."""
    path = Path(data_path)
    try:
        if path.is_file():
            entries = json.loads(path.read_text(encoding="utf-8"))
            return entries[0] if isinstance(entries, list) and entries else None
        import datasets

        loaded = datasets.load_from_disk(str(path))
        ds = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        row = ds.with_format("arrow")[:1].to_pylist()[0]
    except Exception as exc:  # a card detail must never fail a finished training run
        logger.warning("no example entry for the card (%s)", exc)
        return None
    row["images"] = [
        {"path": image.get("path")}
        if not image.get("bytes")
        else {"path": image.get("path"), "bytes": f"{len(image['bytes'])} bytes"}
        for image in row.get("images") or []
    ]
    return row


def _text_layers(model: Any) -> int | None:
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", config)
    return getattr(text, "num_hidden_layers", None)


def card_facts(
    config: Any, *, samples: list[Any], model: Any, deepspeed: dict | None, cuda: bool
) -> dict[str, Any]:
    """The summary fields the card needs beyond the trainer's own numbers."""
    model_config = Path(config.model_id) / "config.json"
    raw_config = None
    if model_config.is_file():
        try:
            raw_config = json.loads(model_config.read_text(encoding="utf-8"))
        except ValueError:
            raw_config = None
    video = any(getattr(s, "video", None) for s in samples)
    answer: dict[str, Any] = {}
    try:
        label_map = read_label_map(label_map_path(config.data_path))
        answer = {
            "template": label_map.answer_template or "{label}",
            "labels": len(label_map.labels),
            "label_map": str(label_map.path),
        }
    except SchemaError:  # no label map beside the data: free-text answers
        if samples:
            answer = {"example": samples[0].answer}
    if cuda:
        import torch

        device_name = torch.cuda.get_device_name(0)
    else:
        device_name = platform.processor() or platform.machine()
    return {
        "base_model": resolve_base_model(
            config.model_id, base_model_id=config.base_model_id, config=raw_config
        ),
        "dataset_id": config.dataset_id,
        "command": reproduce_command(config),
        "deepspeed_config": deepspeed,
        "device_name": device_name,
        "text_layers": _text_layers(model),
        "input": {
            "kind": "video" if video else "images",
            "frames_per_sample": sorted({len(s.images) for s in samples}) if not video else None,
            "num_frames": config.num_frames if video else None,
            "sampling": config.frame_sampling if video else None,
        },
        "example": example_entry(config.data_path, split=config.split),
        "answer_form": answer,
    }


def copy_label_map(summary: dict[str, Any], output_dir: str | Path) -> None:
    """Keep the label map with the model, so `kprep predict` works without the data."""
    source = (summary.get("answer_form") or {}).get("label_map")
    if source and Path(source).is_file():
        shutil.copy2(source, Path(output_dir) / LABEL_MAP_NAME)


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_card(folder: str | Path, *, summary: dict[str, Any] | None = None) -> Path:
    """(Re)write ``folder/README.md`` from its training summary and eval report, if any."""
    folder = Path(folder)
    summary = summary if summary is not None else read_json(folder / SUMMARY_NAME) or {}
    card = render_model_card(
        summary, eval_report=read_json(folder / EVAL_REPORT_NAME), location=str(folder)
    )
    atomic_write_text(folder / CARD_NAME, card)
    return folder / CARD_NAME


def record_evaluation(folder: str | Path, report: dict[str, Any]) -> Path | None:
    """Store ``report`` as ``folder/eval_report.json`` and refresh the card.

    Only for a ``kprep train`` output (it has ``training_summary.json``);
    anything else is left untouched and None is returned.
    """
    folder = Path(folder)
    if not (folder / SUMMARY_NAME).is_file():
        return None
    atomic_write_json(folder / EVAL_REPORT_NAME, json.loads(json.dumps(report, default=str)))
    return write_card(folder)
