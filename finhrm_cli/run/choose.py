"""Which run a command uses: one rule for every command (``predict``, ``evaluate``,
``inspect``).

- A run named by the user (``-m/--model RUN`` or the positional RUN) is used; when it was
  trained on other series than the data the command reads, one warning line says so.
- Without a name and with data (``predict DATA``, ``evaluate --data``, ``inspect --data``):
  the newest *finished* run trained on the data's series.  A series is matched by its name
  (a file's stem, a prepared folder's series name; case ignored) or, for a renamed copy, by
  the file's sha256 fingerprint that the run recorded.  A run trained on other series is
  never picked silently: with no match the command stops with one line saying how to fix it.
- Without a name and without data: the newest finished run.

``Choice.reason`` is the "why" the command line prints beside the run's name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from finhrm_cli.errors import RunError, warn
from finhrm_cli.run import store
from finhrm_cli.run.create import runs_root
from finhrm_cli.run.files import CONFIG
from finhrm_cli.run.lock import FINISHED, TRAINING, run_status


@dataclass(frozen=True)
class SeriesKey:
    """What identifies a series a command reads: its name and, when known, the sha256 of
    its file (``Source.fingerprint``)."""

    name: str
    fingerprint: str | None = None


@dataclass(frozen=True)
class Choice:
    path: Path
    reason: str  # "newest finished run trained on aapl", "named with --model", ...

    @property
    def name(self) -> str:
        return self.path.name


def run_series(run_dir: Path) -> list[SeriesKey]:
    """The series a run was trained on, from its config.json (``[]`` when unreadable)."""
    try:
        cfg = store.read_json(Path(run_dir) / CONFIG, default={})
    except RunError:
        return []
    if not isinstance(cfg, dict):
        return []
    out = []
    series = cfg.get("series") if isinstance(cfg.get("series"), list) else []
    for s in series:
        if isinstance(s, dict) and isinstance(s.get("name"), str):
            src = s.get("source") if isinstance(s.get("source"), dict) else {}
            fp = src.get("fingerprint")
            out.append(SeriesKey(s["name"], fp if isinstance(fp, str) and fp else None))
    if not out and isinstance(cfg.get("source"), dict) and isinstance(cfg["source"].get("name"), str):
        fp = cfg["source"].get("fingerprint")
        out.append(SeriesKey(cfg["source"]["name"], fp if isinstance(fp, str) and fp else None))
    return out


def _same(a: SeriesKey, b: SeriesKey) -> bool:
    return a.name.casefold() == b.name.casefold() or bool(a.fingerprint and a.fingerprint == b.fingerprint)


def covers(trained: list[SeriesKey], wanted: list[SeriesKey]) -> bool:
    """Every wanted series is one the run was trained on (by name or by fingerprint)."""
    return all(any(_same(w, t) for t in trained) for w in wanted)


def _names(keys, most: int = 3) -> str:
    names = [k.name for k in keys]
    return ", ".join(names) if len(names) <= most else f"{', '.join(names[:most])} and {len(names) - most} more"


def _trained_on(wanted: list[SeriesKey], trained: list[SeriesKey]) -> str:
    """"trained on aapl" (by name; ", the same file" when the fingerprints agree too), or
    "trained on this very file (as aapl)" for a renamed copy of the training file."""
    by_name = [w for w in wanted if any(w.name.casefold() == t.name.casefold() for t in trained)]
    copies = [t for w in wanted if w not in by_name for t in trained if w.fingerprint and w.fingerprint == t.fingerprint]
    same = all(any(w.fingerprint and w.fingerprint == t.fingerprint for t in trained) for w in wanted)
    if copies:
        files = "these very files" if len(wanted) > 1 else "this very file"
        return f"trained on {files}, as {_names(trained)}"
    return f"trained on {_names(wanted)}" + (", the same file" + ("s" if len(wanted) > 1 else "") if same else "")


def _newest(base: Path) -> dict[Path, str]:
    """The runs under ``base``, newest first, with their status (read once, by ``list_runs``)."""
    return {Path(r["path"]): r["status"] for r in store.list_runs(base, sizes=False)}


def choose_run(ref: str | os.PathLike | None, wanted: list[SeriesKey] | None = None, root=None,
               how: str = "--model", fix: str = "finhrm train DATA") -> Choice:
    """The run a command works on (module docstring).  ``wanted``: the series the command
    reads (None: no data); ``how``: the option that names a run; ``fix``: the training
    command for the data, in the error when no run matches."""
    if ref is not None and str(ref) != "":
        run_dir = store.resolve_run(ref, root)
        if wanted:
            trained = run_series(run_dir)
            missing = [w for w in wanted if not any(_same(w, t) for t in trained)]
            if trained and missing:
                warn(f"{run_dir.name} was trained on {_names(trained)}, not on {_names(missing)}; "
                     f"its forecasts for {_names(missing)} come from another series "
                     f"(train one with `{fix}`).")
        return Choice(run_dir, f"named with {how}")
    base = runs_root(root)
    status = _newest(base)
    runs = list(status)
    if not runs:
        raise RunError(f"no runs yet under {base}; train one with `{fix}`.")
    if not wanted:
        finished = [p for p in runs if status[p] == FINISHED]
        if not finished:
            raise RunError(
                f"no finished run under {base} (the latest, {runs[0].name}, is {status[runs[0]]}); "
                f"resume it with `finhrm train --resume {runs[0].name}`, or name a run with {how} RUN."
            )
        return Choice(finished[0], "newest finished run")
    series = {p: run_series(p) for p in runs}
    matching = [p for p in runs if covers(series[p], wanted)]
    finished = [p for p in matching if status[p] == FINISHED]
    if finished:
        return Choice(finished[0], "newest finished run " + _trained_on(wanted, series[finished[0]]))
    what = f"no finished run trained on {_names(wanted)} under {base}"
    if matching:
        st = status[matching[0]]
        todo = ("wait for it to finish" if st == TRAINING
                else f"finish it with `finhrm train --resume {matching[0].name}`")
        raise RunError(f"{what} (the latest, {matching[0].name}, is {st}); {todo}, or name a run with {how} RUN.")
    raise RunError(f"{what}; train one with `{fix}`, or name a run with {how} RUN "
                   "(`finhrm inspect --list` shows them).")


def open_run(ref, wanted: list[SeriesKey] | None = None, how: str = "--model", fix: str = "finhrm train DATA"):
    """The run a command works on (``choose_run``), its Forecaster, its config and the
    ``Choice``; a run named explicitly that is still training or unfinished loads with a
    one-line warning."""
    from finhrm_cli.run.config import RUN_KEYS

    choice = choose_run(ref, wanted, how=how, fix=fix)
    run_dir = choice.path
    fc, rc = store.load_run(run_dir, required=RUN_KEYS)
    status = run_status(run_dir)
    if status != FINISHED:
        what = ("is still training" if status == TRAINING else
                f"is unfinished (finish it with `finhrm train --resume {run_dir}`)")
        warn(f"{run_dir}: this run {what}; it uses its best weights so far"
             + ("" if rc.conformal else " and has no prediction intervals yet") + ".")
    return run_dir, fc, rc, choice


def data_series(files) -> list[SeriesKey]:
    """The series of the data files (or prepared folders) a command reads."""
    from finhrm_cli import data

    return [SeriesKey(*data.series_identity(f)) for f in files]


def train_command(paths) -> str:
    """``finhrm train DATA`` for the data the user passed (the fix when no run matches)."""
    import shlex

    return "finhrm train " + " ".join(shlex.quote(str(p)) for p in paths)


def open_for_data(ref, paths, how: str = "--model"):
    """The data files of ``paths`` (folders expanded), then the run for them (``open_run``
    with their series): ``(files, run_dir, fc, rc, choice)``.  A missing or mistyped file is
    reported first, as a file problem, before any run is looked up (issue 25)."""
    from finhrm_cli import data

    files = data.input_files(paths)
    run_dir, fc, rc, choice = open_run(ref, data_series(files), how=how, fix=train_command(paths))
    return files, run_dir, fc, rc, choice
