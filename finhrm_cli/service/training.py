"""``finhrm train``: new or resumed run, then finish the forecaster and score it (``finalize_run``)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
from pathlib import Path

from finhrm_cli.config import TrainConfig, settings_to_configs
from finhrm_cli.errors import DataError, FilesystemError, UsageError
from finhrm_cli.forecast.parts import of, stack
from finhrm_cli.run import create, lock, store
from finhrm_cli.run.config import RUN_KEYS, RunConfig
from finhrm_cli.run.data import data_folder, run_datasets, warn_sources
from finhrm_cli.train.events import Callback



def _check_windows(dss, fcfg, tcfg) -> None:
    for ds in dss:
        if ds.splits["val"]["n_windows"] == 0 and not fcfg.every_row():
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


def fit_model_config(mcfg, fcfg, dss) -> None:
    """The model's input shape from the prepared data: features, context width, window."""
    from finhrm_cli import data

    mcfg.n_features = len(dss[0].feature_names)
    mcfg.h_context = data.context_width(fcfg.feature_set)
    mcfg.seq_len = fcfg.seq_len


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
    from_run: str | None = None,
    scratch: bool = False,
    ack=(),
    score_test: bool = True,
) -> dict:
    """A new run (or ``resume``: a run's own), trained, then finalised (``finalize_run``).
    ``from_run``: a production run of that run's settings on every row of ``paths``
    (``production_plan``), warm-started from its weights unless ``scratch``.
    ``score_test=False`` (``finhrm tune``'s trials) leaves the test split unscored, so a
    trial's result holds no test number at all (``score_test_split`` scores it later).

    The run folder is locked while this runs (``lock.RunLock``).  ``--resume`` of a run
    whose training ended but whose finalisation did not (killed in the last seconds) only
    finalises it; of a run killed before its first checkpoint, trains it from the start.
    ``ack``: dates whose data warnings are left out, recorded in the run's sources."""
    if from_run is not None and resume is not None:
        raise UsageError("--from and --resume do not go together: --resume continues the run it names.")
    if scratch and from_run is None:
        raise UsageError("--scratch goes with --from RUN (a production run trained afresh on every row).")
    with contextlib.ExitStack() as exits:
        plan = production_plan(from_run, settings, scratch) if from_run is not None else None
        return _train(exits, paths, settings, out, resume, date_col, col_map, callback, plan, ack, score_test)


def _lock(exits, run_dir: Path) -> lock.RunLock:
    """Hold the run's lock until ``exits`` closes; a read-only run is one line."""
    try:
        return exits.enter_context(lock.RunLock(run_dir))
    except OSError as exc:
        raise FilesystemError.from_oserror(exc, todo=f"training writes into its run folder, so {run_dir} must be writable") from exc


def _resume_hint(run_dir) -> str:
    return f"progress so far is saved in {run_dir}; then resume with: finhrm train --resume {run_dir}"


def _train(exits, paths, settings, out, resume, date_col, col_map, callback, plan=None, ack=(),
           score_test=True) -> dict:
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
        lineage = rc.parent
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
    elif plan is not None:
        fcfg, mcfg, tcfg, lineage = plan["features"], plan["model"], plan["train"], plan["lineage"]
        dss = data.prepare_many(paths, fcfg, date_col=date_col, col_map=col_map, normalizer=plan["normalizer"],
                                ack=ack)
        warn_sources(dss)
        _check_series(dss, plan)
        if plan["warm"]:
            lineage["hrm_trains_from"] = refresh_start(of(dss, "train"), plan["trained_through"])
        state = None
    else:
        fcfg, mcfg, tcfg = settings_to_configs(settings)
        dss = data.prepare_many(paths, fcfg, date_col=date_col, col_map=col_map, ack=ack)
        warn_sources(dss)
        state, lineage = None, None
    _check_windows(dss, fcfg, tcfg)
    fit_model_config(mcfg, fcfg, dss)
    if resume is None:
        run_dir, run = _new_run(exits, dss, fcfg, mcfg, tcfg, out, lineage, plan)
    every_row = fcfg.every_row()
    train_parts = of(dss, "train")
    if lineage and lineage.get("hrm_trains_from"):  # a warm refresh (also when resumed)
        train_parts = hrm_refresh_parts(train_parts, lineage["hrm_trains_from"])
    try:
        summary = loop.train(
            mcfg, tcfg, stack(train_parts), None if every_row else stack(of(dss, "val"), with_prices=True),
            callback=callback, run=run, resume=state,
            model=plan["model_weights"] if plan is not None else None, warm=plan is not None and plan["warm"],
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


def _new_run(exits, dss, fcfg, mcfg, tcfg, out, lineage, plan):
    """The new run's folder, locked and filled (by the main process; the others get its
    path): (run_dir, RunWriter or None)."""
    from finhrm_cli import distributed

    run_dir, run = None, None
    if distributed.is_main():
        run_dir = create.new_run_dir(run_name(dss), root=out)
        held = _lock(exits, run_dir)
        try:
            run = _create_run(run_dir, dss, fcfg, mcfg, tcfg, lineage, plan)
        except BaseException as exc:  # disk full, Ctrl-C, ...: take back the half-made folder
            gone = create.discard_creation(run_dir, held)
            if isinstance(exc, OSError):
                raise FilesystemError.from_oserror(
                    exc, hint=f"the half-made run folder {run_dir} was removed" if gone else None
                ) from exc
            raise
    return distributed.broadcast_path(run_dir), run


def _create_run(run_dir: Path, dss, fcfg, mcfg, tcfg, lineage=None, plan=None) -> store.RunWriter:
    """The new run's prepared data copy and its config.json (the mark of a created run); a
    production run records its parent (``lineage``) and starts from the parent's conformal
    residuals (``plan``)."""
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
        conformal=plan["conformal"] if plan is not None else None,
        processes=distributed.size(),
        parent=lineage,
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
    if rc.parent is not None:  # a production run: nothing validates or tests
        fc.finish_every_row(dss, rc.parent.get("hrm_weight") if rc.blend_enabled() else None, rc.conformal)
        rc.halt_calibration, rc.blend = fc.halt_calibration, fc.blend
        writer = store.RunWriter(run_dir)
        writer.save_config(rc)
        tr = of(dss, "train")
        metrics = {"every_row": {"parent": rc.parent.get("name"), "windows": sum(len(w) for _, w in tr)}}
        if rc.parent.get("hrm_trains_from"):
            metrics["every_row"]["hrm_windows"] = sum(len(w) for _, w in hrm_refresh_parts(tr, rc.parent["hrm_trains_from"]))
        writer.save_metrics(metrics)
        return {"metrics": metrics, "blend": fc.blend, "blend_enabled": rc.blend_enabled(), "parent": rc.parent}
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


# ---------------------------------------------------------------------------------------------
# production runs: `finhrm train DATA --from RUN`

# A warm refresh trains the HRM on the windows its parent's weights never saw (the parent's
# validation and test rows, the new bars) and on as many of the latest windows they did see,
# at least REFRESH_REPLAY, for REFRESH_EPOCHS epochs at the learning rate the parent's schedule
# ended on.  One more epoch over every old row, as first built, overfit rows the parent had
# already fit (GOOG's validation worsens after its best epoch; its refreshes fell 0.3-0.5%
# behind the frozen run) and took a quarter of a full training (docs/results.md).  The linear
# partner and the Q head's calibration still fit on every row.
REFRESH_EPOCHS = 3
REFRESH_REPLAY = 256


def refresh_start(parts, trained_through: dict) -> dict:
    """Per series (by name), the date of the first window a warm refresh trains the HRM on:
    the windows after ``trained_through[name]`` (the parent's last training day) and
    ``max(REFRESH_REPLAY, their count)`` of the latest ones before; a series the parent never
    trained on starts at its first window."""
    import numpy as np

    out = {}
    for ds, w in parts:
        if not len(w):
            continue
        last = trained_through.get(ds.source.name)
        new = int((w.dates > np.datetime64(last, "D")).sum()) if last else len(w)
        k = min(len(w), new + max(REFRESH_REPLAY, new))
        out[ds.source.name] = str(w.dates[len(w) - k])
    return out


def hrm_refresh_parts(parts, trains_from: dict):
    """The windows of ``parts`` a warm refresh trains the HRM on (``refresh_start``)."""
    import numpy as np

    out = []
    for ds, w in parts:
        start = trains_from.get(ds.source.name)
        out.append((ds, w if start is None else w.subset(np.nonzero(w.dates >= np.datetime64(start, "D"))[0])))
    return out


def _best_epoch(run_dir: Path, rc: RunConfig) -> int:
    """The epoch count the run's validation chose (a production run: its lineage's)."""
    if rc.parent and isinstance(rc.parent.get("epochs_chosen"), int):
        return rc.parent["epochs_chosen"]
    hist = store.read_history(run_dir)
    best = next((h.get("best_epoch") for h in reversed(hist) if isinstance(h.get("best_epoch"), int)), None)
    if best is None:
        raise UsageError(f"{run_dir}: its history names no best epoch; train it again, or give --epochs.")
    return best


def production_plan(from_run: str, settings: dict, scratch: bool) -> dict:
    """What ``train DATA --from RUN`` trains: RUN's settings (flags win) on every row, for the
    epochs RUN's validation chose (from scratch) or ``REFRESH_EPOCHS`` at the learning rate
    RUN's schedule ended on (warm: RUN's weights, target statistics and normaliser); the
    intervals start from RUN's conformal residuals, the blend keeps RUN's HRM weight."""
    from dataclasses import asdict, replace

    from finhrm_cli.data.dataset import Normalizer
    from finhrm_cli.train.step import FINAL_LR_FRAC

    parent_dir = store.resolve_run(from_run)
    prc = store.read_config(parent_dir, required=RUN_KEYS)
    if prc.is_ensemble():
        raise UsageError(f"{parent_dir.name} is an ensemble run: --from refits one run; refit each member "
                         "(its members/ folder) or make the ensemble again from refitted runs.")
    if not lock.finished(parent_dir):
        raise UsageError(f"{parent_dir}: this run is not finished; finish it (`finhrm train --resume {parent_dir}`) "
                         "or name a finished run after --from.")
    given = {k: dict(settings.get(k) or {}) for k in ("features", "model", "train")}
    if not scratch:  # the weights fit RUN's features and model: a setting that differs is refused
        have = {"features": asdict(prc.features), "model": asdict(prc.model)}
        changed = [k for sec in have for k, v in given[sec].items()
                   if k not in ("train_frac", "val_frac") and have[sec].get(k) != v]
        if changed:
            raise UsageError(f"a warm start (--from RUN) keeps RUN's features and model, but {', '.join(changed)} "
                             "differ; start afresh with --scratch, or train a new run.")
    chosen = _best_epoch(parent_dir, prc)
    fcfg = replace(prc.features, **{**given["features"], "train_frac": 1.0, "val_frac": 0.0})
    mcfg = replace(prc.model, **given["model"])
    t = {**asdict(prc.train), "patience": 0, "epochs": chosen if scratch else REFRESH_EPOCHS}
    if not scratch:
        t.update(lr=prc.train.lr * FINAL_LR_FRAC, warmup_frac=0.0)
    tcfg = TrainConfig(**{**t, **given["train"]})
    for c in (fcfg, mcfg, tcfg):
        c.validate()
    fc = None
    if not scratch:
        fc, _ = store.load_run(parent_dir)
    root = (prc.parent or {}).get("root") or parent_dir.name
    hrm_weight = (prc.blend or {}).get("hrm_weight") if prc.blend else (prc.parent or {}).get("hrm_weight")
    lineage = {"name": parent_dir.name, "path": str(parent_dir), "start": "scratch" if scratch else "warm",
               "epochs_chosen": chosen, "root": root, "hrm_weight": hrm_weight,
               "series": prc.series_names(), "weights_sha256": prc.weights_sha256}
    return {"features": fcfg, "model": mcfg, "train": tcfg, "lineage": lineage, "warm": not scratch,
            "normalizer": None if scratch else Normalizer.from_dict(prc.normalizer),
            "model_weights": fc.model if fc is not None else None, "conformal": prc.conformal,
            "trained_through": {s["name"]: ((s.get("splits") or {}).get("train") or {}).get("last_date")
                                for s in prc.series or []}}


def _check_series(dss, plan: dict) -> None:
    """A production run trains on the series its parent was trained on: another one is a
    warning, not an error (a watch list may grow)."""
    from finhrm_cli.errors import warn

    known = {n.casefold() for n in plan["lineage"].get("series") or []}
    other = [ds.source.name for ds in dss if ds.source.name.casefold() not in known]
    if other and known:
        warn(f"{', '.join(other)}: not a series {plan['lineage']['name']} was trained on; "
             "its settings are used as they are.")


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
