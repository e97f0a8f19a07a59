"""User-facing errors.

A :class:`TLError` carries one sentence that says what is wrong and how to fix it. The CLI
prints it without a traceback and the app shows it as an error box; anything that is not a
``TLError`` is a bug and keeps its traceback (behind ``--debug`` or an expander).
"""

from __future__ import annotations


class TLError(Exception):
    """An error the user can fix: the message is the whole story."""


class SpecError(TLError, ValueError):
    """A parameter of a spec is out of its allowed range."""


class DatasetError(TLError):
    """A dataset cannot be found, read or split as asked."""


class WeightsError(TLError):
    """Pretrained weights are missing or do not fit the architecture."""


class BackboneError(TLError):
    """An unknown backbone, tap or configuration."""


class TrainingDiverged(TLError):
    """The loss became nan or infinite: the run is marked FAILED with the verdict ``diverged``."""


class Cancelled(Exception):
    """Raised inside a method when the user asked to stop; the run ends KILLED."""
