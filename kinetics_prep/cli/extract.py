"""`kprep extract`: clips -> frames/<clip_id>/frame_<i>.jpg + extract_results.jsonl.

Flags come from ExtractConfig's fields. The command calls
kinetics_prep.extract.extract_clips, shows a progress bar while it runs and a
summary table at the end. Exit code 0 when the run completed, even with
per-clip failures (they are in the table and the records); 2 for unusable
arguments.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.progress import ProgressColumn, Task
from rich.text import Text

from kinetics_prep.cli.common import console, fail
from kinetics_prep.cli.flags import command_from_config
from kinetics_prep.extract import ExtractConfig


class _RateColumn(ProgressColumn):
    """Clips per second (rich's own speed column is for bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} clips/s" if speed else "- clips/s", style="progress.data.speed")


def extract(values: dict[str, Any]) -> None:
    """Sample N frames from every clip: crash-proof, resumable, shardable."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from kinetics_prep.extract import extract_clips

    config = ExtractConfig(**values)
    progress = Progress(
        TextColumn("extract"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("extract", total=None)
    try:
        with progress:
            summary = extract_clips(
                config,
                on_start=lambda total: progress.update(task, total=total),
                on_record=lambda record: progress.advance(task),
            )
    except OSError as error:  # an unreadable input file: one line, exit 2
        fail(f"{error}")
    _print_summary(summary, config)


def _print_summary(summary: Any, config: ExtractConfig) -> None:
    from rich.table import Table

    table = Table(title="kprep extract", show_lines=False)
    table.add_column("clips")
    table.add_column("count", justify="right")
    table.add_row("found under --clips", str(summary.found))
    if config.num_shards > 1:
        table.add_row(f"in shard {config.shard_index}/{config.num_shards}", str(summary.in_shard))
    table.add_row("already done (skipped)", str(summary.skipped_ok))
    if summary.skipped_failed:
        table.add_row("failed before (use --retry-failed)", str(summary.skipped_failed))
    table.add_row("[green]ok[/]", str(summary.ok))
    for reason, count in sorted(summary.failed.items()):
        table.add_row(f"[red]failed: {reason}[/]", str(count))
    rate = summary.processed / summary.seconds if summary.seconds else 0.0
    table.caption = f"{summary.processed} clips in {summary.seconds:.1f} s ({rate:.1f} clips/s)"
    console.print(table)
    console.print(f"records: {summary.records_path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `extract` to ``app``."""
    app.command("extract")(command_from_config(ExtractConfig, extract))
