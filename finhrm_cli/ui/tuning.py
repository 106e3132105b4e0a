"""What ``finhrm tune`` shows: its progress (trial k of N, the best validation score so far,
the time left; under it the current trial's epochs) and the study (trials, the best settings
against the defaults on validation and test, the parameter importances)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from finhrm_cli.train.events import Evaluated, Started, Stepped
from finhrm_cli.tune.events import Stage, TrialEnded, TrialStarted
from finhrm_cli.ui import console
from finhrm_cli.ui.console import fmt_num, note, show
from finhrm_cli.ui.tables import kv_table, num_col, table


class TuneProgress:
    """The search's callback, drawn on stderr: one bar for the trials, one for the current
    training.  ``quiet`` draws nothing."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress: Progress | None = None
        self.trials = self.epochs = None
        self.best = "-"

    def __enter__(self):
        if not self.quiet:
            self.progress = Progress(
                TextColumn("{task.fields[label]}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=console.err, transient=False,
            )
        return self

    def __exit__(self, *exc):
        if self.progress is not None and self.trials is not None:
            self.progress.__exit__(*exc)
        return False

    def _start(self, total) -> None:
        self.progress.__enter__()
        self.trials = self.progress.add_task("trials", total=total, label="[bold]trials[/]", info="best val -")

    def __call__(self, event) -> None:
        p = self.progress
        if p is None:
            return
        if isinstance(event, TrialStarted):
            if self.trials is None:
                self._start(event.total)
            p.update(self.trials, label=f"[bold]trial {event.index}[/] (#{event.number})")
        elif isinstance(event, TrialEnded):
            if event.best_value is not None:
                self.best = f"{fmt_num(event.best_value)} (#{event.best_number})"
            last = {"complete": fmt_num(event.value), "pruned": "pruned", "fail": "failed"}.get(event.state, event.state)
            p.update(self.trials, advance=1, info=f"best val {self.best}, last {last}")
        elif isinstance(event, Stage):
            if self.trials is None:
                self._start(None)
            p.console.print(Text(event.text, style="dim"))
        elif isinstance(event, Started):
            if self.trials is None:
                self._start(None)
            if self.epochs is not None:
                p.remove_task(self.epochs)
            self.epochs = p.add_task("train", total=event.total_steps, completed=event.step,
                                     label=f"  epochs 1-{event.epochs}", info="val -")
        elif self.epochs is not None and isinstance(event, Stepped):
            p.update(self.epochs, completed=event.progress)
        elif self.epochs is not None and isinstance(event, Evaluated):
            p.update(self.epochs, info=f"epoch {event.epoch} val {fmt_num(event.val_mae)}")


def _params_text(params: dict) -> str:
    return " ".join(f"{k}={fmt_num(v, 4) if isinstance(v, float) else v}" for k, v in params.items())


def render_tune(result: dict, limit: int = 10) -> None:
    """The study: counts, the best trials, best against defaults, importances."""
    c = result.get("counts") or {}
    rows = [("study", result.get("study")), ("storage", result.get("storage")),
            ("series", ", ".join(result.get("series") or [])),
            ("trials", f"{c.get('complete', 0)} complete, {c.get('pruned', 0)} pruned, {c.get('fail', 0)} failed"
                       + (f", {c['running']} running" if c.get("running") else "")),
            ("objective", f"{result.get('metric')} (lower is better; validation only)")]
    if result.get("trials_run") is not None:
        rows.append(("this run", f"{result['trials_run']} trials in {fmt_num(result.get('wall_seconds'), 0)} s"))
    show(kv_table("Study", rows))
    done = sorted((t for t in result.get("trials") or [] if t["state"] == "complete"), key=lambda t: t["value"])
    if done:
        t = table(f"Best trials ({min(limit, len(done))} of {len(done)} complete)", compact=True)
        for col in ("#", "val", "time s"):
            num_col(t, col)
        t.add_column("settings", overflow="fold")
        for r in done[:limit]:
            t.add_row(str(r["number"]), fmt_num(r["value"]), fmt_num(r["seconds"], 0), _params_text(r["params"]))
        show(t)
    failed = [t for t in result.get("trials") or [] if t["state"] == "fail" and t.get("reason")]
    for t in failed[-3:]:
        note(f"trial {t['number']} failed: {t['reason']}")
    _render_best(result)
    if result.get("ensemble"):
        _render_ensemble(result["ensemble"])
    imp = result.get("importances")
    if imp:
        t = table("Parameter importances (fANOVA)", compact=True)
        t.add_column("setting")
        num_col(t, "importance")
        t.add_column("")
        for k, v in imp.items():
            t.add_row(k, fmt_num(v, 3), "#" * int(round(30 * v)))
        show(t)
    elif result.get("importances_note"):
        note(result["importances_note"])


def _render_best(result: dict) -> None:
    best, default = result.get("best"), result.get("default") or {}
    if not best:
        note("no trial has completed yet.")
        return
    bt = best.get("test") or {}
    dv, dt = default.get("val") or {}, default.get("test") or {}
    t = table("Best vs defaults, same split", compact=True)
    t.add_column("")
    num_col(t, f"best (#{best['number']})")
    num_col(t, "defaults")
    label = "val MAE" if dv.get("mae") is not None or default == {} else "val skill"
    if str(result.get("metric") or "").startswith("walk-forward"):
        label = "folds skill"
    t.add_row(label, fmt_num(best.get("value")), fmt_num(default.get("value")))
    if bt.get("mae") is not None or dt.get("mae") is not None:  # several series: skill only
        t.add_row("test MAE", fmt_num(bt.get("mae")), fmt_num(dt.get("mae")))
    t.add_row("test skill", fmt_num(bt.get("skill"), 3), fmt_num(dt.get("skill"), 3))
    t.add_row("test rows", fmt_num(bt.get("rows")), fmt_num(dt.get("rows")))
    show(t)
    if bt and dt and (bt.get("first_date"), bt.get("rows")) != (dt.get("first_date"), dt.get("rows")):
        note("the test rows differ by the window length (--seq-len): a window needs its days inside the split.")
    note("the test split was scored once, for the best trial, after the search; no trial saw it.")
    if result.get("best_toml"):
        note(f"best settings written to {result['best_toml']}; train with them: "
             f"finhrm train DATA --config {result['best_toml']}")
    if best.get("run"):
        note(f"best trial's run: {best['run']}")


def _render_ensemble(e: dict) -> None:
    """The ensemble run against the best trial alone, on the ensemble's own rows."""
    t = table(f"Ensemble ({e['how']}) vs the best trial alone, same rows", compact=True)
    t.add_column("")
    num_col(t, "ensemble")
    num_col(t, "best alone")
    for split in ("val", "test"):
        ens, alone = e.get(split) or {}, e.get(f"best_alone_{split}") or {}
        if not ens:
            continue
        if ens.get("mae") is not None:
            t.add_row(f"{split} MAE", fmt_num(ens.get("mae")), fmt_num(alone.get("mae")))
        t.add_row(f"{split} skill", fmt_num(ens.get("skill"), 3), fmt_num(alone.get("skill"), 3))
        t.add_row(f"{split} rows", fmt_num(ens.get("rows")), fmt_num(alone.get("rows")))
    show(t)
    note(f"ensemble run: {e['run']} (predict, evaluate and inspect take it with --model or as RUN); "
         "only a win on validation speaks for it, the test split is scored once.")
