"""A run's data: the series it was trained on (its own prepared copies under data/), and a
user's file featurized with the run's settings and its stored normaliser."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from finhrm_cli.errors import DataError, RunError, warn
from finhrm_cli.run.config import RunConfig
from finhrm_cli.run.files import DATA_DIR


def dataset_for_run(rc: RunConfig, path: Path | str, date_col=None, col_map=None, ack=()):
    """Features of ``path`` built with the run's settings and its stored normaliser."""
    from finhrm_cli import data

    ds = data.prepare(path, rc.features, date_col=date_col, col_map=col_map,
                      normalizer=data.Normalizer.from_dict(rc.normalizer), min_windows=0, ack=ack)
    if list(ds.feature_names) != list(rc.feature_names):
        raise DataError(
            f"{path}: gives features {ds.feature_names}, but the model was trained on "
            f"{rc.feature_names}; use a file with the same columns."
        )
    return ds


def datasets_for_run(rc: RunConfig, paths, date_col=None, col_map=None, ack=()) -> list:
    """Every file of ``paths`` (files or folders) featurized for the run; what reading them
    noticed is warned about (``warn_sources``), except about the dates in ``ack`` and the
    ones the run was trained to leave out (``RunConfig.acknowledged``)."""
    from finhrm_cli import data

    ack = sorted(set(ack) | set(rc.acknowledged()))
    dss = [dataset_for_run(rc, p, date_col, col_map, ack) for p in data.expand_inputs(paths)]
    warn_sources(dss)
    return dss


def warn_sources(dss) -> None:
    """What reading a user's file noticed (rows sorted, long gaps, likely unadjusted splits,
    duplicate headers): one warning each (``errors.warn``), for every command that reads one."""
    for ds in dss:
        for w in ds.source.warnings:
            warn(f"{ds.source.path}: {w}")


def run_datasets(run_dir: Path, rc: RunConfig) -> list:
    """The series a run was trained on, from its own prepared copies."""
    from finhrm_cli.data.reading import PREPARED_META

    base = Path(run_dir) / DATA_DIR
    if (base / PREPARED_META).exists():
        return [dataset_for_run(rc, base)]
    names = rc.series_names()
    # config.json checked every name (plain folder names); a symlink could still lead out
    folders = [base / n for n in names]
    for n, folder in zip(names, folders):
        try:
            inside = folder.resolve().is_relative_to(base.resolve())
        except (OSError, RuntimeError):
            inside = False
        if not inside:
            raise RunError(f"{folder}: the series {n!r} lies outside the run's data folder {base}; "
                           "the run is damaged or was edited by hand, train it again.")
    if not names or not all((f / PREPARED_META).exists() for f in folders):
        raise RunError(f"{run_dir}: the run's data folder is missing or incomplete; train the run again.")
    dss = [dataset_for_run(rc, f) for f in folders]
    for ds, n in zip(dss, names):
        ds.source = dataclasses.replace(ds.source, name=n)
    return dss


def data_folder(run_dir: Path, series: str | None = None) -> Path:
    """Where a new run keeps its prepared copy of a series (``series`` for several)."""
    base = Path(run_dir) / DATA_DIR
    return base if series is None else base / series
