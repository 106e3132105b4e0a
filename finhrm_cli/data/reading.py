"""Reading bars files and their dialects (polars + numpy).

Everything between a path and a validated bars frame: header matching (aliases,
``--date-col``, ``--col``), the checks (dates, prices, indicators, suspicious data), the
:class:`Source` record, ``read_bars``, ``parse_col_map`` and ``expand_inputs``.  The
file's bytes (gzip, Parquet, UTF-8/UTF-16 text, CSV separator sniffing) are ``files``'
job, cell parsing (numbers as portals write them, dates in many formats, unix times)
``values``'.
It also names the files of a prepared folder, which ``read_bars`` and ``expand_inputs``
recognise (``prepared`` writes and loads them).

Line numbers in messages are 1-based lines of the file with the header as line 1
(Parquet files have no lines: there we say "row N", 1-based over the data rows).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from finhrm_cli.data.ack import check_ack_list, day_numbers, hint
from finhrm_cli.data.files import Raw, open_data
from finhrm_cli.data.values import (
    fail,
    first_index,
    has_decimal_commas,
    parse_dates,
    parse_numbers,
    rel_precision,
)
from finhrm_cli.errors import DataError

N_PREV = 5              # prev1_high .. prev5_low: the previous days' extremes an export may carry
OHLC_RTOL = 1e-9
PRICE_MAX = 1e15        # no real quote is above this: a bigger one is a corrupt cell, and near
                        # float64's limit it would turn the predictions into inf and 0

# A prepared folder (written by `finhrm prepare -o`, see prepared.py) holds these files.
PREPARED_META = "meta.json"
PREPARED_FRAME = "features.parquet"
PREPARED_FORMAT = "finhrm-prepared"
PREPARED_VERSION = 1


# --------------------------------------------------------------------------- header matching

PRICE_COLS = ["open", "high", "low", "close"]
INDICATOR_COLS = ["ema7", "rsi", "rsi_ma"] + [f"prev{k}_{s}" for k in range(1, N_PREV + 1) for s in ("high", "low")]
PRICE_LIKE_INDICATORS = ["ema7"] + [c for c in INDICATOR_COLS if c.startswith("prev")]
CANONICAL = ["date"] + PRICE_COLS + ["volume"] + INDICATOR_COLS

DATE_ALIASES = ["date", "datetime", "timestamp", "time", "day", "dt", "tradedate", "tradingdate", "tradingday"]
ALIASES: dict[str, list[str]] = {
    "open": ["open", "o", "openprice", "priceopen"],
    "high": ["high", "h", "highprice", "pricehigh"],
    "low": ["low", "l", "lowprice", "pricelow"],
    "close": ["close", "c", "closeprice", "priceclose", "last", "lastprice", "closelast", "price"],
    "volume": ["volume", "vol", "v", "tickvol", "realvol", "tickvolume"],
    "ema7": ["ema7"],
    "rsi": ["rsi", "rsi14"],
    "rsi_ma": ["rsibasedma", "rsima"],
}
for _k in range(1, N_PREV + 1):
    for _s in ("high", "low"):
        ALIASES[f"prev{_k}_{_s}"] = [f"prev{_k}d{_s}", f"prev{_k}{_s}"]


def _norm(name: str) -> str:
    """Header key: lower case, without spaces, underscores, hyphens, quotes or a BOM."""
    return re.sub(r"[\s_\-\"'\ufeff<>./]+", "", str(name)).lower()


# --------------------------------------------------------------------------- source

@dataclass
class Source:
    path: str
    name: str
    shape: str                      # "tradingview" | "yahoo" | "generic" | "prepared"
    columns: dict[str, str]         # canonical -> header in the file
    fingerprint: str                # sha256 of the file bytes
    n_rows: int                     # data rows read
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # informational, not a problem
    acknowledged: list[str] = field(default_factory=list)  # dates whose warnings were not given (--ack)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Source":
        """From a stored dict (meta.json, config.json): untrusted, so the name becomes one
        safe path component (it names folders and files later)."""
        from finhrm_cli.fsutil import safe_component

        names = {f.name for f in dataclasses.fields(cls)}
        src = cls(**{k: v for k, v in d.items() if k in names})
        src.name = safe_component(src.name)
        if check_ack_list(src.acknowledged) is not None:  # hand-edited: acknowledge nothing
            src.acknowledged = []
        return src


def series_stem(path: Path) -> str:
    """The series name of a data file: its name without the data suffixes, as one safe path
    component (``...csv`` has the stem ``..``, which must never name a folder)."""
    from finhrm_cli.fsutil import safe_component

    name = path.name
    for suffix in (".gz", ".csv", ".tsv", ".txt", ".parquet"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return safe_component(name, default="data")


def parse_col_map(items: list[str] | None) -> dict[str, str]:
    """``["open=Opening", ...]`` (from repeatable ``--col``) -> ``{"open": "Opening"}``."""
    out: dict[str, str] = {}
    known = ", ".join(CANONICAL)
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise DataError(
                f"--col {item!r}: expected NAME=HEADER, for example --col open=Opening "
                f"(NAME is one of {known})."
            )
        canon = _canon_key(key)
        if canon is None:
            raise DataError(f"--col {item!r}: unknown name {key!r}; use one of {known}.")
        out[canon] = value
    return out


def _canon_key(key: str) -> str | None:
    k = _norm(key)
    if k in {_norm(c) for c in CANONICAL}:
        return next(c for c in CANONICAL if _norm(c) == k)
    for canon, aliases in ALIASES.items():
        if k in aliases:
            return canon
    if k in DATE_ALIASES:
        return "date"
    return None


# --------------------------------------------------------------------------- the file

def check_path(path: Path, shown: str) -> None:
    if not path.exists():
        hint = ""
        parent = path.parent if str(path.parent) else Path(".")
        if parent.is_dir():
            close = sorted(p.name for p in parent.iterdir() if p.suffix.lower() in (".csv", ".gz", ".parquet"))[:5]
            if close:
                hint = f" (files there: {', '.join(close)})"
        raise fail(shown, f"file not found{hint}; check the path.")
    if path.is_dir():
        raise fail(
            shown,
            f"is a folder but not a prepared dataset (no {PREPARED_META}); pass a CSV or Parquet "
            "file, or a folder written by `finhrm prepare -o`.",
        )


# --------------------------------------------------------------------------- column mapping

def _match_columns(headers: list[str], date_col, col_map, shown) -> tuple[dict[str, str], list[str]]:
    """canonical -> header, plus warnings (duplicate headers).  Every header problem (a
    ``--date-col`` or ``--col`` naming no column, no date column, a missing price column) is
    reported at once, in one error."""
    found = ", ".join(headers)
    norm = {h: _norm(h) for h in headers}
    warnings: list[str] = []
    problems: list[str] = []
    col_map = dict(col_map or {})
    if date_col is None and "date" in col_map:
        date_col = col_map.pop("date")
    col_map.pop("date", None)

    def lookup(name: str, what: str) -> str | None:
        if name in headers:
            return name
        hits = [h for h in headers if norm[h] == _norm(name)]
        if hits:
            return hits[0]
        problems.append(f"{what}: no column {name!r}")
        return None

    mapping: dict[str, str] = {}
    date_given = date_col is not None
    if date_given:
        hit = lookup(date_col, f"--date-col {date_col}")
        if hit is not None:
            mapping["date"] = hit
    for canon, header in col_map.items():
        hit = lookup(header, f"--col {canon}={header}")
        if hit is not None:
            mapping[canon] = hit
    used = set(mapping.values())

    if "date" not in mapping and not date_given:
        for alias in DATE_ALIASES:
            hits = [h for h in headers if norm[h] == alias and h not in used]
            if hits:
                mapping["date"] = hits[0]
                used.add(hits[0])
                break
        else:
            # A pandas `to_csv()` export writes its date index as a first column with an
            # empty header (or "Unnamed: 0" after a round trip): take it as the date.
            first = headers[0] if headers else None
            if first is not None and norm[first] in ("", "unnamed:0", "index") and first not in used:
                mapping["date"] = first
                used.add(first)
        if "date" not in mapping:
            problems.append(f"no date column (looked for {', '.join(DATE_ALIASES[:5])}); pass --date-col NAME")
    for canon, aliases in ALIASES.items():
        if canon in mapping or f"--col {canon}=" in " ".join(problems):
            continue
        for alias in aliases:
            hits = [h for h in headers if norm[h] == alias and h not in used]
            if hits:
                mapping[canon] = hits[0]
                used.add(hits[0])
                if len(hits) > 1:
                    warnings.append(f"column {hits[0]!r} appears {len(hits)} times; used the first one.")
                break
    missing = [c for c in PRICE_COLS if c not in mapping and f"--col {c}=" not in " ".join(problems)]
    if missing:
        problems.append(f"no {' and no '.join(repr(c) for c in missing)} column; rename "
                        f"{'it' if len(missing) == 1 else 'them'} or pass "
                        f"{' '.join(f'--col {c}=NAME' for c in missing)}")
    if problems:
        many = f"{len(problems)} header problems: " if len(problems) > 1 else ""
        raise fail(shown, f"{many}{'; '.join(f'({i}) {p}' if many else p for i, p in enumerate(problems, 1))}; "
                          f"found columns: {found}.")
    return mapping, warnings


def _detect_shape(headers: list[str], mapping: dict[str, str]) -> str:
    keys = {_norm(h) for h in headers}
    if "adjclose" in keys and _norm(mapping["date"]) == "date":
        return "yahoo"
    if _norm(mapping["date"]) == "time" and _norm(headers[0]) == "time":
        return "tradingview"
    return "generic"


# --------------------------------------------------------------------------- read_bars

def _date_order(raw: Raw, dates: pl.Series, n: int, shown: str, warnings: list[str]) -> np.ndarray | None:
    """Row order that sorts the bars by date (with a warning if the file was not in date
    order); duplicate dates fail, naming both lines."""
    # Duplicate dates: name both lines.  None: the rows are in date order already.
    order = None
    day = dates.cast(pl.Int32).to_numpy()
    srt = np.argsort(day, kind="stable")
    dup = np.flatnonzero(np.diff(day[srt]) == 0)
    if dup.size:
        a, b = sorted((int(srt[dup[0]]), int(srt[dup[0] + 1])))
        raise fail(
            shown,
            f"{raw.where(a)} and {raw.where(b)} have the same date {dates[a]}; daily bars need one row per day "
            "(intraday data is not aggregated), so delete the duplicate.",
        )
    if np.any(np.diff(day) < 0):
        i = int(np.flatnonzero(np.diff(day) < 0)[0]) + 1
        if np.all(np.diff(day) < 0):
            warnings.append("rows were newest-first; sorted them oldest-first.")
        else:
            warnings.append(f"rows were not in date order ({raw.where(i)} goes back in time); sorted them by date.")
        order = srt
    return order


def _check_prices(cols: dict[str, np.ndarray], mapping: dict[str, str], where, shown: str, rtol: float = OHLC_RTOL) -> None:
    """Price sanity, in chronological order: prices above 0 and at most PRICE_MAX, and
    low <= open, close <= high, up to a relative ``rtol`` (the columns' representation
    error: float32 ones are coarse)."""
    for canon in PRICE_COLS:
        i = first_index(cols[canon] <= 0)
        if i is not None:
            raise fail(shown, f"{where(i)}: non-positive price {cols[canon][i]:g} in column {mapping[canon]!r}; prices must be above 0, fix or delete the row.")
        i = first_index(cols[canon] > PRICE_MAX)
        if i is not None:
            raise fail(shown, f"{where(i)}: {cols[canon][i]:g} in column {mapping[canon]!r} is implausibly large for a price (above {PRICE_MAX:g}); fix or delete the row.")
    hi, lo = cols["high"], cols["low"]
    tol = rtol * np.maximum(np.abs(hi), np.abs(lo))
    i = first_index(hi < lo - tol)
    if i is not None:
        raise fail(shown, f"{where(i)}: high {hi[i]:g} is below low {lo[i]:g} (columns {mapping['high']!r}, {mapping['low']!r}); fix or delete the row.")
    outside = {canon: (cols[canon] < lo - tol) | (cols[canon] > hi + tol) for canon in ("close", "open")}
    i = first_index(outside["close"] | outside["open"])
    if i is not None:
        canon = "close" if outside["close"][i] else "open"
        raise fail(shown, f"{where(i)}: {canon} {cols[canon][i]:g} lies outside [low {lo[i]:g}, high {hi[i]:g}] (column {mapping[canon]!r}); fix or delete the row.")


def _check_indicators(cols: dict[str, np.ndarray], indicators: list[str], mapping: dict[str, str], where, shown: str) -> None:
    """Indicator columns: blanks allowed only at the start (the export's warm-up); price-like
    ones above 0, RSI and its mean within 0..100."""
    for canon in indicators:
        v = cols[canon]
        blank = np.isnan(v)
        start = first_index(~blank)
        if start is None:
            raise fail(shown, f"column {mapping[canon]!r} is blank on every row; fill it or delete the column so finhrm computes it.")
        i = first_index(blank[start:])
        if i is not None:
            raise fail(
                shown,
                f"{where(start + i)}: blank cell in column {mapping[canon]!r} after its warm-up; fill it, delete the row, "
                "or delete the column so finhrm computes it.",
            )
        valid = v[start:]
        if canon in PRICE_LIKE_INDICATORS:
            j = first_index(valid <= 0)
            if j is not None:
                raise fail(shown, f"{where(start + j)}: non-positive value {valid[j]:g} in column {mapping[canon]!r}; fix it or delete the column.")
        else:
            j = first_index((valid < -1e-6) | (valid > 100 + 1e-6))
            if j is not None:
                raise fail(shown, f"{where(start + j)}: {valid[j]:g} in column {mapping[canon]!r} is outside 0..100; fix it or delete the column.")


GAP_DAYS = 30           # a longer gap between consecutive sessions gets a warning
JUMP_RATIO = 1.4        # a one-day close ratio >= this, or <= its inverse, gets a warning: an
                        # unadjusted 2:1 or 3:2 split is a ratio near 0.5 or 0.67, and a day's
                        # own move can push it to either side of an exact "50%"


def _suspicious(day: np.ndarray, close: np.ndarray, warnings: list[str], show: int = 3, ack=()) -> None:
    """Warnings (not errors: the data may be right) for long gaps between sessions and
    one-day close moves by a factor of 1.4 or more either way (+40%, or -29% and worse), in chronological rows; each kind on one line,
    naming the dates (the longest gaps and the first moves, then how many more) and how to
    acknowledge them.  A date in ``ack`` (ISO dates) is left out: a move on that day, a gap
    that starts or ends on it."""
    iso = lambda d: str(np.datetime64(int(d), "D"))  # noqa: E731
    known = np.array(sorted(day_numbers(ack)), dtype=day.dtype)
    gap = np.diff(day)
    big = np.flatnonzero((gap > GAP_DAYS) & ~np.isin(day[:-1], known) & ~np.isin(day[1:], known))
    if big.size:
        longest = big[np.argsort(-gap[big], kind="stable")][:show]
        spans = ", ".join(
            f"{iso(day[i])} to {iso(day[i + 1])} ({gap[i] / 365.25:.1f} years)" if gap[i] >= 365
            else f"{iso(day[i])} to {iso(day[i + 1])} ({gap[i]} days)" for i in longest
        )
        more = f" and {big.size - show} more" if big.size > show else ""
        warnings.append(
            f"{big.size} gap{'s' if big.size > 1 else ''} of more than {GAP_DAYS} days between sessions: {spans}{more}; "
            "check the file is one continuous series (missing history, or two series joined?)"
            f"{hint([iso(day[i + 1]) for i in longest])}."
        )
    ratio = close[1:] / close[:-1]
    jump = np.flatnonzero(((ratio >= JUMP_RATIO) | (ratio <= 1.0 / JUMP_RATIO)) & ~np.isin(day[1:], known))
    if jump.size:
        # two decimals for the ratios of splits and bad prints; a wild one (a 1e-100 close) in short form
        fmt = lambda r: f"{r:.2f}" if 0.01 <= r < 1e4 else f"{r:.3g}"  # noqa: E731
        moves = ", ".join(
            f"{iso(day[i + 1])} ({close[i]:g} to {close[i + 1]:g}, ratio {fmt(ratio[i])})" for i in jump[:show]
        )
        more = f" and {jump.size - show} more" if jump.size > show else ""
        warnings.append(
            f"close moves by a factor of 1.4 or more in one day on {moves}{more}: a likely unadjusted split or a bad print; "
            f"use split-adjusted prices{hint([iso(day[i + 1]) for i in jump[:show]])}."
        )


def _parse_columns(raw: Raw, mapping: dict[str, str], shown: str, warnings: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Price, volume and indicator columns as float64 arrays in file order (volume NaN if absent)."""
    # a semicolon-delimited file whose prices are written 1.234,56 (European exports)
    comma = raw.separator == ";" and any(has_decimal_commas(raw.frame[mapping[c]]) for c in PRICE_COLS)

    def numbers(canon: str, allow_blank: bool) -> np.ndarray:
        h = mapping[canon]
        return parse_numbers(raw.frame[h], raw.where, h, canon, shown, allow_blank, raw.separator, comma)

    cols = {canon: numbers(canon, False) for canon in PRICE_COLS}
    if "volume" in mapping:
        vol = numbers("volume", False)
        i = first_index(vol < 0)
        if i is not None:
            raise fail(shown, f"{raw.where(i)}: negative volume {vol[i]:g} in column {mapping['volume']!r}; fix the cell or delete the row.")
        cols["volume"] = vol
    else:
        cols["volume"] = np.full(raw.frame.height, np.nan)
        warnings.append("no volume column: the volume input is set to 0.")
    indicators = [c for c in INDICATOR_COLS if c in mapping]
    for canon in indicators:
        cols[canon] = numbers(canon, True)
    return cols, indicators


def read_bars(path, date_col: str | None = None, col_map: dict[str, str] | None = None,
              ack=()) -> tuple[pl.DataFrame, Source]:
    """Read and validate a bars file; data warnings about the ISO dates in ``ack`` are not given.

    Returns canonical columns ``date`` (Date), ``open, high, low, close, volume`` (Float64;
    volume all null if the file has none) and any indicator columns the file carries
    (``ema7, rsi, rsi_ma, prevK_high, prevK_low``; leading nulls = the export's warm-up), sorted by date.
    """
    shown = str(path)
    p = Path(path).expanduser()
    check_path(p, shown)
    with open_data(p, shown) as f:
        headers = [str(c) for c in f.headers]
        mapping, warnings = _match_columns(headers, date_col, col_map, shown)
        raw = f.load(mapping["date"], [mapping[c] for c in CANONICAL if c in mapping and c != "date"])
        fingerprint = f.fingerprint
    if raw.unterminated is not None:
        warnings.append(
            f"line {raw.unterminated} (the last) has no line break at the end: the file may have been cut off "
            "while being written, so check that row's values."
        )
    shape = _detect_shape(headers, mapping)
    notes: list[str] = []
    if shape == "yahoo":
        notes.append("Yahoo file: prices use Close (not Adj Close) so open/high/low/close stay consistent.")
    cols, indicators = _parse_columns(raw, mapping, shown, warnings)
    n = raw.frame.height
    dates = parse_dates(raw.frame[mapping["date"]], raw.where, mapping["date"], shown, stripped=raw.clean)
    if mapping["date"] not in [mapping[c] for c in mapping if c != "date"]:
        raw.frame = raw.frame.drop(mapping["date"])  # the text of a big file's dates is large

    # Sort by date, then check prices and indicators in chronological order.
    order = _date_order(raw, dates, n, shown, warnings)
    where = raw.where
    if order is not None:
        where = lambda i: raw.where(int(order[i]))  # noqa: E731  (index in sorted order -> file location)
        cols = {k: v[order] for k, v in cols.items()}
        dates = dates.gather(order)

    # Prices are float64 now; a float32 column (Parquet) carries its rounding error along,
    # so "close == high" in float32 may read as close > high by ~6e-8: allow twice that.
    rtol = OHLC_RTOL + 2 * max(rel_precision(raw.frame[mapping[c]]) for c in PRICE_COLS)
    _check_prices(cols, mapping, where, shown, rtol)
    _check_indicators(cols, indicators, mapping, where, shown)
    _suspicious(dates.cast(pl.Int32).to_numpy(), cols["close"], warnings, ack=ack)

    bars = pl.DataFrame(
        {"date": dates, **{k: pl.Series(k, cols[k], dtype=pl.Float64, nan_to_null=True) for k in cols}}
    )
    columns = {k: mapping[k] for k in CANONICAL if k in mapping}
    src = Source(
        path=shown,
        name=series_stem(p),
        shape=shape,
        columns=columns,
        fingerprint=fingerprint,
        n_rows=n,
        warnings=warnings,
        notes=notes,
        acknowledged=sorted(set(ack)),
    )
    return bars, src
