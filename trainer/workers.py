"""How many DataLoader workers decode, resize and collate (``--dataloader-num-workers``).

Each worker runs ``ConversationDataset.__getitem__`` (JPEG / video decoding) and
the collator (the Gemma 4 processor's resize, rescale and patchify, then
padding) on whole batches, ``--dataloader-prefetch-factor`` batches ahead, so
the training step only copies a ready batch to the device.
"""

from __future__ import annotations

import os

MAX_DEFAULT_WORKERS = 8


def dataloader_workers(configured: int | None, *, cuda: bool) -> int:
    """``configured`` if set; else min(8, CPUs - 1) with CUDA and 0 on a CPU, where
    worker processes would only compete with the training step for the same cores.

    >>> dataloader_workers(3, cuda=False)
    3
    >>> dataloader_workers(None, cuda=False)
    0
    """
    if configured is not None:
        return configured
    if not cuda:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_DEFAULT_WORKERS, (cpus or 2) - 1))
