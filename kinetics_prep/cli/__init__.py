"""The data-side `kprep` commands, composed explicitly.

:func:`make_app` returns a new Typer app with every data command: each area
module (``download``, ``extract``, ``manifest``) has a ``register(app)``
function, called here in pipeline order (the order of `kprep --help`).
``trainer.cli`` starts from :func:`make_app` and registers its own commands;
nothing registers itself as a side effect of an import.

Commands are thin: their flags are generated from the config dataclasses
(:mod:`kinetics_prep.cli.flags`), they build a config, call one library
function, and :func:`kinetics_prep.cli.common.run_command` turns a
``KprepError`` into a one-line error and exit 2. Heavy imports happen inside
command bodies so that ``kprep --help`` stays instant.
"""

from __future__ import annotations

import typer


def version() -> None:
    """Print the kprep version."""
    from kinetics_prep import __version__

    typer.echo(__version__)


def make_app() -> typer.Typer:
    """A new app holding `version` and the data commands."""
    from kinetics_prep.cli import download, extract, manifest

    app = typer.Typer(
        name="kprep",
        help="Kinetics -> frames -> conversation dataset -> Gemma 4 fine-tuning.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.command()(version)
    for module in (download, extract, manifest):
        module.register(app)
    return app


app = make_app()
"""The data-only app (the full `kprep` entry point is ``trainer.cli:main``)."""


def main() -> None:
    app()
