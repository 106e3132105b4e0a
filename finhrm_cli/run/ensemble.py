"""Ensemble runs: one run folder holding several finished runs, forecasting their mean.

An ensemble run folder is a run folder (``run.files``) whose config.json has an ``ensemble``
section and whose members are **copies** of the member runs, in ``members/00``, ``members/01``
...: deleting or retraining a member's original folder changes nothing, and finhrm never
deletes the originals.  Its other files:

    config.json   the settings, split, source and normaliser of the member with the longest
                  window (its windows are the ensemble's rows), ``ensemble`` (each member's
                  folder, where it was copied from, its weights' digest and what it scored),
                  and the ensemble's own conformal residuals; no blend, no weights digest
    data/         that member's prepared copy of the series (``evaluate`` reads it)
    metrics.json  the ensemble's validation score (and test, once ``finhrm tune`` scores it);
                  written last, it marks the run finished

Copies leave out each member's training state (``state/``, only ``--resume`` reads it) and lock.
``run.make_ensemble`` makes the folder; this module loads it (``store.load_run`` calls it).
"""

from __future__ import annotations

from pathlib import Path

from finhrm_cli.errors import RunError
from finhrm_cli.forecast.ensemble import EnsembleForecaster, Member
from finhrm_cli.run.files import CONFIG, MEMBERS_DIR

ENSEMBLE = "ensemble"  # config.json's section


def _member_dir(run_dir: Path, entry) -> Path:
    """A member's folder from config.json (untrusted): a plain folder inside ``members/``."""
    rel = entry.get("dir") if isinstance(entry, dict) else None
    base = (run_dir / MEMBERS_DIR).resolve()
    if not isinstance(rel, str) or not rel.startswith(MEMBERS_DIR + "/"):
        raise RunError(f"{run_dir / CONFIG}: an ensemble member's folder is missing or not under {MEMBERS_DIR}/; "
                       "the run is damaged or was edited by hand, make the ensemble again.")
    path = run_dir / rel
    try:
        inside = path.resolve().is_relative_to(base) and path.resolve() != base
    except (OSError, RuntimeError):
        inside = False
    if not inside or not (path / CONFIG).is_file():
        raise RunError(f"{path}: the ensemble member is missing or lies outside {MEMBERS_DIR}/; "
                       "the run is damaged, make the ensemble again.")
    return path


def load_ensemble(run_dir: Path, rc, load_run):
    """(EnsembleForecaster, RunConfig) of an ensemble run folder; ``load_run``: the loader of
    one run (``store.load_run``, passed in: store calls this module)."""
    section = rc.extra.get(ENSEMBLE)
    entries = section.get("members") if isinstance(section, dict) else None
    if not isinstance(entries, list) or not entries:
        raise RunError(f"{run_dir / CONFIG}: the ensemble section names no members; make the ensemble again.")
    members = []
    for entry in entries:
        path = _member_dir(run_dir, entry)
        fc, mrc = load_run(path)
        if isinstance(fc, EnsembleForecaster):
            raise RunError(f"{path}: an ensemble member is itself an ensemble; make the ensemble again.")
        if entry.get("weights_sha256") and entry["weights_sha256"] != fc.weights_sha256:
            raise RunError(f"{path}: the member's weights are not the ones the ensemble was made with; "
                           "make the ensemble again.")
        members.append(Member(fc, mrc, path))
    return EnsembleForecaster(members, rc.conformal, run_dir), rc
