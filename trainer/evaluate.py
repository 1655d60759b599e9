"""Held-out accuracy of Gemma 4 (base, fine-tuned, or both) on a kprep dataset.

Datasets with free-text answers (captions) are scored by
:mod:`trainer.caption_eval` instead (BLEU-4, ROUGE-L, CIDEr).

Two ways to read an answer, both top-1 over the label set in ``label_map.json``:

- **generation**: greedy decoding of a short answer (``max_new_tokens``), mapped
  to a label by :class:`trainer.labels.AnswerMatcher`, an *exact normalised
  match* against every label's templated answer (``"The video shows {label}."``)
  and the bare label. Answers that match nothing, and empty answers, count as
  wrong and are reported with examples.
- **ranking**: the log-likelihood of every class's templated answer (up to and
  including the end-of-turn marker, the tokens training teaches) given the
  prompt and frames; top-1 and top-5. The prompt and frames are run once per
  sample and their KV cache is shared by all candidates, which are scored in
  batches of ``batch_size``.

Inference reuses training's preprocessing: samples come from the same reader
(``trainer.data.load_samples``), their media (frames *or* a raw video, decoded
with the recipe's sampling) from the same dataset item builder, the prompt
inputs from the training collator, and the answer tokens from
:func:`trainer.collator.locate_answer`, the function that places the labels.
The gold label is the sample's own ``label`` (never parsed back from its answer).

``frame_order`` re-runs the same samples with their frames (or decoded video
frames) ``reversed`` or ``shuffled`` (a seeded permutation per sample that is
neither the identity nor the reversal): a model that reads frame order should
fall to chance or below on these, an order-blind one would not move. See
docs/evaluation.md. Model loading is :mod:`trainer.loading`, label matching
:mod:`trainer.labels`, the report :mod:`trainer.report`.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kinetics_prep.sampling import SAMPLING_METHODS
from kinetics_prep.schema import SPLITS, Sample
from trainer.config import SOFT_TOKEN_BUDGETS
from trainer.errors import ConfigError, EvalError
from trainer.labels import AnswerMatcher, find_label_map, load_label_map
from trainer.report import REPORT_VERSION, headline, summarize, write_report

logger = logging.getLogger(__name__)

FRAME_ORDERS = ("normal", "shuffled", "reversed")
METHODS = ("both", "generation", "ranking")

Progress = Callable[[str, int, int], None]


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


def reorder_frames(item: dict[str, Any], perm: list[int]) -> dict[str, Any]:
    """``item`` with its frames (images, or the decoded video's frames) in ``perm`` order.

    A video keeps its metadata (timestamps stay in increasing order), so the
    prompt is built exactly as for the frames in order; only what is seen moves.
    """
    out = dict(item)
    if item.get("video") is not None:
        out["video"] = item["video"][perm]
    else:
        out["images"] = [item["images"][i] for i in perm]
    return out


def num_frames_of(item: dict[str, Any]) -> int:
    video = item.get("video")
    return len(video) if video is not None else len(item.get("images") or [])


# --- configuration ----------------------------------------------------------------------


@dataclass
class EvalConfig:
    """What `kprep eval` needs. ``adapter`` is a LoRA folder or a fully fine-tuned model.

    ``num_frames`` / ``sampling`` / ``decoder`` apply to raw-video samples; unset,
    they come from the adapter's training recipe (else 4, ``center``).
    """

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
    num_frames: int | None = None
    sampling: str | None = None
    decoder: str = "auto"
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
        for name in ("max_samples", "num_frames"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} ({getattr(self, name)}) must be >= 1")
        if self.sampling is not None and self.sampling not in SAMPLING_METHODS:
            problems.append(
                f"--sampling ({self.sampling!r}) must be one of {', '.join(SAMPLING_METHODS)}"
            )
        if self.max_soft_tokens is not None and self.max_soft_tokens not in SOFT_TOKEN_BUDGETS:
            problems.append(
                f"--max-soft-tokens ({self.max_soft_tokens}) must be one of "
                f"{', '.join(map(str, SOFT_TOKEN_BUDGETS))}"
            )
        if problems:
            raise ConfigError("; ".join(problems))


# --- samples ----------------------------------------------------------------------------


def load_eval_samples(
    data_path: str | Path,
    matcher: AnswerMatcher,
    *,
    image_folder: str | Path | None = None,
    split: str = "validation",
    max_samples: int | None = None,
) -> list[Sample]:
    """The held-out samples (frames or raw video, as training reads them), each labelled.

    The gold label is the sample's ``label``; it must be one of the label map's.
    """
    from trainer.data import load_samples

    samples = load_samples(
        data_path, image_folder=image_folder, split=split, max_samples=max_samples
    )
    known = set(matcher.labels)
    for sample in samples:
        if sample.label is None:
            raise EvalError(
                f"{data_path}: sample {sample.id} has no 'label': evaluate a manifest written "
                "by `kprep build-manifest` (a caption dataset has no classes to score)"
            )
        if sample.label not in known:
            raise EvalError(
                f"{data_path}: the label {sample.label!r} of sample {sample.id} is not in the "
                "label map: pass the dataset's own --label-map"
            )
    return samples


def prompt_item(item: dict[str, Any]) -> dict[str, Any]:
    """A dataset item without its answer turn: what the model sees at inference."""
    return {**item, "messages": item["messages"][:-1]}


# --- scoring ----------------------------------------------------------------------------


class Scorer:
    """Generation and candidate ranking for one model, sharing one prompt pass per sample.

    The prompt inputs come from the training collator
    (:meth:`~trainer.collator.VisionChatCollator.encode_prompt`) and each
    candidate answer's tokens from :func:`~trainer.collator.locate_answer`, so
    the scored tokens are the ones training labels, whatever the chat template.
    """

    def __init__(self, model, processor, matcher: AnswerMatcher, *, max_soft_tokens=None):
        from trainer.collator import VisionChatCollator

        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.matcher = matcher
        self.collator = VisionChatCollator(processor, max_soft_tokens=max_soft_tokens, check=False)
        self.end_of_turn_id = self.collator.end_of_turn_id
        self.pad_id = self.tokenizer.pad_token_id or 0
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.stop_ids = {int(x) for x in eos} | {self.end_of_turn_id, self.tokenizer.eos_token_id}
        self._candidates: dict[str, list[list[int]]] = {}

    @property
    def device(self):
        return next(self.model.parameters()).device

    def prompt_inputs(self, item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(prompt text, model inputs on the model's device) of an item without its answer."""
        prompt, inputs = self.collator.encode_prompt(item)
        return prompt, {k: v.to(self.device) for k, v in inputs.items()}

    def candidate_ids(self, prompt_messages: list[dict[str, Any]], prompt: str) -> list[list[int]]:
        """Token ids of every label's answer as training sees it: through end-of-turn."""
        from trainer.collator import locate_answer

        if prompt in self._candidates:
            return self._candidates[prompt]
        out = []
        for label in self.matcher.labels:
            answer = {
                "role": "assistant",
                "content": [{"type": "text", "text": self.matcher.answer(label)}],
            }
            span = locate_answer(self.processor, [*prompt_messages, answer])
            out.append(span.trained_ids)
        self._candidates = {prompt: out}
        return out

    def run(
        self,
        item: dict[str, Any],
        *,
        generate: bool,
        rank: bool,
        max_new_tokens: int,
        batch_size: int,
    ):
        """(generated text or None, ranking log-likelihoods per label or None) for one item.

        ``item`` is a dataset item (``trainer.data.ConversationDataset``) whose
        ``messages`` end before the answer (:func:`prompt_item`).
        """
        import torch

        prompt, inputs = self.prompt_inputs(item)
        with torch.no_grad():
            out = self.model(**inputs, use_cache=True)
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = out.past_key_values
            first = out.logits[0, -1].float().log_softmax(-1)
            length = inputs["input_ids"].shape[1]
            scores = None
            if rank:
                candidates = self.candidate_ids(item["messages"], prompt)
                scores = self._rank(cache, first, length, candidates, batch_size)
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


def answer_each(
    scorer: Scorer,
    samples: Sequence[Sample],
    *,
    frame_order: str,
    seed: int,
    generate: bool,
    rank: bool,
    max_new_tokens: int,
    batch_size: int,
    video: dict[str, Any],
) -> Iterator[tuple[Sample, list[int], Any, Any]]:
    """Each sample's answer with its frames in ``frame_order``: (sample, permutation, text, scores).

    The one per-sample loop of every evaluation run (labels and captions):
    frames loaded as training loads them (``video``: ``num_frames``,
    ``sampling``, ``decoder`` for raw-video samples), permuted per
    :func:`frame_permutation`, then generated and/or ranked by ``scorer``.
    """
    from trainer.data import ConversationDataset

    dataset = ConversationDataset(list(samples), **video)
    for index, sample in enumerate(samples):
        item = dataset[index]
        perm = frame_permutation(num_frames_of(item), frame_order, seed=seed, index=index)
        text, scores = scorer.run(
            prompt_item(reorder_frames(item, perm)),
            generate=generate,
            rank=rank,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        yield sample, perm, text, scores


def evaluate_samples(
    scorer: Scorer,
    samples: Sequence[Sample],
    *,
    frame_order: str = "normal",
    method: str = "both",
    batch_size: int = 16,
    max_new_tokens: int = 24,
    top_k: int = 5,
    seed: int = 0,
    name: str = "model",
    progress: Progress | None = None,
    num_frames: int = 4,
    sampling: str = "center",
    decoder: str = "auto",
) -> dict[str, Any]:
    """Accuracy of one model on ``samples`` with frames in ``frame_order``: one report run."""
    generate = method in ("both", "generation")
    rank = method in ("both", "ranking")
    labels = scorer.matcher.labels
    started = time.time()
    rows = []
    answers = answer_each(
        scorer,
        samples,
        frame_order=frame_order,
        seed=seed,
        generate=generate,
        rank=rank,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        video={"num_frames": num_frames, "sampling": sampling, "decoder": decoder},
    )
    for index, (sample, perm, text, scores) in enumerate(answers):
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


# --- the whole evaluation -----------------------------------------------------------------


def _models(config: EvalConfig) -> list[tuple[str, str | None]]:
    """(name, adapter) of every model to evaluate: the base, the fine-tuned one, or both."""
    models: list[tuple[str, str | None]] = []
    if config.adapter is None or config.compare_base:
        models.append(("base", None))
    if config.adapter is not None:
        models.append(("fine-tuned", config.adapter))
    return models


def _video_settings(config: EvalConfig, recipe: dict[str, Any]) -> dict[str, Any]:
    """How raw-video samples are decoded: the flags, else the training recipe, else 4 / center."""
    return {
        "num_frames": config.num_frames or int(recipe.get("num_frames") or 4),
        "sampling": config.sampling or recipe.get("frame_sampling") or "center",
        "decoder": config.decoder,
    }


def split_name(data_path: str | Path, split: str) -> str:
    """The split that was read: ``split`` of an Arrow folder, else the manifest file's own.

    ``kinetic_3K.validation.json`` -> ``validation``; a manifest without a
    split suffix holds every sample -> ``all``.
    """
    path = Path(data_path)
    if path.is_dir():
        return split
    parts = path.name.split(".")
    return parts[-2] if len(parts) >= 3 and parts[-2] in SPLITS else "all"


def trained_on(samples: list[Sample], summary: dict[str, Any]) -> list[str]:
    """Ids of ``samples`` that the training run of ``summary`` (training_summary.json) used."""
    ids = (summary.get("data") or {}).get("sample_ids")
    if not ids:
        return []
    seen = set(ids)
    return [s.id for s in samples if s.id in seen]


def evaluate(config: EvalConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run every (model, frame order) of ``config``; return the report (and write it if asked)."""
    import torch

    from trainer.loading import load_finetuned, training_summary

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    started = time.time()
    if not Path(config.data_path).exists():
        raise EvalError(
            f"--data-path {config.data_path} does not exist: pass the held-out manifest JSON "
            "or Arrow folder written by `kprep build-manifest`"
        )
    from trainer.caption_eval import evaluate_captions, is_caption_data

    if is_caption_data(config):  # free-text answers: captioning metrics (caption_eval.py)
        return evaluate_captions(config, progress=progress)
    matcher = load_label_map(config.label_map or find_label_map(config.data_path))
    samples = load_eval_samples(
        config.data_path,
        matcher,
        image_folder=config.image_folder,
        split=config.split,
        max_samples=config.max_samples,
    )
    trained = training_summary(config.adapter)
    video = _video_settings(config, trained.get("recipe") or {})
    overlap = trained_on(samples, trained)
    if overlap:
        logger.warning(
            "%d of %d evaluation samples were in the training data of %s (e.g. %s): these "
            "scores are not held-out; evaluate the validation split",
            len(overlap),
            len(samples),
            config.adapter,
            overlap[0],
        )
    top_k = min(config.top_k, len(matcher.labels))
    runs = []
    for name, adapter in _models(config):
        model, processor = load_finetuned(
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
                top_k=top_k,
                seed=config.seed,
                name=name,
                progress=progress,
                **video,
            )
            run["adapter"] = adapter
            runs.append(run)
            logger.info("%s [%s]: %s", name, order, headline(run))
        del model, scorer
    report = {
        "kprep_eval_version": REPORT_VERSION,
        "model_id": config.model_id,
        "adapter": config.adapter,
        "data_path": str(config.data_path),
        "split": split_name(config.data_path, config.split),
        "num_samples": len(samples),
        "trained_on": len(overlap),
        "num_videos": sum(s.video is not None for s in samples),
        "num_labels": len(matcher.labels),
        "labels": list(matcher.labels),
        "answer_template": matcher.template,
        "method": config.method,
        "chance_top1": 1 / len(matcher.labels),
        "config": {k: v for k, v in asdict(config).items() if k != "extra"},
        "video": video,
        "runs": runs,
        "seconds": round(time.time() - started, 3),
    }
    if config.output:
        write_report(report, config.output)
    return report
