"""Numbers that must not contradict each other or mislead (issue 25, point 3)."""

from __future__ import annotations

import re

import pytest

from finhrm_cli.forecast.actstats import HELP, SAME
from finhrm_cli.ui import views


@pytest.mark.parametrize("w", [0.425, 0.575, 0.4249, 0.335, 0.5, 0.745, 0.255])
def test_blend_weights_visibly_add_to_one(w):
    a, b = (float(x) for x in re.findall(r"(\d\.\d\d) x ", views.blend_line({"hrm_weight": w})))
    assert a + b == pytest.approx(1.0) and a == pytest.approx(w, abs=0.0051)


def test_blend_line_says_what_its_validation_maes_are():
    bl = {"hrm_weight": 0.5, "val_mae": {"hrm": 1.0, "linear": 2.0, "blend": 1.5}}
    assert "; val MAE: HRM 1.0000" in views.blend_line(bl)
    assert "mean of the 3 series' own MAEs" in views.blend_line(bl, n_series=3)


def test_how_training_ended_is_said_in_words():
    assert views.stopped_text(1, 6, 6) == "best epoch 1 of 6 (ran all 6 epochs)"
    early = views.stopped_text(2, 4, 6)
    assert "stopped early after epoch 4" in early and "converged" not in early


def _act(verdict: str) -> dict:
    step = dict(mae=0.5192, q_halt=0.484, reward_rate=0.535, q_continue=0.402, halted=383, halted_share=1.0)
    steps = [dict(step=1, **step), dict(step=2, **{**step, "mae": 0.5191}, mae_vs_step1=-1e-4,
                                        mae_vs_step1_lo=-3e-4, mae_vs_step1_hi=1e-4)]
    return dict(on="validation split", samples=383, steps=steps, halting_histogram=[383, 0], calibration={},
                mean_halting_step=1.0, compute_saved=0.5, mae_all_steps=0.5191, mae_act=0.5192, mae_act_change=1e-4,
                best_step=2, best_step_measurable=verdict == HELP, verdict=verdict)


def test_no_best_step_beside_a_no_difference_verdict(screen):
    views.render_act(_act(SAME))
    text = screen.export_text()
    assert SAME in text and "best step" not in text
    views.render_act(_act(HELP))
    assert "best step by MAE" in screen.export_text()


def test_train_and_inspect_show_the_same_training_time(screen):
    views.render_train({"run": "r", "name": "r", "best_epoch": 2, "epochs_run": 3, "epochs_planned": 3,
                        "seconds": 185.8, "train_seconds": 161.6, "metrics": {}})
    text = screen.export_text()
    assert "161.6 s (185.8 s for the whole command" in text
    assert views.training_time(161.6) == "161.6 s"  # what inspect shows for the same run


def test_the_verdict_says_why_later_segments_hurt_under_carry_and_replace():
    from finhrm_cli.forecast.actstats import HURT, SAME

    carry = {"act_training": "carry", "segments_per_window": 1.1}
    said = views.verdict_text({"verdict": HURT}, carry)
    assert said.startswith(HURT) and "1.10 segments per window" in said and "rarely trained" in said
    assert views.verdict_text({"verdict": HURT}, {"act_training": "every", "segments_per_window": 4.0}) == HURT
    assert views.verdict_text({"verdict": SAME}, carry) == SAME


def test_inspect_says_in_what_units_a_run_keeps_its_residuals():
    from finhrm_cli.ui.views import intervals_line

    old = {"rows": 100, "per_third": False, "heads": None, "gamma": 0.005}
    assert "in units of the volatility scale" in intervals_line({**old, "units": "scale"})
    assert "(log ratios)" in intervals_line({**old, "units": "log"})
    assert intervals_line({**old, "units": "scale"}).endswith("one adaptive level, step 0.005")
