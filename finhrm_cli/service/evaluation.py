"""``finhrm evaluate``: score a run against the baselines on a split or new data,
with walk-forward retraining (``--walk-forward``) and a PNG chart (``--plot``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finhrm_cli.errors import DataError, UsageError
from finhrm_cli.forecast import anchor
from finhrm_cli.forecast.parts import iso, of, train_scale
from finhrm_cli.forecast.scoring import interval_arrays, score_parts, to_prices
from finhrm_cli.run.choose import open_for_data, open_run
from finhrm_cli.run.data import datasets_for_run, run_datasets
from finhrm_cli.service.plotting import LAST, PlotSeries, plot_png, pyplot
from finhrm_cli.train.events import Callback


def evaluate(run_ref: str | None, data_path=None, split: str = "test", coverage: float = 0.8,
             act: bool | None = None, walk_forward: int | None = None, plot: Path | None = None,
             date_col=None, col_map=None, callback: Callback | None = None,
             intervals: str = "adaptive", plot_last: int = LAST, with_rows: bool = False,
             ack=()) -> dict:
    """Score ``run_ref`` (see the module); ``with_rows`` adds ``rows``, one dict per scored row
    (for ``--csv``)."""
    if plot is not None:
        pyplot()  # no matplotlib: say so before any work (a walk-forward takes minutes)
    paths = (data_path if isinstance(data_path, (list, tuple)) else [data_path]) if data_path else []
    if paths and not walk_forward:
        files, run_dir, fc, rc, choice = open_for_data(run_ref, paths)
    else:
        run_dir, fc, rc, choice = open_run(run_ref)
    chosen = {"run_name": choice.name, "run_choice": choice.reason}
    notes: list[str] = []
    if walk_forward:
        if rc.is_ensemble():
            raise UsageError(f"{run_dir.name} is an ensemble run: --walk-forward retrains one run's settings; "
                             "evaluate one of its members (its members/ folder) with --walk-forward instead.")
        result, pieces = _walk_forward(run_dir, rc, walk_forward, coverage, callback, intervals, with_rows)
        result.update(chosen)
        if plot is not None and pieces:
            series = result["folds"][0].get("series")
            name = next(iter(series)) if series else rc.series_names()[0]
            result["plot"] = str(plot_png(plot, PlotSeries.join(pieces), name, run_dir.name, coverage, plot_last,
                                          f" (walk-forward: the {walk_forward} folds' test blocks)"))
        return result
    own = run_datasets(run_dir, rc)  # the run's prepared copy: its splits, edges and anchor rows
    if paths:
        parts = _file_parts(rc, files, date_col, col_map, notes, ack)
        where = ", ".join(str(p) for p in paths)
    else:
        parts = []
        for ds in own:
            if split == "all":
                ends = np.concatenate([ds.window_ends(s) for s in ("train", "val", "test")])
                w = ds.windows("all")
                w = w.subset(np.nonzero(np.isin(w.end, ends))[0])
            else:
                w = ds.windows(split)
            parts.append((ds, w))
        names = [ds.source.name for ds, _ in parts]
        where = f"{split} split of {', '.join(names)}"
        if split in ("val", "all"):
            notes.append("the validation split chose the best epoch and calibrated the intervals, so its scores flatter the model.")
    parts = [(ds, w) for ds, w in parts if len(w)]
    if not parts and rc.parent is not None and not paths:
        raise DataError(f"{run_dir.name} is a production run (trained on every row, `train --from`): it holds no "
                        f"{split} rows. Evaluate its parent ({rc.parent.get('root')}), or pass --data a file with "
                        "sessions after its last training row.")
    if not parts:
        raise DataError(f"{where}: no rows to evaluate (none with a known next session after the training period).")
    act = fc.act if act is None else act  # the run's act_inference unless --act/--all-steps
    segments: dict | None = {} if act else None
    hrm = fc.hrm(parts, act=act, segments=segments)
    preds = fc.combine(parts, hrm)
    cutoffs = [rc.cutoff(ds.source) for ds, _ in parts]
    scales = _train_scales(parts, own) if paths else [train_scale(ds) for ds, _ in parts]
    anc = anchor.fit(of(own, "train"), of(own, "val"), coverage)
    scored = score_parts(parts, preds, fc.conformal, coverage, intervals, cutoffs, fc.extra(hrm), scales, anc)
    result = {"run": str(run_dir), **chosen, "evaluated": where, "split": None if data_path else split, "act": act,
              "notes": notes, **scored}
    if act:  # segments per row under --act, over every row predicted
        result["act_segments"] = segments
    if with_rows:
        result["rows"] = scored_rows(parts, preds, fc.conformal, coverage, intervals, cutoffs)
    if plot is not None:
        ds, w = parts[0]
        iv = interval_arrays(ds, w, preds[0], fc.conformal, coverage, intervals, cutoffs[0])
        result["plot"] = str(plot_png(plot, _plot_series(ds, w, preds[0], iv), ds.source.name, run_dir.name,
                                      coverage, plot_last, f" ({where})"))
        if len(parts) > 1:
            notes.append(f"the plot shows the first series, {ds.source.name}.")
    return result


def _train_scales(parts, run_dss) -> list[np.ndarray]:
    """For the series of a user's file, the volatility scale of the run's own training rows of
    that series (``run_dss``: the run's datasets; a series the run was not trained on: of all
    the run's series), never the file's rows (``intervals_quality``)."""
    own = {ds.source.name: train_scale(ds) for ds in run_dss}
    pooled = np.concatenate(list(own.values())) if own else np.zeros(0)
    return [own.get(ds.source.name, pooled) for ds, _ in parts]


def _pooled_thirds(per_fold: list[list[dict]]) -> list[dict]:
    """The folds' coverage per volatility third pooled: rows summed, coverage weighted by them
    (each fold's thirds have its own training rows' edges)."""
    out = []
    for k, thirds in enumerate(zip(*per_fold), start=1):
        n = sum(t["rows"] for t in thirds)
        cov = sum(t["coverage"] * t["rows"] for t in thirds if t["rows"]) / n if n else None
        out.append({"third": k, "rows": n, "coverage": cov})
    return out


def _file_parts(rc, files, date_col, col_map, notes: list[str], ack=()) -> list:
    """Each file's windows after the run's validation period with a known next session; a
    note for the rows left out."""
    parts = []
    for ds in datasets_for_run(rc, files, date_col, col_map, ack):
        w = ds.windows("all")
        cutoff = rc.cutoff(ds.source)
        if cutoff is not None:
            keep = np.nonzero(w.dates > cutoff)[0]
            left_out = len(w) - len(keep)
            if left_out:
                notes.append(
                    f"{ds.source.name}: {left_out} rows up to {iso(cutoff)} lie inside the run's training and "
                    "validation period and were left out."
                )
            w = w.subset(keep)
        w = w.subset(np.nonzero(np.isfinite(w.next_high) & np.isfinite(w.next_low))[0])
        parts.append((ds, w))
    return parts


ROW_FIELDS = ["ticker", "fold", "date", "close", "next_high", "next_low", "pred_high", "pred_low", "pred_high_lo",
              "pred_high_hi", "pred_low_lo", "pred_low_hi", "persistence_high", "persistence_low"]


def scored_rows(parts, preds, conformal, coverage, intervals, cutoffs=None, fold: int | None = None) -> list[dict]:
    """Every scored row as a dict of ``ROW_FIELDS`` (``date``: the last observed day; ``next_*``:
    the session forecast; ``persistence_*``: that day's high and low, the naive forecast); the
    ticker with several series, the fold in a walk-forward."""
    out = []
    for (ds, w), pred, cutoff in zip(parts, preds, cutoffs or [None] * len(parts)):
        iv = interval_arrays(ds, w, pred, conformal, coverage, intervals, cutoff)
        ph, pl = to_prices(pred, w.close)
        cols = {"date": [iso(d) for d in w.dates], "close": w.close, "next_high": w.next_high, "next_low": w.next_low,
                "pred_high": ph, "pred_low": pl, "persistence_high": w.high, "persistence_low": w.low,
                **({f"pred_{k}": iv[k] for k in ("high_lo", "high_hi", "low_lo", "low_hi")} if iv is not None else {})}
        for i in range(len(w)):
            row = {k: (v[i] if k == "date" else float(v[i])) for k, v in cols.items()}
            row.update(ticker=ds.source.name if len(parts) > 1 else None, fold=fold)
            out.append({k: row.get(k) for k in ROW_FIELDS})
    return out


def _plot_series(ds, w, pred_log, iv) -> PlotSeries:
    """The rows to plot, each at the session it forecasts (``forecast.sessions``): the date of
    the target row, which the scored rows all hold."""
    from finhrm_cli.forecast import sessions

    ph, pl = to_prices(pred_log, w.close)
    frame_dates = ds.frame["date"].to_numpy().astype("datetime64[D]")
    targets = sessions.target_dates(frame_dates, w.end, ds.fcfg.horizon, sessions.trading_days(frame_dates))
    return PlotSeries(targets, w.high, w.low, w.next_high, w.next_low, ph, pl, iv)


def _walk_forward(run_dir: Path, rc, k: int, coverage: float, callback: Callback | None,
                  intervals: str = "adaptive", with_rows: bool = False) -> tuple[dict, list[PlotSeries]]:
    """K expanding-window folds over the run's data, each retrained with the run's settings.

    The folds are ``service.folds``'s: fold i trains on blocks 1..i of K+1 and tests on block
    i+1.  Returns the result and, for ``--plot``, the first series' test block of each fold.
    """
    from finhrm_cli.service.folds import check_blocks, fit_fold, fold_datasets

    fcfg, mcfg, tcfg = rc.features, rc.model, rc.train
    fulls = run_datasets(run_dir, rc)
    check_blocks(fulls, fcfg, k)
    folds, pieces, rows = [], [], []
    for i in range(1, k + 1):
        dss, fit_total, val_total = fold_datasets(fulls, fcfg, i, k)
        fc, te = fit_fold(dss, mcfg, tcfg, i, k, callback)
        hrm = fc.hrm(te)
        scored = fc.score(te, coverage, intervals, hrm_preds=hrm, train_scales=[train_scale(d) for d, _ in te],
                          anchor_model=anchor.fit(of(dss, "train"), of(dss, "val"), coverage))
        folds.append({"fold": i, "train_rows": fit_total, "val_rows": val_total, **scored})
        if with_rows:
            rows += scored_rows(te, fc.combine(te, hrm), fc.conformal, coverage, intervals, fold=i)
        if te and te[0][0].source.name == fulls[0].source.name:  # the plot follows the first series
            ds, w = te[0]
            pred = fc.combine(te[:1], hrm[:1])[0]
            pieces.append(_plot_series(ds, w, pred, interval_arrays(ds, w, pred, fc.conformal, coverage, intervals)))
    mean: dict[str, dict] = {}
    for name in [n for n in folds[0]["results"] if all(n in f["results"] for f in folds)]:
        keys = folds[0]["results"][name].keys()
        # only scale-free figures average: a mean of MAEs over folds priced at $18 and $210 says
        # little (each fold's MAE is in its own results), and p-values do not average at all;
        # the skill is the mean of the folds' skills
        mean[name] = {key: float(np.mean([f["results"][name][key] for f in folds]))
                      for key in keys if key != "n" and not key.startswith(("dm_", "mae", "rmse", "winkler", "pinball"))
                      and not isinstance(folds[0]["results"][name][key], list)}
        mean[name]["n"] = int(sum(f["results"][name]["n"] for f in folds))
        if all("coverage_by_volatility" in f["results"][name] for f in folds):
            mean[name]["coverage_by_volatility"] = _pooled_thirds([f["results"][name]["coverage_by_volatility"]
                                                                   for f in folds])
    return {"run": str(run_dir), "walk_forward": k, "coverage_target": coverage, "intervals": intervals, "folds": folds,
            "mean": mean, **({"rows": rows} if with_rows else {})}, pieces
