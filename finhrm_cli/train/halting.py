"""The ACT halting reward for regression and its running reference (MLX; used by the training step).

Regression has no "exactly right", so the reward for halting is relative::

    err          = mean(|pred - y|) / s            this segment's error, unit target scale
    halt_target  = 1  if  err <= ref  else 0      ref: running median of recent errors
    cont_target  = HALT_GAMMA * sigmoid(q_halt_next)                          at the last segment
                   HALT_GAMMA * sigmoid(max(q_halt_next, q_continue_next))    before it

``s`` is the pooled standard deviation of the training targets and ``(q_halt_next,
q_continue_next)`` the Q logits of the next segment (the extra no-gradient pass).  ``ref`` is
the model buffer ``halt_ref``: after every segment of every training batch it moves by a
factor ``exp(HALT_REF_RATE * (share above - share below))`` of that segment's errors, a
stochastic-approximation median (sign gradient of the absolute loss, in log space so it is
scale-free).  It settles where half of the recent training errors lie below it, so the reward
has a base rate near one half whatever the model's accuracy: q_halt estimates "this sample's
forecast is already better than usual" and stays calibrated instead of saturating.  The
discount ``HALT_GAMMA`` is a cost per segment: continuing is only worth it when a later
segment is expected to raise the chance of a good forecast by more than 5 %, so at a fixed
point (later segments change nothing) the Q head says halt at step 1.  Only training batches
update ``ref`` (validation and prediction never do); it is saved with the weights and in the
resumable state, so ``finhrm inspect`` computes the same reward on validation.  The errors
that set ``ref`` are the raw weights'; the saved model is their average
(``TrainConfig.ema``), whose errors are lower, so its reward rate sits above one half and
``Forecaster.finish`` fits a calibration map for the Q head on the training rows
(``finhrm_cli.forecast.actstats``, config.json ``halt_calibration``) rather than move ``ref``, the
target the head was trained on.
"""

from __future__ import annotations

from finhrm_cli.blas import mlx_core

mx = mlx_core()

HALT_GAMMA = 0.95       # per-segment discount of the q_continue target
HALT_REF_RATE = 0.02    # step of the running median, in log space, per segment update


def halt_targets(err, ref, nq_halt, nq_cont, is_last):
    """(halt_target, continue_target) per sample; ``nq_*`` are the next segment's Q logits."""
    halt = (err <= ref).astype(mx.float32)
    nxt = mx.where(is_last, nq_halt, mx.maximum(nq_halt, nq_cont))
    return halt, HALT_GAMMA * mx.sigmoid(nxt)


def next_reference(ref, err, group=None, weight=None):
    """The running median after seeing the errors ``err`` (all processes' when ``group``);
    ``weight`` (0 or 1 per error) leaves out the empty batch slots of carry-and-replace."""
    w = mx.ones(err.shape, dtype=mx.float32) if weight is None else weight.astype(mx.float32)
    above = ((err > ref).astype(mx.float32) * w).sum()
    below = ((err < ref).astype(mx.float32) * w).sum()
    n = w.sum() if weight is not None else mx.array(float(err.size))
    if group is not None:
        above, below, n = (mx.distributed.all_sum(v, group=group) for v in (above, below, n))
    return ref * mx.exp(HALT_REF_RATE * (above - below) / mx.maximum(n, 1.0))
