"""`kprep` commands for the train area (registered on the shared app)."""

from __future__ import annotations

from kinetics_prep.cli import app  # noqa: F401
