"""Carry-and-replace ACT training (``act_training = "carry"``, HRM's schedule): every training
window is taken in once per epoch and costs the segments it uses, halted slots take the next
window, and an interrupted run resumes to the same weights."""

from __future__ import annotations

import numpy as np
import pytest

from finhrm_cli.blas import mlx_core
from finhrm_cli.config import ModelConfig, TrainConfig
from finhrm_cli.run import store
from finhrm_cli.train import loop, step
from finhrm_cli.train.carry import CarryTrainer

from test_engine import F, T, data, weights  # noqa: E402  (the engine tests' windows)
from test_engine import mcfg as engine_mcfg  # noqa: E402

mx = mlx_core()


def mcfg(**kw) -> ModelConfig:
    """The engine tests' model, 3 segments, no exploration unless asked."""
    return engine_mcfg(**{"halt_max_steps": 3, "halt_exploration": 0.0, **kw})


def carry_epoch(model, n=50, B=8, seed=0):
    """One carry-and-replace epoch with the Trainer alone: the stats of every update."""
    tc = TrainConfig(batch_size=B, epochs=1, act_training="carry", ema=0.0)
    tr = CarryTrainer(model, tc, 10, (1, B))
    d = data(n, seed)
    model.set_target_stats(d["y"])
    X, Y = mx.array(d["x"]), mx.array(d["y"])
    perm = mx.array(np.random.default_rng(seed).permutation(n).astype(np.int32))
    tr.begin_epoch()
    out = []
    for _ in range(10 * n):
        s = tr.carry_batch(X, Y, perm).tolist()
        out.append(s)
        if s[5] == 0:
            break
    return np.array(out), tr


def set_q(model, halt: float, cont: float):
    model.q_head.weight = mx.zeros(model.q_head.weight.shape)
    model.q_head.bias = mx.array([halt, cont])


def test_a_q_head_that_halts_at_once_costs_one_segment_per_window():
    model = step.build_model(mcfg(), 0)
    set_q(model, 5.0, -5.0)
    stats, tr = carry_epoch(model, n=50, B=8)
    assert stats[-1, 5] == 0                       # every window taken in and halted
    assert stats[:, 4].sum() == 50                 # 50 windows finished, each once
    assert stats[:, 2].sum() == 50                 # 50 slot-segments trained: one each
    assert stats[:, 3].sum() / stats[:, 4].sum() == 1.0
    assert len(stats) == 7                         # ceil(50 / 8) updates, the last one part empty
    assert tr.updates == 7


def test_a_q_head_that_never_halts_runs_every_segment():
    model = step.build_model(mcfg(halt_max_steps=3), 0)
    set_q(model, -5.0, 5.0)
    stats, _ = carry_epoch(model, n=40, B=8)
    assert stats[:, 4].sum() == 40 and stats[:, 2].sum() == 40 * 3
    assert stats[:, 3].sum() / stats[:, 4].sum() == 3.0
    assert len(stats) == 15                        # 5 batches of windows x 3 segments


def test_exploration_keeps_some_windows_going():
    model = step.build_model(mcfg(halt_max_steps=4, halt_exploration=0.5), 0)
    set_q(model, 5.0, -5.0)
    stats, _ = carry_epoch(model, n=64, B=8)
    seg = stats[:, 3].sum() / stats[:, 4].sum()
    assert stats[:, 4].sum() == 64 and 1.0 < seg < 4.0


def test_loop_reports_segments_per_window_and_trains():
    tr_d, va_d = data(96, 1), data(24, 2)
    tc = TrainConfig(batch_size=16, epochs=2, seed=3, act_training="carry")
    s = loop.train(mcfg(halt_exploration=0.1), tc, tr_d, va_d)
    assert s["stopped"] == "converged" and s["epochs_run"] == 2
    for h in s["history"]:
        assert 1.0 <= h["train_segments"] <= 3.0 and np.isfinite(h["val_mae"])
    every = loop.train(mcfg(halt_exploration=0.1), TrainConfig(batch_size=16, epochs=2, seed=3, act_training="every"),
                       tr_d, va_d)
    assert all(h["train_segments"] == 3.0 for h in every["history"])


class Interrupt:
    def __init__(self, at: int):
        self.at = at

    def __call__(self, ev):
        if ev.kind == "step" and self.at is not None and ev.step >= self.at:
            self.at = None
            raise KeyboardInterrupt


def interrupted_and_resumed(tmp_path, callback):
    """A carry run trained straight through, and the same run stopped by ``callback`` and
    resumed: (the saved state, the resumed run's summary, its weights, the straight run's)."""
    tr_d, va_d = data(96, 1), data(24, 2)
    tc = TrainConfig(batch_size=16, epochs=2, seed=5, act_training="carry")
    m = mcfg(halt_exploration=0.3)
    ref_model = step.build_model(m, 5)
    loop.train(m, tc, tr_d, va_d, model=ref_model, run=store.RunWriter(tmp_path / "ref"))
    run = store.RunWriter(tmp_path / "int")
    with pytest.raises(step.TrainingInterrupted):
        loop.train(m, tc, tr_d, va_d, run=run, callback=callback)
    state = store.load_state(run.path)
    model = step.build_model(m, 0)
    s = loop.train(m, tc, tr_d, va_d, run=run, resume=state, model=model)
    return state, s, weights(model), weights(ref_model)


def test_an_interrupted_carry_run_resumes_to_the_same_weights(tmp_path):
    state, _, final, expect = interrupted_and_resumed(tmp_path, Interrupt(10))
    assert state["carry"] and state["info"]["epoch_batch"] > 0      # stopped mid-epoch, carry saved
    for k in expect:
        np.testing.assert_allclose(final[k], expect[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_a_state_from_the_other_schedule_is_refused(tmp_path):
    tr_d, va_d = data(64, 1), data(16, 2)
    run = store.RunWriter(tmp_path / "r")
    with pytest.raises(step.TrainingInterrupted):
        loop.train(mcfg(), TrainConfig(batch_size=16, epochs=2, act_training="every"), tr_d, va_d, run=run,
                   callback=Interrupt(2))
    state = store.load_state(run.path)
    with pytest.raises(Exception, match="carry-and-replace"):
        loop.train(mcfg(), TrainConfig(batch_size=16, epochs=2, act_training="carry"), tr_d, va_d,
                   run=run, resume=state)


def test_carry_is_the_default_and_a_run_from_before_it_keeps_every(tmp_path):
    """A run whose config.json predates the setting was trained with every segment for every
    window: it reads (and resumes) that way, whatever today's default."""
    from finhrm_cli.run.config import RunConfig

    assert TrainConfig().act_training == "carry" and TrainConfig().act_inference == "halted"
    old = RunConfig.from_dict({"model": {"n_features": F, "seq_len": T}, "train": {"batch_size": 16}},
                              tmp_path / "config.json")
    assert old.train.act_training == "every"
    assert old.train.act_inference == "all" and not old.halted_inference()  # forecasts as it always did
    new = RunConfig.from_dict({"model": {"n_features": F, "seq_len": T},
                               "train": {"batch_size": 16, "act_training": "carry"}}, tmp_path / "config.json")
    assert new.train.act_training == "carry"


class InterruptAt:
    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, ev):
        if self.kind is not None and ev.kind == self.kind:
            self.kind = None
            raise KeyboardInterrupt


def test_a_run_stopped_between_its_last_update_and_the_validation_resumes(tmp_path):
    """Ctrl-C while the epoch's validation runs: every window is in and halted, the state is
    the last update's; resuming validates that epoch and goes on (it once trained an empty
    batch and stopped with a NaN loss)."""
    state, s, final, expect = interrupted_and_resumed(tmp_path, InterruptAt("eval"))
    assert state["info"]["epoch"] == 0 and state["info"]["epoch_batch"] > 0
    assert int(np.array(state["carry"]["ptr"])) == 96 and not np.array(state["carry"]["alive"]).any()
    assert s["stopped"] == "converged" and s["epochs_run"] == 2
    for k in expect:
        np.testing.assert_allclose(final[k], expect[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("halt,cont,segments", [(5.0, -5.0, 1), (-5.0, 5.0, 3)])
def test_the_loop_runs_exactly_the_updates_an_epoch_needs(halt, cont, segments):
    """The loop reads the update counts back only where the epoch may end: it must still
    stop at the update where the last window halts, never train an empty batch after it."""
    tr_d, va_d = data(96, 1), data(24, 2)
    model = step.build_model(mcfg(), 0)
    set_q(model, halt, cont)
    s = loop.train(mcfg(), TrainConfig(batch_size=16, epochs=2, act_training="carry", ema=0.0, lr=1e-5),
                   tr_d, va_d, model=model)
    assert s["steps"] == 2 * (96 // 16) * segments
    assert [h["train_segments"] for h in s["history"]] == [float(segments)] * 2


def test_the_trm_halting_head_has_one_target_and_halts_at_even_odds():
    """halt_head = "trm" (the Tiny Recursive Model's single head): q_continue is the even odds
    (logit 0), so a window halts where P(halt) > 0.5; training has no q_continue target and no
    extra segment, and runs under both schedules."""
    model = step.build_model(mcfg(halt_head="trm"), 0)
    set_q(model, 2.0, 9.0)  # the q_continue output is not used: halt at once
    stats, tr = carry_epoch(model, n=32, B=8)
    assert stats[:, 3].sum() / stats[:, 4].sum() == 1.0 and not tr.reuse
    set_q(model, -2.0, -9.0)
    stats, _ = carry_epoch(model, n=32, B=8)
    assert stats[:, 3].sum() / stats[:, 4].sum() == 3.0  # P(halt) < 0.5 everywhere: every segment
    tr_d, va_d = data(64, 1), data(16, 2)
    for sched in ("carry", "every"):
        s = loop.train(mcfg(halt_head="trm"), TrainConfig(batch_size=16, epochs=1, act_training=sched), tr_d, va_d)
        assert np.isfinite(s["best_val_mae"])
    with pytest.raises(Exception, match="hrm or trm"):
        mcfg(halt_head="tiny").validate()
