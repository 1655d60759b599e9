"""`kprep doctor`: is everything `kprep download --source youtube` needs usable here?"""

from __future__ import annotations

from pathlib import Path

import typer

from kinetics_prep.cli.common import console, err_console


def doctor(
    cookies: Path | None = typer.Option(
        None,
        "--cookies",
        help="Netscape cookies file you will pass to kprep download.",
        show_default="none",
    ),
) -> None:
    """Check yt-dlp, its JS challenge solver and runtime, ffmpeg and the cookies file (offline)."""
    from rich.markup import escape
    from rich.table import Table

    from kinetics_prep.youtube_tools import check_tools

    checks = check_tools(cookies)
    table = Table(title="kprep doctor: --source youtube")
    table.add_column("needs")
    table.add_column("usable")
    table.add_column("found")
    for check in checks:
        table.add_row(check.name, "[green]yes[/]" if check.ok else "[red]no[/]", check.detail)
    console.print(table)
    missing = [check for check in checks if not check.ok]
    for check in missing:
        err_console.print(
            f"[bold red]error:[/] {escape(f'{check.name}: {check.detail}; {check.fix}')}",
            highlight=False,
            soft_wrap=True,
        )
    if missing:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add `doctor` to ``app``."""
    app.command("doctor")(doctor)
