"""Baselines, metrics and conformal intervals against hand computations."""

import math

import numpy as np
import pytest

from finhrm_cli.forecast import baselines


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


# ------------------------------------------------------------------ Diebold-Mariano


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 7.0])
def test_t_p_value_matches_closed_forms(t):
    # df=1 (Cauchy): P(|T| >= t) = 1 - 2 atan(t) / pi; df=2: 1 - t / sqrt(t^2 + 2)
    assert baselines.t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, abs=1e-12)
    assert baselines.t_two_sided_p(-t, 2) == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-12)
    # many degrees of freedom: the normal tail
    assert baselines.t_two_sided_p(t, 4001) == pytest.approx(math.erfc(t / math.sqrt(2)), abs=2e-4)
    # odd and even df bracket each other monotonically: more df, thinner tails
    if t > 0:
        assert baselines.t_two_sided_p(t, 5) > baselines.t_two_sided_p(t, 6) > baselines.t_two_sided_p(t, 30)


def _dm_by_hand(e1, e2, h):
    n = len(e1)
    d = [abs(a) - abs(b) for a, b in zip(e1, e2)]
    mean = sum(d) / n
    def gamma(j):
        s = 0.0
        for t in range(j, n):
            s += (d[t] - mean) * (d[t - j] - mean)
        return s / n
    v = gamma(0)
    for j in range(1, h):
        v += 2 * (1 - j / h) * gamma(j)
    dm = mean / math.sqrt(v / n)
    return dm * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)


@pytest.mark.parametrize("h", [1, 2, 3])
def test_diebold_mariano_matches_a_hand_computation(h):
    e1 = [0.5, -1.0, 0.2, 0.1, -0.3, 0.8, -0.2, 0.4, 0.05, -0.6]
    e2 = [1.0, -0.7, 0.9, -0.4, 0.6, 1.1, -0.9, 0.3, 0.5, -1.2]
    res = baselines.diebold_mariano(np.array(e1), np.array(e2), horizon=h)
    want = _dm_by_hand(e1, e2, h)
    assert res["stat"] == pytest.approx(want, rel=1e-12)
    assert res["n"] == 10
    assert res["mean_diff"] == pytest.approx(np.mean(np.abs(e1)) - np.mean(np.abs(e2)))
    assert res["p"] == pytest.approx(baselines.t_two_sided_p(want, 9), rel=1e-12)
    assert res["stat"] < 0  # the first forecast's errors are smaller


def test_diebold_mariano_averages_high_and_low_per_row():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
    res = baselines.diebold_mariano(a, b)
    d1 = np.abs(a).mean(1)
    d2 = np.abs(b).mean(1)
    assert res["stat"] == pytest.approx(_dm_by_hand(list(d1), list(d2), 1), rel=1e-12)


def test_diebold_mariano_tells_a_real_difference_from_noise():
    rng = np.random.default_rng(1)
    n = 600
    base = rng.normal(size=n)
    better = 0.8 * base + 0.1 * rng.normal(size=n)      # clearly smaller errors
    assert baselines.diebold_mariano(better, base)["p"] < 1e-6
    ps = [baselines.diebold_mariano(rng.normal(size=n), rng.normal(size=n))["p"] for _ in range(200)]
    assert 0.01 < np.mean(np.array(ps) < 0.05) < 0.12    # size close to the nominal 5%
    # identical errors: no variance, no verdict
    assert math.isnan(baselines.diebold_mariano(base, base)["p"])


def test_diebold_mariano_hac_widens_for_overlapping_errors():
    # h-step forecasts overlap: a moving sum of shocks makes d autocorrelated, and the HAC
    # variance (lag h-1) is larger than the naive one, so |DM| shrinks
    rng = np.random.default_rng(2)
    shocks = rng.normal(size=(800 + 4, 2))
    e = np.stack([np.convolve(shocks[:, k], np.ones(5), "valid") for k in range(2)], 1)
    base = e[:, 1]
    model = e[:, 0] * 0.97
    s1 = baselines.diebold_mariano(model, base, horizon=1)["stat"]
    s5 = baselines.diebold_mariano(model, base, horizon=5)["stat"]
    assert abs(s5) < abs(s1)


# ------------------------------------------------------------------ adaptive conformal


def _hetero(n_cal=500, n=2000, seed=0):
    """Validation residuals at sigma 1, then a sequence whose noise doubles, then calms."""
    rng = np.random.default_rng(seed)
    cal = rng.normal(size=(n_cal, 2))
    res = {"n": n_cal, "units": "log", "high": sorted(cal[:, 0]), "low": sorted(cal[:, 1])}
    sigma = np.where(np.arange(n) < n // 2, 2.0, 0.6)
    pred = np.zeros((n, 2))
    y = rng.normal(size=(n, 2)) * sigma[:, None]
    return res, pred, y, np.ones(n)


def _covered(iv, y, close):
    ah, al = close * np.exp(y[:, 0]), close * np.exp(y[:, 1])
    return (ah >= iv["high_lo"]) & (ah <= iv["high_hi"]), (al >= iv["low_lo"]) & (al <= iv["low_hi"])


def test_adaptive_conformal_tracks_the_target_where_split_conformal_does_not():
    res, pred, y, close = _hetero()
    static = baselines.intervals(pred, close, res, 0.8)
    aci, final = baselines.adaptive_intervals(pred, y, close, res, 0.8, gamma=0.01)
    cs = np.mean(_covered(static, y, close))
    ca = np.mean(_covered(aci, y, close))
    assert abs(ca - 0.8) < abs(cs - 0.8)
    assert abs(ca - 0.8) < 0.03
    # and in each regime separately (the first half needs wider, the second narrower intervals)
    half = len(y) // 2
    for part in (slice(0, half), slice(half, None)):
        hit_s = np.mean([c[part] for c in _covered(static, y, close)])
        hit_a = np.mean([c[part] for c in _covered(aci, y, close)])
        assert abs(hit_a - 0.8) < abs(hit_s - 0.8)
    assert set(final) == {"alpha_high", "alpha_low"}


def test_adaptive_conformal_without_updates_is_split_conformal():
    res, pred, y, close = _hetero(n=300)
    static = baselines.intervals(pred, close, res, 0.8)
    aci, _ = baselines.adaptive_intervals(pred, y, close, res, 0.8, gamma=0.0)
    for k in static:
        np.testing.assert_allclose(aci[k], static[k])
    frozen, _ = baselines.adaptive_intervals(pred, y, close, res, 0.8, gamma=0.05, update=np.zeros(len(y), bool))
    for k in static:
        np.testing.assert_allclose(frozen[k], static[k])


@pytest.mark.parametrize("h", [1, 3])
def test_adaptive_interval_of_row_t_ignores_its_own_and_later_outcomes(h):
    res, pred, y, close = _hetero(n=400, seed=3)
    scale = np.linspace(0.5, 2.0, len(y))
    res = dict(res, units="scale")
    base, _ = baselines.adaptive_intervals(pred, y, close, res, 0.8, scale=scale, horizon=h, gamma=0.05)
    rng = np.random.default_rng(9)
    for t in (0, 5, 150, 399):
        y2 = y.copy()
        y2[max(0, t - h + 1):] = rng.normal(size=y2[max(0, t - h + 1):].shape) * 10  # outcomes not yet known at t
        pred2 = pred.copy()
        pred2[t + 1:] += 1.0                                                          # later forecasts
        alt, _ = baselines.adaptive_intervals(pred2, y2, close, res, 0.8, scale=scale, horizon=h, gamma=0.05)
        for k in base:
            np.testing.assert_array_equal(alt[k][: t + 1], base[k][: t + 1])
    # an outcome known by row t does change row t's interval (the test above is not vacuous)
    y3 = y.copy()
    y3[100 - h] = 50.0
    alt, _ = baselines.adaptive_intervals(pred, y3, close, res, 0.8, scale=scale, horizon=h, gamma=0.05)
    assert not np.array_equal(alt["high_lo"][100], base["high_lo"][100])


def test_adaptive_conformal_waits_for_outcomes_across_gaps_in_the_rows():
    # rows with end days 0, 1, 5, 6: with h=3 the row at day 5 may use days 0 and 1 only
    res, pred, y, close = _hetero(n=4)
    end = np.array([0, 1, 5, 6])
    y = np.full((4, 2), 30.0)  # every outcome a miss
    iv, _ = baselines.adaptive_intervals(pred, y, close, res, 0.8, end=end, horizon=3, gamma=0.05)
    static = baselines.intervals(pred, close, res, 0.8)
    assert iv["high_hi"][1] == static["high_hi"][1]          # day 1: nothing known yet
    assert iv["high_hi"][2] > iv["high_hi"][1]               # day 5: two misses known, wider
    assert iv["high_hi"][3] == iv["high_hi"][2]              # day 6: day 5's outcome not yet known
