"""`kprep` commands for the extract area (registered on the shared app)."""

from __future__ import annotations

from kinetics_prep.cli import app  # noqa: F401
