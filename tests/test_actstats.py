"""ACT statistics on small known inputs: Brier, AUC via ranks, paired bootstrap, verdict."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from finhrm_cli import actstats


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
