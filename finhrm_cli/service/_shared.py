"""Helpers the commands share: versions, price conversion, a run's data, windows and scoring.

A "part" is one series' dataset with some of its windows, ``(ds, w)``; ``_xy`` stacks parts
into the arrays the engine trains on, ``_predict_parts`` and ``score_parts`` predict and
score them against the naive baselines.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Callable

import numpy as np

from finhrm_cli import __version__
from finhrm_cli.forecast import baselines
from finhrm_cli.run import store
from finhrm_cli import config as cfgmod
from finhrm_cli.config import FeatureConfig
from finhrm_cli.errors import DataError, RunError

Callback = Callable[[str, dict], None]


def _versions() -> dict:
    import mlx.core as mx  # already loaded (through blas) by the time we get here

    from finhrm_cli import blas

    return {
        "finhrm": __version__,
        "mlx": getattr(mx, "__version__", "?"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "blas": blas.info().get("kind"),
    }


def _iso(d: Any) -> str:
    return str(np.datetime64(d, "D"))


def to_prices(pred_log: np.ndarray, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    close = np.asarray(close, np.float64)
    p = np.asarray(pred_log, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused where it is shown
        return close * np.exp(p[:, 0]), close * np.exp(p[:, 1])



def _scale(ds, w) -> np.ndarray:
    """Per-window target scale: the volatility scale when the run scales targets, else 1."""
    return np.asarray(w.scale, np.float64) if ds.fcfg.scale_targets else np.ones(len(w))


def _windows_dict(ds, w, with_prices: bool = False) -> dict:
    s = _scale(ds, w)
    d = {"x": w.x, "y": (w.y / s[:, None]).astype(np.float32)}
    if with_prices:
        d.update(close=w.close, next_high=w.next_high, next_low=w.next_low, scale=s)
    return d


# ------------------------------------------------------------------ series and windows
# A "part" is one series' dataset with some of its windows: (ds, w).  Several tickers are
# several parts; the model sees their windows one after the other and never mixed.


def _parts(dss, split: str) -> list[tuple[Any, Any]]:
    return [(ds, ds.windows(split)) for ds in dss]


def _xy(parts, with_prices: bool = False) -> dict:
    ds_list = [_windows_dict(ds, w, with_prices) for ds, w in parts]
    return {k: np.concatenate([d[k] for d in ds_list]) for k in ds_list[0]}


def _predict_parts(model, parts, act: bool = False, segments: dict | None = None, hrm_only: bool = False) -> list[np.ndarray]:
    """One prediction pass over all parts' windows, split back per part (log ratios): the
    run's forecast, the HRM blended with its linear partner when the run has one
    (``model._finhrm_blend``, see ``finhrm_cli.forecast.linear``), or the HRM alone with ``hrm_only``.
    With ``act``, ``segments`` (a dict, if given) receives the segments per row
    (``actstats.segments_used``)."""
    from finhrm_cli.forecast import actstats
    from finhrm_cli.forecast import inference
    from finhrm_cli.forecast import memo

    sizes = [len(w) for _, w in parts]
    if sum(sizes) == 0:
        return [np.zeros((0, 2)) for _ in parts]
    x = np.concatenate([w.x for _, w in parts])
    if act:
        raw, used = inference.predict_act(model, x)
        if segments is not None:
            segments.update(actstats.segments_used(used, model.cfg.halt_max_steps))
    else:
        raw = memo.predict(model, x, inference.predict)
    out, i = [], 0
    for (ds, w), n in zip(parts, sizes):
        out.append(raw[i:i + n] * _scale(ds, w)[:, None])
        i += n
    return out if hrm_only else _blend_parts(model, parts, out)


def blend_for(model, dss, hrm_va: list[np.ndarray] | None = None) -> dict | None:
    """The linear partner (``finhrm_cli.forecast.linear``): fit on the training windows' last day,
    the HRM's weight chosen on validation; test rows are never read.  ``hrm_va``: the HRM's
    validation forecasts (``_predict_parts(model, _parts(dss, "val"), hrm_only=True)``) when
    the caller has them already."""
    from finhrm_cli.forecast import linear

    tr = [(ds, w) for ds, w in _parts(dss, "train") if len(w)]
    va_all = _parts(dss, "val")
    if hrm_va is None:
        hrm_va = _predict_parts(model, va_all, hrm_only=True)
    keep = [i for i, (_, w) in enumerate(va_all) if len(w)]
    if not tr or not keep:
        return None
    va = [va_all[i] for i in keep]
    scales = [_scale(ds, w) for ds, w in va]
    xy = _xy(tr)
    return linear.fit_blend(xy["x"][:, -1, :], xy["y"], [hrm_va[i] / s[:, None] for i, s in zip(keep, scales)],
                            [w.x[:, -1, :] for _, w in va], [w for _, w in va], scales)


HRM_ALONE = "HRM alone"  # the column evaluate adds beside a blended run's forecast


def _blend_parts(model, parts, hrm_preds: list[np.ndarray]) -> list[np.ndarray]:
    """The run's forecasts from the HRM's (per part, log ratios): blended with the linear
    partner when the run has one (``finhrm_cli.forecast.linear``), else the HRM's unchanged."""
    from finhrm_cli.forecast import linear

    blend = getattr(model, "_finhrm_blend", None)
    if not blend:
        return hrm_preds
    out = []
    for p, (ds, w) in zip(hrm_preds, parts):
        s = _scale(ds, w)[:, None]
        out.append(linear.combine(blend, p / s, w.x[:, -1, :]) * s)
    return out


def _known(w, pred):
    keep = np.isfinite(w.next_high) & np.isfinite(w.next_low)
    if keep.all():
        return w, pred
    idx = np.nonzero(keep)[0]
    return w.subset(idx), pred[idx]


INTERVAL_METHODS = ("adaptive", "split")


def _cutoff_for(cfg: dict, name: str):
    """Last validation date of the series ``name`` (or of the latest series when unknown)."""
    series = cfg.get("series") or [{"name": (cfg.get("source") or {}).get("name"), "splits": cfg.get("splits")}]
    dates = {s["name"]: ((s.get("splits") or {}).get("val") or {}).get("last_date") for s in series}
    d = dates.get(name) or max((v for v in dates.values() if v), default=None)
    return np.datetime64(d) if d else None


def interval_arrays(ds, w, pred_log, conformal, coverage, method: str = "adaptive", cutoff=None):
    """Price intervals for the windows ``w`` (in time order), or None without residuals.

    ``split``: the static split-conformal interval of the validation residuals.
    ``adaptive``: adaptive conformal inference (``baselines.adaptive_intervals``): the
    miscoverage level starts at ``1 - coverage`` and learns from the outcomes of rows dated
    after ``cutoff`` (the run's last validation day; None: every row), each known only
    ``horizon`` sessions after its forecast.  Rows whose outcome is unknown never update it.
    """
    if not conformal:
        return None
    if method not in INTERVAL_METHODS:
        raise ValueError(f"unknown interval method {method!r}")
    s = _scale(ds, w)
    if method == "split":
        return baselines.intervals(pred_log, w.close, conformal, coverage, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(np.stack([w.next_high, w.next_low], axis=1) / np.asarray(w.close, np.float64)[:, None])
    update = np.ones(len(w), bool) if cutoff is None else (w.dates > np.datetime64(cutoff, "D"))
    iv, _ = baselines.adaptive_intervals(pred_log, y, w.close, conformal, coverage, s, end=w.end,
                                         horizon=ds.fcfg.horizon, update=update)
    return iv


def _arrays(ds, w, pred_log, conformal, coverage, method="adaptive", cutoff=None) -> dict:
    """Forecasts, actuals and baselines of one part in price units (known targets only)."""
    iv = interval_arrays(ds, w, pred_log, conformal, coverage, method, cutoff)  # in time order, all rows
    keep = np.isfinite(w.next_high) & np.isfinite(w.next_low)
    if iv is not None:
        iv = {k: v[keep] for k, v in iv.items()}
    w, pred_log = _known(w, pred_log)
    ph, pl = to_prices(pred_log, w.close)
    f = ds.frame
    rh, rl = baselines.recent_range(f["high"].to_numpy(), f["low"].to_numpy(), f["close"].to_numpy(),
                                    w.end, ds.fcfg.horizon)
    return {"w": w, "ph": ph, "pl": pl, "iv": iv, "rh": rh, "rl": rl, "h": ds.fcfg.horizon}


def _results(a: dict) -> dict:
    """Metrics of the model and the baselines; each baseline also gets the Diebold-Mariano
    test of equal MAE against the model on the same rows (``dm_stat`` < 0: the model's
    errors are smaller; ``dm_p``: two-sided p-value).  ``a["extra"]``: more forecasts to
    show beside the model (e.g. the HRM alone), tested the same way."""
    w = a["w"]
    extra = a.get("extra") or {}
    res = {"finhrm": baselines.metrics(a["ph"], a["pl"], w.next_high, w.next_low, w.close, a["iv"])}
    for name, (eh, el) in extra.items():
        res[name] = baselines.metrics(eh, el, w.next_high, w.next_low, w.close)
    res["persistence"] = baselines.metrics(w.high, w.low, w.next_high, w.next_low, w.close)
    res["recent range"] = baselines.metrics(a["rh"], a["rl"], w.next_high, w.next_low, w.close)
    actual = np.stack([w.next_high, w.next_low], axis=1)
    e_model = np.stack([a["ph"], a["pl"]], axis=1) - actual
    others = [*extra.items(), ("persistence", (w.high, w.low)), ("recent range", (a["rh"], a["rl"]))]
    for name, (bh, bl) in others:
        dm = baselines.diebold_mariano(e_model, np.stack([bh, bl], axis=1) - actual, a["h"])
        res[name]["dm_stat"], res[name]["dm_p"] = dm["stat"], dm["p"]
    return baselines.with_skill(res)


def _summary_of(w, res, coverage, conformal, method) -> dict:
    return {
        "rows": int(len(w)),
        "first_date": _iso(w.dates.min()) if len(w) else None,
        "last_date": _iso(w.dates.max()) if len(w) else None,
        "coverage_target": coverage if conformal else None,
        "intervals": method if conformal else None,
        "results": res,
    }


def score_parts(parts, preds, conformal: dict | None, coverage: float, intervals: str = "adaptive",
                cutoffs: list | None = None, extra: dict[str, list[np.ndarray]] | None = None) -> dict:
    """Model against the baselines, pooled over all parts, and per series when there are several.

    ``intervals``: "adaptive" or "split" (see ``interval_arrays``); ``cutoffs``: per part, the
    day after which outcomes may adapt the intervals (None: every scored row); ``extra``:
    name -> per-part forecasts (log ratios) scored beside the model, e.g. the HRM alone.
    """
    from finhrm_cli import data

    cutoffs = cutoffs or [None] * len(parts)
    arrays = [_arrays(ds, w, p, conformal, coverage, intervals, c) for (ds, w), p, c in zip(parts, preds, cutoffs)]
    for i, ((_, w), a) in enumerate(zip(parts, arrays)):
        a["extra"] = {name: to_prices(_known(w, ps[i])[1], a["w"].close) for name, ps in (extra or {}).items()}
    pooled = {
        "w": data.concat_windows([a["w"] for a in arrays]),
        **{k: np.concatenate([a[k] for a in arrays]) for k in ("ph", "pl", "rh", "rl")},
        "iv": {k: np.concatenate([a["iv"][k] for a in arrays]) for k in arrays[0]["iv"]} if conformal else None,
        "h": max(a["h"] for a in arrays),
        "extra": {name: tuple(np.concatenate([a["extra"][name][j] for a in arrays]) for j in (0, 1))
                  for name in (extra or {})},
    }
    out = _summary_of(pooled["w"], _results(pooled), coverage, conformal, intervals)
    if len(parts) > 1:
        out["series"] = {
            ds.source.name: _summary_of(a["w"], _results(a), coverage, conformal, intervals)
            for (ds, _), a in zip(parts, arrays)
        }
    return out


# ------------------------------------------------------------------ loading a run and data
def _load(run_ref: str | None):
    """The run (the latest finished one without ``run_ref``), its model and config; a run
    named explicitly that is still training or unfinished loads with a one-line warning."""
    run_dir = store.resolve_run(run_ref)
    model, cfg = store.load_run(run_dir, required=cfgmod.RUN_KEYS)
    status = store.run_status(run_dir)
    if status != store.FINISHED:
        from finhrm_cli import ui

        what = ("is still training" if status == store.TRAINING else
                f"is unfinished (finish it with `finhrm train --resume {run_dir}`)")
        ui.warn(f"{run_dir}: this run {what}; it uses its best weights so far"
                + ("" if cfg.get("conformal") else " and has no prediction intervals yet") + ".")
    return run_dir, model, cfg


def _dataset_for_run(cfg: dict, path: Path | str, date_col=None, col_map=None):
    """Features of ``path`` built with the run's settings and its stored normalizer."""
    from finhrm_cli import data

    fcfg = cfgmod.from_dict(FeatureConfig, cfg["features"])
    ds = data.prepare(path, fcfg, date_col=date_col, col_map=col_map,
                      normalizer=data.Normalizer.from_dict(cfg["normalizer"]), min_windows=0)
    if list(ds.feature_names) != list(cfg["feature_names"]):
        raise DataError(
            f"{path}: gives features {ds.feature_names}, but the model was trained on "
            f"{cfg['feature_names']}; use a file with the same columns."
        )
    return ds


def _datasets_for_run(cfg: dict, paths, date_col=None, col_map=None) -> list:
    from finhrm_cli import data

    dss = [_dataset_for_run(cfg, p, date_col, col_map) for p in data.expand_inputs(paths)]
    warn_sources(dss)
    return dss


def warn_sources(dss) -> None:
    """What reading a user's file noticed (rows sorted, long gaps, likely unadjusted splits,
    duplicate headers): one line each on stderr, for every command that reads one."""
    from finhrm_cli import ui

    for ds in dss:
        for w in ds.source.warnings:
            ui.warn(f"{ds.source.path}: {w}")


def run_datasets(run_dir: Path, cfg: dict) -> list:
    """The series a run was trained on, from its own prepared copies."""
    base = Path(run_dir) / "data"
    if (base / "meta.json").exists():
        return [_dataset_for_run(cfg, base)]
    names = [s["name"] for s in cfg.get("series") or []]
    # config.json checked every name (plain folder names); a symlink could still lead out
    folders = [base / n for n in names]
    for n, folder in zip(names, folders):
        try:
            inside = folder.resolve().is_relative_to(base.resolve())
        except (OSError, RuntimeError):
            inside = False
        if not inside:
            raise RunError(f"{folder}: the series {n!r} lies outside the run's data folder {base}; "
                           "the run is damaged or was edited by hand, train it again.")
    if not names or not all((f / "meta.json").exists() for f in folders):
        raise RunError(f"{run_dir}: the run's data folder is missing or incomplete; train the run again.")
    dss = [_dataset_for_run(cfg, f) for f in folders]
    for ds, n in zip(dss, names):
        ds.source = __import__("dataclasses").replace(ds.source, name=n)
    return dss
