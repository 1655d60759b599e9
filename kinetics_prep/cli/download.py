"""`kprep subset` and `kprep download` (registered on the shared app)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import typer

from kinetics_prep.cli import app
from kinetics_prep.cli._common import console, err_console, fail


@app.command()
def subset(
    annotations: Path = typer.Option(..., "--annotations", help="Kinetics CSV or JSON to sample."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="CSV to write, e.g. manifests/k400_val_3k.csv."
    ),
    classes: list[str] = typer.Option(
        [], "--classes", help="A class to keep (repeat the flag); default: all."
    ),
    classes_file: Path | None = typer.Option(
        None, "--classes-file", help="File with one class name per line."
    ),
    per_class: int | None = typer.Option(None, "--per-class", help="At most N clips per class."),
    max_clips: int | None = typer.Option(
        None, "--max-clips", help="At most M clips, spread evenly over classes."
    ),
    split: str | None = typer.Option(None, "--split", help="Only rows of train / val / test."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (same seed, same subset)."),
) -> None:
    """Choose a deterministic, class-stratified subset and write it as a Kinetics CSV."""
    from kinetics_prep.annotations import AnnotationError
    from kinetics_prep.subset import SubsetConfig, SubsetError, build_subset

    command = shlex.join(["kprep", *sys.argv[1:]]) if sys.argv[1:2] == ["subset"] else None
    try:
        config = SubsetConfig(
            annotations=annotations,
            output=output,
            classes=list(classes),
            classes_file=classes_file,
            per_class=per_class,
            max_clips=max_clips,
            split=split,
            seed=seed,
        )
        summary = build_subset(config, command=command)
    except (AnnotationError, SubsetError) as exc:
        fail(str(exc))
    console.print(
        f"wrote {summary['rows']} rows ({summary['classes']} classes, "
        f"{summary['per_class_min']}-{summary['per_class_max']} per class) to {output}"
    )
    if summary["invalid_rows_skipped"]:
        err_console.print(
            f"skipped {summary['invalid_rows_skipped']} invalid rows of {annotations}"
        )


@app.command()
def download(
    annotations: Path = typer.Option(..., "--annotations", help="Kinetics CSV or JSON file."),
    output_dir: Path = typer.Option(..., "--output-dir", help="Clips, records and report go here."),
    source: str = typer.Option("youtube", "--source", help="youtube, mirror or local."),
    clips: Path | None = typer.Option(None, "--clips", help="local: folder of clips, any layout."),
    mirror_urls: Path | None = typer.Option(
        None, "--mirror-urls", help="mirror: file of .tar.gz URLs (optional sha256 after each)."
    ),
    workers: int = typer.Option(4, "--workers", help="Parallel downloads."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Retry only rows that failed before."
    ),
    shard_index: int = typer.Option(0, "--shard-index", help="This shard (0-based)."),
    num_shards: int = typer.Option(1, "--num-shards", help="Number of shards."),
    max_height: int = typer.Option(360, "--max-height", help="youtube: highest format height."),
    exact_cuts: bool = typer.Option(
        True, "--exact-cuts/--fast-cuts", help="youtube: re-encode at the cut points or not."
    ),
    cookies: Path | None = typer.Option(None, "--cookies", help="youtube: cookies.txt file."),
    proxy: str | None = typer.Option(None, "--proxy", help="Proxy URL for all requests."),
    rate_limit: str | None = typer.Option(
        None, "--rate-limit", help="Bandwidth cap per download, e.g. 2M."
    ),
    retries: int = typer.Option(3, "--retries", help="Retries of transient failures."),
    backoff: float = typer.Option(
        5.0, "--backoff", help="Seconds before the first retry, doubled each time."
    ),
    socket_timeout: float = typer.Option(30.0, "--socket-timeout", help="Seconds per read."),
    link_mode: str = typer.Option(
        "auto", "--link-mode", help="local: auto (hardlink, else copy), hardlink, symlink, copy."
    ),
    keep_archives: bool = typer.Option(
        False, "--keep-archives", help="mirror: keep the .tar.gz files."
    ),
    url_template: str | None = typer.Option(None, "--url-template", hidden=True),
    requests_per_second: float | None = typer.Option(
        None, "--requests-per-second", help="youtube: request starts/s for the whole job/cluster."
    ),
    engine: str = typer.Option(
        "local", "--engine", help="local (threads here) | ray (youtube on a Ray cluster)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to join [default: the running one, else local]."
    ),
) -> None:
    """Fetch the clips of an annotation file into OUT/clips, one status record per row."""
    from kinetics_prep.annotations import AnnotationError
    from kinetics_prep.download import DownloadConfig, DownloadConfigError
    from kinetics_prep.download import download as run_download

    try:
        config = DownloadConfig(
            annotations=annotations,
            output_dir=output_dir,
            source=source,
            clips_dir=clips,
            mirror_urls=mirror_urls,
            workers=workers,
            retry_failed=retry_failed,
            shard_index=shard_index,
            num_shards=num_shards,
            max_height=max_height,
            exact_cuts=exact_cuts,
            cookies=cookies,
            proxy=proxy,
            rate_limit=rate_limit,
            retries=retries,
            backoff=backoff,
            socket_timeout=socket_timeout,
            link_mode=link_mode,
            keep_archives=keep_archives,
            url_template=url_template,
            requests_per_second=requests_per_second,
            engine=engine,
            ray_address=ray_address,
        )
    except DownloadConfigError as exc:
        fail(str(exc))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from kinetics_prep.cli.extract import _RateColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    task = progress.add_task(f"download ({source})", total=None)

    def on_start(total: int) -> None:
        progress.update(task, total=total)

    def on_record(record: dict[str, Any]) -> None:
        progress.advance(task)

    try:
        with progress:
            report = run_download(config, on_start=on_start, on_record=on_record)
    except AnnotationError as exc:
        fail(str(exc))
    except Exception as exc:
        from kinetics_prep.ray_engine import RayEngineError

        if isinstance(exc, RayEngineError):
            fail(str(exc))
        raise
    _print_report(report, output_dir)


def _print_report(report: dict[str, Any], output_dir: Path) -> None:
    from rich.table import Table

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
        f"{run['seconds']:.1f}s; report: {output_dir / 'download_report.json'}"
    )
    if report["invalid_rows"]:
        err_console.print(
            f"{report['invalid_rows']} invalid annotation rows (see reason invalid_row in "
            f"{output_dir / 'download_results.jsonl'})"
        )
