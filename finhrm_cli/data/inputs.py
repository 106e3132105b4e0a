"""The data arguments of a command: files, folders of them (a watch list) and prepared
folders, checked to exist, and the series each stands for (its name and fingerprint, which
choose a run) without reading the bars."""

from __future__ import annotations

from pathlib import Path

from finhrm_cli.data.reading import PREPARED_META, check_path, series_stem
from finhrm_cli.errors import DataError

DATA_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt", ".parquet", ".pq")


def expand_inputs(paths) -> list[Path]:
    """Data arguments -> the files (or prepared folders) they stand for.

    A folder that is not a prepared dataset stands for the data files directly inside it,
    in name order (several tickers at once).
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir() and not (p / PREPARED_META).exists():
            found = sorted(
                f for f in p.iterdir()
                if (f.is_file() and f.name.lower().endswith(DATA_SUFFIXES) and not f.name.startswith("."))
                or (f.is_dir() and (f / PREPARED_META).exists())
            )
            if not found:
                raise DataError(
                    f"{raw}: a folder with no data files (.csv, .csv.gz, .parquet) and not a prepared "
                    "dataset; pass a file, or a folder holding one file per ticker."
                )
            out.extend(found)
        else:
            out.append(p if p.exists() else Path(raw))
    return out


def input_files(paths) -> list[Path]:
    """``expand_inputs``, each file checked to exist: a mistyped path is reported as a file
    problem (one line, with the data files beside it) before any run is looked up."""
    files = expand_inputs(paths)
    for f in files:
        check_path(Path(f).expanduser(), str(f))
    return files


def series_identity(path) -> tuple[str, str | None]:
    """(series name, sha256 of the file) of a data file or prepared folder, as ``read_bars``
    and the prepared loader would name it, without reading the bars: a run is chosen by it."""
    import json

    p = Path(path).expanduser()
    if p.is_dir():
        try:
            from finhrm_cli.fsutil import safe_component

            src = json.loads((p / PREPARED_META).read_text(encoding="utf-8")).get("source") or {}
            fp = src.get("fingerprint")
            return safe_component(src["name"]), (fp if isinstance(fp, str) and fp else None)
        except (OSError, ValueError, TypeError, AttributeError, KeyError, RecursionError):
            return series_stem(p), None
    from finhrm_cli.fsutil import file_sha256

    try:
        return series_stem(p), file_sha256(p)
    except OSError:
        return series_stem(p), None
