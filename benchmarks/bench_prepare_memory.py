"""Peak memory of ``finhrm prepare`` on a big CSV.

Generates a Yahoo-style daily CSV (Date, Open, High, Low, Close, Adj Close, Volume) of
``--rows`` rows in a temporary folder (or ``--keep PATH``), runs ``finhrm prepare`` on it
in a child process and prints one JSON line: the file size, the child's peak resident
set size (``ru_maxrss``) and their ratio.  The target is a ratio under 2.

Daily dates run from 0001-01-01, so at most ~3.65 M rows fit before year 9999; the
default (3.6 M rows, ~260 MB) is close to that.  ``--intraday`` writes one-minute bars
instead (390 a day, timestamps "YYYY-MM-DD HH:MM:SS"), the likely shape of a 5 M-row file:
finhrm refuses it (daily bars need one row per day) with exit code 2 after reading it all,
and the peak of that read is what is measured (``--rows 5000000 --intraday``: ~450 MB).  ``--wide`` adds the TradingView
indicator columns (RSI, EMA, ...) as extra, unused-by-default columns, which makes each
row about twice as long (``--rows 3600000 --wide`` gives ~560 MB).
Usage: ``python benchmarks/bench_prepare_memory.py [--rows N] [--wide] [--gzip]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

MAX_ROWS = 3_652_000  # 0001-01-01 .. ~9999


def finhrm_exe() -> list[str]:
    exe = Path(sys.executable).with_name("finhrm")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "finhrm_cli"]


def generate(path: Path, rows: int, wide: bool, intraday: bool = False, seed: int = 0, chunk: int = 500_000) -> None:
    """A random walk written in chunks (the generator itself stays small)."""
    if rows > MAX_ROWS and not intraday:
        sys.exit(f"--rows {rows}: at most {MAX_ROWS} daily rows fit between years 1 and 9999.")
    rng = np.random.default_rng(seed)
    start = np.datetime64("0001-01-01")
    last = 100.0
    with open(path, "wb") as fh:
        header = "Date,Open,High,Low,Close,Adj Close,Volume"
        if wide:
            header += ",EMA7,RSI,RSI-based MA,Prev1D High,Prev1D Low"
        fh.write((header + "\n").encode())
        for lo in range(0, rows, chunk):
            n = min(chunk, rows - lo)
            close = last * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
            close = np.clip(close, 1.0, 1e6)
            last = float(close[-1])
            opn = close * np.exp(rng.normal(0, 0.005, n))
            high = np.maximum(opn, close) * np.exp(np.abs(rng.normal(0, 0.005, n)))
            low = np.minimum(opn, close) * np.exp(-np.abs(rng.normal(0, 0.005, n)))
            if intraday:
                k = np.arange(lo, lo + n)
                stamp = (np.datetime64("2000-01-03T09:30:00") + (k // 390) * np.timedelta64(1, "D")
                         + (k % 390) * np.timedelta64(1, "m"))
                dates = np.char.replace(stamp.astype(str), "T", " ")
            else:
                dates = (start + np.arange(lo, lo + n)).astype(str)
            cols = {
                "Date": dates, "Open": opn.round(6), "High": high.round(6), "Low": low.round(6),
                "Close": close.round(6), "Adj Close": (close * 0.98).round(6),
                "Volume": rng.integers(1_000_000, 90_000_000, n),
            }
            if wide:
                cols.update({"EMA7": close.round(6), "RSI": rng.uniform(0, 100, n).round(4),
                             "RSI-based MA": rng.uniform(0, 100, n).round(4),
                             "Prev1D High": high.round(6), "Prev1D Low": low.round(6)})
            pl.DataFrame(cols).write_csv(fh, include_header=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=3_600_000)
    ap.add_argument("--wide", action="store_true", help="add indicator columns (longer rows)")
    ap.add_argument("--gzip", action="store_true", help="compress the file (.csv.gz)")
    ap.add_argument("--intraday", action="store_true", help="one-minute bars (refused with exit code 2)")
    ap.add_argument("--keep", type=Path, help="write the CSV here and keep it (reused if it exists)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="finhrm-bench-mem-"))
    try:
        data = args.keep or tmp / ("bars.csv.gz" if args.gzip else "bars.csv")
        if not data.exists():
            plain = tmp / "plain.csv" if args.gzip else data
            generate(plain, args.rows, args.wide, args.intraday)
            if args.gzip:
                with open(plain, "rb") as src, gzip.open(data, "wb", compresslevel=1) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                plain.unlink()
        env = {**os.environ, "FINHRM_HOME": str(tmp / "home"), "NO_COLOR": "1"}
        cmd = [*finhrm_exe(), "prepare", str(data), "-o", str(tmp / "out.prepared"), "--json"]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        refused = args.intraday and out.returncode == 2 and "same date" in out.stderr
        if out.returncode != 0 and not refused:
            sys.exit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-1000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
        size = data.stat().st_size
        print(json.dumps({
            "rows": "refused: intraday" if refused else json.loads(out.stdout)["rows_read"], "file": str(data), "file_mb": round(size / 1e6, 1),
            "peak_rss_mb": round(peak / 1e6, 1), "ratio": round(peak / size, 2), "wall_s": round(wall, 1),
        }))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
