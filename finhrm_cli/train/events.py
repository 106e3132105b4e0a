"""What training reports while it runs: typed events passed to one callback.

The loop never prints; it calls ``callback(event)`` with one of the events below, and the
command line's progress bar (``ui.progress.TrainProgress``) draws them.  Each event is a
frozen dataclass, so producer and consumer share one written contract: ``kind`` names it,
``as_dict()`` gives its fields (what ``--json`` and the history file show).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar, Union


class _Event:
    kind: ClassVar[str]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Started(_Event):
    """Training starts (or resumes at ``step``)."""

    kind: ClassVar[str] = "start"
    epochs: int
    steps_per_epoch: int
    total_steps: int
    n_train: int
    n_val: int
    params: int
    param_counts: dict
    step: int
    epoch: int
    updates_per_step: int
    resumed: bool


@dataclass(frozen=True)
class Stepped(_Event):
    """Every ``LOG_EVERY`` steps: the mean training loss since the last one."""

    kind: ClassVar[str] = "step"
    step: int
    epoch: int
    loss: float
    lr: float
    samples_per_s: float
    progress: float  # batches of windows finished (the progress bar's unit; = step but with carry-and-replace)


@dataclass(frozen=True)
class Evaluated(_Event):
    """A validation: the record appended to history.jsonl."""

    kind: ClassVar[str] = "eval"
    epoch: int
    step: int
    train_loss: float | None
    q_loss: float | None
    train_halt_steps: float | None
    train_segments: float | None  # segments a training window ran, on average
    val_mae: float | None
    val_mae_high: float | None
    val_mae_low: float | None
    best_val_mae: float | None
    best_epoch: int | None
    is_best: bool
    samples_per_s: float | None
    seconds: float
    lr: float


@dataclass(frozen=True)
class Ended(_Event):
    """Training stopped: converged, out of patience, interrupted or non-finite."""

    kind: ClassVar[str] = "end"
    best_epoch: int | None
    best_val_mae: float | None
    epochs_run: int
    steps: int
    seconds: float
    train_samples_per_s: float | None
    stopped: str
    history: list
    n_train: int
    params: int
    run: str | None


@dataclass(frozen=True)
class FoldStarted(_Event):
    """``evaluate --walk-forward``: fold ``fold`` of ``folds`` starts training."""

    kind: ClassVar[str] = "fold"
    fold: int
    folds: int


Event = Union[Started, Stepped, Evaluated, Ended, FoldStarted]
Callback = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The callback when nobody listens."""
