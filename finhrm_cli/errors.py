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


class FinhrmWarning(UserWarning):
    """Something the user should know that does not stop the command (the command line
    prints it as one ``warning:`` line)."""


def warn(message: str) -> None:
    """Tell the user something that does not stop the command.  Services and the data
    pipeline never print: the command line shows a ``FinhrmWarning`` as one ``warning:``
    line, and a library caller sees a Python warning."""
    import warnings

    warnings.warn(message, FinhrmWarning, stacklevel=2)


class TrainingError(FinhrmError):
    """Training failed (for example, a non-finite loss): exit code 1."""


# what to do about a filesystem error, by errno name
_FS_HINTS = {
    "ENOSPC": ("no space left on the device", "free some space (or pick a place with room) and try again"),
    "EDQUOT": ("disk quota exceeded", "free some space (or pick a place with room) and try again"),
    "EROFS": ("the file system is read-only", "pick a writable place"),
    "EACCES": ("permission denied", "pick a place you may write to, or fix its permissions"),
    "EPERM": ("operation not permitted", "pick a place you may write to, or fix its permissions"),
    "EISDIR": ("it is a folder", "give a file name, not a folder"),
    "ENOTDIR": ("a part of the path is not a folder", "check the path"),
    "ENOENT": ("no such file or folder", "check the path"),
    "ENAMETOOLONG": ("the name is too long", "use a shorter path"),
    "EIO": ("input/output error", "check the device and try again"),
    "EMFILE": ("too many open files", "raise the limit (ulimit -n) and try again"),
    "EPIPE": ("the reader went away", "keep the reading end open"),
}


class FilesystemError(FinhrmError):
    """An operating-system error reading or writing a path (disk full, read-only, ...):
    one line naming the path, the cause and what to do.  Exit code 2 when the path given
    is unusable, 1 when the device failed (full, I/O error)."""

    exit_code = 2

    @classmethod
    def from_oserror(cls, exc: OSError, hint: str | None = None, path=None, todo: str | None = None) -> "FilesystemError":
        import errno as _errno

        name = _errno.errorcode.get(exc.errno or 0, "")
        what, fix = _FS_HINTS.get(name, (exc.strerror or str(exc) or type(exc).__name__, "check the path and try again"))
        todo = todo or fix
        where = path if path is not None else exc.filename
        if exc.filename2 is not None and path is None:
            where = f"{exc.filename} -> {exc.filename2}"
        msg = (f"{where}: {what}" if where is not None else what) + f"; {todo}"
        msg += f"; {hint}" if hint else ""
        err = cls(msg.rstrip(".") + ".")
        if name in ("ENOSPC", "EDQUOT", "EIO"):
            err.exit_code = 1
        return err
