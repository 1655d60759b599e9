"""docs/cluster.md stays true: its kprep download/extract/doctor commands use real flags."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer.main

from kinetics_prep.cli import app

DOC = Path(__file__).parents[1] / "docs" / "cluster.md"


def test_cluster_doc_commands_parse():
    text = DOC.read_text().replace("\\\n", " ")
    lines = re.findall(r"^\s*(kprep (?:download|extract|doctor) .*)$", text, re.M)
    assert len(lines) >= 3
    group = typer.main.get_command(app)
    for line in lines:
        argv = shlex.split(line)[1:]
        command = group.commands[argv[0]]  # type: ignore[attr-defined]
        command.make_context(argv[0], argv[1:])  # raises on an unknown flag or bad value
    assert any("--engine ray" in line and line.startswith("kprep extract") for line in lines)
    assert any("--requests-per-second" in line for line in lines)
