"""One error type for every failure a user can fix, with one subclass per area.

A :class:`KprepError` carries a one-line message that names the thing (a flag,
a file, a clip) and says what to do. The CLI turns it into ``error: ...`` and
exit code 2 (``kinetics_prep.cli.common.run_command``); any other exception is
a bug and keeps its traceback.

The subclasses also derive from the built-in type the area raised before
(``ValueError`` / ``RuntimeError``), so existing ``except ValueError`` callers
keep working.
"""

from __future__ import annotations


class KprepError(Exception):
    """A failure the user can fix; ``str(error)`` is the whole one-line message."""


class ConfigError(KprepError, ValueError):
    """Bad options: every problem at once, each naming the flag and quoting the value."""


class SchemaError(KprepError, ValueError):
    """A manifest, Arrow folder or label map does not follow docs/schema.md."""


class AnnotationError(KprepError, ValueError):
    """An annotation file (or one of its rows) cannot be used."""


class ConversationError(KprepError, ValueError):
    """A prompt or answer template that cannot make a conversation."""


class DownloadError(KprepError, RuntimeError):
    """A download run cannot go on (not one clip failing: that is a record)."""


class DownloadConfigError(ConfigError):
    """Bad ``kprep download`` options."""


class ArchiveError(DownloadError):
    """A mirror archive cannot be fetched or read."""


class ExtractError(KprepError, ValueError):
    """An extract run cannot go on (not one clip failing: that is a record)."""


class ExtractConfigError(ExtractError, ConfigError):
    """Bad ``kprep extract`` options."""


class ManifestError(KprepError, ValueError):
    """The manifest cannot be built; the message names the input and what to do."""


class SubsetError(KprepError, ValueError):
    """A subset cannot be selected as asked."""


class ValidationError(SchemaError):
    """A dataset cannot be read at all (not JSON, not an Arrow folder, ...)."""


class HubError(KprepError, RuntimeError):
    """The dataset cannot be staged or uploaded; the message says what to do."""
