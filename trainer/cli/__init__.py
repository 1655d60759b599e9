"""The full `kprep` CLI: kinetics_prep's data commands plus the training-side ones.

The entry point lives here (not in kinetics_prep) so that the data package
never imports the trainer. Training commands import torch inside their bodies.
"""

from __future__ import annotations

from kinetics_prep.cli import app
from trainer.cli import demo as _demo  # noqa: E402,F401
from trainer.cli import evaluate as _evaluate  # noqa: E402,F401
from trainer.cli import train as _train  # noqa: E402,F401


def main() -> None:
    app()
