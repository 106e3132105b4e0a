"""The training loop's bookkeeping (``TrainState``): counters, the best validation so far,
patience, history, clocks and the shuffling RNG, with ``to_dict`` / ``from_dict`` for the
resumable state.  One owner, so what is saved and what is restored cannot drift apart."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrainState:
    step: int = 0                 # optimizer steps (batches) done
    epoch: int = 0                # completed epochs
    epoch_batch: int = 0          # batches done in the current epoch
    best_val: float | None = None
    best_epoch: int | None = None
    bad_evals: int = 0
    history: list[dict] = field(default_factory=list)
    seconds_before: float = 0.0   # wall and training time and samples of earlier sessions (resume)
    train_seconds_before: float = 0.0
    samples_before: int = 0
    train_seconds: float = 0.0    # this session's
    samples: int = 0
    t0: float = field(default_factory=time.perf_counter)

    @classmethod
    def from_dict(cls, info: dict | None) -> "TrainState":
        """The state saved by ``to_dict`` (resume), or a fresh one."""
        info = info or {}
        return cls(
            step=int(info.get("step", 0)), epoch=int(info.get("epoch", 0)),
            epoch_batch=int(info.get("epoch_batch", 0)), best_val=info.get("best_val_mae"),
            best_epoch=info.get("best_epoch"), bad_evals=int(info.get("bad_evals", 0)),
            history=list(info.get("history", [])), seconds_before=float(info.get("seconds", 0.0)),
            train_seconds_before=float(info.get("train_seconds", 0.0)),
            samples_before=int(info.get("samples", 0)),
        )

    def to_dict(self, snapshot: dict, steps_per_epoch: int, extra: dict | None = None) -> dict:
        """The JSON bookkeeping of the resumable state at ``snapshot`` (the step, epoch and
        RNG state of the last finished step, with its optimizer state)."""
        out = {
            "step": snapshot["step"], "epoch": snapshot["epoch"], "epoch_batch": snapshot["epoch_batch"],
            "np_rng": snapshot["np_rng"], "best_val_mae": self.best_val, "best_epoch": self.best_epoch,
            "bad_evals": self.bad_evals, "history": self.history,
            "seconds": self.seconds_before + (time.perf_counter() - self.t0),
            "train_seconds": self.train_seconds_before + self.train_seconds,
            "samples": self.samples_before + self.samples, "steps_per_epoch": steps_per_epoch,
            "updates": int(snapshot["optimizer"]["step"].item()),
        }
        out.update(extra or {})
        return out

    def rng(self, seed: int, info: dict | None) -> np.random.Generator:
        """The shuffling RNG: seeded afresh, or as saved in ``info``."""
        g = np.random.default_rng(seed)
        if info and info.get("np_rng"):
            g.bit_generator.state = info["np_rng"]
        return g

    def seconds(self) -> float:
        """Wall time of the run so far, earlier sessions included."""
        return round(self.seconds_before + time.perf_counter() - self.t0, 3)

    def samples_per_s(self) -> float | None:
        tsec = self.train_seconds_before + self.train_seconds
        return round((self.samples_before + self.samples) / tsec, 2) if tsec > 0 else None
