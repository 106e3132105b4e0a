"""Scoring forecasts against the naive baselines, and prediction intervals in prices.

``score_parts`` pools all parts (and reports each series when there are several): the
model's metrics next to persistence and the recent range, each baseline (and any extra
forecast, such as the HRM alone) with the Diebold-Mariano test of equal MAE.
"""

from __future__ import annotations

import numpy as np

from finhrm_cli.forecast import anchor, baselines, conformal as bins
from finhrm_cli.forecast.intervals_quality import quality, row_scores, thirds, volatility_edges
from finhrm_cli.forecast.parts import iso, known, scale

HRM_ALONE = "hrm_alone"  # the forecast scored beside a blended run's (JSON keys are snake_case)


OLD_KEYS = {"HRM alone": HRM_ALONE, "recent range": "recent_range"}  # before issue 25


def snake_keys(metrics):
    """A run's stored metrics with the forecast names as today's snake_case JSON keys (runs
    made before issue 25 wrote "HRM alone" and "recent range")."""
    if isinstance(metrics, dict):
        return {OLD_KEYS.get(k, k): snake_keys(v) for k, v in metrics.items()}
    return metrics


def to_prices(pred_log: np.ndarray, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log ratios to the close -> (high, low) prices."""
    close = np.asarray(close, np.float64)
    p = np.asarray(pred_log, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused where it is shown
        return close * np.exp(p[:, 0]), close * np.exp(p[:, 1])


INTERVAL_METHODS = ("adaptive", "split")


def interval_arrays(ds, w, pred_log, conformal, coverage, method: str = "adaptive", cutoff=None):
    """Price intervals for the windows ``w`` (in time order), or None without residuals.

    ``split``: the static split-conformal interval of the validation residuals.
    ``adaptive``: adaptive conformal inference (``baselines.adaptive_intervals``): the
    miscoverage level starts at ``1 - coverage`` and learns from the outcomes of rows dated
    after ``cutoff`` (the run's last validation day; None: every row), each known only
    ``horizon`` sessions after its forecast.  Rows whose outcome is unknown never update it.
    Residuals with ``by_volatility`` (runs made since issue 27) calibrate each volatility third
    on its own (``forecast.conformal``); older runs keep the one pooled list.
    """
    if not conformal:
        return None
    if method not in INTERVAL_METHODS:
        raise ValueError(f"unknown interval method {method!r}")
    s = scale(ds, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(np.stack([w.next_high, w.next_low], axis=1) / np.asarray(w.close, np.float64)[:, None])
    update = np.ones(len(w), bool) if cutoff is None else (w.dates > np.datetime64(cutoff, "D"))
    bv = conformal.get("by_volatility")
    if bv is not None:
        width = bins.width_of(bv["width_model"], w.x[:, -1, :]) if "width_model" in bv else None
        return bins.binned_intervals(pred_log, y, w.close, bv, coverage, s, ds.source.name, method == "adaptive",
                                     w.end, ds.fcfg.horizon, update, width, w.x[:, -1, :])
    if method == "split":
        return baselines.intervals(pred_log, w.close, conformal, coverage, s)
    iv, _ = baselines.adaptive_intervals(pred_log, y, w.close, conformal, coverage, s, end=w.end,
                                         horizon=ds.fcfg.horizon, update=update)
    return iv


def _part_arrays(ds, w, pred_log, conformal, coverage, method="adaptive", cutoff=None, train_scale=None,
                 anchor_model=None) -> dict:
    """Forecasts, actuals and baselines of one part in price units (known targets only);
    ``train_scale``: the volatility scale of the series' training rows, whose thirds sort the
    scored rows (``intervals_quality``; None: no breakdown); ``anchor_model``: the fitted
    conformalized anchor (``forecast.anchor``; None: none)."""
    iv = interval_arrays(ds, w, pred_log, conformal, coverage, method, cutoff)  # in time order, all rows
    keep = np.isfinite(w.next_high) & np.isfinite(w.next_low)
    if iv is not None:
        iv = {k: v[keep] for k, v in iv.items()}
    anc = None
    if anchor_model is not None:
        a_point, a_iv = anchor.forecast(anchor_model, ds, w, cutoff, method == "adaptive")
        anc = (*to_prices(a_point[keep], np.asarray(w.close)[keep]), {k: v[keep] for k, v in a_iv.items()})
    w, pred_log = known(w, pred_log)
    edges = volatility_edges(train_scale) if train_scale is not None else None
    third = thirds(w.scale, edges) if edges is not None else None
    ph, pl = to_prices(pred_log, w.close)
    f = ds.frame
    rh, rl = baselines.recent_range(f["high"].to_numpy(), f["low"].to_numpy(), f["close"].to_numpy(),
                                    w.end, ds.fcfg.horizon)
    return {"w": w, "ph": ph, "pl": pl, "iv": iv, "rh": rh, "rl": rl, "h": ds.fcfg.horizon,
            "coverage": coverage, "edges": edges, "third": third, "anchor": anc}


def _results(a: dict) -> dict:
    """Metrics of the model and the baselines; each baseline also gets the Diebold-Mariano
    test of equal MAE against the model on the same rows (``dm_stat`` < 0: the model's
    errors are smaller; ``dm_p``: two-sided p-value).  ``a["extra"]``: more forecasts to
    show beside the model (e.g. the HRM alone), tested the same way."""
    w = a["w"]
    extra = a.get("extra") or {}
    res = {"finhrm": baselines.metrics(a["ph"], a["pl"], w.next_high, w.next_low, w.close, a["iv"])}
    if a["iv"] is not None:  # the baselines are point forecasts: no intervals to score
        res["finhrm"].update(quality(a["iv"], w.next_high, w.next_low, a["coverage"], a.get("third")))
    for name, (eh, el) in extra.items():
        res[name] = baselines.metrics(eh, el, w.next_high, w.next_low, w.close)
    others = list(extra.items())
    if a.get("anchor") is not None:  # the conformalized anchor: a point forecast and intervals
        ah, al, aiv = a["anchor"]
        res[anchor.NAME] = baselines.metrics(ah, al, w.next_high, w.next_low, w.close, aiv)
        res[anchor.NAME].update(quality(aiv, w.next_high, w.next_low, a["coverage"], a.get("third")))
        others.append((anchor.NAME, (ah, al)))
        if a["iv"] is not None:  # equal interval scores? (DM on the rows' Winkler scores; < 0: finhrm's are lower)
            dm = baselines.diebold_mariano(row_scores(a["iv"], w.next_high, w.next_low, a["coverage"]),
                                           row_scores(aiv, w.next_high, w.next_low, a["coverage"]), a["h"])
            res[anchor.NAME]["winkler_dm_stat"], res[anchor.NAME]["winkler_dm_p"] = dm["stat"], dm["p"]
    res["persistence"] = baselines.metrics(w.high, w.low, w.next_high, w.next_low, w.close)
    res["recent_range"] = baselines.metrics(a["rh"], a["rl"], w.next_high, w.next_low, w.close)
    actual = np.stack([w.next_high, w.next_low], axis=1)
    e_model = np.stack([a["ph"], a["pl"]], axis=1) - actual
    others += [("persistence", (w.high, w.low)), ("recent_range", (a["rh"], a["rl"]))]
    for name, (bh, bl) in others:
        dm = baselines.diebold_mariano(e_model, np.stack([bh, bl], axis=1) - actual, a["h"])
        res[name]["dm_stat"], res[name]["dm_p"] = dm["stat"], dm["p"]
    return baselines.with_skill(res)


def _summary_of(w, res, coverage, conformal, method, edges=None) -> dict:
    return {
        "rows": int(len(w)),
        "first_date": iso(w.dates.min()) if len(w) else None,
        "last_date": iso(w.dates.max()) if len(w) else None,
        "coverage_target": coverage if conformal else None,
        "intervals": method if conformal else None,
        # a run made since issue 27 adapts one level per volatility third
        "intervals_per_third": bool((conformal.get("by_volatility") or {}).get("per_third")) if conformal else None,
        **({"volatility_edges": list(edges)} if edges is not None and conformal else {}),
        "results": res,
    }


def score_parts(parts, preds, conformal: dict | None, coverage: float, intervals: str = "adaptive",
                cutoffs: list | None = None, extra: dict[str, list[np.ndarray]] | None = None,
                train_scales: list | None = None, anchor_model: dict | None = None) -> dict:
    """Model against the baselines, pooled over all parts, and per series when there are several.

    ``intervals``: "adaptive" or "split" (see ``interval_arrays``); ``cutoffs``: per part, the
    day after which outcomes may adapt the intervals (None: every scored row); ``extra``:
    name -> per-part forecasts (log ratios) scored beside the model, e.g. the HRM alone;
    ``train_scales``: per part, the volatility scale of its series' training rows (``parts.
    train_scale``), whose thirds sort the scored rows for the coverage by volatility.  Pooled,
    each row keeps the third of its own series' edges.  ``anchor_model``: the conformalized
    anchor (``forecast.anchor.fit``), scored beside the baselines with its intervals.
    """
    from finhrm_cli import data

    cutoffs = cutoffs or [None] * len(parts)
    train_scales = train_scales or [None] * len(parts)
    arrays = [_part_arrays(ds, w, p, conformal, coverage, intervals, c, s, anchor_model)
              for (ds, w), p, c, s in zip(parts, preds, cutoffs, train_scales)]
    for i, ((_, w), a) in enumerate(zip(parts, arrays)):
        a["extra"] = {name: to_prices(known(w, ps[i])[1], a["w"].close) for name, ps in (extra or {}).items()}
    pooled = {
        "w": data.concat_windows([a["w"] for a in arrays]),
        **{k: np.concatenate([a[k] for a in arrays]) for k in ("ph", "pl", "rh", "rl")},
        "iv": {k: np.concatenate([a["iv"][k] for a in arrays]) for k in arrays[0]["iv"]} if conformal else None,
        "h": max(a["h"] for a in arrays),
        "coverage": coverage,
        "third": np.concatenate([a["third"] for a in arrays]) if all(a["third"] is not None for a in arrays) else None,
        "extra": {name: tuple(np.concatenate([a["extra"][name][j] for a in arrays]) for j in (0, 1))
                  for name in (extra or {})},
        "anchor": None if anchor_model is None else (
            *(np.concatenate([a["anchor"][j] for a in arrays]) for j in (0, 1)),
            {k: np.concatenate([a["anchor"][2][k] for a in arrays]) for k in arrays[0]["anchor"][2]}),
    }
    out = _summary_of(pooled["w"], _results(pooled), coverage, conformal, intervals,
                      arrays[0]["edges"] if len(arrays) == 1 else None)
    if len(parts) > 1:
        out["series"] = {
            ds.source.name: _summary_of(a["w"], _results(a), coverage, conformal, intervals, a["edges"])
            for (ds, _), a in zip(parts, arrays)
        }
        # pooled price-unit MAEs are dominated by the dearest series: the mean of the series'
        # skills is the scale-free summary
        for name, m in out["results"].items():
            skills = [s["results"][name].get("skill") for s in out["series"].values()]
            if all(isinstance(v, float) for v in skills):
                m["skill_mean"] = float(np.mean(skills))
    return out
