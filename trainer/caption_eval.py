"""Held-out captioning scores of Gemma 4 (base, fine-tuned, or both) on caption data.

For datasets whose answers are free text (VATEX captions, the reference
``kinetic_3K.json``), ``kprep eval`` generates an answer per sample (greedy,
the same :class:`trainer.evaluate.Scorer` as for labels) and scores it against
*every* reference caption the sample keeps (its ``captions``; the answer
alone when there are none) with the COCO caption toolkit's scorers
(``pycocoevalcap``):

- **BLEU-4** (``Bleu(4)``, corpus level, as the toolkit reports it),
- **ROUGE-L** (``Rouge``, mean of per-sample F-scores, beta 1.2),
- **CIDEr** (``Cider``, the toolkit's CIDEr-D; document frequencies come from
  the evaluated references, so it compares runs on the same samples only).

The toolkit's PTB tokenizer and its METEOR scorer both need a Java runtime, so
:func:`tokenize` lower-cases and drops punctuation in Python instead; METEOR is
left out (NLTK's Java-free ``meteor_score`` needs the WordNet corpus, which no
package on PyPI ships: it must be fetched with ``nltk.download``).

When a sample names its Kinetics class, **label mention** counts the answers
that contain the label as whole words after the same normaliser the label
evaluation uses (:func:`trainer.evaluate.normalize_answer`). Base vs
fine-tuned and the frame-order controls work exactly as for labels, and every
generated answer is kept in the report.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kinetics_prep.errors import KprepError
from kinetics_prep.fileio import atomic_write_json, atomic_write_text
from kinetics_prep.schema import Sample, read_label_map
from trainer.errors import EvalError
from trainer.evaluate import (
    EvalConfig,
    Progress,
    Scorer,
    _models,
    _video_settings,
    answer_each,
)
from trainer.labels import AnswerMatcher, find_label_map, normalize_answer
from trainer.report import REPORT_VERSION

METRICS = ("bleu4", "rouge_l", "cider")
METEOR_NOTE = (
    "METEOR not computed: pycocoevalcap's METEOR needs Java, and NLTK's needs the WordNet "
    "corpus, which no PyPI package ships"
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> str:
    """Lower-cased words separated by single spaces, punctuation dropped.

    What the COCO toolkit's PTB tokenizer does to a caption, without Java:

    >>> tokenize("A man lassos a young cow, and hops off his horse!")
    'a man lassos a young cow and hops off his horse'
    """
    return " ".join(_WORD.findall(normalize_answer(text)))


def caption_scores(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """BLEU-1..4, ROUGE-L and CIDEr of ``predictions`` against ``references`` (same ids).

    Returns the corpus scores and, under ``per_sample``, each sample's
    ROUGE-L and CIDEr.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(predictions) != set(references):
        raise EvalError("predictions and references must cover the same sample ids")
    if not predictions:
        raise EvalError("no samples to score")
    ids = sorted(predictions)
    res = {i: [tokenize(predictions[i])] for i in ids}
    gts: dict[str, list[str]] = {}
    for i in ids:
        refs = [tokenize(r) for r in references[i] if tokenize(r)]
        if not refs:
            raise EvalError(f"sample {i} has no non-empty reference caption")
        gts[i] = refs
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_each = Rouge().compute_score(gts, res)
    cider, cider_each = Cider().compute_score(gts, res)
    return {
        "bleu1": float(bleu[0]),
        "bleu2": float(bleu[1]),
        "bleu3": float(bleu[2]),
        "bleu4": float(bleu[3]),
        "rouge_l": float(rouge),
        "cider": float(cider),
        "per_sample": {
            i: {"rouge_l": float(r), "cider": float(c)}
            for i, r, c in zip(ids, rouge_each, cider_each, strict=True)
        },
    }


def mentions_label(text: str | None, label: str) -> bool:
    """True when ``label``'s words appear in order, as whole words, in ``text``.

    >>> mentions_label("A man is air drumming to music.", "air drumming")
    True
    >>> mentions_label("Someone is playing drums.", "playing drums")
    True
    >>> mentions_label("People are drumming.", "air drumming")
    False
    """
    words = _WORD.findall(normalize_answer(text or ""))
    wanted = _WORD.findall(normalize_answer(label))
    if not wanted:
        return False
    n = len(wanted)
    return any(words[i : i + n] == wanted for i in range(len(words) - n + 1))


# --- which evaluation a dataset gets ------------------------------------------------------


def is_caption_data(config: EvalConfig) -> bool:
    """Free-text answers: a label map that records no answer template, or none at all.

    Without any label map the data must hold samples (else the label path
    reports the missing ``label_map.json``).
    """
    if config.label_map:
        return _template_of(Path(config.label_map)) is None
    try:
        found = find_label_map(config.data_path)
    except EvalError:
        from trainer.data import load_samples

        try:
            load_samples(
                config.data_path,
                image_folder=config.image_folder,
                split=config.split,
                max_samples=1,
            )
        except KprepError:
            return False
        return True
    return _template_of(found) is None


def _template_of(path: Path) -> str | None:
    try:
        return read_label_map(path).answer_template
    except KprepError as exc:
        raise EvalError(f"--label-map: {exc}") from None


# --- the evaluation ------------------------------------------------------------------------


def references_of(sample: Sample) -> list[str]:
    """A sample's reference captions: its ``captions``, else its answer."""
    return [c for c in (sample.captions or [sample.answer]) if c and c.strip()]


def load_caption_samples(config: EvalConfig) -> list[Sample]:
    """The held-out samples (frames or raw video, as training reads them), each with references."""
    from trainer.data import load_samples

    samples = load_samples(
        config.data_path,
        image_folder=config.image_folder,
        split=config.split,
        max_samples=config.max_samples,
    )
    for sample in samples:
        if not references_of(sample):
            raise EvalError(f"{config.data_path}: sample {sample.id} has an empty answer")
    return samples


def run_captions(
    scorer: Scorer,
    samples: Sequence[Sample],
    *,
    frame_order: str,
    max_new_tokens: int,
    seed: int,
    name: str,
    progress: Progress | None = None,
    num_frames: int = 4,
    sampling: str = "center",
    decoder: str = "auto",
) -> dict[str, Any]:
    """One (model, frame order) run: generate every answer, then score them all."""
    started = time.time()
    rows = []
    answers = answer_each(
        scorer,
        samples,
        frame_order=frame_order,
        seed=seed,
        generate=True,
        rank=False,
        max_new_tokens=max_new_tokens,
        batch_size=1,
        video={"num_frames": num_frames, "sampling": sampling, "decoder": decoder},
    )
    for index, (sample, perm, text, _) in enumerate(answers):
        row: dict[str, Any] = {
            "id": sample.id,
            "generated": text,
            "references": references_of(sample),
            "frame_order": perm,
        }
        if sample.label:
            row["label"] = sample.label
            row["mentions_label"] = mentions_label(text, sample.label)
        rows.append(row)
        if progress is not None:
            progress(f"{name} ({frame_order})", index + 1, len(samples))
    return summarize_captions(
        rows, name=name, frame_order=frame_order, seconds=time.time() - started
    )


def summarize_captions(
    rows: list[dict[str, Any]], *, name: str, frame_order: str, seconds: float = 0.0
) -> dict[str, Any]:
    """Scores of one run from its per-sample rows (generated text + references)."""
    scores = caption_scores(
        {r["id"]: r["generated"] or "" for r in rows}, {r["id"]: r["references"] for r in rows}
    )
    per_sample = scores.pop("per_sample")
    for row in rows:
        row.update({k: round(v, 4) for k, v in per_sample[row["id"]].items()})
    labelled = [r for r in rows if "mentions_label" in r]
    mention = None
    if labelled:
        hits = sum(r["mentions_label"] for r in labelled)
        mention = {"rate": hits / len(labelled), "mentioned": hits, "samples": len(labelled)}
    return {
        "model": name,
        "frame_order": frame_order,
        "num_samples": len(rows),
        "seconds": round(seconds, 3),
        "captions": scores,
        "label_mention": mention,
        "empty": sum(1 for r in rows if not (r["generated"] or "").strip()),
        "predictions": rows,
    }


def evaluate_captions(config: EvalConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    """Every (model, frame order) of ``config`` on caption data; the report (written if asked)."""
    from dataclasses import asdict

    from trainer.loading import load_finetuned, training_summary

    started = time.time()
    if config.method == "ranking":
        raise EvalError(
            f"--method ranking needs a label set; {config.data_path} has free-text answers "
            "(captions): use --method generation"
        )
    samples = load_caption_samples(config)
    video = _video_settings(config, training_summary(config.adapter).get("recipe") or {})
    runs = []
    for name, adapter in _models(config):
        model, processor = load_finetuned(
            config.model_id, adapter, max_soft_tokens=config.max_soft_tokens
        )
        scorer = Scorer(model, processor, AnswerMatcher([]), max_soft_tokens=config.max_soft_tokens)
        for order in config.frame_orders:
            run = run_captions(
                scorer,
                samples,
                frame_order=order,
                max_new_tokens=config.max_new_tokens,
                seed=config.seed,
                name=name,
                progress=progress,
                **video,
            )
            run["adapter"] = adapter
            runs.append(run)
        del model, scorer
    report = {
        "kprep_eval_version": REPORT_VERSION,
        "task": "captions",
        "model_id": config.model_id,
        "adapter": config.adapter,
        "data_path": str(config.data_path),
        "split": config.split,
        "num_samples": len(samples),
        "num_videos": sum(s.video is not None for s in samples),
        "references_per_sample": round(
            sum(len(references_of(s)) for s in samples) / len(samples), 3
        ),
        "method": "generation",
        "metrics": {
            "bleu4": "pycocoevalcap Bleu(4), corpus BLEU-4",
            "rouge_l": "pycocoevalcap Rouge (ROUGE-L F, beta 1.2), mean over samples",
            "cider": "pycocoevalcap Cider (CIDEr-D), IDF from these references",
            "tokenizer": "lower-case words, punctuation dropped (kprep; the PTB tokenizer needs Java)",
            "meteor": METEOR_NOTE,
        },
        "config": {k: v for k, v in asdict(config).items() if k != "extra"},
        "video": video,
        "runs": runs,
        "seconds": round(time.time() - started, 3),
    }
    if config.output:
        write_caption_report(report, config.output)
    return report


def caption_table(report: Mapping[str, Any]) -> str:
    """One row per (model, frame order): the table the CLI prints."""
    lines = [
        "| model | frames | samples | BLEU-4 | ROUGE-L | CIDEr | label mention | empty answers |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in report["runs"]:
        scores = run["captions"]
        mention = run.get("label_mention")
        rate = "-" if mention is None else f"{100 * mention['rate']:.1f}%"
        lines.append(
            f"| {run['model']} | {run['frame_order']} | {run['num_samples']} "
            f"| {100 * scores['bleu4']:.1f} | {100 * scores['rouge_l']:.1f} "
            f"| {100 * scores['cider']:.1f} "
            f"| {rate} | {run['empty']} |"
        )
    return "\n".join(lines) + "\n"


def write_caption_report(report: Mapping[str, Any], path: str | Path) -> tuple[Path, Path]:
    """The JSON report and a markdown page beside it (``.md``) with every generated answer."""
    path = Path(path)
    md = path.with_suffix(".md")
    text = [
        f"# Caption evaluation of {report['model_id']}",
        "",
        f"Data: `{report['data_path']}` ({report['num_samples']} samples, "
        f"{report['references_per_sample']} reference captions per sample). Scores x100.",
        "",
        caption_table(report),
        f"{report['metrics']['meteor']}.",
        "",
    ]
    for run in report["runs"]:
        text += [f"## {run['model']}, frames {run['frame_order']}", ""]
        text += ["| id | generated | first reference |", "|---|---|---|"]
        for row in run["predictions"]:
            generated = (row["generated"] or "").replace("|", "\\|")
            reference = row["references"][0].replace("|", "\\|")
            text.append(f"| {row['id']} | {generated} | {reference} |")
        text.append("")
    atomic_write_json(path, report)
    atomic_write_text(md, "\n".join(text))
    return path, md
