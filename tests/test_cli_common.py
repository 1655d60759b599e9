"""The shared CLI pieces: flags generated from config dataclasses, one error wrapper."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kinetics_prep.cli import make_app
from kinetics_prep.cli.common import run_command
from kinetics_prep.cli.flags import cli_fields, command_from_config
from kinetics_prep.download.plan import DownloadConfig
from kinetics_prep.errors import ConfigError
from kinetics_prep.extract import ExtractConfig
from kinetics_prep.manifest import ManifestConfig
from kinetics_prep.subset import SubsetConfig

runner = CliRunner()
WIDE = {"COLUMNS": "300", "TERMINAL_WIDTH": "300"}


@dataclass
class _Demo:
    name: str = field(metadata={"help": "A name."})
    count: int = field(default=3, metadata={"help": "How many."})
    fast: bool = field(default=False, metadata={"help": "Go fast."})
    tags: list[str] = field(default_factory=list, metadata={"help": "A tag (repeat)."})
    out: Path | None = field(default=None, metadata={"help": "Where."})

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"--count ({self.count}) must be >= 1; see [help]")


def _app(body) -> typer.Typer:
    app = typer.Typer()
    app.command("demo")(command_from_config(_Demo, body))
    app.command("other")(lambda: None)
    return app


def test_flags_come_from_the_fields_with_their_types_and_defaults():
    seen = []
    app = _app(lambda values: seen.append(_Demo(**values)))
    result = runner.invoke(app, ["demo", "--name", "x", "--fast", "--tags", "a", "--tags", "b"])
    assert result.exit_code == 0, result.output
    assert seen == [_Demo(name="x", count=3, fast=True, tags=["a", "b"], out=None)]
    help_text = runner.invoke(app, ["demo", "--help"], env=WIDE).output
    for flag, default in [("--count", "3"), ("--fast", "no-fast"), ("--out", "(none)"),
                          ("--tags", "([])")]:  # fmt: skip
        assert flag in help_text and f"[default: {default}]" in help_text


def test_a_kprep_error_is_one_escaped_line_and_exit_2():
    app = _app(lambda values: _Demo(**values))
    result = runner.invoke(app, ["demo", "--name", "x", "--count", "0"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --count (0) must be >= 1; see [help]"


def test_any_other_exception_keeps_its_traceback():
    def body(values):
        raise KeyError("a bug")

    result = runner.invoke(_app(body), ["demo", "--name", "x"])
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)
    with pytest.raises(KeyError), run_command():
        raise KeyError("a bug")


@pytest.mark.parametrize(
    ("command", "config"),
    [
        ("subset", SubsetConfig),
        ("download", DownloadConfig),
        ("extract", ExtractConfig),
        ("build-manifest", ManifestConfig),
    ],
)
def test_every_data_config_field_is_a_flag_with_its_help_and_default(command, config):
    app = make_app()
    text = runner.invoke(app, [command, "--help"], env=WIDE).output
    for f in cli_fields(config):
        if f.metadata.get("hidden"):
            continue
        flag = (f.metadata.get("flags") or ["--" + f.name.replace("_", "-")])[0].split("/")[0]
        assert flag in text, flag
        assert f.metadata["help"].split()[0] in text
        has_default = f.default is not dataclasses.MISSING or "default_help" in f.metadata
        if has_default:
            assert text.count("[default:") >= 1
    required = [f for f in cli_fields(config) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]  # fmt: skip
    assert text.count("[required]") == len(required)
