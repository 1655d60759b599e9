"""`kprep import-manifest`: a seed-format manifest + its frames -> kprep's Arrow dataset.

Flags come from ImportConfig's fields; the manifest is the one argument.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from kinetics_prep.cli.common import console
from kinetics_prep.cli.flags import command_from_config
from kinetics_prep.manifest_import import ImportConfig

_MANIFEST = inspect.Parameter(
    "manifest",
    inspect.Parameter.KEYWORD_ONLY,
    default=typer.Argument(..., help="Seed-format manifest: JSON list or JSON lines."),
    annotation=Path,
)


def import_manifest(values: dict[str, Any], manifest: Path) -> None:
    """An existing manifest (e.g. the reference kinetic_3K.json) -> Arrow dataset, unchanged."""
    from kinetics_prep.manifest_import import import_manifest as run

    summary = run(ImportConfig(manifest=manifest, **values))
    frames = ", ".join(f"{n} frames: {c}" for n, c in sorted(summary.frames_per_sample.items()))
    console.print(
        f"imported {summary.samples} samples ({frames}; {len(summary.labels)} labels; "
        f"{len(summary.prompts)} prompt(s)) in {summary.seconds:.1f} s",
        highlight=False,
    )
    console.print(f"wrote {summary.arrow_dir}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `import-manifest` to ``app``."""
    app.command("import-manifest")(
        command_from_config(ImportConfig, import_manifest, extra=[_MANIFEST])
    )
