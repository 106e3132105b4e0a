"""Reading bars files and their dialects (polars + numpy).

Everything between a path and a validated bars frame: the file's bytes (gzip, Parquet,
UTF-8/UTF-16 text, CSV separator sniffing), header matching (aliases, ``--date-col``,
``--col``), cell parsing (numbers as portals write them, dates in many formats, unix
times), the :class:`Source` record, ``read_bars``, ``parse_col_map`` and ``expand_inputs``.
It also names the files of a prepared folder, which ``read_bars`` and ``expand_inputs``
recognise (``prepared`` writes and loads them).

Line numbers in messages are 1-based lines of the file with the header as line 1
(Parquet files have no lines: there we say "row N", 1-based over the data rows).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from finhrm_cli.errors import DataError

N_PREV = 5              # prev1_high .. prev5_low: the previous days' extremes an export may carry
OHLC_RTOL = 1e-9

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
        return src


def _stem(path: Path) -> str:
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


# --------------------------------------------------------------------------- raw reading

@dataclass
class _Raw:
    frame: pl.DataFrame         # as read: strings for CSV, typed for Parquet
    where: Callable[[int], str]  # row index -> "line N" / "row N"
    kind: str                   # "csv" | "parquet"
    separator: str = ","


def _fail(path, msg: str) -> DataError:
    return DataError(f"{path}: {msg}")


def _read_file_bytes(path: Path, shown: str) -> bytes:
    if not path.exists():
        hint = ""
        parent = path.parent if str(path.parent) else Path(".")
        if parent.is_dir():
            close = sorted(p.name for p in parent.iterdir() if p.suffix.lower() in (".csv", ".gz", ".parquet"))[:5]
            if close:
                hint = f" (files there: {', '.join(close)})"
        raise _fail(shown, f"file not found{hint}; check the path.")
    if path.is_dir():
        raise _fail(
            shown,
            f"is a folder but not a prepared dataset (no {PREPARED_META}); pass a CSV or Parquet "
            "file, or a folder written by `finhrm prepare -o`.",
        )
    try:
        return path.read_bytes()
    except PermissionError:
        raise _fail(shown, "cannot be read (permission denied); fix its permissions (chmod u+r) or copy it.") from None
    except OSError as exc:
        raise _fail(shown, f"cannot be read ({exc.strerror or exc}); check the file.") from None


def _decode_text(data: bytes, shown: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise _fail(shown, "is not valid UTF-16 text; save it as CSV UTF-8.") from None
    if data.startswith(b"PK\x03\x04"):
        raise _fail(shown, "is a ZIP archive or Excel workbook, not a CSV; unzip it or export the sheet as CSV.")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise _fail(shown, f"line {line}: contains NUL bytes, so it is binary, not a CSV; export the data as CSV (UTF-8).")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _fail(
            shown,
            f"line {line}: not valid UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as CSV UTF-8 "
            "(or convert it, e.g. iconv -f latin1 -t utf-8).",
        ) from None


def _split_header(line: str, sep: str) -> list[str]:
    return next(csv.reader([line], delimiter=sep))


def _sniff_separator(header: str) -> str:
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = {sep: unquoted.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] > 0 else ","


def _read_raw(path: Path, shown: str) -> tuple[_Raw, bytes]:
    data = _read_file_bytes(path, shown)
    if not data.strip():
        raise _fail(shown, "is empty; export the bars again (a header line and one row per day).")
    if data[:2] == b"\x1f\x8b":
        try:
            data_plain = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise _fail(shown, f"is gzip-compressed but cannot be decompressed ({exc}); re-download or re-compress it.") from None
        if not data_plain.strip():
            raise _fail(shown, "is empty once decompressed; export the bars again.")
    else:
        data_plain = data
    if data_plain[:4] == b"PAR1":
        return _read_parquet(data_plain, shown), data
    if path.suffix.lower() == ".parquet":
        raise _fail(shown, "has a .parquet suffix but is not a Parquet file; re-export it or rename it.")
    return _read_csv_text(_decode_text(data_plain, shown), shown), data


def _read_parquet(data: bytes, shown: str) -> _Raw:
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except Exception as exc:  # polars raises several types for corrupt files
        raise _fail(shown, f"is not a readable Parquet file ({str(exc).splitlines()[0][:120]}); re-export it.") from None
    if frame.width == 0:
        raise _fail(shown, "is a Parquet file without columns; re-export it.")
    if frame.height == 0:
        raise _fail(shown, "has columns but no data rows; export the bars again.")
    return _Raw(frame, lambda i: f"row {i + 1}", "parquet")


def _read_csv_text(text: str, shown: str) -> _Raw:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    head = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if head is None:
        raise _fail(shown, "is empty; export the bars again (a header line and one row per day).")
    sep = _sniff_separator(lines[head])
    header = _split_header(lines[head], sep)
    if len(header) < 2:
        raise _fail(
            shown,
            f"line {head + 1}: found a single column ({lines[head].strip()[:60]!r}); expected comma-, semicolon- "
            "or tab-separated columns such as date,open,high,low,close; export the data as CSV.",
        )
    body = "\n".join(lines[head:])
    try:
        frame = pl.read_csv(
            io.BytesIO(body.encode("utf-8")),
            separator=sep,
            infer_schema=False,
            has_header=True,
            truncate_ragged_lines=False,
        )
    except Exception as exc:  # ragged rows and the like: find the line ourselves
        bad = _find_ragged_line(lines, head, sep, len(header))
        if bad is not None:
            raise _fail(
                shown,
                f"line {bad[0]}: has {bad[1]} fields but the header has {len(header)}; "
                "fix that row (a stray separator or an unquoted comma in a number?).",
            ) from None
        raise _fail(shown, f"cannot be parsed as CSV ({str(exc).splitlines()[0][:120]}); check the file.") from None
    if frame.height == 0:
        raise _fail(shown, "has a header but no data rows; export the bars again.")
    # Blank lines come back as all-null rows: drop them but keep their line numbers.
    first_line = head + 2  # 1-based line of data row 0
    blank = pl.all_horizontal(
        [pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in frame.columns]
    )
    frame = frame.with_row_index("_i").filter(~blank)
    if frame.height == 0:
        raise _fail(shown, "has a header but no data rows; export the bars again.")
    line_of = (frame["_i"].to_numpy().astype(np.int64) + first_line)
    frame = frame.drop("_i")
    return _Raw(frame, lambda i: f"line {int(line_of[i])}", "csv", sep)


def _find_ragged_line(lines: list[str], head: int, sep: str, width: int):
    reader = csv.reader(lines[head + 1:], delimiter=sep)
    for offset, row in enumerate(reader):
        if row and len(row) > width:
            return head + 2 + offset, len(row)
    return None


# --------------------------------------------------------------------------- column mapping

def _match_columns(headers: list[str], date_col, col_map, shown) -> tuple[dict[str, str], list[str]]:
    """canonical -> header, plus warnings (duplicate headers)."""
    found = ", ".join(headers)
    norm = {h: _norm(h) for h in headers}
    warnings: list[str] = []
    col_map = dict(col_map or {})
    if date_col is None and "date" in col_map:
        date_col = col_map.pop("date")
    col_map.pop("date", None)

    def lookup(name: str, what: str) -> str:
        if name in headers:
            return name
        hits = [h for h in headers if norm[h] == _norm(name)]
        if hits:
            return hits[0]
        raise _fail(shown, f"{what}: no column {name!r}; found columns: {found}.")

    mapping: dict[str, str] = {}
    if date_col is not None:
        mapping["date"] = lookup(date_col, f"--date-col {date_col}")
    for canon, header in col_map.items():
        mapping[canon] = lookup(header, f"--col {canon}={header}")
    used = set(mapping.values())

    if "date" not in mapping:
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
            raise _fail(
                shown,
                f"no date column (looked for {', '.join(DATE_ALIASES[:5])}); found columns: {found}; "
                "pass --date-col NAME.",
            )
    for canon, aliases in ALIASES.items():
        if canon in mapping:
            continue
        for alias in aliases:
            hits = [h for h in headers if norm[h] == alias and h not in used]
            if hits:
                mapping[canon] = hits[0]
                used.add(hits[0])
                if len(hits) > 1:
                    warnings.append(f"column {hits[0]!r} appears {len(hits)} times; used the first one.")
                break
    for canon in PRICE_COLS:
        if canon not in mapping:
            raise _fail(
                shown,
                f"no {canon!r} column; found columns: {found}. Rename the column or pass --col {canon}=NAME.",
            )
    return mapping, warnings


def _detect_shape(headers: list[str], mapping: dict[str, str]) -> str:
    keys = {_norm(h) for h in headers}
    if "adjclose" in keys and _norm(mapping["date"]) == "date":
        return "yahoo"
    if _norm(mapping["date"]) == "time" and _norm(headers[0]) == "time":
        return "tradingview"
    return "generic"


# --------------------------------------------------------------------------- cell parsing

def _first(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


def _number_hint(value: str, sep: str) -> str:
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", value):
        return "remove the thousands separators (plain numbers like 1234.5)"
    if re.fullmatch(r"[+-]?\d+,\d+", value):
        return "use a dot as the decimal mark (1234.5, not 1234,5)"
    if re.match(r"^[$€£¥]", value):
        return "remove the currency symbol"
    return "fix the cell or delete the row"


_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9}


def _lenient_numbers(s: pl.Series, canon: str) -> pl.Series:
    """Numbers as broker and portal exports write them: a leading currency symbol
    ($123.45, Nasdaq), unambiguous thousands separators (1,234.50 or 1,234,567) and, for
    volume only, K/M/B suffixes (1.21M, Investing.com).  Anything else stays null and is
    reported by the caller."""
    t = s.str.replace(r"^[$€£¥]\s*", "")
    t = pl.Series(s.name, [
        v.replace(",", "") if v is not None and re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+\.\d+|[+-]?\d{1,3}(,\d{3}){2,}", v) else v
        for v in t.to_list()
    ], dtype=pl.String)
    out = t.cast(pl.Float64, strict=False)
    if canon == "volume":
        m = t.str.extract(r"^([+-]?\d+(?:\.\d+)?)\s*([KMBkmb])$", 1).cast(pl.Float64, strict=False)
        unit = t.str.extract(r"^[+-]?\d+(?:\.\d+)?\s*([KMBkmb])$", 1).str.to_uppercase().replace_strict(_SUFFIX, default=None, return_dtype=pl.Float64)
        out = out.fill_null(m * unit)
    return out


def _parse_numbers(raw: _Raw, header: str, canon: str, shown: str, allow_blank: bool) -> np.ndarray:
    s = raw.frame[header]
    where = raw.where
    if s.dtype == pl.String:
        stripped = s.str.strip_chars()
        values = stripped.cast(pl.Float64, strict=False)
        if values.null_count() > stripped.is_null().sum():
            values = _lenient_numbers(stripped, canon)
        blank = (stripped.is_null() | (stripped == "")).to_numpy()
        bad = (values.is_null().to_numpy() & ~blank)
        i = _first(bad)
        if i is not None:
            v = stripped[i]
            raise _fail(
                shown,
                f"{where(i)}: {v!r} in column {header!r} is not a number; {_number_hint(v, raw.separator)}.",
            )
        out = values.to_numpy().astype(np.float64)
    elif s.dtype.is_numeric():
        out = s.cast(pl.Float64).to_numpy().astype(np.float64)
        blank = s.is_null().to_numpy()
    else:
        raise _fail(shown, f"column {header!r} holds {s.dtype}, not numbers; fix the column type or pass --col.")
    out = np.where(blank, np.nan, out)
    if not allow_blank:
        i = _first(blank)
        if i is not None:
            fix = "fill the cell or delete the row" if canon != "volume" else (
                "fill it, delete the row, or remove the volume column if the data has no volume"
            )
            raise _fail(shown, f"{where(i)}: blank cell in column {header!r}; {fix}.")
    i = _first(~blank & ~np.isfinite(out))
    if i is not None:
        kind = "NaN" if np.isnan(out[i]) else "infinity"
        raise _fail(shown, f"{where(i)}: {kind} in column {header!r}; replace it with a number or delete the row.")
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
        i = _first(~((values >= lo * 1000) & (values < hi * 1000)))
        raise _fail(
            shown,
            f"{where(i)}: {values[i]:.0f} in column {header!r} is not a unix time in seconds or milliseconds "
            f"between 1900 and 2100; {_DATE_FIX}.",
        )
    days = np.floor(secs / 86400.0).astype(np.int32)
    return pl.Series("date", days, dtype=pl.Int32).cast(pl.Date)


def _parse_dates(raw: _Raw, header: str, shown: str) -> pl.Series:
    s = raw.frame[header]
    where = raw.where
    if s.dtype == pl.Date:
        out = s
    elif isinstance(s.dtype, pl.Datetime):
        out = s.dt.date()
    elif s.dtype.is_numeric():
        i = _first(s.is_null().to_numpy())
        if i is not None:
            raise _fail(shown, f"{where(i)}: blank date in column {header!r}; fill it or delete the row.")
        return _epoch_to_dates(s.cast(pl.Float64).to_numpy(), header, where, shown)
    elif s.dtype == pl.String:
        out = _parse_date_strings(s.str.strip_chars(), header, where, shown)
    else:
        raise _fail(shown, f"column {header!r} holds {s.dtype}, not dates; {_DATE_FIX}.")
    i = _first(out.is_null().to_numpy())
    if i is not None:
        raise _fail(shown, f"{where(i)}: blank date in column {header!r}; fill it or delete the row.")
    return out.rename("date")


def _parse_date_strings(s: pl.Series, header: str, where, shown) -> pl.Series:
    blank = (s.is_null() | (s == "")).to_numpy()
    i = _first(blank)
    if i is not None:
        raise _fail(shown, f"{where(i)}: blank date in column {header!r}; fill it or delete the row.")
    vals = s.to_list()
    if all(re.fullmatch(r"[+-]?\d+(\.\d*)?", v) for v in vals):
        if all(len(v) == 8 for v in vals):
            compact = s.str.strptime(pl.Date, "%Y%m%d", strict=False)
            if compact.null_count() == 0 and compact.dt.year().is_between(1900, 2100).all():
                return compact
        return _epoch_to_dates(s.cast(pl.Float64).to_numpy(), header, where, shown)
    if all(_ISO.match(v) for v in vals):
        out = s.str.extract(r"^(\d{4}-\d{1,2}-\d{1,2})", 1).str.strptime(pl.Date, "%Y-%m-%d", strict=False)
        i = _first(out.is_null().to_numpy())
        if i is not None:
            raise _fail(shown, f"{where(i)}: cannot read the date {vals[i]!r} in column {header!r}; {_DATE_FIX}.")
        return out
    bare = s.str.replace(_TIME_TAIL.pattern, "")
    results = []
    for fmt in _DATE_FORMATS:
        parsed = bare.str.strptime(pl.Date, fmt, strict=False)
        results.append((len(parsed) - parsed.null_count(), fmt, parsed))
    best = max(r[0] for r in results)
    winners = [r for r in results if r[0] == best]
    if best == 0:
        raise _fail(shown, f"{where(0)}: cannot read the date {vals[0]!r} in column {header!r}; {_DATE_FIX}.")
    if len(winners) > 1 and any(not w[2].equals(winners[0][2]) for w in winners[1:]):
        fmts = " or ".join(_human_format(w[1]) for w in winners[:2])
        raise _fail(
            shown,
            f"dates in column {header!r} like {vals[0]!r} are ambiguous ({fmts}: day or month first?); {_DATE_FIX}.",
        )
    parsed = winners[0][2]
    i = _first(parsed.is_null().to_numpy())
    if i is not None:
        raise _fail(shown, f"{where(i)}: cannot read the date {vals[i]!r} in column {header!r}; {_DATE_FIX}.")
    return parsed


# --------------------------------------------------------------------------- read_bars

def _date_order(raw: _Raw, dates: pl.Series, n: int, shown: str, warnings: list[str]) -> np.ndarray:
    """Row order that sorts the bars by date (with a warning if the file was not in date
    order); duplicate dates fail, naming both lines."""
    # Duplicate dates: name both lines.
    order = np.arange(n)
    day = dates.cast(pl.Int32).to_numpy()
    srt = np.argsort(day, kind="stable")
    dup = np.flatnonzero(np.diff(day[srt]) == 0)
    if dup.size:
        a, b = sorted((int(srt[dup[0]]), int(srt[dup[0] + 1])))
        raise _fail(
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


def _check_prices(cols: dict[str, np.ndarray], mapping: dict[str, str], where, shown: str) -> None:
    """Price sanity, in chronological order: prices above 0 and low <= close <= high."""
    for canon in PRICE_COLS:
        i = _first(cols[canon] <= 0)
        if i is not None:
            raise _fail(shown, f"{where(i)}: non-positive price {cols[canon][i]:g} in column {mapping[canon]!r}; prices must be above 0, fix or delete the row.")
    hi, lo, cl = cols["high"], cols["low"], cols["close"]
    tol = OHLC_RTOL * np.maximum(np.abs(hi), np.abs(lo))
    i = _first(hi < lo - tol)
    if i is not None:
        raise _fail(shown, f"{where(i)}: high {hi[i]:g} is below low {lo[i]:g} (columns {mapping['high']!r}, {mapping['low']!r}); fix or delete the row.")
    i = _first((cl < lo - tol) | (cl > hi + tol))
    if i is not None:
        raise _fail(shown, f"{where(i)}: close {cl[i]:g} lies outside [low {lo[i]:g}, high {hi[i]:g}] (column {mapping['close']!r}); fix or delete the row.")


def _check_indicators(cols: dict[str, np.ndarray], indicators: list[str], mapping: dict[str, str], where, shown: str) -> None:
    """Indicator columns: blanks allowed only at the start (the export's warm-up); price-like
    ones above 0, RSI and its mean within 0..100."""
    for canon in indicators:
        v = cols[canon]
        blank = np.isnan(v)
        start = _first(~blank)
        if start is None:
            raise _fail(shown, f"column {mapping[canon]!r} is blank on every row; fill it or delete the column so finhrm computes it.")
        i = _first(blank[start:])
        if i is not None:
            raise _fail(
                shown,
                f"{where(start + i)}: blank cell in column {mapping[canon]!r} after its warm-up; fill it, delete the row, "
                "or delete the column so finhrm computes it.",
            )
        valid = v[start:]
        if canon in PRICE_LIKE_INDICATORS:
            j = _first(valid <= 0)
            if j is not None:
                raise _fail(shown, f"{where(start + j)}: non-positive value {valid[j]:g} in column {mapping[canon]!r}; fix it or delete the column.")
        else:
            j = _first((valid < -1e-6) | (valid > 100 + 1e-6))
            if j is not None:
                raise _fail(shown, f"{where(start + j)}: {valid[j]:g} in column {mapping[canon]!r} is outside 0..100; fix it or delete the column.")


def read_bars(path, date_col: str | None = None, col_map: dict[str, str] | None = None) -> tuple[pl.DataFrame, Source]:
    """Read and validate a bars file.

    Returns canonical columns ``date`` (Date), ``open, high, low, close, volume`` (Float64;
    volume all null if the file has none) and any indicator columns the file carries
    (``ema7, rsi, rsi_ma, prevK_high, prevK_low``; leading nulls = the export's warm-up), sorted by date.
    """
    shown = str(path)
    p = Path(path).expanduser()
    raw, data = _read_raw(p, shown)
    headers = [str(c) for c in raw.frame.columns]
    mapping, warnings = _match_columns(headers, date_col, col_map, shown)
    shape = _detect_shape(headers, mapping)
    notes: list[str] = []
    if shape == "yahoo":
        notes.append("Yahoo file: prices use Close (not Adj Close) so open/high/low/close stay consistent.")

    cols: dict[str, np.ndarray] = {}
    for canon in PRICE_COLS:
        cols[canon] = _parse_numbers(raw, mapping[canon], canon, shown, allow_blank=False)
    n = raw.frame.height
    if "volume" in mapping:
        vol = _parse_numbers(raw, mapping["volume"], "volume", shown, allow_blank=False)
        i = _first(vol < 0)
        if i is not None:
            raise _fail(shown, f"{raw.where(i)}: negative volume {vol[i]:g} in column {mapping['volume']!r}; fix the cell or delete the row.")
        cols["volume"] = vol
    else:
        cols["volume"] = np.full(n, np.nan)
        warnings.append("no volume column: the volume input is set to 0.")
    indicators = [c for c in INDICATOR_COLS if c in mapping]
    for canon in indicators:
        cols[canon] = _parse_numbers(raw, mapping[canon], canon, shown, allow_blank=True)
    dates = _parse_dates(raw, mapping["date"], shown)

    # Sort by date, then check prices and indicators in chronological order.
    order = _date_order(raw, dates, n, shown, warnings)
    where = lambda i: raw.where(int(order[i]))  # noqa: E731  (index in sorted order -> file location)
    cols = {k: v[order] for k, v in cols.items()}
    dates = dates.gather(order)

    _check_prices(cols, mapping, where, shown)
    _check_indicators(cols, indicators, mapping, where, shown)

    bars = pl.DataFrame(
        {"date": dates, **{k: pl.Series(k, cols[k], dtype=pl.Float64, nan_to_null=True) for k in cols}}
    )
    columns = {k: mapping[k] for k in CANONICAL if k in mapping}
    src = Source(
        path=shown,
        name=_stem(p),
        shape=shape,
        columns=columns,
        fingerprint=hashlib.sha256(data).hexdigest(),
        n_rows=n,
        warnings=warnings,
        notes=notes,
    )
    return bars, src


# --------------------------------------------------------------------------- inputs

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
