"""An epoch of carry-and-replace training (``TrainConfig.act_training = "carry"``), as HRM trains.

Each update runs one segment for every batch slot; a slot whose window halted takes the next
window of the epoch's permutation (``Trainer.carry_batch``).  The epoch ends when every
training window has been taken in and has halted.  A window costs the segments it uses: a
model whose Q head halts at step 1 trains at close to the one-segment cost, while every
segment a window runs is still supervised.  With several processes each holds its share of
the batch's slots and the refill is global, so they train as one process would.
"""

from __future__ import annotations

import copy
import time
from functools import partial

import numpy as np

from finhrm_cli.train.step import LOG_EVERY, Trainer, mx


def run_carry_epoch(fit) -> None:
    """One pass over the training windows by carry-and-replace (``fit``: the loop's ``_Fit``),
    validating every ``eval_every`` updates and at the end, with a checkpoint after each
    validation; resumes mid-epoch from the carry of a saved state."""
    s, tr = fit.s, fit.trainer
    fit.epoch_rng_state = copy.deepcopy(fit.np_rng.bit_generator.state)
    perm = fit.np_rng.permutation(fit.n_train)
    perm_dev = mx.array(perm.astype(np.int32))  # every process the same permutation (global refill)
    if getattr(fit, "X", None) is None:
        fit.X, fit.Y = mx.array(fit.tr["x"]), mx.array(fit.tr["y"])
    if s.epoch_batch == 0:
        tr.begin_epoch()
    elif tr.remaining(fit.n_train) == 0:  # resumed after the epoch's last update, before its validation
        fit.end_epoch()
        return
    every = fit.cfg.eval_every
    # Reading an update's counts back stalls the pipeline (the host waits, then the device
    # waits for the next update: 17 ms of a 98 ms update).  The counts are read only where
    # the epoch may end: after a read, ``left`` windows are not yet taken in, and an update
    # takes in at most ``per_step``, so the next (left - 1) // per_step + 1 updates are all
    # needed; their counts are read together after the last of them (or at a log or a
    # validation, which read anyway).
    pending: list = []
    budget = 1
    while True:
        tb = time.perf_counter()
        pending.append(tr.carry_batch(fit.X, fit.Y, perm_dev))
        tr.update_average(s.step)
        s.step += 1
        s.epoch_batch += 1
        budget -= 1
        fit.snap = fit.snapshot(fit.epoch_rng_state)
        if budget > 0 and s.step % LOG_EVERY and not (every and s.step % every == 0):
            s.train_seconds += time.perf_counter() - tb
            continue
        rows = mx.stack(pending).tolist()  # one sync for the updates since the last
        pending = []
        acc, log_acc = fit.acc, fit.log_acc
        for reg, q, scored, seg_sum, halted, remaining, left in rows:
            acc["reg"], acc["q"], acc["n"] = acc["reg"] + reg, acc["q"] + q, acc["n"] + scored
            acc["halt"] = acc["halt"] + seg_sum
            acc["hn"] += int(halted)
            log_acc["reg"], log_acc["n"] = log_acc["reg"] + reg, log_acc["n"] + scored
            s.samples += int(halted)
            log_acc["samples"] += int(halted)
            fit.epoch_windows += int(halted)
        budget = int(left - 1) // fit.per_step + 1 if left >= 1 else 1
        if s.step % LOG_EVERY == 0 or remaining == 0:
            fit.log(tb)
        else:
            s.train_seconds += time.perf_counter() - tb
        if remaining == 0:
            break
        if every and s.step % every == 0:
            fit.validate()
            fit.checkpoint(fit.snap, {"stopped": fit.stopped})
            if fit.stopped:
                return
    fit.end_epoch()


# The q_continue target needs one more no-gradient segment (HRM's extra pass), which costs most
# of an update once windows halt early (docs/speed.md).  Carry-and-replace computes it on this
# share of each batch's slots, weighted up so the expected loss is the same: the slots hold
# windows in permutation order, so the share is a random sample of them.  An eighth: a quarter
# cost 2 s more per 4,000-session run for no gain on validation (docs/results.md).
Q_TARGET_SHARE = 0.125


class CarryTrainer(Trainer):
    """The ``Trainer`` for carry-and-replace: a carry per batch slot (z_H, z_L, the segments
    run, the window held), one compiled update that runs one segment for every slot.  No
    reused Q-target pass (a slot's next segment may hold another window), and the learning
    rate is set at every update from the windows taken in, since the number of updates
    follows the halting (``total_updates``: batches of windows)."""

    def __init__(self, model, train_cfg, total_updates: int, slots: tuple[int, int], *, seed: int = 0):
        super().__init__(model, train_cfg, total_updates, seed=seed, reuse_pass=False, scheduled=False)
        A, B = slots
        shape = (A, B, model.seq, model.cfg.d_model)
        self.carry.update(zH=mx.zeros(shape), zL=mx.zeros(shape), pos=mx.full((A, B), -1, mx.int32),
                          steps=mx.zeros((A, B), mx.int32), alive=mx.zeros((A, B), mx.bool_),
                          ptr=mx.array(0, mx.int32), taken=mx.array(0, mx.int32))
        self._carry_step = partial(mx.compile, inputs=self.state, outputs=self.state)(self._carry_update)

    def q_rows(self, batch: int) -> int:
        return max(1, int(round(batch * Q_TARGET_SHARE)))

    def _carry_update(self, X, Y, perm):
        """Carry-and-replace (HRM's training): one segment for every batch slot, one update.
        A slot that is free (its window halted) takes the next window of the epoch's
        permutation ``perm`` and starts from the initial carry; a slot with nothing left to
        take stays empty (weight 0).  Every slot holding a window is trained on this segment
        (deep supervision); it halts where its Q head says halt (after the exploration
        minimum) or at the last segment, and its slot is refilled at the next update."""
        c, model, M = self.carry, self.model, self.M
        A, B = c["pos"].shape
        n = perm.shape[0]
        free = mx.logical_not(c["alive"])
        # the refill is global: with several processes each holds its slots of the one batch
        # (as in every-segment training), so the windows go to slots exactly as in one process
        gfree = free.astype(mx.int32)
        if self.world > 1:
            gfree = mx.distributed.all_gather(gfree, group=self.group)
            gfree = gfree.reshape(self.world, A, B).transpose(1, 0, 2).reshape(A, self.world * B)
        gpos = c["ptr"] + (mx.cumsum(gfree.reshape(-1)) - 1).reshape(gfree.shape)
        gtake = mx.logical_and(gfree > 0, gpos < n)
        lo, hi = self.rank * B, (self.rank + 1) * B
        newpos, take = gpos[:, lo:hi], gtake[:, lo:hi]
        pos = mx.where(free, mx.where(take, newpos, -1), c["pos"])
        c["ptr"] = mx.minimum(c["ptr"] + gtake.astype(mx.int32).sum(), n)
        steps = mx.where(free, 0, c["steps"])
        valid = pos >= 0
        w = valid.astype(mx.float32)
        idx = perm[mx.maximum(pos, 0)]
        x, y = X[idx], Y[idx]
        fresh = take[..., None, None]
        zH = mx.where(fresh, model.buffers.H_init, c["zH"])
        zL = mx.where(fresh, model.buffers.L_init, c["zL"])
        self.optimizer.learning_rate = self.lr_at(
            c["taken"].astype(mx.float32) / float(self.samples_per_step * self.world))
        reg_sum, q_sum, zH, zL, q_halt, q_cont = self.update(x, y, zH, zL, (steps + 1) >= M, w)
        steps = steps + valid.astype(mx.int32)
        halted = self.halts(steps, steps >= M, q_halt, q_cont)
        halted = mx.logical_and(halted, valid)
        c["alive"] = mx.logical_and(valid, mx.logical_not(halted))
        c["pos"], c["steps"], c["zH"], c["zL"] = pos, steps, zH, zL
        c["taken"] = c["taken"] + gtake.astype(mx.int32).sum()  # every process's windows
        stats = mx.stack([reg_sum, q_sum, w.sum(), (steps * halted).astype(mx.float32).sum(),
                          halted.astype(mx.float32).sum(), c["alive"].astype(mx.float32).sum()])
        if self.world > 1:
            stats = mx.distributed.all_sum(stats, group=self.group)
        left = (n - c["ptr"]).astype(mx.float32)  # the same on every process
        return mx.concatenate([stats[:5], (stats[5] + left)[None], left[None]])

    def remaining(self, n: int) -> int:
        """Windows of the epoch's ``n`` not yet taken in or not yet halted (a host sync)."""
        c = self.carry
        return int(n - c["ptr"].item() + c["alive"].astype(mx.int32).sum().item())

    def begin_epoch(self) -> None:
        """Carry-and-replace: every slot free, the permutation from its start."""
        A, B = self.carry["pos"].shape
        self.carry.update(pos=mx.full((A, B), -1, mx.int32), steps=mx.zeros((A, B), mx.int32),
                          alive=mx.zeros((A, B), mx.bool_), ptr=mx.array(0, mx.int32))

    def carry_batch(self, X: mx.array, Y: mx.array, perm: mx.array) -> mx.array:
        """One carry-and-replace update over the epoch's windows ``X[perm]``, ``Y[perm]``.
        Lazy (7,) float32: loss sum, Q loss sum, windows trained on this segment, segments of
        the windows that halted, windows that halted, windows still to finish (every
        process's when several), windows not yet taken in."""
        stats = self._carry_step(X, Y, perm)
        mx.async_eval(self.state, stats)
        return stats
