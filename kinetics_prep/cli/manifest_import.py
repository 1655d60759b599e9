"""`kprep import-manifest`: a seed-format manifest + its frames -> kprep's Arrow dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from kinetics_prep.cli import app
from kinetics_prep.cli._common import console, fail


@app.command("import-manifest")
def import_manifest(
    manifest: Path = typer.Argument(..., help="Seed-format manifest: JSON list or JSON lines."),
    image_root: Path | None = typer.Option(
        None, "--image-root", help="Folder the image paths are relative to [default: its folder]."
    ),
    output: Path | None = typer.Option(
        None, "--output", help="Arrow folder to write [default: <stem>_arrow beside it]."
    ),
    images: str = typer.Option(
        "embed", "--images", help="embed (JPEG bytes) | paths (absolute paths)."
    ),
    split: str = typer.Option("train", "--split", help="Split the samples go to."),
) -> None:
    """An existing manifest (e.g. the reference kinetic_3K.json) -> Arrow dataset, unchanged."""
    from kinetics_prep.manifest import ManifestError
    from kinetics_prep.manifest_import import ImportConfig
    from kinetics_prep.manifest_import import import_manifest as run

    try:
        summary = run(
            ImportConfig(
                manifest=manifest, image_root=image_root, output=output, images=images, split=split
            )
        )
    except ManifestError as error:
        fail(str(error))
    except OSError as error:
        fail(f"{manifest}: {error}")
    frames = ", ".join(f"{n} frames: {c}" for n, c in sorted(summary.frames_per_sample.items()))
    console.print(
        f"imported {summary.samples} samples ({frames}; {len(summary.labels)} labels; "
        f"{len(summary.prompts)} prompt(s)) in {summary.seconds:.1f} s",
        highlight=False,
    )
    console.print(f"wrote {summary.arrow_dir}", highlight=False)
