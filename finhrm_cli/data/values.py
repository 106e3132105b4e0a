"""Cell values: numbers as portals write them and dates in many formats (polars + numpy).

``parse_numbers`` and ``parse_dates`` turn one column of a bars file (strings from a CSV,
typed values from Parquet) into float64 / Date values, or raise a one-line ``DataError``
naming the file location (``where(i)``: "line N" / "row N") and the column.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from finhrm_cli.errors import DataError


def fail(path, msg: str) -> DataError:
    return DataError(f"{path}: {msg}")

# --------------------------------------------------------------------------- cell parsing

def first_index(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


def _number_hint(value: str, sep: str) -> str:
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", value):
        return "remove the thousands separators (plain numbers like 1234.5)"
    if re.fullmatch(r"[+-]?\d+,\d+", value):
        return ("use a dot as the decimal mark (1234.5, not 1234,5), or semicolons between the columns "
                "(finhrm reads decimal commas in a semicolon-delimited file)")
    if re.match(r"^[$€£¥]", value):
        return "remove the currency symbol"
    return "fix the cell or delete the row"


_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9}


_DECIMAL_COMMA = r"^[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+)(?:,\d+)?$"  # 1.234,56 / 1234,56 / 1.234.567


def has_decimal_commas(s: pl.Series) -> bool:
    """A text column with a number written with a decimal comma (``1.234,56``, ``1234,56``)."""
    return s.dtype == pl.String and bool(s.str.strip_chars().str.contains(r"^[+-]?[\d.]*\d,\d+$").any())


def _decimal_commas(t: pl.Series) -> pl.Series:
    """A European file's numbers, ``1.234,56``, ``1234,56`` or ``546.349``: the dots (thousands)
    go and the comma becomes the decimal point, when every cell reads that way."""
    filled = t.drop_nulls().filter(t.drop_nulls() != "")
    if not filled.str.contains(_DECIMAL_COMMA).all():
        return t
    return t.str.replace_all(".", "", literal=True).str.replace(",", ".", literal=True)


def _lenient_numbers(s: pl.Series, canon: str) -> pl.Series:
    """Numbers as broker and portal exports write them: a leading currency symbol
    ($123.45, Nasdaq), unambiguous thousands separators (1,234.50 or 1,234,567) and, for
    volume only, K/M/B suffixes (1.21M, Investing.com).  Anything else stays null and is
    reported by the caller."""
    t = s.str.replace(r"^[$€£¥]\s*", "")
    grouped = t.str.contains(r"^(?:[+-]?\d{1,3}(,\d{3})+\.\d+|[+-]?\d{1,3}(,\d{3}){2,})$")
    t = pl.select(pl.when(grouped).then(t.str.replace_all(",", "", literal=True)).otherwise(t)).to_series().rename(s.name)
    out = t.cast(pl.Float64, strict=False)
    if canon == "volume":
        m = t.str.extract(r"^([+-]?\d+(?:\.\d+)?)\s*([KMBkmb])$", 1).cast(pl.Float64, strict=False)
        unit = t.str.extract(r"^[+-]?\d+(?:\.\d+)?\s*([KMBkmb])$", 1).str.to_uppercase().replace_strict(_SUFFIX, default=None, return_dtype=pl.Float64)
        out = out.fill_null(m * unit)
    return out


def rel_precision(s: pl.Series) -> float:
    """Relative rounding error of the values a column can hold: a float32 column (Parquet
    written from float32 arrays) is exact only to 2**-24, about 6e-8; other columns 0."""
    return 2.0 ** -24 if s.dtype == pl.Float32 else 0.0


def parse_numbers(s: pl.Series, where, header: str, canon: str, shown: str, allow_blank: bool,
                  sep: str = ",", decimal_comma: bool = False) -> np.ndarray:
    """One column -> float64 (NaN where blank and ``allow_blank``); one-line errors name
    ``where(i)`` and ``header``.  ``decimal_comma``: a semicolon-delimited file whose prices
    use decimal commas (European exports): 1.234,56 reads as 1234.56, 546.349 as 546349."""
    if s.dtype == pl.String:
        stripped = s.str.strip_chars()
        if decimal_comma:
            stripped = _decimal_commas(stripped)
        values = stripped.cast(pl.Float64, strict=False)
        if values.null_count() > stripped.null_count():
            values = _lenient_numbers(stripped, canon)
        blank = (stripped.is_null() | (stripped == "")).to_numpy()
        bad = (values.is_null().to_numpy() & ~blank)
        i = first_index(bad)
        if i is not None:
            v = stripped[i]
            raise fail(
                shown,
                f"{where(i)}: {v!r} in column {header!r} is not a number; {_number_hint(v, sep)}.",
            )
        del stripped
        out = values.to_numpy().astype(np.float64, copy=False)
    elif s.dtype.is_numeric():
        out = s.cast(pl.Float64).to_numpy().astype(np.float64, copy=False)
        blank = s.is_null().to_numpy()
    else:
        raise fail(shown, f"column {header!r} holds {s.dtype}, not numbers; fix the column type or pass --col.")
    if blank.any():
        out = np.where(blank, np.nan, out)  # (else: possibly a read-only view of the column: no copy)
    if not allow_blank:
        i = first_index(blank)
        if i is not None:
            fix = "fill the cell or delete the row" if canon != "volume" else (
                "fill it, delete the row, or remove the volume column if the data has no volume"
            )
            raise fail(shown, f"{where(i)}: blank cell in column {header!r}; {fix}.")
    i = first_index(~blank & ~np.isfinite(out))
    if i is not None:
        kind = "NaN" if np.isnan(out[i]) else "infinity"
        raise fail(shown, f"{where(i)}: {kind} in column {header!r}; replace it with a number or delete the row.")
    return out


_TIME_TAIL = re.compile(
    r"[ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*([AaPp][Mm])?\s*([zZ]|(UTC|GMT)?[+-]\d{2}:?\d{2}|UTC|GMT)?$"
)
_ISO = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}")
_DATE_FORMATS = [
    "%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d",
    "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%m.%d.%Y", "%d-%m-%Y", "%m-%d-%Y",
    "%d %b %Y", "%d-%b-%Y", "%b %d, %Y", "%b %d %Y", "%d %B %Y", "%B %d, %Y", "%B %d %Y",
]
_DATE_FIX = "use ISO dates (YYYY-MM-DD), or pass --date-col NAME if this is not the date column"
_EPOCH_S = (-2_208_988_800, 4_102_444_800)  # 1900-01-01 .. 2100-01-01


def _human_format(fmt: str) -> str:
    for code, text in (("%d", "DD"), ("%m", "MM"), ("%Y", "YYYY"), ("%b", "Mon"), ("%B", "Month")):
        fmt = fmt.replace(code, text)
    return fmt


def _epoch_to_dates(values: np.ndarray, header: str, where, shown) -> pl.Series:
    lo, hi = _EPOCH_S
    if np.all((values >= lo) & (values < hi)):
        secs = values
    elif np.all((values >= lo * 1000) & (values < hi * 1000)):
        secs = values / 1000.0
    else:
        i = first_index(~((values >= lo * 1000) & (values < hi * 1000)))
        raise fail(
            shown,
            f"{where(i)}: {values[i]:.15g} in column {header!r} is not a unix time in seconds or milliseconds "
            f"between 1900 and 2100; {_DATE_FIX}.",
        )
    days = np.floor(secs / 86400.0).astype(np.int32)
    return pl.Series("date", days, dtype=pl.Int32).cast(pl.Date)


def parse_dates(s: pl.Series, where, header: str, shown: str, stripped: bool = False) -> pl.Series:
    """One column -> Date (a date, a datetime, unix seconds or milliseconds, or text;
    ``stripped``: text without surrounding spaces already)."""
    if s.dtype == pl.Date:
        out = s
    elif isinstance(s.dtype, pl.Datetime):
        out = s.dt.date()
    elif s.dtype.is_numeric():
        i = first_index(s.is_null().to_numpy())
        if i is not None:
            raise fail(shown, f"{where(i)}: blank date in column {header!r}; fill it or delete the row.")
        return _epoch_to_dates(s.cast(pl.Float64).to_numpy(), header, where, shown)
    elif s.dtype == pl.String:
        out = _parse_date_strings(s if stripped else s.str.strip_chars(), header, where, shown)
    else:
        raise fail(shown, f"column {header!r} holds {s.dtype}, not dates; {_DATE_FIX}.")
    i = first_index(out.is_null().to_numpy())
    if i is not None:
        raise fail(shown, f"{where(i)}: blank date in column {header!r}; fill it or delete the row.")
    return out.rename("date")


def _parse_date_strings(s: pl.Series, header: str, where, shown) -> pl.Series:
    blank = (s.is_null() | (s == "")).to_numpy()
    i = first_index(blank)
    if i is not None:
        raise fail(shown, f"{where(i)}: blank date in column {header!r}; fill it or delete the row.")
    if s.str.contains(r"^[+-]?\d+(\.\d*)?$").all():
        if (s.str.len_chars() == 8).all():
            compact = s.str.strptime(pl.Date, "%Y%m%d", strict=False)
            if compact.null_count() == 0 and compact.dt.year().is_between(1900, 2100).all():
                return compact
        return _epoch_to_dates(s.cast(pl.Float64).to_numpy(), header, where, shown)
    if s.str.contains(_ISO.pattern).all():
        out = s.str.extract(r"^(\d{4}-\d{1,2}-\d{1,2})", 1).str.strptime(pl.Date, "%Y-%m-%d", strict=False)
        i = first_index(out.is_null().to_numpy())
        if i is not None:
            raise fail(shown, f"{where(i)}: cannot read the date {s[i]!r} in column {header!r}; {_DATE_FIX}.")
        return out
    bare = s.str.replace(_TIME_TAIL.pattern, "")
    results = []
    for fmt in _DATE_FORMATS:
        parsed = bare.str.strptime(pl.Date, fmt, strict=False)
        results.append((len(parsed) - parsed.null_count(), fmt, parsed))
    best = max(r[0] for r in results)
    winners = [r for r in results if r[0] == best]
    if best == 0:
        raise fail(shown, f"{where(0)}: cannot read the date {s[0]!r} in column {header!r}; {_DATE_FIX}.")
    if len(winners) > 1 and any(not w[2].equals(winners[0][2]) for w in winners[1:]):
        fmts = " or ".join(_human_format(w[1]) for w in winners[:2])
        raise fail(
            shown,
            f"dates in column {header!r} like {s[0]!r} are ambiguous ({fmts}: day or month first?); {_DATE_FIX}.",
        )
    parsed = winners[0][2]
    i = first_index(parsed.is_null().to_numpy())
    if i is not None:
        raise fail(shown, f"{where(i)}: cannot read the date {s[i]!r} in column {header!r}; {_DATE_FIX}.")
    return parsed
