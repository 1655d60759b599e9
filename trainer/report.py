"""The evaluation report: per-sample rows -> accuracies, tables, JSON + markdown files.

``summarize`` turns one run's rows (one per sample: gold label, generated
answer and its label, top-k ranked labels) into the run's metrics;
``markdown_table`` is the table the CLI prints and the model card embeds;
``write_report`` writes ``report.json`` and ``report.md`` atomically.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kinetics_prep.fileio import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

REPORT_VERSION = 1


def summarize(
    rows: list[dict[str, Any]],
    *,
    labels: Sequence[str],
    method: str,
    top_k: int,
    name: str,
    frame_order: str,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """Accuracies, per-class table and most-confused pairs from per-sample rows."""
    n = len(rows)
    run: dict[str, Any] = {
        "model": name,
        "frame_order": frame_order,
        "num_samples": n,
        "seconds": round(seconds, 3),
    }
    per_class: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = per_class.setdefault(row["label"], {"n": 0})
        entry["n"] += 1
    confusion: Counter = Counter()
    if method in ("both", "generation"):
        correct = sum(r["generated_label"] == r["label"] for r in rows)
        empty = [r for r in rows if not (r["generated"] or "").strip()]
        unmatched = [
            r for r in rows if (r["generated"] or "").strip() and r["generated_label"] is None
        ]
        run["generation"] = {
            "top1": correct / n if n else 0.0,
            "correct": correct,
            "unmatched": len(unmatched),
            "empty": len(empty),
            "unmatched_examples": sorted({r["generated"] for r in unmatched})[:10],
        }
        for row in rows:
            per_class[row["label"]]["generation_correct"] = per_class[row["label"]].get(
                "generation_correct", 0
            ) + int(row["generated_label"] == row["label"])
    if method in ("both", "ranking"):
        top1 = sum(r["ranked"][0] == r["label"] for r in rows)
        topk = sum(r["label"] in r["ranked"][:top_k] for r in rows)
        run["ranking"] = {
            "top1": top1 / n if n else 0.0,
            f"top{top_k}": topk / n if n else 0.0,
            "top_k": top_k,
            "correct": top1,
        }
        for row in rows:
            per_class[row["label"]]["ranking_correct"] = per_class[row["label"]].get(
                "ranking_correct", 0
            ) + int(row["ranked"][0] == row["label"])
            if row["ranked"][0] != row["label"]:
                confusion[(row["label"], row["ranked"][0])] += 1
    else:
        for row in rows:
            if row["generated_label"] not in (None, row["label"]):
                confusion[(row["label"], row["generated_label"])] += 1
    for entry in per_class.values():
        for key in ("generation", "ranking"):
            if f"{key}_correct" in entry:
                entry[f"{key}_top1"] = entry[f"{key}_correct"] / entry["n"]
    run["per_class"] = dict(sorted(per_class.items()))
    run["confused_pairs"] = [
        {"label": a, "predicted": b, "count": c} for (a, b), c in confusion.most_common(10)
    ]
    run["predictions"] = rows
    return run


def headline(run: dict[str, Any]) -> str:
    parts = []
    if "generation" in run:
        parts.append(f"generation top1 {run['generation']['top1']:.3f}")
    if "ranking" in run:
        parts.append(f"ranking top1 {run['ranking']['top1']:.3f}")
    return ", ".join(parts)


def markdown_table(report: dict[str, Any]) -> str:
    """One row per (model, frame order): the table the CLI prints and the model card embeds."""
    if report.get("task") == "captions":
        from trainer.caption_eval import caption_table

        return caption_table(report)
    top_k = next((r["ranking"]["top_k"] for r in report["runs"] if "ranking" in r), 5)
    lines = [
        f"| model | frames | samples | generation top-1 | ranking top-1 | ranking top-{top_k} | unmatched answers |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    for run in report["runs"]:
        gen = run.get("generation") or {}
        rank = run.get("ranking") or {}
        unmatched = gen.get("unmatched", 0) + gen.get("empty", 0) if gen else None
        lines.append(
            f"| {run['model']} | {run['frame_order']} | {run['num_samples']} | {pct(gen.get('top1'))} "
            f"| {pct(rank.get('top1'))} | {pct(rank.get(f'top{top_k}'))} "
            f"| {'-' if unmatched is None else unmatched} |"
        )
    return "\n".join(lines) + "\n"


def per_class_table(run: dict[str, Any]) -> str:
    lines = ["| class | samples | generation top-1 | ranking top-1 |", "|---|---:|---:|---:|"]
    for label, entry in run["per_class"].items():
        gen = entry.get("generation_top1")
        rank = entry.get("ranking_top1")
        lines.append(
            f"| {label} | {entry['n']} | {'-' if gen is None else f'{100 * gen:.1f}%'} "
            f"| {'-' if rank is None else f'{100 * rank:.1f}%'} |"
        )
    return "\n".join(lines) + "\n"


def _confusion_png(report: dict[str, Any], path: Path) -> Path | None:
    """``<report>_confusion.png`` beside the report (None without matplotlib)."""
    try:
        from trainer.plots import confusion_matrices
    except ImportError as exc:  # pragma: no cover - matplotlib is in the train extra
        logger.warning("no confusion matrix (%s): pip install matplotlib", exc)
        return None
    labels = report.get("labels") or sorted(
        {row["label"] for run in report["runs"] for row in run["predictions"]}
    )
    return confusion_matrices(
        report["runs"], path.with_name(f"{path.stem}_confusion.png"), labels=labels
    )


def write_report(report: dict[str, Any], path: str | Path) -> tuple[Path, Path]:
    """Write the JSON report and a markdown summary beside it (``.md``); atomic."""
    if report.get("task") == "captions":
        from trainer.caption_eval import write_caption_report

        return write_caption_report(report, path)
    path = Path(path)
    md = path.with_suffix(".md")
    text = [f"# Evaluation of {report['model_id']}", ""]
    if report.get("adapter"):
        text += [f"Adapter: `{report['adapter']}`", ""]
    text += [
        f"Data: `{report['data_path']}` ({report['num_samples']} samples, "
        f"{report['num_labels']} labels, chance top-1 {100 * report['chance_top1']:.1f}%)",
        "",
        markdown_table(report),
    ]
    confusion = _confusion_png(report, path)
    if confusion is not None:
        text += [f"![confusion matrices]({confusion.name})", ""]
    for run in report["runs"]:
        text += [f"## {run['model']}, frames {run['frame_order']}", "", per_class_table(run)]
        if run["confused_pairs"]:
            text += ["Most confused (label -> predicted: count):", ""]
            text += [
                f"- {p['label']} -> {p['predicted']}: {p['count']}" for p in run["confused_pairs"]
            ]
            text.append("")
        gen = run.get("generation")
        if gen and gen["unmatched_examples"]:
            text += ["Unmatched answers (examples):", ""]
            text += [f"- {json.dumps(x)}" for x in gen["unmatched_examples"]]
            text.append("")
    atomic_write_json(path, report)
    atomic_write_text(md, "\n".join(text))
    return path, md
