"""What every `kprep` command shares (public: ``trainer.cli`` uses it too).

- one console for results (stdout) and one for errors and progress (stderr);
- :func:`fail`: a one-line error and an exit code;
- :func:`run_command`: the one place that turns a :class:`KprepError` into
  ``error: <message>`` and exit 2. Any other exception is a bug and keeps its
  traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from kinetics_prep.errors import KprepError

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error (what and what to do) and exit with ``code``.

    The message is printed literally: rich markup in it (``[train]``) is escaped.
    """
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def run_command() -> Iterator[None]:
    """``with run_command(): ...``: a :class:`KprepError` becomes ``fail(str(error))``."""
    try:
        yield
    except KprepError as error:
        fail(str(error))
