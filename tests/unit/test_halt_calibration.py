"""The ACT Q head's calibration map: fit on training rows only, applied to both Q
outputs in ``inspect``, never moving a halting decision.

A tiny untrained model with a random Q head stands in for a trained one (its logits vary from
row to row and its rewards have both values); the command-line side (``finalize_run`` writes
the map, a crafted one is refused) is in e2e/test_cli.py and e2e/test_untrusted_runs_cli.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from finhrm_cli import data
from finhrm_cli.forecast import actstats
from finhrm_cli.train import step
from finhrm_cli.forecast import inference
from finhrm_cli.blas import mlx_core
from finhrm_cli.config import FeatureConfig, ModelConfig
from finhrm_cli.forecast.forecaster import Forecaster
from finhrm_cli.forecast.parts import of as windows_of
from helpers import SAMPLE_TV as SAMPLE

mx = mlx_core()

N_LINES = 900  # a header and 899 sessions: ~600 training windows


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines))
    return path


def _rescale(lines: list[str], rows, seed: int) -> list[str]:
    """``lines`` with open/high/low/close of the data ``rows`` (0-based) moved by a random walk
    factor, the same within a row, so every bar stays valid."""
    out = list(lines)
    rows = list(rows)
    f = np.exp(np.cumsum(np.random.default_rng(seed).normal(0.0, 0.01, len(rows))))
    for r, k in zip(rows, f):
        cells = out[1 + r].rstrip("\n").split(",")
        for c in (1, 2, 3, 4):
            cells[c] = f"{float(cells[c]) * k:.4f}"
        out[1 + r] = ",".join(cells) + "\n"
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cal")
    lines = SAMPLE.read_text().splitlines(keepends=True)[:N_LINES]
    base = data.prepare(_write(tmp / "base.csv", lines), FeatureConfig())
    # the data rows of the file after the last training session
    last = np.datetime64(base.splits["train"]["last_date"], "D")
    days = [np.datetime64(int(ln.split(",")[0]), "s").astype("datetime64[D]") for ln in lines[1:]]
    after = [i for i, d in enumerate(days) if d > last]
    model = step.build_model(ModelConfig(n_features=len(base.feature_names), seq_len=10, d_model=32, n_heads=2,
                                           h_layers=1, l_layers=1, h_cycles=1, l_cycles=1, halt_max_steps=3), 3)
    model.q_head.weight = mx.array(np.random.default_rng(0).normal(0.0, 0.3, (2, 32)).astype(np.float32))
    model.q_head.bias = mx.array([0.0, 0.0])
    seg = inference.segment_outputs(model, base.windows("train").x)
    # q_continue level with q_halt at step 1, so rows halt at different steps
    model.q_head.bias = mx.array([0.0, float(np.median(seg["q_halt_logit"][0] - seg["q_continue_logit"][0]))])
    o = actstats.act_outputs(model, windows_of([base], "train"))
    unit = np.abs(np.asarray(inference.segment_outputs(model, base.windows("train").x)["preds"], np.float64)
                  - base.windows("train").y / base.windows("train").scale[:, None]).mean(-1)
    model.buffers.halt_ref = mx.array([float(np.median(unit))])  # rewards of both kinds
    assert o["q_halt_logit"].std() > 0.05  # the logits vary from row to row
    return {"tmp": tmp, "lines": lines, "base": base, "after": after, "model": model}


def halt_calibration(model, dss):
    """The Q head's calibration map as a run gets it (``Forecaster.finish``)."""
    fc = Forecaster(model)
    fc.finish(dss)
    return fc.halt_calibration


def _prepare(sample, lines, name):
    return data.prepare(_write(sample["tmp"] / name, lines), FeatureConfig())


def test_calibration_is_fit_on_training_rows_only(sample):
    model, base, lines, after = sample["model"], sample["base"], sample["lines"], sample["after"]
    cal = halt_calibration(model, [base])
    assert cal["rows"] == min(actstats.CALIBRATION_ROWS, base.splits["train"]["n_windows"]) and cal["a"] > 0
    # every validation and test session changed: the map does not move
    other = _prepare(sample, _rescale(lines, after, 1), "later_changed.csv")
    for split in ("val", "test"):
        assert not np.allclose(other.windows(split).close, base.windows(split).close)
    assert halt_calibration(model, [other]) == cal
    # ... while changing training sessions does (the test can fail)
    first_train = min(after) // 3
    moved = _prepare(sample, _rescale(lines, range(first_train, first_train + 100), 2), "train_changed.csv")
    assert halt_calibration(model, [moved]) != cal


def test_inspect_maps_both_q_outputs_and_keeps_where_rows_halt(sample):
    model, base = sample["model"], sample["base"]
    parts = windows_of([base], "val")
    seg = inference.segment_outputs(model, base.windows("val").x)
    plain = actstats.act_stats(model, parts)
    assert plain["halt_calibration"] is None
    assert plain["uncalibrated"]["brier"] == pytest.approx(plain["calibration"]["brier"], rel=1e-6)
    for a, b in ((0.5, 0.3), (actstats.HALT_CAL_A[0], 4.0), (3.0, -2.0)):
        cal = {"a": a, "b": b, "rows": 1}
        r = actstats.act_stats(model, parts, cal)
        for k, s in enumerate(r["steps"]):
            assert s["q_halt"] == pytest.approx(actstats.platt_apply(seg["q_halt_logit"][k], a, b).mean(), rel=1e-9)
            assert s["q_continue"] == pytest.approx(actstats.platt_apply(seg["q_continue_logit"][k], a, b).mean(), rel=1e-9)
        assert r["halt_calibration"] == cal and r["uncalibrated"] == plain["uncalibrated"]
        for key in ("halting_histogram", "mean_halting_step", "mae_act", "compute_saved"):
            assert r[key] == plain[key], key
        assert [s["halted"] for s in r["steps"]] == [s["halted"] for s in plain["steps"]]
        assert r["calibration"]["auc"] == pytest.approx(plain["calibration"]["auc"], abs=1e-6)  # same ranking
    # the logits are the probabilities' own
    np.testing.assert_allclose(1 / (1 + np.exp(-seg["q_halt_logit"].astype(np.float64))), seg["q_halt"], rtol=1e-5)
    assert sum(h > 0 for h in plain["halting_histogram"]) > 1  # rows halt at more than one step


def test_the_calibration_map_is_fit_on_at_most_a_spread_of_training_windows():
    """Every segment of every training window costs more than the rest of the scoring: the
    map (two numbers) is fit on at most CALIBRATION_ROWS windows, evenly spread over each
    series, first and last kept, none twice."""
    from finhrm_cli.data.dataset import Windows

    def windows(n):
        z = np.zeros(n)
        return Windows(x=np.zeros((n, 2, 1), np.float32), y=np.zeros((n, 2), np.float32), end=np.arange(n),
                       dates=np.arange(n).astype("datetime64[D]"), close=z, high=z, low=z, next_high=z,
                       next_low=z, scale=z + 1)

    parts = [("a", windows(3000)), ("b", windows(1000))]
    thin = actstats._spread(parts, 1024)
    sizes = [len(w) for _, w in thin]
    assert sizes == [768, 256]
    for (_, w), n in zip(thin, (3000, 1000)):
        assert w.end[0] == 0 and w.end[-1] == n - 1 and len(np.unique(w.end)) == len(w)
        gaps = np.diff(w.end)
        assert gaps.max() - gaps.min() <= 1
    small = [("a", windows(100))]
    assert actstats._spread(small, 1024) is small
