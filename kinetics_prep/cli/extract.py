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

from kinetics_prep.cli.common import console, err_console, fail
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
    from kinetics_prep.paths import check_output

    config = ExtractConfig(**values)
    check_output(
        config.output_dir,
        "--output-dir",
        kind="dir",
        inputs={"--clips": config.clips, "--annotations": config.annotations},
    )
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
    if config.annotations is not None and not summary.annotation_matches:
        err_console.print(
            f"warning: --annotations {config.annotations} matches none of the "
            f"{summary.in_shard} clips (by clip_id <youtube_id>_<start>_<end>): labels come "
            "from the class folders, if any; check that the file belongs to these clips",
            style="yellow",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if summary.processed and not summary.ok and not summary.skipped_ok:
        err_console.print(
            f"error: no clip of this run was extracted ({summary.processed} failed); "
            f"see the reasons above and in {summary.records_path}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


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
    console.print(
        f"records: {summary.records_path}", highlight=False, soft_wrap=True, markup=False
    )


def register(app: typer.Typer) -> None:
    """Add `extract` to ``app``."""
    app.command("extract")(command_from_config(ExtractConfig, extract))
