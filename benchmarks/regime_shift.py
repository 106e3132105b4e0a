"""A public series with a regime shift of known size: the range-to-volatility step of issues
24 and 27.

The issue's case is a stock whose next-session range, in units of its trailing volatility
scale, stepped up by 10-20% in the last third of its history; no public series shipped in the
packages here does that (the largest natural step found: +5.0%, NASDAQ 2000-12-26 ..
2008-12-09). This builds one from that segment: in its last third every overnight gap
(open / previous close) is cut to ``--gap-keep`` (0.25) of its size and the day rebuilt from
the session's own moves (high, low and close relative to the open kept as they were), so the
price path stays continuous and only the share of the range that happens overnight changes.
Less of the day's move is a gap, so the next session's high-low range grows against the
trailing true range (which counts gaps): +12.7% at 0.25 (+10.7% at 0.5, +13.7% at 0).

    python benchmarks/regime_shift.py /tmp/nasdaq-gaps.csv        # prints the step
    python benchmarks/real_data.py --csv /tmp/nasdaq-gaps.csv --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_data as rd  # noqa: E402

SEGMENT = (500, 2000)  # NASDAQ rows 500 .. 2499: 2000-12-26 .. 2008-12-09


def shrink_gaps(df: pl.DataFrame, keep: float, frac: float = 1 / 3) -> pl.DataFrame:
    """``df`` with the overnight gaps of its last ``frac`` of rows multiplied by ``keep``."""
    cols = {c.lower(): c for c in df.columns}
    o, h, lo, c = (df[cols[k]].cast(pl.Float64).to_numpy() for k in ("open", "high", "low", "close"))
    n = len(c)
    prev = np.r_[o[0], c[:-1]]
    gap, oh, ol, oc = np.log(o / prev), np.log(h / o), np.log(lo / o), np.log(c / o)
    gap[n - int(n * frac):] *= keep
    log_close = np.log(c[0]) + np.cumsum(np.r_[0.0, gap[1:] + oc[1:]])
    log_open = log_close - oc
    return df.with_columns(
        pl.Series(cols["open"], np.exp(log_open)), pl.Series(cols["high"], np.exp(log_open + oh)),
        pl.Series(cols["low"], np.exp(log_open + ol)), pl.Series(cols["close"], np.exp(log_close)),
    )


def range_shift(df: pl.DataFrame) -> float:
    """Mean next-session log range over the trailing 20-session mean log true range, last third
    against the first two thirds, minus 1."""
    cols = {c.lower(): c for c in df.columns}
    h, lo, c = (df[cols[k]].cast(pl.Float64).to_numpy() for k in ("high", "low", "close"))
    prev = np.r_[c[0], c[:-1]]
    tr = np.log(np.maximum(h, prev) / np.minimum(lo, prev))
    scale = np.convolve(tr, np.ones(20) / 20, "full")[: len(tr)]
    ratio = np.r_[np.log(h[1:] / lo[1:]), np.nan] / scale
    ratio[:20] = np.nan
    n = len(ratio)
    return float(np.nanmean(ratio[2 * n // 3:]) / np.nanmean(ratio[: 2 * n // 3]) - 1)


def nasdaq_gaps(keep: float = 0.25) -> pl.DataFrame:
    return shrink_gaps(pl.read_csv(rd.series_path("nasdaq")).slice(*SEGMENT), keep)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--gap-keep", type=float, default=0.25)
    args = ap.parse_args()
    df = nasdaq_gaps(args.gap_keep)
    df.write_csv(args.out)
    print(f"{args.out}: {df.height} sessions, range step in the last third {100 * range_shift(df):+.1f}%")


if __name__ == "__main__":
    main()
