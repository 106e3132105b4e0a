"""Errors that reach the user as one line and an exit code.

A ``FinhrmError`` carries a message that says what is wrong, where (file, row, column)
and how to fix it.  The command-line layer prints it on one line and exits with
``exit_code``; ``FINHRM_DEBUG=1`` shows the traceback as well.
"""

from __future__ import annotations


class FinhrmError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always
        return " ".join(self.message.split("\n"))


class UsageError(FinhrmError):
    """The command line or the input is wrong: exit code 2."""

    exit_code = 2


class DataError(UsageError):
    """The data file cannot be used as given (missing, malformed, too short, ...)."""


class RunError(UsageError):
    """A run folder or checkpoint is missing, corrupt or foreign."""


class TrainingError(FinhrmError):
    """Training failed (for example, a non-finite loss): exit code 1."""
