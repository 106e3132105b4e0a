"""The conformalized interval anchor of ``evaluate`` (issue 27): conformalized quantile
regression (CQR, Romano, Patterson and Candès 2019) on the linear partner's inputs.  numpy only.

* **Fit, on the run's training windows only**: linear quantile regressions
  (``linear.fit_quantile``) of the volatility-scaled targets (log ratio / scale, the HRM's
  target units) on the last day's normalised inputs, at ``alpha/2`` and ``1 - alpha/2`` for the
  high and for the low, and at 0.5 for the point forecast.
* **Conformalize, on the validation windows** (the rows finhrm's own intervals are calibrated
  on, so both see the same data): the CQR score ``E = max(q_lo - y, y - q_hi)`` per row, sorted;
  the interval is ``[q_lo - Q, q_hi + Q]`` with ``Q`` the ``ceil((n + 1)(1 - alpha))``-th score.
* **Adapt** over the scored rows as finhrm's default intervals do (``conformal.aci``: the level
  learns from outcomes dated after the run's last validation day).

Test rows are never read by the fit.  A production run has no validation rows: no anchor.
"""

from __future__ import annotations

import numpy as np

from finhrm_cli.forecast import conformal, linear
from finhrm_cli.forecast.parts import scale, stack

cqr_offsets = conformal.cqr_offsets  # the CQR offsets (shared with finhrm's residual heads)
NAME = "cqr_linear"  # the anchor's key among evaluate's results


def fit(train_parts, val_parts, coverage: float) -> dict | None:
    """The anchor fit on ``train_parts`` and conformalized on ``val_parts`` (lists of ``(ds, w)``);
    None with fewer than ``linear.MIN_TRAIN`` training or ``linear.MIN_VAL`` validation rows."""
    tr = [(ds, w) for ds, w in train_parts if len(w)]
    va = [(ds, w) for ds, w in val_parts if len(w)]
    if not tr or not va:
        return None
    xy = stack(tr)
    x, y = xy["x"][:, -1, :], np.asarray(xy["y"], np.float64)
    ok = np.isfinite(y).all(axis=1)
    if ok.sum() < linear.MIN_TRAIN:
        return None
    alpha = 1.0 - coverage
    taus = (alpha / 2, 0.5, 1 - alpha / 2)
    coef = {key: [[float(v) for v in linear.fit_quantile(x[ok], y[ok, j], tau)] for tau in taus]
            for j, key in enumerate(("high", "low"))}
    model = {"coef": coef, "coverage": coverage}
    scores = {"high": [], "low": []}
    for ds, w in va:
        q = quantiles(model, w.x[:, -1, :])
        yv = w.y / scale(ds, w)[:, None]
        for j, key in enumerate(("high", "low")):
            e = np.maximum(q[key][:, 0] - yv[:, j], yv[:, j] - q[key][:, 2])
            scores[key].append(e[np.isfinite(e)])
    for key in scores:
        scores[key] = np.sort(np.concatenate(scores[key]))
    if min(len(v) for v in scores.values()) < linear.MIN_VAL:
        return None
    model["scores"] = scores
    return model


def quantiles(model: dict, x_last) -> dict[str, np.ndarray]:
    """Per target (n, 3): the lower, median and upper quantile in target units, sorted (a
    crossing is rearranged, Chernozhukov et al. 2010)."""
    a = linear.design(x_last)
    return {key: np.sort(np.stack([a @ np.asarray(c) for c in model["coef"][key]], axis=1), axis=1)
            for key in ("high", "low")}


def forecast(model: dict, ds, w, cutoff=None, adaptive: bool = True) -> tuple[np.ndarray, dict]:
    """The anchor on windows ``w`` (time order): the point forecast (n, 2) in log ratios and the
    price intervals (``high_lo`` .. ``low_hi``); adaptive over rows dated after ``cutoff``."""
    s = scale(ds, w)
    q = quantiles(model, w.x[:, -1, :])
    close = np.asarray(w.close, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(np.stack([w.next_high, w.next_low], axis=1) / close[:, None])
    update = np.ones(len(w), bool) if cutoff is None else (w.dates > np.datetime64(cutoff, "D"))
    target = 1.0 - model["coverage"]
    iv = {}
    for j, key in enumerate(("high", "low")):
        sc = model["scores"][key]
        if adaptive:
            lo, hi, _ = conformal.aci(q[key][:, 0] * s, q[key][:, 2] * s, y[:, j], s,
                                      lambda a, g, sc=sc: cqr_offsets(sc, a), np.zeros(len(w), np.int64), target,
                                      w.end, ds.fcfg.horizon, update=update)
        else:
            off = cqr_offsets(sc, target)
            with np.errstate(invalid="ignore"):
                lo, hi = (q[key][:, 0] + off[0]) * s, (q[key][:, 2] + off[1]) * s
        with np.errstate(over="ignore", invalid="ignore"):
            iv[f"{key}_lo"], iv[f"{key}_hi"] = close * np.exp(lo), close * np.exp(hi)
    point = np.stack([q["high"][:, 1], q["low"][:, 1]], axis=1) * s[:, None]
    return point, iv
