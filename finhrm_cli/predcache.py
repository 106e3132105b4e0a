"""Forecasts already made, kept between commands so a daily ``finhrm predict`` stays fast.

Adaptive intervals need the forecast of every row after the run's validation period (a few
hundred rows on a daily file), and one new row arrives per day.  Recomputing them all costs
about 1.5 s on 2 CPU cores; this cache keeps each window's forecast under a digest of the
exact model input, so the next call runs the model on the new rows only.

* One file per run weights, finhrm version and mode:
  ``<cache>/forecasts/<weights sha256>-<version>-<mode>.npz``, with
  ``<cache>`` finhrm's user cache folder (``FINHRM_CACHE`` overrides it, as for the kernel
  cache; ``FINHRM_CACHE=tmp`` turns this cache off).
* Key: BLAKE2b-128 of the window's float32 bytes (normalised features, the model's input);
  any change in the file, the normaliser or the settings gives another key.  Value: the
  model's raw output (log ratios in target-scale units, before the row's scale).
* The file is untrusted input: it loads without pickle, and a file of the wrong shape, type
  or with non-finite values is ignored (and replaced on the next write).  Writes are atomic;
  a failed write only costs speed.  At most ``MAX_ROWS`` rows are kept (the newest).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from finhrm_cli.fsutil import atomic_write_bytes, cache_root

MAX_ROWS = 50_000
DIGEST = 16


def folder() -> Path | None:
    """The cache folder, or None when caching is off."""
    root = cache_root()
    return None if root is None else root / "forecasts"


def keys(x: np.ndarray) -> np.ndarray:
    """(n, DIGEST) uint8: one digest per window of ``x`` (n, seq_len, n_features)."""
    x = np.ascontiguousarray(np.asarray(x, np.float32))
    out = np.empty((len(x), DIGEST), np.uint8)
    for i in range(len(x)):
        out[i] = np.frombuffer(hashlib.blake2b(x[i].tobytes(), digest_size=DIGEST).digest(), np.uint8)
    return out


def _path(digest: str, mode: str) -> Path | None:
    base = folder()
    if base is None or not digest or not all(c in "0123456789abcdef" for c in digest):
        return None
    from finhrm_cli import __version__

    # the version is part of the name: a new finhrm (different maths, same weights) starts afresh
    version = "".join(c for c in __version__ if c.isalnum() or c in ".+") or "0"
    return base / f"{digest}-{version}-{mode}.npz"


def load(digest: str, mode: str = "all") -> dict[bytes, np.ndarray]:
    """{window digest: (2,) float32 forecast} for one run's weights; {} if none or unusable."""
    path = _path(digest, mode)
    if path is None or not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            k, v = z["keys"], z["preds"]
        ok = (k.ndim == 2 and k.shape[1] == DIGEST and k.dtype == np.uint8 and v.dtype == np.float32
              and v.shape == (len(k), 2) and len(k) <= MAX_ROWS and np.isfinite(v).all())
    except Exception:  # a truncated, foreign or hostile file: ignore it
        return {}
    if not ok:
        return {}
    return {bytes(kk): vv for kk, vv in zip(k, v)}


def save(digest: str, table: dict[bytes, np.ndarray], mode: str = "all") -> bool:
    """Write the newest ``MAX_ROWS`` entries of ``table`` (insertion order); False if not written."""
    path = _path(digest, mode)
    if path is None or not table:
        return False
    items = list(table.items())[-MAX_ROWS:]
    k = np.frombuffer(b"".join(kk for kk, _ in items), np.uint8).reshape(len(items), DIGEST)
    v = np.stack([vv for _, vv in items]).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, keys=k, preds=v)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        return False
    return True


def predict(model, x: np.ndarray, predict_fn) -> np.ndarray:
    """``predict_fn(model, x)`` (n, 2) with the rows already in the cache taken from it.
    Calls of more than ``MAX_ROWS`` windows bypass the cache.

    Uses the digest the weights loaded with (``model._finhrm_digest``, set by
    ``checkpoint.load_weights``); a model without one is run in full."""
    digest = getattr(model, "_finhrm_digest", None)
    x = np.asarray(x, np.float32)
    if not digest or len(x) == 0 or len(x) > MAX_ROWS or folder() is None:
        return predict_fn(model, x)  # (a call beyond the cache's size would only churn it)
    k = keys(x)
    table = load(digest)
    hit = np.array([bytes(kk) in table for kk in k], bool)
    out = np.empty((len(x), 2), np.float32)
    if hit.any():
        out[hit] = np.stack([table[bytes(kk)] for kk in k[hit]])
    if (~hit).any():
        miss = np.nonzero(~hit)[0]
        fresh = np.asarray(predict_fn(model, x[miss]), np.float32)
        out[miss] = fresh
        if np.isfinite(fresh).all():
            for i, row in zip(miss, fresh):
                table[bytes(k[i])] = row
            save(digest, table)
    return out
