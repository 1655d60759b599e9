"""`kprep demo`: clips -> extract -> build-manifest -> train -> eval on a CPU, in one command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from kinetics_prep.cli.common import console, fail, run_command
from trainer.cli.quiet import quiet_third_party
from trainer.cli.stack import require_training_stack


def demo(
    output_dir: Path = typer.Option(
        Path("dataset/demo"),
        "--output-dir",
        help="Where reports go; clips, frames and runs go to DIR/seed-N/.",
    ),
    clips_per_class: int = typer.Option(
        125, "--clips-per-class", help="Synthetic clips per class."
    ),
    max_steps: int = typer.Option(600, "--max-steps", help="LoRA training steps, batch 8."),
    control_steps: int = typer.Option(
        600, "--control-steps", help="Steps of the order-blind control."
    ),
    learning_rate: float = typer.Option(
        2e-3, "--learning-rate", help="Learning rate of the text layers' LoRA adapters."
    ),
    projector_lr: float = typer.Option(
        1e-3, "--projector-lr", help="Learning rate of the vision->text projector (0: frozen)."
    ),
    base_model: Path = typer.Option(
        None,
        "--base-model",
        help="Model folder the LoRA adapts.",
        show_default="the packaged pretrained tiny Gemma 4",
    ),
    control: bool = typer.Option(
        True, "--control/--no-control", help="Also train the order-blind control (frames permuted)."
    ),
    eval_split: str = typer.Option(
        "test", "--eval-split", help="Split the figures come from: test, or validation for tuning."
    ),
    workers: int = typer.Option(2, "--workers", help="Extract worker processes."),
    torch_threads: int = typer.Option(
        1, "--torch-threads", help="CPU threads for torch (1 suits the tiny model best)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the clips, the split and training."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Show library logs.", show_default="off"
    ),
) -> None:
    """Prove on a CPU that kprep's training teaches a tiny Gemma 4 to read frame order."""
    quiet_third_party(verbose)
    require_training_stack("demo")
    from kinetics_prep.paths import check_output

    with run_command():
        check_output(output_dir, "--output-dir", kind="dir")
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    try:
        import transformers

        from trainer.demo import TARGETS, DemoConfig, run_demo
        from trainer.report import markdown_table
    except ImportError as exc:
        fail(f"the demo needs the training stack ({exc.name} missing): pip install -e '.[train]'")
    if not verbose:
        transformers.logging.set_verbosity_error()
    from trainer.cli.evaluate import _progress, _progress_callback

    with run_command():
        config = DemoConfig(
            output_dir=str(output_dir),
            clips_per_class=clips_per_class,
            max_steps=max_steps,
            control_steps=control_steps,
            learning_rate=learning_rate,
            projector_lr=projector_lr,
            base_model=str(base_model) if base_model else None,
            control=control,
            eval_split=eval_split,
            workers=workers,
            torch_threads=torch_threads,
            seed=seed,
        )

        def on_stage(name: str, message: str) -> None:
            console.print(f"[bold]{escape(name):>8}[/] {escape(message)}", highlight=False)

        console.print(
            f"kprep demo -> {output_dir} (training takes a few minutes on a CPU)", markup=False
        )
        with _progress() as bar:
            result = run_demo(config, on_stage=on_stage, progress=_progress_callback(bar))
    console.print(markdown_table(result["eval"]), highlight=False, soft_wrap=True, markup=False)
    control_top1 = result["order_blind_control_top1"]
    control_text = "not run" if control_top1 is None else f"{control_top1:.3f}"
    console.print(
        f"{result['eval_split']} split: top1 {result['top1']:.3f} (target >= {TARGETS['top1']}), "
        f"reversed {result['top1_reversed']:.3f} (<= {TARGETS['top1_reversed']}), "
        f"shuffled {result['top1_shuffled']:.3f} (no target); order-blind control "
        f"{control_text} (<= {TARGETS['order_blind_control_top1']}); exact order-blind "
        f"ceiling {result['order_blind_ceiling']:.4f}; train {result['train_seconds']:.0f} s, "
        f"total {result['total_seconds']:.0f} s",
        highlight=False,
    )
    console.print(f"contact sheet -> {result['contact_sheet']}", highlight=False, markup=False)
    console.print(f"report -> {output_dir / 'demo_report.json'}", highlight=False, markup=False)
    if not result["targets_met"]:
        console.print("[yellow]targets not met[/] (see the report)", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `kprep demo` to ``app``."""
    app.command("demo")(demo)
