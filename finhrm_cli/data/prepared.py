"""From data files (or prepared folders) to datasets, and prepared folders on disk.

``prepare`` (one file or prepared folder), ``from_bars`` (bars in memory),
``prepare_many`` (several series sharing one normaliser), ``save_prepared`` and the
matching loader ``_load_prepared`` (``features.parquet`` + ``meta.json``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import polars as pl

from finhrm_cli.config import FeatureConfig
from finhrm_cli.fsutil import file_sha256
from finhrm_cli.data.dataset import Dataset, Normalizer, finish_dataset, pool_normalizer
from finhrm_cli.data.features import FEATURE_SETS, RAW_COLUMNS, target_exprs, build_features, feature_columns
from finhrm_cli.data.ack import unacknowledged
from finhrm_cli.data.values import fail
from finhrm_cli.data.reading import (
    PREPARED_FORMAT,
    PREPARED_FRAME,
    PREPARED_META,
    Source,
    read_bars,
)
from finhrm_cli.data.inputs import expand_inputs
from finhrm_cli.errors import DataError


def prepare(
    path,
    fcfg: FeatureConfig,
    date_col: str | None = None,
    col_map: dict[str, str] | None = None,
    normalizer: Normalizer | None = None,
    min_windows: int = 1,
    ack=(),
) -> Dataset:
    """Data file or prepared folder -> Dataset.

    ``normalizer`` (from a trained run) is used unchanged; otherwise it is fit on the
    training rows.  ``min_windows``: every split (val only if val_frac > 0) must hold at
    least this many windows; 0 = only require one full window (enough for predict).
    ``ack``: ISO dates whose data warnings are not given (``--ack``), recorded in the source.
    """
    fcfg.validate()
    shown = str(path)
    p = Path(path).expanduser()
    if p.is_dir() and (p / PREPARED_META).exists():
        ds = _load_prepared(p, shown, fcfg, normalizer, min_windows)
        ds.source = dataclasses.replace(  # the folder's warnings were read before ``ack`` was known
            ds.source, warnings=unacknowledged(ds.source.warnings, ack),
            acknowledged=sorted(set(ds.source.acknowledged) | set(ack)))
        return ds
    bars, source = read_bars(path, date_col=date_col, col_map=col_map, ack=ack)
    try:
        frame, dropped = build_features(bars, fcfg)
        return finish_dataset(frame, FEATURE_SETS[fcfg.feature_set], source, fcfg, normalizer, dropped, shown, min_windows)
    except DataError as exc:
        if exc.message.startswith(shown):
            raise
        raise DataError(f"{shown}: {exc.message}") from None


def from_bars(
    bars: pl.DataFrame,
    fcfg: FeatureConfig,
    source: Source | None = None,
    normalizer: Normalizer | None = None,
    min_windows: int = 1,
) -> Dataset:
    """Dataset from bars already in memory (the frame ``read_bars`` returns); for tests and library use."""
    fcfg.validate()
    if source is None:
        source = Source(path="<memory>", name="memory", shape="generic", columns={}, fingerprint="", n_rows=bars.height)
    frame, dropped = build_features(bars, fcfg)
    return finish_dataset(frame, FEATURE_SETS[fcfg.feature_set], source, fcfg, normalizer, dropped, source.path, min_windows)


def prepare_many(
    paths,
    fcfg: FeatureConfig,
    date_col: str | None = None,
    col_map: dict[str, str] | None = None,
    normalizer: Normalizer | None = None,
    min_windows: int = 1,
    ack=(),
) -> list[Dataset]:
    """Several series (one per file) -> datasets that share one normaliser.

    Each series is featurized and split chronologically on its own, so windows never mix
    tickers.  Without a given normaliser, one is fit on the *training* rows of all series
    pooled (the inputs are scale-free, so pooling is sound).  Series names are the file
    names, made unique.
    """
    files = expand_inputs(paths)
    dss = [prepare(f, fcfg, date_col=date_col, col_map=col_map, normalizer=normalizer, min_windows=min_windows, ack=ack)
           for f in files]
    seen: dict[str, int] = {}
    for ds in dss:
        name = ds.source.name
        if name in seen:
            seen[name] += 1
            ds.source = dataclasses.replace(ds.source, name=f"{name}-{seen[name]}")
        else:
            seen[name] = 1
    if normalizer is None and len(dss) > 1:
        pool_normalizer(dss)
    return dss


def save_prepared(ds: Dataset, out_dir) -> Path:
    """Write ``meta.json`` and ``features.parquet`` (each atomically) into ``out_dir``.

    ``meta.json`` carries a manifest (size and sha256 of ``features.parquet``) and is written
    first, so a kill between the two writes (``prepare -o EXISTING``) leaves a folder whose
    features do not match its manifest, which the loader refuses, never a mix that loads.
    The features go to a temp file beside their target first (polars writes a path in
    pieces, with no copy of the file's bytes in memory), are hashed from there, and are
    renamed into place after ``meta.json``."""
    from finhrm_cli.fsutil import atomic_write_json, clean_stale_temps

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; pick another output folder.")
    if out.is_dir() and not (out / PREPARED_META).exists() and any(
        not f.name.startswith(".") for f in out.iterdir()
    ):
        raise DataError(f"{out}: exists and is not a prepared folder (it holds other files); pick a new or empty folder.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(out, (PREPARED_META, PREPARED_FRAME))
        target = out / PREPARED_FRAME
        tmp = _write_parquet_temp(ds.frame, target)
        try:
            meta = ds.meta()
            meta["files"] = {PREPARED_FRAME: {"bytes": tmp.stat().st_size, "sha256": file_sha256(tmp)}}
            atomic_write_json(out / PREPARED_META, meta, allow_nan=False)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except PermissionError:
        raise DataError(f"{out}: cannot write there (permission denied); pick another output folder.") from None
    return out


def _write_parquet_temp(frame: pl.DataFrame, path: Path) -> Path:
    """``frame`` written and fsynced to a hidden temp file beside ``path`` (the caller renames
    it into place); polars writes the path natively, in pieces, with no copy in memory."""
    from finhrm_cli.fsutil import write_beside, write_error

    def write(tmp):
        try:
            frame.write_parquet(tmp)
        except pl.exceptions.PolarsError as exc:  # polars says "ComputeError: ... No space left ..."
            raise write_error(path, exc) from exc

    return write_beside(path, write, rename=False)



def _check_manifest(p: Path, shown: str, files) -> None:
    """``features.parquet`` must be the one ``meta.json`` describes (size, then sha256)."""
    entry = files.get(PREPARED_FRAME) if isinstance(files, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) or not isinstance(entry.get("sha256"), str):
        raise ValueError(f"the manifest in {PREPARED_META} is malformed")
    f = p / PREPARED_FRAME
    ok = f.stat().st_size == entry["bytes"] and file_sha256(f) == entry["sha256"]
    if not ok:
        raise fail(
            shown,
            f"{PREPARED_FRAME} does not match {PREPARED_META} (a `finhrm prepare` was interrupted while replacing "
            f"it, or the file was changed); run `finhrm prepare FILE -o {shown}` again.",
        )


def _load_prepared(p: Path, shown: str, fcfg: FeatureConfig, normalizer, min_windows) -> Dataset:
    try:
        meta = json.loads((p / PREPARED_META).read_text(encoding="utf-8"))
        if meta.get("format") != PREPARED_FORMAT:
            raise ValueError("not a finhrm prepared folder")
        if meta.get("files") is not None:  # folders from before the manifest have none
            _check_manifest(p, shown, meta["files"])
        frame = pl.read_parquet(p / PREPARED_FRAME)
        stored = FeatureConfig(**{k: v for k, v in meta["features"].items() if k in {f.name for f in dataclasses.fields(FeatureConfig)}})
        names = list(meta["feature_names"])
        source = Source.from_dict(meta["source"])
        dropped = {str(k): int(v) for k, v in meta.get("dropped", {}).items()}
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise fail(shown, f"is not a valid prepared folder ({exc}); run `finhrm prepare FILE -o {shown}` again.") from None
    except Exception as exc:  # corrupt parquet
        raise fail(shown, f"has an unreadable {PREPARED_FRAME} ({str(exc).splitlines()[0][:100]}); run `finhrm prepare` again.") from None
    missing = [c for c in RAW_COLUMNS + feature_columns(names) if c not in frame.columns]
    if missing:
        raise fail(shown, f"{PREPARED_FRAME} lacks columns {', '.join(missing)}; run `finhrm prepare` again.")
    for attr in ("volume_window", "feature_set"):
        if getattr(fcfg, attr) != getattr(stored, attr):
            raise fail(
                shown,
                f"was prepared with {attr}={getattr(stored, attr)!r}, not {getattr(fcfg, attr)!r}; "
                "pass the original data file instead, or prepare again with the new setting.",
            )
    if fcfg.horizon != stored.horizon:
        frame = frame.with_columns(target_exprs(fcfg.horizon))
    origin = source.shape
    source = dataclasses.replace(
        source, path=shown, shape="prepared",
        notes=list(source.notes) + [f"loaded from a prepared folder (made from a {origin} file {meta['source'].get('path')})."],
    )
    return finish_dataset(frame, names, source, fcfg, normalizer, dropped, shown, min_windows)
