"""Training-side commands never delete or overwrite what kprep did not write.

`kprep merge --overwrite`, `kprep train` and `kprep demo` on folders that hold a
user's files (or an earlier run) refuse with a one-line error and change nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kinetics_prep.outputs import MARKER_NAME

pytest.importorskip("torch")


def invoke(*args):
    from trainer.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_merge_overwrite_refuses_a_folder_kprep_did_not_write(tiny_lora_run, tmp_path):
    _, adapter, _ = tiny_lora_run
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work\n")
    result = invoke("merge", "--adapter", adapter, "--output", mine, "--overwrite")
    assert result.exit_code == 2
    assert "kprep did not write" in result.output and "\n" not in result.output.strip()
    assert files(mine) == {"thesis.tex": b"years of work\n"}
    # The adapter's own parent (`--output .` style) is refused the same way.
    parent = invoke("merge", "--adapter", adapter, "--output", adapter.parent, "--overwrite")
    assert parent.exit_code == 2 and adapter.is_dir()


def test_merge_overwrite_replaces_its_own_output(tiny_lora_run, tmp_path):
    _, adapter, _ = tiny_lora_run
    out = tmp_path / "merged"
    assert invoke("merge", "--adapter", adapter, "--output", out).exit_code == 0
    assert (out / MARKER_NAME).is_file()
    again = invoke("merge", "--adapter", adapter, "--output", out, "--overwrite")
    assert again.exit_code == 0, again.output
    assert (out / "model.safetensors").is_file() and not list(tmp_path.glob(".merged*"))


def test_train_into_a_used_output_dir_needs_resume(tiny_lora_run, tmp_path):
    from trainer.tiny import tiny_model_path

    data, adapter, _ = tiny_lora_run
    used = tmp_path / "run"
    shutil.copytree(adapter, used)
    before = files(used)
    result = invoke(
        "train", "--model-id", tiny_model_path(), "--data-path", data / "demo.train.json",
        "--output-dir", used, "--max-steps", "1", "--optim", "adamw_torch", "--no-bf16",
        "--no-gradient-checkpointing",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "is not empty" in result.output and "--resume" in result.output
    assert files(used) == before  # the earlier adapter and summary are untouched


def test_demo_refuses_run_folders_it_did_not_write(tmp_path):
    out = tmp_path / "demo"
    (out / "seed-0" / "run").mkdir(parents=True)
    (out / "seed-0" / "run" / "weights.bin").write_bytes(b"my model")
    result = invoke("demo", "--output-dir", out, "--clips-per-class", "2", "--max-steps", "1")
    assert result.exit_code == 2
    assert "kprep did not write" in result.output and "--output-dir" in result.output
    assert (out / "seed-0" / "run" / "weights.bin").read_bytes() == b"my model"
    assert not (out / "seed-0" / "clips").exists()  # refused before any work
