"""Every option of every `kprep` command shows its default in --help (issue 12).

Walks the composed app (``trainer.cli.app``): each optional, visible option
must carry a default that click renders (a value, or a string saying what the
default is), and the rendered help of the command must show one
``[default: ...]`` per such option (rich markup must not eat them).
"""

from __future__ import annotations

import re

import typer
from typer.testing import CliRunner

from trainer.cli import app


def _commands() -> dict:
    group = typer.main.get_command(app)
    return {name: group.get_command(None, name) for name in group.list_commands(None)}


def _options(command) -> list:
    return [
        p
        for p in command.params
        if p.param_type_name == "option" and not p.required and not p.hidden and p.name != "help"
    ]


def _shows_default(option) -> bool:
    if isinstance(option.show_default, str):
        return bool(option.show_default.strip())
    if option.show_default is False:
        return False
    return option.default is not None


def test_every_option_of_every_command_shows_its_default():
    missing = [
        f"kprep {name} {option.opts[0]}"
        for name, command in _commands().items()
        for option in _options(command)
        if not _shows_default(option)
    ]
    assert not missing, "options whose --help hides the default:\n" + "\n".join(missing)


def test_rendered_help_shows_one_default_per_option():
    runner = CliRunner()
    wrong = []
    for name, command in _commands().items():
        expected = len(_options(command))
        if not expected:
            continue
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
        assert result.exit_code == 0, result.output
        shown = len(re.findall(r"\[default: [^\]]+\]", result.output))
        if shown != expected:
            wrong.append(f"kprep {name}: {shown} defaults shown for {expected} options")
    assert not wrong, "\n".join(wrong)
