"""ACT statistics on small known inputs: Brier, AUC via ranks, paired bootstrap, verdict."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from finhrm_cli.forecast import actstats


def test_brier_score():
    assert actstats.brier([1.0, 0.0, 0.5, 0.8], [1, 0, 1, 0]) == pytest.approx((0 + 0 + 0.25 + 0.64) / 4)
    assert actstats.brier([], []) is None


def test_auc_on_known_inputs():
    # the textbook case: 3 of the 4 positive-negative pairs are ordered right
    assert actstats.auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert actstats.auc([0.1, 0.2, 0.3], [0, 1, 1]) == 1.0
    assert actstats.auc([0.3, 0.2, 0.1], [0, 1, 1]) == 0.0
    assert actstats.auc([0.5] * 4, [0, 1, 0, 1]) == 0.5  # ties count one half
    assert actstats.auc([0.2, 0.7], [1, 1]) is None  # one class only


def test_auc_matches_counting_pairs_with_ties():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 6, 60) / 5.0  # many ties
    y = rng.random(60) < 0.4
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    assert actstats.auc(s, y) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_paired_bootstrap_on_known_inputs():
    base = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # a constant shift: every resample has the same mean difference
    iv = actstats.paired_bootstrap(np.stack([base, base + 0.5, base - 1.0]))
    assert iv[0] == (0.0, 0.0)
    assert iv[1] == pytest.approx((0.5, 0.5)) and iv[2] == pytest.approx((-1.0, -1.0))
    # one row of five differs by 10: the resampled mean is 2 * (times that row is drawn),
    # a Binomial(5, 0.2); P(0 draws) = 0.33 > 5 %, and the 95 % point falls on 3 draws
    cdf = np.cumsum([comb(5, k) * 0.2**k * 0.8 ** (5 - k) for k in range(6)])
    assert cdf[2] < 0.95 < cdf[3] and cdf[0] > 0.05
    lo, hi = actstats.paired_bootstrap(np.stack([base, base + [0, 0, 0, 0, 10]]), n_boot=20000)[1]
    assert (lo, hi) == (0.0, 6.0)
    # pairing: a big common row effect does not widen the interval of the difference
    noisy = np.random.default_rng(0).normal(0, 100, 400)
    lo, hi = actstats.paired_bootstrap(np.stack([noisy, noisy + 1.0]))[1]
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    # the fixed seed makes it reproducible
    e = np.random.default_rng(1).random((3, 50))
    assert actstats.paired_bootstrap(e) == actstats.paired_bootstrap(e)


def test_verdict():
    maes = [1.0, 0.9, 0.95]
    assert actstats.verdict([(0, 0), (-0.2, -0.05), (-0.1, 0.02)], maes) == actstats.HELP
    # the best later step's interval straddles 0: no measurable difference
    assert actstats.verdict([(0, 0), (-0.2, 0.01), (-0.3, -0.01)], maes) == actstats.SAME
    assert actstats.verdict([(0, 0), (0.01, 0.2), (0.02, 0.1)], [1.0, 1.1, 1.05]) == actstats.HURT
    assert actstats.verdict([(0, 0), (0.01, 0.2), (-0.01, 0.1)], [1.0, 1.1, 1.05]) == actstats.SAME
    assert actstats.verdict([(0, 0)], [1.0]) is None
    # significant but immaterial (under 0.1% of step 1's MAE): no measurable difference
    assert actstats.verdict([(0, 0), (-2e-5, -1e-7)], [0.52, 0.51999]) == actstats.SAME
    assert actstats.verdict([(0, 0), (1e-7, 2e-5)], [0.52, 0.52001]) == actstats.SAME
    assert actstats.verdict([(0, 0), (-2e-3, -1e-3)], [0.52, 0.5185]) == actstats.HELP


def test_segments_used_and_report():
    used = actstats.segments_used([1, 1, 2, 4], 4)
    assert used["segments_histogram"] == [2, 1, 0, 1]
    assert used["mean_segments"] == 2.0 and used["skippable_share"] == 0.5
    err = np.array([[1.0, 2.0, 3.0], [0.5, 2.0, 1.0]])
    p_halt = np.array([[0.9, 0.2, 0.1], [0.6, 0.6, 0.6]])
    p_cont = np.array([[0.1, 0.5, 0.5], [0.0, 0.0, 0.0]])
    reward = np.array([[1, 0, 0], [1, 0, 1]], bool)
    r = actstats.report(err, p_halt, p_cont, reward)
    assert r["halting_histogram"] == [1, 2] and r["mean_halting_step"] == pytest.approx(5 / 3)
    assert r["compute_saved"] == pytest.approx(1 - 5 / 6)
    assert r["mae_act"] == pytest.approx((1.0 + 2.0 + 1.0) / 3)  # row 0 at step 1, the others at step 2
    assert r["mae_act_change"] == pytest.approx(r["mae_act"] - 3.5 / 3)
    assert r["steps"][1]["mae_vs_step1"] == pytest.approx(-2.5 / 3)
    assert r["calibration"]["step1_p_halt"] == pytest.approx(0.4)
    assert r["calibration"]["brier"] == pytest.approx(np.mean((p_halt - reward) ** 2))
    assert r["steps"][0]["auc"] == 1.0 and r["best_step"] == 2


# ------------------------------------------------------------------ the Q head's calibration map


def _bernoulli(z, a, b, seed):
    rng = np.random.default_rng(seed)
    return rng.random(z.shape) < 1.0 / (1.0 + np.exp(-(a * z + b)))


@pytest.mark.parametrize("a,b", [(0.6, 0.4), (2.5, -1.0), (1.0, 0.0)])
def test_platt_fit_recovers_a_known_map(a, b):
    z = np.random.default_rng(1).normal(0.0, 1.5, (4, 50_000))  # segments x rows, pooled
    fa, fb = actstats.platt_fit(z, _bernoulli(z, a, b, 2))
    assert fa == pytest.approx(a, abs=0.03) and fb == pytest.approx(b, abs=0.03)


def test_platt_fit_shift_only_matches_the_base_rate():
    """Logits that carry the ranking but sit too low (the EMA case): the map moves the mean
    probability onto the observed rate, on the rows it was fit on."""
    z = np.random.default_rng(4).normal(-0.3, 0.4, 20_000)
    y = _bernoulli(z, 1.0, 0.5, 5)
    a, b = actstats.platt_fit(z, y)
    assert a > 0 and b == pytest.approx(0.5, abs=0.1)
    assert actstats.platt_apply(z, a, b).mean() == pytest.approx(y.mean(), abs=0.002)
    assert abs(actstats.platt_apply(z, 1.0, 0.0).mean() - y.mean()) > 0.1


def test_platt_fit_keeps_a_positive_and_stays_finite():
    lo, hi = actstats.HALT_CAL_A
    z = np.random.default_rng(6).normal(0.0, 1.0, 10_000)
    # the head ranks rows the wrong way round: a stays at its floor, b gives the base rate
    y = _bernoulli(z, -1.5, 0.3, 7)
    a, b = actstats.platt_fit(z, y)
    assert a == lo and actstats.platt_apply(z, a, b).mean() == pytest.approx(y.mean(), abs=0.002)
    # separable labels would send a to infinity: Platt's targets keep it finite, the bound holds
    a, b = actstats.platt_fit(z, z > 0)
    assert lo <= a <= hi and np.isfinite(b)
    # an untrained head (every logit the same) and one class only: finite, the base rate
    a, b = actstats.platt_fit(np.full(500, -5.0), np.arange(500) < 300)
    assert lo <= a <= hi and actstats.platt_apply([-5.0], a, b)[0] == pytest.approx(0.6, abs=0.01)
    a, b = actstats.platt_fit(np.linspace(-1, 1, 200), np.ones(200, bool))
    assert lo <= a <= hi and np.all(actstats.platt_apply(np.linspace(-1, 1, 200), a, b) > 0.9)
    assert actstats.platt_fit([], []) is None
    assert actstats.platt_fit([0.1, np.nan], [1, 0]) is None


@pytest.mark.parametrize("a,b", [(1.0, 0.0), (0.37, 0.24), (2.2, 0.12), (actstats.HALT_CAL_A[0], 5.0),
                                 (actstats.HALT_CAL_A[1], -actstats.HALT_CAL_B)])
def test_the_map_leaves_every_halting_decision_unchanged(a, b):
    """q_halt and q_continue go through the same increasing map, so the first segment where
    q_halt > q_continue does not move, even at the bounds of a and b (logits one float32
    step apart included)."""
    rng = np.random.default_rng(8)
    zh = rng.normal(0.0, 2.0, (4, 20_000)).astype(np.float32)
    zc = (zh + rng.normal(0.0, 0.5, zh.shape)).astype(np.float32)
    zc[:, :50] = np.nextafter(zh[:, :50], np.float32(np.inf))
    zc[:, 50:100] = np.nextafter(zh[:, 50:100], np.float32(-np.inf))
    raw = actstats.halt_steps(zh, zc)
    assert len(np.unique(raw)) == 4  # every step occurs
    mapped = lambda z: a * z.astype(np.float64) + b  # noqa: E731
    np.testing.assert_array_equal(actstats.halt_steps(mapped(zh), mapped(zc)), raw)
    if a <= 3:  # as probabilities too, while sigmoid(a * logit + b) does not round to 0 or 1
        sig = lambda z: 1.0 / (1.0 + np.exp(-z.astype(np.float64)))  # noqa: E731
        np.testing.assert_array_equal(actstats.halt_steps(sig(zh), sig(zc)), raw)
        np.testing.assert_array_equal(
            actstats.halt_steps(actstats.platt_apply(zh, a, b), actstats.platt_apply(zc, a, b)), raw)
    # (a steep map rounds large logits to P = 1.0 in float64, a tie: that is why inspect
    # takes where rows halt from the raw outputs, ``report(halt_step=...)``)


def test_report_takes_the_halting_steps_it_is_given():
    err = np.array([[1.0, 2.0], [0.5, 1.0]])
    p = np.full((2, 2), 0.5)  # ties everywhere: on its own, every row would run to the end
    reward = np.array([[1, 0], [1, 1]], bool)
    assert actstats.report(err, p, p, reward)["halting_histogram"] == [0, 2]
    r = actstats.report(err, p, p, reward, halt_step=np.array([0, 1]))
    assert r["halting_histogram"] == [1, 1] and r["mae_act"] == pytest.approx((1.0 + 1.0) / 2)


def test_halt_reward_is_the_training_definition():
    pred = np.array([[[0.1, -0.1], [1.0, 1.0]], [[0.0, 0.0], [0.2, 0.2]]])  # (M=2, n=2, 2)
    y = np.array([[0.0, 0.0], [0.0, 0.0]])
    # unit errors 0.1, 1.0 / 0.0, 0.2; divided by the head scale 2: 0.05, 0.5 / 0.0, 0.1
    np.testing.assert_array_equal(actstats.halt_reward(pred, y, 2.0, 0.1), [[True, False], [True, True]])
