"""``--auto-batch``: the largest micro-batch that fits, at the same effective batch.

The effective batch (``per_device_train_batch_size x gradient_accumulation_steps``)
is the recipe; how it is split is only speed. On a GPU, ``choose`` tries the
divisors of the effective batch from the largest down, runs one forward and
backward pass of that many real samples (the training collator's batches,
with gradient checkpointing as configured), and keeps the first that neither
runs out of memory nor peaks above ``HEADROOM`` of the device (room for the
optimizer state and fragmentation). An out-of-memory error is caught, the
cache emptied, and the next size tried. On a CPU there is nothing to probe:
the configured micro-batch is kept.

Equal updates for any split follow from the loss (``mean_token_loss``: the
token-loss sum over the whole accumulated batch divided by its token count),
which tests/test_speed.py checks for 8 x 1 against 1 x 8.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from trainer.errors import TrainError

logger = logging.getLogger(__name__)

HEADROOM = 0.85


def candidates(effective: int, *, limit: int | None = None) -> list[int]:
    """Divisors of ``effective``, largest first (optionally at most ``limit``).

    >>> candidates(8)
    [8, 4, 2, 1]
    >>> candidates(12, limit=5)
    [4, 3, 2, 1]
    """
    return [
        d for d in range(effective, 0, -1) if effective % d == 0 and (limit is None or d <= limit)
    ]


def pick(effective: int, fits: Callable[[int], bool], *, limit: int | None = None) -> int:
    """The largest micro-batch in ``candidates(effective)`` for which ``fits`` holds."""
    for size in candidates(effective, limit=limit):
        if fits(size):
            return size
    raise TrainError(
        "--auto-batch: not even a micro-batch of 1 fits the GPU: use --load-in-4bit, "
        "--max-soft-tokens 70 or a larger GPU"
    )


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def probe(model, dataset, collator, size: int, *, bf16: bool, gradient_checkpointing: bool) -> bool:
    """One forward + backward of ``size`` samples on the GPU; False when it does not fit."""
    import torch

    from trainer.collator import logits_to_keep_for, mean_token_loss
    from trainer.vision_cache import model_inputs

    device = torch.device("cuda")
    batch = collator([dataset[i % len(dataset)] for i in range(size)])
    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
    labels = batch.pop("labels")
    batch = model_inputs(batch)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    ok = True
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            out = model(**batch, logits_to_keep=logits_to_keep_for(labels))
            loss = mean_token_loss(out, labels)
        loss.backward()
        total = torch.cuda.get_device_properties(device).total_memory
        peak = torch.cuda.max_memory_allocated(device)
        ok = peak <= HEADROOM * total
        logger.info(
            "auto-batch: micro-batch %d peaks at %.1f GiB of %.1f GiB (%s)",
            size,
            peak / 2**30,
            total / 2**30,
            "fits" if ok else f"over {HEADROOM:.0%}",
        )
    except RuntimeError as exc:
        if not is_oom(exc):
            raise
        logger.info("auto-batch: micro-batch %d runs out of memory", size)
        ok = False
    finally:
        out = loss = None
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
    return ok


def choose(
    config, model, dataset, collator, *, cuda: bool, bf16: bool
) -> tuple[int, int, dict[str, Any]]:
    """(micro-batch, accumulation steps, info) for the run."""
    micro, accum = config.per_device_train_batch_size, config.gradient_accumulation_steps
    effective = micro * accum
    info: dict[str, Any] = {"auto_batch": bool(config.auto_batch), "effective_batch": effective}
    if not config.auto_batch:
        return micro, accum, {**info, "micro_batch": micro, "accumulation": accum}
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # Every rank must use the same split; one GPU's probe cannot decide for all.
        logger.warning("auto-batch: %s processes, keeping micro-batch %d x %d",
                       os.environ["WORLD_SIZE"], micro, accum)  # fmt: skip
        return micro, accum, {**info, "micro_batch": micro, "accumulation": accum, "probed": []}
    if not cuda:
        logger.info("auto-batch: no CUDA device, keeping micro-batch %d x %d", micro, accum)
        return micro, accum, {**info, "micro_batch": micro, "accumulation": accum, "probed": []}
    import torch

    if not getattr(model, "is_loaded_in_4bit", False) and not hasattr(model, "hf_device_map"):
        model.to("cuda")
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    tried: list[dict[str, Any]] = []

    def fits(size: int) -> bool:
        ok = probe(
            model,
            dataset,
            collator,
            size,
            bf16=bf16,
            gradient_checkpointing=config.gradient_checkpointing,
        )
        tried.append({"micro_batch": size, "fits": ok})
        return ok

    with torch.random.fork_rng(devices=[torch.cuda.current_device()]):
        size = pick(effective, fits, limit=len(dataset))
    logger.info(
        "auto-batch: micro-batch %d x %d accumulation (effective %d)",
        size,
        effective // size,
        effective,
    )
    return (
        size,
        effective // size,
        {**info, "micro_batch": size, "accumulation": effective // size, "probed": tried},
    )
