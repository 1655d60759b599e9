"""Labels for evaluation: the label map, and mapping a *generated* answer to a label.

A sample's gold label travels with it (``kinetics_prep.schema.Sample.label``);
only what the model writes is mapped back, by :class:`AnswerMatcher`: an exact
match after :func:`normalize_answer` against every label's templated answer
(``"The video shows {label}."``) and the bare label.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from kinetics_prep.errors import SchemaError
from kinetics_prep.schema import LABEL_MAP_NAME, label_map_path, read_label_map
from trainer.errors import EvalError

_EDGE_PUNCT = " \t\r\n.,;:!?\"'`()[]{}"


def normalize_answer(text: str) -> str:
    """Lower-case, NFKC, ``_`` -> space, collapsed whitespace, no edge punctuation.

    >>> normalize_answer('  The video shows  Air_Drumming. ')
    'the video shows air drumming'
    """
    text = unicodedata.normalize("NFKC", text or "").lower().replace("_", " ")
    text = re.sub(r"\s+", " ", text)
    return text.strip(_EDGE_PUNCT)


class AnswerMatcher:
    """Map a free-text answer to a label: exact match after :func:`normalize_answer`.

    An answer matches label ``L`` when it normalises to the same string as
    ``template.format(label=L)`` or as ``L`` itself; anything else (a partial
    answer, extra words, an empty string) is unmatched and returns None.
    """

    def __init__(self, labels: Sequence[str], template: str = "{label}") -> None:
        if "{label}" not in template:
            raise EvalError(f"answer template ({template!r}) must contain {{label}}")
        self.labels = list(labels)
        self.template = template
        self._table: dict[str, str] = {}
        for label in self.labels:  # templated answers win over bare labels
            self._table.setdefault(normalize_answer(template.format(label=label)), label)
        for label in self.labels:
            self._table.setdefault(normalize_answer(label), label)

    def answer(self, label: str) -> str:
        """The answer text training used for ``label``."""
        return self.template.format(label=label)

    def match(self, text: str | None) -> str | None:
        key = normalize_answer(text or "")
        return self._table.get(key) if key else None


def find_label_map(data_path: str | Path) -> Path:
    """``label_map.json`` beside a manifest JSON, or beside an ``*_arrow`` folder."""
    path = Path(data_path)
    for candidate in (label_map_path(path), path / LABEL_MAP_NAME):
        if candidate.is_file():
            return candidate
    raise EvalError(
        f"no {LABEL_MAP_NAME} next to {path}: pass --label-map (kprep build-manifest writes it)"
    )


def load_label_map(path: str | Path) -> AnswerMatcher:
    """The matcher of a ``label_map.json`` (read by the contract's reader)."""
    try:
        label_map = read_label_map(path)
    except SchemaError as exc:
        raise EvalError(f"--label-map: {exc}") from None
    if not label_map.labels:
        raise EvalError(f"--label-map {path} has no 'labels' list of names")
    return AnswerMatcher(label_map.labels, label_map.answer_template or "{label}")
