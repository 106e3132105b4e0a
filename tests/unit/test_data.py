"""finhrm_cli.data: indicators, leakage, splits, normaliser, input shapes, prepared folders."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import synthetic_ohlcv
from finhrm_cli import data
from finhrm_cli import config

# These tests pin the original 18 inputs (the shapes below say 18); the extended set, the
# default, is exercised where a test names it.
def FeatureConfig(**kw):  # noqa: N802 - stands in for the class
    return config.FeatureConfig(**{"feature_set": "hrm18", **kw})

from finhrm_cli.data import HRM18, FEATURE_SETS, Normalizer, feature_columns
from finhrm_cli.errors import DataError

SMALL = FeatureConfig(seq_len=5, horizon=1, volume_window=10)


# --------------------------------------------------------------------------- plain-loop reference

def ref_ema(x, n=7):
    a = 2.0 / (n + 1)
    out = [x[0]]
    for v in x[1:]:
        out.append(a * v + (1 - a) * out[-1])
    return out


def ref_rsi(close, n=14):
    out = [None] * len(close)
    ch = [close[i] - close[i - 1] for i in range(1, len(close))]
    ag = sum(max(c, 0.0) for c in ch[:n]) / n
    al = sum(max(-c, 0.0) for c in ch[:n]) / n
    rs = lambda g, l: 100.0 if l == 0 else 100.0 - 100.0 / (1 + g / l)  # noqa: E731
    out[n] = rs(ag, al)
    for i in range(n + 1, len(close)):
        c = ch[i - 1]
        ag = (ag * (n - 1) + max(c, 0.0)) / n
        al = (al * (n - 1) + max(-c, 0.0)) / n
        out[i] = rs(ag, al)
    return out


def ref_sma(x, n=14):
    out = [None] * len(x)
    for i in range(n - 1, len(x)):
        w = x[i - n + 1: i + 1]
        if all(v is not None for v in w):
            out[i] = sum(w) / n
    return out


def bars_df(d: dict) -> pl.DataFrame:
    return pl.DataFrame({k: (pl.Series(k, v).cast(pl.Date) if k == "date" else np.asarray(v, float)) for k, v in d.items()})


# --------------------------------------------------------------------------- indicators

@pytest.mark.parametrize("seed", [0, 1])
def test_indicators_equal_plain_loops(seed):
    d = synthetic_ohlcv(150, seed)
    frame, dropped = data.build_features(bars_df(d), FeatureConfig())
    close = [float(v) for v in d["close"]]
    ema, rsi = ref_ema(close), ref_rsi(close)
    rsi_ma = ref_sma(rsi)
    lead = 27  # RSI MA needs 14 changes + 13 more RSI values
    assert dropped == {"indicator_warmup": lead}
    assert frame.height == 150 - lead
    c = np.asarray(close[lead:])
    np.testing.assert_allclose(np.exp(frame["f_ema7"].to_numpy()) * c, ema[lead:], rtol=1e-12)
    np.testing.assert_allclose(frame["f_rsi"].to_numpy() * 100, rsi[lead:], rtol=1e-10)
    np.testing.assert_allclose(frame["f_rsi_ma"].to_numpy() * 100, rsi_ma[lead:], rtol=1e-10)
    for k in range(1, 6):
        np.testing.assert_allclose(np.exp(frame[f"f_prev{k}_high"].to_numpy()) * c, d["high"][lead - k: 150 - k], rtol=1e-12)
        np.testing.assert_allclose(np.exp(frame[f"f_prev{k}_low"].to_numpy()) * c, d["low"][lead - k: 150 - k], rtol=1e-12)
    # volume: log of volume over the trailing 20-day mean including today
    v = d["volume"]
    want = [math.log(v[t] / np.mean(v[t - 19: t + 1])) for t in range(lead, 150)]
    np.testing.assert_allclose(frame["f_volume"].to_numpy(), want, rtol=1e-10)
    # targets and raw columns
    np.testing.assert_allclose(frame["target_high"].to_numpy()[:-1], np.log(d["high"][lead + 1:] / d["close"][lead:-1]), rtol=1e-12)
    np.testing.assert_allclose(frame["next_low"].to_numpy()[:-1], d["low"][lead + 1:])
    assert frame["target_high"][-1] is None and frame["next_high"][-1] is None
    assert frame["f_close"].abs().max() == 0.0


def test_rsi_is_100_without_losses():
    n = 60
    close = 100 * np.exp(np.linspace(0, 0.3, n))
    d = {"date": synthetic_ohlcv(n)["date"], "open": close, "high": close * 1.01, "low": close * 0.99,
         "close": close, "volume": np.ones(n)}
    frame, _ = data.build_features(bars_df(d), FeatureConfig())
    assert np.allclose(frame["f_rsi"].to_numpy(), 1.0)
    assert np.allclose(frame["f_volume"].to_numpy(), 0.0)


def test_feature_sets_and_columns():
    assert FEATURE_SETS["hrm18"] == HRM18 and len(HRM18) == 18
    frame, _ = data.build_features(bars_df(synthetic_ohlcv(80)), FeatureConfig())
    assert frame.columns[: len(data.RAW_COLUMNS)] == data.RAW_COLUMNS
    assert frame.columns[-18:] == feature_columns(HRM18)
    ext, _ = data.build_features(bars_df(synthetic_ohlcv(80)), FeatureConfig(feature_set="extended"))
    assert ext.columns[-len(FEATURE_SETS["extended"]):] == feature_columns(FEATURE_SETS["extended"])
    assert (ext["scale"] > 0).all()
    with pytest.raises(DataError):
        data.build_features(bars_df(synthetic_ohlcv(80)), FeatureConfig(feature_set="nope"))


def test_long_memory_features_equal_their_formulas():
    d = synthetic_ohlcv(200, 4)
    frame, _ = data.build_features(bars_df(d), FeatureConfig(feature_set="long"))
    lead = 200 - frame.height
    o, h, l, c = (np.asarray(d[k], float)[lead:] for k in ("open", "high", "low", "close"))
    full = {k: np.asarray(d[k], float) for k in ("open", "high", "low", "close")}
    t = frame.height - 1  # last row; bars index lead + t
    T = lead + t

    def last(n, x):
        return x[T - n + 1:T + 1]

    hl = np.log(full["high"] / full["low"])
    co = np.log(full["close"] / full["open"])
    rs = (np.log(full["high"] / full["close"]) * np.log(full["high"] / full["open"])
          + np.log(full["low"] / full["close"]) * np.log(full["low"] / full["open"]))
    want = {
        "park_22": 0.5 * np.log(np.mean(last(22, hl) ** 2) / (4 * np.log(2))),
        "gk_22": 0.5 * np.log(np.mean(0.5 * last(22, hl) ** 2 - (2 * np.log(2) - 1) * last(22, co) ** 2)),
        "rs_22": 0.5 * np.log(np.mean(last(22, rs))),
        "rng_66": np.log(last(66, full["high"]).max() / last(66, full["low"]).min()),
        "rng_132": np.log(last(132, full["high"]).max() / last(132, full["low"]).min()),
    }
    for name, value in want.items():
        assert frame[f"f_{name}"][t] == pytest.approx(value, rel=1e-9), name
    # 66/132-session features start after 22 sessions instead of dropping 132 rows
    assert lead < 66


def test_slow_context_features_equal_their_formulas_and_come_last():
    d = synthetic_ohlcv(300, 5)
    frame, _ = data.build_features(bars_df(d), FeatureConfig(feature_set="slow"))
    names = FEATURE_SETS["slow"]
    assert names[-data.context_width("slow"):] == data.SLOW_CONTEXT
    assert data.context_width("extended") == 0
    lead = 300 - frame.height
    assert lead < 66  # the 250-session columns do not drop a year of rows
    c, h, lo = (np.asarray(d[k], float) for k in ("close", "high", "low"))
    for t in (frame.height - 1, 100 - lead, 30 - lead):  # full spans, and before 132 / 250 exist
        T = lead + t
        for n in (66, 132, 250):
            start = max(T - n, 0)
            assert frame[f"f_mom_{n}"][t] == pytest.approx(np.log(c[T] / c[start]), rel=1e-9), (n, t)
        lo_n = max(T - 249, 0)
        assert frame["f_rng_250"][t] == pytest.approx(np.log(h[lo_n:T + 1].max() / lo[lo_n:T + 1].min()), rel=1e-9)


def test_scale_inputs_divides_log_ratios_by_the_scale():
    bars = bars_df(synthetic_ohlcv(150, 2))
    plain, _ = data.build_features(bars, FeatureConfig(feature_set="long"))
    free, _ = data.build_features(bars, FeatureConfig(feature_set="long", scale_inputs=True))
    s = plain["scale"].to_numpy()
    np.testing.assert_allclose(free["f_prev3_low"].to_numpy(), plain["f_prev3_low"].to_numpy() / s, rtol=1e-12)
    np.testing.assert_allclose(free["f_rng_22"].to_numpy(), plain["f_rng_22"].to_numpy() / s, rtol=1e-12)
    np.testing.assert_allclose(free["f_atr_66"].to_numpy(), plain["f_atr_66"].to_numpy() - np.log(s), rtol=1e-12)
    np.testing.assert_array_equal(free["f_rsi"].to_numpy(), plain["f_rsi"].to_numpy())  # not a price ratio
    # a 10x price level leaves scale-free inputs unchanged (log ratios are level-free already)
    up = bars.with_columns([pl.col(k) * 10 for k in ("open", "high", "low", "close")])
    free10, _ = data.build_features(up, FeatureConfig(feature_set="long", scale_inputs=True))
    np.testing.assert_allclose(free10["f_prev3_low"].to_numpy(), free["f_prev3_low"].to_numpy(), rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- leakage

def _valid_tail(n: int, seed: int, price: float) -> dict:
    return synthetic_ohlcv(n, seed, price=price)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    seed2=st.integers(0, 10_000),
    frac=st.floats(0.0, 1.0),
    scale=st.floats(0.2, 5.0),
    horizon=st.integers(1, 3),
    feature_set=st.sampled_from(sorted(FEATURE_SETS)),
    scale_inputs=st.booleans(),
)
def test_no_lookahead(seed, seed2, frac, scale, horizon, feature_set, scale_inputs):
    n = 120
    fcfg = FeatureConfig(seq_len=5, horizon=horizon, volume_window=10, feature_set=feature_set,
                         scale_inputs=scale_inputs)
    base = synthetic_ohlcv(n, seed)
    ds = data.from_bars(bars_df(base), fcfg)
    lead = sum(ds.dropped.values())
    t_row = lead + int(frac * (n - lead - 1))          # row in the bars, after the warm-up
    # Replace every row after t by an unrelated valid series (other level, other volume).
    tail = _valid_tail(n - t_row - 1, seed2, price=float(base["close"][t_row]) * scale)
    changed = {k: np.concatenate([base[k][: t_row + 1], tail[k]]) if k != "date" else base[k] for k in base}
    changed["volume"] = changed["volume"] * np.r_[np.ones(t_row + 1), np.full(n - t_row - 1, scale * 3)]
    ds2 = data.from_bars(bars_df(changed), fcfg, normalizer=ds.normalizer)
    assert ds2.dropped == ds.dropped
    t = t_row - lead                                    # row in the frames
    fc = feature_columns(FEATURE_SETS[feature_set]) + ["scale"]
    a = ds.frame.slice(0, t + 1).select(["date", *fc])
    b = ds2.frame.slice(0, t + 1).select(["date", *fc])
    assert a.equals(b)
    w1, w2 = ds.windows("all"), ds2.windows("all")
    i1, i2 = np.flatnonzero(w1.end <= t), np.flatnonzero(w2.end <= t)
    assert np.array_equal(w1.end[i1], w2.end[i2])
    assert np.array_equal(w1.x[i1], w2.x[i2])
    assert np.array_equal(w1.scale[i1], w2.scale[i2])
    if t >= fcfg.seq_len - 1:
        assert w1.end[i1][-1] == t


def test_lookahead_check_has_teeth():
    """Sanity for the test above: changing a row at or before t does change features at t."""
    n = 120
    base = synthetic_ohlcv(n, 3)
    ds = data.from_bars(bars_df(base), SMALL)
    changed = {k: v.copy() for k, v in base.items()}
    changed["close"][60] = changed["low"][60]
    ds2 = data.from_bars(bars_df(changed), SMALL, normalizer=ds.normalizer)
    t = 60 - sum(ds.dropped.values())
    assert not np.allclose(ds.features()[t], ds2.features()[t])


# --------------------------------------------------------------------------- normaliser

def test_normalizer_uses_training_rows_only():
    n = 200
    base = synthetic_ohlcv(n, 5)
    ds = data.from_bars(bars_df(base), SMALL)
    lead = sum(ds.dropped.values())
    tr = ds.splits["train"]
    fit = ds.features()[tr["start"]: tr["end"] - SMALL.horizon]
    np.testing.assert_allclose(ds.normalizer.mean, fit.mean(axis=0))
    # every bar from the last train target row on: val, test, and train rows used only as targets
    first_free = lead + tr["end"] - SMALL.horizon
    other = synthetic_ohlcv(n, 99, price=300.0)
    changed = {k: (np.concatenate([base[k][:first_free], other[k][first_free:]]) if k != "date" else base[k]) for k in base}
    ds2 = data.from_bars(bars_df(changed), SMALL)
    assert np.array_equal(ds.normalizer.mean, ds2.normalizer.mean)
    assert np.array_equal(ds.normalizer.std, ds2.normalizer.std)
    # a training row does matter
    changed3 = {k: v.copy() for k, v in base.items()}
    changed3["volume"][first_free - 1] *= 5
    ds3 = data.from_bars(bars_df(changed3), SMALL)
    assert not np.array_equal(ds.normalizer.mean, ds3.normalizer.mean)


@pytest.mark.parametrize("feature_set", ["hrm18", "extended"])
def test_normalizer_fit_by_column_equals_the_2d_fit_bit_for_bit(feature_set):
    # finish_dataset fits column by column (no 2-D copy of a big frame): same numbers as before
    ds = data.from_bars(bars_df(synthetic_ohlcv(700, 3)), FeatureConfig(feature_set=feature_set))
    tr, h = ds.splits["train"], ds.fcfg.horizon
    ref = Normalizer.fit(ds.features()[tr["start"]: tr["end"] - h])
    assert np.array_equal(ds.normalizer.mean, ref.mean) and np.array_equal(ds.normalizer.std, ref.std)


def test_normalizer_zero_std_roundtrip():
    x = np.c_[np.arange(10.0), np.zeros(10)]
    nz = Normalizer.fit(x)
    assert nz.std[1] == 1.0
    out = nz.transform(x)
    assert out.dtype == np.float32 and np.all(out[:, 1] == 0)
    back = Normalizer.from_dict(json.loads(json.dumps(nz.to_dict())))
    assert back == nz
    with pytest.raises(DataError):
        Normalizer.from_dict({"mean": [0.0], "std": [0.0]})


# --------------------------------------------------------------------------- splits and windows

@pytest.mark.parametrize("seq_len,horizon,val_frac", [(1, 1, 0.15), (5, 1, 0.15), (10, 3, 0.2), (7, 2, 0.0)])
def test_windows_never_straddle_splits(seq_len, horizon, val_frac):
    fcfg = FeatureConfig(seq_len=seq_len, horizon=horizon, val_frac=val_frac, volume_window=10)
    ds = data.from_bars(bars_df(synthetic_ohlcv(300, 2)), fcfg)
    xn = ds.normalizer.transform(ds.features())
    tgt = ds.frame.select(["target_high", "target_low"]).to_numpy()
    seen = 0
    for name in ("train", "val", "test"):
        sp = ds.splits[name]
        w = ds.windows(name)
        assert len(w) == sp["n_windows"]
        seen += len(w)
        if not len(w):
            assert name == "val" and val_frac == 0
            continue
        assert w.x.shape == (len(w), seq_len, 18) and w.x.dtype == np.float32 and w.x.flags.c_contiguous
        assert np.all(w.end - seq_len + 1 >= sp["start"]) and np.all(w.end + horizon < sp["end"])
        assert np.all(np.isfinite(w.y))
        for i in (0, len(w) // 2, len(w) - 1):
            t = int(w.end[i])
            np.testing.assert_array_equal(w.x[i], xn[t - seq_len + 1: t + 1])
            np.testing.assert_allclose(w.y[i], tgt[t], rtol=1e-6)
            assert w.next_high[i] == ds.frame["high"][t + horizon]
            assert w.close[i] == ds.frame["close"][t]
            assert str(w.dates[i]) == ds.frame["date"][t].isoformat()
    assert ds.splits["train"]["end"] == ds.splits["val"]["start"]
    assert ds.splits["test"]["end"] == ds.frame.height
    allw = ds.windows("all")
    assert len(allw) == ds.frame.height - seq_len + 1 > seen
    assert np.all(np.isnan(allw.y[-horizon:])) and np.all(np.isnan(allw.next_low[-horizon:]))
    assert np.all(np.isfinite(allw.y[:-horizon]))
    sub = allw.subset(np.array([0, 2]))
    assert len(sub) == 2 and sub.x.shape[0] == 2 and sub.end[1] == allw.end[2]


def test_too_few_rows_and_min_windows_zero():
    bars = bars_df(synthetic_ohlcv(60, 1))
    with pytest.raises(DataError, match=r"too few rows.*need at least \d+ usable rows.*has 60 rows, 33 usable"):
        data.from_bars(bars, FeatureConfig())
    ds0 = data.from_bars(bars, FeatureConfig(), normalizer=Normalizer(np.zeros(18), np.ones(18)), min_windows=0)
    assert len(ds0.windows("all")) == 33 - 10 + 1


# --------------------------------------------------------------------------- input shapes

def _fmt(v) -> str:
    return "" if v is None else repr(float(v))


def _tv_rows(d: dict, iso: bool):
    close = [float(v) for v in d["close"]]
    ema, rsi = ref_ema(close), ref_rsi(close)
    rsi_ma = ref_sma(rsi)
    header = ["time", "open", "high", "low", "close", "EMA 7", "Volume", "RSI", "RSI-based MA"]
    header += [f"prev_{k}d_{s}" for k in range(1, 6) for s in ("high", "low")]
    rows = []
    for i, day in enumerate(d["date"]):
        ts = day.astype("datetime64[s]").astype(np.int64) + 14 * 3600 + 1800
        t = str(day) + "T00:00:00Z" if iso else str(int(ts))
        row = [t, *(_fmt(d[k][i]) for k in ("open", "high", "low", "close")), _fmt(ema[i]), _fmt(d["volume"][i]),
               _fmt(rsi[i]), _fmt(rsi_ma[i])]
        for k in range(1, 6):
            row += [_fmt(d["high"][i - k]), _fmt(d["low"][i - k])] if i >= k else ["", ""]
        rows.append(row)
    return header, rows


def _write(path, header, rows, sep=",", bom=False, gz=False):
    import io

    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    raw = (("\ufeff" if bom else "") + buf.getvalue()).encode("utf-8")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def _plain(d, cols=("open", "high", "low", "close", "volume")):
    return [[str(day), *(_fmt(d[c][i]) for c in cols)] for i, day in enumerate(d["date"])]


@pytest.fixture(scope="module")
def series():
    return synthetic_ohlcv(150, 11)


def _shape_files(tmp_path, d):
    files = {}
    h, rows = _tv_rows(d, iso=False)
    files["tv_unix"] = (_write(tmp_path / "tv.csv", h, rows), "tradingview")
    h, rows = _tv_rows(d, iso=True)
    files["tv_iso"] = (_write(tmp_path / "tv_iso.csv", h, rows), "tradingview")
    yrows = [[r[0], *r[1:5], _fmt(float(r[4]) * 0.9), r[5]] for r in _plain(d)]
    files["yahoo"] = (_write(tmp_path / "y.csv", ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"], yrows), "yahoo")
    gh = ["date", "open", "high", "low", "close", "volume"]
    files["generic"] = (_write(tmp_path / "g.csv", gh, _plain(d)), "generic")
    files["semicolon"] = (_write(tmp_path / "g_semi.csv", gh, _plain(d), sep=";"), "generic")
    files["tab"] = (_write(tmp_path / "g.tsv", gh, _plain(d), sep="\t"), "generic")
    files["bom"] = (_write(tmp_path / "g_bom.csv", gh, _plain(d), bom=True), "generic")
    files["gz"] = (_write(tmp_path / "g.csv.gz", gh, _plain(d), gz=True), "generic")
    files["gz_no_suffix"] = (_write(tmp_path / "g_gz.csv", gh, _plain(d), gz=True), "generic")
    files["aliases"] = (_write(tmp_path / "g_alias.csv", ["Timestamp", "O", "H", "L", "C", "Vol"], _plain(d)), "generic")
    # pandas `df.to_csv()`: the date index is a first column with an empty header
    files["pandas_index"] = (_write(tmp_path / "g_pd.csv", ["", "Open", "High", "Low", "Close", "Volume"], _plain(d)), "generic")
    rev = _plain(d)[::-1]
    files["newest_first"] = (_write(tmp_path / "g_rev.csv", gh, rev), "generic")
    pq = tmp_path / "g.parquet"
    bars_df(d).write_parquet(pq)
    files["parquet"] = (pq, "generic")
    crlf = tmp_path / "g_crlf.csv"
    crlf.write_bytes((tmp_path / "g.csv").read_bytes().replace(b"\n", b"\r\n"))
    files["crlf"] = (crlf, "generic")
    return files


def test_shapes_give_identical_features(tmp_path, series):
    fcfg = FeatureConfig(seq_len=5)
    ref = data.from_bars(bars_df(series), fcfg)
    for key, (path, shape) in _shape_files(tmp_path, series).items():
        ds = data.prepare(path, fcfg)
        assert ds.source.shape == shape, key
        assert ds.frame.height == ref.frame.height, key
        assert sum(ds.dropped.values()) == sum(ref.dropped.values()), key
        assert ds.frame["date"].equals(ref.frame["date"]), key
        np.testing.assert_allclose(ds.features(), ref.features(), rtol=0, atol=1e-9, err_msg=key)
        np.testing.assert_allclose(ds.windows("train").x, ref.windows("train").x, atol=1e-4, err_msg=key)
        assert len(ds.source.fingerprint) == 64
        assert ds.source.n_rows == 150
    tv = data.prepare(tmp_path / "tv.csv", fcfg)
    assert tv.dropped == {"file_indicator_warmup": 27}
    assert tv.source.columns["ema7"] == "EMA 7" and tv.source.columns["rsi_ma"] == "RSI-based MA"
    assert tv.source.name == "tv"
    assert data.prepare(tmp_path / "g.csv.gz", fcfg).source.name == "g"
    assert any("Adj Close" in s for s in data.prepare(tmp_path / "y.csv", fcfg).source.notes)
    assert any("newest-first" in w for w in data.prepare(tmp_path / "g_rev.csv", fcfg).source.warnings)


def test_given_indicators_are_used_as_given(tmp_path, series):
    h, rows = _tv_rows(series, iso=False)
    for r in rows:
        if r[7]:
            r[7] = "50"  # RSI column: a constant is not what we would compute
    ds = data.prepare(_write(tmp_path / "tv.csv", h, rows), FeatureConfig(seq_len=5))
    assert np.allclose(ds.frame["f_rsi"].to_numpy(), 0.5)


def test_sample_data_files_read():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "sample_data"
    a = data.prepare(root / "synthetic_tradingview.csv", FeatureConfig())
    b = data.prepare(root / "synthetic_yahoo.csv", FeatureConfig())
    assert a.source.shape == "tradingview" and b.source.shape == "yahoo"
    assert a.source.n_rows >= 2600 and a.frame["date"][0] > dt.date(2015, 1, 2)
    # the TradingView file's own indicators (6 decimals) match ours
    np.testing.assert_allclose(a.features(), b.features(), atol=1e-6)


def test_unsorted_rows_are_sorted_with_warning(tmp_path, series):
    rows = _plain(series)
    rows[40], rows[41] = rows[41], rows[40]
    ds = data.prepare(_write(tmp_path / "u.csv", ["date", "open", "high", "low", "close", "volume"], rows), SMALL)
    assert any("line 43" in w and "sorted" in w for w in ds.source.warnings)
    ref = data.from_bars(bars_df(series), SMALL)
    np.testing.assert_allclose(ds.features(), ref.features(), atol=1e-12)


def test_no_volume_column(tmp_path, series):
    rows = _plain(series, ("open", "high", "low", "close"))
    ds = data.prepare(_write(tmp_path / "nv.csv", ["Date", "Open", "High", "Low", "Close"], rows), SMALL)
    assert np.all(ds.frame["f_volume"].to_numpy() == 0)
    assert ds.frame["volume"].null_count() == ds.frame.height
    assert any("volume" in w for w in ds.source.warnings)
    assert sum(ds.dropped.values()) == 27  # no volume window


def test_zero_volume_day_is_finite(tmp_path, series):
    rows = _plain(series)
    rows[80][5] = "0"
    ds = data.prepare(_write(tmp_path / "z.csv", ["date", "open", "high", "low", "close", "volume"], rows), SMALL)
    assert np.all(np.isfinite(ds.features()))


@pytest.mark.parametrize("fmt,name", [
    ("%d.%m.%Y", "dotted day-first"),
    ("%m/%d/%Y", "US month-first"),
    ("%Y/%m/%d", "slashed ISO"),
    ("%Y%m%d", "compact"),
    ("%Y-%m-%d %H:%M:%S", "datetime"),
    ("%d-%b-%Y", "month names"),
])
def test_date_formats(tmp_path, series, fmt, name):
    rows = _plain(series)
    for r, day in zip(rows, series["date"]):
        r[0] = day.item().strftime(fmt)
    ds = data.prepare(_write(tmp_path / "d.csv", ["Date", "Open", "High", "Low", "Close", "Volume"], rows), SMALL)
    assert ds.frame["date"].equals(data.from_bars(bars_df(series), SMALL).frame["date"]), name


def test_unix_milliseconds(tmp_path, series):
    rows = _plain(series)
    for r, day in zip(rows, series["date"]):
        r[0] = str(int(day.astype("datetime64[ms]").astype(np.int64)) + 3_600_000)
    ds = data.prepare(_write(tmp_path / "ms.csv", ["timestamp", "open", "high", "low", "close", "volume"], rows), SMALL)
    assert ds.frame["date"].equals(data.from_bars(bars_df(series), SMALL).frame["date"])


def test_col_map_and_date_col(tmp_path, series):
    rows = _plain(series)
    header = ["Session", "Opening", "Top", "Bottom", "Settle", "Qty"]
    path = _write(tmp_path / "odd.csv", header, rows)
    cm = data.parse_col_map(["open=Opening", "high=top", "LOW=Bottom", "close = Settle", "volume=Qty"])
    assert cm == {"open": "Opening", "high": "top", "low": "Bottom", "close": "Settle", "volume": "Qty"}
    ds = data.prepare(path, SMALL, date_col="session", col_map=cm)
    assert ds.source.columns["high"] == "Top" and ds.source.columns["date"] == "Session"
    np.testing.assert_allclose(ds.features(), data.from_bars(bars_df(series), SMALL).features(), atol=1e-12)
    ds2 = data.prepare(path, SMALL, col_map={**cm, "date": "Session"})
    assert ds2.frame.equals(ds.frame)


# --------------------------------------------------------------------------- prepared folders

def test_prepared_roundtrip_and_rebuild(tmp_path, series):
    path = _write(tmp_path / "g.csv", ["date", "open", "high", "low", "close", "volume"], _plain(series))
    ds = data.prepare(path, SMALL)
    out = data.save_prepared(ds, tmp_path / "prep")
    assert sorted(p.name for p in out.iterdir()) == ["features.parquet", "meta.json"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["normalizer"] == ds.normalizer.to_dict() and meta["feature_names"] == HRM18
    back = data.prepare(out, SMALL)
    assert back.source.shape == "prepared" and back.source.fingerprint == ds.source.fingerprint
    assert back.normalizer == ds.normalizer and back.splits == ds.splits
    np.testing.assert_array_equal(back.windows("all").x, ds.windows("all").x)
    json.dumps(back.summary()) and json.dumps(back.meta())
    # other seq_len / horizon / split: rebuilt from the stored frame, same as from the file
    other = FeatureConfig(seq_len=8, horizon=2, train_frac=0.6, val_frac=0.2, volume_window=10)
    a, b = data.prepare(out, other), data.prepare(path, other)
    assert a.splits == b.splits and a.normalizer == b.normalizer
    np.testing.assert_array_equal(a.windows("test").y, b.windows("test").y)
    with pytest.raises(DataError, match="volume_window"):
        data.prepare(out, FeatureConfig(volume_window=20))
    # a given normaliser is used unchanged
    nz = Normalizer(np.zeros(18), np.ones(18))
    assert data.prepare(out, SMALL, normalizer=nz).normalizer is nz


def test_fsutil_atomic(tmp_path):
    from finhrm_cli.fsutil import atomic_write_json, atomic_write_text

    p = atomic_write_text(tmp_path / "a" / "b.txt", "hi")
    assert p.read_text() == "hi"
    atomic_write_json(p, {"x": 1})
    assert json.loads(p.read_text()) == {"x": 1}
    assert [q.name for q in p.parent.iterdir()] == ["b.txt"]


def test_portal_export_shapes(tmp_path, series):
    """MetaTrader (<DATE> headers, YYYY.MM.DD, tabs), Investing.com (Price, 1.21M volume,
    "Mon DD, YYYY", quoted, newest first) and Nasdaq (Close/Last, $ prices, MM/DD/YYYY)
    give the same features as a plain file."""
    d = series
    fcfg = FeatureConfig(seq_len=5)
    ref = data.prepare(_write(tmp_path / "plain.csv", ["date", "open", "high", "low", "close", "volume"], _plain(d)), fcfg)
    days = [np.datetime64(x, "D").astype(object) for x in d["date"]]
    n = len(days)
    mt = [[day.strftime("%Y.%m.%d"), *(_fmt(d[c][i]) for c in ("open", "high", "low", "close")), _fmt(d["volume"][i])]
          for i, day in enumerate(days)]
    f_mt = _write(tmp_path / "mt.csv", ["<DATE>", "<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>", "<TICKVOL>"], mt, sep="\t")
    inv = [[day.strftime("%b %d, %Y"), _fmt(d["close"][i]), *(_fmt(d[c][i]) for c in ("open", "high", "low")),
            f'{d["volume"][i] / 1e3:.3f}K', "0.1%"] for i, day in enumerate(days)][::-1]
    f_inv = _write(tmp_path / "inv.csv", ["Date", "Price", "Open", "High", "Low", "Vol.", "Change %"], inv)
    nas = [[day.strftime("%m/%d/%Y"), f'${d["close"][i]:.6f}', _fmt(d["volume"][i]),
            *(f'${d[c][i]:.6f}' for c in ("open", "high", "low"))] for i, day in enumerate(days)]
    f_nas = _write(tmp_path / "nas.csv", ["Date", "Close/Last", "Volume", "Open", "High", "Low"], nas)
    for f in (f_mt, f_inv, f_nas):
        ds = data.prepare(f, fcfg)
        assert ds.frame.height == ref.frame.height and ds.source.n_rows == n, f
        np.testing.assert_allclose(ds.features(), ref.features(), atol=1e-5, err_msg=str(f))


@pytest.mark.parametrize("cell", ["1,234", "12,5", "1.2M"])
def test_ambiguous_numbers_in_price_columns_are_errors(tmp_path, series, cell):
    rows = _plain(series)
    rows[3][4] = cell
    f = _write(tmp_path / "amb.csv", ["date", "open", "high", "low", "close", "volume"], rows)
    with pytest.raises(DataError, match="line 5.*is not a number"):
        data.prepare(f, FeatureConfig(seq_len=5))
