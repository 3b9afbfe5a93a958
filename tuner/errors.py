"""Errors a person can act on.

Every failure that a user can fix (bad YAML, an unknown component, a missing file, a shape
mismatch between config and checkpoint, ...) is raised as a `TunerError`. The CLI prints it as one
line, ``error: <message>``, and exits with the error's `exit_code`; the traceback shows only with
``--debug`` or ``TUNER_DEBUG=1``.
"""

from __future__ import annotations

import difflib
import os
import sys
import traceback


class TunerError(Exception):
    """A failure the user can fix; `message` names the thing, `fix` (optional) says what to do."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message} ({fix})")

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message.rstrip('.')}. Fix: {self.fix}"


class UsageError(TunerError, ValueError):
    """The command line itself is wrong (unknown recipe, bad override syntax, ...)."""

    exit_code = 2


class ConfigError(TunerError, ValueError):
    """The config is wrong (bad YAML, unknown component or key, signature mismatch, ...).

    A ValueError too, as the bad-argument errors of torchtune's code that this replaces.
    ``errors``: the individual problems, one exception each, when it reports several (validate).
    """

    def __init__(self, message: str, fix: str | None = None, errors: list[Exception] | None = None) -> None:
        super().__init__(message, fix)
        self.errors = list(errors or [])

    exit_code = 2


class CheckpointError(TunerError):
    """A checkpoint is missing, incomplete or does not fit the model."""


class DataError(TunerError, ValueError):
    """A dataset file or row is malformed (a ValueError too, as torchtune's data errors are)."""


class TrainingError(TunerError, RuntimeError):
    """Training cannot go on (NaN loss, out of memory, ...); a RuntimeError too, as torchtune's."""


def did_you_mean(name: str, choices, cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to ``name``, or ``""`` when none is close.

    The one place error messages get their suggestion from."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def warn(message: str) -> None:
    """Print one ``[tuner] warning: ...`` line on stderr: something the user should know, not an error."""
    print(f"[tuner] warning: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """Print one ``[tuner] note: ...`` line on stderr."""
    print(f"[tuner] note: {message}", file=sys.stderr, flush=True)


def debug_enabled() -> bool:
    """Tracebacks are shown when TUNER_DEBUG is set to a true value (``--debug`` sets it)."""
    return os.environ.get("TUNER_DEBUG", "").lower() not in ("", "0", "false", "no")


def run_reporting_errors(fn, *args, **kwargs) -> int:
    """Call ``fn``; print a failure as one ``error:`` line and return its exit code.

    A TunerError keeps its own message and exit code; any other exception becomes exit 1 with
    its type and message. With debugging on, the traceback is printed as well.
    """
    try:
        result = fn(*args, **kwargs)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except TunerError as e:
        if debug_enabled():
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:  # an unexpected failure: still one line unless debugging
        if debug_enabled():
            traceback.print_exc()
            print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        else:
            print(
                f"error: {type(e).__name__}: {e}\n(run with --debug or TUNER_DEBUG=1 for the traceback)",
                file=sys.stderr,
            )
        return 1
    return result if isinstance(result, int) else 0


def unsupported(name: str, reason: str, fix: str):
    """A stand-in for a torchtune name that tuner does not implement (multimodal, QAT, ...).

    Importing it works, so code (and torchtune's tests) that import it next to names tuner has keep
    working; calling it raises a ConfigError that says why and what to do instead.
    """

    def stand_in(*args, **kwargs):
        raise ConfigError(f"{name} is not supported by tuner: {reason}", fix)

    stand_in.__name__ = stand_in.__qualname__ = name.rpartition(".")[2]
    stand_in.__doc__ = f"Not supported by tuner ({reason}); calling it raises ConfigError."
    return stand_in
