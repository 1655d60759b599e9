"""`kprep train`: flags built from TrainConfig's fields, then one call to trainer.train.train.

The flags come from the same generator as the data commands'
(``kinetics_prep.cli.flags.config_parameters``). Every field is a flag in kebab-case (``--model-id``) and in the published
launcher's snake_case (``--model_id``); booleans are ``--bf16/--no-bf16``
(and ``--use_lora/--no_use_lora``). Defaults < ``--config FILE`` < flags.
"""

from __future__ import annotations

import inspect
import os
import subprocess
from pathlib import Path
from typing import Any

import typer

from kinetics_prep.cli.common import console, fail, run_command
from kinetics_prep.cli.flags import config_parameters
from trainer.config import TrainConfig


def _train_command(config: Path | None = None, **flags: Any) -> None:
    with run_command():
        cfg = TrainConfig.from_sources(config_file=config, overrides=flags)
    if (cfg.num_gpus or cfg.hostfile) and "LOCAL_RANK" not in os.environ:
        from trainer.train import launcher_command, write_resolved_config

        cmd = launcher_command(
            write_resolved_config(cfg), num_gpus=cfg.num_gpus, hostfile=cfg.hostfile
        )
        console.print(f"launching: {' '.join(cmd)}", highlight=False)
        try:
            raise typer.Exit(subprocess.call(cmd))
        except FileNotFoundError:
            fail("the `deepspeed` launcher is not on PATH: pip install -e '.[train]'")

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        from trainer.train import train
    except ImportError as exc:
        fail(f"training needs the training stack ({exc.name} missing): pip install -e '.[train]'")
    with run_command():  # a KprepError is one line and exit 2; anything else is a bug
        summary = train(cfg)
    if summary:
        console.print(
            f"trained {summary['global_step']} steps, final loss {summary['final_loss']}, "
            f"{summary['train_samples_per_second']} samples/s -> {summary['output_dir']}",
            highlight=False,
        )


def _build_signature() -> inspect.Signature:
    config_file = inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(
            None,
            "--config",
            help="YAML or JSON file of settings (defaults < file < flags).",
            exists=True,
            dir_okay=False,
        ),
        annotation=Path | None,
    )
    # layered: a flag not given is None, so a --config file sits between defaults and flags
    flags = config_parameters(TrainConfig, snake_alias=True, layered=True)
    return inspect.Signature([config_file, *flags])


def train_command(**kwargs: Any) -> None:
    """Fine-tune Gemma 4 (LoRA on the text layers) on a kprep manifest or Arrow dataset."""
    _train_command(**kwargs)


train_command.__signature__ = _build_signature()  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    """Add `kprep train` (flags generated from TrainConfig) to ``app``."""
    app.command("train", help=train_command.__doc__)(train_command)
