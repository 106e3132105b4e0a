"""``finhrm predict``: the next session's high and low (with intervals) for one or more files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finhrm_cli import baselines
from finhrm_cli.errors import DataError
from finhrm_cli.service._shared import _datasets_for_run, _iso, _load, _predict_parts, _scale, to_prices


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
    segments: dict = {}
    preds = _predict_parts(model, parts, act=act, segments=segments)
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
        **({"act_segments": segments} if act else {}),
    }
