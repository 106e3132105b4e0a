"""The HRM model: one-step gradient, frozen buffers, initialisation, the high/low head."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from finhrm_cli.config import ModelConfig, TrainConfig
from finhrm_cli.model.hrm import (
    HRM, Block, fast_exp, fast_rsqrt, fast_sigmoid, fast_silu, fast_softmax, rms_norm, swiglu,
    swiglu_width, trunc_normal,
)

from finhrm_cli.blas import mlx_core

mx = mlx_core()
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

T, F = 5, 4


def small_cfg(**kw) -> ModelConfig:
    base = dict(n_features=F, seq_len=T, d_model=32, n_heads=2, h_layers=1, l_layers=1,
                h_cycles=2, l_cycles=2, halt_max_steps=2)
    base.update(kw)
    return ModelConfig(**base)


def make(seed=0, **kw) -> HRM:
    mx.random.seed(seed)
    m = HRM(small_cfg(**kw))
    mx.eval(m.parameters())
    return m


def _loss_of(pred):
    return (pred * mx.array([1.0, -2.0])).sum()


def _segment_grads(model, x, carry):
    """Gradient of a loss on one segment's prediction w.r.t. the trainable parameters and
    the incoming carry."""

    def f(params, zH, zL):
        model.update(params)
        _, pred, qh, qc = model.segment((zH, zL), model.embed(x))
        return _loss_of(pred) + qh.sum() + qc.sum()

    return mx.grad(f, argnums=(0, 1, 2))(model.trainable_parameters(), *carry)


def _last_step_only_grads(model, x, carry):
    """Reference one-step gradient: run the early steps outside autodiff, as constants, then
    differentiate only the last L and the last H step."""
    cfg = model.cfg
    zH, zL = carry
    x_emb, _ = model.embed(x)
    for h in range(cfg.h_cycles):
        for l in range(cfg.l_cycles):
            if h == cfg.h_cycles - 1 and l == cfg.l_cycles - 1:
                break
            zL = model.L(zL, zH + x_emb)
        if h != cfg.h_cycles - 1:
            zH = model.H(zH, zL)
    zH0, zL0 = mx.array(np.array(zH)), mx.array(np.array(zL))  # plain constants

    def f(params):
        model.update(params)
        e, _ = model.embed(x)
        zl = model.L(zL0, zH0 + e)
        zh = model.H(zH0, zl)
        pred, qh, qc = model.heads(zh)
        return _loss_of(pred) + qh.sum() + qc.sum()

    return mx.grad(f)(model.trainable_parameters())


def _max_diff(a, b) -> float:
    fa, fb = dict(tree_flatten(a)), dict(tree_flatten(b))
    assert fa.keys() == fb.keys()
    return max(float(mx.abs(fa[k] - fb[k]).max()) for k in fa)


def _grads_setup():
    model = make(seed=1)
    # a non-zero q_head so the Q outputs carry gradient too
    model.q_head.weight = mx.random.normal(model.q_head.weight.shape) * 0.1
    x = mx.random.normal((3, T, F))
    carry = (mx.random.normal((3, T + 1, 32)), mx.random.normal((3, T + 1, 32)))
    return model, x, carry


def test_gradient_reaches_only_last_L_and_H_step():
    model, x, carry = _grads_setup()
    g_params, g_zH, g_zL = _segment_grads(model, x, carry)
    ref = _last_step_only_grads(model, x, carry)
    assert _max_diff(g_params, ref) < 1e-5
    # the incoming carry only feeds the early (cut) steps: no gradient reaches it
    assert float(mx.abs(g_zH).max()) == 0.0
    assert float(mx.abs(g_zL).max()) == 0.0


def test_gradient_check_fails_without_stop_gradient(monkeypatch):
    """The check above is sensitive: with stop_gradient disabled it sees the difference."""
    model, x, carry = _grads_setup()
    ref = _last_step_only_grads(model, x, carry)
    monkeypatch.setattr(mx, "stop_gradient", lambda a: a)
    g_params, g_zH, _ = _segment_grads(model, x, carry)
    assert _max_diff(g_params, ref) > 1e-4
    assert float(mx.abs(g_zH).max()) > 0.0


def test_buffers_are_frozen_but_saved():
    model = make()
    trainable = {k for k, _ in tree_flatten(model.trainable_parameters())}
    everything = {k for k, _ in tree_flatten(model.parameters())}
    buffers = {"buffers.H_init", "buffers.L_init", "buffers.c_mid", "buffers.scale", "buffers.b0",
               "buffers.halt_ref"}
    assert buffers <= everything
    assert not buffers & trainable
    model.unfreeze()  # even a blanket unfreeze keeps the buffers fixed
    assert not buffers & {k for k, _ in tree_flatten(model.trainable_parameters())}


def test_buffers_unchanged_by_a_training_step():
    from finhrm_cli.train.step import Trainer

    model = make()
    model.set_target_stats(np.random.default_rng(0).normal(0, 0.01, (64, 2)))
    before = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    tr = Trainer(model, TrainConfig(batch_size=8, lr=1e-2, weight_decay=0.5), 10)
    out = tr.train_batch(mx.random.normal((1, 8, T, F)), mx.random.normal((1, 8, 2)) * 0.01)
    mx.eval(out)
    after = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    for k in before:
        if k.startswith("buffers.") and k != "buffers.halt_ref":
            assert np.array_equal(before[k], after[k]), k
    # the halting reference is the one buffer the training step moves (not the optimiser)
    assert not np.array_equal(before["buffers.halt_ref"], after["buffers.halt_ref"])
    assert not np.array_equal(before["H.layers.0.qkv.weight"], after["H.layers.0.qkv.weight"])
    assert not any("buffers" in k for k, _ in tree_flatten(tr.optimizer.state))


def test_q_head_init_and_init_scales():
    model = make()
    assert float(mx.abs(model.q_head.weight).max()) == 0.0
    assert np.array_equal(np.array(model.q_head.bias), np.array([-5.0, -5.0], np.float32))
    # LeCun truncated normal: std 1/sqrt(fan_in), truncated at 2 sigma
    w = np.array(model.H.layers[0].gate_up.weight)
    assert abs(w.std() * math.sqrt(32) - 1.0) < 0.1
    assert np.abs(w).max() <= 2 * 1.14 / math.sqrt(32) + 1e-6
    assert np.array(model.summary).sum() == 0.0
    t = np.array(trunc_normal((20000,), 1.0))
    assert abs(t.std() - 1.0) < 0.03  # HRM's corrected std


def test_swiglu_width_and_fast_elementwise_math():
    assert swiglu_width(128, 4.0) == 352  # round(341.33) = 341 -> 352
    assert swiglu_width(32, 4.0) == 96
    x = mx.linspace(-40, 40, 40001)
    sig = mx.sigmoid(x)
    assert float(mx.abs(fast_sigmoid(x) - sig).max()) < 5e-7
    assert float(mx.abs(fast_silu(x) - x * sig).max()) < 2e-5
    u = mx.cos(x)
    gx, gu = mx.grad(lambda a, b: (swiglu(a, b) * mx.sin(a)).sum(), argnums=(0, 1))(x, u)
    rx, ru = mx.grad(lambda a, b: (a * mx.sigmoid(a) * b * mx.sin(a)).sum(), argnums=(0, 1))(x, u)
    assert float(mx.abs(gx - rx).max()) < 1e-4 and float(mx.abs(gu - ru).max()) < 2e-5
    e = mx.linspace(-80, 0, 10001)
    assert float((mx.abs(fast_exp(e) - mx.exp(e)) / mx.exp(e)).max()) < 5e-6
    v = mx.exp(mx.linspace(-20, 20, 10001))
    assert float((mx.abs(fast_rsqrt(v) - mx.rsqrt(v)) * mx.sqrt(v)).max()) < 1e-6
    s = mx.random.normal((3, 7, 5)) * 10
    w = mx.random.normal((3, 7, 5))
    assert float(mx.abs(fast_softmax(s) - mx.softmax(s, axis=-1)).max()) < 1e-6
    g1 = mx.grad(lambda a: (fast_softmax(a) * w).sum())(s)
    g2 = mx.grad(lambda a: (mx.softmax(a, axis=-1) * w).sum())(s)
    assert float(mx.abs(g1 - g2).max()) < 1e-5
    z = mx.random.normal((4, 6, 32)) * 3
    wz = mx.random.normal((4, 6, 32))
    assert float(mx.abs(rms_norm(z) - mx.fast.rms_norm(z, None, 1e-5)).max()) < 1e-5
    g1 = mx.grad(lambda a: (rms_norm(a) * wz).sum())(z)
    g2 = mx.grad(lambda a: (mx.fast.rms_norm(a, None, 1e-5) * wz).sum())(z)
    assert float(mx.abs(g1 - g2).max()) < 1e-5


def _reference_block(b, x):
    """The block written plainly (per-head fused attention, libm SiLU, MLX's RMSNorm)."""
    B, S, D = x.shape
    H, hd = b.n_heads, b.head_dim
    t = b.qkv(x).reshape(B, S, 3, H, hd).transpose(2, 0, 3, 1, 4)
    y = mx.fast.scaled_dot_product_attention(t[0], t[1], t[2], scale=hd**-0.5)
    x = mx.fast.rms_norm(x + b.o(y.transpose(0, 2, 1, 3).reshape(B, S, D)), None, 1e-5)
    g, u = mx.split(b.gate_up(x), 2, axis=-1)
    return mx.fast.rms_norm(x + b.down(nn.silu(g) * u), None, 1e-5)


def test_fast_block_matches_the_plain_formulation():
    mx.random.seed(4)
    b = Block(64, 4, 4.0)
    x = mx.random.normal((5, 7, 64))
    w = mx.random.normal((5, 7, 64))
    assert float(mx.abs(mx.compile(b)(x) - _reference_block(b, x)).max()) < 1e-5
    g1 = nn.value_and_grad(b, lambda v: (b(v) * w).sum())(x)[1]
    g2 = nn.value_and_grad(b, lambda v: (_reference_block(b, v) * w).sum())(x)[1]
    assert _max_diff(g1, g2) < 1e-4


def test_target_stats_make_zero_head_predict_the_mean():
    model = make()
    rng = np.random.default_rng(3)
    hi = rng.normal(0.012, 0.006, 500)
    lo = rng.normal(-0.011, 0.005, 500)
    y = np.stack([hi, lo], 1)
    stats = model.set_target_stats(y)
    assert stats["scale"] > 0
    model.head.weight = mx.zeros_like(model.head.weight)
    pred = np.array(model(mx.random.normal((4, T, F))))
    mid = ((hi + lo) / 2).mean()
    half = ((hi - lo) / 2).mean()
    np.testing.assert_allclose(pred[:, 0], mid + half, rtol=1e-4)
    np.testing.assert_allclose(pred[:, 1], mid - half, rtol=1e-4)


def test_shapes_and_param_counts():
    model = make(halt_max_steps=3)
    x = mx.random.normal((2, T, F))
    emb = model.embed(x)
    assert emb[0].shape == (2, T + 1, 32) and emb[1] is None
    carry = model.initial_carry(2)
    (zH, zL), pred, qh, qc = model.segment(carry, emb)
    assert zH.shape == zL.shape == (2, T + 1, 32)
    assert pred.shape == (2, 2) and qh.shape == qc.shape == (2,)
    counts = model.param_counts()
    assert counts["trainable"] + counts["buffers"] == counts["total"]
    assert counts["embed"] + counts["h_module"] + counts["l_module"] + counts["head"] + counts["q_head"] == counts["trainable"]
    with pytest.raises(ValueError):
        model.embed(mx.zeros((2, T + 1, F)))


_HYP_MODEL = {}


def _hyp_model() -> HRM:
    if "m" not in _HYP_MODEL:
        m = make(seed=7, h_cycles=1, l_cycles=1)
        m.set_target_stats(np.random.default_rng(0).normal([0.01, -0.01], 0.01, (100, 2)))
        _HYP_MODEL["m"] = m
    return _HYP_MODEL["m"]


_extreme = st.one_of(
    st.floats(-10, 10, width=32, allow_subnormal=False),
    st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    st.sampled_from([0.0, -0.0, 1e-38, -1e-38, 1e30, -1e30, float("inf"), float("-inf")]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=hnp.arrays(np.float32, (4, T, F), elements=_extreme),
    head_scale=st.sampled_from([0.0, 1.0, 1e3, 1e6]),
)
def test_high_never_below_low(x, head_scale):
    model = _hyp_model()
    w0 = model.head.weight
    try:
        model.head.weight = w0 * head_scale
        pred = np.array(model(mx.array(x)))
    finally:
        model.head.weight = w0
    assert not np.isnan(pred).any()
    assert (pred[:, 0] >= pred[:, 1]).all()


@settings(max_examples=40, deadline=None)
@given(
    ab=hnp.arrays(np.float32, (8, 2), elements=st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)),
    scale=st.floats(1e-6, 1e3),
    c_mid=st.floats(-1.0, 1.0),
)
def test_head_orders_high_and_low_for_any_raw_output(ab, scale, c_mid):
    """The head on its own: any raw output (a, b), any target stats -> high >= low."""
    model = _hyp_model()
    b = model.buffers
    saved = (b.c_mid, b.scale, b.b0, model.head.weight, model.head.bias)
    try:
        b.c_mid, b.scale = mx.array([c_mid], mx.float32), mx.array([scale], mx.float32)
        model.head.weight = mx.eye(2, 32)  # (a, b) = the first two features of z_H[:, 0]
        model.head.bias = mx.zeros((2,))
        z = np.zeros((8, T + 1, 32), np.float32)
        z[:, 0, :2] = ab
        pred, _, _ = model.heads(mx.array(z))
        pred = np.array(pred)
    finally:
        b.c_mid, b.scale, b.b0, model.head.weight, model.head.bias = saved
    assert not np.isnan(pred).any()
    assert (pred[:, 0] >= pred[:, 1]).all()


def test_two_clocks_route_the_last_days_context_to_H_only():
    """h_context = 2: L's injection ignores the context columns, H reads them from the
    window's last day only, and they change the forecast."""
    model = make(h_context=2)
    x = np.random.default_rng(0).normal(size=(3, T, F)).astype(np.float32)
    x_in, ctx = model.embed(mx.array(x))
    assert x_in.shape == (3, T + 1, 32) and ctx.shape == (3, 1, 32)
    base = np.array(model(mx.array(x)))

    earlier = x.copy()
    earlier[:, :-1, -2:] += 5.0  # context columns of the earlier days: ignored everywhere
    np.testing.assert_array_equal(np.array(model(mx.array(earlier))), base)

    last = x.copy()
    last[:, -1, -2:] += 1.0  # today's context: H sees it, L's injection does not
    x_in2, ctx2 = model.embed(mx.array(last))
    np.testing.assert_array_equal(np.array(x_in2), np.array(x_in))
    assert not np.allclose(np.array(ctx2), np.array(ctx))
    assert np.abs(np.array(model(mx.array(last))) - base).max() > 1e-6
    counts = model.param_counts()
    assert counts["embed"] == (F - 2) * 32 + 32 + 2 * 32 + 32 + 32 + (T + 1) * 32
    with pytest.raises(Exception, match="h_context"):
        HRM(small_cfg(h_context=F))
