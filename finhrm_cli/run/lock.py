"""The run folder's lock (``flock`` on train.lock) and the status it gives a run."""

from __future__ import annotations

import os
from pathlib import Path

from finhrm_cli.errors import RunError
from finhrm_cli.run.files import LOCK, METRICS

try:  # a lock on the run folder while training (POSIX); Windows is not a target, but do not crash there
    import fcntl as _fcntl
except ImportError:  # pragma: no cover
    _fcntl = None


class RunLock:
    """An exclusive, non-blocking lock on a run folder (``flock`` on ``train.lock``) held while
    a run trains or is finalised: a second ``train --resume`` of the same run is refused.
    The kernel drops it when the process dies, so a killed run never stays locked."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        path = self.run_dir / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if _fcntl is not None:
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    pid = os.read(fd, 32).decode("ascii", "replace").strip()
                except OSError:
                    pid = ""
                os.close(fd)
                who = f" (pid {pid})" if pid.isdigit() else ""
                raise RunError(
                    f"{self.run_dir}: another `finhrm train`{who} is using this run; "
                    "wait for it to finish (or stop it) and try again."
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                if _fcntl is not None:
                    _fcntl.flock(self.fd, _fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(run_dir) -> bool:
    """True while some process trains (holds the lock on) ``run_dir``."""
    if _fcntl is None:
        return False
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        _fcntl.flock(fd, _fcntl.LOCK_SH | _fcntl.LOCK_NB)
        _fcntl.flock(fd, _fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


FINISHED, TRAINING, UNFINISHED = "finished", "training", "unfinished"


def run_status(run_dir) -> str:
    """``finished`` (metrics.json, the last file a run writes, is there), ``training`` (a
    process holds its lock) or ``unfinished`` (crashed or interrupted: ``--resume`` it)."""
    run_dir = Path(run_dir)
    if is_locked(run_dir):
        return TRAINING
    return FINISHED if finished(run_dir) else UNFINISHED




def finished(run_dir) -> bool:
    """metrics.json, the last file a run writes, is there."""
    return (Path(run_dir) / METRICS).is_file()
