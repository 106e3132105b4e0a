"""Hostile inputs from the bug report: each ends in one clear line (or a warning), never in
silently wrong numbers.

Data rows are on lines 2.. (row i of ``rows()`` is on line i + 2).
"""

from __future__ import annotations

import errno
import gzip
import os
import re
from pathlib import Path

import polars as pl
import pytest

from helpers import synthetic_ohlcv
from finhrm_cli import data
from finhrm_cli.config import FeatureConfig
from finhrm_cli.errors import DataError, FilesystemError
from finhrm_cli.ui import forecasts

HEADER = ["date", "open", "high", "low", "close", "volume"]
COL = {c: i for i, c in enumerate(HEADER)}


def rows(n: int = 120, seed: int = 7) -> list[list[str]]:
    d = synthetic_ohlcv(n, seed)
    return [[str(d["date"][i]), *(f"{d[c][i]:.6f}" for c in HEADER[1:])] for i in range(n)]


def text(body, header=HEADER, end: str = "\n") -> str:
    return "\n".join(",".join(r) for r in [header, *body]) + end


def write(path: Path, body=None, header=HEADER, end: str = "\n") -> Path:
    path.write_bytes(text(rows() if body is None else body, header, end).encode("utf-8"))
    return path


def error(path) -> str:
    with pytest.raises(DataError) as info:
        data.read_bars(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and str(path) in msg, msg
    assert info.value.exit_code == 2
    return msg


def compact(msg: str) -> bool:
    """No number spelled out in dozens of digits (a float formatted with :f or :.0f)."""
    return len(msg) < 400 and not re.search(r"\d{25}", msg)


# --------------------------------------------------------------------------- open outside [low, high]

@pytest.mark.parametrize("side, factor", [("high", 1.05), ("low", 0.95)])
def test_open_outside_low_high_is_refused_naming_line_value_and_column(tmp_path, side, factor):
    body = rows()
    value = f"{float(body[40][COL[side]]) * factor:.6f}"
    body[40][COL["open"]] = value
    msg = error(write(tmp_path / "o.csv", body, header=["Date", "Open", "High", "Low", "Close", "Volume"]))
    assert "line 42" in msg and "open" in msg and "'Open'" in msg and "outside" in msg, msg
    assert f"{float(value):g}" in msg, msg


def test_open_uses_the_same_tolerance_as_close(tmp_path):
    body = rows()
    high = float(body[30][COL["high"]])
    body[30][COL["open"]] = repr(high * (1 + 1e-12))  # representation noise: accepted
    data.read_bars(write(tmp_path / "ok.csv", body))
    body[30][COL["open"]] = repr(high * (1 + 1e-6))   # a real excess: refused
    assert "line 32" in error(write(tmp_path / "bad.csv", body))


# --------------------------------------------------------------------------- implausibly large prices

@pytest.mark.parametrize("col", ["open", "high", "low", "close"])
def test_implausibly_large_price_is_refused(tmp_path, col):
    body = rows()
    body[50][COL[col]] = "2e15"
    msg = error(write(tmp_path / "big.csv", body))
    assert "line 52" in msg and f"'{col}'" in msg and "implausibly large" in msg and "1e+15" in msg, msg


def test_1e308_close_in_the_last_row_is_refused_in_one_compact_line(tmp_path):
    body = rows()
    body[-1][COL["high"]] = body[-1][COL["close"]] = "1e308"
    msg = error(write(tmp_path / "huge.csv", body))
    assert f"line {len(body) + 1}" in msg and "implausibly large" in msg and compact(msg), msg


def test_huge_unix_time_is_named_compactly(tmp_path):
    body = rows()
    for r in body:
        r[0] = str(int(pl.Series([r[0]]).str.to_date().dt.epoch("s")[0]))
    body[10][0] = "1" + "0" * 300
    msg = error(write(tmp_path / "t.csv", body))
    assert "line 12" in msg and "unix time" in msg and "1e+300" in msg and compact(msg), msg


def test_split_warning_ratio_stays_compact_for_extreme_moves(tmp_path):
    body = rows()
    body[60][1:5] = ["1e-100"] * 4
    _, src = data.read_bars(write(tmp_path / "tiny.csv", body))
    [w] = [w for w in src.warnings if "ratio" in w]
    assert compact(w), w


# --------------------------------------------------------------------------- last line cut off

CUT = "has no line break at the end"


def _plain(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


def _gz(path: Path, raw: bytes) -> Path:
    path.write_bytes(gzip.compress(raw))
    return path


def _utf16(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw.decode("utf-8").encode("utf-16"))
    return path


def _mac(path: Path, raw: bytes) -> Path:  # old Mac line ends: the careful path
    path.write_bytes(raw.replace(b"\n", b"\r"))
    return path


def _crlf(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw.replace(b"\n", b"\r\n"))
    return path


@pytest.mark.parametrize("writer", [_plain, _gz, _utf16, _mac, _crlf], ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("small_blocks", [False, True])
def test_last_line_without_line_break_warns_naming_it(tmp_path, monkeypatch, writer, small_blocks):
    from finhrm_cli.data import files

    if small_blocks:
        monkeypatch.setattr(files, "BLOCK", 700)
    body = rows()
    body[-1][COL["close"]] = body[-1][COL["close"]][:-1]  # 75.29 cut to 75.2 while being written
    lines = text(body).split("\n")[:-1]
    lines[50:50] = ["", "  "]  # blank lines in the middle keep their numbers
    cut = ("\n".join(lines)).encode("utf-8")
    _, src = data.read_bars(writer(tmp_path / "cut.csv", cut))
    [w] = [w for w in src.warnings if CUT in w]
    assert w.startswith(f"line {len(lines)} (the last) {CUT}") and "cut off" in w, w
    for end in (b"\n", b"\n\n  \n", b"\n   "):  # a line end, then blank lines or spaces: fine
        _, src = data.read_bars(writer(tmp_path / "whole.csv", cut + end))
        assert not [w for w in src.warnings if CUT in w], (end, src.warnings)
    # Parquet has no lines, hence no such warning
    bars, _ = data.read_bars(tmp_path / "cut.csv")
    bars.write_parquet(tmp_path / "p.parquet")
    _, src = data.read_bars(tmp_path / "p.parquet")
    assert not [w for w in src.warnings if CUT in w]


def test_cut_file_warning_reaches_prepare(tmp_path):
    path = write(tmp_path / "cut.csv", end="")
    ds = data.prepare(path, FeatureConfig())
    assert [w for w in ds.source.warnings if CUT in w] == [f"line 121 (the last) {CUT}: the file may have been cut off "
                                                          "while being written, so check that row's values."]


# --------------------------------------------------------------------------- disk full on predict -o FILE

RESULT = {"rows": [{"ticker": "x", "date": "2024-01-02", "target_date": "2024-01-03", "run": "r", "close": 10.0, "pred_high": 10.5, "pred_low": 9.5, "pred_high_lo": None,
                    "pred_high_hi": None, "pred_low_lo": None, "pred_low_hi": None}], "coverage": 0.8, "run": "r"}


@pytest.mark.parametrize("temp_named", [False, True])
def test_disk_full_writing_predictions_names_the_output_file(tmp_path, monkeypatch, temp_named):
    out = tmp_path / "preds" / "out.csv"

    def full(fd):
        name = next(str(p) for p in out.parent.iterdir()) if temp_named else None
        raise OSError(errno.ENOSPC, "No space left on device", name)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        forecasts.render_predict(RESULT, "csv", str(out))
    exc = info.value
    assert exc.errno == errno.ENOSPC and exc.filename == str(out) and exc.filename2 is None
    msg = str(FilesystemError.from_oserror(exc))
    assert msg.startswith(f"{out}: no space left on the device;"), msg
    assert list(out.parent.iterdir()) == []  # no temp file left behind, no half file
