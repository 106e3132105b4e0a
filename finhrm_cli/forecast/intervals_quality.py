"""How good the prediction intervals are, beyond their average coverage (issue 27).

For the intervals at coverage ``1 - alpha`` of the high and of the low (price units):

- **interval (Winkler) score**: the width, plus ``2/alpha`` times the distance by which the
  outcome falls outside (below ``lo`` or above ``hi``); the mean over rows, per side and the
  mean of the two sides.  Lower is better: narrow intervals that still hold.
- **pinball (quantile) loss** of the two ends, the lower at quantile ``alpha/2`` and the upper
  at ``1 - alpha/2``; per side the mean of its two ends' means.
- **coverage by volatility third**: each row falls in a third of the volatility scale (the
  day's scale, ``Windows.scale``) by edges taken from the *training* rows of its series,
  never from the scored rows; the coverage (mean of the high's and the low's) and the rows
  in each third.
- **joint coverage**: the share of rows whose high and low both lie inside their intervals.
"""

from __future__ import annotations

import numpy as np

THIRDS = (1, 2, 3)


def interval_scores(lo, hi, y, alpha: float) -> np.ndarray:
    """Each row's interval (Winkler) score of ``[lo, hi]`` for outcome ``y`` at miscoverage ``alpha``."""
    lo, hi, y = (np.asarray(a, np.float64) for a in (lo, hi, y))
    with np.errstate(invalid="ignore"):  # an unbounded interval scores inf
        return (hi - lo) + (2.0 / alpha) * (np.maximum(lo - y, 0.0) + np.maximum(y - hi, 0.0))


def winkler(lo, hi, y, alpha: float) -> float:
    """Mean interval score of ``[lo, hi]`` for outcomes ``y`` at miscoverage ``alpha``."""
    s = interval_scores(lo, hi, y, alpha)
    return float(np.mean(s)) if s.size else float("nan")


def row_scores(iv: dict, next_high, next_low, coverage: float) -> np.ndarray:
    """(n, 2) the interval scores of the high's and the low's intervals, row by row (the loss
    a Diebold-Mariano test of two interval methods compares, ``baselines.diebold_mariano``)."""
    a = 1.0 - coverage
    return np.stack([interval_scores(iv["high_lo"], iv["high_hi"], next_high, a),
                     interval_scores(iv["low_lo"], iv["low_hi"], next_low, a)], axis=1)


def pinball(q, y, tau: float) -> float:
    """Mean pinball loss of the quantile forecast ``q`` at level ``tau`` for outcomes ``y``."""
    d = np.asarray(y, np.float64) - np.asarray(q, np.float64)
    with np.errstate(invalid="ignore"):
        loss = np.maximum(tau * d, (tau - 1.0) * d)
    return float(np.mean(loss)) if loss.size else float("nan")


def inside(lo, hi, y) -> np.ndarray:
    y = np.asarray(y, np.float64)
    return (y >= np.asarray(lo, np.float64)) & (y <= np.asarray(hi, np.float64))


def volatility_edges(train_scale) -> tuple[float, float] | None:
    """The two edges of the volatility thirds: the 1/3 and 2/3 quantiles of the training
    rows' scale (None without finite training scales)."""
    s = np.asarray(train_scale, np.float64)
    s = s[np.isfinite(s)]
    if not s.size:
        return None
    e1, e2 = np.quantile(s, [1 / 3, 2 / 3])
    return float(e1), float(e2)


def thirds(scale, edges: tuple[float, float]) -> np.ndarray:
    """Each row's volatility third (1 calm, 2 mid, 3 wild): above an edge is the next third."""
    s = np.asarray(scale, np.float64)
    return 1 + (s > edges[0]).astype(np.int64) + (s > edges[1]).astype(np.int64)


def quality(iv: dict, next_high, next_low, coverage: float, third: np.ndarray | None = None) -> dict:
    """The figures of the module for intervals ``iv`` (high_lo, high_hi, low_lo, low_hi) and
    the outcomes; ``third``: each row's volatility third (None: no breakdown)."""
    alpha = 1.0 - coverage
    ah, al = np.asarray(next_high, np.float64), np.asarray(next_low, np.float64)
    wh = winkler(iv["high_lo"], iv["high_hi"], ah, alpha)
    wl = winkler(iv["low_lo"], iv["low_hi"], al, alpha)
    lower = [pinball(iv[f"{s}_lo"], a, alpha / 2) for s, a in (("high", ah), ("low", al))]
    upper = [pinball(iv[f"{s}_hi"], a, 1 - alpha / 2) for s, a in (("high", ah), ("low", al))]
    in_h, in_l = inside(iv["high_lo"], iv["high_hi"], ah), inside(iv["low_lo"], iv["low_hi"], al)
    out = {
        "winkler": (wh + wl) / 2, "winkler_high": wh, "winkler_low": wl,
        "pinball_high": (lower[0] + upper[0]) / 2, "pinball_low": (lower[1] + upper[1]) / 2,
        "pinball_lower_end": (lower[0] + lower[1]) / 2, "pinball_upper_end": (upper[0] + upper[1]) / 2,
        "joint_coverage": float(np.mean(in_h & in_l)) if ah.size else float("nan"),
    }
    out["pinball"] = (out["pinball_high"] + out["pinball_low"]) / 2
    if third is not None:
        out["coverage_by_volatility"] = [_third(k, third == k, in_h, in_l) for k in THIRDS]
    return out


def _third(k: int, m: np.ndarray, in_h: np.ndarray, in_l: np.ndarray) -> dict:
    n = int(m.sum())
    if not n:
        return {"third": k, "rows": 0, "coverage": None, "coverage_high": None, "coverage_low": None,
                "joint_coverage": None}
    ch, cl = float(np.mean(in_h[m])), float(np.mean(in_l[m]))
    return {"third": k, "rows": n, "coverage": (ch + cl) / 2, "coverage_high": ch, "coverage_low": cl,
            "joint_coverage": float(np.mean(in_h[m] & in_l[m]))}
