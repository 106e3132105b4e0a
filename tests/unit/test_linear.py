"""The HRM's linear partner (finhrm_cli.forecast.linear): the median regression, the weight chosen on
validation, the blend arithmetic, and that neither reads a test row."""

from __future__ import annotations

import numpy as np
import pytest

from finhrm_cli import data
from finhrm_cli.train import step
from finhrm_cli.forecast import linear
from finhrm_cli.config import FeatureConfig, ModelConfig
from finhrm_cli.run.config import RunConfig
from finhrm_cli.data.dataset import Windows
from finhrm_cli.errors import UsageError
from finhrm_cli.forecast.forecaster import Forecaster
from helpers import SAMPLE_TV as SAMPLE



def test_median_regression_finds_the_conditional_median_not_the_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    noise = rng.exponential(1.0, 4000) - np.log(2.0)  # median 0, mean 1 - ln 2 = 0.31
    y = 1.0 + 2.0 * x[:, 0] - 0.5 * x[:, 1] + noise
    w = linear.fit_median(x, y, ridge=0.0)
    np.testing.assert_allclose(w, [1.0, 2.0, -0.5], atol=0.06)
    ols = np.linalg.lstsq(linear.design(x), y, rcond=None)[0]
    assert ols[0] > 1.25  # least squares aims at the mean: the test can tell them apart
    # a strong ridge pulls the slopes to zero, never the intercept
    w_r = linear.fit_median(x, y, ridge=1e7)
    assert np.abs(w_r[1:]).max() < 0.01 and abs(w_r[0] - np.median(y)) < 0.1


def _windows(n, rng, truth_units, scale=0.01, close=100.0):
    c = np.full(n, close)
    s = np.full(n, scale)
    nh = c * np.exp(truth_units[:, 0] * s)
    nl = c * np.exp(truth_units[:, 1] * s)
    z = np.zeros(n)
    return Windows(x=np.zeros((n, 1, 1), np.float32), y=np.zeros((n, 2), np.float32), end=np.arange(n),
                   dates=np.arange(n).astype("datetime64[D]"), close=c, high=c, low=c,
                   next_high=nh, next_low=nl, scale=s + z)


def test_weight_follows_the_better_forecast_on_validation_and_a_tie_keeps_the_hrm():
    rng = np.random.default_rng(1)
    truth = np.c_[rng.normal(1.0, 0.5, 300), rng.normal(-1.0, 0.5, 300)]
    w = _windows(300, rng, truth)
    noisy = truth + rng.normal(0, 0.8, truth.shape)
    # validation's best weight, then halfway to equal weights
    wt, rep = linear.choose_weight([truth], [noisy], [w])
    assert rep["best_weight"] == 1.0 and wt == 0.75 and rep["blend"] < rep["linear"]
    wt, rep = linear.choose_weight([noisy], [truth], [w])
    assert rep["best_weight"] == 0.0 and wt == 0.25 and rep["blend"] < rep["hrm"]
    assert linear.choose_weight([truth], [truth], [w])[1]["best_weight"] == 1.0  # tie: the HRM
    # two independent, equally noisy forecasts: the mix beats both
    other = truth + rng.normal(0, 0.8, truth.shape)
    wt, rep = linear.choose_weight([noisy], [other], [w])
    assert 0.2 <= rep["best_weight"] <= 0.8 and rep["blend"] < min(rep["hrm"], rep["linear"])
    assert wt == pytest.approx((rep["best_weight"] + 0.5) / 2)


def test_combine_is_the_weighted_mix_and_none_is_the_hrm():
    hrm = np.array([[1.0, -1.0], [2.0, -2.0]])
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    bl = {"hrm_weight": 0.25, "coef_high": [0.5, 1.0, 0.0], "coef_low": [-0.5, 0.0, 1.0]}
    lin = np.array([[1.5, -0.5], [0.5, 1.5]])
    np.testing.assert_allclose(linear.predict(bl, x), lin)
    np.testing.assert_allclose(linear.combine(bl, hrm, x), 0.25 * hrm + 0.75 * lin)
    assert linear.combine(None, hrm, x) is hrm
    assert linear.combine({**bl, "hrm_weight": 1.0}, hrm, x) is hrm


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("blend")
    lines = SAMPLE.read_text().splitlines(keepends=True)[:900]
    base_path = tmp / "base.csv"
    base_path.write_text("".join(lines))
    base = data.prepare(base_path, FeatureConfig())
    model = step.build_model(ModelConfig(n_features=len(base.feature_names), seq_len=10, d_model=32, n_heads=2,
                                           h_layers=1, l_layers=1, h_cycles=1, l_cycles=1, halt_max_steps=2), 3)
    model.set_target_stats(base.windows("train").y / base.windows("train").scale[:, None])
    return tmp, lines, base, model


def _moved(tmp, lines, rows, name):
    out = list(lines)
    for r in rows:  # the whole bar scaled alike: still a valid bar, other prices
        cells = out[1 + r].rstrip("\n").split(",")
        for c in (1, 2, 3, 4):
            cells[c] = f"{float(cells[c]) * 1.03:.4f}"
        out[1 + r] = ",".join(cells) + "\n"
    p = tmp / name
    p.write_text("".join(out))
    return data.prepare(p, FeatureConfig())


def test_blend_is_fit_on_training_and_validation_rows_only(runs):
    tmp, lines, base, model = runs
    bl = Forecaster(model).fit_blend([base])
    assert bl is not None and 0.0 <= bl["hrm_weight"] <= 1.0
    assert len(bl["coef_high"]) == len(base.feature_names) + 1
    assert bl["rows"] == len(base.windows("train"))
    n_rows = len(lines) - 1
    first_test = n_rows - base.splits["test"]["n_windows"] + 2  # a margin past the last val target
    later = _moved(tmp, lines, range(first_test, n_rows), "test_moved.csv")
    assert not np.allclose(later.windows("test").close, base.windows("test").close)
    assert Forecaster(model).fit_blend([later]) == bl
    # the check has teeth: moving training sessions moves the coefficients
    early = _moved(tmp, lines, range(200, 260), "train_moved.csv")
    assert Forecaster(model).fit_blend([early])["coef_high"] != bl["coef_high"]


@pytest.mark.parametrize("bad", [
    {"hrm_weight": 1.5}, {"hrm_weight": float("nan")}, {"hrm_weight": "1"}, {"coef_high": [0.0]},
    {"coef_low": [1e9, 0.0, 0.0]}, {"coef_low": "x"},
])
def test_a_crafted_blend_in_config_json_is_refused(bad, tmp_path):
    good = {"hrm_weight": 0.5, "coef_high": [0.0, 1.0, 2.0], "coef_low": [0.0, -1.0, 0.5]}
    cfg = {"model": {"n_features": 2}, "blend": good}
    RunConfig.from_dict(cfg, tmp_path / "config.json")
    with pytest.raises(UsageError, match="blend"):
        RunConfig.from_dict({**cfg, "blend": {**good, **bad}}, tmp_path / "config.json")


def test_a_mix_that_would_cross_is_rearranged():
    """The linear part can put its high below its low; the forecast never does."""
    hrm = np.array([[0.1, -0.1], [0.3, -0.2]])
    x = np.array([[0.0, 0.0], [0.0, 0.0]])
    bl = {"hrm_weight": 0.25, "coef_high": [-1.0, 0.0, 0.0], "coef_low": [1.0, 0.0, 0.0]}
    out = linear.combine(bl, hrm, x)
    mix = 0.25 * hrm + 0.75 * np.array([[-1.0, 1.0], [-1.0, 1.0]])
    assert (mix[:, 0] < mix[:, 1]).all()                  # the plain mix crosses
    np.testing.assert_allclose(out, mix[:, ::-1])         # the forecast swaps the two ends
    assert (out[:, 0] >= out[:, 1]).all()
