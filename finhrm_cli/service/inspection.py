"""``finhrm inspect``: a run's settings, history and metrics, ACT statistics per step, and the run list."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finhrm_cli import config as cfgmod
from finhrm_cli.config import to_dict
from finhrm_cli.errors import DataError
from finhrm_cli.forecast import conformal
from finhrm_cli.forecast.actstats import act_stats
from finhrm_cli.forecast.parts import of
from finhrm_cli.forecast.scoring import snake_keys
from finhrm_cli.run import store
from finhrm_cli.run.choose import open_for_data, open_run
from finhrm_cli.run.data import datasets_for_run, run_datasets


def list_runs() -> dict:
    return {"root": str(cfgmod.runs_dir()), "runs": store.list_runs()}


def inspect(run_ref: str | None, data_path: Path | None = None, date_col=None, col_map=None,
            ack=()) -> dict:
    if data_path is not None:
        files, run_dir, fc, rc, choice = open_for_data(run_ref, [data_path])
    else:
        run_dir, fc, rc, choice = open_run(run_ref)
    model = fc.model
    warnings: list[str] = []
    metrics = snake_keys(store.read_metrics(run_dir, warnings))
    history = store.read_history(run_dir, warnings)
    if data_path is not None:
        parts = []
        for ds in datasets_for_run(rc, files, date_col, col_map, ack):
            w = ds.windows("all")
            parts.append((ds, w.subset(np.nonzero(np.isfinite(w.next_high) & np.isfinite(w.next_low))[0])))
        act_on = str(data_path)
    elif rc.parent is not None:  # a production run validates nothing: its training rows, said so
        parts = of(run_datasets(run_dir, rc), "train")
        act_on = "training rows (in sample: a production run holds nothing out; --data FILE for new sessions)"
    else:
        parts = of(run_datasets(run_dir, rc), "val")
        act_on = "validation split"
    parts = [(ds, w) for ds, w in parts if len(w)]
    if not parts:
        raise DataError(f"{act_on}: no rows with a known next session to compute ACT stats on.")
    last = history[-1] if history else {}
    ensemble = _ensemble(fc, rc, parts) if hasattr(fc, "members") else None
    act = ensemble["members"][0]["act"] if ensemble else act_stats(model, parts, fc.halt_calibration)
    if ensemble:
        act_on += f" (member {ensemble['members'][0]['dir']}; every member's under ensemble)"
    return {
        "run": str(run_dir),
        "name": run_dir.name,
        "run_name": choice.name,
        "run_choice": choice.reason,
        "created": rc.created,
        "versions": rc.versions,
        "source": rc.source,
        "parent": rc.parent,
        "splits": rc.splits,
        "feature_names": rc.feature_names,
        "features": to_dict(rc.features),
        "model": to_dict(rc.model),
        "train": to_dict(rc.train),
        "parameters": ensemble["parameters"] if ensemble else model.param_counts(),
        "intervals": conformal.describe(fc.conformal),
        "training": {
            "epochs": last.get("epoch"),
            # every record carries the epoch training kept so far (min-delta may keep an
            # earlier one than the lowest validation MAE)
            "best_epoch": last.get("best_epoch"),
            "best_val_mae": last.get("best_val_mae"),
            "seconds": last.get("seconds"),
            "samples_per_s": last.get("samples_per_s"),
            "act_training": rc.train.act_training if rc.train else None,
            "act_inference": rc.train.act_inference if rc.train else None,
            "segments_per_window": last.get("train_segments"),
        },
        "history": history,
        "blend": fc.blend,
        "metrics": metrics,
        "series": rc.series_names(),
        "act": {"on": act_on, **act},
        **({"ensemble": ensemble} if ensemble else {}),
        "warnings": warnings,
    }


def _ensemble(fc, rc, parts) -> dict:
    """An ensemble run's members: where each was copied from, its settings, what it scored,
    its linear partner and its own halting statistics on its own windows of ``parts``."""
    members, total = [], {}
    entries = {e.get("dir"): e for e in (rc.extra.get("ensemble") or {}).get("members", [])}
    for i, m in enumerate(fc.members):
        rel = f"{m.path.parent.name}/{m.path.name}"
        counts = m.fc.model.param_counts()
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v if isinstance(v, (int, float)) else v
        members.append({**entries.get(rel, {}), "dir": rel, "features": to_dict(m.rc.features),
                        "model": to_dict(m.rc.model), "train": to_dict(m.rc.train), "blend": m.fc.blend,
                        "parameters": counts, "act": act_stats(m.fc.model, fc.member_parts(i, parts),
                                                               m.fc.halt_calibration)})
    about = {k: v for k, v in (rc.extra.get("ensemble") or {}).items() if k != "members"}
    return {**about, "members": members, "parameters": total}
