"""`kprep subset` and `kprep download`: flags from SubsetConfig / DownloadConfig."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import typer

from kinetics_prep.cli.common import console, err_console
from kinetics_prep.cli.flags import command_from_config
from kinetics_prep.download.plan import DownloadConfig
from kinetics_prep.subset import SubsetConfig


def subset(values: dict[str, Any]) -> None:
    """Choose a deterministic, class-stratified subset and write it as a Kinetics CSV."""
    from kinetics_prep.subset import build_subset

    command = shlex.join(["kprep", *sys.argv[1:]]) if sys.argv[1:2] == ["subset"] else None
    config = SubsetConfig(**values)
    summary = build_subset(config, command=command)
    console.print(
        f"wrote {summary['rows']} rows ({summary['classes']} classes, "
        f"{summary['per_class_min']}-{summary['per_class_max']} per class) to {config.output}"
    )
    if summary["invalid_rows_skipped"]:
        err_console.print(
            f"skipped {summary['invalid_rows_skipped']} invalid rows of {config.annotations}"
        )


def download(values: dict[str, Any]) -> None:
    """Fetch the clips of an annotation file into OUT/clips, one status record per row."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from kinetics_prep.download import download as run_download

    config = DownloadConfig(**values)
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    task = progress.add_task(f"download ({config.source})", total=None)

    def on_start(total: int) -> None:
        progress.update(task, total=total)

    def on_record(record: dict[str, Any]) -> None:
        progress.advance(task)

    with progress:
        report = run_download(config, on_start=on_start, on_record=on_record)
    _print_report(report, config.output_dir)


def _print_report(report: dict[str, Any], output_dir: Path) -> None:
    from rich.table import Table

    from kinetics_prep.schema import DOWNLOAD_RECORDS_NAME, DOWNLOAD_REPORT_NAME

    reasons = sorted(
        {r for split in report["per_split"].values() for r in split["failed_by_reason"]}
    )
    table = Table(title=f"availability ({report['source']})")
    for column in ["split", "requested", "downloaded", "failed", "pending", *reasons]:
        table.add_column(column, justify="left" if column == "split" else "right")
    rows = [*report["per_split"].items(), ("all", report)]
    for name, stats in rows:
        cells = [str(stats[k]) for k in ("requested", "downloaded", "failed", "pending")]
        cells += [str(stats["failed_by_reason"].get(r, 0)) for r in reasons]
        table.add_row(name, *cells)
    console.print(table)
    run = report["this_run"]
    console.print(
        f"this run: {run['ok']} ok, {run['failed']} failed, {run['skipped']} already done, "
        f"{run['seconds']:.1f}s; report: {output_dir / DOWNLOAD_REPORT_NAME}"
    )
    if report["invalid_rows"]:
        err_console.print(
            f"{report['invalid_rows']} invalid annotation rows (see reason invalid_row in "
            f"{output_dir / DOWNLOAD_RECORDS_NAME})"
        )


def register(app: typer.Typer) -> None:
    """Add `subset` and `download` to ``app``."""
    app.command("subset")(command_from_config(SubsetConfig, subset))
    app.command("download")(command_from_config(DownloadConfig, download))
