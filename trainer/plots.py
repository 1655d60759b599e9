"""Pictures of a run: the training loss curve and the evaluation confusion matrices.

Drawn with matplotlib (the ``train`` extra) on the non-interactive Agg
backend, written atomically next to the JSON they are drawn from:
``kprep train`` -> ``OUTPUT/loss_curve.png`` beside ``training_summary.json``;
``kprep eval --output R.json`` -> ``R_confusion.png`` beside ``R.md`` (which
links it). The demo's contact sheet is in :mod:`trainer.demo`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOSS_CURVE_NAME = "loss_curve.png"
NO_ANSWER = "(no label)"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(path)
    return path


def loss_curve(log_history: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Plot the logged training loss (and the learning rate, right axis) against the step.

    ``log_history`` is ``Trainer.state.log_history`` (entries with ``loss``,
    ``learning_rate`` and ``step``), as ``training_summary.json`` stores it.
    """
    plt = _pyplot()
    points = [(e["step"], float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    rates = [
        (e["step"], float(e["learning_rate"]))
        for e in log_history
        if "learning_rate" in e and "step" in e
    ]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if points:
        steps, losses = zip(*points, strict=True)
        ax.plot(steps, losses, marker="o", markersize=3, color="tab:blue", label="train loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean token loss (answer tokens)")
    ax.grid(alpha=0.3)
    if rates:
        right = ax.twinx()
        steps, values = zip(*rates, strict=True)
        right.plot(steps, values, color="tab:orange", alpha=0.6, label="learning rate")
        right.set_ylabel("learning rate", color="tab:orange")
    ax.set_title(title or f"training loss ({len(points)} logged steps)", fontsize=9)
    fig.tight_layout()
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def confusion_matrices(
    runs: Sequence[dict[str, Any]], path: str | Path, *, labels: Sequence[str]
) -> Path:
    """One confusion matrix (rows: label, columns: generated answer) per evaluation run.

    ``runs`` are the report's runs (each with ``predictions`` holding ``label``
    and ``generated_label``; ranking-only runs use their top-ranked label).
    Answers that match no label go to a last column. Cells carry counts when
    there are at most 12 labels.
    """
    import numpy as np

    plt = _pyplot()
    columns = [*labels, NO_ANSWER]
    index = {label: i for i, label in enumerate(columns)}
    n = max(len(runs), 1)
    side = min(2.0 + 0.45 * len(columns), 12.0)
    fig, axes = plt.subplots(1, n, figsize=(side * n, side), squeeze=False)
    small = len(labels) <= 12
    for ax, run in zip(axes[0], runs, strict=False):
        matrix = np.zeros((len(labels), len(columns)), dtype=int)
        for row in run.get("predictions", []):
            answer = row.get("generated_label", (row.get("ranked") or [None])[0])
            if row["label"] in index:
                matrix[index[row["label"]], index.get(answer, len(labels))] += 1
        ax.imshow(matrix, cmap="Blues")
        ax.set_title(f"{run['model']}, frames {run['frame_order']}", fontsize=9)
        ax.set_xlabel("model answer")
        ax.set_ylabel("label")
        if small:
            ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            for (i, j), value in np.ndenumerate(matrix):
                if value:
                    colour = "white" if value > matrix.max() / 2 else "black"
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color=colour)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)
