"""Baselines, metrics and conformal intervals against hand computations."""

import math

import numpy as np
import pytest

from finhrm_cli import baselines


def test_persistence_metrics_by_hand():
    # day t: high, low, close; actual next-day high/low
    high = np.array([10.0, 11.0, 12.0])
    low = np.array([9.0, 9.5, 10.0])
    close = np.array([9.5, 10.0, 11.0])
    next_high = np.array([11.0, 12.0, 11.5])
    next_low = np.array([9.5, 10.0, 10.5])
    ph, pl = baselines.persistence(high, low)
    m = baselines.metrics(ph, pl, next_high, next_low, close)
    # errors high: -1, -1, +0.5 ; low: -0.5, -0.5, -0.5
    assert m["mae_high"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["mae_low"] == pytest.approx(0.5)
    assert m["mae"] == pytest.approx(((2.5 / 3) + 0.5) / 2)
    assert m["rmse_high"] == pytest.approx(math.sqrt((1 + 1 + 0.25) / 3))
    assert m["mape_high"] == pytest.approx((1 / 11 + 1 / 12 + 0.5 / 11.5) / 3)
    # directions vs close: pred high-close: +.5,+1,+1 ; actual: +1.5,+2,+.5 -> all up
    assert m["direction_high"] == 1.0
    # pred low-close: -.5,-.5,-1 ; actual low-close: 0, 0, -.5 -> signs match only on row 3
    assert m["direction_low"] == pytest.approx(1 / 3)
    assert m["range_valid"] == 1.0
    # R² on log ratios
    yt = np.log(next_high / close)
    yp = np.log(high / close)
    r2 = 1 - np.sum((yt - yp) ** 2) / np.sum((yt - yt.mean()) ** 2)
    assert m["r2_high"] == pytest.approx(r2)


def test_recent_range_uses_only_past_ratios():
    close = np.array([100.0, 102.0, 101.0, 104.0, 103.0])
    high = np.array([101.0, 103.0, 103.5, 105.0, 104.0])
    low = np.array([99.0, 100.5, 100.0, 102.0, 102.5])
    end = np.array([3, 4])
    ph, pl = baselines.recent_range(high, low, close, end, horizon=1, lookback=3)
    # t=3: ratios s=1..3: high_s/close_{s-1} = 103/100, 103.5/102, 105/101
    assert ph[0] == pytest.approx(104.0 * np.median([103 / 100, 103.5 / 102, 105 / 101]))
    assert pl[0] == pytest.approx(104.0 * np.median([100.5 / 100, 100 / 102, 102 / 101]))
    # t=4: s=2..4
    assert ph[1] == pytest.approx(103.0 * np.median([103.5 / 102, 105 / 101, 104 / 104]))
    # changing a future row does not change the forecast at t=3
    high2 = high.copy()
    high2[4] = 500.0
    ph2, _ = baselines.recent_range(high2, low, close, np.array([3]), horizon=1, lookback=3)
    assert ph2[0] == ph[0]


def test_skill_is_ratio_to_persistence():
    res = baselines.with_skill({"finhrm": {"mae": 1.0}, "persistence": {"mae": 4.0}})
    assert res["finhrm"]["skill"] == 0.25
    assert res["persistence"]["skill"] == 1.0


def test_conformal_interval_covers_at_requested_rate():
    rng = np.random.default_rng(0)
    n_cal, n_test = 2000, 20000
    pred_cal = np.zeros((n_cal, 2))
    y_cal = rng.standard_t(4, size=(n_cal, 2)) * 0.01
    res = baselines.conformal_residuals(pred_cal, y_cal)
    assert res["n"] == n_cal and res["high"] == sorted(res["high"])
    close = np.full(n_test, 50.0)
    pred = np.zeros((n_test, 2))
    iv = baselines.intervals(pred, close, res, 0.8)
    y = rng.standard_t(4, size=(n_test, 2)) * 0.01
    actual_high = close * np.exp(y[:, 0])
    cov = np.mean((actual_high >= iv["high_lo"]) & (actual_high <= iv["high_hi"]))
    assert abs(cov - 0.8) < 0.02
    # wider coverage -> wider interval
    iv95 = baselines.intervals(pred, close, res, 0.95)
    assert np.all(iv95["high_hi"] - iv95["high_lo"] > iv["high_hi"] - iv["high_lo"])


def test_conformal_with_few_residuals_is_unbounded_not_wrong():
    res = {"n": 3, "high": [-0.01, 0.0, 0.01], "low": [-0.01, 0.0, 0.01]}
    off = baselines.conformal_offsets(res, 0.9)
    assert off["high"] == (-math.inf, math.inf)
