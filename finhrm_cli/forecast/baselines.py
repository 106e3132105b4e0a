"""Naive forecasts, metrics and split-conformal intervals (numpy only).

Everything here works in price units on the same rows the model is scored on, so the model
and the baselines are compared like for like.

Baselines for the high and low ``h`` sessions after day ``t``:

* **persistence**: the next high and low equal today's (``high_t``, ``low_t``).
* **recent range**: ``close_t`` times the median of ``high_s / close_{s-h}`` (and
  ``low_s / close_{s-h}``) over the last ``lookback`` sessions ``s <= t``; every ratio is
  known at the close of day ``t``.

Conformal intervals: on the validation split we keep the residuals
``log(actual / close) - predicted_log_ratio`` for high and for low.  For a coverage ``c``
the interval is ``pred + [q_lo, q_hi]`` in log space with the split-conformal order
statistics ``q_lo = r_(floor((n+1)(1-c)/2))`` and ``q_hi = r_(ceil((n+1)(1+c)/2))``.
"""

from __future__ import annotations

import math

import numpy as np

# ------------------------------------------------------------------ baselines


def persistence(high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(high, dtype=np.float64), np.asarray(low, dtype=np.float64)


def recent_range(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    end: np.ndarray,
    horizon: int = 1,
    lookback: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """``close_t`` times the median past ratio of the high (low) to the close ``h`` days before.

    ``high``, ``low`` and ``close`` are whole-series arrays; ``end`` are the rows ``t`` to
    forecast from.  Only rows ``<= t`` are read.  Rows with fewer than ``lookback`` past
    ratios use as many as exist (at least one).
    """
    high = np.asarray(high, dtype=np.float64)
    low = np.asarray(low, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    end = np.asarray(end, dtype=np.int64)
    n = len(close)
    rh = np.full(n, np.nan)
    rl = np.full(n, np.nan)
    rh[horizon:] = high[horizon:] / close[:-horizon]
    rl[horizon:] = low[horizon:] / close[:-horizon]
    out_h = np.empty(len(end))
    out_l = np.empty(len(end))
    for i, t in enumerate(end):
        a = max(horizon, t - lookback + 1)
        seg_h = rh[a : t + 1]
        seg_l = rl[a : t + 1]
        if len(seg_h) == 0:  # no past ratio yet: fall back to persistence of the ratio 1
            out_h[i], out_l[i] = high[t], low[t]
            continue
        out_h[i] = close[t] * np.median(seg_h)
        out_l[i] = close[t] * np.median(seg_l)
    return out_h, out_l


# ------------------------------------------------------------------ metrics


def _r2(pred: np.ndarray, actual: np.ndarray) -> float:
    ss_res = float(np.sum((actual - pred) ** 2))
    ss_tot = float(np.sum((actual - actual.mean()) ** 2))
    return float("nan") if ss_tot == 0 else 1.0 - ss_res / ss_tot


def metrics(
    pred_high: np.ndarray,
    pred_low: np.ndarray,
    actual_high: np.ndarray,
    actual_low: np.ndarray,
    close: np.ndarray,
    interval: dict | None = None,
) -> dict:
    """Price-unit metrics for a high/low forecast.

    R² is computed on the targets (log ratios to the close), where it measures skill
    beyond the price level; in raw prices every forecast near the close scores ~1.
    Direction accuracy: share of rows where the forecast move of the high (low) from the
    close has the sign of the actual move.  ``interval`` optionally holds arrays
    ``high_lo, high_hi, low_lo, low_hi`` for coverage.
    """
    ph, pl = np.asarray(pred_high, float), np.asarray(pred_low, float)
    ah, al = np.asarray(actual_high, float), np.asarray(actual_low, float)
    c = np.asarray(close, float)
    n = len(c)
    if n == 0:
        return {"n": 0}
    eh, el = ph - ah, pl - al
    out = {
        "n": int(n),
        "mae_high": float(np.mean(np.abs(eh))),
        "mae_low": float(np.mean(np.abs(el))),
        "rmse_high": float(np.sqrt(np.mean(eh**2))),
        "rmse_low": float(np.sqrt(np.mean(el**2))),
        "mape_high": float(np.mean(np.abs(eh) / ah)),
        "mape_low": float(np.mean(np.abs(el) / al)),
        "r2_high": _r2(np.log(ph / c), np.log(ah / c)),
        "r2_low": _r2(np.log(pl / c), np.log(al / c)),
        "direction_high": float(np.mean(np.sign(ph - c) == np.sign(ah - c))),
        "direction_low": float(np.mean(np.sign(pl - c) == np.sign(al - c))),
        "range_valid": float(np.mean(ph >= pl)),
    }
    out["mae"] = (out["mae_high"] + out["mae_low"]) / 2
    if interval is not None:
        out["coverage_high"] = float(np.mean((ah >= interval["high_lo"]) & (ah <= interval["high_hi"])))
        out["coverage_low"] = float(np.mean((al >= interval["low_lo"]) & (al <= interval["low_hi"])))
        out["interval_width_high"] = float(np.mean(interval["high_hi"] - interval["high_lo"]))
        out["interval_width_low"] = float(np.mean(interval["low_hi"] - interval["low_lo"]))
    return out


def with_skill(results: dict[str, dict], reference: str = "persistence") -> dict[str, dict]:
    """Add ``skill`` = MAE / reference MAE to every entry (lower is better, < 1 beats it)."""
    ref = results.get(reference, {}).get("mae")
    for m in results.values():
        if ref and "mae" in m:
            m["skill"] = m["mae"] / ref
    return results


def compare(
    pred_high: np.ndarray,
    pred_low: np.ndarray,
    w,
    frame_high: np.ndarray,
    frame_low: np.ndarray,
    frame_close: np.ndarray,
    horizon: int,
    interval: dict | None = None,
    model_name: str = "finhrm",
) -> dict[str, dict]:
    """Model and both baselines scored on the rows of windows ``w`` (known targets only)."""
    ah, al, c = w.next_high, w.next_low, w.close
    res = {model_name: metrics(pred_high, pred_low, ah, al, c, interval)}
    bh, bl = persistence(w.high, w.low)
    res["persistence"] = metrics(bh, bl, ah, al, c)
    rh, rl = recent_range(frame_high, frame_low, frame_close, w.end, horizon)
    res["recent_range"] = metrics(rh, rl, ah, al, c)
    return with_skill(res)


# ------------------------------------------------------------------ conformal


def conformal_residuals(pred_log: np.ndarray, y_log: np.ndarray, scale: np.ndarray | None = None) -> dict:
    """Sorted validation residuals (actual - predicted, log space) for high and low.

    With ``scale`` (the per-row volatility scale), residuals are kept in units of it, so the
    intervals widen in wild markets and narrow in calm ones (normalised conformal scores).
    """
    pred_log = np.asarray(pred_log, np.float64)
    y_log = np.asarray(y_log, np.float64)
    ok = np.all(np.isfinite(y_log), axis=1)
    r = y_log[ok] - pred_log[ok]
    if scale is not None:
        r = r / np.asarray(scale, np.float64)[ok][:, None]
    return {
        "n": int(ok.sum()),
        "units": "scale" if scale is not None else "log",
        "high": [round(float(v), 7) for v in np.sort(r[:, 0])],
        "low": [round(float(v), 7) for v in np.sort(r[:, 1])],
    }


def conformal_offsets(residuals: dict, coverage: float) -> dict[str, tuple[float, float]]:
    """Log-space offsets (lo, hi) for high and low at the requested two-sided coverage."""
    if not 0 < coverage < 1:
        raise ValueError("coverage must lie in (0, 1)")
    out = {}
    for key in ("high", "low"):
        r = np.asarray(residuals[key], np.float64)
        n = len(r)
        if n == 0:
            out[key] = (-math.inf, math.inf)
            continue
        alpha = 1.0 - coverage
        k_lo = int(math.floor((n + 1) * alpha / 2))  # 1-based order statistic
        k_hi = int(math.ceil((n + 1) * (1 - alpha / 2)))
        lo = r[k_lo - 1] if k_lo >= 1 else -math.inf
        hi = r[k_hi - 1] if k_hi <= n else math.inf
        out[key] = (float(lo), float(hi))
    return out


def intervals(
    pred_log: np.ndarray, close: np.ndarray, residuals: dict, coverage: float, scale: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Price intervals around a log-ratio forecast: high_lo, high_hi, low_lo, low_hi.

    Residuals stored in volatility-scale units need the rows' ``scale``.
    """
    off = conformal_offsets(residuals, coverage)
    close = np.asarray(close, np.float64)
    p = np.asarray(pred_log, np.float64)
    s = np.ones(len(close))
    if residuals.get("units") == "scale":
        if scale is None:
            raise ValueError("these residuals are in volatility-scale units; pass the rows' scale")
        s = np.asarray(scale, np.float64)
    with np.errstate(invalid="ignore"):  # an infinite offset times a scale stays infinite
        return {
            "high_lo": close * np.exp(p[:, 0] + off["high"][0] * s),
            "high_hi": close * np.exp(p[:, 0] + off["high"][1] * s),
            "low_lo": close * np.exp(p[:, 1] + off["low"][0] * s),
            "low_hi": close * np.exp(p[:, 1] + off["low"][1] * s),
        }


# ------------------------------------------------------------------ Diebold-Mariano


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with integer ``df`` degrees of freedom (no scipy).

    Exact finite series in theta = atan(|t| / sqrt(df)) (Abramowitz & Stegun 26.7.3-4):
    A(t|df) = P(|T| < |t|) is a sum of at most df/2 terms in cos(theta)^2.
    """
    if not math.isfinite(t):
        return 0.0 if not math.isnan(t) else float("nan")
    df = int(df)
    if df < 1:
        return float("nan")
    th = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(th), math.cos(th) ** 2
    if df % 2 == 1:
        total, term = 0.0, 1.0
        if df > 1:
            total = 1.0
            for k in range(1, (df - 3) // 2 + 1):  # term_k = term_{k-1} * (2k)/(2k+1) * c2
                term *= (2 * k) / (2 * k + 1) * c2
                total += term
        a = 2.0 / math.pi * (th + (s * math.cos(th) * total if df > 1 else 0.0))
    else:
        total, term = 1.0, 1.0
        for k in range(1, (df - 2) // 2 + 1):  # term_k = term_{k-1} * (2k-1)/(2k) * c2
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        a = s * total
    return float(min(1.0, max(0.0, 1.0 - a)))


def diebold_mariano(err_model: np.ndarray, err_base: np.ndarray, horizon: int = 1) -> dict:
    """Diebold-Mariano test of equal mean absolute error on the same rows.

    ``err_model`` and ``err_base`` are forecast errors, shape (n,) or (n, k) (k targets,
    e.g. high and low, averaged per row).  Loss differential
    ``d_t = mean_k |e_model| - mean_k |e_base|``; negative mean = the model is better.
    Long-run variance: Newey-West (Bartlett weights ``1 - j/h``) over lags ``j < h``, the
    overlap of ``h``-step forecasts; ``DM = mean(d) / sqrt(V / n)``.  The Harvey-Leybourne-
    Newbold correction ``sqrt((n + 1 - 2h + h(h-1)/n) / n)`` is applied and the two-sided
    p-value read from Student's t with ``n - 1`` degrees of freedom (exact series, no scipy).
    Returns {"stat", "p", "n", "mean_diff"}; p is nan when d has no variance or n < 2.
    """
    em = np.abs(np.asarray(err_model, np.float64))
    eb = np.abs(np.asarray(err_base, np.float64))
    if em.shape != eb.shape:
        raise ValueError("the model's and the baseline's errors must be on the same rows")
    d = (em.reshape(len(em), -1).mean(axis=1) - eb.reshape(len(eb), -1).mean(axis=1)) if em.size else em
    d = d[np.isfinite(d)]
    n, h = len(d), max(1, int(horizon))
    out = {"stat": float("nan"), "p": float("nan"), "n": int(n), "mean_diff": float(d.mean()) if n else float("nan")}
    if n < 2:
        return out
    dc = d - d.mean()
    v = float(dc @ dc) / n
    for j in range(1, min(h, n)):
        v += 2.0 * (1.0 - j / h) * float(dc[j:] @ dc[:-j]) / n
    if not v > 0:
        return out
    stat = d.mean() / math.sqrt(v / n)
    stat *= math.sqrt(max(n + 1 - 2 * h + h * (h - 1) / n, 0.0) / n)
    out.update(stat=float(stat), p=t_two_sided_p(stat, n - 1))
    return out


# ------------------------------------------------------------------ adaptive conformal


def adaptive_intervals(
    pred_log: np.ndarray,
    y_log: np.ndarray,
    close: np.ndarray,
    residuals: dict,
    coverage: float,
    scale: np.ndarray | None = None,
    end: np.ndarray | None = None,
    horizon: int = 1,
    gamma: float = 0.005,
    update: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Adaptive conformal inference (Gibbs & Candès 2021) over rows in time order.

    Each target (high, low) keeps a miscoverage level ``alpha_t``, starting at
    ``1 - coverage``.  Row t's interval is the split-conformal interval of the validation
    ``residuals`` at coverage ``1 - alpha_t``; once row s's outcome is known (at the close of
    day ``s + horizon``), ``alpha <- alpha + gamma * (1 - coverage - miss_s)``: misses widen
    later intervals, hits narrow them.  Row t reads only the outcomes of rows s with
    ``end_s + horizon <= end_t`` (``end``: the rows' day index, default 0..n-1), so its own
    outcome, and anything after it, never shapes its interval.  ``alpha_t <= 0`` gives an
    unbounded interval, ``alpha_t >= 1`` the point forecast.  ``update`` (bool per row,
    default all) marks rows whose outcomes may update alpha (e.g. only rows after the
    training period); rows with unknown outcomes (nan) never update.
    Returns (intervals like ``intervals()``, {"alpha_high", "alpha_low": final levels}).
    """
    p = np.asarray(pred_log, np.float64)
    y = np.asarray(y_log, np.float64)
    close = np.asarray(close, np.float64)
    n = len(p)
    end = np.arange(n) if end is None else np.asarray(end, np.int64)
    upd = np.ones(n, bool) if update is None else np.asarray(update, bool)
    if residuals.get("units") == "scale":
        if scale is None:
            raise ValueError("these residuals are in volatility-scale units; pass the rows' scale")
        s = np.asarray(scale, np.float64)
    else:
        s = np.ones(n)
    target = 1.0 - coverage
    out = {}
    final = {}
    for j, key in enumerate(("high", "low")):
        r = np.asarray(residuals[key], np.float64)
        m = len(r)
        lo_off = np.empty(n)
        hi_off = np.empty(n)
        alpha = target
        nxt = 0  # next row whose outcome is not yet folded into alpha
        for t in range(n):
            while nxt < t and end[nxt] + horizon <= end[t]:
                if upd[nxt] and np.isfinite(y[nxt, j]):
                    miss = not (lo_off[nxt] <= (y[nxt, j] - p[nxt, j]) / s[nxt] <= hi_off[nxt])
                    alpha += gamma * (target - miss)
                nxt += 1
            if m == 0 or alpha <= 0:
                lo_off[t], hi_off[t] = -math.inf, math.inf
            elif alpha >= 1:
                lo_off[t] = hi_off[t] = 0.0
            else:
                k_lo = int(math.floor((m + 1) * alpha / 2))
                k_hi = int(math.ceil((m + 1) * (1 - alpha / 2)))
                lo_off[t] = r[k_lo - 1] if k_lo >= 1 else -math.inf
                hi_off[t] = r[k_hi - 1] if k_hi <= m else math.inf
        final[f"alpha_{key}"] = float(alpha)
        with np.errstate(invalid="ignore", over="ignore"):
            out[f"{key}_lo"] = close * np.exp(p[:, j] + lo_off * s)
            out[f"{key}_hi"] = close * np.exp(p[:, j] + hi_off * s)
    return out, final


def price_mae(pred: np.ndarray, close, next_high, next_low) -> tuple[float, float] | None:
    """MAE in price units of high and low (rows with known targets); None if no such rows."""
    close = np.asarray(close, np.float64)
    nh, nl = np.asarray(next_high, np.float64), np.asarray(next_low, np.float64)
    known = np.isfinite(nh) & np.isfinite(nl) & np.isfinite(close)
    if not known.any():
        return None
    p = np.asarray(pred, np.float64)[known]
    c = close[known]
    with np.errstate(over="ignore", invalid="ignore"):
        mh = float(np.mean(np.abs(c * np.exp(p[:, 0]) - nh[known])))
        ml = float(np.mean(np.abs(c * np.exp(p[:, 1]) - nl[known])))
    return mh, ml
