"""Known-harmless third-party noise, silenced on the training-side commands unless ``-v``.

On a plain run the training stack prints lines that look like errors but ask
nothing of the user: bitsandbytes' "Failed to load CPU gemm_4bit_forward from
kernels-community" (an optional kernels package), deprecation notices from
transformers / torch / peft about their own internals, and the accelerator
probes of DeepSpeed / accelerate. :func:`quiet_third_party` drops them;
``kprep <command> -v`` shows everything. kprep's own messages are untouched.
"""

from __future__ import annotations

import logging
import warnings

NOISY_PACKAGES = (
    "transformers",
    "torch",
    "torchvision",
    "peft",
    "accelerate",
    "deepspeed",
    "bitsandbytes",
    "datasets",
    "huggingface_hub",
)
# Loggers that only report optional kernels and hardware probes at WARNING level.
QUIET_LOGGERS = (
    "bitsandbytes",
    "DeepSpeed",
    "deepspeed",
    "accelerate",
    "torch.distributed.elastic",
    "torch.utils.cpp_extension",
)
_MODULES = r"(" + "|".join(NOISY_PACKAGES) + r")(\..*)?$"


def quiet_third_party(verbose: bool) -> None:
    """Silence the known-harmless warnings and library logs (nothing when ``verbose``)."""
    if verbose:
        return
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=_MODULES)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
