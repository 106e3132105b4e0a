"""The Hierarchical Reasoning Model (HRM) for next-session high/low regression, in MLX.

A faithful port of sapientinc/HRM ``models/hrm/hrm_act_v1.py`` with a regression head:

* Two recurrent modules, H (slow) and L (fast), each a stack of post-norm transformer blocks
  ``h = rmsnorm(h + attn(h)); h = rmsnorm(h + swiglu(h))``: RMSNorm without a learned scale,
  non-causal multi-head attention, SwiGLU, no biases, LeCun truncated-normal init.
* Inputs: a linear projection of each day's features, one leading summary position (learned,
  zero-init) that the heads read (HRM reads ``z_H[:, 0]``), learned positions for all
  ``seq_len + 1`` positions, combined as HRM does: ``0.7071 * (tokens + sqrt(d) * pos)``.
* One *segment*: ``z_L = L(z_L, z_H + x)`` runs ``H_cycles * L_cycles`` times and
  ``z_H = H(z_H, z_L)`` ``H_cycles`` times; every step but the last L and the last H step is
  cut from the gradient (``mx.stop_gradient``): HRM's one-step gradient.  The input goes into
  L only; H reads z_L.
* ``H_init`` / ``L_init`` (truncated normal, std 1) and the target statistics of the head are
  fixed buffers: saved with the weights, never trained (frozen submodule ``buffers``).
* High/low head in log-ratio space, ``high >= low`` by construction::

      mid  = c_mid + s * a
      half = s * softplus(b + b0)
      high, low = mid + half, mid - half

  with ``(a, b) = head(z_H[:, 0])`` and the fixed buffers ``c_mid``, ``s``, ``b0`` set from
  the training targets (``set_target_stats``), so the network works on a unit scale.
* ACT: ``q_head`` (zero weights, bias -5) gives ``(q_halt_logit, q_continue_logit)``.

The training loop, losses and halting live in ``finhrm_cli.engine``.
"""

from __future__ import annotations

import math

import numpy as np

from finhrm_cli.blas import mlx_core
from finhrm_cli.config import ModelConfig

mx = mlx_core()
import mlx.nn as nn  # noqa: E402  (after the BLAS loader, on purpose)
from mlx.utils import tree_flatten  # noqa: E402

RMS_EPS = 1e-5          # HRM's rms_norm_eps
EMBED_MIX = 0.707106781  # HRM: scale (token + position) by 1/sqrt(2) to keep unit variance
INPUT_CLIP = 1e3         # inputs are z-scores; clip so a corrupt row cannot overflow float32
HEAD_CLIP = 1e4          # raw head outputs, in target standard deviations; keeps high/low finite
Q_INIT_BIAS = -5.0       # HRM's q_head bias init


# ---------------------------------------------------------------------------------------------
# init and fast elementwise functions


def trunc_normal(shape, std: float, lower: float = -2.0, upper: float = 2.0) -> mx.array:
    """HRM's ``trunc_normal_init_``: truncated at +-2 sigma with the std *corrected* so the
    truncated distribution really has standard deviation ``std`` (as JAX/flax do)."""
    if std == 0:
        return mx.zeros(shape)
    sqrt2 = math.sqrt(2.0)
    z = (math.erf(upper / sqrt2) - math.erf(lower / sqrt2)) / 2
    c = (2 * math.pi) ** -0.5
    pdf_u = c * math.exp(-0.5 * lower**2)
    pdf_l = c * math.exp(-0.5 * upper**2)
    comp_std = std / math.sqrt(1 - (upper * pdf_u - lower * pdf_l) / z - ((pdf_u - pdf_l) / z) ** 2)
    return mx.random.truncated_normal(lower, upper, shape) * comp_std


# Eigen's rational approximation of tanh on [-7.9053, 7.9053] (max error a few float32 ulp).
# MLX on CPU evaluates exp/tanh/sigmoid through libm one element at a time; this expression
# is multiplies, adds, one divide and a clip, which mx.compile fuses into one fast kernel.
_TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
           5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
           4.89352455891786e-03)
_TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
           4.89352518554385e-03)
_TANH_CLIP = 7.90531110763549805


def fast_tanh(x: mx.array) -> mx.array:
    x = mx.clip(x, -_TANH_CLIP, _TANH_CLIP)
    x2 = x * x
    p = _TANH_P[0]
    for c in _TANH_P[1:]:
        p = p * x2 + c
    q = _TANH_Q[0]
    for c in _TANH_Q[1:]:
        q = q * x2 + c
    return x * p / q


def fast_silu(x: mx.array) -> mx.array:
    """``x * sigmoid(x)`` as ``x * (1 + tanh(x/2)) / 2`` with the rational tanh
    (max abs error ~3e-6 at |x| ~ 16, relative ~2e-7; about 12x faster on CPU once compiled)."""
    return x * (0.5 + 0.5 * fast_tanh(0.5 * x))


def rms_norm(x: mx.array) -> mx.array:
    return mx.fast.rms_norm(x, None, RMS_EPS)


def swiglu_width(d: int, expansion: float) -> int:
    """HRM: round(expansion * d * 2/3), rounded up to a multiple of 16."""
    inter = int(round(expansion * d * 2 / 3))
    return -(-inter // 16) * 16


def _linear(fan_in: int, fan_out: int, bias: bool = False) -> nn.Linear:
    """HRM CastedLinear: LeCun truncated-normal weight, zero bias."""
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    layer.weight = trunc_normal((fan_out, fan_in), 1.0 / math.sqrt(fan_in))
    if bias:
        layer.bias = mx.zeros((fan_out,))
    return layer


# ---------------------------------------------------------------------------------------------
# modules


class Block(nn.Module):
    """Post-norm transformer block: attention then SwiGLU, each followed by RMSNorm."""

    def __init__(self, d: int, heads: int, expansion: float):
        super().__init__()
        self.n_heads = heads
        self.head_dim = d // heads
        self.inter = swiglu_width(d, expansion)
        self.qkv = _linear(d, 3 * d)
        self.o = _linear(d, d)
        self.gate_up = _linear(d, 2 * self.inter)
        self.down = _linear(self.inter, d)

    def attention(self, x: mx.array) -> mx.array:
        B, S, D = x.shape
        qkv = self.qkv(x).reshape(B, S, 3, self.n_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        y = mx.fast.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], scale=self.head_dim**-0.5
        )
        return self.o(y.transpose(0, 2, 1, 3).reshape(B, S, D))

    def mlp(self, x: mx.array) -> mx.array:
        gate, up = mx.split(self.gate_up(x), 2, axis=-1)
        return self.down(fast_silu(gate) * up)

    def __call__(self, x: mx.array) -> mx.array:
        x = rms_norm(x + self.attention(x))
        return rms_norm(x + self.mlp(x))


class ReasoningModule(nn.Module):
    """HRM's reasoning module: add the input injection, then run the blocks."""

    def __init__(self, n_layers: int, d: int, heads: int, expansion: float):
        super().__init__()
        self.layers = [Block(d, heads, expansion) for _ in range(n_layers)]

    def __call__(self, z: mx.array, injection: mx.array) -> mx.array:
        z = z + injection
        for layer in self.layers:
            z = layer(z)
        return z


class Buffers(nn.Module):
    """Fixed arrays saved with the weights but never trained (kept frozen by HRM)."""

    def __init__(self, d: int):
        super().__init__()
        self.H_init = trunc_normal((d,), 1.0)
        self.L_init = trunc_normal((d,), 1.0)
        # head statistics (log-ratio units); identity until set_target_stats
        self.c_mid = mx.zeros((1,))
        self.scale = mx.ones((1,))
        self.b0 = mx.array([_inv_softplus(1.0)], dtype=mx.float32)


def _inv_softplus(v: float) -> float:
    v = max(float(v), 1e-6)
    return v + math.log(-math.expm1(-v))  # log(exp(v) - 1), stable for small and large v


class HRM(nn.Module):
    """HRM regressor.  ``segment`` is one ACT step; ``__call__`` runs ``steps`` segments."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        if cfg.n_out != 2:
            raise ValueError(f"the high/low head has 2 outputs (got n_out={cfg.n_out})")
        self.cfg = cfg
        d = cfg.d_model
        self.seq = cfg.seq_len + 1  # one leading summary position
        self.embed_in = _linear(cfg.n_features, d, bias=True)
        self.summary = mx.zeros((1, d))
        self.pos = trunc_normal((self.seq, d), 1.0 / math.sqrt(d))
        self.H = ReasoningModule(cfg.h_layers, d, cfg.n_heads, cfg.expansion)
        self.L = ReasoningModule(cfg.l_layers, d, cfg.n_heads, cfg.expansion)
        self.head = _linear(d, 2, bias=True)
        self.q_head = nn.Linear(d, 2, bias=True)
        self.q_head.weight = mx.zeros((2, d))
        self.q_head.bias = mx.full((2,), Q_INIT_BIAS)
        self.buffers = Buffers(d)
        self.buffers.freeze()

    # -- buffers ---------------------------------------------------------------------------

    def unfreeze(self, *args, **kwargs):
        super().unfreeze(*args, **kwargs)
        self.buffers.freeze()  # the buffers are never trainable
        return self

    def set_target_stats(self, y) -> dict:
        """Fix the head's centre, scale and half-range offset from training targets ``y``
        (n, 2) = [log(high/close), log(low/close)].  Returns the stats as floats."""
        y = np.asarray(y, dtype=np.float64).reshape(-1, 2)
        y = y[np.isfinite(y).all(axis=1)]
        if len(y) == 0:
            raise ValueError("set_target_stats needs at least one finite target row")
        c_mid = float(np.mean((y[:, 0] + y[:, 1]) / 2))
        s = float(np.sqrt((np.var(y[:, 0]) + np.var(y[:, 1])) / 2))  # pooled within-column std
        s = max(s, 1e-6) if np.isfinite(s) else 1.0
        half = float(np.mean((y[:, 0] - y[:, 1]) / 2))
        b0 = _inv_softplus(max(half / s, 1e-6))
        self.buffers.c_mid = mx.array([c_mid], dtype=mx.float32)
        self.buffers.scale = mx.array([s], dtype=mx.float32)
        self.buffers.b0 = mx.array([b0], dtype=mx.float32)
        return {"c_mid": c_mid, "scale": s, "b0": b0}

    # -- forward pieces --------------------------------------------------------------------

    def initial_carry(self, batch: int) -> tuple[mx.array, mx.array]:
        shape = (batch, self.seq, self.cfg.d_model)
        return (mx.broadcast_to(self.buffers.H_init, shape),
                mx.broadcast_to(self.buffers.L_init, shape))

    def embed(self, x: mx.array) -> mx.array:
        """(B, seq_len, n_features) -> (B, seq_len + 1, d)."""
        if x.ndim != 3 or x.shape[1] != self.cfg.seq_len or x.shape[2] != self.cfg.n_features:
            raise ValueError(
                f"expected inputs of shape (batch, {self.cfg.seq_len}, {self.cfg.n_features}), "
                f"got {tuple(x.shape)}"
            )
        x = mx.clip(x.astype(mx.float32), -INPUT_CLIP, INPUT_CLIP)
        tok = self.embed_in(x)
        summary = mx.broadcast_to(self.summary[None], (x.shape[0], 1, self.cfg.d_model))
        tok = mx.concatenate([summary, tok], axis=1)
        return EMBED_MIX * (tok + math.sqrt(self.cfg.d_model) * self.pos)

    def heads(self, z_H: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        s_tok = z_H[:, 0]
        ab = mx.clip(self.head(s_tok), -HEAD_CLIP, HEAD_CLIP)  # 1e4 sd: never a real forecast
        b = self.buffers
        mid = b.c_mid + b.scale * ab[:, 0]
        half = b.scale * nn.softplus(ab[:, 1] + b.b0)
        pred = mx.stack([mid + half, mid - half], axis=-1)
        q = self.q_head(s_tok)
        return pred, q[:, 0], q[:, 1]

    def segment(self, carry, x_emb: mx.array):
        """One ACT segment.  Returns (new_carry (detached), pred (B, 2) log ratios
        [high, low], q_halt_logit (B,), q_continue_logit (B,))."""
        z_H, z_L = carry
        hc, lc = self.cfg.h_cycles, self.cfg.l_cycles
        for h in range(hc):
            for l in range(lc):
                if h == hc - 1 and l == lc - 1:
                    break
                z_L = self.L(z_L, z_H + x_emb)
            if h != hc - 1:
                z_H = self.H(z_H, z_L)
        # one-step gradient: only the last L and the last H step are differentiated
        z_H, z_L = mx.stop_gradient(z_H), mx.stop_gradient(z_L)
        z_L = self.L(z_L, z_H + x_emb)
        z_H = self.H(z_H, z_L)
        pred, q_halt, q_cont = self.heads(z_H)
        return (mx.stop_gradient(z_H), mx.stop_gradient(z_L)), pred, q_halt, q_cont

    def __call__(self, x: mx.array, steps: int | None = None) -> mx.array:
        """Prediction after ``steps`` segments (default ``halt_max_steps``)."""
        steps = self.cfg.halt_max_steps if steps is None else steps
        x_emb = self.embed(x)
        carry = self.initial_carry(x.shape[0])
        pred = None
        for _ in range(max(1, steps)):
            carry, pred, _, _ = self.segment(carry, x_emb)
        return pred

    # -- bookkeeping -----------------------------------------------------------------------

    def param_counts(self) -> dict:
        """Parameter counts per part; 'buffers' are frozen, 'trainable' excludes them."""

        def count(tree) -> int:
            return int(sum(v.size for _, v in tree_flatten(tree)))

        p = self.parameters()
        out = {
            "embed": count(p["embed_in"]) + self.summary.size + self.pos.size,
            "H": count(p["H"]),
            "L": count(p["L"]),
            "head": count(p["head"]),
            "q_head": count(p["q_head"]),
            "buffers": count(p["buffers"]),
        }
        out["trainable"] = count(self.trainable_parameters())
        out["total"] = count(p)
        return out
