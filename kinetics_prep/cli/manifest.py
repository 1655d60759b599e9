"""`kprep build-manifest`, `kprep validate`, `kprep push`: thin commands over the library.

Exit codes: 0 done; 1 `validate` found problems; 2 unusable arguments or
inputs (one line saying what and what to do).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from kinetics_prep.cli import app
from kinetics_prep.cli._common import console, fail


@app.command("build-manifest")
def build_manifest(
    frames_dir: Path = typer.Option(
        ..., "--frames-dir", help="The --output-dir of `kprep extract` (records + frames/)."
    ),
    output: Path = typer.Option(
        Path("dataset/kinetics_3k/kinetic_3K.json"),
        "--output",
        help="Manifest JSON; its folder is the image root all paths are relative to.",
    ),
    annotations: Path | None = typer.Option(
        None, "--annotations", help="Kinetics CSV/JSON joined on clip_id (labels, times, split)."
    ),
    prompt: list[str] | None = typer.Option(
        None, "--prompt", help="User prompt; repeat for several (one chosen per sample by seed)."
    ),
    prompt_file: Path | None = typer.Option(
        None, "--prompt-file", help="Prompts, one per line (or a JSON list)."
    ),
    answer_template: str = typer.Option(
        "The video shows {label}.",
        "--answer-template",
        help="Answer text; {label} is the class name ('{label}' for the bare label).",
    ),
    media: str = typer.Option("images", "--media", help="images (the frames) | video (the clip)."),
    val_fraction: float = typer.Option(
        0.0, "--val-fraction", help="Share held out as validation, grouped by YouTube video."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for prompt choice and the split."),
    fmt: str = typer.Option("seed", "--format", help="seed (the recipe's messages) | llava."),
    arrow: bool = typer.Option(True, "--arrow/--no-arrow", help="Also write <stem>_arrow/."),
    images: str = typer.Option(
        "embed", "--images", help="Arrow images: embed (JPEG bytes) | paths (absolute paths)."
    ),
) -> None:
    """Frames + labels -> the conversation manifest, label map and Arrow dataset."""
    from rich.table import Table

    from kinetics_prep.conversation import DEFAULT_PROMPT, ConversationError, parse_prompts
    from kinetics_prep.manifest import ManifestConfig, ManifestError
    from kinetics_prep.manifest import build_manifest as build

    prompts = list(prompt or [])
    try:
        if prompt_file is not None:
            try:
                text = prompt_file.read_text(encoding="utf-8")
            except OSError as error:
                fail(f"--prompt-file {str(prompt_file)!r} cannot be read ({error.strerror})")
            prompts += parse_prompts(text, source=f"--prompt-file {prompt_file}")
        config = ManifestConfig(
            frames_dir=frames_dir,
            output=output,
            annotations=annotations,
            prompts=prompts or [DEFAULT_PROMPT],
            answer_template=answer_template,
            media=media,
            val_fraction=val_fraction,
            seed=seed,
            format=fmt,
            arrow=arrow,
            images=images,
        )
        summary = build(config)
    except (ManifestError, ConversationError) as error:
        fail(str(error))
    except Exception as error:
        from kinetics_prep.annotations import AnnotationError

        if isinstance(error, AnnotationError):
            fail(str(error))
        raise

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


@app.command()
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

    from kinetics_prep.validate import ValidationError, report_json, validate_dataset

    if num_frames is not None and num_frames < 1:
        fail(f"--num-frames ({num_frames}) must be >= 1")
    try:
        report = validate_dataset(
            dataset,
            image_root=image_root,
            num_frames=num_frames,
            label_map=label_map,
            decode=decode,
        )
    except ValidationError as error:
        fail(str(error))
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


@app.command()
def push(
    path: Path = typer.Argument(
        ...,
        help="The *_arrow folder of build-manifest, or the --output-dir of `kprep train` / merge.",
    ),
    repo_id: str = typer.Argument(..., help="Hub repo, e.g. me/kinetics-3k or me/gemma4-lora."),
    public: bool | None = typer.Option(
        None,
        "--public/--private",
        show_default=False,
        help="Visibility of the repo [default: a new repo is private; an existing one keeps its own].",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace files in an existing repo that kprep did not create."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="HF_TOKEN",
        show_default=False,
        help="Hub token [default: HF_TOKEN or the saved login]. Never printed.",
    ),
    dry_run: Path | None = typer.Option(
        None, "--dry-run", help="Write exactly what would be uploaded here instead of uploading."
    ),
    base_model_id: str | None = typer.Option(
        None, "--base-model-id", help="Model: Hub id of the base model for the card."
    ),
    dataset_id: str | None = typer.Option(
        None, "--dataset-id", help="Model: Hub id of the training dataset for the card."
    ),
) -> None:
    """Publish an Arrow dataset (parquet + dataset card) or a trained model (final files + card)."""
    from kinetics_prep.hub import HubError
    from kinetics_prep.publish import dry_run as stage
    from kinetics_prep.publish import push as publish

    ids = {"base_model_id": base_model_id, "dataset_id": dataset_id}
    try:
        if dry_run is not None:
            kind, staged = stage(path, dry_run, repo_id=repo_id, **ids)
        else:
            result = publish(path, repo_id, public=public, overwrite=overwrite, token=token, **ids)
            kind, staged = result.kind, result.staged
    except HubError as error:
        fail(str(error))
    if kind == "dataset":
        what = ", ".join(f"{name} {count}" for name, count in staged.splits.items())
    else:
        what = "model: " + ", ".join(p.name for p in staged.files)
    size = f"{staged.bytes / 1e6:.1f} MB"
    if dry_run is not None:
        console.print(f"dry run: {len(staged.files)} files ({what}; {size}) in {dry_run}")
        for file in staged.files:
            console.print(f"  {file}", highlight=False)
        return
    visibility = {True: "private", False: "public", None: "visibility unknown"}[result.private]
    console.print(f"pushed {what} ({size}) to {result.url} ({visibility})", highlight=False)
    if result.created:
        console.print(f"created the {kind} repo {repo_id}", highlight=False)
    if result.visibility_changed:
        console.print(f"set {repo_id} to {visibility}", highlight=False)
