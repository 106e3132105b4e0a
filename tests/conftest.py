"""Shared fixtures: small, valid synthetic daily bars (no files unless asked)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest


def synthetic_ohlcv(n: int = 200, seed: int = 0, start: dt.date = dt.date(2020, 1, 1), price: float = 100.0) -> dict:
    """A valid random daily series as numpy arrays: dates (business days), open, high, low, close, volume."""
    rng = np.random.default_rng(seed)
    ret = rng.standard_t(4, n) * 0.01
    close = price * np.exp(np.cumsum(ret))
    prev = np.concatenate([[price], close[:-1]])
    open_ = prev * np.exp(rng.normal(0, 0.003, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.005, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.005, n)))
    volume = np.round(rng.lognormal(12, 0.5, n))
    dates = np.busday_offset(np.datetime64(start, "D"), np.arange(n), roll="forward")
    return {"date": dates, "open": open_, "high": high, "low": low, "close": close, "volume": volume}


@pytest.fixture
def ohlcv():
    """Factory: ``ohlcv(n=200, seed=0, ...)`` -> dict of numpy arrays (see synthetic_ohlcv)."""
    return synthetic_ohlcv


@pytest.fixture
def bars_frame():
    """Factory: ``bars_frame(n=200, seed=0)`` -> polars DataFrame of canonical bars."""
    import polars as pl

    def make(n: int = 200, seed: int = 0, **kw):
        d = synthetic_ohlcv(n, seed, **kw)
        return pl.DataFrame({k: (pl.Series(k, v).cast(pl.Date) if k == "date" else v) for k, v in d.items()})

    return make
