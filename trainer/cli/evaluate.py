"""`kprep eval`, `kprep predict`, `kprep merge`: thin commands over trainer.{evaluate,predict,merge}."""

from __future__ import annotations

from pathlib import Path

import typer

from kinetics_prep.cli.common import console, fail, run_command


def _setup_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    if not verbose:
        try:
            import transformers

            transformers.logging.set_verbosity_error()
        except ImportError:
            pass


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _progress_callback(bar):
    tasks: dict[str, int] = {}

    def update(description: str, done: int, total: int) -> None:
        if description not in tasks:
            tasks[description] = bar.add_task(description, total=total)
        bar.update(tasks[description], completed=done)

    return update


def eval_command(
    data_path: Path = typer.Option(
        ...,
        "--data-path",
        "--data_path",
        help="Held-out manifest JSON (e.g. kinetic_3K.validation.json) or Arrow folder.",
    ),
    model_id: str = typer.Option(
        ..., "--model-id", "--model_id", help="Base model folder or Hub id."
    ),
    adapter: Path | None = typer.Option(
        None,
        "--adapter",
        help="kprep train's --output-dir (LoRA adapter or full fine-tuned model).",
    ),
    compare_base: bool = typer.Option(
        False,
        "--compare-base",
        help="With --adapter, also evaluate the base model alone, side by side.",
    ),
    frame_order: list[str] = typer.Option(
        ["normal"], "--frame-order", help="normal, shuffled or reversed; repeat for several."
    ),
    method: str = typer.Option("both", "--method", help="both, generation or ranking."),
    image_folder: Path | None = typer.Option(
        None,
        "--image-folder",
        "--image_folder",
        help="Root of the image paths (default: the manifest's folder).",
    ),
    split: str = typer.Option("validation", "--split", help="Split of an Arrow DatasetDict."),
    label_map: Path | None = typer.Option(
        None, "--label-map", help="label_map.json (default: next to the data)."
    ),
    max_samples: int | None = typer.Option(
        None, "--max-samples", help="Evaluate the first N samples only."
    ),
    batch_size: int = typer.Option(
        16, "--batch-size", help="Candidate answers scored per forward pass."
    ),
    max_new_tokens: int = typer.Option(24, "--max-new-tokens", help="Longest generated answer."),
    top_k: int = typer.Option(5, "--top-k", help="k of the ranking top-k accuracy."),
    max_soft_tokens: int | None = typer.Option(
        None, "--max-soft-tokens", help="Vision tokens per frame (as in training)."
    ),
    num_frames: int | None = typer.Option(
        None,
        "--num-frames",
        help="Frames decoded from each raw-video sample (default: the training recipe's, else 4).",
    ),
    sampling: str | None = typer.Option(
        None,
        "--sampling",
        help="Frame sampling of raw-video samples: center | linspace | random "
        "(default: the training recipe's, else center).",
    ),
    decoder: str = typer.Option(
        "auto",
        "--decoder",
        help="Video decoder for raw-video samples (auto, decord, pyav, opencv).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the shuffled frame order."),
    torch_threads: int | None = typer.Option(
        None, "--torch-threads", help="CPU threads for torch."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the JSON report here (and a .md table beside it)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Held-out top-1 (generation) and top-1/top-5 (likelihood ranking) accuracy."""
    _setup_logging(verbose)
    try:
        from trainer.evaluate import EvalConfig, evaluate
        from trainer.report import markdown_table
    except ImportError as exc:
        fail(f"evaluation needs the training stack ({exc.name} missing): pip install -e '.[train]'")
    with run_command():
        cfg = EvalConfig(
            model_id=model_id,
            data_path=str(data_path),
            image_folder=str(image_folder) if image_folder else None,
            split=split,
            adapter=str(adapter) if adapter else None,
            compare_base=compare_base,
            frame_orders=tuple(frame_order),
            method=method,
            label_map=str(label_map) if label_map else None,
            max_samples=max_samples,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            top_k=top_k,
            max_soft_tokens=max_soft_tokens,
            num_frames=num_frames,
            sampling=sampling,
            decoder=decoder,
            seed=seed,
            torch_threads=torch_threads,
            output=str(output) if output else None,
        )
        with _progress() as bar:
            report = evaluate(cfg, progress=_progress_callback(bar))
    console.print(markdown_table(report), highlight=False, soft_wrap=True)
    if output:
        console.print(f"report -> {output} (+ {output.with_suffix('.md').name})", highlight=False)


def predict(
    source: Path = typer.Argument(..., help="A clip file or an extracted frames/<clip_id> folder."),
    adapter: Path | None = typer.Option(
        None, "--adapter", help="kprep train's --output-dir (LoRA or full model)."
    ),
    model_id: str | None = typer.Option(
        None, "--model-id", "--model_id", help="Base model (default: from training_summary.json)."
    ),
    rank: bool = typer.Option(False, "--rank", help="Also rank every label by answer likelihood."),
    top_k: int = typer.Option(5, "--top-k", help="Labels shown with --rank."),
    num_frames: int | None = typer.Option(
        None, "--num-frames", help="Frames decoded from a clip (default: the training recipe's)."
    ),
    sampling: str | None = typer.Option(
        None, "--sampling", help="center | linspace | random (default: the training recipe's)."
    ),
    short_side: int | None = typer.Option(
        None, "--short-side", help="Shrink decoded frames as `kprep extract --short-side` did."
    ),
    label_map: Path | None = typer.Option(
        None, "--label-map", help="label_map.json (default: beside the training data)."
    ),
    prompt: str | None = typer.Option(
        None, "--prompt", help="Override the prompt (default: the training data's)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Name the action in one clip, with the sampling and prompt used in training."""
    _setup_logging(verbose)
    try:
        from trainer.predict import PredictConfig
        from trainer.predict import predict as run_predict
    except ImportError as exc:
        fail(f"predict needs the training stack ({exc.name} missing): pip install -e '.[train]'")
    with run_command():
        cfg = PredictConfig(
            source=str(source),
            adapter=str(adapter) if adapter else None,
            model_id=model_id,
            rank=rank,
            top_k=top_k,
            num_frames=num_frames,
            sampling=sampling,
            short_side=short_side,
            label_map=str(label_map) if label_map else None,
            prompt=prompt,
        )
        result = run_predict(cfg)
    if as_json:
        import json

        typer.echo(json.dumps(result))
        return
    label = result["label"] or "(no label matches the answer)"
    console.print(f"{source}: {label}", highlight=False)
    console.print(f"answer: {result['answer']!r}", highlight=False)
    for i, row in enumerate(result.get("ranked") or [], start=1):
        console.print(f"  {i}. {row['label']}  (log-likelihood {row['log_likelihood']:.3f})")


def merge(
    adapter: Path = typer.Option(..., "--adapter", help="kprep train's --output-dir."),
    output: Path = typer.Option(..., "--output", help="Folder for the merged model + README.md."),
    model_id: str | None = typer.Option(
        None, "--model-id", "--model_id", help="Base model (default: from training_summary.json)."
    ),
    eval_report: Path | None = typer.Option(
        None, "--eval-report", help="kprep eval --output JSON: its table goes into the card."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --output."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Merge a LoRA adapter into its base (safetensors) and write a model card."""
    _setup_logging(verbose)
    try:
        from trainer.merge import merge as run_merge
    except ImportError as exc:
        fail(f"merge needs the training stack ({exc.name} missing): pip install -e '.[train]'")
    with run_command():
        out = run_merge(
            adapter,
            output,
            model_id=model_id,
            eval_report=eval_report,
            overwrite=overwrite,
        )
    console.print(f"merged model + README.md -> {out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `kprep eval`, `kprep predict` and `kprep merge` to ``app``."""
    app.command("eval")(eval_command)
    app.command("predict")(predict)
    app.command("merge")(merge)
