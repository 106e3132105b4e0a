"""The training progress display: the engine's callback, drawn as a rich progress bar.

``train`` and ``evaluate --walk-forward`` pass a ``TrainProgress`` to the service as its
``callback``; it draws on stderr (``console.err``) so stdout stays free for data.  Kept
apart from the views because only these two commands need ``rich.progress``.
"""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from finhrm_cli.train.events import Ended, Evaluated, Event, FoldStarted, Started, Stepped
from finhrm_cli.ui import console
from finhrm_cli.ui.console import fmt_num


class TrainProgress:
    """The engine's callback, drawn as a rich progress bar on stderr.

    Shows epoch and step, the latest training loss, validation MAE in price units,
    samples/s and the time left.  ``quiet`` draws nothing.
    """

    def __init__(self, quiet: bool = False, price_unit: str = ""):
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task = None
        self.fields = {"loss": "-", "val": "-", "best": "-", "sps": "-", "epoch": "-", "label": "train"}
        self.price_unit = price_unit

    def __enter__(self):
        if not self.quiet:
            self.progress = Progress(
                TextColumn("[bold]{task.fields[label]}[/] epoch {task.fields[epoch]}"),
                BarColumn(bar_width=28),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("val MAE {task.fields[val]} (kept {task.fields[best]})"),
                TextColumn("{task.fields[sps]} samples/s"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=console.err,
                transient=False,
            )
        return self

    def __exit__(self, *exc):
        if self.progress is not None and self.task is not None:  # drawn only once training started,
            self.progress.__exit__(*exc)                          # so an early error stays one line
        return False

    def __call__(self, event: Event) -> None:
        if self.progress is None:
            return
        if isinstance(event, FoldStarted):
            self.fields["label"] = f"fold {event.fold}/{event.folds}"
        elif isinstance(event, Started):
            if self.task is None:
                self.progress.__enter__()
            self.task = self.progress.add_task(
                "train", total=event.total_steps, completed=event.step,
                **{**self.fields, "epoch": str(event.epoch + 1)},
            )
        elif self.task is None:
            return
        elif isinstance(event, Stepped):
            upd: dict[str, Any] = {"epoch": str(event.epoch), "loss": f"{event.loss:.4f}"}
            if event.samples_per_s:
                upd["sps"] = f"{event.samples_per_s:,.0f}"
            self.progress.update(self.task, completed=event.progress, **upd)
        elif isinstance(event, Evaluated):
            upd = {"epoch": str(event.epoch), "val": fmt_num(event.val_mae, 4), "best": fmt_num(event.best_val_mae, 4)}
            if event.samples_per_s:
                upd["sps"] = f"{event.samples_per_s:,.0f}"
            self.progress.update(self.task, **upd)
        elif isinstance(event, Ended):
            self.progress.update(self.task, completed=self.progress.tasks[0].total if event.stopped == "converged"
                                 else self.progress.tasks[0].completed)
