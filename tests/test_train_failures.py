"""Issue 12, training side through `kprep train`: a run that trains nothing says so,
--resume skips a checkpoint an interrupted save left incomplete, Ctrl-C is one line.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from trainer.cli import app  # noqa: E402
from trainer.tiny import tiny_model_path, write_synthetic_manifest  # noqa: E402

runner = CliRunner()
TINY = str(tiny_model_path())
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return write_synthetic_manifest(folder, num_samples=4, size=32)


def _train(manifest, out, *extra: str):
    argv = [
        "train",
        "--model-id",
        TINY,
        "--data-path",
        str(manifest),
        "--output-dir",
        str(out),
        "--per-device-train-batch-size",
        "2",
        "--gradient-accumulation-steps",
        "1",
        "--optim",
        "adamw_torch",
        "--torch-threads",
        "1",
        *extra,
    ]
    return runner.invoke(app, argv)


def _summary(out) -> dict:
    return json.loads((out / "training_summary.json").read_text(encoding="utf-8"))


def test_one_step_run_trains_at_a_nonzero_rate(manifest, tmp_path):
    out = tmp_path / "one"
    result = _train(manifest, out, "--max-steps", "1")
    assert result.exit_code == 0, result.output
    summary = _summary(out)
    assert summary["global_step"] == 1
    assert summary["warmup_steps"] == 0
    assert summary["weights_changed"] is True
    lrs = [e["learning_rate"] for e in summary["log_history"] if "learning_rate" in e]
    assert lrs and all(lr > 0 for lr in lrs), lrs
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert any(bool(v.abs().sum() > 0) for k, v in adapter.items() if "lora_B" in k)


def test_run_whose_weights_did_not_move_exits_nonzero(manifest, tmp_path, monkeypatch):
    import trainer.train as train_module

    monkeypatch.setattr(train_module, "trainable_fingerprint", lambda model: {"w": (0.0, 0.0)})
    out = tmp_path / "still"
    result = _train(manifest, out, "--max-steps", "1")
    assert result.exit_code == 2, result.output
    assert "trained nothing" in result.output
    assert _summary(out)["weights_changed"] is False


def test_resume_skips_an_incomplete_checkpoint(manifest, tmp_path):
    out = tmp_path / "run"
    first = _train(manifest, out, "--max-steps", "2", "--save-steps", "1")
    assert first.exit_code == 0, first.output
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    # Ctrl-C during the next save: the folder exists, with the weights but no state.
    partial = out / "checkpoint-3"
    partial.mkdir()
    (partial / "adapter_config.json").write_text("{}", encoding="utf-8")
    result = _train(manifest, out, "--max-steps", "3", "--save-steps", "1", "--resume")
    assert result.exit_code == 0, result.output
    summary = _summary(out)
    assert summary["resumed_from"].endswith("checkpoint-2")
    assert summary["global_step"] == 3


def test_eval_names_the_real_split_caps_top_k_and_warns_on_training_samples(manifest, tmp_path):
    from kinetics_prep.schema import LABEL_MAP_NAME, write_label_map

    write_label_map(manifest.with_name(LABEL_MAP_NAME), ["moving left", "moving right"])
    out = tmp_path / "adapter"
    assert _train(manifest, out, "--max-steps", "1").exit_code == 0
    assert set(_summary(out)["data"]["sample_ids"]) == {
        s["id"] for s in json.loads(manifest.read_text(encoding="utf-8"))
    }
    report_path = tmp_path / "eval.json"
    result = runner.invoke(
        app,
        [
            "eval",
            "--data-path",
            str(manifest),
            "--model-id",
            TINY,
            "--adapter",
            str(out),
            "--method",
            "ranking",
            "--top-k",
            "1000",
            "--max-samples",
            "2",
            "-o",
            str(report_path),
        ],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["split"] == "all"  # a manifest file without a split suffix, not "validation"
    assert report["runs"][0]["ranking"]["top_k"] == 2
    assert "top-1000" not in result.output and "top-2" in result.output
    assert report["trained_on"] == 2
    assert "were in the adapter's training data" in result.output


def test_shipped_recipe_trains_on_the_train_split():
    from trainer.config import TrainConfig, packaged_config

    cfg = TrainConfig.from_sources(config_file=packaged_config("gemma4_e4b_lora.yaml"))
    assert cfg.data_path.endswith(".train.json"), cfg.data_path


NOISE = ("Warning", "warnings.warn", "deprecated", "Failed to load", "kernels", "No CUDA runtime")


def test_train_and_eval_stderr_has_no_third_party_warnings(manifest, tmp_path):
    """Known-harmless library warnings are silenced by default (``-v`` shows them)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from kinetics_prep.schema import LABEL_MAP_NAME, write_label_map

    write_label_map(manifest.with_name(LABEL_MAP_NAME), ["moving left", "moving right"])
    repo = Path(__file__).resolve().parents[1]
    main = "import sys; from trainer.cli import main; sys.argv = ['kprep', *sys.argv[1:]]; main()"
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONWARNINGS": "default"}
    out = tmp_path / "run"
    runs = [
        ["train", "--model-id", TINY, "--data-path", str(manifest), "--output-dir", str(out),
         "--max-steps", "1", "--per-device-train-batch-size", "2",
         "--gradient-accumulation-steps", "1", "--torch-threads", "1"],
        ["eval", "--model-id", TINY, "--adapter", str(out), "--data-path", str(manifest),
         "--method", "ranking", "--max-samples", "1", "--torch-threads", "1"],
    ]  # fmt: skip
    for argv in runs:
        proc = subprocess.run(
            [sys.executable, "-c", main, *argv],
            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        noisy = [line for line in proc.stderr.splitlines() if any(n in line for n in NOISE)]
        noisy = [line for line in noisy if "were in the adapter's training data" not in line]
        assert not noisy, "\n".join(noisy)
