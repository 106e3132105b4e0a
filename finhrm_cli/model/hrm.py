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
* Two clocks (``h_context > 0``, not in HRM): the last ``h_context`` feature columns are a
  slow context (quarter- to year-long ranges, volatility and momentum).  L reads the daily
  columns of every day; H reads z_L plus a linear embedding of the context of the window's
  last day, added at every position: ``z_H = H(z_H, z_L + ctx)``.  The daily L module then
  learns the context only through z_H, so the exchange between the two carries information
  one module alone does not have.
* ``H_init`` / ``L_init`` (truncated normal, std 1) and the target statistics of the head are
  fixed buffers: saved with the weights, never trained (frozen submodule ``buffers``).
* CPU speed: attention runs all heads of a sample in two matmuls (block-diagonal layout),
  and SiLU, exp, rsqrt are polynomial/bit-trick versions with explicit gradients (see
  "fast elementwise math" below); the results match the plain formulas to ~1e-6.
* High/low head in log-ratio space, ``high >= low`` by construction::

      mid  = c_mid + s * a
      half = s * softplus(b + b0)
      high, low = mid + half, mid - half

  with ``(a, b) = head(z_H[:, 0])`` and the fixed buffers ``c_mid``, ``s``, ``b0`` set from
  the training targets (``set_target_stats``), so the network works on a unit scale.
  Raw (a, b) are clipped to +-1e4 target standard deviations, so high/low stay finite.
* ACT: ``q_head`` (zero weights, bias -5) gives ``(q_halt_logit, q_continue_logit)``.
  The buffer ``halt_ref`` holds the running reference error of the halting reward (see
  ``finhrm_cli.train.halting``); the training step updates it, the optimiser never does.

The training loop, losses and halting live in ``finhrm_cli.train.step``.
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
HALT_REF_INIT = 1.0      # initial halting reference: one target standard deviation


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


# --- fast elementwise math ------------------------------------------------------------------
# MLX on CPU evaluates exp/tanh/sigmoid/rsqrt/floor through libm one element at a time, and
# mx.compile fuses them into kernels built without fast-math, where they stay scalar calls
# (an rsqrt fused into a broadcast multiply is even recomputed per output element).  The
# functions below use only multiply/add/divide/clip, integer shifts and bit casts, which the
# compiled kernels run fast.  Their gradients are given explicitly (mx.custom_function), so
# the backward pass never differentiates a polynomial.

# sigmoid(x) = 1/2 + x P(x^2) / Q(x^2) on |x| <= 16: a rational tanh(x/2) fitted minimax-style
# on [0, 8] (degrees 9/6 in x); max error 2.5e-7 for the sigmoid over all float32 inputs.
_SIG_P = (0.24999976624321146, 0.00793736362021999, 4.194523818840546e-05,
          2.7669723921168603e-08, -5.878898220564061e-12)
_SIG_Q = (1.0, 0.11508193628271368, 0.0014248369132583863, 3.051548051253865e-06)
_SIG_CLIP = 16.0
_ROUND = 12582912.0  # 1.5 * 2**23: (t + _ROUND) - _ROUND rounds a float32 to the nearest integer


def _poly(coefs, u):
    acc = coefs[-1]
    for c in coefs[-2::-1]:
        acc = acc * u + c
    return acc


def fast_sigmoid(x: mx.array) -> mx.array:
    xc = mx.clip(x, -_SIG_CLIP, _SIG_CLIP)
    u = xc * xc
    return 0.5 + xc * _poly(_SIG_P, u) / _poly(_SIG_Q, u)


def fast_silu(x: mx.array) -> mx.array:
    """``x * sigmoid(x)`` with the rational sigmoid (abs error < 1e-5 for |x| < 40, relative
    2.5e-7); on CPU about 15x faster than ``x * mx.sigmoid(x)`` once compiled."""
    return x * fast_sigmoid(x)


def fast_exp(x: mx.array) -> mx.array:
    """exp for float32 (relative error < 4e-6): Cephes' range reduction and polynomial, the
    power of two built in the exponent bits.  Not differentiable on its own (see fast_softmax)."""
    x = mx.clip(x, -87.0, 88.0)
    n = (x * 1.4426950408889634 + _ROUND) - _ROUND
    r = x - n * 0.693359375
    r = r + n * 2.12194440e-4
    p = 1.9875691500e-4
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = p * r + c
    y = p * r * r + r + 1.0
    return y * mx.view((n.astype(mx.int32) + 127) << 23, mx.float32)


def fast_rsqrt(v: mx.array) -> mx.array:
    """1/sqrt(v) for positive float32: bit-trick guess and three Newton steps (rel. error 2e-7)."""
    r = mx.view(0x5F375A86 - (mx.view(v, mx.int32) >> 1), mx.float32)
    h = 0.5 * v
    for _ in range(3):
        r = r * (1.5 - h * r * r)
    return r


@mx.custom_function
def fast_softmax(s: mx.array) -> mx.array:
    """Softmax over the last axis."""
    e = fast_exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@fast_softmax.vjp
def _fast_softmax_vjp(primals, cotangent, output):
    return (output * (cotangent - (cotangent * output).sum(axis=-1, keepdims=True)),)


@mx.custom_function
def rms_norm(x: mx.array) -> mx.array:
    """RMSNorm without a learned scale: ``x / sqrt(mean(x**2) + eps)``."""
    return x * fast_rsqrt(mx.mean(x * x, axis=-1, keepdims=True) + RMS_EPS)


@rms_norm.vjp
def _rms_norm_vjp(primals, cotangent, output):
    x = primals[0] if isinstance(primals, (list, tuple)) else primals
    r = fast_rsqrt(mx.mean(x * x, axis=-1, keepdims=True) + RMS_EPS)
    return (r * (cotangent - output * mx.mean(cotangent * output, axis=-1, keepdims=True)),)


@mx.custom_function
def swiglu(gate: mx.array, up: mx.array) -> mx.array:
    """``silu(gate) * up``."""
    return fast_silu(gate) * up


@swiglu.vjp
def _swiglu_vjp(primals, cotangent, output):
    gate, up = primals
    sig = fast_sigmoid(gate)
    silu = gate * sig
    return cotangent * up * (sig + silu * (1.0 - sig)), cotangent * silu


def block_diagonal(t: mx.array, eye: mx.array) -> mx.array:
    """(B, H, a, b) -> (B, H*a, H*b) with the H blocks on the diagonal, zeros elsewhere."""
    B, H, a, b = t.shape
    return (t[:, :, :, None, :] * eye[None, :, None, :, None]).reshape(B, H * a, H * b)


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
        """Non-causal multi-head attention with all heads of a sample in two matmuls:

        * scores: q (S, H*hd) @ keys laid out block-diagonally over heads (H*hd, H*S),
        * output: probabilities block-diagonal over heads (S*H, H*S) @ values (H*S, hd),
          which comes out as (S, H*hd), the merged-head layout.

        The same numbers as per-head attention, with 2*B small matmuls instead of 2*B*H
        tiny ones (each BLAS call has a fixed cost that dominates at S ~ 10 on CPU)."""
        B, S, D = x.shape
        H, hd = self.n_heads, self.head_dim
        w = self.qkv.weight  # one (3d, d) weight as in HRM; three matmuls give contiguous q, k, v
        q, k, v = x @ w[:D].T, x @ w[D:2 * D].T, x @ w[2 * D:].T
        eye = mx.eye(H, dtype=x.dtype)
        k_bd = block_diagonal(k.reshape(B, S, H, hd).transpose(0, 2, 3, 1), eye)  # (B, H*hd, H*S)
        p = fast_softmax(((q * hd**-0.5) @ k_bd).reshape(B, S, H, S))
        p_bd = (p[:, :, :, None, :] * eye[None, None, :, :, None]).reshape(B, S * H, H * S)
        v_st = v.reshape(B, S, H, hd).transpose(0, 2, 1, 3).reshape(B, H * S, hd)
        return self.o((p_bd @ v_st).reshape(B, S, D))

    def mlp(self, x: mx.array) -> mx.array:
        w, n = self.gate_up.weight, self.inter  # contiguous halves: faster elementwise and backward
        return self.down(swiglu(x @ w[:n].T, x @ w[n:].T))

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
        # ACT halting reward: running median of recent training errors (unit target scale);
        # not trained by the optimiser, updated by the training step (finhrm_cli.train.halting)
        self.halt_ref = mx.array([HALT_REF_INIT], dtype=mx.float32)


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
        self.embed_in = _linear(cfg.n_features - cfg.h_context, d, bias=True)
        if cfg.h_context:
            self.ctx_in = _linear(cfg.h_context, d, bias=True)
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

    def embed(self, x: mx.array) -> tuple[mx.array, mx.array | None]:
        """(B, seq_len, n_features) -> (L's input injection (B, seq_len + 1, d), H's slow
        context (B, 1, d), or None without two clocks)."""
        if x.ndim != 3 or x.shape[1] != self.cfg.seq_len or x.shape[2] != self.cfg.n_features:
            raise ValueError(
                f"expected inputs of shape (batch, {self.cfg.seq_len}, {self.cfg.n_features}), "
                f"got {tuple(x.shape)}"
            )
        x = mx.clip(x.astype(mx.float32), -INPUT_CLIP, INPUT_CLIP)
        n_daily = self.cfg.n_features - self.cfg.h_context
        ctx = self.ctx_in(x[:, -1:, n_daily:]) if self.cfg.h_context else None
        tok = self.embed_in(x[:, :, :n_daily] if self.cfg.h_context else x)
        summary = mx.broadcast_to(self.summary[None], (x.shape[0], 1, self.cfg.d_model))
        tok = mx.concatenate([summary, tok], axis=1)
        return EMBED_MIX * (tok + math.sqrt(self.cfg.d_model) * self.pos), ctx

    def heads(self, z_H: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        s_tok = z_H[:, 0]
        ab = mx.clip(self.head(s_tok), -HEAD_CLIP, HEAD_CLIP)  # 1e4 sd: never a real forecast
        b = self.buffers
        mid = b.c_mid + b.scale * ab[:, 0]
        half = b.scale * mx.logaddexp(ab[:, 1] + b.b0, 0.0)  # softplus; nn.softplus is mx.compile-d (a JIT kernel)
        pred = mx.stack([mid + half, mid - half], axis=-1)
        q = self.q_head(s_tok)
        if self.cfg.halt_head == "trm":  # one halting head: "continue" is the even odds, P = 0.5
            return pred, q[:, 0], mx.zeros_like(q[:, 1])
        return pred, q[:, 0], q[:, 1]

    def _h_step(self, z_H: mx.array, z_L: mx.array, ctx: mx.array | None) -> mx.array:
        return self.H(z_H, z_L if ctx is None else z_L + ctx)

    def segment_prefix(self, carry, x_emb):
        """The no-gradient part of a segment: every L and H step but the last of each.
        ``x_emb`` is ``embed``'s pair.  Returns the carry the last two steps start from
        (detached)."""
        z_H, z_L = carry
        x_in, ctx = x_emb
        hc, lc = self.cfg.h_cycles, self.cfg.l_cycles
        for h in range(hc):
            for l in range(lc):
                if h == hc - 1 and l == lc - 1:
                    break
                z_L = self.L(z_L, z_H + x_in)
            if h != hc - 1:
                z_H = self._h_step(z_H, z_L, ctx)
        return mx.stop_gradient(z_H), mx.stop_gradient(z_L)

    def segment_final(self, pre, x_emb):
        """The last L and the last H step of a segment (the ones with a gradient) and the heads."""
        z_H, z_L = pre
        x_in, ctx = x_emb
        z_L = self.L(z_L, z_H + x_in)
        z_H = self._h_step(z_H, z_L, ctx)
        pred, q_halt, q_cont = self.heads(z_H)
        return (mx.stop_gradient(z_H), mx.stop_gradient(z_L)), pred, q_halt, q_cont

    def segment(self, carry, x_emb):
        """One ACT segment.  Returns (new_carry (detached), pred (B, 2) log ratios
        [high, low], q_halt_logit (B,), q_continue_logit (B,)).  One-step gradient: only the
        last L and the last H step are differentiated."""
        return self.segment_final(self.segment_prefix(carry, x_emb), x_emb)

    def __call__(self, x: mx.array, steps: int | None = None) -> mx.array:
        """Prediction after ``steps`` segments (default ``halt_max_steps``)."""
        steps = self.cfg.halt_max_steps if steps is None else steps
        x_emb = self.embed(x)
        carry = self.initial_carry(x.shape[0])
        pred = None
        for _ in range(max(1, steps)):
            carry, pred, _, _ = self.segment(carry, x_emb)
        return pred

    def load_weights(self, file_or_weights, strict: bool = True):
        """As ``nn.Module.load_weights``; a model saved before the halting reference existed
        loads with the initial reference (its Q head was not trained against one)."""
        if isinstance(file_or_weights, list) and file_or_weights:
            if not any(k == "buffers.halt_ref" for k, _ in file_or_weights):
                file_or_weights = [*file_or_weights, ("buffers.halt_ref", mx.array([HALT_REF_INIT], dtype=mx.float32))]
        return super().load_weights(file_or_weights, strict=strict)

    # -- bookkeeping -----------------------------------------------------------------------

    def param_counts(self) -> dict:
        """Parameter counts per part; 'buffers' are frozen, 'trainable' excludes them."""

        def count(tree) -> int:
            return int(sum(v.size for _, v in tree_flatten(tree)))

        p = self.parameters()
        out = {
            "embed": count(p["embed_in"]) + count(p.get("ctx_in", {})) + self.summary.size + self.pos.size,
            "h_module": count(p["H"]),
            "l_module": count(p["L"]),
            "head": count(p["head"]),
            "q_head": count(p["q_head"]),
            "buffers": count(p["buffers"]),
        }
        out["trainable"] = count(self.trainable_parameters())
        out["total"] = count(p)
        return out
