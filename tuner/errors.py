"""Errors a person can act on.

Every failure that a user can fix (bad YAML, an unknown component, a missing file, a shape
mismatch between config and checkpoint, ...) is raised as a `TunerError`. The CLI prints it as one
line, ``error: <message>``, and exits with the error's `exit_code`; the traceback shows only with
``--debug`` or ``TUNER_DEBUG=1``.
"""
from __future__ import annotations


class TunerError(Exception):
    """A failure the user can fix; `message` names the thing, `fix` (optional) says what to do."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message} ({fix})")

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}. Fix: {self.fix}"


class UsageError(TunerError):
    """The command line itself is wrong (unknown recipe, bad override syntax, ...)."""

    exit_code = 2


class ConfigError(TunerError):
    """The config is wrong (bad YAML, unknown component or key, signature mismatch, ...)."""

    exit_code = 2


class CheckpointError(TunerError):
    """A checkpoint is missing, incomplete or does not fit the model."""


class DataError(TunerError):
    """A dataset file or row is malformed."""


class TrainingError(TunerError):
    """Training cannot go on (NaN loss, out of memory, ...)."""
