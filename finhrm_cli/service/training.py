"""``finhrm train``: new or resumed run, then finish the forecaster and score it (``finalize_run``)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
from pathlib import Path

from finhrm_cli.config import FeatureConfig, ModelConfig, TrainConfig
from finhrm_cli.errors import DataError, FilesystemError, UsageError
from finhrm_cli.forecast.parts import of, stack
from finhrm_cli.run import create, lock, store
from finhrm_cli.run.config import RUN_KEYS, RunConfig
from finhrm_cli.run.data import data_folder, run_datasets, warn_sources
from finhrm_cli.train.events import Callback


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


def run_name(dss) -> str:
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
    score_test: bool = True,
) -> dict:
    """A new run (or ``resume``: a run's own), trained, then finalised (``finalize_run``).
    ``score_test=False`` (``finhrm tune``'s trials) leaves the test split unscored, so a
    trial's result holds no test number at all (``score_test_split`` scores it later).

    The run folder is locked while this runs (``lock.RunLock``).  ``--resume`` of a run
    whose training ended but whose finalisation did not (killed in the last seconds) only
    finalises it; of a run killed before its first checkpoint, trains it from the start."""
    with contextlib.ExitStack() as exits:
        return _train(exits, paths, settings, out, resume, date_col, col_map, callback, score_test)


def _lock(exits, run_dir: Path) -> lock.RunLock:
    """Hold the run's lock until ``exits`` closes; a read-only run is one line."""
    try:
        return exits.enter_context(lock.RunLock(run_dir))
    except OSError as exc:
        raise FilesystemError.from_oserror(exc, todo=f"training writes into its run folder, so {run_dir} must be writable") from exc


def _resume_hint(run_dir) -> str:
    return f"progress so far is saved in {run_dir}; then resume with: finhrm train --resume {run_dir}"


def _train(exits, paths, settings, out, resume, date_col, col_map, callback, score_test=True) -> dict:
    from finhrm_cli import data, distributed
    from finhrm_cli.train import loop
    from finhrm_cli.fsutil import clean_stale_temps
    from finhrm_cli.run.files import temp_names

    t0 = time.perf_counter()
    if resume is not None:
        run_dir = store.resolve_run(resume)
        if distributed.is_main():
            _lock(exits, run_dir)
            clean_stale_temps(run_dir, temp_names())
        rc = store.read_config(run_dir, required=RUN_KEYS)
        if lock.finished(run_dir):
            raise UsageError(
                f"{run_dir}: this run is finished (metrics.json is written); nothing to resume. "
                "Evaluate it with `finhrm evaluate RUN` or train a new run."
            )
        fcfg, mcfg, tcfg = rc.features, rc.model, rc.train
        # the run keeps its own prepared copy of the data, so resume needs no source file
        dss = run_datasets(run_dir, rc)
        state = store.load_state(run_dir) if store.has_state(run_dir) else None
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
            return _finalize(run_dir, dss, summary, t0, score_test)
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
            run_dir = create.new_run_dir(run_name(dss), root=out)
            held = _lock(exits, run_dir)
            try:
                run = _create_run(run_dir, dss, fcfg, mcfg, tcfg)
            except BaseException as exc:  # disk full, Ctrl-C, ...: take back the half-made folder
                gone = create.discard_creation(run_dir, held)
                if isinstance(exc, OSError):
                    raise FilesystemError.from_oserror(
                        exc, hint=f"the half-made run folder {run_dir} was removed" if gone else None
                    ) from exc
                raise
        run_dir = distributed.broadcast_path(run_dir)
    try:
        summary = loop.train(
            mcfg, tcfg, stack(of(dss, "train")), stack(of(dss, "val"), with_prices=True),
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
    return _finalize(run_dir, dss, summary, t0, score_test)


def _create_run(run_dir: Path, dss, fcfg, mcfg, tcfg) -> store.RunWriter:
    """The new run's prepared data copy and its config.json (the mark of a created run)."""
    from finhrm_cli import data, distributed
    from finhrm_cli.fsutil import safe_component

    run = store.RunWriter(run_dir)
    if len(dss) == 1:
        data.save_prepared(dss[0], data_folder(run_dir))
    else:
        for ds in dss:
            data.save_prepared(ds, data_folder(run_dir, safe_component(ds.source.name)))
    run.save_config(RunConfig(
        created=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        versions=create.versions(),
        features=fcfg,
        model=mcfg,
        train=tcfg,
        feature_names=dss[0].feature_names,
        normalizer=dss[0].normalizer.to_dict(),
        source=dss[0].source.to_dict(),
        splits=dss[0].splits,
        series=[{"name": ds.source.name, "source": ds.source.to_dict(), "splits": ds.splits, "dropped": ds.dropped}
                for ds in dss],
        dropped=dss[0].dropped,
        conformal=None,
        processes=distributed.size(),
    ))
    return run


def _finalize(run_dir: Path, dss, summary: dict, t0: float, score_test: bool = True) -> dict:
    """``finalize_run`` with the resume hint on Ctrl-C or a filesystem error, and the result."""
    try:
        result = finalize_run(run_dir, dss, score_test=score_test)
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
        **_act_training(run_dir),
    )
    return result


def _act_training(run_dir: Path) -> dict:
    """How ACT spent training compute: the mode and the segments a window ran (last epoch)."""
    rc = store.read_config(run_dir)
    hist = store.read_history(run_dir)
    return {"act_training": rc.train.act_training if rc.train else None,
            "act_inference": rc.train.act_inference if rc.train else None,
            "epochs_planned": rc.train.epochs if rc.train else None,
            "segments_per_window": next((h["train_segments"] for h in reversed(hist)
                                         if isinstance(h.get("train_segments"), (int, float))), None),
            # the training loop's own time, as history.jsonl records it and `inspect` shows it
            # (``seconds`` is the whole command's: reading the data and scoring too)
            "train_seconds": next((h["seconds"] for h in reversed(hist)
                                   if isinstance(h.get("seconds"), (int, float))), None)}


class _Interrupted(KeyboardInterrupt):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def finalize_run(run_dir: Path, dss, score_test: bool = True) -> dict:
    """Finish the trained HRM (``Forecaster.finish``: the Q head's calibration map on the
    training windows, the linear partner on training with its weight on validation, the
    conformal residuals on validation), score validation and test, write metrics.json.

    metrics.json is the last file a run gets: its presence marks the run finished
    (``lock.run_status``), so it is written only after config.json holds the conformal
    residuals and the halting calibration."""
    fc, rc = store.load_run(run_dir)
    hrm_va = fc.finish(dss, blend=rc.blend_enabled())
    rc.halt_calibration, rc.blend, rc.conformal = fc.halt_calibration, fc.blend, fc.conformal
    # the validation rows calibrated the intervals: score them with the static ones
    metrics = {"val": fc.score(of(dss, "val"), 0.8, intervals="split", hrm_preds=hrm_va)}
    te = [(ds, w) for ds, w in of(dss, "test") if len(w)] if score_test else []
    if te:
        metrics["test"] = fc.score(te, 0.8)
    writer = store.RunWriter(run_dir)
    writer.save_config(rc)
    writer.save_metrics(metrics)
    return {"metrics": metrics, "blend": fc.blend, "blend_enabled": rc.blend_enabled()}


def score_test_split(run_dir: Path) -> dict | None:
    """Score a finished run on its own test split (from its prepared copy of the data) and add
    the result to its metrics.json; the test metrics, or None when the split has no window.
    ``finhrm tune`` calls it once, for the best trial, after the search has ended."""
    fc, rc = store.load_run(run_dir, required=RUN_KEYS)
    dss = run_datasets(run_dir, rc)
    te = [(ds, w) for ds, w in of(dss, "test") if len(w)]
    if not te:
        return None
    test = fc.score(te, 0.8)
    metrics = store.read_metrics(run_dir, [])
    metrics["test"] = test
    store.RunWriter(run_dir).save_metrics(metrics)
    return test
