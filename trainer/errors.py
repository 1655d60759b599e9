"""The training side's errors: one subclass of :class:`kinetics_prep.errors.KprepError` per area.

The CLI turns any ``KprepError`` into ``error: <message>`` and exit code 2
(``kinetics_prep.cli.common``); every other exception is a bug and keeps its
traceback. As on the data side, each class also derives from the built-in type
the area raised before, so ``except ValueError`` callers keep working.
"""

from __future__ import annotations

from kinetics_prep.errors import ConfigError as _DataConfigError
from kinetics_prep.errors import KprepError, SchemaError


class TrainerError(KprepError):
    """A training-side failure the user can fix."""


class ConfigError(TrainerError, _DataConfigError):
    """Bad training / evaluation settings; the message lists every problem at once."""


class DataError(TrainerError, SchemaError):
    """The training data cannot be used (media missing, no samples, no label)."""


class MaskingError(TrainerError, ValueError):
    """The chat template does not put the answer where training and inference expect it."""


class ModelLoadError(TrainerError, ValueError):
    """A base model, adapter or fine-tuned folder cannot be loaded."""


class TrainError(TrainerError, ValueError):
    """A training run cannot start (e.g. the LoRA targets match no layer)."""


class EvalError(TrainerError, ValueError):
    """Evaluation cannot run; the message names the input and what to do."""


class PredictError(TrainerError, ValueError):
    """A prediction cannot run (no frames, no label map, no base model)."""


class MergeError(TrainerError, ValueError):
    """An adapter cannot be merged, or the output folder is not ours to replace."""


class DemoError(TrainerError, RuntimeError):
    """A demo stage failed; the message names the stage and what to do."""
