"""``finhrm tune --ensemble K``: one ensemble run (``run.ensemble``) from a study, measured
against the best single trial on the same rows.

* ``--ensemble K``: the K best complete trials whose runs this machine holds;
* ``--ensemble K --ensemble-seeds``: the best trial's run and K-1 runs of its settings with
  the next seeds (trained now, kept in ``studies/NAME/seeds-NNNN/`` and reused next time).

The ensemble's validation MAE is compared with the best trial's on the ensemble's own rows
(the members' longest window sets them); both are then scored on the test split once.
"""

from __future__ import annotations

from pathlib import Path

from finhrm_cli.errors import UsageError
from finhrm_cli.forecast.ensemble import EnsembleForecaster
from finhrm_cli.forecast.parts import of
from finhrm_cli.run import lock
from finhrm_cli.tune.events import Stage
from finhrm_cli.tune.study import headline

MAX_K = 20


def best_trials(study, k: int, run_of) -> list[tuple]:
    """The ``k`` best complete trials whose run this machine holds (``run_of(trial)``: its
    run or None), best first, as (trial, run)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.value is not None]
    out = []
    for t in sorted(done, key=lambda t: (t.value, t.number)):
        run = run_of(t)
        if run:
            out.append((t, run))
        if len(out) == k:
            break
    return out


def _seed_runs(study, best, settings: dict, k: int, trials_dir: Path, paths, date_col, col_map, emit) -> list[dict]:
    """The best trial's settings trained with the k-1 seeds after its own (reused when kept)."""
    from finhrm_cli.service import training

    seed = int(settings["train"].get("seed", 0))
    key = f"seeds_{best.number}"
    kept = dict(study.user_attrs.get(key) or {})
    out = []
    for s in range(seed + 1, seed + k):
        run = kept.get(str(s))
        if not (run and lock.finished(run)):
            emit(Stage(f"training the best trial's settings with seed {s} (ensemble member {len(out) + 2} of {k})"))
            folder = trials_dir / f"seeds-{best.number:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            run = training.train(paths, {**settings, "train": {**settings["train"], "seed": s}}, out=folder,
                                 date_col=date_col, col_map=col_map, callback=emit, score_test=False)["run"]
            kept[str(s)] = run
            study.set_user_attr(key, kept)
        out.append({"run": run, "seed": s, "trial": best.number})
    return out


def _headline(scored: dict, several: bool) -> dict:
    return headline(scored, several, dates=False)


def build(study, name: str, k: int, seeds: bool, settings: dict, trials_dir: Path, paths, date_col, col_map,
          emit, several: bool, run_of) -> dict:
    """Make the ensemble run and measure it (module notes)."""
    from finhrm_cli.run import store
    from finhrm_cli.run.data import run_datasets
    from finhrm_cli.run.make_ensemble import make_ensemble

    if not 2 <= k <= MAX_K:
        raise UsageError(f"--ensemble {k}: give 2 to {MAX_K} members.")
    if seeds:
        top = best_trials(study, 1, run_of)
        if not top:
            raise UsageError("--ensemble-seeds: the study has no complete trial whose run is on this machine; run trials first.")
        if top[0][0].number != study.best_trial.number:
            raise UsageError("--ensemble-seeds: the best trial's run is not on this machine; run it where that "
                             "trial ran, or use --ensemble K without --ensemble-seeds.")
        seed = int(settings["train"].get("seed", 0))
        members = [{"run": top[0][1], "seed": seed, "trial": top[0][0].number}]
        members += _seed_runs(study, top[0][0], settings, k, trials_dir, paths, date_col, col_map, emit)
    else:
        top = best_trials(study, k, run_of)
        if len(top) < k:
            raise UsageError(f"--ensemble {k}: the study has {len(top)} complete trial(s) with a run on this machine; "
                             "run more trials, or lower --ensemble.")
        members = [{"run": run, "trial": t.number, "value": t.value} for t, run in top]
    emit(Stage(f"making the ensemble of {k} runs and scoring it on validation"))
    about = {"how": "seeds of the best trial" if seeds else f"the {k} best trials", "study": name}
    made = make_ensemble([Path(m["run"]) for m in members], trials_dir, f"{name}-ensemble", about,
                         [{k2: v for k2, v in m.items() if k2 != "run"} for m in members])
    fc, rc = store.load_run(made["run"])
    alone = EnsembleForecaster(fc.members[:1], fc.conformal, fc.run_dir)  # the best trial, on the same rows
    dss = run_datasets(Path(made["run"]), rc)
    out = {"run": made["run"], "how": about["how"], "k": k, "members": made["members"],
           "val": _headline(made["val"], several),
           "best_alone_val": _headline(alone.score([p for p in of(dss, "val") if len(p[1])], 0.8, "split"), several)}
    te = [p for p in of(dss, "test") if len(p[1])]
    if te:
        emit(Stage("scoring the ensemble and the best trial on the test split, once"))
        from finhrm_cli.service.training import score_test_split

        out["test"] = _headline(score_test_split(Path(made["run"])) or {}, several)
        out["best_alone_test"] = _headline(alone.score(te, 0.8), several)
    return out
