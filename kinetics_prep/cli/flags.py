"""Typer commands generated from config dataclasses: each flag is defined once, on its field.

A field becomes ``--field-name`` (booleans ``--x/--no-x``) with the field's
type, its default (shown in ``--help``) and the help text in its metadata::

    workers: int = field(default=4, metadata={"help": "parallel downloads"})

Metadata keys: ``help`` (required), ``flags`` (the option names instead of
the generated one, e.g. ``("--clips",)`` or ``("--exact-cuts/--fast-cuts",)``),
``default_help`` (what to show for a computed default, e.g. ``"CPUs"``),
``hidden``, ``envvar`` (the variable read when the flag is not given), and
``cli: False`` for a field that is not a flag (the command
fills it from other options). Torch-free, so ``trainer.cli`` uses it too.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import typer

from kinetics_prep.cli.common import run_command


def cli_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of ``cls`` that are flags, in declaration order."""
    return [f for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli", True)]


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _base(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return args[0] if len(args) == 1 else annotation
    return annotation


def option_for(
    f: dataclasses.Field[Any], annotation: Any, *, snake_alias: bool = False, layered: bool = False
) -> Any:
    """The ``typer.Option`` of one field.

    ``layered``: the flag's own default is ``None`` ("not given", so a config
    file can sit between the dataclass defaults and the flags) and ``--help``
    shows the dataclass default.
    """
    meta = f.metadata
    if "help" not in meta:
        raise TypeError(f"field {f.name!r} has no help text in its metadata")
    kebab = "--" + f.name.replace("_", "-")
    is_bool = _base(annotation) is bool
    decls = list(meta.get("flags") or [])
    if not decls:
        decls = [f"{kebab}/--no-{f.name.replace('_', '-')}" if is_bool else kebab]
        if snake_alias and is_bool:  # " /--no_x" adds only the negative for a one-word name
            decls.append(f"{'--' + f.name if '_' in f.name else ' '}/--no_{f.name}")
        elif snake_alias and "_" in f.name:
            decls.append(f"--{f.name}")
    if layered:
        value = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        shown_value = meta.get("default_help", value if value is not None else "none")
        return typer.Option(
            None,
            *decls,
            help=meta["help"],
            show_default=str(shown_value),
            hidden=meta.get("hidden", False),
            envvar=meta.get("envvar"),
        )
    if not _has_default(f):
        return typer.Option(
            ...,
            *decls,
            help=meta["help"],
            hidden=meta.get("hidden", False),
            envvar=meta.get("envvar"),
        )
    if f.default is not dataclasses.MISSING:
        default = f.default
        shown: bool | str = meta.get("default_help", True if default is not None else "none")
        if is_bool and "/" not in decls[0]:  # a lone switch: typer would not show it
            shown = meta.get("default_help", "on" if default else "off")
    else:
        default = None  # a computed default: the dataclass fills it in
        shown = meta.get("default_help", str(f.default_factory()))  # type: ignore[operator]
    if isinstance(default, list | tuple):
        default = list(default)
    return typer.Option(
        default,
        *decls,
        help=meta["help"],
        show_default=shown,
        hidden=meta.get("hidden", False),
        envvar=meta.get("envvar"),
    )


def config_parameters(
    cls: type, *, snake_alias: bool = False, layered: bool = False
) -> list[inspect.Parameter]:
    """One keyword-only parameter per flag field of ``cls`` (for a command's signature)."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in cli_fields(cls):
        annotation = hints[f.name]
        if (layered or f.default_factory is not dataclasses.MISSING) and _base(
            annotation
        ) is annotation:
            annotation = annotation | None  # None means "not given"
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=option_for(f, hints[f.name], snake_alias=snake_alias, layered=layered),
                annotation=annotation,
            )
        )
    return params


def config_values(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of ``cls`` from parsed flag values.

    A computed default (``default_factory``) is left to the dataclass when its
    flag was not given (``None``).
    """
    out = {}
    for f in cli_fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if value is None and f.default_factory is not dataclasses.MISSING:
            continue
        out[f.name] = value
    return out


def command_from_config(
    cls: type,
    body: Callable[..., None],
    *,
    extra: Sequence[inspect.Parameter] = (),
    snake_alias: bool = False,
    layered: bool = False,
) -> Callable[..., None]:
    """A Typer command whose flags are ``extra`` + the fields of ``cls``.

    ``body(values, **extras)`` gets the constructor arguments of ``cls``
    (:func:`config_values`; with ``layered``, every flag as parsed, ``None``
    for "not given") and the ``extra`` parameters by name; it runs
    inside :func:`run_command`, so a ``KprepError`` (a bad option found by the
    dataclass) is a one-line error and exit 2. The command's docstring is
    ``body``'s.
    """
    names = {p.name for p in extra}

    def command(**kwargs: Any) -> None:
        extras = {name: kwargs.pop(name) for name in list(kwargs) if name in names}
        with run_command():
            body(kwargs if layered else config_values(cls, kwargs), **extras)

    params = [*extra, *config_parameters(cls, snake_alias=snake_alias, layered=layered)]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}  # real types, for typer
    command.__name__ = body.__name__
    command.__doc__ = body.__doc__
    return command
