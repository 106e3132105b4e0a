"""Forecasts already made, kept between commands so a daily ``finhrm predict`` stays fast.

Adaptive intervals need the forecast of every row after the run's validation period (a few
hundred rows on a daily file), and one new row arrives per day.  Rather than recompute them
all (docs/speed.md), this cache keeps each window's forecast under a digest of the
exact model input, so the next call runs the model on the new rows only.

* One file per model identity and mode: ``<cache>/forecasts/<identity>-<mode>.npz`` in
  finhrm's cache folder (``finhrm_cli.cache``: ``FINHRM_CACHE`` moves it, ``tmp`` turns it
  off, and a folder that breaks the cache's trust rule is not used).
* The identity (``identity``) is a digest of everything that determines the model's output
  for a given input: the weights' sha256, every setting of the model (``ModelConfig``: a
  copied run with another ``h_cycles`` or ``halt_max_steps`` is another identity), finhrm's
  and MLX's versions and the BLAS MLX runs on.  The file also holds the identity in full,
  and a file whose identity differs is ignored.
* Key: BLAKE2b-128 of the window's float32 bytes (normalised features, the model's input);
  any change in the file or the normaliser gives another key.  Value: the model's raw output
  (log ratios in target-scale units, before the row's scale).
* The file is untrusted input: it is read only under the cache's trust rule (a regular file
  of the user's, written by nobody else), loads without pickle, and a file of the wrong
  shape, type or with non-finite values is ignored (and replaced on the next write).  Writes
  are atomic and private (0600); a failed write only costs speed.  At most ``MAX_ROWS`` rows
  are kept (the newest).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from finhrm_cli import cache
from finhrm_cli.fsutil import atomic_write_bytes

MAX_ROWS = 50_000
DIGEST = 16


def folder() -> Path | None:
    """The forecast cache folder (created private), or None when caching is off or the folder
    breaks the trust rule (``finhrm_cli.cache.trusted_folder``, which warns)."""
    return cache.trusted_folder("forecasts")


def identity(weights_sha256: str | None, settings) -> str:
    """The text naming everything that fixes a model's output for an input (module notes):
    the weights' digest and ``settings`` (the model's ``ModelConfig``); "" without a digest
    (a model whose weights were not loaded from a file is never cached)."""
    if not weights_sha256:
        return ""
    from finhrm_cli import __version__, blas

    try:
        import dataclasses

        shown = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else repr(settings)
    except TypeError:
        shown = repr(settings)
    ident = {"weights": weights_sha256, "model": shown, "finhrm": __version__, "mlx": cache.mlx_version() or "?",
             "blas": blas.info().get("kind")}
    return json.dumps(ident, sort_keys=True, default=str)


def keys(x: np.ndarray) -> np.ndarray:
    """(n, DIGEST) uint8: one digest per window of ``x`` (n, seq_len, n_features)."""
    x = np.ascontiguousarray(np.asarray(x, np.float32))
    out = np.empty((len(x), DIGEST), np.uint8)
    for i in range(len(x)):
        out[i] = np.frombuffer(hashlib.blake2b(x[i].tobytes(), digest_size=DIGEST).digest(), np.uint8)
    return out


def _path(ident: str, mode: str) -> Path | None:
    if not ident or not mode.isalnum():
        return None
    base = folder()
    if base is None:
        return None
    name = hashlib.sha256(ident.encode("utf-8")).hexdigest()[:40]
    return base / f"{name}-{mode}.npz"


def load(ident: str, mode: str = "all") -> dict[bytes, np.ndarray]:
    """{window digest: (2,) float32 forecast} for one model identity; {} if none or unusable."""
    path = _path(ident, mode)
    fh = cache.open_trusted(path) if path is not None else None
    if fh is None:
        return {}
    try:
        with fh, np.load(fh, allow_pickle=False) as z:
            k, v, who = z["keys"], z["preds"], z["identity"]
            ok = (k.ndim == 2 and k.shape[1] == DIGEST and k.dtype == np.uint8 and v.dtype == np.float32
                  and v.shape == (len(k), 2) and len(k) <= MAX_ROWS and np.isfinite(v).all()
                  and who.shape == () and str(who) == ident)
    except Exception:  # a truncated, foreign, older or hostile file: ignore it
        return {}
    if not ok:
        return {}
    return {bytes(kk): vv for kk, vv in zip(k, v)}


def save(ident: str, table: dict[bytes, np.ndarray], mode: str = "all") -> bool:
    """Write the newest ``MAX_ROWS`` entries of ``table`` (insertion order); False if not written."""
    path = _path(ident, mode)
    if path is None or not table:
        return False
    items = list(table.items())[-MAX_ROWS:]
    k = np.frombuffer(b"".join(kk for kk, _ in items), np.uint8).reshape(len(items), DIGEST)
    v = np.stack([vv for _, vv in items]).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, keys=k, preds=v, identity=np.array(ident))
    try:
        atomic_write_bytes(path, buf.getvalue(), mode=0o600)
    except OSError:
        return False
    return True


def predict(ident: str, model, x: np.ndarray, predict_fn, mode: str = "all") -> np.ndarray:
    """``predict_fn(model, x)`` (n, 2) with the rows already in the cache taken from it.
    ``ident`` (``identity``) names the cache file, ``mode`` (all segments, or ``act``:
    halted) its part; with "" the model runs in full, as it does for calls of more than
    ``MAX_ROWS`` windows."""
    x = np.asarray(x, np.float32)
    if not ident or len(x) == 0 or len(x) > MAX_ROWS or folder() is None:
        return predict_fn(model, x)  # (a call beyond the cache's size would only churn it)
    k = keys(x)
    table = load(ident, mode)
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
            save(ident, table, mode)
    return out
