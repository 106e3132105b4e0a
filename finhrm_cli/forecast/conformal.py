"""Conformal intervals that hold in calm and wild markets alike (issue 27), numpy only.

The residuals of a run made before issue 27 are one sorted list per target in units of the
day's volatility scale ``s`` (``baselines.conformal_residuals``): the interval is the forecast
plus the residual quantiles times ``s``.  On real series the errors grow more slowly than
``s``, so those intervals under-cover calm days and over-cover wild ones.  A run's residuals
may now also hold ``"by_volatility"`` (``residual_bins``), the default of new runs
(``DEFAULT``, chosen on validation, measured in docs/results.md):

* ``edges``: per series, the 1/3 and 2/3 quantiles of the volatility scale over its *training*
  rows (``"*"``: over every series, for a series the run has not seen), which sort each row into
  a calm, mid or wild third;
* the adaptive update (``aci``) keeps **one miscoverage level per third**, each learning from
  the outcomes of its own third's rows, so a third whose errors outgrow (or undershoot) the
  scale widens (or narrows) its own intervals.  Its step is ``gamma``; with ``decay`` (new runs
  since the decaying steps: 0.05, decay 25, floor ``gamma_min`` 0.01) a level's k-th step is
  ``max(gamma_min, gamma / sqrt(1 + k / decay))``: a third the scored rows reach for the
  first time (a calm run after a crisis, a wild one after a calm year) learns fast, and a
  third with many outcomes settles instead of jittering, which costs interval score;
* ``high`` / ``low``: the sorted validation residuals, one list (the default), or one per third
  (Mondrian conformal, Vovk et al. 2003; a third with fewer than ``MIN_BIN`` rows uses all);
* ``beta``: the residuals are in units of ``s ** beta`` (a width model; 1, the old scaling, by
  default; ``width_beta`` fits the slope of ``log |residual|`` on ``log s``).

* ``heads`` (new runs since the residual heads, ``fit_heads``): linear quantile regressions
  of finhrm's *training* residuals (units of the scale) on the scale-free inputs at
  ``alpha/2`` and ``1 - alpha/2``; row t's interval is then ``p_t + q_lo(x_t) s_t`` ..
  ``p_t + q_hi(x_t) s_t`` widened by the CQR offset (Romano et al. 2019: ``high`` / ``low``
  hold the sorted validation scores ``max(q_lo - r, r - q_hi)``, ``cqr_offsets``), so the
  width follows the inputs, not the scale alone.

Mondrian residuals and the fitted width model were measured and lost (docs/results.md).

``aci`` is the one adaptive conformal loop (Gibbs & Candès 2021) for any interval of the
form ``[centre_lo + lo(alpha) * u, centre_hi + hi(alpha) * u]`` in log space; the conformalized
anchor (``forecast.anchor``) uses it too.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from finhrm_cli.forecast.intervals_quality import thirds, volatility_edges

# New runs' default (the measurement behind it: docs/results.md, benchmarks/intervals.py)
DEFAULT = {"beta": 1.0, "mondrian": False, "per_third": True, "gamma": 0.05, "decay": 25.0, "gamma_min": 0.01,
           "heads": True, "heads_forecast": True}
HEADS_RIDGE = 100.0  # the residual heads' L2 penalty on the normalised inputs (linear.RIDGE is 1)
HEADS_MIN_SD = 1e-9  # the least deviation the forecast input of the heads is standardised by
MIN_BIN = 30  # validation rows a third needs to be calibrated on its own rows
GAMMA = 0.005  # the adaptive step (Gibbs & Candès' default, as baselines.adaptive_intervals)


def two_sided(r: np.ndarray, alpha: float, finite: bool = False) -> tuple[float, float]:
    """The split-conformal offsets of the sorted residuals ``r`` at miscoverage ``alpha``;
    ``finite``: a level too low for the residuals gives their extremes, not an unbounded
    interval (after a run of misses the adaptive level can fall below zero, and a trader
    cannot place an order at infinity; the level itself keeps learning)."""
    m = len(r)
    if m and finite:
        alpha = max(alpha, 2.0 / (m + 1))
    if m == 0 or alpha <= 0:
        return -math.inf, math.inf
    if alpha >= 1:
        return 0.0, 0.0
    k_lo = int(math.floor((m + 1) * alpha / 2))
    k_hi = int(math.ceil((m + 1) * (1 - alpha / 2)))
    return (float(r[k_lo - 1]) if k_lo >= 1 else -math.inf), (float(r[k_hi - 1]) if k_hi <= m else math.inf)


def width_beta(resid_log: np.ndarray, scale: np.ndarray) -> float:
    """The width model's exponent: the least-squares slope of ``log |r|`` on ``log s`` over the
    rows (``r`` in log space), clipped to [0, 1]; 1 (the old scaling) with too few rows."""
    r = np.abs(np.asarray(resid_log, np.float64))
    s = np.asarray(scale, np.float64)
    ok = np.isfinite(r) & (r > 0) & np.isfinite(s) & (s > 0)
    if ok.sum() < MIN_BIN:
        return 1.0
    x, y = np.log(s[ok]), np.log(r[ok])
    vx = float(np.var(x))
    if vx <= 0:
        return 1.0
    b = float(np.mean((x - x.mean()) * (y - y.mean())) / vx)
    return float(min(1.0, max(0.0, b)))


WIDTH_CLIP = (0.25, 4.0)  # a width model's row multiplier stays within these


def fit_width(x_last, y_units) -> dict:
    """A width model on the scale-free inputs, fit on *training* windows: per target, the
    median regression of the target (units of the scale), then the median regression of its
    absolute residual (``linear.fit_median``); a row's multiplier is that forecast over the
    median absolute residual, clipped to ``WIDTH_CLIP``."""
    from finhrm_cli.forecast import linear

    y = np.asarray(y_units, np.float64)
    x = np.asarray(x_last)
    ok = np.isfinite(y).all(axis=1)
    out = {}
    for j, key in enumerate(("high", "low")):
        a = np.abs(y[ok, j] - linear.design(x[ok]) @ linear.fit_median(x[ok], y[ok, j]))
        out[key] = [float(v) for v in linear.fit_median(x[ok], a)]
        out[f"{key}_norm"] = float(max(np.median(a), 1e-12))
    return out


def width_of(model: dict, x_last) -> np.ndarray:
    """(n, 2) row multipliers of the unit from a width model (``fit_width``)."""
    from finhrm_cli.forecast import linear

    a = linear.design(x_last)
    return np.stack([np.clip(a @ np.asarray(model[k]) / model[f"{k}_norm"], *WIDTH_CLIP) for k in ("high", "low")],
                    axis=1)


def cqr_offsets(scores: np.ndarray, alpha: float) -> tuple[float, float]:
    """The CQR offsets of the sorted ``scores`` at level ``alpha``; a level too low for the
    scores gives their largest (bounded, as ``two_sided`` with ``finite``)."""
    m = len(scores)
    if m:
        alpha = max(alpha, 1.0 / (m + 1))
    if m == 0 or alpha <= 0:
        return -math.inf, math.inf
    if alpha >= 1:
        return 0.0, 0.0
    k = int(math.ceil((m + 1) * (1 - alpha)))
    q = float(scores[k - 1]) if k <= m else math.inf
    return -q, q


def fit_heads(x_last, resid_units, coverage: float, ridge: float = HEADS_RIDGE, forecast_units=None) -> dict:
    """Per target, the coefficients (intercept first) of the linear quantile regressions at
    ``alpha/2`` and ``1 - alpha/2`` (``linear.fit_quantile``) of finhrm's residuals
    ``resid_units`` (n, 2; units of the scale) on the inputs ``x_last``; with finhrm's
    forecasts ``forecast_units`` (n, 2; the default of new runs), of the *outcomes* (residual
    plus forecast) on the inputs and the forecast (standardised on these rows: ``"forecast"``
    keeps its mean and deviation per target), so the regression learns how far to trust the
    forecast at each end: trusted fully, the residual heads; not at all, the CQR anchor."""
    from finhrm_cli.forecast import linear

    r, x = np.asarray(resid_units, np.float64), np.asarray(x_last)
    a = 1.0 - coverage
    out: dict = {"coverage": float(coverage), "ridge": float(ridge)}
    f = None if forecast_units is None else np.asarray(forecast_units, np.float64)
    if f is not None:
        out["forecast"] = {k: [round(float(np.mean(f[:, j])), 9), round(float(max(np.std(f[:, j]), HEADS_MIN_SD)), 9)]
                           for j, k in enumerate(("high", "low"))}
    for j, k in enumerate(("high", "low")):
        xx, y = (x, r[:, j]) if f is None else (_with_forecast(x, f[:, j], out["forecast"][k]), r[:, j] + f[:, j])
        out[k] = [[round(float(v), 9) for v in linear.fit_quantile(xx, y, t, ridge=ridge)] for t in (a / 2, 1 - a / 2)]
    return out


def _with_forecast(x, f, moments) -> np.ndarray:
    """The inputs with the standardised forecast as one more column."""
    return np.concatenate([np.asarray(x, np.float64), ((np.asarray(f, np.float64) - moments[0]) / moments[1])[:, None]],
                          axis=1)


def heads_of(heads: dict, x_last, forecast_units=None) -> np.ndarray:
    """(n, 2 targets, 2 ends) the heads' quantiles of the residual in units of the scale, sorted
    (heads with ``"forecast"``: their quantiles of the outcome less ``forecast_units``, (n, 2))."""
    from finhrm_cli.forecast import linear

    out = []
    for j, k in enumerate(("high", "low")):
        if "forecast" in heads:
            f = np.asarray(forecast_units, np.float64)[:, j]
            a = linear.design(_with_forecast(x_last, f, heads["forecast"][k]))
        else:
            a = linear.design(x_last)
            f = np.zeros(len(a))
        out.append(np.sort(np.stack([a @ np.asarray(c) for c in heads[k]], axis=1), axis=1) - f[:, None])
    return np.stack(out, axis=1)


def edges_of(train_scale) -> list[float] | None:
    """The thirds' edges of ``intervals_quality.volatility_edges``, as stored in config.json."""
    e = volatility_edges(train_scale)
    return None if e is None else list(e)


def thirds_of(scale, edges) -> np.ndarray:
    """0 calm, 1 mid, 2 wild (``intervals_quality.thirds`` counted from 0)."""
    return thirds(scale, edges) - 1


def residual_bins(pred_log, y_log, scale, series, train_scales: dict[str, np.ndarray],
                  beta: float | None = DEFAULT["beta"], mondrian: bool = DEFAULT["mondrian"],
                  per_third: bool = DEFAULT["per_third"], gamma: float = DEFAULT["gamma"], width=None,
                  heads=None, decay: float | None = DEFAULT["decay"], gamma_min: float = DEFAULT["gamma_min"]) -> dict:
    """The ``by_volatility`` part of a run's residuals from its validation rows.

    ``pred_log``, ``y_log``: (n, 2) forecasts and outcomes (log ratios); ``scale``: (n,) the rows'
    volatility scale; ``series``: (n,) each row's series name; ``train_scales``: series name ->
    the volatility scale of that series' training rows (the edges of the thirds).  ``beta``:
    the width exponent (None: fitted, ``width_beta``); ``mondrian``: residuals per third (else
    one pooled list in every third); ``per_third``: one adaptive level per third; ``gamma``:
    the adaptive step (``decay``, ``gamma_min``: its schedule, ``aci``); ``width``: (n, 2) row
    multipliers of the unit (a width model), or None;
    ``heads``: (n, 2, 2) the residual heads' quantiles of the rows (``heads_of``): the lists hold
    CQR scores, not residuals."""
    p, y = np.asarray(pred_log, np.float64), np.asarray(y_log, np.float64)
    s = np.asarray(scale, np.float64)
    ok = np.all(np.isfinite(y), axis=1)
    p, y, s, series = p[ok], y[ok], s[ok], np.asarray(series)[ok]
    wd = np.ones_like(p) if width is None else np.asarray(width, np.float64)[ok]
    q = None if heads is None else np.asarray(heads, np.float64)[ok]
    r = y - p
    if beta is None:
        beta = width_beta(r.ravel(), np.repeat(s, 2))
    edges = {name: edges_of(v) for name, v in train_scales.items()}
    edges = {k: v for k, v in edges.items() if v is not None}
    pooled = edges_of(np.concatenate(list(train_scales.values()))) if train_scales else None
    if pooled is None:
        edges, pooled = {}, [1e300, 1e300]  # no training rows: everything is one (calm) third
    edges["*"] = pooled
    third = np.zeros(len(s), np.int64)
    for name in set(series.tolist()):  # each row by its own series' edges
        m = series == name
        third[m] = thirds_of(s[m], edges.get(name, pooled))
    u = r / ((s ** beta)[:, None] * wd)
    if q is not None:  # CQR scores of the residual heads
        u = np.maximum(q[:, :, 0] - u, u - q[:, :, 1])
    out = {"beta": round(float(beta), 6), "edges": edges, "min_bin": MIN_BIN, "per_third": bool(per_third),
           "gamma": float(gamma), **({} if decay is None else {"decay": float(decay), "gamma_min": float(gamma_min)})}
    for j, key in enumerate(("high", "low")):
        col = np.sort(u[:, j])
        sets = [np.sort(u[third == k, j]) if (third == k).sum() >= MIN_BIN else col for k in range(3)]
        out[key] = [[round(float(v), 7) for v in r] for r in (sets if mondrian else [col])]
        out[f"rows_{key}"] = [int((third == k).sum()) for k in range(3)]
    return out


def describe(conf: dict | None) -> dict | None:
    """What a run's intervals are, for ``inspect`` (None: the run has none): ``rows`` (the
    validation rows they are calibrated on) and, since issue 27, ``rows_by_third``, ``heads``
    ("inputs and forecast", "inputs" or None), ``per_third`` and the adaptive step (``gamma``,
    ``decay``, ``gamma_min``); runs made before: one level at step ``GAMMA``."""
    if not conf:
        return None
    bv = conf.get("by_volatility")
    out = {"rows": conf.get("n"), "units": conf.get("units")}
    if not bv:
        return {**out, "per_third": False, "heads": None, "gamma": GAMMA}
    heads = bv.get("heads")
    return {**out, "rows_by_third": bv.get("rows_high"), "per_third": bool(bv.get("per_third", True)),
            "heads": None if not heads else "inputs and forecast" if "forecast" in heads else "inputs",
            "gamma": bv.get("gamma", GAMMA), **{k: bv[k] for k in ("decay", "gamma_min") if k in bv}}


def aci(centre_lo, centre_hi, y, unit, offsets: Callable[[float, int], tuple[float, float]], group,
        target: float, end=None, horizon: int = 1, gamma: float = GAMMA, update=None, groups: int = 1,
        shared: bool = False, decay: float | None = None, gamma_min: float = 0.0):
    """Adaptive conformal inference over rows in time order, one miscoverage level per group.

    Row t's interval (log space) is ``[centre_lo_t + lo * unit_t, centre_hi_t + hi * unit_t]``
    with ``(lo, hi) = offsets(alpha_g, g)`` for the row's group ``g``.  Once row s's outcome is
    known (``end_s + horizon <= end_t``) and ``update_s``, its group's level moves by
    ``gamma * (target - miss_s)`` (``shared``: one level for all groups, ``offsets`` still
    called with the row's group).  ``decay``: the step of a level's k-th update is
    ``max(gamma_min, gamma / sqrt(1 + k / decay))`` (decaying steps, Angelopoulos, Barber and
    Bates 2024: a level learns fast from its first outcomes, then settles instead of jittering
    around its target; None: ``gamma`` throughout).  Row t reads no outcome known after its own
    close.  Returns (lo, hi) arrays in log space and the final level of each group."""
    clo, chi = np.asarray(centre_lo, np.float64), np.asarray(centre_hi, np.float64)
    y, u = np.asarray(y, np.float64), np.asarray(unit, np.float64)
    g = np.asarray(group, np.int64)
    n = len(clo)
    end = np.arange(n) if end is None else np.asarray(end, np.int64)
    upd = np.ones(n, bool) if update is None else np.asarray(update, bool)
    alpha = [target] * groups
    seen = [0] * groups  # updates each level has had
    lvl = np.zeros(n, np.int64) if shared else g
    lo_off, hi_off = np.empty(n), np.empty(n)
    nxt = 0
    for t in range(n):
        while nxt < t and end[nxt] + horizon <= end[t]:
            if upd[nxt] and np.isfinite(y[nxt]):
                v = (y[nxt] - clo[nxt]) / u[nxt], (y[nxt] - chi[nxt]) / u[nxt]
                miss = not (lo_off[nxt] <= v[0] and v[1] <= hi_off[nxt])
                k = lvl[nxt]
                step = gamma if decay is None else max(gamma_min, gamma / math.sqrt(1.0 + seen[k] / decay))
                alpha[k] += step * (target - miss)
                seen[k] += 1
            nxt += 1
        lo_off[t], hi_off[t] = offsets(alpha[lvl[t]], int(g[t]))
    with np.errstate(invalid="ignore", over="ignore"):
        return clo + lo_off * u, chi + hi_off * u, alpha


def row_thirds(conf: dict, scale, series: str | None) -> np.ndarray:
    """Each row's third (0, 1, 2) by the run's edges for ``series`` (unseen: over every series)."""
    edges = conf["edges"].get(series) if series is not None else None
    return thirds_of(scale, edges or conf["edges"]["*"])


def binned_intervals(pred_log, y_log, close, conf: dict, coverage: float, scale, series: str | None,
                     adaptive: bool = True, end=None, horizon: int = 1, update=None, width=None,
                     x_last=None) -> dict[str, np.ndarray]:
    """Price intervals from a run's ``by_volatility`` residuals ``conf``: each row calibrated on its
    third's residuals in units of ``scale ** beta``; ``adaptive``: adaptive levels (else the
    static split-conformal offsets), as the run stores them: one per third (``per_third``, else
    one for every row), moved at step ``gamma`` (``decay``, ``gamma_min``: its schedule, ``aci``;
    runs made before store a constant step, or none: ``GAMMA``); ``width``: (n, 2) row
    multipliers of the unit, or None; ``x_last``: the rows' inputs, for the heads
    (``conf["heads"]``).  Same keys as ``baselines.intervals``."""
    p = np.asarray(pred_log, np.float64)
    y = np.asarray(y_log, np.float64) if y_log is not None else np.full(p.shape, np.nan)
    close = np.asarray(close, np.float64)
    s = np.asarray(scale, np.float64)
    third = row_thirds(conf, s, series)
    q = heads_of(conf["heads"], x_last, p / s[:, None]) if conf.get("heads") else None
    out = {}
    for j, key in enumerate(("high", "low")):
        unit = s ** float(conf["beta"]) * (1.0 if width is None else np.asarray(width, np.float64)[:, j])
        sets = [np.asarray(r, np.float64) for r in conf[key]]  # per third, or one for all
        clo, chi = (p[:, j], p[:, j]) if q is None else (p[:, j] + q[:, j, 0] * unit, p[:, j] + q[:, j, 1] * unit)

        def offsets(alpha, k, sets=sets):
            r = sets[k if len(sets) == 3 else 0]
            return two_sided(r, alpha, finite=True) if q is None else cqr_offsets(r, alpha)

        if adaptive:
            lo, hi, _ = aci(clo, chi, y[:, j], unit, offsets, third, 1.0 - coverage, end, horizon,
                            conf.get("gamma", GAMMA), update, groups=3, shared=not conf.get("per_third", True),
                            decay=conf.get("decay"), gamma_min=conf.get("gamma_min", 0.0))
        else:
            off = np.array([offsets(1.0 - coverage, int(k)) for k in third]).reshape(-1, 2)
            with np.errstate(invalid="ignore"):
                lo, hi = clo + off[:, 0] * unit, chi + off[:, 1] * unit
        with np.errstate(over="ignore", invalid="ignore"):
            out[f"{key}_lo"], out[f"{key}_hi"] = close * np.exp(lo), close * np.exp(hi)
    return out
