"""Walk-forward folds: the expanding-window retraining of ``evaluate --walk-forward``, and
the objective ``finhrm tune --objective folds`` takes from it.

Each series' rows are cut into K+1 equal blocks.  Fold i trains on blocks 1..i (their last
15% validate: early stopping, the linear partner's weight and the conformal residuals) and
scores block i+1, so every scored row lies after everything its model saw.  The normaliser is
refit on each fold's training rows.
"""

from __future__ import annotations

import dataclasses

from finhrm_cli.errors import DataError
from finhrm_cli.forecast.forecaster import Forecaster
from finhrm_cli.forecast.parts import of, stack
from finhrm_cli.train.events import Callback, FoldStarted


def check_blocks(fulls, fcfg, k: int) -> None:
    """Every series has rows enough for ``k`` folds, or one line saying so."""
    for full in fulls:
        block = full.frame.height // (k + 1)
        if block < 2 * (fcfg.seq_len + fcfg.horizon) + 2:
            raise DataError(
                f"{full.source.name}: {full.frame.height} usable rows are too few for {k} walk-forward folds "
                f"({block} rows a block); use fewer folds."
            )


def fold_datasets(fulls, fcfg, i: int, k: int) -> tuple[list, int, int]:
    """Fold ``i`` of ``k``: per series the first i+1 blocks, split into training, validation
    (the last 15% of the first i blocks) and the scored block; -> (datasets, training rows,
    validation rows)."""
    from finhrm_cli import data

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
    return dss, fit_total, val_total


def fit_fold(dss, mcfg, tcfg, i: int, k: int, callback: Callback | None) -> tuple[Forecaster, list]:
    """Train fold ``i``'s model on its datasets and finish it as training does; -> (its
    Forecaster, the parts of its scored block that hold windows)."""
    from finhrm_cli.train import loop, step

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
    fc = Forecaster(model, act=tcfg.act_inference == "halted")
    fc.finish(dss, blend=tcfg.blend, calibrate_halting=False)
    return fc, [(d, w) for d, w in te if len(w)]


def objective(paths, settings: dict, k: int, date_col=None, col_map=None, callback: Callback | None = None,
              after_fold=None) -> dict:
    """``finhrm tune --objective folds``: the mean over ``k`` walk-forward folds of the
    forecast's skill (MAE / persistence's MAE on the fold's scored block; several series: the
    mean of their skills), all inside the training and validation rows of the split a default
    ``finhrm train`` makes: each series is cut at its first test row before any fold is made,
    so no test row is read.  ``after_fold(i, mean so far)`` is called after each fold (it may
    raise to stop, as pruning does).  -> {"value", "folds": per-fold skills}."""
    import numpy as np

    from finhrm_cli import data
    from finhrm_cli.config import settings_to_configs
    from finhrm_cli.service.training import fit_model_config

    fcfg, mcfg, tcfg = settings_to_configs(settings)
    dss = data.prepare_many(paths, fcfg, date_col=date_col, col_map=col_map)
    fulls = [ds.head(ds.splits["test"]["start"], fcfg) for ds in dss]  # the test rows end here
    fit_model_config(mcfg, fcfg, dss)
    check_blocks(fulls, fcfg, k)
    skills: list[float] = []
    for i in range(1, k + 1):
        fold, _, _ = fold_datasets(fulls, fcfg, i, k)
        fc, te = fit_fold(fold, mcfg, tcfg, i, k, callback)
        res = fc.score(te, 0.8, "split")["results"]["finhrm"]
        skills.append(float(res["skill_mean"] if len(dss) > 1 else res["skill"]))
        if after_fold is not None:
            after_fold(i, float(np.mean(skills)))
    return {"value": float(np.mean(skills)), "folds": skills}
