"""Daily bars in, model-ready numpy windows out (polars + numpy only).

Pipeline: ``read_bars`` (detect the file's shape, read every cell as text, validate with
one-line errors naming file, line and column) -> ``build_features`` (one lazy polars
query: indicators the file lacks, scale-free inputs, targets) -> chronological splits ->
``Normalizer`` fit on training rows only -> ``Dataset.windows`` (numpy stride tricks).

Line numbers in messages are 1-based lines of the file with the header as line 1
(Parquet files have no lines: there we say "row N", 1-based over the data rows).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from finhrm_cli.config import FeatureConfig
from finhrm_cli.errors import DataError

# --------------------------------------------------------------------------- feature sets

HRM18: list[str] = [
    "open", "high", "low", "close", "ema7", "volume", "rsi", "rsi_ma",
    "prev1_high", "prev1_low", "prev2_high", "prev2_low", "prev3_high", "prev3_low",
    "prev4_high", "prev4_low", "prev5_high", "prev5_low",
]
# "extended": the 18 inputs plus what a careful user would add for a next-day range
# forecast: today's true range and its 5- and 20-day means (the volatility regime),
# multi-day returns, the overnight gap, the distance to the 20-day extremes, realised
# volatility and the day of the week.  All of them read rows <= t only.
EXTENDED_EXTRA: list[str] = [
    "true_range", "atr_5", "atr_20", "ret_1", "ret_5", "ret_20", "gap",
    "hi_20", "lo_20", "vol_20", "dow_sin", "dow_cos",
]
FEATURE_SETS: dict[str, list[str]] = {"hrm18": HRM18, "extended": HRM18 + EXTENDED_EXTRA}

FEATURE_PREFIX = "f_"   # feature columns in Dataset.frame are "f_<name>"; raw prices keep their names
RAW_COLUMNS = ["date", "open", "high", "low", "close", "volume", "next_high", "next_low", "scale"]
SCALE_N = 20            # trailing days of the volatility scale
SCALE_FLOOR = 1e-4
TARGET_COLUMNS = ["target_high", "target_low"]

EMA_ALPHA = 2.0 / 8.0   # EMA 7
RSI_N = 14
RSI_MA_N = 14
N_PREV = 5
VOLUME_FLOOR = 1e-3     # relative volume is clipped here before the log (a zero-volume day)
OHLC_RTOL = 1e-9

PREPARED_META = "meta.json"
PREPARED_FRAME = "features.parquet"
PREPARED_FORMAT = "finhrm-prepared"
PREPARED_VERSION = 1


def feature_columns(names: list[str]) -> list[str]:
    """Column names in ``Dataset.frame`` for the given feature names."""
    return [FEATURE_PREFIX + n for n in names]


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
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv", ".tsv", ".txt", ".parquet"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or path.name


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
    where = lambda i: raw.where(int(order[i]))  # noqa: E731  (index in sorted order -> file location)
    cols = {k: v[order] for k, v in cols.items()}
    dates = dates.gather(order)

    # Price sanity, in chronological order.
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

    # Indicator columns: blanks allowed only at the start (the export's warm-up).
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


# --------------------------------------------------------------------------- features

def _wilder(x: pl.Expr, idx: pl.Expr, n: int) -> pl.Expr:
    """Wilder's smoothing of ``x`` (x[0] is null: a diff): the first value, at row n, is the
    simple mean of x[1..n]; then avg_t = (avg_{t-1} * (n-1) + x_t) / n."""
    seeded = pl.when(idx == n).then(x.rolling_mean(n)).when(idx > n).then(x).otherwise(None)
    return seeded.ewm_mean(alpha=1.0 / n, adjust=False)


def _indicator_exprs(present: set[str]) -> list[pl.Expr]:
    """Expressions for ema7 / rsi / rsi_ma / prevK_* the bars lack (as given otherwise)."""
    idx = pl.col("_i")
    out = []
    if "ema7" not in present:
        out.append(pl.col("close").ewm_mean(alpha=EMA_ALPHA, adjust=False).alias("ema7"))
    if "rsi" not in present:
        delta = pl.col("close").diff()
        gain = _wilder(delta.clip(lower_bound=0.0), idx, RSI_N)
        loss = _wilder((-delta).clip(lower_bound=0.0), idx, RSI_N)
        rsi = pl.when(loss == 0.0).then(pl.lit(100.0)).otherwise(100.0 - 100.0 / (1.0 + gain / loss))
        out.append(pl.when(gain.is_null()).then(None).otherwise(rsi).alias("rsi"))
    for k in range(1, N_PREV + 1):
        for s in ("high", "low"):
            if f"prev{k}_{s}" not in present:
                out.append(pl.col(s).shift(k).alias(f"prev{k}_{s}"))
    return out


def _true_range() -> pl.Expr:
    """log(max(high, prev close) / min(low, prev close)); log(high / low) on the first row."""
    pc = pl.col("close").shift(1)
    hi = pl.max_horizontal(pl.col("high"), pc)
    lo = pl.min_horizontal(pl.col("low"), pc)
    return (hi / lo).log()


def _scale_expr() -> pl.Expr:
    """The volatility scale of day t: mean log true range over the last SCALE_N days.

    Targets are divided by it for training (and predictions multiplied back), so the model
    works on a homoscedastic problem: a 2% range means something else in a calm and in a
    wild market.  Only rows <= t are read; early rows use the days there are.
    """
    return _true_range().rolling_mean(SCALE_N, min_samples=1).clip(lower_bound=SCALE_FLOOR).alias("scale")


def _extra_feature(name: str) -> pl.Expr | None:
    lc = pl.col("close").log()
    if name == "true_range":
        return _true_range()
    if name in ("atr_5", "atr_20"):
        return _true_range().rolling_mean(int(name[4:])).log()
    if name.startswith("ret_"):
        return lc - lc.shift(int(name[4:]))
    if name == "gap":
        return (pl.col("open") / pl.col("close").shift(1)).log()
    if name == "hi_20":
        return (pl.col("high").rolling_max(20) / pl.col("close")).log()
    if name == "lo_20":
        return (pl.col("low").rolling_min(20) / pl.col("close")).log()
    if name == "vol_20":
        return (lc - lc.shift(1)).rolling_std(20)
    if name in ("dow_sin", "dow_cos"):
        ang = pl.col("date").dt.weekday().cast(pl.Float64) * (2 * math.pi / 7)
        return ang.sin() if name == "dow_sin" else ang.cos()
    return None


def _feature_exprs(names: list[str], has_volume: bool, volume_window: int) -> list[pl.Expr]:
    exprs = []
    for name in names:
        extra = _extra_feature(name)
        if extra is not None:
            e = extra
        elif name in ("open", "high", "low", "close", "ema7") or name.startswith("prev"):
            e = (pl.col(name) / pl.col("close")).log()
        elif name == "volume":
            if has_volume:
                mean = pl.col("volume").rolling_mean(volume_window)
                ratio = (pl.col("volume") / mean).clip(lower_bound=VOLUME_FLOOR)
                e = pl.when(mean.is_null()).then(None).when(mean > 0).then(ratio.log()).otherwise(0.0)
            else:
                e = pl.lit(0.0)
        elif name in ("rsi", "rsi_ma"):
            e = pl.col(name) / 100.0
        else:
            raise DataError(f"feature {name!r} has no definition in finhrm_cli/data.py; pick another --feature-set.")
        exprs.append(e.cast(pl.Float64).alias(FEATURE_PREFIX + name))
    return exprs


def _target_exprs(h: int) -> list[pl.Expr]:
    return [
        pl.col("high").shift(-h).alias("next_high"),
        pl.col("low").shift(-h).alias("next_low"),
        (pl.col("high").shift(-h) / pl.col("close")).log().alias("target_high"),
        (pl.col("low").shift(-h) / pl.col("close")).log().alias("target_low"),
    ]


def build_features(bars: pl.DataFrame, fcfg: FeatureConfig) -> tuple[pl.DataFrame, dict[str, int]]:
    """Bars -> (frame, dropped).

    ``frame``: one row per usable day (leading warm-up rows dropped) with the raw columns
    (date, open, high, low, close, volume, next_high, next_low), the targets
    (target_high, target_low; null for the last ``horizon`` rows) and one ``f_<name>``
    column per feature of ``fcfg.feature_set``.  ``dropped``: reason -> rows.
    Everything at row t depends on rows <= t only (targets aside).
    """
    if fcfg.feature_set not in FEATURE_SETS:
        raise DataError(f"unknown feature set {fcfg.feature_set!r}; use one of {', '.join(FEATURE_SETS)}.")
    names = FEATURE_SETS[fcfg.feature_set]
    present = {c for c in INDICATOR_COLS if c in bars.columns}
    if "volume" not in bars.columns:
        bars = bars.with_columns(pl.lit(None, dtype=pl.Float64).alias("volume"))
    has_volume = bars.height > 0 and bars["volume"].null_count() < bars.height
    fcols = feature_columns(names)
    lf = (
        bars.lazy()
        .with_row_index("_i")
        .with_columns(pl.col(["open", "high", "low", "close", "volume"]).cast(pl.Float64))
        .with_columns(
            pl.any_horizontal([pl.col(c).is_null() for c in sorted(present)] or [pl.lit(False)]).alias("_file_blank")
        )
        .with_columns(_indicator_exprs(present))
    )
    if "rsi_ma" not in present:
        lf = lf.with_columns(pl.col("rsi").rolling_mean(RSI_MA_N).alias("rsi_ma"))
    lf = lf.with_columns(_feature_exprs(names, has_volume, fcfg.volume_window) + _target_exprs(fcfg.horizon) + [_scale_expr()])
    lf = lf.with_columns(pl.all_horizontal([pl.col(c).is_not_null() & pl.col(c).is_finite() for c in fcols]).alias("_ok"))
    full = lf.select(["date"] + RAW_COLUMNS[1:] + TARGET_COLUMNS + fcols + ["_file_blank", "_ok"]).collect()

    ok = full["_ok"].to_numpy()
    lead = _first(ok)
    lead = full.height if lead is None else lead
    frame = full.slice(lead)
    bad = _first(~frame["_ok"].to_numpy())
    if bad is not None:
        row = frame.row(bad, named=True)
        missing = [c[len(FEATURE_PREFIX):] for c in fcols if row[c] is None or not math.isfinite(row[c])]
        raise DataError(
            f"the bars of {row['date']} give no value for {', '.join(missing)} after the warm-up; "
            "fill the gap in the file or delete the row."
        )
    file_blank = full["_file_blank"].to_numpy()[:lead]
    n_file = int(_first(~file_blank) if _first(~file_blank) is not None else lead)
    dropped: dict[str, int] = {}
    if n_file:
        dropped["warm-up blanks in the file's indicator columns"] = n_file
    if lead - n_file:
        dropped["indicator warm-up"] = lead - n_file
    return frame.drop(["_file_blank", "_ok"]), dropped


# --------------------------------------------------------------------------- normalizer

@dataclass
class Normalizer:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x2d: np.ndarray) -> "Normalizer":
        x = np.asarray(x2d, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise DataError("no training rows to fit the normaliser on; use a longer history.")
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std = np.where(std < 1e-12, 1.0, std)
        return cls(mean=mean, std=std)

    def transform(self, x2d: np.ndarray) -> np.ndarray:
        x = np.asarray(x2d, dtype=np.float64)
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"stored normaliser is malformed ({exc}); re-run prepare/train.") from None
        if mean.shape != std.shape or mean.ndim != 1 or not np.all(np.isfinite(mean)) or not np.all(std > 0):
            raise DataError("stored normaliser is malformed (mean/std shapes or values); re-run prepare/train.")
        return cls(mean=mean, std=std)

    def __eq__(self, other) -> bool:
        return isinstance(other, Normalizer) and np.array_equal(self.mean, other.mean) and np.array_equal(self.std, other.std)


# --------------------------------------------------------------------------- windows

@dataclass
class Windows:
    x: np.ndarray          # (n, T, F) float32, normalised
    y: np.ndarray          # (n, 2) float32 log-ratio targets [high, low]; NaN where unknown
    end: np.ndarray        # (n,) int64 row in Dataset.frame of the last observed day
    dates: np.ndarray      # (n,) datetime64[D] of the last observed day
    close: np.ndarray      # (n,) float64 of the last observed day
    high: np.ndarray
    low: np.ndarray
    next_high: np.ndarray  # (n,) float64 actual price h ahead; NaN if unknown
    next_low: np.ndarray
    scale: np.ndarray      # (n,) float64 volatility scale of the last observed day (see _scale_expr)

    def __len__(self) -> int:
        return int(self.end.shape[0])

    def subset(self, idx) -> "Windows":
        return Windows(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})


# --------------------------------------------------------------------------- splits

SPLITS = ("train", "val", "test")


def _split_sizes(n: int, fcfg: FeatureConfig) -> dict[str, tuple[int, int]]:
    n_train = int(math.floor(n * fcfg.train_frac + 1e-9))
    n_val = int(math.floor(n * fcfg.val_frac + 1e-9))
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}


def _ends(start: int, end: int, seq_len: int, horizon: int) -> np.ndarray:
    """Window end rows t with rows t-seq_len+1..t and the target row t+h all in [start, end)."""
    lo, hi = start + seq_len - 1, end - 1 - horizon
    return np.arange(lo, hi + 1, dtype=np.int64) if hi >= lo else np.zeros(0, dtype=np.int64)


def _rows_needed(fcfg: FeatureConfig, min_windows: int) -> int:
    if min_windows <= 0:
        return fcfg.seq_len
    k = fcfg.seq_len - 1 + fcfg.horizon + min_windows
    fracs = [fcfg.train_frac, 1.0 - fcfg.train_frac - fcfg.val_frac] + ([fcfg.val_frac] if fcfg.val_frac > 0 else [])
    n = max(k, int(k / max(min(fracs), 1e-9)) - 3)
    for n in range(n, n + 10_000_000):
        sizes = _split_sizes(n, fcfg)
        if all(
            e - s >= k for name, (s, e) in sizes.items() if name != "val" or fcfg.val_frac > 0
        ):
            return n
    return n  # pragma: no cover


def _compute_splits(frame: pl.DataFrame, fcfg: FeatureConfig) -> dict[str, dict]:
    dates = frame["date"]
    out = {}
    for name, (s, e) in _split_sizes(frame.height, fcfg).items():
        ends = _ends(s, e, fcfg.seq_len, fcfg.horizon)
        out[name] = {
            "start": s,
            "end": e,
            "rows": e - s,
            "first_date": dates[s].isoformat() if e > s else None,
            "last_date": dates[e - 1].isoformat() if e > s else None,
            "n_windows": int(ends.size),
            "first_end": int(ends[0]) if ends.size else None,
            "last_end": int(ends[-1]) if ends.size else None,
        }
    return out


# --------------------------------------------------------------------------- dataset

@dataclass
class Dataset:
    frame: pl.DataFrame
    feature_names: list[str]
    source: Source
    fcfg: FeatureConfig
    normalizer: Normalizer
    splits: dict[str, dict]
    dropped: dict[str, int]
    _x: np.ndarray | None = field(default=None, repr=False, compare=False)

    # ---- arrays
    def features(self) -> np.ndarray:
        """(n_rows, F) float64 un-normalised features of every row of ``frame``."""
        return self.frame.select(feature_columns(self.feature_names)).to_numpy().astype(np.float64)

    def _normalized(self) -> np.ndarray:
        if self._x is None:
            self._x = np.ascontiguousarray(self.normalizer.transform(self.features()), dtype=np.float32)
        return self._x

    def window_ends(self, split: str) -> np.ndarray:
        T, h = self.fcfg.seq_len, self.fcfg.horizon
        if split == "all":
            return np.arange(T - 1, self.frame.height, dtype=np.int64)
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; use train, val, test or all")
        sp = self.splits[split]
        return _ends(sp["start"], sp["end"], T, h)

    def windows(self, split: str) -> Windows:
        """Windows of ``seq_len`` days ending at each end row of ``split``.

        train/val/test: only windows whose rows and target row lie in that split.
        all: every row with enough history, including the last rows whose target is unknown.
        """
        ends = self.window_ends(split)
        T = self.fcfg.seq_len
        x2 = self._normalized()
        F = x2.shape[1]
        if ends.size:
            view = np.lib.stride_tricks.sliding_window_view(x2, T, axis=0)  # (n-T+1, F, T)
            x = np.ascontiguousarray(view[ends - (T - 1)].transpose(0, 2, 1), dtype=np.float32)
        else:
            x = np.zeros((0, T, F), dtype=np.float32)
        f = self.frame

        def col(name: str) -> np.ndarray:
            return f[name].to_numpy(allow_copy=True).astype(np.float64)[ends]

        y = np.stack([col("target_high"), col("target_low")], axis=1).astype(np.float32) if ends.size else np.zeros((0, 2), np.float32)
        return Windows(
            x=x,
            y=y,
            end=ends,
            dates=f["date"].to_numpy().astype("datetime64[D]")[ends],
            close=col("close"),
            high=col("high"),
            low=col("low"),
            next_high=col("next_high"),
            next_low=col("next_low"),
            scale=col("scale"),
        )

    def head(self, n_rows: int, fcfg: FeatureConfig, normalizer: "Normalizer | None" = None) -> "Dataset":
        """The first ``n_rows`` rows as a dataset of their own, split by ``fcfg`` and with a
        normaliser fit on its own training rows (walk-forward folds)."""
        return _finish(self.frame.head(n_rows), self.feature_names, self.source, fcfg, normalizer,
                       self.dropped, self.source.path, 1)

    # ---- descriptions
    def summary(self) -> dict:
        """JSON-able description: source, usable rows and date range, splits, dropped rows, warnings."""
        d = self.frame["date"]
        has = self.frame.height > 0
        return {
            "source": self.source.to_dict(),
            "shape": self.source.shape,
            "rows": self.frame.height,            # usable rows (after the warm-up)
            "rows_read": self.source.n_rows,
            "first_date": d[0].isoformat() if has else None,
            "last_date": d[-1].isoformat() if has else None,
            "seq_len": self.fcfg.seq_len,
            "horizon": self.fcfg.horizon,
            "splits": {k: dict(v) for k, v in self.splits.items()},
            "windows_all": int(self.window_ends("all").size),
            "dropped": dict(self.dropped),
            "warnings": list(self.source.warnings),
            "notes": list(self.source.notes),
            "feature_names": list(self.feature_names),
        }

    def meta(self) -> dict:
        from finhrm_cli import __version__

        return {
            "format": PREPARED_FORMAT,
            "format_version": PREPARED_VERSION,
            "finhrm_version": __version__,
            "source": self.source.to_dict(),
            "features": dataclasses.asdict(self.fcfg),
            "feature_names": list(self.feature_names),
            "normalizer": self.normalizer.to_dict(),
            "splits": {k: dict(v) for k, v in self.splits.items()},
            "dropped": dict(self.dropped),
            "n_rows": self.frame.height,
        }


def _too_few(shown: str, fcfg: FeatureConfig, n_read: int, usable: int, warm: int, min_windows: int) -> DataError:
    need = _rows_needed(fcfg, min_windows)
    if usable == 0:  # the file ended inside the warm-up: say what a full warm-up takes
        warm = max(warm, RSI_N + RSI_MA_N - 1, N_PREV, fcfg.volume_window - 1)
    if min_windows <= 0:
        what = f"seq_len={fcfg.seq_len} needs at least {need} usable rows"
    else:
        what = (
            f"seq_len={fcfg.seq_len}, horizon={fcfg.horizon} and splits {fcfg.train_frac:.2f}/{fcfg.val_frac:.2f}/"
            f"{1 - fcfg.train_frac - fcfg.val_frac:.2f} need at least {need} usable rows"
        )
    return _fail(
        shown,
        f"too few rows: {what} ({need + warm} in the file with {warm} indicator warm-up rows), but it has "
        f"{n_read} rows, {usable} usable; use a longer history or lower --seq-len/--horizon.",
    )


def _finish(frame, names, source, fcfg, normalizer, dropped, shown, min_windows) -> Dataset:
    usable = frame.height
    warm = sum(dropped.values())
    need = _rows_needed(fcfg, min_windows)
    if usable < need:
        raise _too_few(shown, fcfg, source.n_rows, usable, warm, min_windows)
    splits = _compute_splits(frame, fcfg)
    ds = Dataset(frame=frame, feature_names=list(names), source=source, fcfg=fcfg,
                 normalizer=normalizer, splits=splits, dropped=dict(dropped))
    if normalizer is None:
        sp = splits["train"]
        fit_rows = ds.features()[sp["start"]: sp["end"] - fcfg.horizon]
        ds.normalizer = Normalizer.fit(fit_rows)
    elif ds.normalizer.mean.shape[0] != len(names):
        raise DataError(
            f"{shown}: the normaliser has {ds.normalizer.mean.shape[0]} features but feature set "
            f"{fcfg.feature_set!r} has {len(names)}; use the run's --feature-set."
        )
    return ds


def prepare(
    path,
    fcfg: FeatureConfig,
    date_col: str | None = None,
    col_map: dict[str, str] | None = None,
    normalizer: Normalizer | None = None,
    min_windows: int = 1,
) -> Dataset:
    """Data file or prepared folder -> Dataset.

    ``normalizer`` (from a trained run) is used unchanged; otherwise it is fit on the
    training rows.  ``min_windows``: every split (val only if val_frac > 0) must hold at
    least this many windows; 0 = only require one full window (enough for predict).
    """
    fcfg.validate()
    shown = str(path)
    p = Path(path).expanduser()
    if p.is_dir() and (p / PREPARED_META).exists():
        return _load_prepared(p, shown, fcfg, normalizer, min_windows)
    bars, source = read_bars(path, date_col=date_col, col_map=col_map)
    try:
        frame, dropped = build_features(bars, fcfg)
        return _finish(frame, FEATURE_SETS[fcfg.feature_set], source, fcfg, normalizer, dropped, shown, min_windows)
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
    return _finish(frame, FEATURE_SETS[fcfg.feature_set], source, fcfg, normalizer, dropped, source.path, min_windows)


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


def prepare_many(
    paths,
    fcfg: FeatureConfig,
    date_col: str | None = None,
    col_map: dict[str, str] | None = None,
    normalizer: Normalizer | None = None,
    min_windows: int = 1,
) -> list[Dataset]:
    """Several series (one per file) -> datasets that share one normaliser.

    Each series is featurized and split chronologically on its own, so windows never mix
    tickers.  Without a given normaliser, one is fit on the *training* rows of all series
    pooled (the inputs are scale-free, so pooling is sound).  Series names are the file
    names, made unique.
    """
    files = expand_inputs(paths)
    dss = [prepare(f, fcfg, date_col=date_col, col_map=col_map, normalizer=normalizer, min_windows=min_windows)
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
        h = fcfg.horizon
        rows = [ds.features()[ds.splits["train"]["start"]: ds.splits["train"]["end"] - h] for ds in dss]
        pooled = Normalizer.fit(np.concatenate(rows))
        for ds in dss:
            ds.normalizer = pooled
            ds._x = None
    return dss


def concat_windows(parts: list[Windows]) -> Windows:
    """Windows of several series, one after the other (``end`` stays per series)."""
    if len(parts) == 1:
        return parts[0]
    return Windows(**{f.name: np.concatenate([getattr(w, f.name) for w in parts]) for f in dataclasses.fields(Windows)})


def save_prepared(ds: Dataset, out_dir) -> Path:
    """Write ``features.parquet`` and ``meta.json`` (atomically) into ``out_dir``."""
    from finhrm_cli.fsutil import atomic_write_bytes, atomic_write_json

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; pick another output folder.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        ds.frame.write_parquet(buf)
        atomic_write_bytes(out / PREPARED_FRAME, buf.getvalue())
        atomic_write_json(out / PREPARED_META, ds.meta(), allow_nan=False)
    except PermissionError:
        raise DataError(f"{out}: cannot write there (permission denied); pick another output folder.") from None
    return out


def _load_prepared(p: Path, shown: str, fcfg: FeatureConfig, normalizer, min_windows) -> Dataset:
    try:
        meta = json.loads((p / PREPARED_META).read_text(encoding="utf-8"))
        if meta.get("format") != PREPARED_FORMAT:
            raise ValueError("not a finhrm prepared folder")
        frame = pl.read_parquet(p / PREPARED_FRAME)
        stored = FeatureConfig(**{k: v for k, v in meta["features"].items() if k in {f.name for f in dataclasses.fields(FeatureConfig)}})
        names = list(meta["feature_names"])
        source = Source.from_dict(meta["source"])
        dropped = {str(k): int(v) for k, v in meta.get("dropped", {}).items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _fail(shown, f"is not a valid prepared folder ({exc}); run `finhrm prepare FILE -o {shown}` again.") from None
    except Exception as exc:  # corrupt parquet
        raise _fail(shown, f"has an unreadable {PREPARED_FRAME} ({str(exc).splitlines()[0][:100]}); run `finhrm prepare` again.") from None
    missing = [c for c in RAW_COLUMNS + feature_columns(names) if c not in frame.columns]
    if missing:
        raise _fail(shown, f"{PREPARED_FRAME} lacks columns {', '.join(missing)}; run `finhrm prepare` again.")
    for attr in ("volume_window", "feature_set"):
        if getattr(fcfg, attr) != getattr(stored, attr):
            raise _fail(
                shown,
                f"was prepared with {attr}={getattr(stored, attr)!r}, not {getattr(fcfg, attr)!r}; "
                "pass the original data file instead, or prepare again with the new setting.",
            )
    if fcfg.horizon != stored.horizon:
        frame = frame.with_columns(_target_exprs(fcfg.horizon))
    origin = source.shape
    source = dataclasses.replace(
        source, path=shown, shape="prepared",
        notes=list(source.notes) + [f"loaded from a prepared folder (made from a {origin} file {meta['source'].get('path')})."],
    )
    return _finish(frame, names, source, fcfg, normalizer, dropped, shown, min_windows)
