"""Interval quality (issue 27): Winkler score, pinball loss, joint coverage and coverage by
volatility third, each on hand-made arrays with known answers; the thirds' edges come from
the training rows, never the scored ones."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from helpers import synthetic_ohlcv
from finhrm_cli import config, data
from finhrm_cli.forecast import baselines, intervals_quality as iq
from finhrm_cli.forecast.parts import train_scale
from finhrm_cli.forecast.scoring import score_parts


def test_winkler_is_width_plus_the_penalty_outside():
    lo, hi = np.array([10.0, 10.0, 10.0]), np.array([12.0, 12.0, 12.0])
    y = np.array([11.0, 9.0, 13.5])  # inside; 1 below; 1.5 above
    alpha = 0.2  # 2/alpha = 10
    # widths 2 each; penalties 0, 10 * 1, 10 * 1.5
    assert iq.winkler(lo, hi, y, alpha) == pytest.approx((2 + 12 + 17) / 3)
    assert iq.winkler(lo, hi, np.array([10.0]) * 0 + 10.0, alpha) == pytest.approx(2.0)  # on the edge: inside


def test_pinball_loss_weighs_each_side_by_its_level():
    q = np.array([10.0, 10.0])
    y = np.array([12.0, 7.0])
    # tau 0.1: above by 2 -> 0.1 * 2 = 0.2; below by 3 -> 0.9 * 3 = 2.7
    assert iq.pinball(q, y, 0.1) == pytest.approx((0.2 + 2.7) / 2)
    # tau 0.9: 0.9 * 2 = 1.8; 0.1 * 3 = 0.3
    assert iq.pinball(q, y, 0.9) == pytest.approx((1.8 + 0.3) / 2)


def _iv():
    return {"high_lo": np.array([10.0, 10.0, 10.0, 10.0]), "high_hi": np.array([12.0, 12.0, 12.0, 12.0]),
            "low_lo": np.array([8.0, 8.0, 8.0, 8.0]), "low_hi": np.array([9.0, 9.0, 9.0, 9.0])}


def test_quality_gives_joint_coverage_pinball_and_winkler_per_side():
    ah = np.array([11.0, 11.0, 13.0, 11.0])  # row 2's high above its interval by 1
    al = np.array([8.5, 7.0, 8.5, 8.5])      # row 1's low below its interval by 1
    q = iq.quality(_iv(), ah, al, coverage=0.8)
    assert q["joint_coverage"] == pytest.approx(0.5)  # rows 0 and 3 only
    assert q["winkler_high"] == pytest.approx((2 * 4 + 10) / 4)
    assert q["winkler_low"] == pytest.approx((1 * 4 + 10) / 4)
    assert q["winkler"] == pytest.approx((q["winkler_high"] + q["winkler_low"]) / 2)
    lo_h, hi_h = iq.pinball(_iv()["high_lo"], ah, 0.1), iq.pinball(_iv()["high_hi"], ah, 0.9)
    assert q["pinball_high"] == pytest.approx((lo_h + hi_h) / 2)
    assert q["pinball"] == pytest.approx((q["pinball_high"] + q["pinball_low"]) / 2)
    assert "coverage_by_volatility" not in q


def test_thirds_take_their_edges_from_other_rows():
    train = np.arange(1.0, 10.0)  # 1..9: edges at the 1/3 and 2/3 quantiles, 11/3 and 19/3
    edges = iq.volatility_edges(train)
    assert edges == pytest.approx((11 / 3, 19 / 3))
    scored = np.array([0.5, 3.0, 5.0, 100.0])  # calm, calm, mid, wild by the training edges
    third = iq.thirds(scored, edges)
    assert third.tolist() == [1, 1, 2, 3]
    ah = np.array([11.0, 13.0, 11.0, 11.0])  # row 1 misses its high
    al = np.array([8.5, 8.5, 7.0, 8.5])      # row 2 misses its low
    by = iq.quality(_iv(), ah, al, 0.8, third)["coverage_by_volatility"]
    assert [t["third"] for t in by] == [1, 2, 3] and [t["rows"] for t in by] == [2, 1, 1]
    assert by[0]["coverage"] == pytest.approx((0.5 + 1.0) / 2) and by[0]["joint_coverage"] == pytest.approx(0.5)
    assert by[1]["coverage"] == pytest.approx(0.5) and by[1]["coverage_low"] == 0.0
    assert by[2]["coverage"] == pytest.approx(1.0)


def test_an_empty_third_says_so():
    by = iq.quality(_iv(), np.full(4, 11.0), np.full(4, 8.5), 0.8, np.array([1, 1, 3, 3]))["coverage_by_volatility"]
    assert by[1] == {"third": 2, "rows": 0, "coverage": None, "coverage_high": None, "coverage_low": None,
                     "joint_coverage": None}


def _part():
    bars = pl.DataFrame({k: (pl.Series(k, v).cast(pl.Date) if k == "date" else np.asarray(v, float))
                         for k, v in synthetic_ohlcv(400, 5).items()})
    ds = data.from_bars(bars, config.FeatureConfig(feature_set="hrm18", seq_len=5, horizon=1, volume_window=10))
    w = ds.windows("test")
    rng = np.random.default_rng(0)
    pred = rng.normal(0, 0.01, (len(w), 2))
    conformal = baselines.conformal_residuals(rng.normal(0, 0.01, (300, 2)), rng.normal(0, 0.01, (300, 2)),
                                              scale=np.ones(300))
    return ds, w, pred, conformal


def test_edges_come_from_the_training_rows_not_the_scored_ones():
    ds, w, pred, conformal = _part()
    ts = train_scale(ds)
    assert np.array_equal(ts, ds.windows("train").scale)
    first = score_parts([(ds, w)], [pred], conformal, 0.8, "split", train_scales=[ts])
    assert first["volatility_edges"] == pytest.approx(list(iq.volatility_edges(ts)))
    by = first["results"]["finhrm"]["coverage_by_volatility"]
    assert sum(t["rows"] for t in by) == first["rows"]
    # the scored rows grow ten times wilder: the edges stay, and every row is now in the wild third
    wild = w.subset(np.arange(len(w)))
    wild.scale[:] = w.scale * 10 + 1.0
    second = score_parts([(ds, wild)], [pred], conformal, 0.8, "split", train_scales=[train_scale(ds)])
    assert second["volatility_edges"] == first["volatility_edges"]
    rows = [t["rows"] for t in second["results"]["finhrm"]["coverage_by_volatility"]]
    assert rows == [0, 0, second["rows"]]
    for key in ("winkler", "pinball_high", "pinball_low", "joint_coverage"):
        assert np.isfinite(first["results"]["finhrm"][key])


def test_the_winkler_score_is_the_two_ends_pinball_losses_scaled():
    """A known identity, a check on both formulas: IS_alpha = (2/alpha) * (pinball at alpha/2
    of lo + pinball at 1 - alpha/2 of hi)."""
    rng = np.random.default_rng(1)
    lo = rng.normal(0, 1, 500)
    hi = lo + rng.uniform(0, 2, 500)
    y = rng.normal(0, 1.5, 500)
    alpha = 0.2
    both = iq.pinball(lo, y, alpha / 2) + iq.pinball(hi, y, 1 - alpha / 2)
    assert iq.winkler(lo, hi, y, alpha) == pytest.approx(2 / alpha * both)
