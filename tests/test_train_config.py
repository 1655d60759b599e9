"""TrainConfig: recipe defaults, validation, precedence, shipped config files, flag spellings, launcher."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainer.config import DEFAULT_LORA_TARGET, ConfigError, TrainConfig, load_config_file

CONFIGS = sorted(Path(str(resources.files("trainer") / "configs")).glob("*.*"))


def test_defaults_are_the_published_recipe():
    cfg = TrainConfig()
    assert cfg.model_id == "google/gemma-4-e4b-it"
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (16, 32, 0.05)
    assert (
        cfg.num_train_epochs,
        cfg.per_device_train_batch_size,
        cfg.gradient_accumulation_steps,
    ) == (3.0, 1, 8)
    assert (cfg.learning_rate, cfg.lr_scheduler_type, cfg.warmup_ratio) == (2e-4, "cosine", 0.03)
    assert (cfg.weight_decay, cfg.max_grad_norm, cfg.optim) == (0.0, 1.0, "paged_adamw_8bit")
    assert cfg.bf16 and cfg.gradient_checkpointing and cfg.use_lora
    assert (cfg.save_steps, cfg.save_total_limit, cfg.logging_steps) == (200, 2, 10)
    assert (cfg.image_encoder_lr, cfg.projector_lr) == (0.0, 0.0)


def test_every_field_has_help():
    from dataclasses import fields

    assert all(f.metadata.get("help") for f in fields(TrainConfig))


def test_validation_collects_every_problem_and_names_the_flags():
    with pytest.raises(ConfigError) as err:
        TrainConfig(lora_r=0, max_soft_tokens=100, optim="adam", warmup_ratio=2.0)
    msg = str(err.value)
    for part in (
        "--lora-r (0)",
        "--max-soft-tokens (100)",
        "--optim ('adam')",
        "--warmup-ratio (2.0)",
    ):
        assert part in msg


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_file_loads(path):
    if path.name == "zero2.json":
        from trainer.train import resolve_deepspeed

        ds = resolve_deepspeed("zero2", max_grad_norm=0.5)
        assert ds["zero_optimization"]["stage"] == 2
        assert (
            ds["zero_optimization"]["overlap_comm"]
            and ds["zero_optimization"]["contiguous_gradients"]
        )
        assert ds["zero_optimization"]["reduce_bucket_size"] == 5e7
        assert ds["gradient_clipping"] == 0.5  # follows --max-grad-norm
        assert ds["train_micro_batch_size_per_gpu"] == "auto"
    else:
        cfg = TrainConfig.from_sources(config_file=path)
        assert cfg.lora_target_modules == DEFAULT_LORA_TARGET
        assert load_config_file(path)  # non-empty mapping


def test_precedence_defaults_file_flags(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("learning-rate: 1.0e-3\nlora_r: 8\nbf16: false\n")
    cfg = TrainConfig.from_sources(config_file=file, overrides={"lora_r": 4, "max_steps": None})
    assert cfg.learning_rate == 1e-3  # file beats default
    assert cfg.lora_r == 4  # flag beats file
    assert cfg.bf16 is False
    assert cfg.max_steps == -1  # not given -> default
    jfile = tmp_path / "c.json"
    jfile.write_text(json.dumps({"max_steps": "7"}))
    assert TrainConfig.from_sources(config_file=jfile).max_steps == 7


def test_unknown_and_mistyped_config_keys_fail_clearly(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("lora_rank: 8\n")
    with pytest.raises(ConfigError, match="unknown setting.*lora_rank"):
        TrainConfig.from_sources(config_file=file)
    file.write_text("lora_r: eight\n")
    with pytest.raises(ConfigError, match="lora_r"):
        TrainConfig.from_sources(config_file=file)


def _parsed(monkeypatch, args):
    """Run `kprep train ARGS` with train() replaced by a recorder; return the config."""
    import trainer.train as train_mod
    from trainer.cli import app

    seen = {}

    def fake_train(cfg):
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr(train_mod, "train", fake_train)
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    return seen["cfg"]


def test_snake_case_published_flags_parse_like_kebab_case(monkeypatch, tmp_path):
    snake = _parsed(
        monkeypatch,
        [
            "--model_id", "m", "--data_path", "d.json", "--image_folder", "imgs",
            "--output_dir", str(tmp_path), "--num_train_epochs", "1", "--max_steps", "5",
            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "4",
            "--learning_rate", "1e-4", "--optim", "adamw_torch", "--lora_r", "8",
            "--lora_alpha", "16", "--lora_dropout", "0.1", "--no_bf16",
            "--no_gradient_checkpointing", "--save_steps", "3", "--save_total_limit", "1",
            "--image_encoder_lr", "1e-5", "--projector_lr", "2e-5", "--no_use_lora",
            "--max_soft_tokens", "70",
        ],
    )  # fmt: skip
    kebab = _parsed(
        monkeypatch,
        [
            "--model-id", "m", "--data-path", "d.json", "--image-folder", "imgs",
            "--output-dir", str(tmp_path), "--num-train-epochs", "1", "--max-steps", "5",
            "--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "4",
            "--learning-rate", "1e-4", "--optim", "adamw_torch", "--lora-r", "8",
            "--lora-alpha", "16", "--lora-dropout", "0.1", "--no-bf16",
            "--no-gradient-checkpointing", "--save-steps", "3", "--save-total-limit", "1",
            "--image-encoder-lr", "1e-5", "--projector-lr", "2e-5", "--no-use-lora",
            "--max-soft-tokens", "70",
        ],
    )  # fmt: skip
    assert snake == kebab
    assert snake.lora_r == 8 and snake.bf16 is False and snake.use_lora is False
    assert snake.max_soft_tokens == 70 and snake.projector_lr == 2e-5


def test_cli_config_file_then_flags(monkeypatch, tmp_path):
    file = tmp_path / "r.yaml"
    file.write_text("lora_r: 8\nlearning_rate: 1.0e-3\n")
    cfg = _parsed(monkeypatch, ["--config", str(file), "--lora-r", "4", "--data-path", "x.json"])
    assert (cfg.lora_r, cfg.learning_rate) == (4, 1e-3)


def test_cli_reports_bad_values_in_one_line():
    from trainer.cli import app

    result = CliRunner().invoke(app, ["train", "--lora-r", "0", "--max-soft-tokens", "99"])
    assert result.exit_code == 2
    assert "--lora-r (0)" in result.output and "--max-soft-tokens (99)" in result.output


def test_launcher_command_for_multi_gpu_and_multi_node():
    from trainer.train import launcher_command

    single = launcher_command("out/train_config.json", num_gpus=4)
    assert single[:3] == ["deepspeed", "--num_gpus", "4"]
    assert single[3:5] == ["--module", "trainer.train"]
    assert single[-2:] == ["--config", "out/train_config.json"]
    multi = launcher_command("c.json", hostfile="hosts", num_gpus=8, master_port=29600)
    assert multi[:7] == [
        "deepspeed",
        "--hostfile",
        "hosts",
        "--num_gpus",
        "8",
        "--master_port",
        "29600",
    ]
    with pytest.raises(ValueError):
        launcher_command("c.json")


def test_cli_with_num_gpus_runs_the_launcher(monkeypatch, tmp_path):
    import subprocess

    from trainer.cli import app

    calls = []
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    result = CliRunner().invoke(
        app, ["train", "--data-path", "d.json", "--output-dir", str(tmp_path), "--num-gpus", "2"]
    )
    assert result.exit_code == 0, result.output
    (cmd,) = calls
    assert cmd[:3] == ["deepspeed", "--num_gpus", "2"]
    resolved = json.loads((tmp_path / "train_config.json").read_text())
    assert resolved["num_gpus"] is None and resolved["deepspeed"] == "zero2"
    # The workers rebuild exactly this config.
    assert (
        TrainConfig.from_sources(config_file=tmp_path / "train_config.json").data_path == "d.json"
    )


def test_every_kprep_train_command_in_the_docs_parses(monkeypatch):
    """Each `kprep train ...` line in docs/training.md and README.md uses real flags and values."""
    import shlex

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    commands = []
    for doc in (root / "docs" / "training.md", root / "README.md"):
        if not doc.is_file():
            continue
        for line in doc.read_text().splitlines():
            line = line.strip()
            if line.startswith("kprep train"):
                commands.append(shlex.split(line.split("#")[0])[2:])
    assert len(commands) >= 2
    for args in commands:
        cfg = _parsed(monkeypatch, args)
        assert cfg.data_path


def test_cli_turns_only_kprep_errors_into_one_line(monkeypatch):
    """A KprepError (bad data, bad settings) is one line and exit 2; any other exception
    is a bug and keeps its traceback (the old `kprep train` swallowed every ValueError)."""
    import trainer.train as train_mod
    from trainer.cli import app
    from trainer.errors import DataError

    def bad_data(cfg):
        raise DataError("--data-path x.json holds no samples")

    monkeypatch.setattr(train_mod, "train", bad_data)
    result = CliRunner().invoke(app, ["train", "--data-path", "x.json"])
    assert result.exit_code == 2 and "error: --data-path x.json holds no samples" in result.output

    def bug(cfg):
        raise ValueError("a real bug")

    monkeypatch.setattr(train_mod, "train", bug)
    result = CliRunner().invoke(app, ["train", "--data-path", "x.json"])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
