"""Training loop, ACT halting, faults and resume, prediction."""

from __future__ import annotations

import numpy as np
import pytest

from finhrm_cli.run import store
from finhrm_cli.run import files
from finhrm_cli.train import step
from finhrm_cli.train import loop
from finhrm_cli.forecast import inference
from finhrm_cli.config import ModelConfig, TrainConfig
from finhrm_cli.errors import DataError, TrainingError, UsageError

from finhrm_cli.blas import mlx_core

mx = mlx_core()
from mlx.utils import tree_flatten  # noqa: E402

T, F = 5, 4


def mcfg(**kw) -> ModelConfig:
    base = dict(n_features=F, seq_len=T, d_model=32, n_heads=2, h_layers=1, l_layers=1,
                h_cycles=1, l_cycles=2, halt_max_steps=2, halt_exploration=0.1)
    base.update(kw)
    return ModelConfig(**base)


def data(n: int, seed: int = 0, noise: float = 0.0):
    """Windows whose targets depend on the last day's features (learnable), price columns."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, T, F)).astype(np.float32)
    hi = 0.01 + 0.006 * np.tanh(x[:, -1, 0] + 0.5 * x[:, -2, 1]) + noise * rng.standard_normal(n)
    lo = -0.01 - 0.006 * np.tanh(x[:, -1, 2] - 0.5 * x[:, -3, 3]) + noise * rng.standard_normal(n)
    y = np.stack([hi, lo], 1).astype(np.float32)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return {"x": x, "y": y, "close": close, "next_high": close * np.exp(hi), "next_low": close * np.exp(lo)}


def weights(model) -> dict:
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


class Recorder:
    def __init__(self, raise_at_step: int | None = None):
        self.events: list[tuple[str, dict]] = []
        self.raise_at_step = raise_at_step

    def __call__(self, ev):
        event, info = ev.kind, ev.as_dict()
        self.events.append((event, info))
        if event == "step" and self.raise_at_step is not None and info["step"] >= self.raise_at_step:
            self.raise_at_step = None
            raise KeyboardInterrupt

    def of(self, name):
        return [i for e, i in self.events if e == name]


# -------------------------------------------------------------------------------- learning


def test_overfits_64_windows():
    tr = data(64, seed=1)
    tr["y"] = np.random.default_rng(5).normal([0.01, -0.01], 0.01, (64, 2)).astype(np.float32)  # pure memorisation
    model = step.build_model(mcfg(halt_max_steps=1), 0)
    rec = Recorder()
    tc = TrainConfig(batch_size=16, epochs=60, lr=3e-3, weight_decay=0.0, patience=0, warmup_frac=0.02, loss="mse")
    summary = loop.train(mcfg(halt_max_steps=1), tc, tr, tr, callback=rec, model=model)
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[0] / min(losses[-3:]) >= 10, losses[::10]
    assert summary["stopped"] == "converged" and summary["epochs_run"] == 60
    ev = [e for e, _ in rec.events]
    assert ev[0] == "start" and ev[-1] == "end" and "step" in ev and "eval" in ev
    start = rec.of("start")[0]
    assert start["total_steps"] == 60 * 4 and start["steps_per_epoch"] == 4 and start["n_train"] == 64


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (weights(step.build_model(mcfg(), s)) for s in (3, 3, 4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["H.layers.0.qkv.weight"], c["H.layers.0.qkv.weight"])
    assert not np.array_equal(a["buffers.H_init"], c["buffers.H_init"])
    # and the same after training: data order, exploration and updates are seeded too
    tr, va = data(64, 1), data(16, 2)
    tc = TrainConfig(batch_size=16, epochs=2, seed=3)
    runs = []
    for seed in (3, 3, 4):
        model = step.build_model(mcfg(), seed)
        loop.train(mcfg(), TrainConfig(batch_size=16, epochs=2, seed=seed), tr, va, model=model)
        runs.append(weights(model))
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not np.array_equal(runs[0]["L.layers.0.qkv.weight"], runs[2]["L.layers.0.qkv.weight"])
    del tc


def test_too_few_windows_is_a_usage_error():
    tr = data(10)
    with pytest.raises(DataError, match="10 training windows.*--batch-size"):
        loop.train(mcfg(), TrainConfig(batch_size=16), tr, tr)


def test_lr_schedule_warms_up_then_decays_to_ten_percent():
    s = step.lr_schedule(1e-3, 100, 10)
    lr = [float(s(mx.array(t, mx.uint64))) for t in range(100)]
    assert lr[0] == pytest.approx(1e-4) and lr[9] == pytest.approx(1e-3)
    assert max(lr) == pytest.approx(1e-3)
    assert lr[-1] == pytest.approx(1e-4, rel=0.01)
    assert all(x >= y - 1e-12 for x, y in zip(lr[10:], lr[11:]))


# -------------------------------------------------------------------------------- ACT


def _trainer(model, explore=0.0, batch=8):
    model.cfg.halt_exploration = explore
    return step.Trainer(model, TrainConfig(batch_size=batch, lr=1e-3), 100)


def test_one_segment_when_halt_max_steps_is_1():
    model = step.build_model(mcfg(halt_max_steps=1), 0)
    d = data(8)
    tr = _trainer(model)
    out = tr.train_batch(mx.array(d["x"][None]), mx.array(d["y"][None]))
    mx.eval(out)
    assert tr.updates == 1
    assert np.array(out["halt_step"]).tolist() == [[1] * 8]
    seg = inference.segment_outputs(model, d["x"])
    assert seg["preds"].shape == (1, 8, 2) and seg["q_halt"].shape == (1, 8)


@pytest.mark.parametrize("explore", [0.0, 1.0])
def test_q_head_saying_halt_stops_every_sample_after_one_segment(explore):
    model = step.build_model(mcfg(halt_max_steps=3), 0)
    model.q_head.bias = mx.array([5.0, -5.0])  # q_halt >> q_continue
    d = data(8)
    tr = _trainer(model, explore=explore)
    out = tr.train_batch(mx.array(d["x"][None]), mx.array(d["y"][None]))
    mx.eval(out)
    steps = np.array(out["halt_step"])[0]
    if explore == 0.0:
        assert steps.tolist() == [1] * 8
        assert tr.updates == 3  # halted samples are still trained on every segment
        assert float(out["n_scored"]) == 24
    else:  # each sample draws a minimum halting step in [2, M] before it may stop
        assert (steps >= 2).all() and (steps <= 3).all()
    model.q_head.bias = mx.array([5.0, -5.0])
    seg = inference.segment_outputs(model, d["x"])
    assert seg["halt_step"].tolist() == [1] * 8
    np.testing.assert_array_equal(inference.predict(model, d["x"], act=True), seg["preds"][0])
    np.testing.assert_array_equal(inference.predict(model, d["x"]), seg["preds"][-1])


def test_q_head_saying_continue_runs_all_segments():
    model = step.build_model(mcfg(halt_max_steps=3), 0)
    model.q_head.bias = mx.array([-5.0, 5.0])
    d = data(8)
    tr = _trainer(model)
    out = tr.train_batch(mx.array(d["x"][None]), mx.array(d["y"][None]))
    mx.eval(out)
    assert np.array(out["halt_step"]).tolist() == [[3] * 8]
    assert tr.updates == 3
    assert float(out["n_scored"]) == 24


def test_predict_is_independent_of_batching():
    model = step.build_model(mcfg(), 0)
    x = data(37)["x"]
    full = inference.predict(model, x)
    parts = np.concatenate([inference.predict(model, x[i:i + 5], batch_size=8) for i in range(0, 37, 5)])
    np.testing.assert_allclose(full, parts, rtol=1e-5, atol=1e-7)
    assert inference.predict(model, x[:0]).shape == (0, 2)
    assert (full[:, 0] >= full[:, 1]).all()


def test_a_lone_window_is_padded_to_a_small_batch_and_matches_the_backfill():
    from finhrm_cli.forecast import inference

    assert [inference._bucket(m, 128) for m in (1, 8, 9, 32, 33, 128)] == [8, 8, 32, 32, 128, 128]
    assert inference._bucket(3, 4) == 4       # a batch smaller than the buckets is used as given
    model = step.build_model(mcfg(d_model=64, n_heads=4), 0)
    x = data(150)["x"]
    full = inference.predict(model, x)           # plain graph: chunks of 128, the last padded to 32
    assert inference.usage(model).seen == 150 and inference.usage(model).compiled is None
    for i in (0, 77, 149):                    # each alone: padded to 8
        np.testing.assert_array_equal(inference.predict(model, x[i:i + 1])[0], full[i])
    np.testing.assert_array_equal(inference.predict(model, x[:20]), full[:20])
    inference.COMPILE_ABOVE, saved = 200, inference.COMPILE_ABOVE
    inference.usage(model).build_kernels = True  # (as in training: this process may build the kernels)
    try:                                      # past 200 windows seen, the compiled pass takes over
        again = inference.predict(model, x)
        assert inference.usage(model).compiled is not None
        np.testing.assert_array_equal(again, full)
        np.testing.assert_array_equal(inference.predict(model, x[77:78])[0], full[77])
    finally:
        inference.COMPILE_ABOVE = saved


def test_grad_accum_trains():
    tr, va = data(64, 1), data(16, 2)
    s = loop.train(mcfg(), TrainConfig(batch_size=8, grad_accum=2, epochs=1, act_training="every"), tr, va)
    assert s["steps"] == 4 and s["history"][0]["val_mae"] > 0


# -------------------------------------------------------------------------------- faults


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_interrupt_saves_state_and_resume_matches_an_uninterrupted_run(tmp_path, ema):
    tr, va = data(96, 1), data(24, 2)
    tc = TrainConfig(batch_size=16, epochs=3, seed=11, ema=ema, act_training="every")   # 6 steps per epoch, 18 in all
    # reference: straight through
    ref_model = step.build_model(mcfg(), 11)
    ref = loop.train(mcfg(), tc, tr, va, model=ref_model,
                       run=store.RunWriter(tmp_path / "ref"))
    # interrupted at step 10 (mid epoch 2), then resumed from disk
    run = store.RunWriter(tmp_path / "int")
    rec = Recorder(raise_at_step=10)
    with pytest.raises(step.TrainingInterrupted) as ei:
        loop.train(mcfg(), tc, tr, va, callback=rec, run=run)
    assert isinstance(ei.value, KeyboardInterrupt) and ei.value.run_path == run.path
    assert rec.of("end")[0]["stopped"] == "interrupted"
    state = store.load_state(run.path)
    assert state["info"]["step"] == 10 and state["info"]["epoch"] == 1 and state["info"]["epoch_batch"] == 4
    assert bool(state["ema"]) == (ema > 0)
    # the halting reference moved during training and is part of the resumable state
    from finhrm_cli.model.hrm import HALT_REF_INIT

    assert float(state["weights"]["buffers.halt_ref"][0]) != HALT_REF_INIT

    # the restored trainer holds exactly the saved optimizer state
    model = step.build_model(mcfg(), 0)
    t = step.Trainer(model, tc, 100)
    t.restore(state["weights"], state["optimizer"], state["rng_key"])
    flat = dict(tree_flatten(t.optimizer.state))
    assert flat.keys() == state["optimizer"].keys()
    for k, v in state["optimizer"].items():
        assert np.array_equal(np.array(flat[k]), np.array(v)), k
    assert int(flat["step"].item()) == state["info"]["updates"] > 0

    rec2 = Recorder()
    model = step.build_model(mcfg(), 0)  # other init: everything must come from the state
    res = loop.train(mcfg(), tc, tr, va, callback=rec2, run=run, resume=state, model=model)
    assert rec2.of("start")[0]["step"] == 10
    assert res["steps"] == 18 and res["stopped"] == "converged"
    final = weights(model)
    expect = weights(ref_model)
    assert "buffers.halt_ref" in expect
    for k in expect:
        np.testing.assert_allclose(final[k], expect[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # the saved model carries the reference of the weights it holds
    saved = mx.load(str(run.path / "model.safetensors"))
    np.testing.assert_array_equal(np.array(saved["buffers.halt_ref"]), final["buffers.halt_ref"])
    assert [h["epoch"] for h in store.read_history(run.path)] == [1, 2, 3]
    assert res["best_val_mae"] == pytest.approx(ref["best_val_mae"], rel=1e-5)
    # a finished run has nothing left to resume
    with pytest.raises(Exception, match="already finished"):
        loop.train(mcfg(), tc, tr, va, run=run, resume=store.load_state(run.path))


def test_weight_average_is_what_gets_evaluated_and_saved(tmp_path):
    tr = data(96, 1)
    run = store.RunWriter(tmp_path / "r")
    model = step.build_model(mcfg(), 3)
    loop.train(mcfg(), TrainConfig(batch_size=16, epochs=2, seed=3, ema=0.8), tr, None, run=run, model=model)
    state = store.load_state(run.path)
    saved = {k: np.array(v) for k, v in mx.load(str(run.path / files.WEIGHTS)).items()}
    raw = {k: np.array(v) for k, v in state["weights"].items()}
    avg = {k: np.array(v) for k, v in state["ema"].items()}
    assert avg and set(avg) < set(saved)                  # trainable weights only, no buffers
    moved = 0
    for k, v in avg.items():
        np.testing.assert_array_equal(saved[k], v, err_msg=k)   # the kept model is the average
        assert np.all(np.isfinite(v))
        moved += not np.allclose(v, raw[k])
    assert moved > len(avg) // 2                          # ... and not the last raw weights
    final = weights(model)
    for k, v in avg.items():
        np.testing.assert_array_equal(final[k], v, err_msg=k)


def test_min_delta_ignores_small_gains():
    """With a huge min_delta no later epoch counts as better: epoch 1 is kept and patience stops."""
    tr, va = data(96, 1), data(24, 2)
    base = dict(batch_size=16, epochs=6, patience=2, seed=5)
    plain = loop.train(mcfg(), TrainConfig(**base, min_delta=0.0), tr, va)
    assert plain["best_epoch"] > 1  # this data keeps improving, so the test has teeth
    strict = loop.train(mcfg(), TrainConfig(**base, min_delta=0.9), tr, va)
    assert strict["best_epoch"] == 1 and strict["stopped"] == "patience" and strict["epochs_run"] == 3
    assert strict["best_val_mae"] == pytest.approx(plain["history"][0]["val_mae"], rel=1e-6)


def test_ema_out_of_range_is_a_usage_error():
    with pytest.raises(UsageError, match="--ema"):
        TrainConfig(ema=1.0).validate()
    with pytest.raises(UsageError, match="--min-delta"):
        TrainConfig(min_delta=-0.1).validate()


@pytest.mark.parametrize("when", [("step", 10), ("eval", 2)])
def test_nonfinite_loss_stops_and_keeps_the_best_weights(tmp_path, when):
    """Weights turn NaN mid epoch 2 (caught by the loss read-back) or right after its
    evaluation (caught before the state is saved): either way the epoch-1 state and the best
    weights on disk stay good."""
    tr, va = data(96, 1), data(16, 2)  # 6 steps per epoch
    model = step.build_model(mcfg(), 0)
    run = store.RunWriter(tmp_path / "nan")

    def poison(ev):
        event, info = ev.kind, ev.as_dict()
        if event == when[0] and info["step" if event == "step" else "epoch"] == when[1]:
            model.head.weight = model.head.weight * float("nan")

    with pytest.raises(TrainingError, match="NaN or infinite.*--lr"):
        loop.train(mcfg(), TrainConfig(batch_size=16, epochs=5), tr, va, callback=poison, run=run, model=model)
    forecaster, _ = store.load_run(run.path)
    loaded = forecaster.model
    pred = inference.predict(loaded, va["x"])
    assert np.isfinite(pred).all()
    state = store.load_state(run.path)
    assert state["info"]["epoch"] == 1  # the last good state, not the poisoned one
    assert all(np.isfinite(np.array(v)).all() for v in state["weights"].values())


def test_validation_without_known_targets_keeps_the_latest_weights(tmp_path):
    tr, va = data(32, 1), data(8, 2)
    va["next_high"] = np.full(8, np.nan)
    run = store.RunWriter(tmp_path / "r")
    s = loop.train(mcfg(), TrainConfig(batch_size=16, epochs=2), tr, va, run=run)
    assert s["best_epoch"] == 2 and s["best_val_mae"] is None
    assert (run.path / "model.safetensors").is_file()


def test_resume_refuses_a_state_from_other_settings(tmp_path):
    tr, va = data(64, 1), data(16, 2)
    run = store.RunWriter(tmp_path / "r")
    with pytest.raises(step.TrainingInterrupted):
        loop.train(mcfg(), TrainConfig(batch_size=16, epochs=3), tr, va, run=run,
                     callback=Recorder(raise_at_step=4))
    state = store.load_state(run.path)
    with pytest.raises(UsageError, match="steps per epoch"):
        loop.train(mcfg(), TrainConfig(batch_size=8, epochs=3), tr, va, run=run, resume=state)


def test_halted_inference_exits_early_and_matches_every_segment_then_the_choice(monkeypatch):
    """``predict(act=True)`` stops a chunk once all its windows halted: the same forecasts
    and halting steps as running every segment and choosing, at the cost of the segments
    used."""
    model = step.build_model(mcfg(halt_max_steps=4), 0)
    rng = np.random.default_rng(0)
    model.q_head.weight = mx.array(rng.normal(0, 2.0, model.q_head.weight.shape).astype(np.float32))
    model.q_head.bias = mx.array([0.0, 0.0])
    x = data(40)["x"]
    seg = inference.segment_outputs(model, x)
    used_ref = seg["halt_step"]
    assert 1 < len(set(used_ref.tolist()))  # the windows halt at different segments
    pred, used = inference.predict_act(model, x, batch_size=16)
    np.testing.assert_array_equal(used, used_ref)
    ref = seg["preds"][used_ref - 1, np.arange(len(x))]
    np.testing.assert_allclose(pred, ref, rtol=1e-5, atol=1e-6)
    calls = []
    real = model.segment
    monkeypatch.setattr(model, "segment", lambda *a: calls.append(1) or real(*a))
    model.q_head.bias = mx.array([5.0, -5.0])
    model.q_head.weight = mx.zeros(model.q_head.weight.shape)
    inference.predict_act(model, x, batch_size=16)
    assert len(calls) == 3  # three chunks of windows, one segment each: all halt at once
    calls.clear()
    inference.predict(model, x, batch_size=16)
    assert len(calls) == 3 * 4
