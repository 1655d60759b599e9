"""Which ``checkpoint-N`` folder ``--resume`` may continue from.

The HF Trainer writes a checkpoint in place: the weights, then the optimizer,
scheduler and RNG state, and ``trainer_state.json`` last. Ctrl-C or a kill
during a save (or during the rotation that deletes old checkpoints) leaves a
folder that holds only some of these files, and ``get_last_checkpoint`` would
pick it because it has the highest number. :func:`is_complete` checks the files
a complete checkpoint has; :func:`newest_complete` skips the incomplete ones,
so a resume continues from the newest checkpoint that was fully written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_NAME = "trainer_state.json"
WEIGHT_NAMES = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
OPTIMIZER_NAME = "optimizer.pt"


def missing_parts(folder: str | Path) -> list[str]:
    """What a complete checkpoint has that ``folder`` lacks ([] when it is complete)."""
    folder = Path(folder)
    missing = []
    try:
        state = json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))
        if not isinstance(state, dict) or "global_step" not in state:
            missing.append(f"a valid {STATE_NAME}")
    except (OSError, ValueError):
        missing.append(STATE_NAME)
    deepspeed = any(p.is_dir() for p in folder.glob("global_step*"))
    if not any((folder / name).is_file() for name in WEIGHT_NAMES) and not deepspeed:
        missing.append("model or adapter weights")
    if not (folder / OPTIMIZER_NAME).is_file() and not deepspeed:
        missing.append(f"{OPTIMIZER_NAME} (optimizer state)")
    return missing


def is_complete(folder: str | Path) -> bool:
    return not missing_parts(folder)


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``output_dir``, newest (highest N) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in output_dir.iterdir()
        if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))
    ]
    return [p for _, p in sorted(found, key=lambda item: item[0], reverse=True)]


def newest_complete(output_dir: str | Path) -> tuple[Path | None, list[tuple[Path, list[str]]]]:
    """(newest complete checkpoint or None, [(skipped incomplete newer one, what it lacks)])."""
    skipped = []
    for folder in checkpoints(output_dir):
        missing = missing_parts(folder)
        if not missing:
            return folder, skipped
        skipped.append((folder, missing))
    return None, skipped
