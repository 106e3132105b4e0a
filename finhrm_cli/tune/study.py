"""Optuna's side of ``finhrm tune``: the import with its one-line message, the storage (a
SQLite file in the runs home, or any RDB URL), the study, a sampler per trial, the pruner, and
the study read back as plain dicts (trials, importances) for the views and ``--json``."""

from __future__ import annotations

import math
import re
from pathlib import Path

from finhrm_cli.config import runs_dir
from finhrm_cli.errors import UsageError

EXTRA = "pip install 'finhrm[tune]'"
# The first trials are drawn at random, then TPE models the good and the bad ones; 5 random
# draws leave most of a 20-30-trial study to the model (Optuna's own default is 10).
STARTUP_TRIALS = 5
# Pruning compares a trial's validation MAE with the median of earlier trials at the same point
# of the schedule; not before 3 trials have finished, never at a schedule's first validation.
PRUNE_AFTER_TRIALS = 3


def optuna():
    """The optuna module, or one line naming the extra that installs it."""
    try:
        import optuna as mod
    except ImportError:
        raise UsageError(f"finhrm tune needs Optuna, which is not installed; install it with {EXTRA}.") from None
    mod.logging.set_verbosity(mod.logging.WARNING)  # finhrm draws its own progress
    return mod


def studies_dir() -> Path:
    return runs_dir() / "studies"


def safe_study_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip(".-")
    return name[:80] or "study"


def storage_url(storage: str | None, name: str) -> str:
    """``--storage URL`` as given, or the study's SQLite file in the runs home."""
    if storage:
        return storage
    path = studies_dir() / f"{safe_study_name(name)}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def shown_url(url: str) -> str:
    """A storage URL without its password, for output."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


# SQLAlchemy 2.1 reads postgresql:// as psycopg (3); postgresql+psycopg2:// takes psycopg2.
DRIVERS = {"postgresql": "pip install 'psycopg[binary]', or write postgresql+psycopg2:// with psycopg2-binary",
           "postgresql+psycopg2": "pip install psycopg2-binary",
           "mysql": "pip install PyMySQL and write mysql+pymysql://", "mysql+pymysql": "pip install PyMySQL"}


# what a database says when two workers create its tables at once, or one writes meanwhile
RACES = ("locked", "already exists", "UNIQUE", "duplicate key", "UniqueViolation", "Duplicate entry")


def _missing(exc: ImportError) -> str:
    cause = exc.__cause__ or exc
    return getattr(cause, "msg", None) or str(cause)


def open_storage(url: str, attempts: int = 6):
    """Optuna's RDB storage for ``url``; a missing driver or a bad URL is one line.  Workers
    started together on a new database race to create its tables, and SQLite says "database
    is locked" while another process writes: both are tried again, a few times."""
    import time

    mod = optuna()
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(attempts):
        try:
            return mod.storages.RDBStorage(url, engine_kwargs=kwargs)
        except ImportError as exc:
            raise UsageError(f"--storage {shown_url(url)}: the database driver is missing ({_missing(exc)}); "
                             f"{DRIVERS.get(url.split(':', 1)[0], 'install the driver the URL names')}.") from None
        except Exception as exc:  # noqa: BLE001  (sqlalchemy's errors: bad URL, server down, refused)
            first = " ".join(str(exc).split())[:160]
            if attempt + 1 < attempts and any(w in first for w in RACES):
                time.sleep(0.25 * 2 ** attempt)
                continue
            raise UsageError(f"--storage {shown_url(url)}: cannot open the study storage ({first}); "
                             "check the URL, the server and the credentials.") from None


def open_study(name: str, url: str, create: bool):
    """The study ``name`` in ``url`` (created when ``create``); minimised, pruned by median."""
    mod = optuna()
    storage = open_storage(url)
    pruner = mod.pruners.MedianPruner(n_startup_trials=PRUNE_AFTER_TRIALS, n_warmup_steps=0)
    if not create:
        names = [s.study_name for s in mod.get_all_study_summaries(storage)]
        if name not in names:
            raise UsageError(f"no study {name!r} in {shown_url(url)} (studies there: {', '.join(names) or 'none'}); "
                             "run `finhrm tune DATA` first.")
        return mod.load_study(study_name=name, storage=storage, pruner=pruner)
    return mod.create_study(study_name=name, storage=storage, direction="minimize", pruner=pruner,
                            load_if_exists=True)


def sampler_for(trial_number: int, seed: int):
    """TPE seeded with the study's seed and the trial's number: a fresh study is repeatable,
    and workers sharing one study never draw the same random start (their trial numbers differ)."""
    mod = optuna()
    return mod.samplers.TPESampler(seed=(seed * 1_000_003 + trial_number) % 2**32, n_startup_trials=STARTUP_TRIALS)


def schedule_step(epoch: int, epochs: int) -> int:
    """Where a validation lies in its schedule, in percent: trials with different epoch counts
    are compared at the same point of their learning-rate decay."""
    return int(round(100 * epoch / max(epochs, 1)))


def _finite(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def trial_rows(study) -> list[dict]:
    """Every trial as a plain dict: number, state, value, params, seconds, run, host, reason."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        secs = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name.lower(),
                     "value": _finite(t.value) if t.state.name == "COMPLETE" else None,
                     "params": dict(t.params), "seconds": round(secs, 1) if secs is not None else None,
                     "epochs_run": t.user_attrs.get("epochs_run"), "run": t.user_attrs.get("run"),
                     "host": t.user_attrs.get("host"), "reason": t.user_attrs.get("reason"),
                     "last_step": max(t.intermediate_values) if t.intermediate_values else None})
    return rows


def importances(study) -> tuple[dict | None, str | None]:
    """Optuna's parameter importances (fANOVA) over the complete trials, or None and why."""
    mod = optuna()
    done = [t for t in study.get_trials(deepcopy=False) if t.state == mod.trial.TrialState.COMPLETE]
    if len(done) < 3:
        return None, f"importances need at least 3 complete trials ({len(done)} so far)."
    try:
        imp = mod.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        return None, f"importances could not be computed ({' '.join(str(exc).split())[:120]})."
    return {k: round(float(v), 4) for k, v in imp.items()}, None


def headline(metrics: dict | None, several: bool, dates: bool = True) -> dict | None:
    """A split's headline: the forecast's MAE (one series; None for several, whose price-unit
    MAEs do not pool) and skill (the mean of the series' skills for several), its rows and,
    with ``dates``, its first and last dates."""
    if metrics is None:
        return None
    m = (metrics.get("results") or {}).get("finhrm") or {}
    out = {"mae": None if several else m.get("mae"), "skill": m.get("skill_mean") if several else m.get("skill"),
           "rows": metrics.get("rows")}
    if dates:
        out.update(first_date=metrics.get("first_date"), last_date=metrics.get("last_date"))
    return out
