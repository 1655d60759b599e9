"""The full `kprep` CLI: kinetics_prep's data commands plus the training-side ones.

The entry point lives here (not in kinetics_prep) so that the data package
never imports the trainer. The app is composed explicitly: the data app from
``kinetics_prep.cli.make_app``, then each training-side module's ``register``,
in pipeline order (train, eval/predict/merge, demo), which is the order of
`kprep --help`. Training commands import torch inside their bodies.
"""

from __future__ import annotations

import typer

from kinetics_prep.cli import make_app
from trainer.cli import demo, evaluate, train


def build_app() -> typer.Typer:
    """A new `kprep` app with every command."""
    app = make_app()
    for module in (train, evaluate, demo):
        module.register(app)
    return app


app = build_app()


def main() -> None:
    app()
