"""What each command does, as plain functions that return JSON-able dicts.

``cli`` parses options and calls these; ``ui`` renders what they return.  Keeping the
work here makes every command usable from Python and testable without a terminal.
"""

from __future__ import annotations

import datetime as _dt
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


# ------------------------------------------------------------------ series and windows
# A "part" is one series' dataset with some of its windows: (ds, w).  Several tickers are
# several parts; the model sees their windows one after the other and never mixed.


def _parts(dss, split: str) -> list[tuple[Any, Any]]:
    return [(ds, ds.windows(split)) for ds in dss]


def _xy(parts, with_prices: bool = False) -> dict:
    ds_list = [_windows_dict(ds, w, with_prices) for ds, w in parts]
    return {k: np.concatenate([d[k] for d in ds_list]) for k in ds_list[0]}


def _predict_parts(model, parts, act: bool = False) -> list[np.ndarray]:
    """One prediction pass over all parts' windows, split back per part (log ratios)."""
    from finhrm_cli import engine

    sizes = [len(w) for _, w in parts]
    if sum(sizes) == 0:
        return [np.zeros((0, 2)) for _ in parts]
    x = np.concatenate([w.x for _, w in parts])
    raw = engine.predict(model, x, act=act)
    out, i = [], 0
    for (ds, w), n in zip(parts, sizes):
        out.append(raw[i:i + n] * _scale(ds, w)[:, None])
        i += n
    return out


def _known(w, pred):
    keep = np.isfinite(w.next_high) & np.isfinite(w.next_low)
    if keep.all():
        return w, pred
    idx = np.nonzero(keep)[0]
    return w.subset(idx), pred[idx]


def _arrays(ds, w, pred_log, conformal, coverage) -> dict:
    """Forecasts, actuals and baselines of one part in price units (known targets only)."""
    w, pred_log = _known(w, pred_log)
    ph, pl = to_prices(pred_log, w.close)
    iv = baselines.intervals(pred_log, w.close, conformal, coverage, _scale(ds, w)) if conformal else None
    f = ds.frame
    rh, rl = baselines.recent_range(f["high"].to_numpy(), f["low"].to_numpy(), f["close"].to_numpy(),
                                    w.end, ds.fcfg.horizon)
    return {"w": w, "ph": ph, "pl": pl, "iv": iv, "rh": rh, "rl": rl}


def _results(a: dict) -> dict:
    w = a["w"]
    res = {
        "finhrm": baselines.metrics(a["ph"], a["pl"], w.next_high, w.next_low, w.close, a["iv"]),
        "persistence": baselines.metrics(w.high, w.low, w.next_high, w.next_low, w.close),
        "recent range": baselines.metrics(a["rh"], a["rl"], w.next_high, w.next_low, w.close),
    }
    return baselines.with_skill(res)


def _summary_of(w, res, coverage, conformal) -> dict:
    return {
        "rows": int(len(w)),
        "first_date": _iso(w.dates.min()) if len(w) else None,
        "last_date": _iso(w.dates.max()) if len(w) else None,
        "coverage_target": coverage if conformal else None,
        "results": res,
    }


def score_parts(parts, preds, conformal: dict | None, coverage: float) -> dict:
    """Model against the baselines, pooled over all parts, and per series when there are several."""
    from finhrm_cli import data

    arrays = [_arrays(ds, w, p, conformal, coverage) for (ds, w), p in zip(parts, preds)]
    pooled = {
        "w": data.concat_windows([a["w"] for a in arrays]),
        **{k: np.concatenate([a[k] for a in arrays]) for k in ("ph", "pl", "rh", "rl")},
        "iv": {k: np.concatenate([a["iv"][k] for a in arrays]) for k in arrays[0]["iv"]} if conformal else None,
    }
    out = _summary_of(pooled["w"], _results(pooled), coverage, conformal)
    if len(parts) > 1:
        out["series"] = {
            ds.source.name: _summary_of(a["w"], _results(a), coverage, conformal)
            for (ds, _), a in zip(parts, arrays)
        }
    return out


# ------------------------------------------------------------------ train
def _check_windows(dss, fcfg, tcfg) -> None:
    for ds in dss:
        if ds.splits["val"]["n_windows"] == 0:
            raise DataError(
                f"{ds.source.path}: the validation split has no complete window "
                f"({ds.splits['val'].get('rows', 0)} rows for --seq-len {fcfg.seq_len}); "
                "raise --val-frac or lower --seq-len."
            )
    n_train = sum(ds.splits["train"]["n_windows"] for ds in dss)
    if n_train < tcfg.batch_size * tcfg.grad_accum:
        where = dss[0].source.path if len(dss) == 1 else f"{len(dss)} series"
        raise DataError(
            f"{where}: {n_train} training windows, fewer than one batch of {tcfg.batch_size * tcfg.grad_accum}; "
            "lower --batch-size or --seq-len, or use a longer history."
        )


def _run_name(dss) -> str:
    if len(dss) == 1:
        return dss[0].source.name
    return f"{dss[0].source.name}-and-{len(dss) - 1}-more"


def train(
    paths: list[Path],
    settings: dict,
    out: Path | None = None,
    resume: str | None = None,
    date_col=None,
    col_map=None,
    callback: Callback | None = None,
) -> dict:
    from finhrm_cli import data, distributed, engine

    t0 = time.perf_counter()
    if resume is not None:
        run_dir = checkpoint.resolve_run(resume)
        cfg = checkpoint.read_config(run_dir)
        fcfg = cfgmod.from_dict(FeatureConfig, cfg["features"])
        mcfg = cfgmod.from_dict(ModelConfig, cfg["model"])
        tcfg = cfgmod.from_dict(TrainConfig, cfg["train"])
        # the run keeps its own prepared copy of the data, so resume needs no source file
        dss = run_datasets(run_dir, cfg)
        state = checkpoint.load_state(run_dir)
        run = checkpoint.RunWriter(run_dir) if distributed.is_main() else None
    else:
        fcfg, mcfg, tcfg = _settings_to_configs(settings)
        dss = data.prepare_many(paths, fcfg, date_col=date_col, col_map=col_map)
        state = None
    _check_windows(dss, fcfg, tcfg)
    mcfg.n_features = len(dss[0].feature_names)
    mcfg.seq_len = fcfg.seq_len
    if state is None:
        run_dir, run = None, None
        if distributed.is_main():
            run_dir = checkpoint.new_run_dir(_run_name(dss), root=out)
            run = checkpoint.RunWriter(run_dir)
            if len(dss) == 1:
                data.save_prepared(dss[0], run_dir / "data")
            else:
                for ds in dss:
                    data.save_prepared(ds, run_dir / "data" / ds.source.name)
            run.save_config(
                {
                    "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "versions": _versions(),
                    "features": cfgmod.to_dict(fcfg),
                    "model": cfgmod.to_dict(mcfg),
                    "train": cfgmod.to_dict(tcfg),
                    "feature_names": dss[0].feature_names,
                    "normalizer": dss[0].normalizer.to_dict(),
                    "source": dss[0].source.to_dict(),
                    "splits": dss[0].splits,
                    "series": [
                        {"name": ds.source.name, "source": ds.source.to_dict(), "splits": ds.splits, "dropped": ds.dropped}
                        for ds in dss
                    ],
                    "dropped": dss[0].dropped,
                    "conformal": None,
                    "processes": distributed.size(),
                }
            )
        run_dir = distributed.broadcast_path(run_dir)
    try:
        summary = engine.train(
            mcfg, tcfg, _xy(_parts(dss, "train")), _xy(_parts(dss, "val"), with_prices=True),
            callback=callback, run=run, resume=state,
        )
    except KeyboardInterrupt as exc:
        raise _Interrupted(
            f"training interrupted; progress saved in {run_dir}. "
            f"Resume with: finhrm train --resume {run_dir}"
        ) from exc
    if not distributed.is_main():  # rank 0 scores and writes; the others are done
        return {"run": str(run_dir), "rank": distributed.rank()}
    result = finalize_run(run_dir, dss)
    result.update(
        run=str(run_dir),
        name=Path(run_dir).name,
        series=[ds.source.name for ds in dss],
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


def finalize_run(run_dir: Path, dss) -> dict:
    """Calibrate intervals on validation, score validation and test, write metrics.json."""
    model, cfg = checkpoint.load_run(run_dir)
    va = _parts(dss, "val")
    pred_va = _predict_parts(model, va)
    cfg["conformal"] = baselines.conformal_residuals(
        np.concatenate(pred_va), np.concatenate([w.y for _, w in va]),
        np.concatenate([_scale(ds, w) for ds, w in va]),
    )
    metrics = {"val": score_parts(va, pred_va, cfg["conformal"], 0.8)}
    te = [(ds, w) for ds, w in _parts(dss, "test") if len(w)]
    if te:
        metrics["test"] = score_parts(te, _predict_parts(model, te), cfg["conformal"], 0.8)
    checkpoint.RunWriter(run_dir).save_config(cfg)
    checkpoint.RunWriter(run_dir).save_metrics(metrics)
    return {"metrics": metrics}


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
                      normalizer=data.Normalizer.from_dict(cfg["normalizer"]), min_windows=0)
    if list(ds.feature_names) != list(cfg["feature_names"]):
        raise DataError(
            f"{path}: gives features {ds.feature_names}, but the model was trained on "
            f"{cfg['feature_names']}; use a file with the same columns."
        )
    return ds


def _datasets_for_run(cfg: dict, paths, date_col=None, col_map=None) -> list:
    from finhrm_cli import data

    return [_dataset_for_run(cfg, p, date_col, col_map) for p in data.expand_inputs(paths)]


def run_datasets(run_dir: Path, cfg: dict) -> list:
    """The series a run was trained on, from its own prepared copies."""
    base = Path(run_dir) / "data"
    if (base / "meta.json").exists():
        return [_dataset_for_run(cfg, base)]
    names = [s["name"] for s in cfg.get("series") or []]
    if not names or not all((base / n / "meta.json").exists() for n in names):
        raise RunError(f"{run_dir}: the run's data folder is missing or incomplete; train the run again.")
    dss = [_dataset_for_run(cfg, base / n) for n in names]
    for ds, n in zip(dss, names):
        ds.source = __import__("dataclasses").replace(ds.source, name=n)
    return dss


# ------------------------------------------------------------------ predict
def predict(data_paths, run_ref: str | None, all_rows: bool = False, coverage: float = 0.8,
            act: bool = False, date_col=None, col_map=None) -> dict:
    if isinstance(data_paths, (str, Path)):
        data_paths = [data_paths]
    run_dir, model, cfg = _load(run_ref)
    dss = _datasets_for_run(cfg, data_paths, date_col, col_map)
    parts = []
    for ds in dss:
        w = ds.windows("all")
        if len(w) == 0:
            need = cfg["features"]["seq_len"]
            raise DataError(f"{ds.source.path}: too short to predict; it needs at least {need} usable rows after indicator warm-up.")
        parts.append((ds, w if all_rows else w.subset(np.array([len(w) - 1]))))
    preds = _predict_parts(model, parts, act=act)
    conformal = cfg.get("conformal")
    rows = []
    for (ds, w), pred in zip(parts, preds):
        ph, pl = to_prices(pred, w.close)
        iv = baselines.intervals(pred, w.close, conformal, coverage, _scale(ds, w)) if conformal else None
        for i in range(len(w)):
            r = {"ticker": ds.source.name} if len(parts) > 1 else {}
            r.update({
                "date": _iso(w.dates[i]),
                "close": float(w.close[i]),
                "pred_high": float(ph[i]),
                "pred_low": float(pl[i]),
                "pred_high_lo": float(iv["high_lo"][i]) if iv else None,
                "pred_high_hi": float(iv["high_hi"][i]) if iv else None,
                "pred_low_lo": float(iv["low_lo"][i]) if iv else None,
                "pred_low_hi": float(iv["low_hi"][i]) if iv else None,
            })
            rows.append(r)
    return {
        "run": str(run_dir),
        "data": [str(ds.source.path) for ds in dss] if len(dss) > 1 else str(dss[0].source.path),
        "horizon": cfg["features"]["horizon"],
        "coverage": coverage,
        "rows": rows,
    }


# ------------------------------------------------------------------ evaluate
def _cutoff_for(cfg: dict, name: str):
    """Last validation date of the series ``name`` (or of the latest series when unknown)."""
    series = cfg.get("series") or [{"name": cfg.get("source", {}).get("name"), "splits": cfg.get("splits", {})}]
    dates = {s["name"]: s["splits"].get("val", {}).get("last_date") for s in series}
    d = dates.get(name) or max((v for v in dates.values() if v), default=None)
    return np.datetime64(d) if d else None


def evaluate(run_ref: str | None, data_path=None, split: str = "test", coverage: float = 0.8,
             act: bool = False, walk_forward: int | None = None, plot: Path | None = None,
             date_col=None, col_map=None, callback: Callback | None = None) -> dict:
    run_dir, model, cfg = _load(run_ref)
    notes: list[str] = []
    if walk_forward:
        return _walk_forward(run_dir, cfg, walk_forward, coverage, callback)
    if data_path:
        paths = data_path if isinstance(data_path, (list, tuple)) else [data_path]
        parts = []
        for ds in _datasets_for_run(cfg, paths, date_col, col_map):
            w = ds.windows("all")
            cutoff = _cutoff_for(cfg, ds.source.name)
            if cutoff is not None:
                keep = np.nonzero(w.dates > cutoff)[0]
                left_out = len(w) - len(keep)
                if left_out:
                    notes.append(
                        f"{ds.source.name}: {left_out} rows up to {_iso(cutoff)} lie inside the run's training and "
                        "validation period and were left out."
                    )
                w = w.subset(keep)
            w = w.subset(np.nonzero(np.isfinite(w.next_high) & np.isfinite(w.next_low))[0])
            parts.append((ds, w))
        where = ", ".join(str(p) for p in paths)
    else:
        parts = []
        for ds in run_datasets(run_dir, cfg):
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
    preds = _predict_parts(model, parts, act=act)
    scored = score_parts(parts, preds, cfg.get("conformal"), coverage)
    result = {"run": str(run_dir), "evaluated": where, "split": None if data_path else split, "act": act,
              "notes": notes, **scored}
    if plot is not None:
        ds, w = parts[0]
        result["plot"] = str(_plot(plot, w, preds[0], cfg.get("conformal"), coverage))
        if len(parts) > 1:
            notes.append(f"the plot shows the first series, {ds.source.name}.")
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

    Each series' usable rows are cut into K+1 equal blocks.  Fold i trains on blocks 1..i
    (their last 15% validate: early stopping and the conformal residuals) and tests on block
    i+1, so every test row lies after everything its model saw.  The normaliser is refit on
    each fold's training rows.
    """
    import dataclasses

    from finhrm_cli import data, engine

    fcfg = cfgmod.from_dict(FeatureConfig, cfg["features"])
    mcfg = cfgmod.from_dict(ModelConfig, cfg["model"])
    tcfg = cfgmod.from_dict(TrainConfig, cfg["train"])
    fulls = run_datasets(run_dir, cfg)
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
            h = fcfg.horizon
            pooled = data.Normalizer.fit(np.concatenate(
                [ds.features()[ds.splits["train"]["start"]: ds.splits["train"]["end"] - h] for ds in dss]))
            for ds in dss:
                ds.normalizer, ds._x = pooled, None
        tr, va, te = _parts(dss, "train"), _parts(dss, "val"), _parts(dss, "test")
        n_tr = sum(len(w) for _, w in tr)
        if n_tr < tcfg.batch_size * tcfg.grad_accum or not any(len(w) for _, w in va) or not any(len(w) for _, w in te):
            raise DataError(f"walk-forward fold {i}: too few windows ({n_tr} to train on); use fewer folds.")
        model = engine.build_model(dataclasses.replace(mcfg), tcfg.seed)
        if callback:
            callback("fold", {"fold": i, "folds": k})
        engine.train(mcfg, tcfg, _xy(tr), _xy(va, with_prices=True), callback=callback, model=model)
        pv = _predict_parts(model, va)
        conformal = baselines.conformal_residuals(
            np.concatenate(pv), np.concatenate([w.y for _, w in va]), np.concatenate([_scale(d, w) for d, w in va]))
        te = [(d, w) for d, w in te if len(w)]
        scored = score_parts(te, _predict_parts(model, te), conformal, coverage)
        folds.append({"fold": i, "train_rows": fit_total, "val_rows": val_total, **scored})
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


def act_stats(model, parts) -> dict:
    """Per ACT step: MAE in price units, mean halting probabilities and where the Q head halts."""
    from finhrm_cli import data, engine

    w = data.concat_windows([w for _, w in parts])
    seg = engine.segment_outputs(model, w.x)
    scale = np.concatenate([_scale(ds, wp) for ds, wp in parts])
    preds = np.asarray(seg["preds"]) * scale[None, :, None]
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
        parts = []
        for ds in _datasets_for_run(cfg, [data_path], date_col, col_map):
            w = ds.windows("all")
            parts.append((ds, w.subset(np.nonzero(np.isfinite(w.next_high) & np.isfinite(w.next_low))[0])))
        act_on = str(data_path)
    else:
        parts = _parts(run_datasets(run_dir, cfg), "val")
        act_on = "validation split"
    parts = [(ds, w) for ds, w in parts if len(w)]
    if not parts:
        raise DataError(f"{act_on}: no rows with a known next session to compute ACT stats on.")
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
            # every record carries the epoch training kept so far (min-delta may keep an
            # earlier one than the lowest validation MAE)
            "best_epoch": last.get("best_epoch"),
            "best_val_mae": last.get("best_val_mae"),
            "seconds": last.get("seconds"),
            "samples_per_s": last.get("samples_per_s"),
        },
        "history": history,
        "metrics": metrics,
        "series": [x["name"] for x in cfg.get("series") or []],
        "act": {"on": act_on, **act_stats(model, parts)},
    }
