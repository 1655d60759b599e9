"""The data-side Typer app. Each area registers its commands from its own module.

Commands are thin: parse flags, build a config, call one library function, map
known errors to exit codes. Heavy imports happen inside command bodies so that
``kprep --help`` stays instant.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="kprep",
    help="Kinetics -> frames -> conversation dataset -> Gemma 4 fine-tuning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the kprep version."""
    from kinetics_prep import __version__

    typer.echo(__version__)


# Registration order is the order of `kprep --help`.
from kinetics_prep.cli import doctor as _doctor  # noqa: E402,F401
from kinetics_prep.cli import download as _download  # noqa: E402,F401
from kinetics_prep.cli import extract as _extract  # noqa: E402,F401
from kinetics_prep.cli import manifest as _manifest  # noqa: E402,F401


def main() -> None:
    app()
