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

from kinetics_prep.cli.common import console, fail
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
        default=typer.Option(
            None,
            "--prompt-file",
            help="Prompts, one per line (or a JSON list).",
            show_default="none",
        ),
        annotation=Path | None,
    ),
]


def build_manifest(
    values: dict[str, Any], prompt: list[str] | None, prompt_file: Path | None
) -> None:
    """Frames + labels -> the conversation manifest, label map and Arrow dataset."""
    from rich.markup import escape
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
    _check_manifest_outputs(config, prompt_file)
    summary = build(config)

    table = Table(title=f"kprep build-manifest: {escape(str(config.output))}")
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
        console.print(f"wrote {path}", highlight=False, markup=False)


def _check_manifest_outputs(config: ManifestConfig, prompt_file: Path | None) -> None:
    """Every file build-manifest writes, checked before it reads a frame."""
    from kinetics_prep.paths import check_output
    from kinetics_prep.schema import SPLITS

    inputs: dict[str, Any] = {
        "--frames-dir": config.frames_dir,
        "--annotations": config.annotations,
        "--prompt-file": prompt_file,
    }
    for name in ("captions", "label_map", "labels"):
        value = getattr(config, name, None)
        if isinstance(value, str | Path):
            inputs[f"--{name.replace('_', '-')}"] = value
    files = [config.output, config.label_map_path, config.report_path]
    files += [config.split_path(split) for split in SPLITS]
    for path in files:
        check_output(path, "--output", kind="file", inputs=inputs)
    check_output(config.arrow_dir, "--output", kind="dir", inputs=inputs)


_DATASET = inspect.Parameter(
    "dataset",
    inspect.Parameter.KEYWORD_ONLY,
    default=typer.Argument(..., help="Manifest JSON or *_arrow folder."),
    annotation=Path,
)
_VALIDATE_FLAGS = [
    _DATASET,
    inspect.Parameter(
        "as_json",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(False, "--json", help="Print the report as JSON.", show_default="off"),
        annotation=bool,
    ),
    inspect.Parameter(
        "show",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(20, "--show", help="Problems listed (all are counted)."),
        annotation=int,
    ),
]
_PUSH_ARGS = [
    _DATASET.replace(
        name="path",
        default=typer.Argument(
            ...,
            help="The *_arrow folder of build-manifest, or the --output-dir of `kprep train` "
            "(or of `kprep merge`).",
        ),
    ),
    inspect.Parameter(
        "repo_id",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Argument(..., help="Hub repo, e.g. me/kinetics-3k or me/gemma4-lora."),
        annotation=str,
    ),
]


def validate(values: dict[str, Any], dataset: Path, as_json: bool, show: int) -> None:
    """Check a manifest against its image root; exit 1 when anything is wrong."""
    from dataclasses import asdict

    from rich.markup import escape
    from rich.table import Table

    from kinetics_prep.validate import ValidateOptions, report_json, validate_dataset

    report = validate_dataset(dataset, **asdict(ValidateOptions(**values)))
    if as_json:
        typer.echo(json.dumps(report_json(report), ensure_ascii=False, indent=2))
    else:
        table = Table(title=f"kprep validate: {escape(report.source)} ({report.format})")
        table.add_column("check")
        table.add_column("count", justify="right")
        table.add_row("samples", str(report.samples))
        for split, count in report.splits.items():
            table.add_row(f"  {split}", str(count))
        table.add_row("files checked", str(report.files_checked))
        table.add_row("frames per sample", str(report.expected_frames))
        table.add_row("labels in map", str(report.labels))
        table.add_row("answers", report.kind)
        for kind, count in report.counts().items():
            table.add_row(f"[red]{kind}[/]", str(count))
        console.print(table)
        for problem in report.problems[:show]:
            line = f"  {problem.sample}: {problem.kind}: {problem.message}"
            console.print(escape(line), highlight=False)
        if len(report.problems) > show:
            console.print(f"  ... {len(report.problems) - show} more (--show N or --json)")
        console.print("[green]ok[/]" if report.ok else f"[red]{len(report.problems)} problems[/]")
    if not report.ok:
        raise typer.Exit(1)


def push(values: dict[str, Any], path: Path, repo_id: str) -> None:
    """Publish an Arrow dataset (parquet + dataset card) or a trained model (final files + card)."""
    from kinetics_prep.hub import PushOptions
    from kinetics_prep.publish import dry_run as stage
    from kinetics_prep.publish import push as publish

    options = PushOptions(**values)
    if options.dry_run is not None:
        from kinetics_prep.paths import check_output

        check_output(options.dry_run, "--dry-run", kind="dir", inputs={"PATH": path})
        kind, staged = stage(
            path,
            options.dry_run,
            repo_id=repo_id,
            base_model_id=options.base_model_id,
            dataset_id=options.dataset_id,
        )
    else:
        result = publish(
            path,
            repo_id,
            public=options.public,
            overwrite=options.overwrite,
            token=options.token,
            base_model_id=options.base_model_id,
            dataset_id=options.dataset_id,
        )
        kind, staged = result.kind, result.staged
    if kind == "dataset":
        what = ", ".join(f"{name} {count}" for name, count in staged.splits.items())
    else:
        what = "model: " + ", ".join(p.name for p in staged.files)
    size = f"{staged.bytes / 1e6:.1f} MB"
    if options.dry_run is not None:
        console.print(f"dry run: {len(staged.files)} files ({what}; {size}) in {options.dry_run}", markup=False)
        for file in staged.files:
            console.print(f"  {file}", highlight=False, markup=False)
        return
    visibility = {True: "private", False: "public", None: "visibility unknown"}[result.private]
    console.print(f"pushed {what} ({size}) to {result.url} ({visibility})", highlight=False, markup=False)
    if result.created:
        console.print(f"created the {kind} repo {repo_id}", highlight=False, markup=False)
    if result.visibility_changed:
        console.print(f"set {repo_id} to {visibility}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add `build-manifest`, `validate` and `push` to ``app``."""
    app.command("build-manifest")(
        command_from_config(ManifestConfig, build_manifest, extra=_PROMPT_FLAGS)
    )
    from kinetics_prep.hub import PushOptions
    from kinetics_prep.validate import ValidateOptions

    app.command("validate")(command_from_config(ValidateOptions, validate, extra=_VALIDATE_FLAGS))
    app.command("push")(command_from_config(PushOptions, push, extra=_PUSH_ARGS))
