"""What each command does, as plain functions that return JSON-able dicts.

``cli`` parses options and calls these; ``ui`` renders what they return.  Keeping the
work here makes every command usable from Python and testable without a terminal.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from finhrm_cli import __version__, baselines, checkpoint
from finhrm_cli import config as cfgmod
from finhrm_cli.config import FeatureConfig, ModelConfig, TrainConfig
from finhrm_cli.errors import DataError, RunError, UsageError

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
    return close * np.exp(p[:, 0]), close * np.exp(p[:, 1])


# ------------------------------------------------------------------ prepare
def prepare(path: Path, fcfg: FeatureConfig, out: Path | None = None, date_col=None, col_map=None) -> dict:
    from finhrm_cli import data

    ds = data.prepare(path, fcfg, date_col=date_col, col_map=col_map)
    target = Path(out) if out else Path.cwd() / f"{ds.source.name}.prepared"
    data.save_prepared(ds, target)
    summary = ds.summary()
    summary["output"] = str(target)
    return summary


# ------------------------------------------------------------------ settings
def _settings_to_configs(settings: dict) -> tuple[FeatureConfig, ModelConfig, TrainConfig]:
    try:
        fcfg = FeatureConfig(**settings.get("features", {}))
        mcfg = ModelConfig(**settings.get("model", {}))
        tcfg = TrainConfig(**settings.get("train", {}))
    except TypeError as exc:  # an unknown key slipped through
        raise UsageError(f"unknown setting: {exc}") from exc
    for c in (fcfg, mcfg, tcfg):
        c.validate()
    return fcfg, mcfg, tcfg


def _scale(ds, w) -> np.ndarray:
    """Per-window target scale: the volatility scale when the run scales targets, else 1."""
    return np.asarray(w.scale, np.float64) if ds.fcfg.scale_targets else np.ones(len(w))


def _windows_dict(ds, w, with_prices: bool = False) -> dict:
    s = _scale(ds, w)
    d = {"x": w.x, "y": (w.y / s[:, None]).astype(np.float32)}
    if with_prices:
        d.update(close=w.close, next_high=w.next_high, next_low=w.next_low, scale=s)
    return d


def predict_log(model, ds, w, act: bool = False) -> np.ndarray:
    """The model's forecast for windows ``w`` as log ratios to the close: (n, 2) [high, low]."""
    from finhrm_cli import engine

    return engine.predict(model, w.x, act=act) * _scale(ds, w)[:, None]


# ------------------------------------------------------------------ train
def train(
    paths: list[Path],
    settings: dict,
    out: Path | None = None,
    resume: str | None = None,
    date_col=None,
    col_map=None,
    callback: Callback | None = None,
) -> dict:
    from finhrm_cli import data, engine

    t0 = time.perf_counter()
    if resume is not None:
        run_dir = checkpoint.resolve_run(resume)
        cfg = checkpoint.read_config(run_dir)
        fcfg = cfgmod.from_dict(FeatureConfig, cfg["features"])
        mcfg = cfgmod.from_dict(ModelConfig, cfg["model"])
        tcfg = cfgmod.from_dict(TrainConfig, cfg["train"])
        # the run keeps its own prepared copy of the data, so resume needs no source file
        ds = data.prepare(run_dir / "data", fcfg, normalizer=data.Normalizer.from_dict(cfg["normalizer"]))
        state = checkpoint.load_state(run_dir)
        run = checkpoint.RunWriter(run_dir)
    else:
        if len(paths) > 1:
            raise UsageError(
                f"got {len(paths)} data files; training on several series at once is not supported yet, "
                "pass one file."
            )
        fcfg, mcfg, tcfg = _settings_to_configs(settings)
        ds = data.prepare(paths[0], fcfg, date_col=date_col, col_map=col_map)
        state = None
    tr, va = ds.windows("train"), ds.windows("val")
    if len(va) == 0:
        raise DataError(
            f"{ds.source.path}: the validation split has no complete window "
            f"({ds.splits['val'].get('rows', 0)} rows for --seq-len {fcfg.seq_len}); "
            "raise --val-frac or lower --seq-len."
        )
    if len(tr) < tcfg.batch_size:
        raise DataError(
            f"{ds.source.path}: {len(tr)} training windows, fewer than one batch of {tcfg.batch_size}; "
            "lower --batch-size or --seq-len, or use a longer history."
        )
    mcfg.n_features = len(ds.feature_names)
    mcfg.seq_len = fcfg.seq_len
    if state is None:
        run_dir = checkpoint.new_run_dir(ds.source.name, root=out)
        run = checkpoint.RunWriter(run_dir)
        data.save_prepared(ds, run_dir / "data")
        run.save_config(
            {
                "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "versions": _versions(),
                "features": cfgmod.to_dict(fcfg),
                "model": cfgmod.to_dict(mcfg),
                "train": cfgmod.to_dict(tcfg),
                "feature_names": ds.feature_names,
                "normalizer": ds.normalizer.to_dict(),
                "source": ds.source.to_dict(),
                "splits": ds.splits,
                "dropped": ds.dropped,
                "conformal": None,
            }
        )
    try:
        summary = engine.train(
            mcfg, tcfg, _windows_dict(ds, tr), _windows_dict(ds, va, with_prices=True),
            callback=callback, run=run, resume=state,
        )
    except KeyboardInterrupt as exc:
        raise _Interrupted(
            f"training interrupted; progress saved in {run_dir}. "
            f"Resume with: finhrm train --resume {run_dir}"
        ) from exc
    result = finalize_run(run_dir, ds)
    result.update(
        run=str(run_dir),
        name=run_dir.name,
        best_epoch=summary.get("best_epoch"),
        epochs_run=summary.get("epochs_run"),
        stopped=summary.get("stopped"),
        train_samples_per_s=summary.get("train_samples_per_s"),
        seconds=round(time.perf_counter() - t0, 2),
    )
    return result


class _Interrupted(KeyboardInterrupt):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def finalize_run(run_dir: Path, ds) -> dict:
    """Calibrate intervals on validation, score validation and test, write metrics.json."""
    from finhrm_cli import engine

    model, cfg = checkpoint.load_run(run_dir)
    va, te = ds.windows("val"), ds.windows("test")
    pred_va = predict_log(model, ds, va)
    cfg["conformal"] = baselines.conformal_residuals(pred_va, va.y, _scale(ds, va))
    checkpoint.RunWriter(run_dir).save_config(cfg)
    metrics = {}
    for name, w, pred in (("val", va, pred_va), ("test", te, predict_log(model, ds, te) if len(te) else None)):
        if pred is None or len(w) == 0:
            continue
        metrics[name] = score(ds, w, pred, cfg["conformal"], 0.8)
    checkpoint.RunWriter(run_dir).save_metrics(metrics)
    return {"metrics": metrics}


def score(ds, w, pred_log: np.ndarray, conformal: dict | None, coverage: float) -> dict:
    """Model against the baselines on windows ``w`` (rows with a known target only)."""
    known = np.isfinite(w.next_high) & np.isfinite(w.next_low)
    if not known.all():
        w = w.subset(np.nonzero(known)[0])
        pred_log = pred_log[known]
    ph, pl = to_prices(pred_log, w.close)
    iv = baselines.intervals(pred_log, w.close, conformal, coverage, _scale(ds, w)) if conformal else None
    frame = ds.frame
    res = baselines.compare(
        ph, pl, w,
        frame["high"].to_numpy(), frame["low"].to_numpy(), frame["close"].to_numpy(),
        ds.fcfg.horizon, interval=iv,
    )
    return {
        "rows": int(len(w)),
        "first_date": _iso(w.dates[0]) if len(w) else None,
        "last_date": _iso(w.dates[-1]) if len(w) else None,
        "coverage_target": coverage if conformal else None,
        "results": res,
    }


# ------------------------------------------------------------------ loading a run and data
def _load(run_ref: str | None):
    run_dir = checkpoint.resolve_run(run_ref)
    model, cfg = checkpoint.load_run(run_dir)
    return run_dir, model, cfg


def _dataset_for_run(cfg: dict, path: Path | str, date_col=None, col_map=None):
    """Features of ``path`` built with the run's settings and its stored normalizer."""
    from finhrm_cli import data

    fcfg = cfgmod.from_dict(FeatureConfig, cfg["features"])
    ds = data.prepare(path, fcfg, date_col=date_col, col_map=col_map,
                      normalizer=data.Normalizer.from_dict(cfg["normalizer"]), min_windows=1)
    if list(ds.feature_names) != list(cfg["feature_names"]):
        raise DataError(
            f"{path}: gives features {ds.feature_names}, but the model was trained on "
            f"{cfg['feature_names']}; use a file with the same columns."
        )
    return ds


# ------------------------------------------------------------------ predict
def predict(data_path: Path, run_ref: str | None, all_rows: bool = False, coverage: float = 0.8,
            act: bool = False, date_col=None, col_map=None) -> dict:
    from finhrm_cli import engine

    run_dir, model, cfg = _load(run_ref)
    ds = _dataset_for_run(cfg, data_path, date_col, col_map)
    w = ds.windows("all")
    if len(w) == 0:
        need = cfg["features"]["seq_len"]
        raise DataError(f"{data_path}: too short to predict; it needs at least {need} usable rows after indicator warm-up.")
    if not all_rows:
        w = w.subset(np.array([len(w) - 1]))
    pred = predict_log(model, ds, w, act=act)
    ph, pl = to_prices(pred, w.close)
    conformal = cfg.get("conformal")
    iv = baselines.intervals(pred, w.close, conformal, coverage, _scale(ds, w)) if conformal else None
    rows = []
    for i in range(len(w)):
        r = {
            "date": _iso(w.dates[i]),
            "close": float(w.close[i]),
            "pred_high": float(ph[i]),
            "pred_low": float(pl[i]),
            "pred_high_lo": float(iv["high_lo"][i]) if iv else None,
            "pred_high_hi": float(iv["high_hi"][i]) if iv else None,
            "pred_low_lo": float(iv["low_lo"][i]) if iv else None,
            "pred_low_hi": float(iv["low_hi"][i]) if iv else None,
        }
        rows.append(r)
    return {
        "run": str(run_dir),
        "data": str(data_path),
        "horizon": cfg["features"]["horizon"],
        "coverage": coverage,
        "rows": rows,
    }


# ------------------------------------------------------------------ evaluate
def evaluate(run_ref: str | None, data_path: Path | None = None, split: str = "test", coverage: float = 0.8,
             act: bool = False, walk_forward: int | None = None, plot: Path | None = None,
             date_col=None, col_map=None, callback: Callback | None = None) -> dict:
    run_dir, model, cfg = _load(run_ref)
    notes: list[str] = []
    if walk_forward:
        return _walk_forward(run_dir, cfg, walk_forward, coverage, callback)
    if data_path is not None:
        ds = _dataset_for_run(cfg, data_path, date_col, col_map)
        w = ds.windows("all")
        cutoff = np.datetime64(cfg["splits"]["val"]["last_date"]) if cfg["splits"].get("val", {}).get("last_date") else None
        if cutoff is not None:
            keep = np.nonzero(w.dates > cutoff)[0]
            left_out = len(w) - len(keep)
            if left_out:
                notes.append(
                    f"{left_out} rows up to {_iso(cutoff)} lie inside the run's training and validation "
                    "period and were left out."
                )
            w = w.subset(keep)
        known = np.isfinite(w.next_high) & np.isfinite(w.next_low)
        w = w.subset(np.nonzero(known)[0])
        where = str(data_path)
    else:
        from finhrm_cli import data

        ds = _dataset_for_run(cfg, run_dir / "data")
        if split == "all":
            parts = [ds.windows(s) for s in ("train", "val", "test")]
            idx = np.concatenate([p.end for p in parts])
            w = ds.windows("all")
            w = w.subset(np.nonzero(np.isin(w.end, idx))[0])
        else:
            w = ds.windows(split)
        where = f"{split} split of {cfg['source'].get('path', '?')}"
        if split in ("val", "all"):
            notes.append("the validation split chose the best epoch and calibrated the intervals, so its scores flatter the model.")
    if len(w) == 0:
        raise DataError(f"{where}: no rows to evaluate (none with a known next session after the training period).")
    pred = predict_log(model, ds, w, act=act)
    scored = score(ds, w, pred, cfg.get("conformal"), coverage)
    result = {"run": str(run_dir), "evaluated": where, "split": None if data_path else split, "act": act,
              "notes": notes, **scored}
    if plot is not None:
        result["plot"] = str(_plot(plot, w, pred, cfg.get("conformal"), coverage))
    return result


def _plot(path: Path, w, pred_log, conformal, coverage) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError(
            "--plot needs matplotlib, which is not installed; install it with `pip install 'finhrm[plot]'` "
            "(or `pip install matplotlib`)."
        ) from exc
    from finhrm_cli.fsutil import atomic_write_bytes

    import io

    ph, pl = to_prices(pred_log, w.close)
    dates = w.dates.astype("datetime64[D]")
    nd = dates + np.timedelta64(1, "D")  # forecast is for the next session; plotted one day on
    fig, ax = plt.subplots(figsize=(12, 5), dpi=110)
    ax.plot(nd, w.next_high, color="tab:green", lw=0.9, label="actual high")
    ax.plot(nd, w.next_low, color="tab:red", lw=0.9, label="actual low")
    ax.plot(nd, ph, color="darkgreen", lw=0.9, ls="--", label="predicted high")
    ax.plot(nd, pl, color="darkred", lw=0.9, ls="--", label="predicted low")
    if conformal:
        iv = baselines.intervals(pred_log, w.close, conformal, coverage, w.scale if conformal.get("units") == "scale" else None)
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


def _walk_forward(run_dir: Path, cfg: dict, k: int, coverage: float, callback: Callback | None) -> dict:
    """K expanding-window folds over the run's data, each retrained with the run's settings.

    The usable rows are cut into K+1 equal blocks.  Fold i trains on blocks 1..i (its last
    15% validates: early stopping and the conformal residuals) and tests on block i+1, so
    every test row lies after everything its model saw.
    """
    import dataclasses

    from finhrm_cli import engine

    fcfg = cfgmod.from_dict(FeatureConfig, cfg["features"])
    mcfg = cfgmod.from_dict(ModelConfig, cfg["model"])
    tcfg = cfgmod.from_dict(TrainConfig, cfg["train"])
    full = _dataset_for_run(cfg, run_dir / "data")
    n = full.frame.height
    block = n // (k + 1)
    if block < 2 * (fcfg.seq_len + fcfg.horizon) + tcfg.batch_size:
        raise DataError(
            f"{cfg['source'].get('path')}: {n} usable rows are too few for {k} walk-forward folds "
            f"({block} rows a block); use fewer folds."
        )
    folds = []
    for i in range(1, k + 1):
        n_i = block * (i + 1) if i < k else n
        test_rows = n_i - block * i
        fit_rows = n_i - test_rows
        val_rows = max(int(round(0.15 * fit_rows)), fcfg.seq_len + fcfg.horizon + 1)
        fcfg_i = dataclasses.replace(fcfg, train_frac=(fit_rows - val_rows) / n_i, val_frac=val_rows / n_i)
        ds = full.head(n_i, fcfg_i)
        tr, va, te = ds.windows("train"), ds.windows("val"), ds.windows("test")
        if len(tr) < tcfg.batch_size or len(va) == 0 or len(te) == 0:
            raise DataError(f"walk-forward fold {i}: too few windows ({len(tr)} train, {len(va)} val, {len(te)} test); use fewer folds.")
        model = engine.build_model(dataclasses.replace(mcfg), tcfg.seed)
        if callback:
            callback("fold", {"fold": i, "folds": k})
        engine.train(mcfg, tcfg, _windows_dict(ds, tr), _windows_dict(ds, va, with_prices=True),
                     callback=callback, model=model)
        conformal = baselines.conformal_residuals(predict_log(model, ds, va), va.y, _scale(ds, va))
        scored = score(ds, te, predict_log(model, ds, te), conformal, coverage)
        folds.append({"fold": i, "train_rows": fit_rows - val_rows, "val_rows": val_rows, **scored})
    mean: dict[str, dict] = {}
    for name in folds[0]["results"]:
        keys = folds[0]["results"][name].keys()
        mean[name] = {key: float(np.mean([f["results"][name][key] for f in folds])) for key in keys if key != "n"}
        mean[name]["n"] = int(sum(f["results"][name]["n"] for f in folds))
    return {"run": str(run_dir), "walk_forward": k, "coverage_target": coverage, "folds": folds,
            "mean": baselines.with_skill(mean)}


# ------------------------------------------------------------------ inspect
def list_runs() -> dict:
    return {"root": str(cfgmod.runs_dir()), "runs": checkpoint.list_runs()}


def act_stats(model, ds, w) -> dict:
    """Per ACT step: MAE in price units, mean halting probabilities and where the Q head halts."""
    from finhrm_cli import engine

    seg = engine.segment_outputs(model, w.x)
    preds = np.asarray(seg["preds"]) * _scale(ds, w)[None, :, None]
    qh, qc = np.asarray(seg["q_halt"]), np.asarray(seg["q_continue"])
    m = preds.shape[0]
    known = np.isfinite(w.next_high) & np.isfinite(w.next_low)
    steps = []
    for s in range(m):
        ph, pl = to_prices(preds[s], w.close)
        mae = float((np.abs(ph - w.next_high)[known].mean() + np.abs(pl - w.next_low)[known].mean()) / 2)
        steps.append({"step": s + 1, "mae": mae, "q_halt": float(qh[s].mean()), "q_continue": float(qc[s].mean())})
    halts = qh > qc
    halts[-1, :] = True  # the last segment always halts
    halt_step = np.argmax(halts, axis=0)  # first step (0-based) where the Q head says halt
    counts = np.bincount(halt_step, minlength=m)
    for s in range(m):
        steps[s]["halted"] = int(counts[s])
        steps[s]["halted_share"] = float(counts[s] / len(halt_step)) if len(halt_step) else 0.0
    act_pred = preds[halt_step, np.arange(preds.shape[1])]
    ph, pl = to_prices(act_pred, w.close)
    act_mae = float((np.abs(ph - w.next_high)[known].mean() + np.abs(pl - w.next_low)[known].mean()) / 2)
    best = int(np.argmin([s["mae"] for s in steps]))
    return {
        "samples": int(preds.shape[1]),
        "steps": steps,
        "halting_histogram": [int(c) for c in counts],
        "mean_halting_step": float(halt_step.mean() + 1),
        "mae_all_steps": steps[-1]["mae"],
        "mae_act": act_mae,
        "best_step": best + 1,
    }


def inspect(run_ref: str | None, data_path: Path | None = None, date_col=None, col_map=None) -> dict:
    run_dir, model, cfg = _load(run_ref)
    metrics = checkpoint.read_json(run_dir / "metrics.json", default={})
    history = checkpoint.read_history(run_dir)
    if data_path is not None:
        ds = _dataset_for_run(cfg, data_path, date_col, col_map)
        w = ds.windows("all")
        w = w.subset(np.nonzero(np.isfinite(w.next_high) & np.isfinite(w.next_low))[0])
        act_on = str(data_path)
    else:
        ds = _dataset_for_run(cfg, run_dir / "data")
        w = ds.windows("val")
        act_on = "validation split"
    if len(w) == 0:
        raise DataError(f"{act_on}: no rows with a known next session to compute ACT stats on.")
    evals = [h for h in history if h.get("val_mae") is not None]
    best = min(evals, key=lambda h: h["val_mae"]) if evals else {}
    last = history[-1] if history else {}
    return {
        "run": str(run_dir),
        "name": run_dir.name,
        "created": cfg.get("created"),
        "versions": cfg.get("versions"),
        "source": cfg.get("source"),
        "splits": cfg.get("splits"),
        "feature_names": cfg.get("feature_names"),
        "features": cfg.get("features"),
        "model": cfg.get("model"),
        "train": cfg.get("train"),
        "parameters": model.param_counts(),
        "training": {
            "epochs": last.get("epoch"),
            "best_epoch": best.get("epoch"),
            "best_val_mae": best.get("val_mae"),
            "seconds": last.get("seconds"),
            "samples_per_s": last.get("samples_per_s"),
        },
        "history": history,
        "metrics": metrics,
        "act": {"on": act_on, **act_stats(model, ds, w)},
    }
