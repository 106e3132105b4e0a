"""``finhrm inspect``: a run's settings, history and metrics, ACT statistics per step, and the run list."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finhrm_cli.run import store
from finhrm_cli import config as cfgmod
from finhrm_cli.errors import DataError
from finhrm_cli.service._shared import _datasets_for_run, _load, _parts, _scale, run_datasets, to_prices


def list_runs() -> dict:
    return {"root": str(cfgmod.runs_dir()), "runs": store.list_runs()}


def _act_outputs(model, parts) -> dict:
    """Every segment's outputs on the windows of ``parts`` with a known next session: ``err``
    (M, n) absolute error in price units, ``reward`` (M, n) the halting reward as in training
    (``actstats.halt_reward``), the Q probabilities ``q_halt``/``q_continue`` and their logits
    (M, n), and ``halt_step`` (n,), 0-based, where the raw outputs halt."""
    from finhrm_cli import data
    from finhrm_cli.forecast import actstats
    from finhrm_cli.forecast import inference

    w = data.concat_windows([w for _, w in parts])
    seg = inference.segment_outputs(model, w.x)
    scale = np.concatenate([_scale(ds, wp) for ds, wp in parts])
    raw = np.asarray(seg["preds"], np.float64)  # (M, n, 2) in the model's unit (targets / scale)
    known = np.isfinite(w.next_high) & np.isfinite(w.next_low)
    err = []
    for s in range(raw.shape[0]):
        ph, pl = to_prices(raw[s] * scale[:, None], w.close)
        err.append(((np.abs(ph - w.next_high) + np.abs(pl - w.next_low)) / 2)[known])
    y_unit = np.asarray(w.y, np.float64)[known] / scale[known, None]
    reward = actstats.halt_reward(raw[:, known], y_unit, float(model.buffers.scale[0]),
                                  float(model.buffers.halt_ref[0]))
    out = {"err": np.stack(err), "reward": reward, "halt_step": np.asarray(seg["halt_step"])[known] - 1}
    for k in ("q_halt", "q_continue", "q_halt_logit", "q_continue_logit"):
        out[k] = np.asarray(seg[k])[:, known]
    return out


def fit_halt_calibration(model, parts) -> dict | None:
    """The Platt map of the model's Q head on the windows of ``parts`` (``actstats.platt_fit``,
    every segment of every row pooled): ``{"a", "b", "rows"}``, or None without rows.
    ``finalize_run`` passes the training windows only."""
    from finhrm_cli.forecast import actstats

    parts = [(ds, w) for ds, w in parts if len(w)]
    if not parts:
        return None
    o = _act_outputs(model, parts)
    if o["reward"].size == 0:
        return None
    ab = actstats.platt_fit(o["q_halt_logit"], o["reward"])
    return None if ab is None else {"a": ab[0], "b": ab[1], "rows": int(o["reward"].shape[1])}


def act_stats(model, parts, calibration: dict | None = None) -> dict:
    """Per ACT step: MAE in price units with a paired bootstrap interval against step 1, the
    Q head's probabilities against the halting reward (Brier, AUC), where it halts, the
    compute ``--act`` saves and a verdict (``finhrm_cli.forecast.actstats``).

    With ``calibration`` (a run's ``halt_calibration``: ``{"a", "b", ...}``) every reported
    probability is ``sigmoid(a * logit + b)``, q_halt and q_continue alike, and
    ``uncalibrated`` holds the Brier score, AUC and means of the raw head; where rows halt is
    always read from the raw outputs (the map, a > 0, does not move it)."""
    from finhrm_cli.forecast import actstats

    o = _act_outputs(model, parts)
    ph, pc = o["q_halt"], o["q_continue"]
    if calibration:
        a, b = calibration["a"], calibration["b"]
        ph, pc = actstats.platt_apply(o["q_halt_logit"], a, b), actstats.platt_apply(o["q_continue_logit"], a, b)
    out = actstats.report(o["err"], ph, pc, o["reward"], halt_step=o["halt_step"])
    out["halt_ref"] = float(model.buffers.halt_ref[0])
    out["halt_calibration"] = dict(calibration) if calibration else None
    raw = np.asarray(o["q_halt"], np.float64)
    out["uncalibrated"] = {
        "brier": actstats.brier(raw, o["reward"]), "auc": actstats.auc(raw, o["reward"]),
        "mean_p_halt": float(raw.mean()), "step1_p_halt": float(raw[0].mean()),
    }
    return out


def inspect(run_ref: str | None, data_path: Path | None = None, date_col=None, col_map=None) -> dict:
    run_dir, model, cfg = _load(run_ref)
    warnings: list[str] = []
    metrics = store.read_json(run_dir / "metrics.json", default={})
    if not isinstance(metrics, dict):
        warnings.append(f"{run_dir / 'metrics.json'}: not a JSON object; the final metrics are left out.")
        metrics = {}
    history = store.read_history(run_dir, warnings)
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
        "blend": cfg.get("blend"),
        "metrics": metrics,
        "series": [x["name"] for x in cfg.get("series") or []],
        "act": {"on": act_on, **act_stats(model, parts, cfg.get("halt_calibration"))},
        "warnings": warnings,
    }
