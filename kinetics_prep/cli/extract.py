"""`kprep extract`: clips -> frames/<clip_id>/frame_<i>.jpg + extract_results.jsonl.

Parses flags into an ExtractConfig, calls kinetics_prep.extract.extract_clips,
shows a progress bar while it runs and a summary table at the end. Exit code 0
when the run completed, even with per-clip failures (they are in the table and
the records); 2 for unusable arguments.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import ProgressColumn, Task
from rich.text import Text

from kinetics_prep.cli import app
from kinetics_prep.cli._common import console, fail


class _RateColumn(ProgressColumn):
    """Clips per second (rich's own speed column is for bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} clips/s" if speed else "- clips/s", style="progress.data.speed")


@app.command()
def extract(
    clips: Path = typer.Option(..., "--clips", help="Folder of videos, searched recursively."),
    output_dir: Path = typer.Option(..., "--output-dir", help="Gets frames/ and the records."),
    num_frames: int = typer.Option(4, "--num-frames", help="Frames per clip."),
    workers: int | None = typer.Option(
        None, "--workers", help="Decoding processes [default: CPUs]."
    ),
    sampling: str = typer.Option("center", "--sampling", help="center | linspace | random."),
    seed: int = typer.Option(0, "--seed", help="Seed for --sampling random (per clip: seed+id)."),
    short_side: int | None = typer.Option(
        None, "--short-side", help="Shrink frames to this short side (px)."
    ),
    jpeg_quality: int = typer.Option(95, "--jpeg-quality", help="JPEG quality 1-100."),
    decoder: str = typer.Option(
        "auto", "--decoder", help="auto (pyav, then decord, then opencv) | pyav | decord | opencv."
    ),
    shard_index: int = typer.Option(0, "--shard-index", help="This machine's share (0-based)."),
    num_shards: int = typer.Option(1, "--num-shards", help="How many machines share the clips."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Redo clips that failed before."
    ),
    timeout: float = typer.Option(
        120.0, "--timeout", help="Seconds per clip before its worker is killed."
    ),
    annotations: Path | None = typer.Option(
        None, "--annotations", help="Kinetics CSV/JSON: labels, times, split."
    ),
    engine: str = typer.Option(
        "local", "--engine", help="local (processes here) | ray (a Ray cluster; kprep[ray])."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to join [default: the running one, else local]."
    ),
) -> None:
    """Sample N frames from every clip: crash-proof, resumable, shardable."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table

    from kinetics_prep.extract import ExtractConfig, ExtractConfigError, extract_clips

    try:
        config = ExtractConfig(
            clips=clips,
            output_dir=output_dir,
            num_frames=num_frames,
            sampling=sampling,
            seed=seed,
            short_side=short_side,
            jpeg_quality=jpeg_quality,
            decoder=decoder,
            shard_index=shard_index,
            num_shards=num_shards,
            retry_failed=retry_failed,
            timeout=timeout,
            annotations=annotations,
            engine=engine,
            ray_address=ray_address,
            **({"workers": workers} if workers is not None else {}),
        )
    except ExtractConfigError as error:
        fail(str(error))

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
    except ExtractConfigError as error:
        fail(str(error))
    except Exception as error:  # annotation file problems and the like: one line, exit 2
        from kinetics_prep.annotations import AnnotationError
        from kinetics_prep.ray_engine import RayEngineError

        if isinstance(error, AnnotationError | OSError | RayEngineError):
            fail(f"{error}")
        raise

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
