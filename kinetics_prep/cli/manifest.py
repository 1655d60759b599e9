"""`kprep build-manifest`, `kprep validate`, `kprep push`: thin commands over the library.

build-manifest's flags come from ManifestConfig's fields (plus --prompt and
--prompt-file, which make its ``prompts``). Exit codes: 0 done; 1 `validate`
found problems; 2 unusable arguments or inputs (one line saying what and what
to do).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import typer

from kinetics_prep.cli.common import console, fail, run_command
from kinetics_prep.cli.flags import command_from_config
from kinetics_prep.manifest import ManifestConfig

_PROMPT_FLAGS = [
    inspect.Parameter(
        "prompt",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(
            None,
            "--prompt",
            help="User prompt; repeat for several (one chosen per sample by seed).",
            show_default="the default prompt of docs/schema.md",
        ),
        annotation=list[str] | None,
    ),
    inspect.Parameter(
        "prompt_file",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(None, "--prompt-file", help="Prompts, one per line (or a JSON list)."),
        annotation=Path | None,
    ),
]


def build_manifest(
    values: dict[str, Any], prompt: list[str] | None, prompt_file: Path | None
) -> None:
    """Frames + labels -> the conversation manifest, label map and Arrow dataset."""
    from rich.table import Table

    from kinetics_prep.conversation import parse_prompts
    from kinetics_prep.manifest import build_manifest as build
    from kinetics_prep.schema import DEFAULT_PROMPT

    prompts = list(prompt or [])
    if prompt_file is not None:
        try:
            text = prompt_file.read_text(encoding="utf-8")
        except OSError as error:
            fail(f"--prompt-file {str(prompt_file)!r} cannot be read ({error.strerror})")
        prompts += parse_prompts(text, source=f"--prompt-file {prompt_file}")
    config = ManifestConfig(**values, prompts=prompts or [DEFAULT_PROMPT])
    summary = build(config)

    table = Table(title=f"kprep build-manifest: {config.output}")
    table.add_column("clips")
    table.add_column("count", justify="right")
    table.add_row("extract records", str(summary.records))
    for split, count in summary.splits.items():
        table.add_row(f"[green]{split}[/]", str(count))
    for reason, count in sorted(summary.left_out.items()):
        table.add_row(f"[red]left out: {reason}[/]", str(count))
    table.caption = f"{len(summary.labels)} labels; {summary.seconds:.1f} s"
    console.print(table)
    for path in summary.outputs:
        console.print(f"wrote {path}", highlight=False)


def validate(
    dataset: Path = typer.Argument(..., help="Manifest JSON or *_arrow folder."),
    image_root: Path | None = typer.Option(
        None, "--image-root", help="Folder paths are relative to [default: the dataset's folder]."
    ),
    num_frames: int | None = typer.Option(
        None, "--num-frames", help="Frames each sample must have [default: the common count]."
    ),
    label_map: Path | None = typer.Option(
        None, "--label-map", help="label_map.json [default: next to the dataset]."
    ),
    decode: bool = typer.Option(True, "--decode/--no-decode", help="Decode every file."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    show: int = typer.Option(20, "--show", help="Problems listed (all are counted)."),
) -> None:
    """Check a manifest against its image root; exit 1 when anything is wrong."""
    from rich.table import Table

    from kinetics_prep.validate import report_json, validate_dataset

    if num_frames is not None and num_frames < 1:
        fail(f"--num-frames ({num_frames}) must be >= 1")
    with run_command():
        report = validate_dataset(
            dataset,
            image_root=image_root,
            num_frames=num_frames,
            label_map=label_map,
            decode=decode,
        )
    if as_json:
        typer.echo(json.dumps(report_json(report), ensure_ascii=False, indent=2))
    else:
        table = Table(title=f"kprep validate: {report.source} ({report.format})")
        table.add_column("check")
        table.add_column("count", justify="right")
        table.add_row("samples", str(report.samples))
        for split, count in report.splits.items():
            table.add_row(f"  {split}", str(count))
        table.add_row("files checked", str(report.files_checked))
        table.add_row("frames per sample", str(report.expected_frames))
        table.add_row("labels in map", str(report.labels))
        for kind, count in report.counts().items():
            table.add_row(f"[red]{kind}[/]", str(count))
        console.print(table)
        for problem in report.problems[:show]:
            console.print(f"  {problem.sample}: {problem.kind}: {problem.message}", highlight=False)
        if len(report.problems) > show:
            console.print(f"  ... {len(report.problems) - show} more (--show N or --json)")
        console.print("[green]ok[/]" if report.ok else f"[red]{len(report.problems)} problems[/]")
    if not report.ok:
        raise typer.Exit(1)


def push(
    dataset: Path = typer.Argument(..., help="The *_arrow folder written by build-manifest."),
    repo_id: str = typer.Argument(..., help="Hub dataset repo, e.g. me/kinetics-3k."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="HF_TOKEN",
        show_default=False,
        help="Hub token [default: HF_TOKEN or the saved login]. Never printed.",
    ),
    dry_run: Path | None = typer.Option(
        None, "--dry-run", help="Write the parquet shards + README.md here instead of uploading."
    ),
) -> None:
    """Upload the Arrow dataset (images embedded) with a generated dataset card."""
    from kinetics_prep.hub import push_dataset, stage_upload

    with run_command():
        if dry_run is not None:
            staged = stage_upload(dataset, dry_run, repo_id=repo_id)
        else:
            result = push_dataset(dataset, repo_id, private=private, token=token)
            staged = result.staged
    splits = ", ".join(f"{name} {count}" for name, count in staged.splits.items())
    size = f"{staged.bytes / 1e6:.1f} MB"
    if dry_run is not None:
        console.print(f"dry run: {len(staged.files)} files ({splits}; {size}) in {dry_run}")
        for path in staged.files:
            console.print(f"  {path}", highlight=False)
    else:
        console.print(f"pushed {splits} ({size}) to {result.url}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `build-manifest`, `validate` and `push` to ``app``."""
    app.command("build-manifest")(
        command_from_config(ManifestConfig, build_manifest, extra=_PROMPT_FLAGS)
    )
    app.command("validate")(validate)
    app.command("push")(push)
