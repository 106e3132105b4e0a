"""Bad input never ends in a traceback: one-line DataError naming file, line/column and the fix.

Each case builds a valid small CSV in tmp_path and corrupts it once.  Data rows are on
lines 2.. (row i of ``rows()`` is on line i + 2).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from finhrm_cli import data
from finhrm_cli.config import FeatureConfig
from finhrm_cli.errors import DataError
from helpers import CSV_HEADER as HEADER
from helpers import corrupt_cell as corrupt
from helpers import csv_rows as rows
from helpers import scale_prices as _scale_prices
from helpers import shift_dates as _shift_dates
from helpers import synthetic_ohlcv
from helpers import write_rows as write

FCFG = FeatureConfig()


def tv(n: int = 150):
    """TradingView-style header/rows with an RSI column blank for the warm-up."""
    header = ["time", "open", "high", "low", "close", "Volume", "RSI"]
    body = [r + (["55.0"] if i >= 14 else [""]) for i, r in enumerate(rows(n))]
    return header, body


def error(path, **kw) -> str:
    with pytest.raises(DataError) as info:
        data.prepare(path, kw.pop("fcfg", FCFG), **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    assert str(path) in msg, msg
    assert info.value.exit_code == 2
    return msg


def test_valid_file_passes(tmp_path):
    ds = data.prepare(write(tmp_path / "ok.csv"), FCFG)
    assert ds.source.n_rows == 150 and not ds.source.warnings


# --------------------------------------------------------------------------- files

def test_missing_file(tmp_path):
    msg = error(tmp_path / "nope.csv")
    assert "not found" in msg


def test_missing_file_names_neighbours(tmp_path):
    write(tmp_path / "prices.csv")
    assert "prices.csv" in error(tmp_path / "price.csv")


def test_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path / "locked.csv")

    def deny(self, *args, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", deny)
    monkeypatch.setattr(Path, "open", deny)  # big files are streamed, not read whole
    assert "permission denied" in error(path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_chmod(tmp_path):
    path = write(tmp_path / "locked.csv")
    path.chmod(0)
    try:
        assert "permission" in error(path)
    finally:
        path.chmod(0o644)


def test_directory_not_prepared(tmp_path):
    (tmp_path / "folder").mkdir()
    assert "prepared" in error(tmp_path / "folder")


def test_corrupt_prepared_folder(tmp_path):
    folder = tmp_path / "prep"
    folder.mkdir()
    (folder / "meta.json").write_text("{not json")
    assert "prepare" in error(folder)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    assert "empty" in error(path)


def test_header_only(tmp_path):
    assert "no data rows" in error(write(tmp_path / "h.csv", body=[]))


def test_missing_column(tmp_path):
    body = [r[:4] + r[5:] for r in rows()]
    msg = error(write(tmp_path / "m.csv", header=["date", "open", "high", "low", "volume"], body=body))
    assert "'close'" in msg and "found columns: date, open, high, low, volume" in msg and "--col close=" in msg


def test_missing_date_column(tmp_path):
    msg = error(write(tmp_path / "m.csv", header=["when", *HEADER[1:]]))
    assert "no date column" in msg and "when" in msg and "--date-col" in msg


def test_unknown_date_col_option(tmp_path):
    msg = error(write(tmp_path / "m.csv"), date_col="Session")
    assert "'Session'" in msg and "found columns" in msg


def test_col_map_header_missing(tmp_path):
    msg = error(write(tmp_path / "m.csv"), col_map={"open": "Opening"})
    assert "'Opening'" in msg and "found columns" in msg


def test_every_header_problem_is_reported_at_once(tmp_path):
    """issue 25: a European file took three tries (the date column, then open, then close)."""
    path = tmp_path / "eu.csv"
    path.write_text("Datum;Eröffnung;Hoch;Tief;Schluss\n2024-01-02;1,0;1,0;1,0;1,0\n2024-01-03;1,0;1,0;1,0;1,0\n")
    msg = error(path, col_map={"volume": "Umsatz"})
    assert "3 header problems" in msg
    for part in ("--col volume=Umsatz: no column 'Umsatz'", "no date column", "--date-col NAME",
                 "--col open=NAME --col high=NAME --col low=NAME --col close=NAME",
                 "found columns: Datum, Eröffnung, Hoch, Tief, Schluss"):
        assert part in msg, part


def test_decimal_commas_in_a_semicolon_file(tmp_path):
    """European exports: `;` between the columns, `,` as the decimal mark, `.` grouping thousands."""
    lines = ["Date;Open;High;Low;Close;Volume"]
    plain = []
    for i, r in enumerate(rows()[:40]):
        o, h, lo, c = (float(v) * 10 for v in r[1:5])
        vol = 1_000 + 12_345 * i
        plain.append((o, h, lo, c, vol))
        eu = [f"{v:,.2f}".replace(",", " ").replace(".", ",").replace(" ", ".") for v in (o, h, lo)]
        lines.append(";".join([r[0], *eu, f"{c:.2f}".replace(".", ","), f"{vol:,}".replace(",", ".")]))
    path = tmp_path / "eu.csv"
    path.write_text("\n".join(lines) + "\n")
    bars, _ = data.read_bars(path)
    got = bars.select("open", "high", "low", "close", "volume").rows()
    assert got == [tuple(round(v, 2) if k < 4 else float(v) for k, v in enumerate(row)) for row in plain]
    assert any(v >= 1000 for row in got for v in row[:4])  # "1.234,56" read as 1234.56, not 1.234


def test_decimal_comma_in_a_comma_file_says_how_to_fix_it(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('date,open,high,low,close\n2024-01-02,"1,5",2,1,1.5\n2024-01-03,1.5,2,1,1.5\n')
    assert "decimal mark" in error(path)


@pytest.mark.parametrize("item", ["open", "=x", "open=", "colour=Red"])
def test_parse_col_map_bad(item):
    with pytest.raises(DataError) as info:
        data.parse_col_map([item])
    assert "--col" in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- cells

@pytest.mark.parametrize("col,value,words", [
    ("close", "abc", ["'abc'", "not a number"]),
    ("open", "1,234", ["thousands"]),  # ambiguous: 1234 or 1.234 (1,234.5 is read)
    ("high", "", ["blank cell"]),
    ("low", "NaN", ["NaN"]),
    ("close", "inf", ["infinity"]),
    ("volume", "", ["blank cell"]),
    ("volume", "-5", ["negative volume"]),
    ("volume", "x", ["not a number"]),
])
def test_bad_cells(tmp_path, col, value, words):
    body = rows()
    body[30][HEADER.index(col)] = f'"{value}"' if "," in value else value
    msg = error(write(tmp_path / "bad.csv", body=body))
    assert "line 32" in msg and f"'{col}'" in msg, msg
    for w in words:
        assert w in msg, msg


def test_decimal_comma_hint(tmp_path):
    body = rows()
    body[5][4] = "101,5"
    msg = error(write(tmp_path / "semi.csv", body=body, sep=";"))
    assert "line 7" in msg and "decimal" in msg


def test_unparseable_date(tmp_path):
    msg = error(corrupt(tmp_path, 10, "date", "2020-13-45"))
    assert "line 12" in msg and "'2020-13-45'" in msg and "YYYY-MM-DD" in msg


def test_garbage_date(tmp_path):
    msg = error(corrupt(tmp_path, 10, "date", "yesterday"))
    assert "line 12" in msg and "yesterday" in msg


def test_blank_date(tmp_path):
    assert "line 5" in error(corrupt(tmp_path, 3, "date", ""))


def test_ambiguous_dates(tmp_path):
    body = rows(12)
    for i, r in enumerate(body):
        r[0] = f"{i + 1:02d}/01/2021"  # day <= 12 everywhere: day- or month-first?
    msg = error(write(tmp_path / "amb.csv", body=body))
    assert "ambiguous" in msg and "YYYY-MM-DD" in msg


def test_duplicate_dates(tmp_path):
    body = rows()
    body[20][0] = body[19][0]
    msg = error(write(tmp_path / "dup.csv", body=body))
    assert "line 21 and line 22" in msg and "same date" in msg


def test_unsorted_is_a_warning_not_an_error(tmp_path):
    body = rows()
    body[20], body[60] = body[60], body[20]
    ds = data.prepare(write(tmp_path / "u.csv", body=body), FCFG)
    assert ds.source.warnings and "sorted" in ds.source.warnings[0]


def test_high_below_low(tmp_path):
    body = rows()
    body[50][2], body[50][3] = body[50][3], body[50][2]
    msg = error(write(tmp_path / "hl.csv", body=body))
    assert "line 52" in msg and "below low" in msg


@pytest.mark.parametrize("factor", [1.05, 0.95])
def test_close_outside_range(tmp_path, factor):
    body = rows()
    body[70][4] = f"{float(body[70][2] if factor > 1 else body[70][3]) * factor:.6f}"
    msg = error(write(tmp_path / "c.csv", body=body))
    assert "line 72" in msg and "outside" in msg


@pytest.mark.parametrize("value", ["0", "-3.5"])
def test_non_positive_price(tmp_path, value):
    body = rows()
    body[8][1] = body[8][3] = value  # open and low
    msg = error(write(tmp_path / "np.csv", body=body))
    assert "line 10" in msg and "non-positive" in msg


def test_too_few_rows(tmp_path):
    msg = error(write(tmp_path / "short.csv", body=rows(60)))
    assert "too few rows" in msg and "need at least" in msg and "60 rows" in msg and "33 usable" in msg


def test_too_few_rows_shorter_than_warm_up(tmp_path):
    assert "too few rows" in error(write(tmp_path / "tiny.csv", body=rows(5)))


def test_ragged_line(tmp_path):
    body = rows()
    body[12].append("7")
    msg = error(write(tmp_path / "r.csv", body=body))
    assert "line 14" in msg and "fields" in msg


def test_short_line_is_a_blank_cell(tmp_path):
    body = rows()
    body[12] = body[12][:4]
    msg = error(write(tmp_path / "s.csv", body=body))
    assert "line 14" in msg and "'close'" in msg


# --------------------------------------------------------------------------- indicator columns

def test_indicator_warm_up_blanks_are_dropped(tmp_path):
    header, body = tv()
    ds = data.prepare(write(tmp_path / "tv.csv", header=header, body=body), FCFG)
    assert ds.dropped["file_indicator_warmup"] == 14


def test_indicator_blank_in_the_middle(tmp_path):
    header, body = tv()
    body[40][6] = ""
    msg = error(write(tmp_path / "tv.csv", header=header, body=body))
    assert "line 42" in msg and "'RSI'" in msg and "warm-up" in msg


def test_indicator_out_of_range(tmp_path):
    header, body = tv()
    body[40][6] = "250"
    msg = error(write(tmp_path / "tv.csv", header=header, body=body))
    assert "line 42" in msg and "'RSI'" in msg


# --------------------------------------------------------------------------- not a CSV

def test_binary_nul_bytes(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"date,open,high,low,close\n\x00\x01\x02\x03" * 10)
    assert "binary" in error(path)


def test_not_utf8(tmp_path):
    path = write(tmp_path / "latin.csv")
    raw = path.read_bytes().replace(b"date,", "dat\u00e9,".encode("latin-1"), 1)
    path.write_bytes(raw)
    msg = error(path)
    assert "line 1" in msg and "UTF-8" in msg


def test_single_column(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("prices\n1\n2\n3\n")
    assert "single column" in error(path)


def test_zip_or_excel(tmp_path):
    path = tmp_path / "book.xlsx"
    path.write_bytes(b"PK\x03\x04" + bytes(range(1, 200)))
    assert "ZIP" in error(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(write(tmp_path / "x.csv").read_bytes())[:60])
    assert "gzip" in error(path)


def test_fake_parquet(tmp_path):
    path = tmp_path / "f.parquet"
    path.write_text("date,open\n")
    assert "Parquet" in error(path)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "c.parquet"
    path.write_bytes(b"PAR1" + b"junk" * 20)
    assert "Parquet" in error(path)


def test_parquet_bad_row(tmp_path):
    import polars as pl

    d = synthetic_ohlcv(150, 4)
    d["high"][20] = d["low"][20] * 0.5
    path = tmp_path / "p.parquet"
    pl.DataFrame({k: (pl.Series(k, v).cast(pl.Date) if k == "date" else v) for k, v in d.items()}).write_parquet(path)
    assert "row 21" in error(path)


# --------------------------------------------------------------------------- big files: the block reader

def _variant(tmp_path, kind: str) -> Path:
    lines = [",".join(HEADER + ["note"])] + [",".join(r + [f"row {i}"]) for i, r in enumerate(rows())]
    if kind == "blank_lines":
        lines[30:30] = ["", "  "]
        lines += ["", ""]
    elif kind == "quoted":
        lines = [",".join(f'"{c}"' for c in ln.split(",")) for ln in lines]
    elif kind == "quoted_line_break":  # a record over two lines: the in-memory path takes over
        lines[40] = lines[40].replace("row 39", '"row\n39"')
    elif kind == "spaces":
        lines = [", ".join(ln.split(",")) for ln in lines]
    text = "\n".join(lines) + "\n"
    path = tmp_path / f"{kind}.csv"
    raw = text.encode()
    if kind == "crlf":
        raw = raw.replace(b"\n", b"\r\n")
    if kind == "bom":
        raw = b"\xef\xbb\xbf" + raw
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("kind", ["plain", "crlf", "bom", "blank_lines", "quoted", "quoted_line_break", "spaces"])
def test_block_reader_matches_the_in_memory_reader(tmp_path, monkeypatch, kind):
    from finhrm_cli.data import files

    path = _variant(tmp_path, kind)
    fast_calls = []
    real = files._load_csv_fast
    monkeypatch.setattr(files, "BLOCK", 700)  # ~10 rows a block: many block boundaries
    monkeypatch.setattr(files, "_load_csv_fast", lambda *a: fast_calls.append(real(*a)) or fast_calls[-1])
    bars, src = data.read_bars(path)
    monkeypatch.setattr(files, "_load_csv_fast", lambda *a: None)
    ref, ref_src = data.read_bars(path)
    assert bars.equals(ref) and src == ref_src
    assert bars.height == 150
    assert (fast_calls[0] is not None) == (kind != "quoted_line_break")


@pytest.mark.parametrize("where, cell, line, words", [
    (100, "", 102 + 2, "blank cell"),                 # read by the fast path: line count past blank lines
    (100, "12,5", 102 + 2, "decimal mark"),            # the in-memory path words it
    (140, "abc", 142 + 2, "not a number"),
])
def test_block_reader_errors_name_the_line(tmp_path, monkeypatch, where, cell, line, words):
    from finhrm_cli.data import files

    monkeypatch.setattr(files, "BLOCK", 700)
    body = rows()
    body[where][HEADER.index("close")] = f'"{cell}"' if "," in cell else cell
    path = tmp_path / "b.csv"
    path.write_text("\n".join([",".join(HEADER), *(",".join(r) for r in body[:20]), "", "",
                               *(",".join(r) for r in body[20:])]) + "\n")
    msg = error(path)
    assert f"line {line}" in msg and words in msg, msg


def test_block_reader_ragged_line_in_a_late_block(tmp_path, monkeypatch):
    from finhrm_cli.data import files

    monkeypatch.setattr(files, "BLOCK", 700)
    body = rows()
    body[130].append("7")
    msg = error(write(tmp_path / "r.csv", body=body))
    assert "line 132" in msg and "fields" in msg


@pytest.mark.parametrize("gz", [False, True])
def test_clean_csv_is_never_read_whole(tmp_path, monkeypatch, gz):
    # the fast path streams: no read_bytes of the file (or of its decompressed copy)
    from finhrm_cli.data import files

    path = write(tmp_path / "c.csv")
    if gz:
        path = tmp_path / "c.csv.gz"
        path.write_bytes(gzip.compress(write(tmp_path / "c.csv").read_bytes()))
    ref, _ = data.read_bars(path)

    def whole(self):
        raise AssertionError(f"read whole: {self}")

    monkeypatch.setattr(Path, "read_bytes", whole)
    monkeypatch.setattr(files, "BLOCK", 1000)
    bars, _ = data.read_bars(path)
    assert bars.equals(ref)


def test_gzip_is_streamed_through_a_temp_file_that_is_removed(tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    good = tmp_path / "g.csv.gz"
    good.write_bytes(gzip.compress(write(tmp_path / "g.csv").read_bytes()))
    bars, src = data.read_bars(good)
    assert bars.height == 150 and src.fingerprint == __import__("hashlib").sha256(good.read_bytes()).hexdigest()
    bad = tmp_path / "t.csv.gz"
    bad.write_bytes(good.read_bytes()[:80])
    assert "gzip" in error(bad)
    body = rows()
    body[7][HEADER.index("close")] = "x"
    worse = tmp_path / "w.csv.gz"
    worse.write_bytes(gzip.compress(write(tmp_path / "w.csv", body=body).read_bytes()))
    assert "line 9" in error(worse)
    header_only = tmp_path / "h.csv.gz"
    header_only.write_bytes(gzip.compress(b"date,open,high,low,close\n\n"))
    assert "no data rows" in error(header_only)
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("ending, fast", [(b"\r\n", True), (b"\r", False)])
def test_line_ends_across_streaming_chunks(tmp_path, monkeypatch, ending, fast):
    # \r\n split between two chunks of the streaming look is still \r\n (fast path);
    # old Mac \r line ends go to the in-memory reader; both read the same bars
    from finhrm_cli.data import files

    raw = write(tmp_path / "x.csv").read_bytes().replace(b"\n", ending)
    # a chunk size (header still inside the first chunk) with a boundary right after a \r
    size = next(c for c in range(64, 400) if any(raw[k - 1:k] == b"\r" for k in range(c, len(raw), c)))
    monkeypatch.setattr(files, "CHUNK", size)
    path = tmp_path / "e.csv"
    path.write_bytes(raw)
    used = []
    real = files._load_csv_fast
    monkeypatch.setattr(files, "_load_csv_fast", lambda *a: used.append(1) or real(*a))
    bars, _ = data.read_bars(path)
    assert bool(used) == fast
    ref, _ = data.read_bars(tmp_path / "x.csv")
    assert bars.equals(ref)


# --------------------------------------------------------------------------- suspicious data (warnings)

def test_normal_series_gets_no_warning(tmp_path):
    body = _shift_dates(rows(), 100, 25)  # a 4-week break (a long holiday) is normal
    _, src = data.read_bars(write(tmp_path / "ok.csv", body=body))
    assert src.warnings == []


def test_multi_year_gap_warns_naming_the_dates(tmp_path):
    body = _shift_dates(rows(), 75, 3 * 365)
    _, src = data.read_bars(write(tmp_path / "gap.csv", body=body))
    [w] = [w for w in src.warnings if "gap" in w]
    assert body[74][0] in w and body[75][0] in w and "3.0 years" in w, w
    assert len(src.warnings) == 1


def test_split_like_move_warns_naming_date_and_ratio(tmp_path):
    body = _scale_prices(rows(), 80, 0.5)  # an unadjusted 2-for-1 split
    _, src = data.read_bars(write(tmp_path / "split.csv", body=body))
    [w] = src.warnings
    assert body[80][0] in w and "ratio 0.5" in w and "split-adjusted" in w, w
    assert body[79][0] not in w  # the day of the move, not the day before


def _mixed_float_parquet(path, close_from, nudge=0.0):
    """Parquet as polars writes it from mixed arrays: float64 open/high/low, float32 close
    taken from ``close_from`` (high on even rows, low on odd ones) times ``1 + nudge``."""
    import numpy as np
    import polars as pl

    d = synthetic_ohlcv(150, 4)
    src = np.where(np.arange(150) % 2 == 0, d["high"], d["low"]) if close_from == "extremes" else d["close"]
    close = (src * (1 + nudge)).astype(np.float32)
    pl.DataFrame({
        "date": pl.Series(d["date"]).cast(pl.Date), "open": d["open"], "high": d["high"], "low": d["low"],
        "close": pl.Series(close, dtype=pl.Float32), "volume": d["volume"],
    }).write_parquet(path)
    schema = pl.read_parquet_schema(path)
    assert schema["close"] == pl.Float32 and schema["high"] == pl.Float64
    # the float32 rounding really does put close outside [low, high] on some rows
    return path, np.sum(close.astype(np.float64) > d["high"]) + np.sum(close.astype(np.float64) < d["low"])


def test_parquet_mixed_float32_and_float64_loads(tmp_path):
    path, n_outside = _mixed_float_parquet(tmp_path / "mixed.parquet", "extremes")
    assert n_outside > 10
    import polars as pl

    ds = data.prepare(path, FCFG)
    bars, _ = data.read_bars(path)
    assert all(bars[c].dtype == pl.Float64 for c in ("open", "high", "low", "close"))
    assert ds.frame.height > 0


def test_parquet_float32_close_far_outside_still_fails(tmp_path):
    # the float32 allowance is ~1e-7 relative, not a licence: 1e-5 outside is still an error
    path, _ = _mixed_float_parquet(tmp_path / "mixed.parquet", "extremes", nudge=1e-5)
    assert "lies outside" in error(path)


def test_bad_feature_config_is_a_usage_error(tmp_path):
    from finhrm_cli.errors import UsageError

    with pytest.raises(UsageError):
        data.prepare(write(tmp_path / "ok.csv"), FeatureConfig(seq_len=0))


# --------------------------------------------------------------------------- fuzz

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_VALID = ("\n".join(",".join(r) for r in [HEADER, *rows(120)]) + "\n").encode()
_ALPHABET = b",;\t\n\r\"' -.0123456789eEnaNIf\x00\xff/:TZ"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 2), st.binary(min_size=0, max_size=4)), min_size=1, max_size=5))
def test_mutated_files_give_a_dataset_or_one_line_error(tmp_path, edits):
    buf = bytearray(_VALID)
    for pos, op, chunk in edits:
        i = int(pos * (len(buf) - 1))
        chunk = bytes(_ALPHABET[b % len(_ALPHABET)] for b in chunk)
        if op == 0:
            buf[i:i + len(chunk)] = chunk
        elif op == 1:
            del buf[i:i + 1 + len(chunk) * 5]
        else:
            buf[i:i] = chunk
    path = tmp_path / "fuzz.csv"
    path.write_bytes(bytes(buf))
    try:
        data.prepare(path, FCFG)
    except DataError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
