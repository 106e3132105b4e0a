"""Making an ensemble run folder (the format: ``run.ensemble``) from finished runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from finhrm_cli.errors import UsageError
from finhrm_cli.forecast.parts import of
from finhrm_cli.run import lock, store
from finhrm_cli.run.ensemble import ENSEMBLE, load_ensemble
from finhrm_cli.run.files import CONFIG, DATA_DIR, LOCK, MARKER, MEMBERS_DIR, STATE_DIR


def _dates(rc) -> dict:
    """Per series, the first and last date of each split (the window length aside)."""
    return {str(s.get("name")): {k: [(v or {}).get("first_date"), (v or {}).get("last_date")]
                                 for k, v in (s.get("splits") or {}).items()} for s in rc.series_records()}


def _copy_member(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, symlinks=False,
                    ignore=shutil.ignore_patterns(STATE_DIR, LOCK, MARKER, ".*.tmp*"))


def make_ensemble(member_dirs: list[Path], root: Path, name: str, about: dict, scores: list[dict] | None = None) -> dict:
    """A new ensemble run folder under ``root`` from the finished runs ``member_dirs`` (made by
    finhrm: ``finhrm tune``'s trials).  ``about``: what the ensemble is (kept in its config);
    ``scores``: per member, what it scored (kept beside it).  -> {"run", "val", "members"}."""
    from finhrm_cli.run.create import discard_creation, new_run_dir
    from finhrm_cli.run.data import run_datasets

    if len(member_dirs) < 2:
        raise UsageError("an ensemble needs at least 2 finished runs; run more trials or lower --ensemble.")
    configs = []
    for d in member_dirs:
        if not lock.finished(d):
            raise UsageError(f"{d}: not a finished run; an ensemble is made of finished runs only.")
        configs.append(store.read_config(d))
    if len({json.dumps(_dates(c), sort_keys=True, default=str) for c in configs}) != 1:
        raise UsageError("the runs of an ensemble must share one split of the same data; these do not.")
    frame = max(range(len(configs)), key=lambda i: configs[i].features.seq_len)  # the first longest window
    run_dir = new_run_dir(name, root)
    try:
        entries = []
        for i, d in enumerate(member_dirs):
            rel = f"{MEMBERS_DIR}/{i:02d}"
            _copy_member(Path(d), run_dir / rel)
            entries.append({"dir": rel, "from": str(d), "weights_sha256": configs[i].weights_sha256,
                            **((scores or [{}] * len(member_dirs))[i] or {})})
        shutil.copytree(Path(member_dirs[frame]) / DATA_DIR, run_dir / DATA_DIR, symlinks=False)
        cfg = store.read_json(Path(member_dirs[frame]) / CONFIG)
        for k in ("weights_sha256", "weights_sha256_next", "blend", "halt_calibration", "conformal"):
            cfg.pop(k, None)
        cfg["created"] = _now()
        cfg[ENSEMBLE] = {**about, "members": entries, "windows_of": entries[frame]["dir"]}
        rc = store.RunConfig.from_dict(cfg, run_dir / CONFIG)
        fc, rc = load_ensemble(run_dir, rc, store.load_run)
        dss = run_datasets(run_dir, rc)
        val = [(ds, w) for ds, w in of(dss, "val") if len(w)]
        if not val:
            raise UsageError("the runs hold no validation rows; an ensemble's intervals are calibrated on them.")
        pred_val = fc.forecast(val)  # once: the residuals and the validation score read it
        fc.conformal = rc.conformal = fc.residuals(val, dss, pred_val)
        metrics = {"val": fc.score(val, 0.8, intervals="split", hrm_preds=pred_val)}
        writer = store.RunWriter(run_dir)
        writer.save_config(rc)
        writer.save_metrics(metrics)  # last: the run is finished
    except BaseException:
        discard_creation(run_dir)
        raise
    return {"run": str(run_dir), "val": metrics["val"], "members": entries}


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")
