"""Parts: one series' dataset with some of its windows, ``(ds, w)``.

Several tickers are several parts; the model sees their windows one after the other and
never mixed.  ``stack`` turns parts into the arrays the trainer reads; the scale of a part
turns the model's unit (log ratio / volatility scale) back into log ratios.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def of(dss, split: str) -> list[tuple[Any, Any]]:
    """Every series' windows of ``split`` (train, val, test or all)."""
    return [(ds, ds.windows(split)) for ds in dss]


def scale(ds, w) -> np.ndarray:
    """Per-window target scale: the volatility scale when the run scales targets, else 1."""
    return np.asarray(w.scale, np.float64) if ds.fcfg.scale_targets else np.ones(len(w))


def train_scale(ds) -> np.ndarray:
    """The volatility scale (``Windows.scale``) of the series' training windows: the rows the
    volatility thirds of ``evaluate`` take their edges from (never the scored rows)."""
    ends = ds.window_ends("train")
    return ds.frame["scale"].to_numpy(allow_copy=True).astype(np.float64)[ends]


def _arrays(ds, w, with_prices: bool) -> dict:
    s = scale(ds, w)
    d = {"x": w.x, "y": (w.y / s[:, None]).astype(np.float32)}
    if with_prices:
        d.update(close=w.close, next_high=w.next_high, next_low=w.next_low, scale=s)
    return d


def stack(parts, with_prices: bool = False) -> dict:
    """The parts' windows as one dict of arrays: ``x``, ``y`` in the model's unit, and with
    ``with_prices`` the close, the next session's high and low and the scale (validation)."""
    ds_list = [_arrays(ds, w, with_prices) for ds, w in parts]
    return {k: np.concatenate([d[k] for d in ds_list]) for k in ds_list[0]}


def known(w, pred):
    """The windows whose next session is known, and their rows of ``pred``."""
    keep = np.isfinite(w.next_high) & np.isfinite(w.next_low)
    if keep.all():
        return w, pred
    idx = np.nonzero(keep)[0]
    return w.subset(idx), pred[idx]


def iso(d: Any) -> str:
    """A date as YYYY-MM-DD."""
    return str(np.datetime64(d, "D"))
