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
    """Per ACT step: MAE in price units with a paired bootstrap interval against step 1, the
    Q head's probabilities against the halting reward (Brier, AUC), where it halts, the
    compute ``--act`` saves and a verdict (``finhrm_cli.actstats``)."""
    from finhrm_cli import actstats, data, engine

    w = data.concat_windows([w for _, w in parts])
    seg = engine.segment_outputs(model, w.x)
    scale = np.concatenate([_scale(ds, wp) for ds, wp in parts])
    raw = np.asarray(seg["preds"], np.float64)  # (M, n, 2) in the model's unit (targets / scale)
    known = np.isfinite(w.next_high) & np.isfinite(w.next_low)
    err = []
    for s in range(raw.shape[0]):
        ph, pl = to_prices(raw[s] * scale[:, None], w.close)
        err.append(((np.abs(ph - w.next_high) + np.abs(pl - w.next_low)) / 2)[known])
    # the halting reward as in training: unit-scale error at or below the model's reference
    y_unit = np.asarray(w.y, np.float64)[known] / scale[known, None]
    unit_err = np.abs(raw[:, known] - y_unit[None]).mean(axis=-1) / float(model.buffers.scale[0])
    reward = unit_err <= float(model.buffers.halt_ref[0])
    qh, qc = np.asarray(seg["q_halt"])[:, known], np.asarray(seg["q_continue"])[:, known]
    out = actstats.report(np.stack(err), qh, qc, reward)
    out["halt_ref"] = float(model.buffers.halt_ref[0])
    return out


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
