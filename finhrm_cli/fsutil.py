"""Atomic file writes: write a temp file next to the target, fsync, then ``os.replace``.

A crash or Ctrl-C leaves either the old file or the new one, never half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating parent folders); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would have
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


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
