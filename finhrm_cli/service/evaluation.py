"""``finhrm evaluate``: score a run against the baselines on a split or new data,
with walk-forward retraining (``--walk-forward``) and a PNG chart (``--plot``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finhrm_cli.errors import DataError, UsageError
from finhrm_cli.forecast import baselines
from finhrm_cli.forecast.forecaster import Forecaster
from finhrm_cli.forecast.parts import iso, of, stack
from finhrm_cli.forecast.scoring import interval_arrays, score_parts, to_prices
from finhrm_cli.run.choose import open_for_data, open_run
from finhrm_cli.run.data import datasets_for_run, run_datasets
from finhrm_cli.train.events import Callback, FoldStarted


def evaluate(run_ref: str | None, data_path=None, split: str = "test", coverage: float = 0.8,
             act: bool = False, walk_forward: int | None = None, plot: Path | None = None,
             date_col=None, col_map=None, callback: Callback | None = None,
             intervals: str = "adaptive", how: str = "--model") -> dict:
    paths = (data_path if isinstance(data_path, (list, tuple)) else [data_path]) if data_path else []
    if paths and not walk_forward:
        files, run_dir, fc, rc, choice = open_for_data(run_ref, paths, how=how)
    else:
        run_dir, fc, rc, choice = open_run(run_ref, how=how)
    chosen = {"run_name": choice.name, "run_choice": choice.reason}
    notes: list[str] = []
    if walk_forward:
        return {**_walk_forward(run_dir, rc, walk_forward, coverage, callback, intervals), **chosen}
    if paths:
        parts = []
        for ds in datasets_for_run(rc, files, date_col, col_map):
            w = ds.windows("all")
            cutoff = rc.cutoff(ds.source.name)
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
        where = ", ".join(str(p) for p in paths)
    else:
        parts = []
        for ds in run_datasets(run_dir, rc):
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
    if not parts:
        raise DataError(f"{where}: no rows to evaluate (none with a known next session after the training period).")
    segments: dict = {}
    hrm = fc.hrm(parts, act=act, segments=segments)
    preds = fc.combine(parts, hrm)
    cutoffs = [rc.cutoff(ds.source.name) for ds, _ in parts]
    scored = score_parts(parts, preds, fc.conformal, coverage, intervals, cutoffs, fc.extra(hrm))
    result = {"run": str(run_dir), **chosen, "evaluated": where, "split": None if data_path else split, "act": act,
              "notes": notes, **scored}
    if act:  # segments per row under --act, over every row predicted
        result["act_segments"] = segments
    if plot is not None:
        ds, w = parts[0]
        iv = interval_arrays(ds, w, preds[0], fc.conformal, coverage, intervals, cutoffs[0])
        result["plot"] = str(_plot(plot, w, preds[0], iv, coverage))
        if len(parts) > 1:
            notes.append(f"the plot shows the first series, {ds.source.name}.")
    return result


def _plot(path: Path, w, pred_log, iv, coverage) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError(
            "--plot needs matplotlib, which is not installed; install it with `pip install 'finhrm[plot]'` "
            "(or `pip install matplotlib`)."
        ) from exc
    import io

    from finhrm_cli.fsutil import atomic_write_bytes

    ph, pl = to_prices(pred_log, w.close)
    dates = w.dates.astype("datetime64[D]")
    nd = dates + np.timedelta64(1, "D")  # forecast is for the next session; plotted one day on
    fig, ax = plt.subplots(figsize=(12, 5), dpi=110)
    ax.plot(nd, w.next_high, color="tab:green", lw=0.9, label="actual high")
    ax.plot(nd, w.next_low, color="tab:red", lw=0.9, label="actual low")
    ax.plot(nd, ph, color="darkgreen", lw=0.9, ls="--", label="predicted high")
    ax.plot(nd, pl, color="darkred", lw=0.9, ls="--", label="predicted low")
    if iv is not None:
        ax.fill_between(nd, iv["high_lo"], iv["high_hi"], color="tab:green", alpha=0.15, label=f"{coverage:.0%} interval (high)")
        ax.fill_between(nd, iv["low_lo"], iv["low_hi"], color="tab:red", alpha=0.15, label=f"{coverage:.0%} interval (low)")
    ax.set_title("finhrm: next-session high and low, predicted against actual")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _walk_forward(run_dir: Path, rc, k: int, coverage: float, callback: Callback | None,
                  intervals: str = "adaptive") -> dict:
    """K expanding-window folds over the run's data, each retrained with the run's settings.

    Each series' usable rows are cut into K+1 equal blocks.  Fold i trains on blocks 1..i
    (their last 15% validate: early stopping and the conformal residuals) and tests on block
    i+1, so every test row lies after everything its model saw.  The normaliser is refit on
    each fold's training rows.
    """
    import dataclasses

    from finhrm_cli import data
    from finhrm_cli.train import loop, step

    fcfg, mcfg, tcfg = rc.features, rc.model, rc.train
    fulls = run_datasets(run_dir, rc)
    for full in fulls:
        block = full.frame.height // (k + 1)
        if block < 2 * (fcfg.seq_len + fcfg.horizon) + 2:
            raise DataError(
                f"{full.source.name}: {full.frame.height} usable rows are too few for {k} walk-forward folds "
                f"({block} rows a block); use fewer folds."
            )
    folds = []
    for i in range(1, k + 1):
        dss, fit_total, val_total = [], 0, 0
        for full in fulls:
            n = full.frame.height
            block = n // (k + 1)
            n_i = block * (i + 1) if i < k else n
            fit_rows = block * i
            val_rows = max(int(round(0.15 * fit_rows)), fcfg.seq_len + fcfg.horizon + 1)
            fcfg_i = dataclasses.replace(fcfg, train_frac=(fit_rows - val_rows) / n_i, val_frac=val_rows / n_i)
            dss.append(full.head(n_i, fcfg_i))
            fit_total += fit_rows - val_rows
            val_total += val_rows
        if len(dss) > 1:  # one normaliser pooled over the fold's training rows, as in training
            data.pool_normalizer(dss)
        tr, va, te = of(dss, "train"), of(dss, "val"), of(dss, "test")
        n_tr = sum(len(w) for _, w in tr)
        if n_tr < tcfg.batch_size * tcfg.grad_accum or not any(len(w) for _, w in va) or not any(len(w) for _, w in te):
            raise DataError(f"walk-forward fold {i}: too few windows ({n_tr} to train on); use fewer folds.")
        model = step.build_model(dataclasses.replace(mcfg), tcfg.seed)
        if callback:
            callback(FoldStarted(fold=i, folds=k))
        loop.train(mcfg, tcfg, stack(tr), stack(va, with_prices=True), callback=callback, model=model)
        # as training does (Forecaster.finish): the linear partner fit on the fold's training
        # windows, its weight on the fold's validation, intervals from the blended validation
        # forecasts; the Q head's calibration map is not needed to score a fold
        fc = Forecaster(model)
        fc.finish(dss, blend=tcfg.blend, calibrate_halting=False)
        scored = fc.score([(d, w) for d, w in te if len(w)], coverage, intervals)
        folds.append({"fold": i, "train_rows": fit_total, "val_rows": val_total, **scored})
    mean: dict[str, dict] = {}
    for name in [n for n in folds[0]["results"] if all(n in f["results"] for f in folds)]:
        keys = folds[0]["results"][name].keys()
        # p-values do not average; each fold's DM test is in its own results
        mean[name] = {key: float(np.mean([f["results"][name][key] for f in folds]))
                      for key in keys if key != "n" and not key.startswith("dm_")}
        mean[name]["n"] = int(sum(f["results"][name]["n"] for f in folds))
    return {"run": str(run_dir), "walk_forward": k, "coverage_target": coverage, "intervals": intervals, "folds": folds,
            "mean": baselines.with_skill(mean)}
