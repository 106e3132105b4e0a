"""What ``finhrm tune`` reports while it runs, besides each trial's training events
(``train.events``): typed events for the same one callback (``ui.tuning.TuneProgress``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar



@dataclass(frozen=True)
class TrialStarted:
    """Trial ``number`` of the study starts; it is this process's ``index``-th of ``total``
    (None: until the timeout)."""

    kind: ClassVar[str] = "trial_start"
    number: int
    index: int
    total: int | None
    params: dict


@dataclass(frozen=True)
class TrialEnded:
    """A trial ended: complete (``value``: its validation score), pruned or failed."""

    kind: ClassVar[str] = "trial_end"
    number: int
    state: str
    value: float | None
    best_value: float | None
    best_number: int | None
    seconds: float
    reason: str | None = None


@dataclass(frozen=True)
class Stage:
    """After the search: training the default settings, scoring the best trial on test."""

    kind: ClassVar[str] = "stage"
    text: str
