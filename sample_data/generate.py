"""Generate the synthetic sample data in this folder (numpy only; seeded, reproducible).

    .venv/bin/python sample_data/generate.py            # or: make sample
    .venv/bin/python sample_data/generate.py --seed 1 --sessions 3000 --out /tmp/x

Writes two files describing the SAME synthetic series:

* ``synthetic_tradingview.csv``: a TradingView-style export (``time`` as unix seconds at
  14:30 UTC, OHLC, EMA 7, Volume, RSI, RSI-based MA, prev_1d_high ... prev_5d_low), with the
  indicators computed here by plain loops and blank cells where they are not yet defined,
  as in a real export.
* ``synthetic_yahoo.csv``: a Yahoo Finance-style download (Date, Open, High, Low, Close,
  Adj Close, Volume).

The series is made up: GARCH(1,1)-like volatility clustering, Student-t (df=4) shocks and a
slight drift.  It is not market data and predicts nothing about any market.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
START = "2015-01-02"


def simulate(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = 4.0
    shocks = rng.standard_t(df, size=n) * np.sqrt((df - 2.0) / df)  # unit variance
    vol_lr = 0.012                     # long-run daily volatility
    alpha, beta = 0.08, 0.90
    omega = vol_lr**2 * (1.0 - alpha - beta)
    drift = 0.0003

    var = vol_lr**2
    ret = np.empty(n)
    sigma = np.empty(n)
    eps_prev = 0.0
    for t in range(n):
        var = omega + alpha * eps_prev**2 + beta * var
        sigma[t] = np.sqrt(var)
        eps_prev = sigma[t] * shocks[t]
        ret[t] = drift + eps_prev

    close = 100.0 * np.exp(np.cumsum(ret))
    prev_close = np.concatenate([[100.0], close[:-1]])
    gap = rng.normal(0.0, 0.25, n) * sigma              # overnight gap: a slice of the day's vol
    open_ = prev_close * np.exp(gap)
    up = np.abs(rng.normal(0.0, 0.45, n)) * sigma        # intraday excursions beyond open/close
    down = np.abs(rng.normal(0.0, 0.45, n)) * sigma
    high = np.maximum(open_, close) * np.exp(up)
    low = np.minimum(open_, close) * np.exp(-down)

    # Volume: lognormal, higher on big moves and in volatile regimes.
    z = np.abs(ret - drift) / sigma
    log_v = 13.5 + 0.35 * (z - 0.8) + 0.8 * np.log(sigma / vol_lr) + rng.normal(0.0, 0.25, n)
    volume = np.round(np.exp(log_v))

    open_, high, low, close = (np.round(a, 2) for a in (open_, high, low, close))
    high = np.maximum.reduce([high, open_, close])
    low = np.minimum.reduce([low, open_, close])
    assert np.all(low > 0) and np.all(low <= close) and np.all(close <= high)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


# ---- indicators, plain loops (the definitions finhrm uses; tests check finhrm against their own copy)

def ema(values, n=7):
    a = 2.0 / (n + 1)
    out = [float(values[0])]
    for v in values[1:]:
        out.append(a * float(v) + (1 - a) * out[-1])
    return out


def rsi_wilder(closes, n=14):
    out = [None] * len(closes)
    if len(closes) <= n:
        return out
    gains, losses = [], []
    for i in range(1, n + 1):
        d = float(closes[i]) - float(closes[i - 1])
        gains.append(max(d, 0.0))
        losses.append(max(-d, 0.0))
    ag, al = sum(gains) / n, sum(losses) / n

    def value(ag, al):
        return 100.0 if al == 0 else 100.0 - 100.0 / (1.0 + ag / al)

    out[n] = value(ag, al)
    for i in range(n + 1, len(closes)):
        d = float(closes[i]) - float(closes[i - 1])
        ag = (ag * (n - 1) + max(d, 0.0)) / n
        al = (al * (n - 1) + max(-d, 0.0)) / n
        out[i] = value(ag, al)
    return out


def sma(values, n=14):
    out = [None] * len(values)
    for i in range(len(values)):
        win = values[i - n + 1: i + 1] if i >= n - 1 else []
        if len(win) == n and all(v is not None for v in win):
            out[i] = sum(win) / n
    return out


def sessions(n: int) -> list[dt.date]:
    days = np.busday_offset(np.datetime64(START), np.arange(n), roll="forward")
    return [d.item() for d in days]


def fmt(v, nd=None) -> str:
    if v is None:
        return ""
    return f"{v:.{nd}f}" if nd is not None else f"{v:.2f}"


def write(out: Path, n: int, seed: int) -> list[Path]:
    bars = simulate(n, seed)
    dates = sessions(n)
    o, h, l, c, v = (bars[k] for k in ("open", "high", "low", "close", "volume"))
    e7 = ema(c)
    r = rsi_wilder(c)
    rma = sma(r)
    out.mkdir(parents=True, exist_ok=True)

    tv = out / "synthetic_tradingview.csv"
    header = ["time", "open", "high", "low", "close", "EMA 7", "Volume", "RSI", "RSI-based MA"]
    for k in range(1, 6):
        header += [f"prev_{k}d_high", f"prev_{k}d_low"]
    with tv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for i, d in enumerate(dates):
            ts = int(dt.datetime(d.year, d.month, d.day, 14, 30, tzinfo=dt.timezone.utc).timestamp())
            row = [ts, fmt(o[i]), fmt(h[i]), fmt(l[i]), fmt(c[i]), fmt(e7[i], 6), f"{v[i]:.0f}",
                   fmt(r[i], 6), fmt(rma[i], 6)]
            for k in range(1, 6):
                row += [fmt(h[i - k]), fmt(l[i - k])] if i >= k else ["", ""]
            w.writerow(row)

    yh = out / "synthetic_yahoo.csv"
    # Adj Close: as if a 2 %/year dividend were reinvested (earlier prices scaled down).
    factor = np.exp(-0.02 * (n - 1 - np.arange(n)) / 252.0)
    with yh.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"])
        for i, d in enumerate(dates):
            w.writerow([d.isoformat(), fmt(o[i]), fmt(h[i]), fmt(l[i]), fmt(c[i]), fmt(c[i] * factor[i], 6), f"{v[i]:.0f}"])
    return [tv, yh]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=2015)
    ap.add_argument("--sessions", type=int, default=2650, help="business days from 2015-01-02")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    for path in write(args.out, args.sessions, args.seed):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
