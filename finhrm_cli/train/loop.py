"""The training loop: ``train()`` and its schedule, one method per step (MLX + numpy; never prints).

``train`` builds a ``_Fit`` and runs it: ``start`` (set-up and resume bookkeeping), then
``run_epoch`` until the epochs run out or early stopping says stop, each epoch made of
``train_step``s, ``log`` events and one ``validate`` (weight average, best weights, patience),
with ``checkpoint`` saving the resumable state; ``finish`` returns the summary and
``interrupted`` handles Ctrl-C.  The step itself (loss, compiled update, ACT targets) is
``train.step.Trainer``; the method is described in ``finhrm_cli.train.step``'s notes.  The
bookkeeping that a resume restores is a ``train.state.TrainState``.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np

from finhrm_cli.config import ModelConfig, TrainConfig, to_dict
from finhrm_cli.train.step import (
    LOG_EVERY,
    Trainer,
    TrainingInterrupted,
    flat,
    build_model,
    mx,
)
from finhrm_cli.errors import DataError, TrainingError, UsageError
from finhrm_cli.fsutil import sigint_deferred
from finhrm_cli.forecast.baselines import price_mae
from finhrm_cli.forecast import inference
from finhrm_cli.forecast.inference import predict
from finhrm_cli.model.hrm import HRM
from finhrm_cli.train.carry import CarryTrainer, run_carry_epoch
from finhrm_cli.train.events import Callback, Ended, Evaluated, Started, Stepped, ignore
from finhrm_cli.train.state import TrainState
from mlx.utils import tree_unflatten


def _check_split(d: dict | None, name: str, cfg: ModelConfig, prices: bool = False):
    if d is None:
        return None
    x = np.asarray(d["x"], dtype=np.float32)
    y = np.asarray(d["y"], dtype=np.float32)
    if x.ndim != 3 or x.shape[1:] != (cfg.seq_len, cfg.n_features):
        raise DataError(
            f"{name} windows have shape {x.shape}; the model expects (n, {cfg.seq_len}, {cfg.n_features}) "
            "(--seq-len and the number of features must match)."
        )
    if y.shape != (len(x), 2):
        raise DataError(f"{name} targets have shape {y.shape}; expected ({len(x)}, 2).")
    out = {"x": x, "y": y}
    if prices:
        for k in ("close", "next_high", "next_low", "scale"):
            if k in d and d[k] is not None:
                out[k] = np.asarray(d[k], dtype=np.float64)
    return out


def _all_finite(flat: dict) -> bool:
    return bool(mx.all(mx.stack([mx.all(mx.isfinite(v)) for v in flat.values()])).item())


def _nonfinite_rows(a: np.ndarray) -> int:
    return int((~np.isfinite(a.reshape(len(a), -1))).any(axis=1).sum())


def _zero_acc() -> dict:  # running sums since the last validation, lazy (no host sync per step)
    return {"reg": mx.array(0.0), "q": mx.array(0.0), "n": mx.array(0.0), "halt": mx.array(0.0), "hn": 0}


def _zero_log() -> dict:  # running sums since the last "step" event
    return {"reg": mx.array(0.0), "n": mx.array(0.0), "t": time.perf_counter(), "samples": 0}


def _batch_sizes(tr: dict, cfg: TrainConfig) -> tuple[int, int, int, int]:
    """Batch size against the number of processes and of training windows; finite data.
    -> (training windows, windows per step, this process's rank, its share of a batch)."""
    from finhrm_cli import distributed

    B, A = cfg.batch_size, cfg.grad_accum
    n_train, per_step = len(tr["x"]), B * A
    world, rank = distributed.size(), distributed.rank()
    if B % world:
        raise UsageError(
            f"--batch-size {B} does not split evenly over {world} processes; use a multiple of {world}."
        )
    if n_train < per_step:
        what = f"--batch-size {B}" + (f" x --grad-accum {A}" if A > 1 else "")
        raise DataError(
            f"only {n_train} training windows, fewer than one step of {per_step} ({what}); "
            "lower --batch-size or --seq-len, or use a longer history."
        )
    for arr, what in ((tr["x"], "inputs"), (tr["y"], "targets")):
        if bad := _nonfinite_rows(arr):
            raise DataError(f"{bad} training windows have NaN or infinite {what}; drop or fix those rows.")
    return n_train, per_step, rank, B // world


def _check_resume(resume: dict, info: dict, steps_per_epoch: int) -> None:
    """A saved state must be unfinished and fit this data and batch size (no-op if none)."""
    if info.get("stopped") in ("converged", "patience"):
        raise UsageError(
            f"{resume.get('path', 'this run')}: training already finished "
            f"({info['stopped']} after epoch {info.get('epoch')}); nothing to resume. "
            "Evaluate it with `finhrm evaluate RUN` or train a new run."
        )
    if info.get("steps_per_epoch") not in (None, steps_per_epoch):
        raise UsageError(
            f"{resume.get('path', 'the saved state')}: saved with {info['steps_per_epoch']} steps per epoch, "
            f"but this data and --batch-size give {steps_per_epoch}; resume with the run's own data and "
            "settings, or train a new run."
        )


def _validation_mae(model, va: dict | None, rec: dict, act: bool = False) -> float | None:
    """Validation MAE of the model's current weights (``act``: halted, as the run forecasts
    with ``act_inference = "halted"``), also written into ``rec``; None when there is nothing
    to score them on (no validation, or no row with a known next session): then the latest
    weights are the ones to keep."""
    rec.update(val_mae=None, val_mae_high=None, val_mae_low=None)
    if va is None:
        return None
    pred = predict(model, va["x"], act=act)
    if "scale" in va:  # targets were divided by a per-window scale (see data.scale_expr)
        pred = pred * va["scale"][:, None]
    maes = price_mae(pred, va["close"], va["next_high"], va["next_low"])
    if maes is None:
        return None
    mh, ml = maes
    vm = (mh + ml) / 2
    rec.update(val_mae=vm, val_mae_high=mh, val_mae_low=ml)
    return vm


class _Fit:
    """One call of ``train``: its state, and each step of the schedule as a method.

    ``__init__`` checks the inputs, builds the model and ``Trainer``, restores a saved state;
    ``start`` announces the run; ``run_epoch`` = ``train_step`` per batch (``log`` every
    ``LOG_EVERY``), ``validate`` + ``checkpoint``; ``finish`` or ``interrupted`` end it."""

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, train: dict, val: dict | None,
                 emit: Callback, run, resume: dict | None, model: HRM | None, warm: bool = False):
        model_cfg.validate()
        train_cfg.validate()
        self.model_cfg, self.cfg, self.emit, self.run = model_cfg, train_cfg, emit, run
        self.tr = _check_split(train, "training", model_cfg)
        va = self.va = _check_split(val, "validation", model_cfg, prices=True)
        self.n_train, self.per_step, self.rank, self.B_local = _batch_sizes(self.tr, train_cfg)
        self.has_val = va is not None and len(va["x"]) > 0 and all(k in va for k in ("close", "next_high", "next_low"))
        self.epochs = train_cfg.epochs
        self.steps_per_epoch = self.n_train // self.per_step
        self.total_steps = self.steps_per_epoch * self.epochs
        self.resumed = bool(resume)
        info = dict(resume["info"]) if resume else {}
        _check_resume(resume or {}, info, self.steps_per_epoch)
        if model is None:
            model = build_model(model_cfg, train_cfg.seed)
        if not resume and not warm:  # a warm start keeps the head's target statistics too
            model.set_target_stats(self.tr["y"])
        self.model = model
        inference.usage(model).build_kernels = True  # training waits for the compiler anyway
        self.M = model_cfg.halt_max_steps
        self.carry = train_cfg.act_training == "carry"
        if self.carry:  # the schedule runs over the windows taken in: total_steps batches of them
            self.trainer = CarryTrainer(model, train_cfg, self.total_steps, (train_cfg.grad_accum, self.B_local),
                                        seed=train_cfg.seed)
        else:
            self.trainer = Trainer(model, train_cfg, self.total_steps * self.M, seed=train_cfg.seed)
        if resume:
            self.trainer.restore(resume["weights"], resume["optimizer"], resume["rng_key"], resume.get("ema"),
                                 resume.get("carry"))
        model.train()
        self.s = TrainState.from_dict(info)
        self.np_rng = self.s.rng(train_cfg.seed, info)

    # -- the schedule ----------------------------------------------------------------------

    def start(self) -> None:
        """Record the settings in the run, emit ``start`` and start the clocks."""
        run, model = self.run, self.model
        self.params = model.param_counts()
        if run is not None:
            if not run.has_model_config():
                run.update_config({"model": to_dict(self.model_cfg), "train": to_dict(self.cfg)})
            if self.resumed:
                run.write_history(self.s.history)  # drop records written after the saved state
        self.best_weights = flat(model.parameters())  # references; the model ends holding the best
        kept = run.weights_path() if run is not None else None
        if self.resumed and kept is not None and self.s.best_epoch is not None and kept.is_file():
            self.best_weights = dict(mx.load(str(kept)))  # kept before the resume
        self.emit(Started(
            epochs=self.epochs, steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
            n_train=self.n_train, n_val=len(self.va["x"]) if self.va is not None else 0,
            params=self.params["trainable"], param_counts=self.params, step=self.s.step,
            epoch=self.s.epoch, updates_per_step=self.M, resumed=self.resumed,
        ))
        self.s.t0, self.s.train_seconds, self.s.samples = time.perf_counter(), 0.0, 0
        self.epoch_rng_state = copy.deepcopy(self.np_rng.bit_generator.state)
        self.snap = self.snapshot(self.epoch_rng_state)
        self.acc, self.log_acc, self.stopped = _zero_acc(), _zero_log(), None
        self.epoch_windows = 0  # windows that finished this epoch (this session)

    def run_epoch(self) -> None:
        """One shuffled pass over the training windows (from ``epoch_batch`` when resuming
        mid-epoch), validating every ``eval_every`` steps and at the end, with a checkpoint
        after each validation.  Carry-and-replace: ``train.carry.run_carry_epoch``."""
        if self.carry:
            return run_carry_epoch(self)
        # np_rng holds the state from the start of this epoch (also when resuming mid-epoch)
        self.epoch_rng_state = copy.deepcopy(self.np_rng.bit_generator.state)
        perm = self.np_rng.permutation(self.n_train)
        every = self.cfg.eval_every
        for bi in range(self.s.epoch_batch, self.steps_per_epoch):
            self.train_step(perm, bi)
            if every and self.s.step % every == 0 and self.s.epoch_batch < self.steps_per_epoch:
                self.validate()
                self.checkpoint(self.snap, {"stopped": self.stopped})
                if self.stopped:
                    return
        self.end_epoch()

    def end_epoch(self) -> None:
        """Validate, count the epoch, checkpoint (with whether training is done)."""
        self.validate()
        self.s.epoch += 1
        self.s.epoch_batch = 0
        self.epoch_windows = 0
        self.snap = self.snapshot(copy.deepcopy(self.np_rng.bit_generator.state))
        done = "converged" if self.s.epoch >= self.epochs else None
        self.checkpoint(self.snap, {"stopped": self.stopped or done})

    def train_step(self, perm: np.ndarray, bi: int) -> None:
        """Batch ``bi`` of the permutation ``perm``: one ``Trainer`` step, the average, the sums."""
        tb = time.perf_counter()
        B, A, per_step = self.cfg.batch_size, self.cfg.grad_accum, self.per_step
        lo, hi = self.rank * self.B_local, (self.rank + 1) * self.B_local
        idx = perm[bi * per_step:(bi + 1) * per_step].reshape(A, B)[:, lo:hi]
        out = self.trainer.train_batch(mx.array(self.tr["x"][idx]), mx.array(self.tr["y"][idx]))
        self.trainer.update_average(self.s.step)
        acc, log_acc = self.acc, self.log_acc  # lazy sums
        for k, v in (("reg", out["reg_sum"]), ("q", out["q_sum"]), ("n", out["n_scored"])):
            acc[k] = acc[k] + v
        acc["halt"] = acc["halt"] + out["halt_sum"]
        acc["hn"] += per_step
        self.epoch_windows += per_step
        log_acc["reg"] = log_acc["reg"] + out["reg_sum"]
        log_acc["n"] = log_acc["n"] + out["n_scored"]
        self.s.step += 1
        self.s.epoch_batch = bi + 1
        self.s.samples += per_step
        log_acc["samples"] += per_step
        self.snap = self.snapshot(self.epoch_rng_state)
        if self.s.step % LOG_EVERY == 0 or self.s.epoch_batch == self.steps_per_epoch:
            self.log(tb)
        else:
            self.s.train_seconds += time.perf_counter() - tb

    def log(self, tb: float) -> None:
        """Read the loss back (the one host sync, every ``LOG_EVERY`` steps); emit ``step``."""
        n = float(self.log_acc["n"].item())
        loss = float(self.log_acc["reg"].item()) / n if n else float("nan")
        self.s.train_seconds += time.perf_counter() - tb
        if not math.isfinite(loss):
            self.nonfinite(f"at step {self.s.step} (epoch {self.s.epoch + 1})")
        progress = (self.s.epoch * self.steps_per_epoch + self.epoch_windows / self.per_step) if self.carry else self.s.step
        self.emit(Stepped(
            step=self.s.step, epoch=self.s.epoch + 1, loss=loss, progress=round(progress, 3),
            lr=float(self.trainer.optimizer.learning_rate.item()),
            samples_per_s=round(self.log_acc["samples"] / max(time.perf_counter() - self.log_acc["t"], 1e-9), 2),
        ))
        self.log_acc = _zero_log()

    def validate(self) -> None:
        """Score the (averaged) weights on the validation windows, keep them if best, append
        the history record, emit ``eval``; out of patience sets ``stopped``."""
        acc, step, trainer, model = self.acc, self.s.step, self.trainer, self.model
        n = float(acc["n"].item())
        train_loss = float(acc["reg"].item()) / n if n else None
        q_loss = float(acc["q"].item()) / n if n else None
        halt_mean = float(acc["halt"].item()) / acc["hn"] if acc["hn"] else None
        if train_loss is not None and not math.isfinite(train_loss):
            self.nonfinite(f"before the evaluation at step {step}")
        rec = {"epoch": self.s.epoch + 1, "step": step,
               "train_loss": train_loss, "q_loss": q_loss, "train_halt_steps": halt_mean,
               # segments a training window ran: where it halted (carry), or all of them
               "train_segments": (halt_mean if self.carry else float(self.M)) if n else None}
        raw = None
        if trainer.ema is not None:  # evaluate (and keep) the averaged weights
            raw = flat(model.trainable_parameters())
            model.update(tree_unflatten(list(trainer.ema.items())))
        vm = _validation_mae(self.model, self.va if self.has_val else None, rec,
                             act=self.cfg.act_inference == "halted")
        if vm is not None and not math.isfinite(vm):
            self.nonfinite(f"(validation predictions at step {step} are not finite)")
        is_best = vm is None or self.s.best_val is None or vm < self.s.best_val * (1.0 - self.cfg.min_delta)
        if is_best:  # weights first, then the bookkeeping, Ctrl-C held: a state saved on Ctrl-C
            # never names a best epoch whose model.safetensors is not on disk
            with sigint_deferred():
                if self.run is not None:
                    self.run.save_weights(model)
                self.s.best_val = rec.get("val_mae")
                self.s.best_epoch = rec["epoch"]
                self.s.bad_evals = 0
                self.best_weights = flat(model.parameters())
        else:
            self.s.bad_evals += 1
        if raw is not None:  # back to the raw weights to go on training
            model.update(tree_unflatten(list(raw.items())))
        rec.update(best_val_mae=self.s.best_val, best_epoch=self.s.best_epoch, is_best=is_best,
                   samples_per_s=self.s.samples_per_s(), seconds=self.s.seconds(),
                   lr=float(trainer.optimizer.learning_rate.item()))
        self.s.history.append(rec)
        if self.run is not None:
            self.run.append_history(rec)
        self.acc = _zero_acc()
        self.emit(Evaluated(**rec))
        model.train()
        if self.cfg.patience and self.s.bad_evals >= self.cfg.patience:
            self.stopped = "patience"

    def checkpoint(self, s: dict, extra: dict | None = None) -> None:
        """Save the resumable state of snapshot ``s`` into the run (if any).  A Ctrl-C during
        the save is held until it is done (a second Ctrl-C never cuts the state short).  A
        state saved as stopped (converged, patience) means training ended, not that the run
        is finished: that takes metrics.json (``service.training.finalize_run``)."""
        if self.run is not None:
            if not _all_finite(s["weights"]):
                self.nonfinite(f"(the weights at step {s['step']} are not finite)")
            with sigint_deferred():
                self.run.save_state(weights=s["weights"], optimizer=s["optimizer"], rng_key=s["rng_key"],
                                    info=self.s.to_dict(s, self.steps_per_epoch, extra), ema=s["ema"],
                                    carry=s["carry"])

    def finish(self) -> dict:
        """The model takes the best weights; emit ``end``; the summary."""
        self.stopped = self.stopped or "converged"
        self.model.update(tree_unflatten(list(self.best_weights.items())))
        mx.eval(self.model.parameters())
        result = self.summary(self.stopped)
        self.emit(Ended(**result))
        return result

    def interrupted(self) -> None:
        """Ctrl-C: save the last finished step, keep the best weights, raise TrainingInterrupted."""
        if _all_finite(self.snap["weights"]):
            self.checkpoint(self.snap)
        self.model.update(tree_unflatten(list(self.best_weights.items())))
        summ = self.summary("interrupted")
        try:
            self.emit(Ended(**summ))
        except Exception:  # noqa: BLE001  (the UI may be half torn down by Ctrl-C)
            pass
        raise TrainingInterrupted(self.run.path if self.run is not None else None, summ) from None

    def nonfinite(self, where: str) -> None:
        """The loss or weights went NaN/inf: keep the best weights, emit ``end``, raise."""
        self.stopped = "nonfinite"
        self.model.update(tree_unflatten(list(self.best_weights.items())))
        self.emit(Ended(**self.summary("nonfinite")))
        kept = (f"the best weights so far (epoch {self.s.best_epoch}) are kept in {self.run.path}"
                if self.run is not None and self.s.best_epoch is not None else "no weights were saved")
        raise TrainingError(
            f"training diverged: the loss became NaN or infinite {where}; {kept}. "
            f"Lower --lr (now {self.cfg.lr:g}) or --grad-clip, or check the data for extreme rows."
        )

    # -- bookkeeping -----------------------------------------------------------------------

    def snapshot(self, np_rng_state: dict) -> dict:
        return {**self.trainer.snapshot(), "step": self.s.step, "epoch": self.s.epoch,
                "epoch_batch": self.s.epoch_batch, "np_rng": np_rng_state}

    def summary(self, reason: str) -> dict:
        return {
            "best_epoch": self.s.best_epoch, "best_val_mae": self.s.best_val, "epochs_run": self.s.epoch,
            "steps": self.s.step, "seconds": self.s.seconds(), "train_samples_per_s": self.s.samples_per_s(),
            "stopped": reason, "history": self.s.history, "n_train": self.n_train,
            "params": self.params["trainable"], "run": str(self.run.path) if self.run is not None else None,
        }


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    train: dict,
    val: dict | None,
    *,
    callback: Callback | None = None,
    run=None,
    resume: dict | None = None,
    model: HRM | None = None,
    warm: bool = False,
) -> dict:
    """Train an HRM; returns the training summary (see module docstring for the method).

    ``run``: a ``store.RunWriter`` or None.  ``resume``: ``store.load_state(...)``.
    ``model``: optionally a prebuilt HRM to train in place (it ends holding the best weights);
    by default one is built from ``model_cfg`` and ``train_cfg.seed``.  ``warm``: ``model``
    holds trained weights to go on from (``train --from``), target statistics included.
    """
    fit = _Fit(model_cfg, train_cfg, train, val, callback or ignore, run, resume, model, warm)
    fit.start()
    try:
        while fit.s.epoch < fit.epochs and fit.stopped is None:
            fit.run_epoch()
    except KeyboardInterrupt:
        if fit.stopped is not None:
            raise
        fit.interrupted()
    return fit.finish()
