"""Training of the HRM: loss, ACT targets and the compiled train step (MLX + numpy; never prints).

The loop around it (epochs, validation, early stopping, checkpoints) is ``finhrm_cli.train.loop``.

Progress goes to one callback as typed events (``finhrm_cli.train.events``): ``Started``,
``Stepped`` (every ``LOG_EVERY`` steps), ``Evaluated`` and ``Ended``.

Training follows HRM's ACT with deep supervision (sapientinc/HRM ``hrm_act_v1.py`` and its
``ACTLossHead``).  For each batch, for each of ``halt_max_steps`` segments:

1. the last L and H step of the segment, with gradient (HRM's one-step gradient; the
   no-gradient steps before them come from step 2 of the previous segment),
2. one more *no-gradient* segment pass from the new state, which gives the next segment's Q
   logits for the q_continue target (``finhrm_cli.train.halting``),
3. loss, backward, global-norm clipping and one AdamW step; the carry is detached.

**Reused Q-target pass.**  Step 2 runs exactly the no-gradient L and H steps the next segment
would start with, so the next segment starts from that pass's intermediate state and only
recomputes its last L and H step (with gradient).  Unlike HRM, those no-gradient steps ran
with the weights from before this segment's update: one update stale.  At learning rate 0
both are the same (``Trainer(reuse_pass=False)`` is HRM's schedule); per batch it saves
``M-1`` segment prefixes (``h_cycles * l_cycles - 1`` L and ``h_cycles - 1`` H steps).

A *step* (``TrainConfig``'s unit, what ``start.total_steps`` counts) is one batch of
``batch_size * grad_accum`` windows taken through all its segments; the optimizer makes one
update per segment, so ``halt_max_steps`` updates per step (the LR schedule runs over updates).

**Every segment is trained for every sample** (deep supervision): HRM replaces a halted
sample, our batches are fixed, so no sample leaves the loss (masking halted ones out left
later segments untrained).  The loss is the mean over the batch.  Halting during training
only feeds the statistics (``train_halt_steps``): a sample halts when
``q_halt > q_continue`` and always at the last segment; with probability
``halt_exploration`` (drawn afresh every segment, as HRM does) it first gets a random minimum
number of segments in [2, M].

**Halting reward** (``finhrm_cli.train.halting``): q_halt's target is 1 when the sample's error
is at or below ``halt_ref``, a running median of recent training errors kept in the model's
buffers (saved and resumed); q_continue's target is ``0.95 * sigmoid`` of the next segment's
best Q logit, a cost per segment.  The base rate stays near one half: P(halt) stays calibrated.

Loss per sample = regression loss (huber | mse | mae on ``(pred - y) / s``, mean of high and
low) + 0.5 * (BCE(q_halt, halt_target) + BCE(q_continue, continue_target)).  With
``halt_max_steps == 1`` there is no extra pass and no q_continue loss (as in HRM).

**Weight averaging** (``TrainConfig.ema``, not in HRM): after every step the trainable
weights are folded into an exponential moving average with decay ``min(ema, (1+n)/(10+n))``
at step ``n`` (the warm-up keeps the random initialisation from lingering; on a few thousand
windows it is the binding term, so the average spans roughly the last tenth of the steps).
Validation, early stopping and the saved model use the average; the optimiser keeps
stepping the raw weights, and both are in the resumable state.

Evaluation and prediction: ``finhrm_cli.forecast.inference``.
"""

from __future__ import annotations

import math
from functools import partial

from finhrm_cli.blas import mlx_core
from finhrm_cli.config import ModelConfig, TrainConfig
from finhrm_cli.errors import RunError

mx = mlx_core()
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
from mlx.utils import tree_flatten, tree_map, tree_unflatten  # noqa: E402

from finhrm_cli.model.hrm import HRM  # noqa: E402
from finhrm_cli.train.halting import halt_targets, next_reference  # noqa: E402

LOG_EVERY = 10          # steps between "step" events (and loss read-backs)
FINAL_LR_FRAC = 0.1     # cosine decay ends at 10 % of the peak learning rate
BETAS = (0.9, 0.95)     # HRM's AdamATan2 betas



class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training.  The resumable state was saved in ``run_path`` (if a run)."""

    def __init__(self, run_path=None, summary: dict | None = None):
        msg = "training interrupted" + (f"; state saved in {run_path}" if run_path else "")
        super().__init__(msg)
        self.run_path = run_path
        self.summary = summary or {}


# ---------------------------------------------------------------------------------------------
# building blocks


def build_model(model_cfg: ModelConfig, seed: int = 0) -> HRM:
    """A freshly initialised HRM; the same seed gives the same weights."""
    mx.random.seed(int(seed))
    model = HRM(model_cfg)
    mx.eval(model.parameters())
    return model


def lr_schedule(lr: float, total_updates: int, warmup_updates: int, final_frac: float = FINAL_LR_FRAC):
    """Linear warmup to ``lr`` over ``warmup_updates``, then cosine decay to ``final_frac*lr``."""
    total = max(1, int(total_updates))
    warm = max(0, min(int(warmup_updates), total))
    span = max(1, total - warm)

    def schedule(step):
        t = step.astype(mx.float32)
        prog = mx.clip((t - warm) / span, 0.0, 1.0)
        cos = lr * (final_frac + (1.0 - final_frac) * 0.5 * (1.0 + mx.cos(math.pi * prog)))
        if warm == 0:
            return cos
        return mx.where(t < warm, lr * (t + 1.0) / warm, cos)

    return schedule


def regression_loss(r: mx.array, kind: str, delta: float = 1.0) -> mx.array:
    """Elementwise loss of residuals ``r`` in unit target scale."""
    if kind == "mse":
        return r * r
    a = mx.abs(r)
    if kind == "mae":
        return a
    return mx.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def bce_logits(logits: mx.array, target: mx.array) -> mx.array:
    return mx.logaddexp(0.0, logits) - logits * target


def flat(tree) -> dict:
    return dict(tree_flatten(tree))


# ---------------------------------------------------------------------------------------------
# the compiled training step


class Trainer:
    """Owns the optimizer and the compiled per-segment training step.

    ``step = partial(mx.compile, inputs=state, outputs=state)(...)`` with
    ``state = [model.state, optimizer.state, rng]``.  ``rng`` is our own key (split inside the
    step for halting exploration) rather than ``mx.random.state``, because a key we hold can be
    saved and restored for an exact ``--resume``.
    """

    def __init__(self, model: HRM, train_cfg: TrainConfig, total_updates: int, *, seed: int = 0,
                 reuse_pass: bool = True, scheduled: bool = True):
        self.model = model
        self.cfg = train_cfg
        mcfg = model.cfg
        self.M = int(mcfg.halt_max_steps)
        self.explore = float(mcfg.halt_exploration)
        self.reuse = bool(reuse_pass) and self.M > 1 and model.cfg.halt_head != "trm"  # module docstring
        # Data parallel (finhrm_cli.distributed): each process holds batch_size / world
        # samples of every global batch; the loss is a mean over the local samples and the
        # gradients are averaged over processes inside the compiled step, which equals the
        # single-process mean over the global batch.
        from finhrm_cli import distributed

        self.world, self.rank = distributed.size(), distributed.rank()
        self.group = distributed.group() if self.world > 1 else None
        self.samples_per_step = train_cfg.batch_size * train_cfg.grad_accum // self.world
        warmup = int(round(train_cfg.warmup_frac * total_updates))
        self.lr_at = lr_schedule(train_cfg.lr, total_updates, warmup)
        self.optimizer = optim.AdamW(  # (not ``scheduled``: the caller sets it at every update)
            learning_rate=self.lr_at if scheduled else train_cfg.lr,
            betas=list(BETAS), weight_decay=train_cfg.weight_decay, bias_correction=True,
        )
        self.optimizer.init(model.trainable_parameters())
        self.rng = {"key": mx.random.split(mx.random.key(int(seed)), 2)[1]}
        self.carry: dict = {}  # carry-and-replace's slots (train.carry.CarryTrainer); part of the state
        self.state = [model.state, self.optimizer.state, self.rng, self.carry]
        self.loss_grad = nn.value_and_grad(model, self._loss)
        self._step = partial(mx.compile, inputs=self.state, outputs=self.state)(self._segment_step)
        self._prefix = partial(mx.compile, inputs=self.state)(self._first_prefix)
        self._segs = [mx.array(s, dtype=mx.int32) for s in range(self.M)]
        # weight average (module docstring): None when TrainConfig.ema is 0
        self.ema = flat(model.trainable_parameters()) if train_cfg.ema > 0 else None

    def q_rows(self, batch: int) -> int:
        """Rows of a batch whose q_continue target is computed (all of them here; carry-and-
        replace computes it on a share, ``train.carry.Q_TARGET_SHARE``)."""
        return batch

    # -- pieces traced into the compiled step ----------------------------------------------

    def _first_prefix(self, x, zH, zL):
        """The first segment's no-gradient steps for every micro-batch (reused-pass schedule)."""
        pre = [self.model.segment_prefix((zH[a], zL[a]), self.model.embed(x[a])) for a in range(x.shape[0])]
        return mx.stack([p[0] for p in pre]), mx.stack([p[1] for p in pre])

    def _loss(self, x, y, zH, zL, is_last, w=None):
        """``(zH, zL)``: the segment's carry, or with the reused pass the state its last L
        and H step start from.  ``w`` (carry-and-replace): 1 for a batch slot holding a
        window, 0 for an empty one, which then adds nothing to the loss."""
        model = self.model
        x_emb = model.embed(x)
        pre = (zH, zL) if self.reuse else model.segment_prefix((zH, zL), x_emb)
        carry, pred, q_halt, q_cont = model.segment_final(pre, x_emb)
        r = (pred - y) / model.buffers.scale
        reg = regression_loss(r, self.cfg.loss, self.cfg.huber_delta).mean(axis=-1)
        err = mx.stop_gradient(mx.abs(r).mean(axis=-1))
        ref = model.buffers.halt_ref
        q = self.q_rows(x.shape[0])
        if self.M > 1 and model.cfg.halt_head == "trm":  # TRM: the halting target alone, no extra pass
            q_loss = bce_logits(q_halt, (err <= ref).astype(mx.float32))
        elif self.M > 1 and q < x.shape[0]:  # the q_continue target on the first q rows only
            xe = tuple(None if e is None else mx.stop_gradient(e[:q]) for e in x_emb)
            npre = model.segment_prefix((carry[0][:q], carry[1][:q]), xe)
            _, _, nq_halt, nq_cont = model.segment_final(npre, xe)
            last = is_last[:q] if isinstance(is_last, mx.array) and is_last.ndim else is_last
            halt_t, cont_t = halt_targets(err[:q], ref, mx.stop_gradient(nq_halt), mx.stop_gradient(nq_cont), last)
            cont = bce_logits(q_cont[:q], cont_t) * (x.shape[0] / q)  # importance weight: same expected loss
            q_loss = bce_logits(q_halt, (err <= ref).astype(mx.float32))
            q_loss = q_loss + mx.concatenate([cont, mx.zeros((x.shape[0] - q,))])
        elif self.M > 1:
            xe = tuple(None if e is None else mx.stop_gradient(e) for e in x_emb)
            npre = model.segment_prefix(carry, xe)
            _, _, nq_halt, nq_cont = model.segment_final(npre, xe)
            halt_t, cont_t = halt_targets(err, ref, mx.stop_gradient(nq_halt), mx.stop_gradient(nq_cont), is_last)
            q_loss = bce_logits(q_halt, halt_t) + bce_logits(q_cont, cont_t)
            if self.reuse:
                carry = npre
        else:
            q_loss = bce_logits(q_halt, (err <= ref).astype(mx.float32))
        if w is not None:
            reg, q_loss = reg * w, q_loss * w
        loss = (reg + 0.5 * q_loss).sum() / self.samples_per_step
        return loss, (carry, q_halt, q_cont, reg.sum(), q_loss.sum(), err)

    def update(self, x, y, zH, zL, is_last, w=None):
        """One segment for all micro-batches: grads summed over ``grad_accum`` micro-batches
        (unrolled), averaged over processes, clipped, one AdamW update, the halting reference
        moved (by the slots ``w`` holds, when given).  -> (reg_sum, q_sum, zH, zL, q_halt,
        q_cont), the carry and Q logits stacked (grad_accum, batch, ...)."""
        grads = None
        zHs, zLs, qhs, qcs, errs = [], [], [], [], []
        reg_sum = q_sum = mx.array(0.0)
        for a in range(x.shape[0]):
            last = is_last[a] if isinstance(is_last, mx.array) and is_last.ndim else is_last
            (_, aux), g = self.loss_grad(x[a], y[a], zH[a], zL[a], last, *(() if w is None else (w[a],)))
            (nzH, nzL), q_halt, q_cont, reg_a, q_a, err = aux
            grads = g if grads is None else tree_map(mx.add, grads, g)
            zHs.append(nzH); zLs.append(nzL); qhs.append(q_halt); qcs.append(q_cont); errs.append(err)
            reg_sum = reg_sum + reg_a
            q_sum = q_sum + q_a
        if self.world > 1:
            grads = nn.average_gradients(grads, group=self.group)
        if self.cfg.grad_clip and self.cfg.grad_clip > 0:
            grads, _ = optim.clip_grad_norm(grads, self.cfg.grad_clip)
        self.optimizer.update(self.model, grads)
        buf = self.model.buffers
        buf.halt_ref = next_reference(buf.halt_ref, mx.stack(errs), self.group, None if w is None else w > 0)
        return reg_sum, q_sum, mx.stack(zHs), mx.stack(zLs), mx.stack(qhs), mx.stack(qcs)

    def halts(self, steps, is_last, q_halt, q_cont):
        """Where each sample halts after this segment: its Q head says halt or it ran the last
        segment; with probability ``halt_exploration`` (drawn afresh every segment, as HRM
        does) it first runs a random minimum of segments in [2, M].  Drawn for the whole
        global batch and sliced, so N processes halt exactly as one would."""
        if self.M == 1:
            return mx.ones(q_halt.shape, dtype=mx.bool_)
        halted = mx.logical_or(is_last, q_halt > q_cont)
        if self.explore > 0:
            key, k1, k2 = mx.random.split(self.rng["key"], 3)
            self.rng["key"] = key
            A_, Bl = q_halt.shape
            lo, hi = self.rank * Bl, (self.rank + 1) * Bl
            explore = (mx.random.uniform(shape=(A_, Bl * self.world), key=k1) < self.explore)[:, lo:hi]
            min_halt = mx.where(explore, mx.random.randint(2, self.M + 1, (A_, Bl * self.world), key=k2)[:, lo:hi], 0)
            halted = mx.logical_and(halted, steps >= min_halt)
        return halted

    def _segment_step(self, x, y, zH, zL, active, halt_step, seg):
        """One segment of every sample (``update``); halting decisions for the statistics
        only: every sample is trained.  All shapes fixed."""
        steps = seg + 1
        is_last = steps >= self.M
        reg_sum, q_sum, zH, zL, q_halt, q_cont = self.update(x, y, zH, zL, is_last)
        halted = self.halts(steps, is_last, q_halt, q_cont)
        halt_step, active = mx.where(mx.logical_and(active, halted), steps, halt_step), mx.logical_and(active, ~halted)
        return reg_sum, q_sum, zH, zL, active, halt_step

    # -- host side -------------------------------------------------------------------------

    def train_batch(self, x: mx.array, y: mx.array) -> dict:
        """One step: ``x`` (grad_accum, batch, T, F), ``y`` (grad_accum, batch, 2).  Lazy arrays:
        reg_sum, q_sum, n_scored, halt_step (grad_accum, batch) = where each sample would halt (1-based)."""
        A, B = x.shape[0], x.shape[1]
        S, d = self.model.seq, self.model.cfg.d_model
        zH = mx.broadcast_to(self.model.buffers.H_init, (A, B, S, d))
        zL = mx.broadcast_to(self.model.buffers.L_init, (A, B, S, d))
        if self.reuse:
            zH, zL = self._prefix(x, zH, zL)
        active = mx.ones((A, B), dtype=mx.bool_)
        halt_step = mx.zeros((A, B), dtype=mx.int32)
        reg = qs = mx.array(0.0)
        for seg in range(self.M):
            r, q, zH, zL, active, halt_step = self._step(x, y, zH, zL, active, halt_step, self._segs[seg])
            reg, qs = reg + r, qs + q
            mx.async_eval(self.state, reg, qs, zH, zL, active, halt_step)
        n = mx.array(float(A * B * self.M))
        halt_sum = halt_step.astype(mx.float32).sum()
        if self.world > 1:  # losses and counts over all processes
            reg, qs, n, halt_sum = (mx.distributed.all_sum(v, group=self.group) for v in (reg, qs, n, halt_sum))
        return {"reg_sum": reg, "q_sum": qs, "n_scored": n, "halt_step": halt_step, "halt_sum": halt_sum}

    def update_average(self, n_steps: int) -> None:
        """Fold the current weights into the average after step ``n_steps`` (0-based)."""
        if self.ema is None:
            return
        d = min(self.cfg.ema, (1.0 + n_steps) / (10.0 + n_steps))
        cur = flat(self.model.trainable_parameters())
        self.ema = {k: d * v + (1.0 - d) * cur[k] for k, v in self.ema.items()}
        mx.async_eval(list(self.ema.values()))

    def snapshot(self) -> dict:
        """References (MLX arrays are immutable) to everything a resume needs."""
        return {
            "weights": flat(self.model.parameters()),
            "optimizer": flat(self.optimizer.state),
            "rng_key": self.rng["key"],
            "ema": self.ema,
            "carry": dict(self.carry),
        }

    def restore(self, weights: dict, optimizer: dict, rng_key, ema: dict | None = None,
                carry: dict | None = None) -> None:
        try:
            self.model.load_weights(list(weights.items()), strict=True)
        except ValueError as exc:
            raise RunError(f"saved state does not fit this model ({' '.join(str(exc).split())[:160]}).") from exc
        cur = flat(self.optimizer.state)
        if set(cur) != set(optimizer) or any(cur[k].shape != optimizer[k].shape for k in cur):
            raise RunError("saved optimizer state does not fit this model; start a new run.")
        self.optimizer.state.update(tree_unflatten(list(optimizer.items())))
        self.rng["key"] = rng_key
        if self.ema is not None:  # a state saved without averaging starts it from the weights
            if ema and set(ema) != set(self.ema):
                raise RunError("saved weight average does not fit this model; start a new run.")
            self.ema = dict(ema) if ema else flat(self.model.trainable_parameters())
        if self.carry:
            if not carry or set(carry) != set(self.carry) or any(
                    carry[k].shape != v.shape for k, v in self.carry.items()):
                raise RunError("saved state was not trained with carry-and-replace at these settings; "
                               "resume it with its own settings, or start a new run.")
            self.carry.update(carry)

    @property
    def updates(self) -> int:
        return int(self.optimizer.state["step"].item())

