"""The training-side commands' first line: is the training stack installed?

`kprep train/eval/predict/merge/demo` import torch deep inside the library,
long after the command started, so an ``ImportError`` there would be a
traceback. :func:`require_training_stack` imports the stack up front and turns
a missing package into one line that says which extra to install.
"""

from __future__ import annotations

import importlib

from kinetics_prep.cli.common import fail

TRAINING_STACK = ("torch", "transformers", "peft")
INSTALL_HINT = "pip install -e '.[train]'"


def require_training_stack(command: str) -> None:
    """Exit 2 with the install command when a training package cannot be imported."""
    for name in TRAINING_STACK:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing = exc.name or name
            fail(
                f"`kprep {command}` needs the training extra ({missing} is not installed): "
                f"{INSTALL_HINT}"
            )
