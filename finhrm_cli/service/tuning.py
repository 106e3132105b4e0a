"""``finhrm tune``: search the training settings on the user's own series with Optuna.

Each trial trains a real run (``service.training.train``) into its own folder under the
study's folder in the runs home (``studies/NAME/trial-NNNN/``), on the same data and split a
default ``finhrm train`` makes, and is scored on **validation only**: the trial's run is
finalised without its test split (``score_test=False``), so no test number exists while the
search runs.  Training reports each epoch's validation MAE; a trial far behind the median of
earlier trials at the same point of its schedule is pruned (its folder removed).  After the
search the best trial is scored on the test split once (``training.score_test_split``),
next to a run of the default settings on the same split, and its settings are written as a
``--config`` file.  The study lives in Optuna's storage (a SQLite file in the runs home, or
``--storage URL``), so running the command again, or on another machine, adds trials to it.
``--objective folds`` scores each trial on walk-forward folds inside the training and
validation rows instead (``service.folds``); ``--ensemble K`` then makes one ensemble run from
the study (``tune.ensemble``).
"""

from __future__ import annotations

import math
import shutil
import socket
import time
from pathlib import Path

from finhrm_cli.config import FeatureConfig, dump_toml
from finhrm_cli.errors import DataError, TrainingError, UsageError
from finhrm_cli.fsutil import atomic_write_text
from finhrm_cli.service import training
from finhrm_cli.train.events import Callback, Evaluated, ignore
from finhrm_cli.tune import space as spacemod
from finhrm_cli.tune import study as studymod
from finhrm_cli.tune.events import Stage, TrialEnded, TrialStarted

ATTR = "finhrm"  # the study's user attribute holding what the study was made with


class TuneInterrupted(KeyboardInterrupt):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _reference(paths, base, date_col, col_map) -> tuple[list, dict]:
    """The series and the split a default ``finhrm train`` makes of DATA (with --config)."""
    from finhrm_cli import data

    fcfg = FeatureConfig(**base.get("features", {}))
    fcfg.validate()
    dss = data.prepare_many(paths, fcfg, date_col=date_col, col_map=col_map)
    return dss, split_of([{"name": ds.source.name, "splits": ds.splits} for ds in dss])


def split_of(series: list[dict]) -> dict:
    """Per series, the first and last dates of validation and test: what every trial, the
    default run and a resumed study must share."""
    return {s["name"]: {k: [s["splits"][k].get("first_date"), s["splits"][k].get("last_date")]
                        for k in ("val", "test")} for s in series}


def _metric(val: dict, several: bool) -> float | None:
    """The objective from a run's validation metrics: the forecast's MAE (one series) or the
    mean of the series' skills (several series: price-unit MAEs do not pool)."""
    res = (val or {}).get("results", {}).get("finhrm") or {}
    v = res.get("skill_mean") if several else res.get("mae")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _check_same(attrs: dict, made: dict, name: str) -> None:
    """A resumed study must search the same space from the same settings on the same split."""
    for key, what in (("split", "data (its validation and test dates)"), ("base", "--config settings"),
                      ("space", "search space (--space)"), ("objective", "objective (--objective, --folds)")):
        if attrs.get(key, "val") != made[key]:
            raise UsageError(f"study {name!r} was made with another {what}; its trials would not compare. "
                             "Pass --study NEW to start a new study, or the same DATA, --config, --space and --objective.")


class _Search:
    """One ``finhrm tune`` invocation: the study, the settings, and its trials."""

    def __init__(self, paths, base, space, seed, study, trials_dir, several, callback, date_col, col_map,
                 folds: int | None = None):
        self.paths, self.base, self.space, self.seed, self.folds = paths, base, space, seed, folds
        self.study, self.trials_dir, self.several = study, trials_dir, several
        self.emit, self.date_col, self.col_map = callback, date_col, col_map
        self.split = study.user_attrs[ATTR]["split"]
        self.host = socket.gethostname()

    def run(self, n_trials: int | None, timeout: float | None) -> int:
        """Up to ``n_trials`` new trials, none started after ``timeout`` seconds; how many ran."""
        deadline = time.monotonic() + timeout if timeout else None
        i = 0
        while (n_trials is None or i < n_trials) and (deadline is None or time.monotonic() < deadline):
            i += 1
            self.one(i, n_trials)
        return i

    def one(self, index: int, total: int | None) -> None:
        opt = studymod.optuna()
        trial = self.study.ask()
        self.study.sampler = studymod.sampler_for(trial.number, self.seed)
        params = spacemod.suggest(trial, self.space)
        trial.set_user_attr("host", self.host)
        self.emit(TrialStarted(number=trial.number, index=index, total=total, params=params))
        t0 = time.perf_counter()
        folder = self.trials_dir / f"trial-{trial.number:04d}"
        state, value, reason = "fail", None, None
        try:
            value = self.train(trial, params, folder)
            state = "complete"
        except opt.TrialPruned:
            state, reason = "pruned", "behind the median of earlier trials"
        except (UsageError, DataError, TrainingError) as exc:
            reason = " ".join(str(exc).split())[:300]
        except KeyboardInterrupt:
            self.study.tell(trial, state=opt.trial.TrialState.FAIL)
            shutil.rmtree(folder, ignore_errors=True)
            raise TuneInterrupted(f"tune interrupted in trial {trial.number}; the study keeps the trials that "
                                  "ended, and the same command continues it.") from None
        if state != "complete":
            trial.set_user_attr("reason", reason)
            shutil.rmtree(folder, ignore_errors=True)  # made by this trial, unfinished: nothing to keep
        self.study.tell(trial, value if state == "complete" else None,
                        state=getattr(opt.trial.TrialState, state.upper()))
        best = self._best()
        self.emit(TrialEnded(number=trial.number, state=state, value=value, reason=reason,
                             best_value=best.value if best else None, best_number=best.number if best else None,
                             seconds=round(time.perf_counter() - t0, 1)))

    def _best(self):
        try:
            return self.study.best_trial
        except ValueError:  # no complete trial yet
            return None

    def train(self, trial, params: dict, folder: Path) -> float:
        """Train the trial's run (validation only), report each epoch for pruning; its score."""
        opt = studymod.optuna()
        settings = spacemod.trial_settings(self.base, self.space, params)
        bad = spacemod.fits(settings)
        if bad:
            raise UsageError(f"these settings make no valid model: {bad}")
        if self.folds:
            return self.train_folds(trial, settings)
        epochs = settings["train"].get("epochs", 6)
        emit = self.emit

        def report(event) -> None:
            emit(event)
            if isinstance(event, Evaluated) and event.val_mae is not None and math.isfinite(event.val_mae):
                trial.report(event.val_mae, studymod.schedule_step(event.epoch, epochs))
                # after the last epoch the run is trained: its forecast is scored, never pruned
                if event.epoch < epochs and trial.should_prune():
                    raise opt.TrialPruned()

        folder.mkdir(parents=True, exist_ok=False)
        result = training.train(self.paths, settings, out=folder, date_col=self.date_col, col_map=self.col_map,
                                callback=report, score_test=False)
        assert "test" not in result["metrics"], "a trial's result must hold no test score"
        trial.set_user_attr("run", result["run"])
        trial.set_user_attr("epochs_run", result.get("epochs_run"))
        series = [{"name": s, "splits": sp} for s, sp in _run_splits(result["run"])]
        if split_of(series) != self.split:
            raise DataError(f"trial {trial.number} made another split than the study's; this is a bug, please report it.")
        value = _metric(result["metrics"].get("val"), self.several)
        if value is None:
            raise TrainingError("the trial's validation score is not finite.")
        return value

    def train_folds(self, trial, settings: dict) -> float:
        """The trial's walk-forward score inside training and validation (``service.folds``),
        reported after each fold for pruning; the trial keeps no run (``trial_run`` trains
        one for the best, after the search)."""
        from finhrm_cli.service import folds

        opt = studymod.optuna()

        def after_fold(i: int, mean: float) -> None:
            trial.report(mean, i)
            if i < self.folds and trial.should_prune():
                raise opt.TrialPruned()

        res = folds.objective(self.paths, settings, self.folds, self.date_col, self.col_map, self.emit, after_fold)
        trial.set_user_attr("folds", res["folds"])
        if not math.isfinite(res["value"]):
            raise TrainingError("the trial's walk-forward score is not finite.")
        return res["value"]


def _run_splits(run_dir) -> list[tuple[str, dict]]:
    from finhrm_cli.run import store

    rc = store.read_config(run_dir)
    return [(s["name"], s["splits"]) for s in rc.series] if rc.series else [(rc.source["name"], rc.splits)]


def tune(paths: list[Path], *, config: Path | None = None, space_path: Path | None = None, trials: int | None = 30,
         timeout: float | None = None, seed: int | None = None, study_name: str | None = None, storage: str | None = None,
         best_toml: Path | None = None, compare: bool = True, date_col=None, col_map=None,
         callback: Callback | None = None, ensemble: int | None = None, ensemble_seeds: bool = False,
         objective: str = "val", folds: int = 3) -> dict:
    """Add up to ``trials`` trials (none started after ``timeout`` seconds) to the study of
    DATA, then score the best on test beside the defaults and write its settings (``after``)."""
    emit = callback or ignore
    studymod.optuna()  # the one-line message before any work
    base = spacemod.base_settings(config, seed)
    seed = int(base["train"].get("seed", 0))
    space = spacemod.load_space(space_path)
    bad = spacemod.fits(base)
    if bad:
        raise UsageError(f"--config {config}: {bad}")
    dss, split = _reference(paths, base, date_col, col_map)
    name = studymod.safe_study_name(study_name or training.run_name(dss))
    url = studymod.storage_url(storage, name)
    study = studymod.open_study(name, url, create=True)
    several = len(dss) > 1
    made = {"split": split, "base": base, "space": space, "data": [str(p) for p in paths], "seed": seed,
            "objective": _objective(objective, folds), "metric": _metric_name(objective, folds, several)}
    if ATTR in study.user_attrs:
        _check_same(study.user_attrs[ATTR], made, name)
    else:
        study.set_user_attr(ATTR, made)
    trials_dir = studymod.studies_dir() / name
    search = _Search(paths, base, space, seed, study, trials_dir, several, emit, date_col, col_map,
                     folds if objective == "folds" else None)
    t0 = time.perf_counter()
    ran = search.run(trials, timeout)
    wall = round(time.perf_counter() - t0, 1)
    after = _after(study, name, url, base, trials_dir, paths, date_col, col_map, emit, best_toml, compare)
    if ensemble:
        from finhrm_cli.tune import ensemble as ensmod

        best = search._best()
        if best is None:
            raise UsageError("--ensemble: the study has no complete trial yet; run trials first.")
        after["ensemble"] = ensmod.build(
            study, name, ensemble, ensemble_seeds, spacemod.trial_settings(base, space, best.params), trials_dir,
            paths, date_col, col_map, emit, several,
            lambda t: trial_run(study, t, base, trials_dir, paths, date_col, col_map, emit))
    return {**summary(study, url), **after, "trials_run": ran, "wall_seconds": wall}


def _objective(objective: str, folds: int) -> str:
    if objective not in ("val", "folds"):
        raise UsageError(f"--objective {objective}: use val (the validation split) or folds (walk-forward folds "
                         "inside the training and validation rows).")
    if objective == "folds" and not 2 <= folds <= 10:
        raise UsageError(f"--folds {folds}: give 2 to 10 walk-forward folds.")
    return "val" if objective == "val" else f"folds:{folds}"


def _metric_name(objective: str, folds: int, several: bool) -> str:
    if objective == "folds":
        return f"walk-forward skill (mean of {folds} folds inside train+val; MAE / persistence's)"
    return "val skill (mean over series)" if several else "val MAE"


def _compact(metrics: dict | None, several: bool) -> dict | None:
    """A split's headline with its dates (``tune.study.headline``); None without metrics."""
    return studymod.headline(metrics, several) if metrics else None


def _default_run(study, base, trials_dir, paths, date_col, col_map, emit, several) -> dict:
    """The default settings (with --config) trained once on the same split, test scored as any
    ``finhrm train`` run; reused from the study when this machine has it already."""
    from finhrm_cli.run import lock, store

    known = study.user_attrs.get("default") or {}
    if known.get("run") and lock.finished(known["run"]):
        return known
    k = _folds_of(study)
    emit(Stage("training the default settings on the same split (for the comparison)"))
    folder = trials_dir / "default"
    folder.mkdir(parents=True, exist_ok=True)
    result = training.train(paths, spacemod.settings_with(base, {}), out=folder, date_col=date_col,
                            col_map=col_map, callback=emit)
    metrics = store.read_metrics(result["run"], [])
    out = {"run": result["run"], "value": _metric(metrics.get("val"), several),
           "val": _compact(metrics.get("val"), several), "test": _compact(metrics.get("test"), several),
           "host": socket.gethostname()}
    if k:  # the study's objective: the default settings' walk-forward folds, as every trial's
        from finhrm_cli.service import folds

        emit(Stage(f"the default settings' {k} walk-forward folds (for the comparison)"))
        out["value"] = folds.objective(paths, spacemod.settings_with(base, {}), k, date_col, col_map, emit)["value"]
    study.set_user_attr("default", out)
    return out


def _folds_of(study) -> int | None:
    """The study's walk-forward folds (``--objective folds``), None when it scores validation."""
    obj = (study.user_attrs.get(ATTR) or {}).get("objective", "val")
    return int(obj.split(":", 1)[1]) if obj.startswith("folds:") else None


def trial_run(study, trial, base, trials_dir, paths, date_col, col_map, emit) -> str | None:
    """The finished run of a complete trial on this machine: its own, or (a walk-forward study,
    whose trials keep none) its settings trained once on the study's split now, kept in the
    study (``run_N``) for next time.  None: a validation trial whose run is elsewhere."""
    from finhrm_cli.run import lock

    run = trial.user_attrs.get("run") or study.user_attrs.get(f"run_{trial.number}")
    if run and lock.finished(run):
        return run
    if not _folds_of(study):
        return None
    emit(Stage(f"training trial {trial.number}'s settings once on the split (its folds kept no run)"))
    folder = trials_dir / f"trial-{trial.number:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    settings = spacemod.trial_settings(base, study.user_attrs[ATTR]["space"], trial.params)
    run = training.train(paths, settings, out=folder, date_col=date_col, col_map=col_map, callback=emit,
                         score_test=False)["run"]
    study.set_user_attr(f"run_{trial.number}", run)
    return run


def _after(study, name, url, base, trials_dir, paths, date_col, col_map, emit, best_toml, compare) -> dict:
    """The best trial's test score (computed once, kept in the study), the default settings'
    run beside it, and the best settings as a --config file."""
    try:
        best = study.best_trial
    except ValueError:
        return {"best_toml": None}
    several = len(study.user_attrs[ATTR]["split"]) > 1
    key = f"test_{best.number}"
    run = trial_run(study, best, base, trials_dir, paths, date_col, col_map, emit)
    if key not in study.user_attrs and run:  # (trial_run returns finished runs only)
        emit(Stage(f"scoring the best trial ({best.number}) on the test split, once"))
        study.set_user_attr(key, _compact(training.score_test_split(Path(run)), several))
    if compare:
        _default_run(study, base, trials_dir, paths, date_col, col_map, emit, several)
    settings = spacemod.trial_settings(base, study.user_attrs[ATTR]["space"], best.params)
    path = Path(best_toml) if best_toml else studymod.studies_dir() / f"{name}-best.toml"
    atomic_write_text(path, dump_toml(settings, [
        f"finhrm tune: the best settings of study {name} (trial {best.number}, "
        f"{study.user_attrs[ATTR]['metric']} {best.value:.6g}), on {', '.join(study.user_attrs[ATTR]['split'])}.",
        "Train with them: finhrm train DATA --config THIS_FILE",
    ]))
    return {"best_toml": str(path)}


def summary(study, url: str) -> dict:
    """The study as plain data: trials, best, default, test scores, importances."""
    attrs = study.user_attrs.get(ATTR) or {}
    rows = studymod.trial_rows(study)
    states = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running")}
    try:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": dict(b.params),
                "run": b.user_attrs.get("run") or study.user_attrs.get(f"run_{b.number}"),
                "host": b.user_attrs.get("host"), "test": study.user_attrs.get(f"test_{b.number}")}
    except ValueError:
        best = None
    imp, why = studymod.importances(study)
    return {"study": study.study_name, "storage": studymod.shown_url(url), "metric": attrs.get("metric"),
            "series": sorted(attrs.get("split") or {}), "trials": rows, "counts": states, "best": best,
            "default": study.user_attrs.get("default"), "importances": imp, "importances_note": why,
            "base": attrs.get("base"), "space": attrs.get("space")}


def show(study: str, storage: str | None = None) -> dict:
    """``finhrm tune --show STUDY``: a study read back, nothing trained.  STUDY is a name (in
    the runs home's studies, or in --storage) or the path of a study's .db file."""
    p = Path(study).expanduser()
    if storage is None and p.suffix == ".db":
        if not p.is_file():
            raise UsageError(f"--show {p}: no such study file; list them in {studymod.studies_dir()}.")
        name, url = p.stem, f"sqlite:///{p.resolve()}"
    else:
        name = studymod.safe_study_name(study)
        url = storage or f"sqlite:///{studymod.studies_dir() / (name + '.db')}"
        if storage is None and not (studymod.studies_dir() / f"{name}.db").is_file():
            raise UsageError(f"--show {study}: no study of that name in {studymod.studies_dir()}; "
                             "pass its name as `finhrm tune` printed it, its .db file, or --storage URL.")
    return summary(studymod.open_study(name, url, create=False), url)



