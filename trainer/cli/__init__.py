"""The full `kprep` CLI: kinetics_prep's data commands plus the training-side ones.

The entry point lives here (not in kinetics_prep) so that the data package
never imports the trainer. Training commands import torch inside their bodies.
"""

from __future__ import annotations

import importlib

from kinetics_prep.cli import app

# Each module registers its commands on `app`; this order is the order of
# `kprep --help` (pipeline order: train, eval/predict/merge, demo).
for _module in ("train", "evaluate", "demo"):
    importlib.import_module(f"trainer.cli.{_module}")


def main() -> None:
    app()
