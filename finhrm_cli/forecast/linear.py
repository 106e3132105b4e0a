"""The linear partner of the HRM: a median (L1) regression on the last day's inputs, blended
with the HRM's forecast at a weight chosen on validation.  numpy only; never prints.

Why: on the real series of ``benchmarks/real_data.py`` a least-absolute-deviation regression
of the vol-scaled targets on the window's last day (the same normalised inputs the HRM reads)
is level with the HRM or ahead of it, and the blend is the most robust of the three
(docs/results.md).  The weight leans on the validation rows, so a series where
the HRM carries less signal leans on the linear forecast and one where it carries more leans
on the HRM; ``finhrm inspect`` shows the weight and both parts' validation MAE, so the HRM's
share of the work is on view.

* Fit (``fit_median``): iteratively reweighted least squares for the L1 loss with a small
  ridge penalty (the intercept is not penalised), on the **training windows only**, per
  target column, in the HRM's target units (log ratio / volatility scale).
* Weight (``choose_weight``): the HRM's weight ``w*`` in ``0, 0.05, ..., 1`` with the lowest
  validation price MAE (each series' MAE relative to the HRM alone, averaged, so several
  tickers count alike; a tie keeps the HRM), then shrunk halfway to equal weights:
  ``w = (w* + 0.5) / 2`` (``SHRINK``).  Forecast = ``w * hrm + (1 - w) * linear``.
* A run's ``blend`` in config.json holds ``hrm_weight``, ``coef_high``/``coef_low`` (intercept
  first, then one per feature) and the validation MAEs; ``run.config.RunConfig`` checks
  it like any other untrusted input.  Runs without it forecast with the HRM alone.
"""

from __future__ import annotations

import numpy as np

from finhrm_cli.forecast import baselines

COEF_LIMIT = 1e4     # coefficients above this are refused when a run is read (fits on normalised
                    # inputs stay far below it); a forecast still out of range is refused when
                    # shown (service.prediction)
RIDGE = 1.0          # penalty on the (normalised) feature coefficients
IRLS_ITERS = 50
IRLS_TOL = 1e-7      # stop when the coefficients move less than this (max abs)
WEIGHT_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
# The weight kept is halfway between validation's best and equal weights: a weight fit on a
# few hundred rows is noisy, and equal weights are the robust default of forecast
# combination.  Checked on validation alone (docs/results.md).  The HRM keeps 25-75%.
SHRINK = 0.5
MIN_TRAIN = 50       # fewer training windows than this: no linear part
MIN_VAL = 20         # fewer validation windows with known targets: no linear part


def design(x_last: np.ndarray) -> np.ndarray:
    """(n, F) last-day inputs -> (n, F + 1) with a leading intercept column (float64)."""
    x = np.nan_to_num(np.asarray(x_last, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.c_[np.ones(len(x)), np.clip(x, -1e3, 1e3)]


def fit_median(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE, iters: int = IRLS_ITERS) -> np.ndarray:
    """Least-absolute-deviation regression of ``y`` (n,) on ``x`` (n, F) with an L2 penalty on
    the slopes: IRLS, each step a weighted ridge solve with weights 1/max(|residual|, eps).
    Returns (F + 1,) coefficients, intercept first."""
    return fit_quantile(x, y, 0.5, ridge, iters)


def fit_quantile(x: np.ndarray, y: np.ndarray, tau: float, ridge: float = RIDGE, iters: int = IRLS_ITERS) -> np.ndarray:
    """Linear quantile regression of ``y`` (n,) on ``x`` (n, F) at level ``tau`` (the pinball
    loss) with an L2 penalty on the slopes, by majorize-minimize (Hunter & Lange 2000): the
    pinball loss ``(|r| + (2 tau - 1) r) / 2`` with ``|r|`` bounded by its quadratic at the
    last residuals, so each step is the weighted ridge solve of ``fit_median`` plus the
    linear term ``(2 tau - 1) A'1``.  ``tau = 0.5`` is the median regression.  Returns
    (F + 1,) coefficients, intercept first."""
    a = design(x)
    y = np.asarray(y, np.float64)
    keep = np.isfinite(y)
    a, y = a[keep], y[keep]
    reg = ridge * np.eye(a.shape[1])
    reg[0, 0] = 0.0
    tilt = (2.0 * tau - 1.0) * a.sum(axis=0)
    w = np.linalg.solve(a.T @ a + reg + 1e-9 * np.eye(a.shape[1]), a.T @ y)  # ridge start
    for _ in range(iters):
        r = np.abs(y - a @ w)
        eps = max(1e-3 * float(np.median(r)), 1e-9)
        wt = 1.0 / np.maximum(r, eps)  # at the fixed point: sum |r| + ridge * |slopes|^2
        new = np.linalg.solve(a.T @ (a * wt[:, None]) + reg + 1e-9 * np.eye(a.shape[1]), a.T @ (wt * y) + tilt)
        done = float(np.max(np.abs(new - w))) < IRLS_TOL
        w = new
        if done:
            break
    return w


def predict(blend: dict, x_last: np.ndarray) -> np.ndarray:
    """The linear part alone, (n, 2) in target units, from (n, F) last-day inputs."""
    a = design(x_last)
    return np.stack([a @ np.asarray(blend["coef_high"]), a @ np.asarray(blend["coef_low"])], axis=1)


def combine(blend: dict | None, hrm: np.ndarray, x_last: np.ndarray) -> np.ndarray:
    """The forecast in target units: the HRM's (n, 2) alone without a blend, else the mix.

    The HRM's high is never below its low (its head is built so); the linear part has no
    such bound, so a row where the mix would cross is rearranged (high and low swapped):
    sorting two estimates of ordered quantities never moves them further from the truth
    (Chernozhukov, Fernández-Val and Galichon 2010, "Quantile and probability curves without
    crossing")."""
    if not blend:
        return hrm
    w = float(blend["hrm_weight"])
    if w >= 1.0:
        return hrm
    mix = w * np.asarray(hrm, np.float64) + (1.0 - w) * predict(blend, x_last)
    return np.sort(mix, axis=1)[:, ::-1]


def price_mae(pred_units: np.ndarray, scale, close, next_high, next_low) -> float:
    """Mean of the high and the low price MAE (``baselines.price_mae``) of forecasts in
    target units; NaN without a row whose outcome is known."""
    p = np.asarray(pred_units, np.float64) * np.asarray(scale, np.float64)[:, None]
    maes = baselines.price_mae(p, close, next_high, next_low)
    return float("nan") if maes is None else (maes[0] + maes[1]) / 2


def choose_weight(hrm_parts, lin_parts, val_parts, scales=None) -> tuple[float, dict]:
    """The HRM weight with the lowest validation MAE (each part relative to the HRM alone,
    averaged over parts).  ``*_parts``: per series (n, 2) forecasts in target units;
    ``val_parts``: the matching validation windows; ``scales``: per part, the target scale
    (default each window's volatility scale).  -> (weight, {"hrm", "linear", "blend"}
    validation MAE averaged over parts, "best_weight")."""
    scales = scales or [wv.scale for wv in val_parts]

    def mae_at(w):
        return [price_mae(w * h + (1 - w) * lin, s, wv.close, wv.next_high, wv.next_low)
                for h, lin, wv, s in zip(hrm_parts, lin_parts, val_parts, scales)]

    base = np.array(mae_at(1.0))

    def relative(m):  # each part's MAE over the HRM's; a perfect HRM part counts as 1 or inf
        m = np.asarray(m)
        ok = np.isfinite(m) & np.isfinite(base)
        r = np.where(base[ok] > 0, m[ok] / np.where(base[ok] > 0, base[ok], 1.0), np.where(m[ok] > 0, np.inf, 1.0))
        return float(r.mean()) if r.size else 1.0

    best_w, best = 1.0, 1.0
    for w in WEIGHT_GRID[::-1]:  # from 1 down: a tie keeps the larger HRM weight
        rel = relative(mae_at(float(w)))
        if rel < best - 1e-12:
            best_w, best = float(w), rel
    w = round(SHRINK * best_w + (1.0 - SHRINK) * 0.5, 4)
    report = {k: float(np.nanmean(mae_at(v))) for k, v in (("hrm", 1.0), ("linear", 0.0), ("blend", w))}
    report["best_weight"] = best_w
    return w, report


def fit_partner(x_train_last: np.ndarray, y_train_units: np.ndarray, hrm_weight: float | None = None) -> dict:
    """The linear part alone: median regressions of the high and low (target units) on the
    last day's inputs of the training windows; with ``hrm_weight``, a whole blend that
    takes the HRM's weight as given (a production run keeps its parent's, chosen on the
    parent's validation)."""
    y = np.asarray(y_train_units, np.float64)
    known = np.isfinite(y).all(axis=1)
    x = np.asarray(x_train_last)[known]
    coef = [fit_median(x, y[known, j]) for j in range(2)]
    blend = {"coef_high": [float(v) for v in coef[0]], "coef_low": [float(v) for v in coef[1]]}
    if hrm_weight is not None:
        blend.update(hrm_weight=float(hrm_weight), rows=int(known.sum()))
    return blend


def fit_blend(x_train_last: np.ndarray, y_train_units: np.ndarray, hrm_val_parts, x_val_parts, val_parts,
              val_scales=None) -> dict | None:
    """Fit the linear part on training windows (last-day inputs ``x_train_last``, targets in
    target units) and choose the HRM weight on validation (``choose_weight``).  None when
    there are too few rows for either."""
    y = np.asarray(y_train_units, np.float64)
    known = np.isfinite(y).all(axis=1)
    n_val = sum(int((np.isfinite(w.next_high) & np.isfinite(w.next_low)).sum()) for w in val_parts)
    if int(known.sum()) < MIN_TRAIN or n_val < MIN_VAL:
        return None
    blend = fit_partner(x_train_last, y)
    lin_parts = [predict(blend, xv) for xv in x_val_parts]
    w, report = choose_weight(hrm_val_parts, lin_parts, val_parts, val_scales)
    blend.update(hrm_weight=w, val_mae=report, rows=int(known.sum()))
    return blend
