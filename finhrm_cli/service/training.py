"""``finhrm train``: new or resumed run, then calibrate the intervals and score it (``finalize_run``)."""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import numpy as np

from finhrm_cli import baselines, checkpoint
from finhrm_cli import config as cfgmod
from finhrm_cli.config import FeatureConfig, ModelConfig, TrainConfig
from finhrm_cli.errors import DataError, UsageError
from finhrm_cli.service._shared import (
    Callback, _parts, _predict_parts, _scale, _versions, _xy, run_datasets, score_parts,
)


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
        cfg = checkpoint.read_config(run_dir, required=cfgmod.RUN_KEYS)
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
    # the validation rows calibrated the intervals: score them with the static ones
    metrics = {"val": score_parts(va, pred_va, cfg["conformal"], 0.8, intervals="split")}
    te = [(ds, w) for ds, w in _parts(dss, "test") if len(w)]
    if te:
        metrics["test"] = score_parts(te, _predict_parts(model, te), cfg["conformal"], 0.8)
    checkpoint.RunWriter(run_dir).save_config(cfg)
    checkpoint.RunWriter(run_dir).save_metrics(metrics)
    return {"metrics": metrics}
