"""Held-out accuracy of Gemma 4 (base, fine-tuned, or both) on a kprep dataset.

Two ways to read an answer, both top-1 over the label set in ``label_map.json``:

- **generation**: greedy decoding of a short answer (``max_new_tokens``), mapped
  to a label by :class:`AnswerMatcher`, an *exact normalised match* against
  every label's templated answer (``"The video shows {label}."``) and the bare
  label. Answers that match nothing, and empty answers, count as wrong and are
  reported with examples.
- **ranking**: the log-likelihood of every class's templated answer (up to and
  including the end-of-turn marker, the tokens training teaches) given the
  prompt and frames; top-1 and top-5. The prompt and frames are run once per
  sample and their KV cache is shared by all candidates, which are scored in
  batches of ``batch_size``.

``frame_order`` re-runs the same samples with their frames ``reversed`` or
``shuffled`` (a seeded permutation per sample that is neither the identity
nor the reversal): a model that reads frame order should fall to chance or
below on these, an order-blind one would not move. See docs/evaluation.md.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FRAME_ORDERS = ("normal", "shuffled", "reversed")
METHODS = ("both", "generation", "ranking")
LABEL_MAP_NAME = "label_map.json"
REPORT_VERSION = 1

Progress = Callable[[str, int, int], None]


class EvalError(ValueError):
    """Evaluation cannot run; the message names the input and what to do."""


# --- the answer normaliser ------------------------------------------------------------

_EDGE_PUNCT = " \t\r\n.,;:!?\"'`()[]{}"


def normalize_answer(text: str) -> str:
    """Lower-case, NFKC, ``_`` -> space, collapsed whitespace, no edge punctuation.

    >>> normalize_answer('  The video shows  Air_Drumming. ')
    'the video shows air drumming'
    """
    text = unicodedata.normalize("NFKC", text or "").lower().replace("_", " ")
    text = re.sub(r"\s+", " ", text)
    return text.strip(_EDGE_PUNCT)


class AnswerMatcher:
    """Map a free-text answer to a label: exact match after :func:`normalize_answer`.

    An answer matches label ``L`` when it normalises to the same string as
    ``template.format(label=L)`` or as ``L`` itself; anything else (a partial
    answer, extra words, an empty string) is unmatched and returns None.
    """

    def __init__(self, labels: Sequence[str], template: str = "{label}") -> None:
        if "{label}" not in template:
            raise EvalError(f"answer template ({template!r}) must contain {{label}}")
        self.labels = list(labels)
        self.template = template
        self._table: dict[str, str] = {}
        for label in self.labels:  # templated answers win over bare labels
            self._table.setdefault(normalize_answer(template.format(label=label)), label)
        for label in self.labels:
            self._table.setdefault(normalize_answer(label), label)

    def answer(self, label: str) -> str:
        """The answer text training used for ``label``."""
        return self.template.format(label=label)

    def match(self, text: str | None) -> str | None:
        key = normalize_answer(text or "")
        return self._table.get(key) if key else None


def find_label_map(data_path: str | Path) -> Path:
    """``label_map.json`` beside a manifest JSON, or beside an ``*_arrow`` folder."""
    path = Path(data_path)
    for folder in (path.parent, path):
        candidate = folder / LABEL_MAP_NAME
        if candidate.is_file():
            return candidate
    raise EvalError(
        f"no {LABEL_MAP_NAME} next to {path}: pass --label-map (kprep build-manifest writes it)"
    )


def load_label_map(path: str | Path) -> AnswerMatcher:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalError(
            f"--label-map {path} cannot be read ({exc}): pass the label_map.json"
        ) from exc
    labels = data.get("labels") if isinstance(data, dict) else None
    if not labels or not all(isinstance(x, str) for x in labels):
        raise EvalError(f"--label-map {path} has no 'labels' list of names")
    return AnswerMatcher(labels, data.get("answer_template") or "{label}")


# --- frame order control ----------------------------------------------------------------


def frame_permutation(n: int, order: str, *, seed: int = 0, index: int = 0) -> list[int]:
    """Indices to reorder ``n`` frames: identity, reversal, or a seeded shuffle.

    A shuffle is never the identity, and for ``n >= 3`` never the reversal, so
    ``shuffled`` is a control distinct from both.

    >>> frame_permutation(4, "reversed")
    [3, 2, 1, 0]
    """
    if order not in FRAME_ORDERS:
        raise EvalError(f"--frame-order ({order!r}) must be one of {', '.join(FRAME_ORDERS)}")
    identity = list(range(n))
    if order == "normal" or n < 2:
        return identity
    if order == "reversed":
        return identity[::-1]
    rng = random.Random(seed * 1_000_003 + index)
    excluded = {tuple(identity), tuple(identity[::-1])} if n >= 3 else {tuple(identity)}
    while True:
        perm = identity[:]
        rng.shuffle(perm)
        if tuple(perm) not in excluded:
            return perm


# --- configuration ----------------------------------------------------------------------


@dataclass
class EvalConfig:
    """What `kprep eval` needs. ``adapter`` is a LoRA folder or a fully fine-tuned model."""

    model_id: str
    data_path: str
    image_folder: str | None = None
    split: str = "validation"
    adapter: str | None = None
    compare_base: bool = False
    frame_orders: tuple[str, ...] = ("normal",)
    method: str = "both"
    label_map: str | None = None
    max_samples: int | None = None
    batch_size: int = 16
    max_new_tokens: int = 24
    top_k: int = 5
    max_soft_tokens: int | None = None
    seed: int = 0
    torch_threads: int | None = None
    output: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frame_orders = tuple(self.frame_orders) or ("normal",)
        problems = []
        if not self.model_id:
            problems.append("--model-id is required: the base model folder or Hub id")
        if not self.data_path:
            problems.append("--data-path is required: a manifest JSON or Arrow folder")
        bad = [o for o in self.frame_orders if o not in FRAME_ORDERS]
        if bad:
            problems.append(f"--frame-order ({bad[0]!r}) must be one of {', '.join(FRAME_ORDERS)}")
        if self.method not in METHODS:
            problems.append(f"--method ({self.method!r}) must be one of {', '.join(METHODS)}")
        if self.compare_base and not self.adapter:
            problems.append("--compare-base needs --adapter (the base alone is the default)")
        for name in ("batch_size", "max_new_tokens", "top_k"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} ({getattr(self, name)}) must be >= 1")
        if self.max_samples is not None and self.max_samples < 1:
            problems.append(f"--max-samples ({self.max_samples}) must be >= 1")
        if self.max_soft_tokens is not None and self.max_soft_tokens not in (
            70,
            140,
            280,
            560,
            1120,
        ):
            problems.append(
                f"--max-soft-tokens ({self.max_soft_tokens}) must be one of 70, 140, 280, 560, 1120"
            )
        if problems:
            raise EvalError("; ".join(problems))


# --- loading ---------------------------------------------------------------------------


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def load_eval_model(model_id: str, adapter: str | None = None, *, max_soft_tokens=None):
    """(model, processor) for evaluation: base, base + LoRA, or a fully fine-tuned folder.

    The processor comes from the adapter folder when training saved one there
    (so prompts are built exactly as in training), else from the base model.
    """
    import torch
    from transformers import Gemma4ForConditionalGeneration

    from trainer.model import load_processor

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    weights_from = model_id
    if adapter is not None:
        folder = Path(adapter)
        if not folder.is_dir():
            raise EvalError(f"--adapter {folder} is not a folder: pass kprep train's --output-dir")
        if not is_adapter_dir(folder):
            if not (folder / "config.json").is_file():
                raise EvalError(
                    f"--adapter {folder} holds neither adapter_config.json nor a model config.json: "
                    "pass the output folder of `kprep train`"
                )
            weights_from = str(folder)  # --no-use-lora: a full fine-tuned model
    try:
        model = Gemma4ForConditionalGeneration.from_pretrained(weights_from, dtype=dtype)
    except OSError as exc:
        raise EvalError(
            f"model {weights_from!r} cannot be loaded ({exc}): pass a local folder or a reachable Hub id"
        ) from exc
    if adapter is not None and is_adapter_dir(adapter):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    processor_from = (
        adapter
        if adapter is not None and (Path(adapter) / "processor_config.json").is_file()
        else model_id
    )
    processor = load_processor(processor_from, max_soft_tokens=max_soft_tokens)
    model.to("cuda" if cuda else "cpu").eval()
    return model, processor


@dataclass
class EvalSample:
    """One held-out sample: its prompt turns, frames (loaded lazily) and gold label."""

    id: str
    prompt_messages: list[dict[str, Any]]
    images: list[Any]
    label: str


def load_eval_samples(
    data_path: str | Path,
    matcher: AnswerMatcher,
    *,
    image_folder: str | Path | None = None,
    split: str = "validation",
    max_samples: int | None = None,
) -> list[EvalSample]:
    """Samples of a manifest JSON / Arrow split with gold labels read from their answers."""
    from trainer.data import DataError, load_samples

    try:
        samples = load_samples(
            data_path, image_folder=image_folder, split=split, max_samples=max_samples
        )
    except DataError as exc:
        raise EvalError(str(exc)) from exc
    out = []
    for sample in samples:
        if sample.video is not None:
            raise EvalError(
                f"{data_path}: sample {sample.id} is a raw-video entry; evaluate an image-sequence "
                "manifest (kprep build-manifest without --media video)"
            )
        answer = _text_of(sample.messages[-1])
        label = matcher.match(answer)
        if label is None:
            raise EvalError(
                f"{data_path}: the answer {answer!r} of sample {sample.id} is no label's answer under "
                f"the template {matcher.template!r}: pass the dataset's own --label-map"
            )
        out.append(
            EvalSample(
                id=sample.id,
                prompt_messages=sample.messages[:-1],
                images=list(sample.images),
                label=label,
            )
        )
    return out


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(c.get("text") or "" for c in content if c.get("type") == "text")


# --- scoring ----------------------------------------------------------------------------


class Scorer:
    """Generation and candidate ranking for one model, sharing one prompt pass per sample."""

    def __init__(self, model, processor, matcher: AnswerMatcher, *, max_soft_tokens=None):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.matcher = matcher
        self.max_soft_tokens = max_soft_tokens
        eot = getattr(self.tokenizer, "eot_token", None) or self.tokenizer.eos_token
        self.end_of_turn_id = self.tokenizer.convert_tokens_to_ids(eot)
        self.pad_id = self.tokenizer.pad_token_id or 0
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.stop_ids = {int(x) for x in eos} | {self.end_of_turn_id, self.tokenizer.eos_token_id}
        self._candidates: dict[str, list[list[int]]] = {}

    @property
    def device(self):
        return next(self.model.parameters()).device

    def prompt_inputs(self, prompt_messages, images) -> tuple[str, dict[str, Any]]:
        prompt = self.processor.apply_chat_template(
            prompt_messages, tokenize=False, add_generation_prompt=True
        )
        kwargs: dict[str, Any] = {"text": [prompt], "return_tensors": "pt"}
        if images:
            kwargs["images"] = [images]
            if self.max_soft_tokens:
                kwargs["images_kwargs"] = {"max_soft_tokens": self.max_soft_tokens}
        enc = self.processor(**kwargs)
        inputs = {
            k: v.to(self.device)
            for k, v in enc.items()
            if k != "num_soft_tokens_per_image" and hasattr(v, "to")
        }
        return prompt, inputs

    def candidate_ids(self, prompt_messages, prompt: str) -> list[list[int]]:
        """Token ids of every label's answer as training sees it: through end-of-turn."""
        if prompt in self._candidates:
            return self._candidates[prompt]
        out = []
        for label in self.matcher.labels:
            full = self.processor.apply_chat_template(
                list(prompt_messages)
                + [
                    {
                        "role": "assistant",
                        "content": [{"type": "text", "text": self.matcher.answer(label)}],
                    }
                ],
                tokenize=False,
            )
            if not full.startswith(prompt):
                raise EvalError(
                    "the chat template renders an answer that does not extend the prompt: "
                    "use the processor saved by kprep train"
                )
            ids = self.tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
            if self.end_of_turn_id in ids:
                ids = ids[: ids.index(self.end_of_turn_id) + 1]
            out.append(ids)
        self._candidates = {prompt: out}
        return out

    def run(
        self,
        sample: EvalSample,
        images,
        *,
        generate: bool,
        rank: bool,
        max_new_tokens: int,
        batch_size: int,
    ):
        """(generated text or None, ranking log-likelihoods per label or None) for one sample."""
        import torch

        prompt, inputs = self.prompt_inputs(sample.prompt_messages, images)
        with torch.no_grad():
            out = self.model(**inputs, use_cache=True)
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = out.past_key_values
            first = out.logits[0, -1].float().log_softmax(-1)
            length = inputs["input_ids"].shape[1]
            scores = None
            if rank:
                scores = self._rank(
                    cache,
                    first,
                    length,
                    self.candidate_ids(sample.prompt_messages, prompt),
                    batch_size,
                )
            text = self._greedy(cache, first, length, max_new_tokens) if generate else None
        return text, scores

    def _rank(
        self, cache, first, length: int, candidates: list[list[int]], batch_size: int
    ) -> list[float]:
        import torch

        scores: list[float] = []
        for start in range(0, len(candidates), batch_size):
            chunk = candidates[start : start + batch_size]
            width = max(len(c) for c in chunk)
            n = len(chunk)
            ids = torch.full((n, width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((n, width), dtype=torch.long)
            for i, c in enumerate(chunk):
                ids[i, : len(c)] = torch.tensor(c)
                mask[i, : len(c)] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            chunk_cache = copy.deepcopy(cache)
            chunk_cache.batch_repeat_interleave(n)
            attention = torch.cat(
                [torch.ones((n, length), dtype=torch.long, device=self.device), mask], 1
            )
            positions = (
                (length + torch.arange(width, device=self.device)).unsqueeze(0).expand(n, -1)
            )
            logits = (
                self.model(
                    input_ids=ids,
                    attention_mask=attention,
                    position_ids=positions,
                    cache=chunk_cache,
                    use_cache=True,
                )
                .logits.float()
                .log_softmax(-1)
            )
            for i, c in enumerate(chunk):
                total = float(first[c[0]])
                for j in range(1, len(c)):
                    total += float(logits[i, j - 1, c[j]])
                scores.append(total)
        return scores

    def _greedy(self, cache, first, length: int, max_new_tokens: int) -> str:
        import torch

        tokens: list[int] = []
        logits = first
        for step in range(max_new_tokens):
            token = int(logits.argmax())
            if token in self.stop_ids:
                break
            tokens.append(token)
            if step == max_new_tokens - 1:
                break
            ids = torch.tensor([[token]], device=self.device)
            out = self.model(
                input_ids=ids,
                attention_mask=torch.ones(
                    (1, length + len(tokens)), dtype=torch.long, device=self.device
                ),
                position_ids=torch.tensor([[length + len(tokens) - 1]], device=self.device),
                cache=cache,
                use_cache=True,
            )
            logits = out.logits[0, -1].float()
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()


def evaluate_samples(
    scorer: Scorer,
    samples: Sequence[EvalSample],
    *,
    frame_order: str = "normal",
    method: str = "both",
    batch_size: int = 16,
    max_new_tokens: int = 24,
    top_k: int = 5,
    seed: int = 0,
    name: str = "model",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Accuracy of one model on ``samples`` with frames in ``frame_order``: one report run."""
    from trainer.data import load_image

    generate = method in ("both", "generation")
    rank = method in ("both", "ranking")
    labels = scorer.matcher.labels
    started = time.time()
    rows = []
    for index, sample in enumerate(samples):
        frames = [load_image(x) for x in sample.images]
        perm = frame_permutation(len(frames), frame_order, seed=seed, index=index)
        frames = [frames[i] for i in perm]
        text, scores = scorer.run(
            sample,
            frames,
            generate=generate,
            rank=rank,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        row: dict[str, Any] = {"id": sample.id, "label": sample.label, "frame_order": perm}
        if generate:
            row["generated"] = text
            row["generated_label"] = scorer.matcher.match(text)
        if rank:
            ranked = sorted(range(len(labels)), key=lambda i: scores[i], reverse=True)
            row["ranked"] = [labels[i] for i in ranked[:top_k]]
            row["ranked_scores"] = [round(scores[i], 4) for i in ranked[:top_k]]
        rows.append(row)
        if progress is not None:
            progress(f"{name} ({frame_order})", index + 1, len(samples))
    return summarize(
        rows,
        labels=labels,
        method=method,
        top_k=top_k,
        name=name,
        frame_order=frame_order,
        seconds=time.time() - started,
    )


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


# --- the whole evaluation -----------------------------------------------------------------


def evaluate(config: EvalConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run every (model, frame order) of ``config``; return the report (and write it if asked)."""
    import torch

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    started = time.time()
    if not Path(config.data_path).exists():
        raise EvalError(
            f"--data-path {config.data_path} does not exist: pass the held-out manifest JSON "
            "or Arrow folder written by `kprep build-manifest`"
        )
    matcher = load_label_map(config.label_map or find_label_map(config.data_path))
    samples = load_eval_samples(
        config.data_path,
        matcher,
        image_folder=config.image_folder,
        split=config.split,
        max_samples=config.max_samples,
    )
    models: list[tuple[str, str | None]] = []
    if config.adapter is None or config.compare_base:
        models.append(("base", None))
    if config.adapter is not None:
        models.append(("fine-tuned", config.adapter))
    runs = []
    for name, adapter in models:
        model, processor = load_eval_model(
            config.model_id, adapter, max_soft_tokens=config.max_soft_tokens
        )
        scorer = Scorer(model, processor, matcher, max_soft_tokens=config.max_soft_tokens)
        for order in config.frame_orders:
            run = evaluate_samples(
                scorer,
                samples,
                frame_order=order,
                method=config.method,
                batch_size=config.batch_size,
                max_new_tokens=config.max_new_tokens,
                top_k=config.top_k,
                seed=config.seed,
                name=name,
                progress=progress,
            )
            run["adapter"] = adapter
            runs.append(run)
            logger.info("%s [%s]: %s", name, order, _headline(run))
        del model, scorer
    report = {
        "kprep_eval_version": REPORT_VERSION,
        "model_id": config.model_id,
        "adapter": config.adapter,
        "data_path": str(config.data_path),
        "split": config.split,
        "num_samples": len(samples),
        "num_labels": len(matcher.labels),
        "labels": list(matcher.labels),
        "answer_template": matcher.template,
        "method": config.method,
        "chance_top1": 1 / len(matcher.labels),
        "config": {k: v for k, v in asdict(config).items() if k != "extra"},
        "runs": runs,
        "seconds": round(time.time() - started, 3),
    }
    if config.output:
        write_report(report, config.output)
    return report


def _headline(run: dict[str, Any]) -> str:
    parts = []
    if "generation" in run:
        parts.append(f"generation top1 {run['generation']['top1']:.3f}")
    if "ranking" in run:
        parts.append(f"ranking top1 {run['ranking']['top1']:.3f}")
    return ", ".join(parts)


def markdown_table(report: dict[str, Any]) -> str:
    """One row per (model, frame order): the table the CLI prints and the model card embeds."""
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    for target, body in ((path, json.dumps(report, indent=2) + "\n"), (md, "\n".join(text))):
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(body, encoding="utf-8")
        tmp.replace(target)
    return path, md
