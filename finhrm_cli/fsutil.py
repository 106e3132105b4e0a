"""Atomic file writes: write a temp file next to the target, fsync, then ``os.replace``.

A crash or Ctrl-C leaves either the old file or the new one, never half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_beside(path: str | os.PathLike, write, rename: bool = True, mode: int | None = None) -> Path:
    """Write a file through a hidden temp file beside ``path``: ``write(temp_path)`` fills it,
    it is fsynced and (``rename``) renamed over ``path``.  Without ``rename`` the temp file's
    path is returned and the caller renames it (after writing something that must come first).
    On any error the temp file is removed.  Parent folders are created.  The file gets the
    mode a plain ``open()`` gives, or ``mode`` (0o600 for a cache file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would have
        os.fchmod(fd, (0o666 & ~_umask()) if mode is None else mode)
        os.close(fd)
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if rename:
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path if rename else Path(tmp)


def write_error(path: Path, exc: Exception) -> OSError:
    """An OSError naming ``path`` for a write that a library failed without one (mlx says only
    "Unable to write N bytes", polars "ComputeError: ... No space left on device"): the
    cause read from its message, else from the state of the folder."""
    import errno
    import shutil

    path = Path(path)
    text = str(exc)
    code = next((c for c, words in ((errno.ENOSPC, "No space left"), (errno.EDQUOT, "quota exceeded"),
                                    (errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied"))
                 if words in text), None)
    if code is None:
        code = errno.EIO
        try:
            if not os.access(path.parent, os.W_OK):
                code = errno.EACCES
            elif shutil.disk_usage(path.parent).free < 1 << 20:
                code = errno.ENOSPC
        except OSError:
            pass
    return OSError(code, f"{os.strerror(code)} ({' '.join(text.split())[:120]})", str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (creating parent folders); return the path."""
    return write_beside(path, lambda tmp: Path(tmp).write_bytes(data), mode=mode)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def json_default(o: Any):
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths."""
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def finite_json(o: Any) -> Any:
    """``o`` with every NaN or infinite number replaced by None (JSON has no such numbers: a bare
    ``Infinity`` breaks strict parsers), numpy values made plain; for ``allow_nan=False`` dumps."""
    import math

    import numpy as np

    if isinstance(o, dict):
        return {k: finite_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite_json(v) for v in o]
    if isinstance(o, np.ndarray):
        return finite_json(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def dumps_strict(obj: Any, indent: int | None = 2) -> str:
    """JSON for people and programs to read: non-finite numbers become null, never ``Infinity``."""
    return json.dumps(finite_json(obj), indent=indent, default=json_default, allow_nan=False)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, allow_nan: bool = True) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=allow_nan) + "\n")


# ---------------------------------------------------------------------------------------------
# untrusted names


def safe_component(name: object, default: str = "data") -> str:
    """``name`` (read from a file, or derived from a file name) as one harmless path component.

    Path separators and control characters become ``-``; leading dots and dashes go (no
    ``..``, no hidden or option-like names), so ``/abs`` -> ``abs``, ``../../x`` -> ``x``;
    nothing left (``..`` from a file ``...csv``) -> ``default``.
    """
    s = re.sub(r"[/\\\x00-\x1f\x7f]+", "-", str(name))
    s = s.strip().lstrip(".-").rstrip(". -")
    while len(s.encode("utf-8")) > 120:
        s = s[:-1]
    return s or default


# ---------------------------------------------------------------------------------------------
# leftovers and signals

STALE_SECONDS = 600.0


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?:[A-Za-z0-9_]+\.tmp|[0-9a-f]{12}\.tmp\.safetensors)$")


def temp_target(name: str) -> str | None:
    """The file (or, for safetensors, the stem) whose atomic write left the temp file
    ``name``; None when ``name`` is not shaped like one of finhrm's temp files."""
    m = _TEMP_NAME.match(name)
    return m["name"] if m else None


def clean_stale_temps(folder: str | os.PathLike, names, older_than: float = STALE_SECONDS) -> list[Path]:
    """Delete the hidden temp files of interrupted atomic writes of the files ``names``
    (``.NAME.XXXXXXXX.tmp`` from ``write_beside``; ``.STEM.<12 hex>.tmp.safetensors``
    from safetensors writes, given by stem) under ``folder``, last modified more than
    ``older_than`` seconds ago; return what was removed.  Any other file, however named, is
    left alone.  Call it only while holding the folder's lock."""
    names = set(names)
    removed: list[Path] = []
    now = time.time()
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if temp_target(f) not in names:
                continue
            p = Path(root) / f
            try:
                st = p.lstat()
                if stat.S_ISREG(st.st_mode) and now - st.st_mtime > older_than:
                    p.unlink()
                    removed.append(p)
            except OSError:
                pass
    return removed


@contextlib.contextmanager
def sigint_deferred():
    """Hold a Ctrl-C (SIGINT) until the block ends, then deliver it: a second Ctrl-C during
    a save never cuts the save short.  A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    try:
        old = signal.signal(signal.SIGINT, lambda sig, frame: got.append(sig))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got and callable(old):
            old(signal.SIGINT, None)


def file_sha256(path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (weights, prepared frames, inputs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
