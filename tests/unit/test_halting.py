"""The ACT halting reward, its running reference and the reused Q-target pass."""

from __future__ import annotations

import numpy as np
import pytest

from finhrm_cli.train import step
from finhrm_cli.forecast import inference
from finhrm_cli.train import halting
from finhrm_cli.blas import mlx_core
from finhrm_cli.config import TrainConfig

mx = mlx_core()
from mlx.utils import tree_flatten  # noqa: E402

from test_engine import data, mcfg  # noqa: E402


def _sig(v):
    return 1.0 / (1.0 + np.exp(-np.asarray(v, np.float64)))


def test_q_targets_for_a_sample_that_improves_and_one_that_does_not():
    ref = mx.array([0.5])
    # both forecasts are worse than usual now (halt target 0); the next segment of sample 0
    # is confident it will be good (it improves), sample 1's next segment is not
    err = mx.array([0.8, 0.8, 0.3])
    nq_halt = mx.array([4.0, -4.0, -4.0])
    nq_cont = mx.array([-4.0, -3.0, 2.0])
    halt, cont = halting.halt_targets(err, ref, nq_halt, nq_cont, mx.array(False))
    assert np.array(halt).tolist() == [0.0, 0.0, 1.0]  # sample 2 is already better than the median
    g = halting.HALT_GAMMA
    np.testing.assert_allclose(np.array(cont), g * _sig([4.0, -3.0, 2.0]), rtol=1e-6)
    # the improving sample is worth continuing (target > its halt target), the other is not worth it
    assert np.array(cont)[0] > 0.5 > np.array(cont)[1]
    # a tie counts as good; the last segment bootstraps from q_halt only, still discounted
    halt, cont = halting.halt_targets(mx.array([0.5]), ref, mx.array([0.0]), mx.array([9.0]), mx.array(True))
    assert float(halt[0]) == 1.0 and float(cont[0]) == pytest.approx(g * 0.5)
    # at a fixed point (the next segment scores like this one) continuing costs more than it gains
    p = 0.7
    _, cont = halting.halt_targets(mx.array([0.1]), ref, mx.array([np.log(p / (1 - p))]), mx.array([-9.0]),
                                   mx.array(False))
    assert float(cont[0]) < p


def test_running_reference_tracks_the_median_of_recent_errors():
    rng = np.random.default_rng(0)
    ref = mx.array([1.0])
    assert float(halting.next_reference(ref, mx.array([2.0, 3.0, 0.5]))[0]) > 1.0  # mostly above: up
    assert float(halting.next_reference(ref, mx.array([0.2, 0.3, 1.5]))[0]) < 1.0  # mostly below: down
    assert float(halting.next_reference(ref, mx.array([0.2, 1.0, 1.5]))[0]) == 1.0  # balanced: stays
    for _ in range(600):  # errors with median 0.3: the reference settles there from 1.0
        ref = halting.next_reference(ref, mx.array(rng.exponential(0.3 / np.log(2), 64).astype(np.float32)))
    assert float(ref[0]) == pytest.approx(0.3, rel=0.08)
    for _ in range(600):  # and follows when the errors shrink
        ref = halting.next_reference(ref, mx.array(rng.exponential(0.1 / np.log(2), 64).astype(np.float32)))
    assert float(ref[0]) == pytest.approx(0.1, rel=0.08)


def _trainer(lr, reuse, seed=0, M=3, q_scale=0.3):
    model = step.build_model(mcfg(h_cycles=2, l_cycles=2, halt_max_steps=M, halt_exploration=0.0), seed)
    d = data(16, 4)
    model.set_target_stats(d["y"])
    # a Q head that says different things for different samples
    model.q_head.weight = mx.random.normal((2, 32), key=mx.random.key(1)) * q_scale
    model.q_head.bias = mx.zeros((2,))
    tr = step.Trainer(model, TrainConfig(batch_size=8, grad_accum=2, lr=lr, weight_decay=0.1), 100,
                        reuse_pass=reuse)
    return model, tr, mx.array(d["x"].reshape(2, 8, *d["x"].shape[1:])), mx.array(d["y"].reshape(2, 8, 2))


def _run(lr, reuse):
    model, tr, x, y = _trainer(lr, reuse)
    outs = []
    for _ in range(2):
        out = tr.train_batch(x, y)
        mx.eval(out, tr.state)
        outs.append({k: np.array(v) for k, v in out.items()})
    return outs, {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def test_reused_q_target_pass_equals_recomputing_at_learning_rate_zero():
    (a, wa), (b, wb) = _run(0.0, True), _run(0.0, False)
    for oa, ob in zip(a, b):
        for k in ("reg_sum", "q_sum", "halt_step"):
            np.testing.assert_allclose(oa[k], ob[k], rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(wa["buffers.halt_ref"], wb["buffers.halt_ref"], rtol=1e-6)
    # with a learning rate the reused pass is one update stale: close, not identical
    (c, wc), (d, wd) = _run(1e-2, True), _run(1e-2, False)
    assert not np.array_equal(wc["H.layers.0.qkv.weight"], wd["H.layers.0.qkv.weight"])
    np.testing.assert_allclose(c[0]["reg_sum"], d[0]["reg_sum"], rtol=0.05)


def test_training_loss_uses_the_halting_reward_for_every_sample_and_segment():
    """At learning rate 0 the Q loss of a step equals the BCE against the reward recomputed
    from the per-segment outputs, the reference moving once per segment."""
    model, tr, x, y = _trainer(0.0, True, M=3, q_scale=1.0)
    xs = np.array(x).reshape(16, *x.shape[2:])
    ys = np.array(y).reshape(16, 2)
    longer = step.build_model(mcfg(h_cycles=2, l_cycles=2, halt_max_steps=4), 9)  # one more segment
    longer.load_weights(list(tree_flatten(model.parameters())))
    seg = inference.segment_outputs(longer, xs)
    err = np.abs(seg["preds"] - ys[None]).mean(-1) / float(model.buffers.scale[0])  # (4, n)
    model.buffers.halt_ref = mx.array([float(np.median(err[:3]))])  # targets of both kinds
    ref = float(model.buffers.halt_ref[0])
    logit = lambda p: np.log(p) - np.log1p(-p)  # noqa: E731
    bce = lambda z, t: np.logaddexp(0, z) - z * t  # noqa: E731
    qh, qc = logit(seg["q_halt"].astype(np.float64)), logit(seg["q_continue"].astype(np.float64))
    q_sum, halts = 0.0, []
    for t in range(3):
        halt_t = (err[t] <= ref).astype(np.float64)
        halts.append(halt_t.mean())
        nxt = qh[t + 1] if t == 2 else np.maximum(qh[t + 1], qc[t + 1])
        q_sum += bce(qh[t], halt_t).sum() + bce(qc[t], halting.HALT_GAMMA * _sig(nxt)).sum()
        ref = float(halting.next_reference(mx.array([ref]), mx.array(err[t].astype(np.float32)))[0])
    out = tr.train_batch(x, y)
    mx.eval(out)
    assert 0.0 < min(halts) and max(halts) < 1.0  # the constructed case has both targets
    assert float(out["n_scored"]) == 16 * 3  # every sample on every segment
    assert float(out["q_sum"]) == pytest.approx(q_sum, rel=1e-4)
    assert float(model.buffers.halt_ref[0]) == pytest.approx(ref, rel=1e-5)


def test_a_model_saved_before_the_reference_existed_still_loads():
    from finhrm_cli.model.hrm import HALT_REF_INIT

    old = step.build_model(mcfg(), 0)
    old.buffers.halt_ref = mx.array([0.3])
    arrays = [(k, v) for k, v in tree_flatten(old.parameters()) if k != "buffers.halt_ref"]
    new = step.build_model(mcfg(), 1)
    new.buffers.halt_ref = mx.array([0.7])
    new.load_weights(arrays)
    assert float(new.buffers.halt_ref[0]) == HALT_REF_INIT
    np.testing.assert_array_equal(np.array(new.head.weight), np.array(old.head.weight))
    with pytest.raises(ValueError):  # anything else missing still fails
        new.load_weights([(k, v) for k, v in arrays if k != "head.weight"])
