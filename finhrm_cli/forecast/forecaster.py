"""The Forecaster: a trained HRM and everything that turns its output into a run's forecast.

It holds the HRM, its linear partner (``blend``), the conformal residuals of the intervals,
the ACT Q head's calibration map and the weights' digest (which names the forecast cache).
``finish`` is the one recipe that completes a trained HRM, used by ``finhrm train`` and by
each walk-forward fold: the calibration map on the training windows, the linear partner on
the training windows with its weight chosen on validation, the conformal residuals on
validation.  Test rows are never read by it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from finhrm_cli.forecast import baselines, conformal, inference, linear, memo
from finhrm_cli.forecast.parts import of, scale, stack, train_scale
from finhrm_cli.forecast.scoring import HRM_ALONE, score_parts


REFRESH_CALIBRATION_ROWS = 256  # windows a production run's Q-head calibration map is fit on


def residuals(dss, va, pred_va: list[np.ndarray], tr=None, pred_tr=None, coverage: float = 0.8,
              **by_volatility) -> dict:
    """A run's conformal residuals from its validation forecasts ``pred_va`` (per part of
    ``va``): the pooled list in volatility-scale units (``baselines.conformal_residuals``) and,
    since issue 27, the residuals per volatility third (``conformal.residual_bins``, edges from
    each series' training rows; ``by_volatility``: its options), which the intervals of a new
    run use.  With the training parts ``tr`` and their forecasts ``pred_tr`` (and the option
    ``heads``, the default), residual heads fit on the training residuals at ``coverage``
    (``conformal.fit_heads``) and the validation rows' CQR scores.  A run whose targets are not
    volatility-scaled keeps the pooled list alone."""
    y = np.concatenate([w.y for _, w in va])
    s = np.concatenate([scale(ds, w) for ds, w in va])
    p = np.concatenate(pred_va)
    conf = baselines.conformal_residuals(p, y, s)
    if not all(ds.fcfg.scale_targets for ds, _ in va):
        return conf
    names = np.concatenate([np.full(len(w), ds.source.name, dtype=object) for ds, w in va])
    width = None
    if by_volatility.pop("width_model", False):  # fit on the training windows, applied to validation's
        xy = stack([(ds, w) for ds, w in of(dss, "train") if len(w)])
        width = conformal.fit_width(xy["x"][:, -1, :], xy["y"])
    x_va = np.concatenate([w.x[:, -1, :] for _, w in va])
    heads = None
    with_forecast = by_volatility.pop("heads_forecast", conformal.DEFAULT["heads_forecast"])
    if by_volatility.pop("heads", conformal.DEFAULT["heads"]) and pred_tr is not None and tr:
        f_tr = np.concatenate([q / scale(ds, w)[:, None] for (ds, w), q in zip(tr, pred_tr)])
        r_tr = np.concatenate([w.y / scale(ds, w)[:, None] for ds, w in tr]) - f_tr
        ok = np.isfinite(r_tr).all(axis=1)
        if ok.sum() >= linear.MIN_TRAIN:
            x_tr = np.concatenate([w.x[:, -1, :] for _, w in tr])
            heads = conformal.fit_heads(x_tr[ok], r_tr[ok], coverage, by_volatility.pop("ridge", conformal.HEADS_RIDGE),
                                        f_tr[ok] if with_forecast else None)
    by_volatility.pop("ridge", None)
    bv = conformal.residual_bins(p, y, s, names, {ds.source.name: train_scale(ds) for ds in dss}, **by_volatility,
                                 width=None if width is None else conformal.width_of(width, x_va),
                                 heads=None if heads is None else conformal.heads_of(heads, x_va, p / s[:, None]))
    conf["by_volatility"] = {**bv, **({"width_model": width} if width else {}), **({"heads": heads} if heads else {})}
    return conf


class Forecaster:
    def __init__(self, model, weights_sha256: str | None = None, blend: dict | None = None,
                 conformal: dict | None = None, halt_calibration: dict | None = None, act: bool = False):
        self.model = model
        self.act = bool(act)  # how the HRM forecasts by default: halted (True) or every segment
        self.weights_sha256 = weights_sha256
        self.blend = blend
        self.conformal = conformal
        self.halt_calibration = halt_calibration

    @property
    def cfg(self):
        """The HRM's ``ModelConfig``."""
        return self.model.cfg

    # ------------------------------------------------------------------ forecasts

    def hrm(self, parts, act: bool | None = None, segments: dict | None = None) -> list[np.ndarray]:
        """The HRM's forecasts (log ratios) for every part, in one pass, split back per part.
        With ``act`` (default: the run's ``act_inference``) each row stops at the segment its
        Q head halts on, and ``segments`` (a dict, if given) receives the segments used
        (``actstats.segments_used``; computed afresh, not from the forecast cache)."""
        from finhrm_cli.forecast import actstats

        act = self.act if act is None else act
        sizes = [len(w) for _, w in parts]
        if sum(sizes) == 0:
            return [np.zeros((0, 2)) for _ in parts]
        x = np.concatenate([w.x for _, w in parts])
        if act and segments is not None:
            raw, used = inference.predict_act(self.model, x)
            segments.update(actstats.segments_used(used, self.model.cfg.halt_max_steps))
        else:
            ident = memo.identity(self.weights_sha256, self.model.cfg)
            fn = (lambda m, xx: inference.predict_act(m, xx)[0]) if act else inference.predict
            raw = memo.predict(ident, self.model, x, fn, mode="act" if act else "all")
        out, i = [], 0
        for (ds, w), n in zip(parts, sizes):
            out.append(raw[i:i + n] * scale(ds, w)[:, None])
            i += n
        return out

    def combine(self, parts, hrm_preds: list[np.ndarray]) -> list[np.ndarray]:
        """The forecasts from the HRM's: blended with the linear partner when there is one."""
        if not self.blend:
            return hrm_preds
        out = []
        for p, (ds, w) in zip(hrm_preds, parts):
            s = scale(ds, w)[:, None]
            out.append(linear.combine(self.blend, p / s, w.x[:, -1, :]) * s)
        return out

    def forecast(self, parts, act: bool | None = None, segments: dict | None = None) -> list[np.ndarray]:
        """The run's forecasts (log ratios) for every part."""
        return self.combine(parts, self.hrm(parts, act, segments))

    def extra(self, hrm_preds) -> dict[str, Any] | None:
        """The forecasts scored beside the run's: the HRM alone when it is blended."""
        return {HRM_ALONE: hrm_preds} if self.blend else None

    # ------------------------------------------------------------------ finishing a trained HRM

    def fit_blend(self, dss, hrm_va: list[np.ndarray] | None = None) -> dict | None:
        """The linear partner (``forecast.linear``): fit on the training windows' last day,
        the HRM's weight chosen on validation; test rows are never read.  ``hrm_va``: the
        HRM's validation forecasts when the caller has them."""
        tr = [(ds, w) for ds, w in of(dss, "train") if len(w)]
        va_all = of(dss, "val")
        if hrm_va is None:
            hrm_va = self.hrm(va_all)
        keep = [i for i, (_, w) in enumerate(va_all) if len(w)]
        if not tr or not keep:
            return None
        va = [va_all[i] for i in keep]
        scales = [scale(ds, w) for ds, w in va]
        xy = stack(tr)
        return linear.fit_blend(xy["x"][:, -1, :], xy["y"], [hrm_va[i] / s[:, None] for i, s in zip(keep, scales)],
                                [w.x[:, -1, :] for _, w in va], [w for _, w in va], scales)

    def finish(self, dss, blend: bool = True, calibrate_halting: bool = True) -> list[np.ndarray]:
        """Complete a trained HRM on the series ``dss``: the Q head's calibration map
        (training windows), the linear partner (``blend``; training windows, weight on
        validation) and the conformal residuals (validation).  Returns the HRM's validation
        forecasts, for scoring beside the blend."""
        from finhrm_cli.forecast.actstats import fit_halt_calibration

        if calibrate_halting:
            # validation chose the epoch and calibrates the intervals, test is held out: neither
            # may shape what the head reports
            self.halt_calibration = fit_halt_calibration(self.model, of(dss, "train"))
        va = of(dss, "val")
        hrm_va = self.hrm(va)
        self.blend = self.fit_blend(dss, hrm_va) if blend else None
        tr = [(ds, w) for ds, w in of(dss, "train") if len(w)]  # the residual heads' rows
        self.conformal = residuals(dss, va, self.combine(va, hrm_va), tr, self.forecast(tr) if tr else None)
        return hrm_va

    def finish_every_row(self, dss, hrm_weight: float | None, conformal: dict | None) -> None:
        """Complete a production run's HRM (``train --from``), trained on every row: the Q
        head's calibration map on those rows, the linear partner refit on them with the HRM
        weight its parent's validation chose, and the parent's conformal residuals, which
        were measured out of sample (the adaptive intervals then learn from each new
        outcome after the last training row).  ``hrm_weight``: the parent's (None: the HRM
        alone)."""
        from finhrm_cli.forecast.actstats import fit_halt_calibration

        tr = [(ds, w) for ds, w in of(dss, "train") if len(w)]
        # a refresh is a few short epochs: the full calibration would take a third of it (5 of 15 s on
        # GOOG); two numbers need no more than a quarter of the windows a training fits it on
        self.halt_calibration = fit_halt_calibration(self.model, tr, limit=REFRESH_CALIBRATION_ROWS)
        self.blend = None
        if hrm_weight is not None and tr:
            xy = stack(tr)
            if int(np.isfinite(xy["y"]).all(axis=1).sum()) >= linear.MIN_TRAIN:
                self.blend = linear.fit_partner(xy["x"][:, -1, :], xy["y"], hrm_weight)
        self.conformal = conformal

    def score(self, parts, coverage: float = 0.8, intervals: str = "adaptive", cutoffs=None,
              hrm_preds: list[np.ndarray] | None = None, train_scales: list | None = None,
              anchor_model: dict | None = None) -> dict:
        """The run's forecasts on ``parts`` against the baselines, with the HRM alone beside
        when blended and the conformalized anchor if given (``scoring.score_parts``)."""
        hrm = self.hrm(parts) if hrm_preds is None else hrm_preds
        return score_parts(parts, self.combine(parts, hrm), self.conformal, coverage, intervals, cutoffs,
                           self.extra(hrm), train_scales, anchor_model)
