"""`kprep eval`, `kprep predict`, `kprep merge`: thin commands over trainer.{evaluate,predict,merge}."""

from __future__ import annotations

from pathlib import Path

import typer

from kinetics_prep.cli import app
from kinetics_prep.cli._common import console, fail


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


@app.command("eval")
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
        from trainer.evaluate import EvalConfig, EvalError, evaluate, markdown_table
    except ImportError as exc:
        fail(f"evaluation needs the training stack ({exc.name} missing): pip install -e '.[train]'")
    try:
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
            seed=seed,
            torch_threads=torch_threads,
            output=str(output) if output else None,
        )
        with _progress() as bar:
            report = evaluate(cfg, progress=_progress_callback(bar))
    except (EvalError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print(markdown_table(report), highlight=False, soft_wrap=True)
    if output:
        console.print(f"report -> {output} (+ {output.with_suffix('.md').name})", highlight=False)
