"""Quantiles of the next high and low on request (``predict --quantiles``, issue 27).

A level ``tau`` below one half is the lower end of the run's conformal interval at coverage
``1 - 2 tau``, one above it the upper end of the interval at ``2 tau - 1`` (``scoring.
interval_arrays``: adaptive or split, per volatility third for runs that store them), and
``0.5`` the forecast itself; a lower end above the forecast (or an upper end below it: the
residual heads of new runs can put a narrow interval to one side of the forecast) is moved to
the forecast, so the forecast stays the median.  Each row's levels are then sorted (rearrangement, Chernozhukov,
Fernández-Val and Galichon 2010: never further from the truth), so the quantiles never cross,
and the low's quantile at each level is capped at the high's, so low <= high level by level
(the minimum of two non-decreasing curves is non-decreasing).
"""

from __future__ import annotations

import numpy as np

from finhrm_cli.forecast.scoring import interval_arrays, to_prices


def parse(text: str) -> list[float]:
    """``"0.05,0.25,0.5"`` -> sorted distinct levels; ValueError naming the bad item."""
    out = set()
    for item in str(text).replace(" ", "").split(","):
        if not item:
            continue
        try:
            v = float(item)
        except ValueError:
            raise ValueError(f"{item!r} is not a number") from None
        if not 0 < v < 1:
            raise ValueError(f"{item} is not a level strictly between 0 and 1")
        out.add(v)
    if not out:
        raise ValueError("no level given")
    return sorted(out)


def key(side: str, tau: float) -> str:
    """The field of a level's quantile in predict's rows: ``pred_high_q0.05``."""
    return f"pred_{side}_q{tau:g}"


def quantiles(ds, w, pred_log, conformal: dict, levels: list[float], method: str = "adaptive",
              cutoff=None) -> dict[str, np.ndarray]:
    """{"high": (n, L), "low": (n, L)} price quantiles of the rows of ``w`` at ``levels``
    (sorted), non-decreasing along the levels and low <= high at each."""
    ph, pl = to_prices(pred_log, w.close)
    cols: dict[str, list[np.ndarray]] = {"high": [], "low": []}
    intervals: dict[float, dict] = {}  # by coverage: a pair of levels (tau, 1 - tau) shares one
    for tau in levels:
        if tau == 0.5:
            cols["high"].append(ph)
            cols["low"].append(pl)
            continue
        cov = round(abs(1.0 - 2.0 * tau), 12)
        if cov not in intervals:
            intervals[cov] = interval_arrays(ds, w, pred_log, conformal, cov, method, cutoff)
        iv = intervals[cov]
        end = "lo" if tau < 0.5 else "hi"
        bound = np.minimum if tau < 0.5 else np.maximum  # the forecast stays the median (residual heads
        for side, point in (("high", ph), ("low", pl)):  # can put a narrow interval beside it)
            cols[side].append(bound(iv[f"{side}_{end}"], point))
    return arrange(np.stack(cols["high"], axis=1), np.stack(cols["low"], axis=1))


def arrange(high: np.ndarray, low: np.ndarray) -> dict[str, np.ndarray]:
    """Sort each row's levels and cap the low at the high, level by level."""
    high = np.sort(np.asarray(high, np.float64), axis=1)
    low = np.minimum(np.sort(np.asarray(low, np.float64), axis=1), high)
    return {"high": high, "low": low}


def pair_coverage(q: dict[str, np.ndarray], levels: list[float], next_high, next_low) -> list[dict]:
    """For each pair of levels ``(tau, 1 - tau)`` both asked for: the share of rows whose actual
    high (low) lies between its two quantiles, and both at once (joint), over the rows given
    (those with a known outcome)."""
    nh, nl = np.asarray(next_high, np.float64), np.asarray(next_low, np.float64)
    known = np.isfinite(nh) & np.isfinite(nl)
    out = []
    for i, tau in enumerate(levels):
        j = next((k for k, v in enumerate(levels) if abs(v - (1 - tau)) < 1e-9), None)
        if tau >= 0.5 or j is None:
            continue
        m = known
        in_h = (nh[m] >= q["high"][m, i]) & (nh[m] <= q["high"][m, j])
        in_l = (nl[m] >= q["low"][m, i]) & (nl[m] <= q["low"][m, j])
        n = int(m.sum())
        out.append({"lower": tau, "upper": levels[j], "nominal": round(levels[j] - tau, 10), "rows": n,
                    "coverage_high": float(in_h.mean()) if n else None,
                    "coverage_low": float(in_l.mean()) if n else None,
                    "joint_coverage": float((in_h & in_l).mean()) if n else None})
    return out
