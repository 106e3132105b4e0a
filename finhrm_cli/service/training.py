"""``finhrm train``: new or resumed run, then calibrate the intervals and score it (``finalize_run``)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
from pathlib import Path

import numpy as np

from finhrm_cli.forecast import baselines
from finhrm_cli.run import store
from finhrm_cli import config as cfgmod
from finhrm_cli.config import FeatureConfig, ModelConfig, TrainConfig
from finhrm_cli.errors import DataError, FilesystemError, UsageError
from finhrm_cli.service._shared import (
    HRM_ALONE, Callback, _blend_parts, _parts, blend_for, _predict_parts, _scale, _versions, _xy, run_datasets, score_parts, warn_sources,
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
    """A new run (or ``resume``: a run's own), trained, then finalised (``finalize_run``).

    The run folder is locked while this runs (``store.RunLock``).  ``--resume`` of a run
    whose training ended but whose finalisation did not (killed in the last seconds) only
    finalises it; of a run killed before its first checkpoint, trains it from the start."""
    with contextlib.ExitStack() as stack:
        return _train(stack, paths, settings, out, resume, date_col, col_map, callback)


def _lock(stack, run_dir: Path) -> store.RunLock:
    """Hold the run's lock until ``stack`` closes; a read-only run is one line."""
    try:
        return stack.enter_context(store.RunLock(run_dir))
    except OSError as exc:
        raise FilesystemError.from_oserror(exc, todo=f"training writes into its run folder, so {run_dir} must be writable") from exc


def _resume_hint(run_dir) -> str:
    return f"progress so far is saved in {run_dir}; then resume with: finhrm train --resume {run_dir}"


def _train(stack, paths, settings, out, resume, date_col, col_map, callback) -> dict:
    from finhrm_cli import data, distributed
    from finhrm_cli.train import loop
    from finhrm_cli.fsutil import clean_stale_temps

    t0 = time.perf_counter()
    if resume is not None:
        run_dir = store.resolve_run(resume)
        if distributed.is_main():
            _lock(stack, run_dir)
            clean_stale_temps(run_dir, store.temp_names())
        cfg = store.read_config(run_dir, required=cfgmod.RUN_KEYS)
        if (run_dir / store.METRICS).is_file():
            raise UsageError(
                f"{run_dir}: this run is finished (metrics.json is written); nothing to resume. "
                "Evaluate it with `finhrm evaluate RUN` or train a new run."
            )
        fcfg = cfgmod.from_dict(FeatureConfig, cfg["features"])
        mcfg = cfgmod.from_dict(ModelConfig, cfg["model"])
        tcfg = cfgmod.from_dict(TrainConfig, cfg["train"])
        # the run keeps its own prepared copy of the data, so resume needs no source file
        dss = run_datasets(run_dir, cfg)
        has_state = (run_dir / store.STATE_DIR / store.STATE_ARRAYS).is_file()
        state = store.load_state(run_dir) if has_state else None
        run = store.RunWriter(run_dir) if distributed.is_main() else None
        info = (state or {}).get("info") or {}
        if info.get("stopped") in ("converged", "patience"):
            # training ended, but the run was stopped before its metrics were written: finish it
            if not distributed.is_main():
                return {"run": str(run_dir), "rank": distributed.rank()}
            tsec = float(info.get("train_seconds") or 0.0)
            summary = {"best_epoch": info.get("best_epoch"), "epochs_run": info.get("epoch"),
                       "stopped": info.get("stopped"),
                       "train_samples_per_s": round(info.get("samples", 0) / tsec, 2) if tsec > 0 else None}
            return _finalize(run_dir, dss, summary, t0)
        if state is None and run is not None:  # killed before the first checkpoint: start over, same folder
            run.write_history([])
    else:
        fcfg, mcfg, tcfg = _settings_to_configs(settings)
        dss = data.prepare_many(paths, fcfg, date_col=date_col, col_map=col_map)
        warn_sources(dss)
        state = None
    _check_windows(dss, fcfg, tcfg)
    mcfg.n_features = len(dss[0].feature_names)
    mcfg.h_context = data.context_width(fcfg.feature_set)
    mcfg.seq_len = fcfg.seq_len
    if resume is None:
        run_dir, run = None, None
        if distributed.is_main():
            run_dir = store.new_run_dir(_run_name(dss), root=out)
            lock = _lock(stack, run_dir)
            try:
                run = _create_run(run_dir, dss, fcfg, mcfg, tcfg)
            except BaseException as exc:  # disk full, Ctrl-C, ...: take back the half-made folder
                gone = store.discard_creation(run_dir, lock)
                if isinstance(exc, OSError):
                    raise FilesystemError.from_oserror(
                        exc, hint=f"the half-made run folder {run_dir} was removed" if gone else None
                    ) from exc
                raise
        run_dir = distributed.broadcast_path(run_dir)
    try:
        summary = loop.train(
            mcfg, tcfg, _xy(_parts(dss, "train")), _xy(_parts(dss, "val"), with_prices=True),
            callback=callback, run=run, resume=state,
        )
    except KeyboardInterrupt as exc:
        raise _Interrupted(
            f"training interrupted; progress saved in {run_dir}. "
            f"Resume with: finhrm train --resume {run_dir}"
        ) from exc
    except OSError as exc:  # disk full, read-only, ...: say where and how to go on
        raise FilesystemError.from_oserror(exc, hint=_resume_hint(run_dir)) from exc
    if not distributed.is_main():  # rank 0 scores and writes; the others are done
        return {"run": str(run_dir), "rank": distributed.rank()}
    return _finalize(run_dir, dss, summary, t0)


def _create_run(run_dir: Path, dss, fcfg, mcfg, tcfg) -> store.RunWriter:
    """The new run's prepared data copy and its config.json (the mark of a created run)."""
    from finhrm_cli import data, distributed
    from finhrm_cli.fsutil import safe_component

    run = store.RunWriter(run_dir)
    if len(dss) == 1:
        data.save_prepared(dss[0], run_dir / store.DATA_DIR)
    else:
        for ds in dss:
            data.save_prepared(ds, run_dir / store.DATA_DIR / safe_component(ds.source.name))
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
    return run


def _finalize(run_dir: Path, dss, summary: dict, t0: float) -> dict:
    """``finalize_run`` with the resume hint on Ctrl-C or a filesystem error, and the result."""
    try:
        result = finalize_run(run_dir, dss)
    except KeyboardInterrupt as exc:
        raise _Interrupted(
            f"interrupted while scoring the trained model, so the run is unfinished; {run_dir} keeps the weights. "
            f"Finish it with: finhrm train --resume {run_dir}"
        ) from exc
    except OSError as exc:
        raise FilesystemError.from_oserror(
            exc, hint=f"the trained weights are kept in {run_dir}; then finish it with: finhrm train --resume {run_dir}"
        ) from exc
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


def halt_calibration(model, dss) -> dict | None:
    """The Platt map of ``model``'s ACT Q head (``inspection.fit_halt_calibration``), fit on
    the training windows of ``dss`` and on nothing else: validation chose the epoch and
    calibrates the intervals, test is held out, so neither may shape what the head reports."""
    from finhrm_cli.service.inspection import fit_halt_calibration

    return fit_halt_calibration(model, _parts(dss, "train"))


def finalize_run(run_dir: Path, dss) -> dict:
    """Fit the linear partner (``blend``, training rows; its weight on validation), calibrate
    intervals on validation and the ACT Q head on training (``halt_calibration``), score
    validation and test, write metrics.json.

    metrics.json is the last file a run gets: its presence marks the run finished
    (``store.run_status``), so it is written only after config.json holds the conformal
    residuals and the halting calibration."""
    model, cfg = store.load_run(run_dir)
    cfg["halt_calibration"] = halt_calibration(model, dss)
    va = _parts(dss, "val")
    hrm_va = _predict_parts(model, va, hrm_only=True)
    cfg["blend"] = model._finhrm_blend = blend_for(model, dss, hrm_va) if (cfg.get("train") or {}).get("blend", True) else None
    pred_va = _blend_parts(model, va, hrm_va)
    cfg["conformal"] = baselines.conformal_residuals(
        np.concatenate(pred_va), np.concatenate([w.y for _, w in va]),
        np.concatenate([_scale(ds, w) for ds, w in va]),
    )
    # the validation rows calibrated the intervals: score them with the static ones
    alone = (lambda p: {HRM_ALONE: p}) if cfg["blend"] else (lambda p: None)
    metrics = {"val": score_parts(va, pred_va, cfg["conformal"], 0.8, intervals="split", extra=alone(hrm_va))}
    te = [(ds, w) for ds, w in _parts(dss, "test") if len(w)]
    if te:
        hrm_te = _predict_parts(model, te, hrm_only=True)
        metrics["test"] = score_parts(te, _blend_parts(model, te, hrm_te), cfg["conformal"], 0.8, extra=alone(hrm_te))
    store.RunWriter(run_dir).save_config(cfg)
    store.RunWriter(run_dir).save_metrics(metrics)
    return {"metrics": metrics, "blend": cfg["blend"], "blend_enabled": bool((cfg.get("train") or {}).get("blend", True))}
