"""``finhrm inspect``: a run's settings, history and metrics, ACT statistics per step, and the run list."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finhrm_cli import checkpoint
from finhrm_cli import config as cfgmod
from finhrm_cli.errors import DataError
from finhrm_cli.service._shared import _datasets_for_run, _load, _parts, _scale, run_datasets, to_prices


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
    warnings: list[str] = []
    metrics = checkpoint.read_json(run_dir / "metrics.json", default={})
    if not isinstance(metrics, dict):
        warnings.append(f"{run_dir / 'metrics.json'}: not a JSON object; the final metrics are left out.")
        metrics = {}
    history = checkpoint.read_history(run_dir, warnings)
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
        "warnings": warnings,
    }
