"""docs/extract.md stays true: its Python example runs, its flags exist, its maths holds."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

from typer.testing import CliRunner

import kinetics_prep.sampling
from kinetics_prep.cli import app

DOC = Path(__file__).parents[1] / "docs" / "extract.md"


def test_python_example_runs(tmp_path, monkeypatch, capsys):
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(DOC), "exec"), {})
    assert "pyav" in capsys.readouterr().out


def test_every_documented_flag_exists():
    documented = set(re.findall(r"^\| `(--[a-z-]+)", DOC.read_text(), flags=re.M))
    assert len(documented) >= 12
    result = CliRunner().invoke(app, ["extract", "--help"], env={"COLUMNS": "200"})
    for flag in documented:
        assert flag in result.output, flag


def test_sampling_docstring_examples():
    assert doctest.testmod(kinetics_prep.sampling).failed == 0
