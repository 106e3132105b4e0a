"""Intervals in every volatility regime (issue 27): the adaptive level per volatility third,
Mondrian residuals, the width model, the conformalized anchor (CQR on linear quantile
regression) and the quantiles of ``predict --quantiles``."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from helpers import synthetic_ohlcv
from finhrm_cli import config, data
from finhrm_cli.forecast import anchor, baselines, conformal, linear, quantiles
from finhrm_cli.forecast.forecaster import residuals
from finhrm_cli.forecast.parts import of, train_scale
from finhrm_cli.forecast.scoring import interval_arrays


def _regimes(n: int, seed: int, power: float = 0.5):
    """Rows whose volatility scale takes three levels and whose errors grow as scale**power:
    with power < 1 the residuals in units of the scale are wider on calm days."""
    rng = np.random.default_rng(seed)
    s = rng.choice([0.005, 0.01, 0.03], n)
    r = rng.standard_normal((n, 2)) * (s ** power)[:, None] * 0.1
    return s, r


def _conf(s, r, train_s, **kw):
    p = np.zeros_like(r)
    conf = baselines.conformal_residuals(p, r, s)
    conf["by_volatility"] = conformal.residual_bins(p, r, s, np.full(len(s), "x"), {"x": train_s}, **kw)
    return conf


def _coverage_by_third(conf, s, r, per_third, gamma):
    bv = {**conf["by_volatility"], "per_third": per_third, "gamma": gamma}
    bv.pop("decay", None)  # a constant step
    close = np.ones(len(s))
    iv = conformal.binned_intervals(np.zeros_like(r), r, close, bv, 0.8, s, "x", True)
    y = np.exp(r[:, 0])
    inside = (y >= iv["high_lo"]) & (y <= iv["high_hi"])
    third = conformal.row_thirds(bv, s, "x")
    return np.array([inside[third == k].mean() for k in range(3)])


def test_one_list_one_level_is_the_old_adaptive_interval_exactly():
    s, r = _regimes(600, 0)
    conf = _conf(s[:300], r[:300], s[:300], gamma=0.005, per_third=False, decay=None)
    p = np.random.default_rng(1).normal(0, 0.001, (300, 2))
    y = p + r[300:]
    close = np.full(300, 50.0)
    old, _ = baselines.adaptive_intervals(p, y, close, conf, 0.8, s[300:])
    new = conformal.binned_intervals(p, y, close, conf["by_volatility"], 0.8, s[300:], "x", True)
    for k in old:
        assert np.allclose(old[k], new[k], rtol=0, atol=0)


def test_a_level_per_third_evens_coverage_across_regimes():
    """Errors that grow more slowly than the scale: one level over-covers the wild third and
    under-covers the calm one; a level per third brings each near 80%."""
    s_cal, r_cal = _regimes(600, 2)
    s, r = _regimes(6000, 3)
    conf = _conf(s_cal, r_cal, s_cal)
    shared = _coverage_by_third(conf, s, r, False, 0.005)
    each = _coverage_by_third(conf, s, r, True, 0.02)
    assert shared.max() - shared.min() > 0.15  # the issue, reproduced
    assert each.max() - each.min() < 0.04
    assert np.all(np.abs(each - 0.8) < 0.03)


def test_no_interval_reads_its_own_or_a_later_outcome():
    s, r = _regimes(400, 4)
    conf = _conf(s[:200], r[:200], s[:200])
    p = np.zeros((200, 2))
    close = np.ones(200)
    base = conformal.binned_intervals(p, r[200:], close, conf["by_volatility"], 0.8, s[200:], "x", True)
    t = 120
    changed = r[200:].copy()
    changed[t:] = 5.0  # row t's own outcome and every later one
    moved = conformal.binned_intervals(p, changed, close, conf["by_volatility"], 0.8, s[200:], "x", True)
    for k in base:
        assert np.array_equal(base[k][: t + 1], moved[k][: t + 1])


def test_the_thirds_edges_come_from_the_training_rows():
    s, r = _regimes(300, 5)
    train = np.linspace(0.001, 0.1, 99)
    bv = conformal.residual_bins(np.zeros_like(r), r, s, np.full(300, "x"), {"x": train})
    assert bv["edges"]["x"] == pytest.approx(list(np.quantile(train, [1 / 3, 2 / 3])))
    bv2 = conformal.residual_bins(np.zeros_like(r), r, s * 7, np.full(300, "x"), {"x": train})
    assert bv2["edges"] == bv["edges"]  # the validation rows' scale never moves them
    assert conformal.row_thirds(bv, [0.0, 0.05, 1.0], "unseen").tolist() == [0, 1, 2]  # "*" for a new series


def test_mondrian_residuals_keep_a_list_per_third_and_fall_back_when_few():
    s, r = _regimes(300, 6)
    s[:] = 0.005
    s[:20] = 0.03  # the wild third has 20 rows, fewer than MIN_BIN
    bv = conformal.residual_bins(np.zeros_like(r), r, s, np.full(300, "x"), {"x": np.array([0.004, 0.01, 0.02])},
                                 mondrian=True)
    assert len(bv["high"]) == 3
    assert len(bv["high"][0]) == 280 and len(bv["high"][2]) == 300  # pooled fallback


def test_the_width_model_recovers_the_exponent():
    rng = np.random.default_rng(7)
    s = np.exp(rng.uniform(np.log(0.003), np.log(0.05), 4000))
    r = rng.standard_normal(4000) * s ** 0.6
    assert conformal.width_beta(r, s) == pytest.approx(0.6, abs=0.05)
    assert conformal.width_beta(r[:5], s[:5]) == 1.0  # too few rows: the old scaling


def test_quantile_regression_puts_tau_of_the_rows_below():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3000, 3))
    y = x @ np.array([0.5, -0.2, 0.1]) + rng.standard_normal(3000) * (1 + 0.5 * np.abs(x[:, 0]))
    for tau in (0.1, 0.5, 0.9):
        w = linear.fit_quantile(x, y, tau, ridge=0.0)
        below = float(np.mean(y < linear.design(x) @ w))
        assert below == pytest.approx(tau, abs=0.02)
    assert np.array_equal(linear.fit_median(x, y), linear.fit_quantile(x, y, 0.5))


def _dataset(n=700, seed=5, tail_factor: float | None = None):
    """A synthetic series; ``tail_factor`` multiplies the highs of its last 10% (test) rows."""
    bars = {k: (np.asarray(v) if k == "date" else np.asarray(v, float)) for k, v in synthetic_ohlcv(n, seed).items()}
    if tail_factor is not None:
        bars["high"][int(0.9 * n):] *= tail_factor
    frame = pl.DataFrame({k: (pl.Series(k, v).cast(pl.Date) if k == "date" else v) for k, v in bars.items()})
    return data.from_bars(frame, config.FeatureConfig(feature_set="hrm18", seq_len=5, horizon=1, volume_window=10))


def test_the_anchor_reads_no_test_row():
    ds = _dataset()
    model = anchor.fit(of([ds], "train"), of([ds], "val"), 0.8)
    changed = _dataset(tail_factor=1.05)  # the test period's highs changed, all else equal
    assert changed.window_ends("val").tolist() == ds.window_ends("val").tolist()
    assert not np.array_equal(changed.windows("test").y, ds.windows("test").y)
    assert anchor.fit(of([changed], "all"), of([changed], "val"), 0.8)["coef"] != model["coef"]  # it would show
    again = anchor.fit(of([changed], "train"), of([changed], "val"), 0.8)
    assert again["coef"] == model["coef"]
    assert np.array_equal(again["scores"]["high"], model["scores"]["high"])
    te = ds.windows("test")
    point, iv = anchor.forecast(model, ds, te)
    assert point.shape == (len(te), 2)
    assert np.all(iv["high_lo"] <= iv["high_hi"]) and np.all(iv["low_lo"] <= iv["low_hi"])


def test_the_anchor_covers_about_what_it_claims_out_of_sample():
    ds = _dataset(1500, 9)
    model = anchor.fit(of([ds], "train"), of([ds], "val"), 0.8)
    te = ds.windows("test")
    _, iv = anchor.forecast(model, ds, te, adaptive=False)
    cov = np.mean((te.next_high >= iv["high_lo"]) & (te.next_high <= iv["high_hi"]))
    assert 0.65 < cov < 0.95


def _run_like(ds):
    """A ds with predictions and a run's residuals built the way Forecaster.finish builds them."""
    va = of([ds], "val")
    rng = np.random.default_rng(11)
    pred_va = [w.y + rng.normal(0, 0.002, w.y.shape) for _, w in va]
    return residuals([ds], va, pred_va)


def test_new_runs_store_the_per_third_intervals_and_old_runs_keep_theirs():
    ds = _dataset()
    conf = _run_like(ds)
    assert conf["by_volatility"]["per_third"] is True
    assert conf["by_volatility"]["edges"][ds.source.name] == pytest.approx(
        list(np.quantile(train_scale(ds), [1 / 3, 2 / 3])))
    te = ds.windows("test")
    pred = np.zeros((len(te), 2))
    old = {k: v for k, v in conf.items() if k != "by_volatility"}  # a run made before issue 27
    y = np.log(np.stack([te.next_high, te.next_low], axis=1) / te.close[:, None])
    want, _ = baselines.adaptive_intervals(pred, y, te.close, old, 0.8, te.scale, end=te.end)
    got = interval_arrays(ds, te, pred, old, 0.8, "adaptive")
    for k in want:
        assert np.array_equal(want[k], got[k])
    assert not np.array_equal(interval_arrays(ds, te, pred, conf, 0.8, "adaptive")["high_hi"], got["high_hi"])


@pytest.mark.parametrize("seed", range(20))
def test_quantiles_never_cross_and_keep_low_below_high(seed):
    rng = np.random.default_rng(seed)
    n, levels = 50, sorted(rng.uniform(0.01, 0.99, rng.integers(1, 8)).tolist())
    high = rng.normal(100, 5, (n, len(levels)))  # deliberately unordered, crossing input
    low = rng.normal(101, 5, (n, len(levels)))
    q = quantiles.arrange(high, low)
    assert np.all(np.diff(q["high"], axis=1) >= 0) and np.all(np.diff(q["low"], axis=1) >= 0)
    assert np.all(q["low"] <= q["high"])


def test_quantiles_of_a_run_are_monotone_and_cover_their_pairs():
    ds = _dataset(900, 3)
    conf = _run_like(ds)
    w = ds.windows("test")
    rng = np.random.default_rng(2)
    pred = w.y + rng.normal(0, 0.003, w.y.shape)
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    for method in ("adaptive", "split"):
        q = quantiles.quantiles(ds, w, pred, conf, levels, method)
        assert np.all(np.diff(q["high"], axis=1) >= 0) and np.all(np.diff(q["low"], axis=1) >= 0)
        assert np.all(q["low"] <= q["high"])
    cov = quantiles.pair_coverage(q, levels, w.next_high, w.next_low)
    assert [(c["lower"], c["upper"]) for c in cov] == [(0.05, 0.95), (0.25, 0.75)]
    for c in cov:
        assert c["joint_coverage"] <= min(c["coverage_high"], c["coverage_low"])
    assert cov[0]["coverage_high"] >= cov[1]["coverage_high"]  # the wider pair covers more


@pytest.mark.parametrize("text,message", [("0", "between 0 and 1"), ("1.2", "between 0 and 1"),
                                          ("abc", "not a number"), ("", "no level"), ("nan", "between 0 and 1")])
def test_bad_levels_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        quantiles.parse(text)


def test_levels_are_sorted_and_deduplicated():
    assert quantiles.parse("0.9, 0.1,0.5,0.1") == [0.1, 0.5, 0.9]


def test_a_run_of_misses_never_gives_an_unbounded_interval():
    """The adaptive level can fall below zero after many misses; the per-third intervals then
    use the residuals' extremes (a trader cannot place an order at infinity) and keep learning."""
    s, r = _regimes(300, 12)
    conf = _conf(s, r * 0.01, s)  # residuals far too small for what follows
    y = np.full((200, 2), 0.5)
    iv = conformal.binned_intervals(np.zeros((200, 2)), y, np.ones(200), conf["by_volatility"], 0.8,
                                    np.full(200, 0.01), "x", True)
    assert all(np.all(np.isfinite(v)) for v in iv.values())
    assert iv["high_hi"][-1] > iv["high_hi"][0]  # widened to the extreme residual


def test_the_feature_width_model_widens_where_errors_are_larger():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2000, 3))
    y = rng.standard_normal((2000, 2)) * np.exp(0.5 * x[:, :1])  # errors grow with the first input
    model = conformal.fit_width(x, y)
    wd = conformal.width_of(model, np.array([[-2.0, 0, 0], [0, 0, 0], [2.0, 0, 0]]))
    assert np.all(np.diff(wd, axis=0) > 0)
    assert np.all((wd >= conformal.WIDTH_CLIP[0]) & (wd <= conformal.WIDTH_CLIP[1]))


def test_a_stored_width_model_shapes_the_intervals_of_a_run():
    ds = _dataset()
    va = of([ds], "val")
    pred_va = [w.y * 0.9 for _, w in va]
    plain = residuals([ds], va, pred_va)
    wide = residuals([ds], va, pred_va, width_model=True)
    assert "width_model" in wide["by_volatility"] and "width_model" not in plain["by_volatility"]
    w = ds.windows("test")
    a = interval_arrays(ds, w, np.zeros((len(w), 2)), plain, 0.8, "split")
    b = interval_arrays(ds, w, np.zeros((len(w), 2)), wide, 0.8, "split")
    assert not np.allclose(a["high_hi"], b["high_hi"])


def test_evaluate_says_whether_the_intervals_adapt_per_third():
    from finhrm_cli.forecast.scoring import score_parts

    ds = _dataset()
    conf = _run_like(ds)
    w = ds.windows("test")
    pred = np.zeros((len(w), 2))
    old = {k: v for k, v in conf.items() if k != "by_volatility"}
    assert score_parts([(ds, w)], [pred], conf, 0.8)["intervals_per_third"] is True
    assert score_parts([(ds, w)], [pred], old, 0.8)["intervals_per_third"] is False


def _run_with_heads(ds):
    """A run's residuals with residual heads, fit on training forecasts as Forecaster.finish does."""
    rng = np.random.default_rng(11)
    tr, va = of([ds], "train"), of([ds], "val")
    pred = [[w.y + rng.normal(0, 0.002, w.y.shape) for _, w in parts] for parts in (tr, va)]
    return residuals([ds], va, pred[1], tr, pred[0])


def test_residual_heads_widen_where_the_residuals_are_larger():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((3000, 3))
    r = rng.standard_normal((3000, 2)) * np.exp(0.5 * x[:, :1])  # residuals grow with the first input
    heads = conformal.fit_heads(x, r, 0.8)
    q = conformal.heads_of(heads, np.array([[-2.0, 0, 0], [0, 0, 0], [2.0, 0, 0]]))
    width = q[:, :, 1] - q[:, :, 0]
    assert np.all(q[:, :, 0] <= q[:, :, 1]) and np.all(np.diff(width, axis=0) > 0)


def test_heads_with_the_forecast_trust_it_as_far_as_it_informs():
    """Outcomes = signal + noise.  A forecast that carries the signal moves the heads'
    interval with it (its coefficient near 1); one that is noise leaves the interval where the
    inputs put it (near 0), so the heads fall back to quantile regression on the inputs."""
    rng = np.random.default_rng(21)
    n = 3000
    x = rng.standard_normal((n, 3))
    signal = rng.standard_normal((n, 2))
    y = signal + 0.5 * rng.standard_normal((n, 2))
    for forecast, moves in ((signal, True), (rng.standard_normal((n, 2)), False)):
        heads = conformal.fit_heads(x, y - forecast, 0.8, forecast_units=forecast)
        probe = np.zeros((2, 3))
        f = np.array([[-1.0, -1.0], [1.0, 1.0]])
        q = conformal.heads_of(heads, probe, f) + f[:, :, None]  # the outcome's quantiles
        shift = (q[1].mean(axis=1) - q[0].mean(axis=1)) / 2  # per target: how far the interval moves per unit of forecast
        assert np.all(shift > 0.8) if moves else np.all(np.abs(shift) < 0.1), shift


def test_new_runs_store_residual_heads_that_shape_their_intervals():
    ds = _dataset(900, 3)
    conf = _run_with_heads(ds)
    bv = conf["by_volatility"]
    n_coef = ds.windows("train").x.shape[-1] + 2  # the inputs, the forecast and the intercept
    assert [len(c) for k in ("high", "low") for c in bv["heads"][k]] == [n_coef] * 4
    assert all(bv["heads"]["forecast"][k][1] > 0 for k in ("high", "low"))
    assert bv["gamma"] == conformal.DEFAULT["gamma"] and len(bv["high"]) == 1
    w = ds.windows("test")
    pred = np.zeros((len(w), 2))
    plain = {**conf, "by_volatility": {k: v for k, v in bv.items() if k != "heads"}}
    a = interval_arrays(ds, w, pred, conf, 0.8, "adaptive")
    b = interval_arrays(ds, w, pred, plain, 0.8, "adaptive")
    assert not np.allclose(a["high_hi"], b["high_hi"])
    assert all(np.all(np.isfinite(v)) for v in a.values())
    assert np.all(a["high_lo"] <= a["high_hi"]) and np.all(a["low_lo"] <= a["low_hi"])
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    for method in ("adaptive", "split"):
        q = quantiles.quantiles(ds, w, pred, conf, levels, method)
        assert np.all(np.diff(q["high"], axis=1) >= 0) and np.all(np.diff(q["low"], axis=1) >= 0)
        assert np.all(q["low"] <= q["high"])
        assert np.array_equal(q["high"][:, 2], w.close * np.exp(pred[:, 0]))  # the forecast stays the median


def test_without_training_forecasts_no_heads_are_stored():
    ds = _dataset()
    va = of([ds], "val")
    conf = residuals([ds], va, [w.y * 0.9 for _, w in va])
    assert "heads" not in conf["by_volatility"]


def test_the_cqr_offsets_stay_bounded_and_follow_the_level():
    sc = np.sort(np.random.default_rng(3).normal(0, 1, 99))
    assert conformal.cqr_offsets(sc, -0.5) == (-sc[-1], sc[-1])  # a level below any: the largest score
    assert conformal.cqr_offsets(sc, 0.1)[1] > conformal.cqr_offsets(sc, 0.5)[1]
    assert anchor.cqr_offsets is conformal.cqr_offsets


def test_decaying_steps_follow_their_schedule():
    """Every row misses (the outcome is far outside): the level's k-th update moves it by
    ``max(gamma_min, gamma / sqrt(1 + k / decay))`` times (target - 1)."""
    n, target = 60, 0.2
    y = np.full(n, 10.0)
    const = conformal.aci(np.zeros(n), np.zeros(n), y, np.ones(n), lambda a, g: (-0.1, 0.1), np.zeros(n), target,
                          gamma=0.05)[2][0]
    decayed = conformal.aci(np.zeros(n), np.zeros(n), y, np.ones(n), lambda a, g: (-0.1, 0.1), np.zeros(n), target,
                            gamma=0.05, decay=10.0, gamma_min=0.02)[2][0]
    steps = [max(0.02, 0.05 / np.sqrt(1 + k / 10.0)) for k in range(n - 1)]  # the last row's outcome comes later
    assert const == pytest.approx(target + (n - 1) * 0.05 * (target - 1))
    assert decayed == pytest.approx(target + sum(steps) * (target - 1))
    assert min(steps) == 0.02 and steps[0] == 0.05


def test_decaying_steps_settle_where_a_constant_step_jitters():
    """On a stationary stream both cover about 80%, and the decayed level's interval width
    varies less over the later rows (the jitter that costs interval score)."""
    rng = np.random.default_rng(5)
    n = 2000
    y = rng.standard_normal(n)
    sc = np.sort(np.abs(rng.standard_normal(400)))  # CQR scores of a zero-width centre

    def run(**kw):
        lo, hi, _ = conformal.aci(np.zeros(n), np.zeros(n), y, np.ones(n), lambda a, g: conformal.cqr_offsets(sc, a),
                                  np.zeros(n), 0.2, gamma=0.05, **kw)
        return lo, hi, np.mean((y >= lo) & (y <= hi))

    lo_c, hi_c, cov_c = run()
    lo_d, hi_d, cov_d = run(decay=25.0, gamma_min=0.01)
    assert abs(cov_c - 0.8) < 0.03 and abs(cov_d - 0.8) < 0.03
    assert np.std((hi_d - lo_d)[n // 2:]) < 0.6 * np.std((hi_c - lo_c)[n // 2:])


def test_new_runs_store_the_step_schedule_and_old_ones_keep_a_constant_step():
    s, r = _regimes(600, 9)
    new = _conf(s, r, s)["by_volatility"]
    assert (new["gamma"], new["decay"], new["gamma_min"]) == tuple(conformal.DEFAULT[k] for k in
                                                                   ("gamma", "decay", "gamma_min"))
    assert "decay" not in _conf(s, r, s, decay=None)["by_volatility"]


def test_describe_says_how_old_and_new_runs_make_their_intervals():
    s, r = _regimes(600, 9)
    new = conformal.describe(_conf(s, r, s))
    assert new["per_third"] is True and new["heads"] is None and sum(new["rows_by_third"]) == new["rows"] == 600
    assert (new["decay"], new["gamma_min"]) == (conformal.DEFAULT["decay"], conformal.DEFAULT["gamma_min"])
    old = conformal.describe(baselines.conformal_residuals(np.zeros_like(r), r, s))  # before issue 27
    assert old == {"rows": 600, "units": "scale", "per_third": False, "heads": None, "gamma": conformal.GAMMA}
    assert conformal.describe(None) is None
