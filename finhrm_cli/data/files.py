"""A bars file's bytes: gzip, Parquet, UTF-8/UTF-16 text and CSV dialects (polars).

``open_data(path, shown)`` looks at the file once, streaming: its sha256 fingerprint, gzip
(decompressed to a temporary file, never into memory), Parquet, and whether the text is
plain UTF-8 with ``\\n`` or ``\\r\\n`` line ends.  It returns a :class:`DataFile` with the
header names; ``DataFile.load(dates, numbers)`` then keeps only the columns read_bars needs:

- fast path (plain UTF-8 CSV, Parquet): a CSV is parsed by polars in blocks of about 8 MB
  (whole lines, the header line prepended to each), its number columns to float64 on the
  way in, so neither the text nor a frame of strings is ever whole in memory; Parquet is
  read from its path, only the needed columns.
- compatibility path (UTF-16, old Mac line ends, blank lines before the header, and any
  file the fast path cannot read cleanly): the whole text in memory, every cell a string,
  as finhrm always read files.  It is the path that builds the one-line error naming the
  line, so a malformed file gets the same message whichever path met it first.

Line numbers in messages are 1-based lines of the file with the header as line 1
(Parquet files have no lines: there we say "row N", 1-based over the data rows).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import os
import re
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from finhrm_cli.data.values import fail

CHUNK = 1 << 20     # streaming look
BLOCK = 8 << 20     # rows parsed at a time on the fast path


@dataclass
class Raw:
    frame: pl.DataFrame         # as read: strings (or float64 on the fast path) for CSV, typed for Parquet
    where: Callable[[int], str]  # row index -> "line N" / "row N"
    kind: str                   # "csv" | "parquet"
    separator: str = ","
    clean: bool = False         # cells already stripped of spaces (the fast CSV path)
    unterminated: int | None = None  # the last line, if no line break ends it: a file cut off mid-write?


# --------------------------------------------------------------------------- streaming look

class _TextCheck:
    """Fed the plain bytes chunk by chunk: is this text the fast path can read as is?"""

    def __init__(self):
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.fast = True
        self.nonblank = False
        self._cr = False  # the last chunk ended with \r

    def feed(self, chunk: bytes, final: bool = False) -> None:
        if not self.nonblank and chunk.strip():
            self.nonblank = True
        if not self.fast or not chunk:
            return
        lone_cr = chunk.count(b"\r") - chunk.count(b"\r\n") - chunk.endswith(b"\r")
        if (self._cr and not chunk.startswith(b"\n")) or (final and chunk.endswith(b"\r")):
            lone_cr += 1
        self._cr = chunk.endswith(b"\r")
        if b"\x00" in chunk or lone_cr:
            self.fast = False  # binary, or old Mac line ends
            return
        try:
            self.utf8.decode(chunk, final)
        except UnicodeDecodeError:
            self.fast = False


def _open_error(path: Path, shown: str, exc: OSError):
    if isinstance(exc, PermissionError):
        return fail(shown, "cannot be read (permission denied); fix its permissions (chmod u+r) or copy it.")
    return fail(shown, f"cannot be read ({exc.strerror or exc}); check the file.")


def _look(path: Path, shown: str) -> tuple[str, Path | None, bytes, _TextCheck]:
    """One streaming pass: (sha256 of the file, decompressed temp file or None, the first
    chunk of the plain bytes, the text check)."""
    sha = hashlib.sha256()
    check = _TextCheck()
    try:
        with path.open("rb") as fh:
            first = fh.read(CHUNK)
            if first[:2] == b"\x1f\x8b":
                sha.update(first)
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    sha.update(chunk)
                tmp, head = _gunzip(path, shown, check)
                return sha.hexdigest(), tmp, head, check
            for chunk in _checked_chunks(first, fh.read, check):
                sha.update(chunk)
    except OSError as exc:
        raise _open_error(path, shown, exc) from None
    return sha.hexdigest(), None, first, check


def _checked_chunks(first: bytes, read, check: _TextCheck):
    """``first``, then ``read(CHUNK)`` until empty, each chunk fed to ``check`` (the last one
    marked final) before it is yielded."""
    chunk = first
    while chunk:
        nxt = read(CHUNK)
        check.feed(chunk, final=not nxt)
        yield chunk
        chunk = nxt


def _gunzip(path: Path, shown: str, check: _TextCheck) -> tuple[Path, bytes]:
    """Decompress to a temporary file (removed by ``DataFile.close``), feeding the check."""
    def no_room(exc: OSError):
        return fail(
            shown,
            f"cannot be decompressed to {tempfile.gettempdir()} ({exc.strerror or exc}); free some space there "
            "(or set TMPDIR), or decompress the file yourself.",
        )

    try:
        fd, name = tempfile.mkstemp(prefix="finhrm-", suffix=".plain")
    except OSError as exc:
        raise no_room(exc) from None
    tmp = Path(name)
    head = b""
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(path, "rb") as src:
            head = src.read(CHUNK)
            for chunk in _checked_chunks(head, src.read, check):
                out.write(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        tmp.unlink(missing_ok=True)
        raise fail(shown, f"is gzip-compressed but cannot be decompressed ({exc}); re-download or re-compress it.") from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno is None:  # a format error, not the system's
            raise fail(shown, f"is gzip-compressed but cannot be decompressed ({exc}); re-download or re-compress it.") from None
        raise no_room(exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not check.nonblank:
        tmp.unlink(missing_ok=True)
        raise fail(shown, "is empty once decompressed; export the bars again.")
    return tmp, head


# --------------------------------------------------------------------------- the file

class DataFile:
    """An opened bars file: ``headers``, ``fingerprint`` and ``load(dates, numbers)``."""

    def __init__(self, path: Path, shown: str):
        self.shown = shown
        self.fingerprint, self._tmp, head, check = _look(path, shown)
        try:
            self._open(path, shown, head, check)
        except BaseException:
            self.close()
            raise

    def _open(self, path: Path, shown: str, head: bytes, check: _TextCheck) -> None:
        self.plain = self._tmp or path
        self._raw: Raw | None = None
        self.separator = ","
        if not check.nonblank:
            raise fail(shown, "is empty; export the bars again (a header line and one row per day).")
        if head[:4] == b"PAR1":
            self.kind = "parquet"
            self.headers = _parquet_headers(self.plain, shown)
            return
        if path.suffix.lower() == ".parquet":
            raise fail(shown, "has a .parquet suffix but is not a Parquet file; re-export it or rename it.")
        self.kind = "csv"
        self._header = _fast_header(head, check)
        if self._header is not None:
            self.separator = _sniff_separator(self._header.decode("utf-8"))
            try:
                self.headers = pl.read_csv(
                    io.BytesIO(self._header + b"\n"), separator=self.separator, infer_schema=False, has_header=True,
                ).columns
            except Exception:  # noqa: BLE001  (polars raises several types) -> the careful path
                self._header = None
            else:
                if len(self.headers) < 2:
                    self._header = None
        if self._header is None:
            self._raw = _read_compat(self.plain, shown)
            self.headers = [str(c) for c in self._raw.frame.columns]

    def load(self, dates: str, numbers: list[str]) -> Raw:
        """The ``dates`` column (as read) and the ``numbers`` columns (float64 when the fast
        path could parse every cell, strings otherwise)."""
        if self._raw is not None:
            return self._raw
        if self.kind == "parquet":
            return _load_parquet(self.plain, self.shown, list(dict.fromkeys([dates, *numbers])))
        raw = _load_csv_fast(self.plain, self.separator, self._header, self.headers, dates, numbers)
        return raw if raw is not None else _read_compat(self.plain, self.shown)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> "DataFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_data(path: Path, shown: str) -> DataFile:
    """Open ``path`` (an existing regular file); use as a context manager."""
    return DataFile(path, shown)


# --------------------------------------------------------------------------- Parquet

def _parquet_error(shown: str, exc: Exception):
    return fail(shown, f"is not a readable Parquet file ({str(exc).splitlines()[0][:120]}); re-export it.")


def _parquet_headers(path: Path, shown: str) -> list[str]:
    try:
        names = list(pl.read_parquet_schema(path))
        n = pl.scan_parquet(path).select(pl.len()).collect().item() if names else 0
    except Exception as exc:  # noqa: BLE001  (polars raises several types for corrupt files)
        raise _parquet_error(shown, exc) from None
    if not names:
        raise fail(shown, "is a Parquet file without columns; re-export it.")
    if n == 0:
        raise fail(shown, "has columns but no data rows; export the bars again.")
    return [str(c) for c in names]


def _load_parquet(path: Path, shown: str, columns: list[str]) -> Raw:
    try:
        frame = pl.read_parquet(path, columns=columns)
    except Exception as exc:  # noqa: BLE001
        raise _parquet_error(shown, exc) from None
    return Raw(frame, lambda i: f"row {i + 1}", "parquet")


# --------------------------------------------------------------------------- CSV, fast path

def _fast_header(head: bytes, check: _TextCheck) -> bytes | None:
    """The header line (no BOM, no line end) if the fast path may read this file, else None."""
    if not check.fast or head.startswith((b"\xff\xfe", b"\xfe\xff", b"PK\x03\x04")):
        return None
    head = head[3:] if head.startswith(codecs.BOM_UTF8) else head
    end = head.find(b"\n")
    if end < 0 or not head[end + 1:].strip():
        return None  # a header without rows (or one huge line): let the careful path say so
    line = head[:end].rstrip(b"\r")
    return line if line.strip() else None  # blank lines before the header: careful path


def _blocks(path: Path):
    """The file after its header line in pieces of about BLOCK bytes, each cut after a newline."""
    with path.open("rb") as fh:
        fh.readline()
        pending = b""
        while True:
            more = fh.read(BLOCK)
            if not more:
                if pending:
                    yield pending
                return
            buf = pending + more
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                pending = buf
                continue
            pending = buf[cut:]
            yield buf[:cut]


def _load_csv_fast(path: Path, sep: str, header: bytes, headers: list[str], dates: str, numbers: list[str]) -> Raw | None:
    """Date column as strings, number columns as float64, blank lines dropped (their line
    numbers kept), read block by block so that neither the text nor a frame of strings is
    ever whole in memory; None if a block needs the careful path (a number cell only the
    lenient parser reads, a ragged row, a quoted line break...), which also words errors."""
    idx = {h: i for i, h in enumerate(headers)}
    numbers = [h for h in dict.fromkeys(numbers) if h != dates]

    def stripped(h: str) -> pl.Expr:
        return pl.nth(idx[h]).str.strip_chars()

    bad = [
        stripped(h).cast(pl.Float64, strict=False).is_null() & stripped(h).is_not_null() & (stripped(h) != "")
        for h in numbers
    ]
    exprs = [
        stripped(dates).alias(dates),  # a fresh, compact column (not views into the block text)
        *[stripped(h).cast(pl.Float64, strict=False).alias(h) for h in numbers],
        pl.all_horizontal([pl.nth(i).is_null() | (pl.nth(i).str.strip_chars() == "") for i in range(len(headers))]).alias("\x00blank"),
        pl.any_horizontal(bad or [pl.lit(False)]).alias("\x00bad"),
    ]
    parts: list[pl.DataFrame] = []
    seen = 1  # lines so far, the header's included
    unterminated = None
    for block in _blocks(path):
        if block.count(b'"') % 2:
            return None  # a quoted field across two blocks
        lines = block.count(b"\n") + (not block.endswith(b"\n"))
        seen += lines
        if not block.endswith(b"\n") and block[block.rfind(b"\n") + 1:].strip():
            unterminated = seen  # (only the last block can end without a line break)
        try:
            df = pl.read_csv(io.BytesIO(header + b"\n" + block), separator=sep, infer_schema=False,
                             has_header=True, truncate_ragged_lines=False)
        except Exception:  # noqa: BLE001  (ragged rows and the like)
            return None
        if df.height != lines or df.columns != headers:
            return None  # quoted line breaks: line numbers would not match
        df = df.select(exprs)
        if df["\x00bad"].any():
            return None
        parts.append(df.drop("\x00bad"))
    if not parts:
        return None
    # One column at a time, freeing the blocks' share of it as we go; number columns into
    # one contiguous chunk (they then convert to numpy without a copy), the date text not
    # (a copy of it would be the biggest transient of all).
    columns = {}
    for name in parts[0].columns:
        columns[name] = pl.concat([p[name] for p in parts], rechunk=name != dates)
        parts = [p.drop(name) for p in parts]
    del parts
    blank = columns.pop("\x00blank")
    frame = pl.DataFrame(columns)
    del columns
    if frame.height == 0:
        return None
    if not blank.any():
        return Raw(frame, lambda i: f"line {i + 2}", "csv", sep, clean=True, unterminated=unterminated)
    keep = ~blank
    if not keep.any():
        return None
    line_of = np.flatnonzero(keep.to_numpy()) + 2
    return Raw(frame.filter(keep), lambda i: f"line {int(line_of[i])}", "csv", sep, clean=True,
                unterminated=unterminated)


# --------------------------------------------------------------------------- CSV, careful path

def _read_compat(path: Path, shown: str) -> Raw:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _open_error(path, shown, exc) from None
    text = _decode_text(data, shown)
    del data
    return _read_csv_text(text, shown)


def _decode_text(data: bytes, shown: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise fail(shown, "is not valid UTF-16 text; save it as CSV UTF-8.") from None
    if data.startswith(b"PK\x03\x04"):
        raise fail(shown, "is a ZIP archive or Excel workbook, not a CSV; unzip it or export the sheet as CSV.")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise fail(shown, f"line {line}: contains NUL bytes, so it is binary, not a CSV; export the data as CSV (UTF-8).")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise fail(
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


def _read_csv_text(text: str, shown: str) -> Raw:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    head = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if head is None:
        raise fail(shown, "is empty; export the bars again (a header line and one row per day).")
    sep = _sniff_separator(lines[head])
    header = _split_header(lines[head], sep)
    if len(header) < 2:
        raise fail(
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
            raise fail(
                shown,
                f"line {bad[0]}: has {bad[1]} fields but the header has {len(header)}; "
                "fix that row (a stray separator or an unquoted comma in a number?).",
            ) from None
        raise fail(shown, f"cannot be parsed as CSV ({str(exc).splitlines()[0][:120]}); check the file.") from None
    if frame.height == 0:
        raise fail(shown, "has a header but no data rows; export the bars again.")
    # Blank lines come back as all-null rows: drop them but keep their line numbers.
    first_line = head + 2  # 1-based line of data row 0
    blank = pl.all_horizontal(
        [pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in frame.columns]
    )
    frame = frame.with_row_index("_i").filter(~blank)
    if frame.height == 0:
        raise fail(shown, "has a header but no data rows; export the bars again.")
    line_of = (frame["_i"].to_numpy().astype(np.int64) + first_line)
    frame = frame.drop("_i")
    # A last non-blank line with no line break after it: a file still being written when copied?
    last = len(lines) - 1
    while not lines[last].strip():
        last -= 1
    unterminated = last + 1 if last == len(lines) - 1 else None
    return Raw(frame, lambda i: f"line {int(line_of[i])}", "csv", sep, unterminated=unterminated)


def _find_ragged_line(lines: list[str], head: int, sep: str, width: int):
    reader = csv.reader(lines[head + 1:], delimiter=sep)
    for offset, row in enumerate(reader):
        if row and len(row) > width:
            return head + 2 + offset, len(row)
    return None
