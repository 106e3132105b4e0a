"""Every command's view: what ``prepare``, ``train``, ``evaluate``, ``predict`` (as a
table), ``inspect`` and ``inspect --list`` show, and the small terminal charts they use (predict's
table and the run lines after a command's output: ``forecasts``).

Each ``render_*`` takes the dict a ``service`` function returned and draws it with rich:
tables and charts on stdout, notes and warnings on stderr (``ui.console``).  ``--json``
bypasses these (``console.print_json``); ``predict``'s JSON and CSV go through
``ui.export``.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text

from finhrm_cli.ui.console import fmt_bytes, fmt_num, fmt_p, fmt_pct, note, show, warn
from finhrm_cli.ui.tables import (
    histogram,
    intervals_table,
    kv_table,
    line_chart,
    metrics_table,
    name_col,
    num_col,
    result_for,
    series_table,
    table,
)

# ---------------------------------------------------------------------------- prepare
DROPPED = {"file_indicator_warmup": "warm-up blanks in the file's indicator columns",
           "indicator_warmup": "indicator warm-up"}


def prepare_summary(summary: dict) -> None:
    src = summary.get("source", {})
    rows = [
        ("file", src.get("path", "-")),
        ("shape", src.get("shape", "-")),
        ("rows read", fmt_num(src.get("n_rows"))),
        ("usable rows", fmt_num(summary.get("rows"))),
        ("date range", f"{summary.get('first_date', '-')} .. {summary.get('last_date', '-')}"),
        ("features", ", ".join(summary.get("feature_names", []))),
    ]
    if summary.get("output"):
        rows.append(("written to", summary["output"]))
    show(kv_table("Dataset", rows))
    splits = summary.get("splits", {})
    if splits:
        t = table("Chronological splits")
        for col in ("split", "rows", "windows", "from", "to"):
            t.add_column(col, justify="right" if col in ("rows", "windows") else "left")
        for name, s in splits.items():
            t.add_row(
                name,
                fmt_num(s.get("rows")),
                fmt_num(s.get("n_windows")),
                str(s.get("first_date", "-")),
                str(s.get("last_date", "-")),
            )
        show(t)
    dropped = summary.get("dropped") or {}
    if dropped:
        show(kv_table("Rows dropped", [(DROPPED.get(k, k), fmt_num(v)) for k, v in dropped.items()]))
    for n in summary.get("notes") or []:
        note(n)
    for w in summary.get("warnings") or []:
        warn(w)


POOLED = " (all series pooled; price-unit MAEs per ticker below)"


def _metrics_views(metrics: dict) -> list:
    views = []
    for split, m in metrics.items():
        if not m or "results" not in m:
            continue
        pooled = POOLED if m.get("series") else ""
        views.append(
            metrics_table(
                f"{split}{pooled}: {m.get('rows', 0):,} rows, {m.get('first_date')} .. {m.get('last_date')}",
                m["results"], scale_free=bool(m.get("series")),
            )
        )
        if m.get("series"):
            views.append(series_table(f"{split} per ticker", m["series"]))
    return views


def act_training_line(mode: str | None, segments: float | None, inference: str | None = None) -> str:
    """How ACT spent training compute, and how the run forecasts: "carry-and-replace: 1.21
    segments per window (last epoch); forecasts halted"."""
    what = {"carry": "carry-and-replace", "every": "every segment for every window"}.get(mode or "every", mode)
    how = {"halted": "; forecasts stop where the Q head halts", "all": "; forecasts run every segment"}.get(inference or "", "")
    return f"{what}: {fmt_num(segments, 2)} segments per window (last epoch){how}"


def render_train(result: dict) -> None:
    metrics = result.get("metrics", {})
    rows = [
        ("run", result.get("run")),
        ("epochs", stopped_text(result.get("best_epoch"), result.get("epochs_run"), result.get("epochs_planned"))),
        ("speed", f"{fmt_num(result.get('train_samples_per_s'), 0)} samples/s"),
        ("training time", training_time(result.get("train_seconds"), result.get("seconds"))),
        ("ACT training", act_training_line(result.get("act_training"), result.get("segments_per_window"),
                                          result.get("act_inference"))),
    ]
    val = metrics.get("val") or {}
    n_series = len(result.get("series") or []) or 1
    if val.get("results"):
        m = result_for(val["results"], "finhrm")
        if val.get("series"):  # price-unit MAEs pooled over several series mean little
            rows.append(("validation", (f"skill {fmt_num(m.get('skill_mean'), 3)}, the mean of the series' "
                                       "skills (MAE / persistence MAE); each series' MAE in `inspect`")))
        else:
            rows.append(("validation MAE", (f"{fmt_num(m.get('mae'))} (skill {fmt_num(m.get('skill'), 3)}), "
                                           "the forecast below")))
    parent = result.get("parent")
    if parent:
        rows.append(("production", lineage_line(parent, metrics)))
    if "blend" in result:
        rows.append(("forecast", blend_line(result.get("blend"), result.get("blend_enabled", True), n_series,
                                            parent.get("name") if parent else None)))
    test = {k: v for k, v in metrics.items() if k == "test"}
    show(kv_table("Training finished", rows), *_metrics_views(test))
    note("skill = MAE / persistence MAE; below 1 beats 'tomorrow = today'. "
         f"Next: finhrm predict DATA --model {result.get('name')}")


def lineage_line(parent: dict, metrics: dict | None = None) -> str:
    """A production run (``train --from``): its parent, how it started, where its settings
    came from, what trained it (the window counts of its ``metrics``) and where its intervals
    came from."""
    every = (metrics or {}).get("every_row") or {}
    windows, hrm_windows = every.get("windows"), every.get("hrm_windows")
    rows = f"every row ({windows:,} windows)" if isinstance(windows, int) else "every row"
    root = parent.get("root") or parent.get("name")
    intervals = (f"intervals start from {root}'s validation residuals and adapt to each outcome after the "
                 "last training row")
    starts = parent.get("hrm_trains_from") or {}
    if parent.get("start") == "warm" and starts:
        latest = f"its {hrm_windows:,} latest windows" if isinstance(hrm_windows, int) else "its latest windows"
        since = f", from {min(starts.values())}" if len(starts) == 1 else ""
        return (f"from {parent.get('name')} (warm start from its weights); nothing held out: {rows} fit the "
                f"linear partner, the HRM refreshed on {latest}{since} (those {parent.get('name')}'s weights "
                f"never saw, and the latest they did); {intervals}")
    start = "warm start from its weights" if parent.get("start") == "warm" else "fresh weights"
    return (f"from {parent.get('name')} ({start}); trained on {rows}, nothing held out; "
            f"the epoch count {parent.get('epochs_chosen')} chosen by {root}'s validation; {intervals}")


def training_time(train_seconds, total_seconds=None) -> str:
    """The training loop's time (recorded in history.jsonl, what `inspect` shows) and, for
    `train`, the whole command's (reading the data and scoring too)."""
    text = f"{fmt_num(train_seconds, 1)} s" if train_seconds is not None else "-"
    if total_seconds is not None:
        text += f" ({fmt_num(total_seconds, 1)} s for the whole command, with reading the data and scoring)"
    return text


def render_evaluate(result: dict) -> None:
    if "folds" in result:
        t = table("Walk-forward folds", compact=True)
        for c in ("fold", "train\nrows", "test from", "test to", "MAE", "persistence\nMAE", "skill", "p (DM)"):
            num_col(t, c)
        for f in result["folds"]:
            r = f["results"]
            t.add_row(str(f["fold"]), fmt_num(f.get("train_rows")), str(f.get("first_date")), str(f.get("last_date")),
                      fmt_num(result_for(r, "finhrm").get("mae")), fmt_num(result_for(r, "persistence").get("mae")),
                      fmt_num(result_for(r, "finhrm").get("skill"), 3), fmt_p(result_for(r, "persistence").get("dm_p")))
        show(t, metrics_table("Mean over folds (scale-free figures; each fold's MAE is above)", result["mean"],
                              scale_free=True))
        _intervals_view(result["mean"], scale_free=True)
        if result.get("plot"):
            note(f"plot written to {result['plot']}")
        return
    pooled = POOLED if result.get("series") else ""
    title = f"{result.get('evaluated')}{pooled}: {result.get('rows', 0):,} rows, {result.get('first_date')} .. {result.get('last_date')}"
    show(metrics_table(title, result["results"], scale_free=bool(result.get("series"))))
    if result.get("series"):
        show(series_table("per ticker", result["series"]))
    _intervals_view(result["results"], scale_free=bool(result.get("series")))
    act_segments_note(result.get("act_segments"))
    note("p (DM): Diebold-Mariano test that finhrm and the baseline have the same MAE on these rows; "
         "below 0.05 the difference is unlikely to be luck.")
    if result.get("intervals"):
        per_third = ", one level per volatility third" if result.get("intervals_per_third") else ""
        note(f"intervals: {result['intervals']} conformal"
             + (f" (they learn from each outcome after the training period{per_third})"
                if result["intervals"] == "adaptive" else ""))
    for n in result.get("notes", []):
        note(n)
    if result.get("plot"):
        note(f"plot written to {result['plot']}")


def _intervals_view(results: dict, scale_free: bool) -> None:
    """The Intervals table, when the run has intervals, and what its rows mean."""
    t = intervals_table("Intervals", results, scale_free)
    if t is None:
        return
    show(t)
    words = ("winkler: the width plus 2/(1 - coverage) times any miss, price units; pinball: quantile loss of "
             "the two ends; lower is better. " if not scale_free else "")
    anchor = ("CQR linear: quantile regression on the same inputs, fit on the training rows and conformalized "
              "on validation, the interval anchor; winkler p (DM): is its interval score different from "
              "finhrm's? " if any("cqr_linear" in k for k in results) else "")
    note(words + "Volatility thirds by the training rows' scale; joint: high and low both inside. " + anchor
         + "Persistence and recent range are point forecasts: no intervals.")


def act_segments_note(seg: dict | None) -> None:
    """``--act``: segments per row (mean, histogram) and the compute an early exit would skip."""
    if not seg or seg.get("mean_segments") is None:
        return
    hist = ", ".join(f"{i + 1}: {c:,}" for i, c in enumerate(seg["segments_histogram"]))
    note(f"--act: {fmt_num(seg['mean_segments'], 2)} of {seg['max_segments']} segments per row on average "
         f"(rows halting at each segment: {hist}); {fmt_pct(seg['skippable_share'])} of the segments' compute "
         "could be skipped (all segments still run, in one batch).")


def render_list(result: dict) -> None:
    runs = result["runs"]
    if not runs:
        note(f"no runs under {result['root']}; train one with `finhrm train DATA`.")
        return
    t = table(f"Runs in {result['root']}", compact=True)
    name_col(t, "run (for --model, RUN) / data")
    t.add_column("status", no_wrap=True)
    for c in ("created", "size", "best val\nMAE"):
        num_col(t, c)
    styles = {"finished": "green", "training": "cyan", "unfinished": "yellow"}
    for r in runs:
        st = r.get("status") or "-"
        created = str(r.get("created") or "-")
        data = Path(str(r.get("data"))).name if r.get("data") else "-"
        if r.get("parent"):  # a production run: where it came from (it validates nothing)
            data += f", from {r['parent']}"
        t.add_row(Text(r["name"]) + Text(f"\n  {data}", style="dim"), Text(st, style=styles.get(st, "")),
                  created[:16].replace("T", "\n") if len(created) >= 16 else created,
                  fmt_bytes(r.get("size", 0)), fmt_num(r.get("best_val_mae")))
    if any(r.get("status") == "unfinished" for r in runs):
        note("unfinished runs were interrupted or crashed: finish one with `finhrm train --resume NAME`.")
    show(t)


def ensemble_line(e: dict) -> str:
    """An ensemble run's members, one phrase each: the mean of their forecasts."""
    parts = []
    for m in e.get("members") or []:
        f, md = m.get("features") or {}, m.get("model") or {}
        what = f"{m.get('dir')}: d_model {md.get('d_model')}, seq_len {f.get('seq_len')}, {f.get('feature_set')}"
        if m.get("trial") is not None:
            what += f", trial {m['trial']}"
        if m.get("seed") is not None:
            what += f", seed {m['seed']}"
        parts.append(what)
    return (f"mean of {len(parts)} runs' forecasts ({e.get('how', 'runs')}; the model table shows the member whose windows it uses, "
            f"the parameters all): " + "; ".join(parts))


def render_inspect(r: dict) -> None:
    for w in r.get("warnings") or []:
        warn(w)
    src = r.get("source") or {}
    splits = r.get("splits") or {}
    model = r.get("model") or {}
    train = r.get("training") or {}
    show(kv_table("Run", [
        ("run", r["run"]),
        ("created", r.get("created")),
        *([("production", lineage_line(r["parent"], r.get("metrics")))] if r.get("parent") else []),
        *([("ensemble", ensemble_line(r["ensemble"]))] if r.get("ensemble") else []),
        ("data", f"{src.get('path')} ({src.get('shape')}, {fmt_num(src.get('n_rows'))} rows)"),
        ("splits", "; ".join(f"{k} {fmt_num(v.get('n_windows'))} windows {v.get('first_date')}..{v.get('last_date')}"
                             for k, v in splits.items())),
        ("features", ", ".join(r.get("feature_names") or [])),
        ("versions", ", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items())),
    ]))
    params = r.get("parameters") or {}
    pt = table("Model", box=None)
    pt.add_column("setting", style="cyan")
    pt.add_column("value", justify="right")
    for k in ("d_model", "n_heads", "h_layers", "l_layers", "h_cycles", "l_cycles", "halt_max_steps", "halt_exploration", "seq_len", "n_features", "h_context"):
        if k in model:
            pt.add_row(k, str(model[k]))
    for k, v in params.items():
        pt.add_row(f"params: {k}", f"{v:,}")
    show(pt)
    tc = r.get("train") or {}
    settings = ", ".join(f"{label} {tc[k]}" for k, label in (
        ("loss", "loss"), ("lr", "lr"), ("batch_size", "batch"), ("weight_decay", "weight decay"),
        ("ema", "ema"), ("patience", "patience"), ("min_delta", "min delta"), ("seed", "seed")) if k in tc)
    show(kv_table("Training", [
        ("settings", settings or "-"),
        ("epochs", stopped_text(train.get("best_epoch"), train.get("epochs"), tc.get("epochs"))),
        ("best val MAE", f"{fmt_num(train.get('best_val_mae'))} (the HRM alone, at its best epoch)"),
        ("training time", training_time(train.get("seconds"))),
        ("speed", f"{fmt_num(train.get('samples_per_s'), 0)} samples/s"),
        ("ACT training", act_training_line(train.get("act_training"), train.get("segments_per_window"),
                                          train.get("act_inference"))),
        ("forecast", blend_line(r.get("blend"), (r.get("train") or {}).get("blend", True), len(r.get("series") or []) or 1,
                                (r.get("parent") or {}).get("name"))),
        ("intervals", intervals_line(r.get("intervals"), bool(r.get("parent")))),
    ]))
    hist = r.get("history") or []
    if hist:
        series = {"train loss": [h.get("train_loss") for h in hist]}
        val = {"val MAE": [h.get("val_mae") for h in hist]}
        from rich.columns import Columns

        show(Columns([line_chart(series, width=36, title="train loss per epoch"),
                      line_chart(val, width=36, title="validation MAE per epoch (price units)")]))
    show(*_metrics_views(r.get("metrics") or {}))
    act = r.get("act") or {}
    if act:
        render_act(act, r.get("training") or {})


def intervals_line(d: dict | None, production: bool = False) -> str:
    """How a run's conformal intervals are made (``forecast.conformal.describe``)."""
    if not d:
        return "none (no validation rows to calibrate them on)"
    rows = f"{fmt_num(d.get('rows'))} validation rows" + (" (the parent run's)" if production else "")
    if d.get("rows_by_third"):
        rows += f", {' / '.join(fmt_num(v) for v in d['rows_by_third'])} calm / mid / wild"
    how = (f"quantile heads on the inputs{' and the forecast' if d['heads'] == 'inputs and forecast' else ''}, "
           f"widened by their CQR scores on {rows}" if d.get("heads")
           else f"residuals {'in units of the volatility scale' if d.get('units') == 'scale' else '(log ratios)'} "
                f"on {rows}")
    if "decay" in d:
        step = f"steps {fmt_num(d['gamma'], 2)} falling to {fmt_num(d.get('gamma_min'), 2)}"
    else:
        step = f"step {fmt_num(d.get('gamma'), 3)}"
    return f"{how}; {'one adaptive level per volatility third' if d.get('per_third') else 'one adaptive level'}, {step}"


def blend_line(bl: dict | None, enabled: bool = True, n_series: int = 1, parent: str | None = None) -> str:
    """How a run forecasts: the HRM alone, or its blend with the linear partner and the
    validation MAE of each (finhrm_cli.forecast.linear).  The two weights are rounded
    together, so they visibly add to 1."""
    if not bl:
        return ("HRM alone (too few training or validation rows for the linear partner)" if enabled
                else "HRM alone (--no-blend)")
    w = round(float(bl.get("hrm_weight", 1.0)), 2)
    v = bl.get("val_mae") or {}
    which = "val MAE" if n_series <= 1 else f"val MAE, mean of the {n_series} series' own MAEs"
    maes = (f"; {which}: HRM {fmt_num(v.get('hrm'))}, linear {fmt_num(v.get('linear'))}, blend {fmt_num(v.get('blend'))}"
            if v else "")
    best = v.get("best_weight")
    how = (f"validation's best HRM weight {float(best):.2f}, taken halfway to 0.5" if isinstance(best, (int, float))
           else f"the HRM weight its first run's validation chose ({parent}'s), the linear part refit on every row"
           if parent
           else "weight chosen on validation")
    return f"{w:.2f} x HRM + {1 - w:.2f} x median linear regression ({how}){maes}"


def stopped_text(best, epochs_run, planned=None) -> str:
    """How training ended, in words: every planned epoch ran, or early stopping (patience)
    ended it before the last one."""
    if isinstance(planned, int) and isinstance(epochs_run, int) and epochs_run < planned:
        return (f"best epoch {best}; stopped early after epoch {epochs_run} of {planned} "
                f"(no better validation MAE since epoch {best})")
    return f"best epoch {best} of {epochs_run} (ran all {epochs_run} epochs)"


def _interval(s: dict, base: float | None) -> str:
    """MAE(k) - MAE(1) and its 90% interval, in % of step 1's MAE (the verdict's unit)."""
    if s["step"] == 1 or not base:
        return "-"
    p = [100.0 * s[k] / base for k in ("mae_vs_step1", "mae_vs_step1_lo", "mae_vs_step1_hi")]
    return f"{p[0]:+.2f}% [{p[1]:+.2f}, {p[2]:+.2f}]"


def verdict_text(act: dict, training: dict | None = None) -> str:
    """The verdict, with why later segments may hurt: under carry-and-replace a window trains
    the segments it runs, so where windows halt at step 1 the later ones are rarely trained."""
    from finhrm_cli.forecast.actstats import HURT

    v = act.get("verdict") or "one segment only: nothing to compare"
    seg = (training or {}).get("segments_per_window")
    if v == HURT and (training or {}).get("act_training") == "carry" and isinstance(seg, (int, float)):
        v += (f": training ran {seg:.2f} segments per window, so the later segments were rarely trained; "
              "forecasts that halt (act_inference halted, the default) do not use them")
    return v


def render_act(act: dict, training: dict | None = None) -> None:
    """ACT on a run: per-step MAE against step 1 (90% paired bootstrap), P(halt) against the
    halting reward, where the Q head halts, the compute --act saves and the verdict."""
    # seven columns fit an 80-column terminal; per-step Brier and AUC are in --json, and the
    # summary below gives them pooled over the steps
    t = table(f"ACT halting on the {act.get('on')} ({act.get('samples'):,} samples)", box=None, pad_edge=False)
    for c in ("step", "MAE", "vs step 1 [90%]", "P(halt)", "reward", "P(cont.)", "halts here"):
        t.add_column(c, justify="right", no_wrap=True)
    base = act["steps"][0]["mae"] if act.get("steps") else None
    for s in act["steps"]:
        t.add_row(str(s["step"]), fmt_num(s["mae"]), _interval(s, base), fmt_num(s["q_halt"], 3), fmt_num(s["reward_rate"], 3),
                  fmt_num(s["q_continue"], 3), f"{s['halted']:,} ({fmt_pct(s['halted_share'])})")
    show(t, histogram(act["halting_histogram"], [str(i + 1) for i in range(len(act["halting_histogram"]))],
                      title="halting step histogram"))
    cal = act.get("calibration") or {}
    hc, raw = act.get("halt_calibration"), act.get("uncalibrated") or {}
    rows = [
        ("P(halt) calibration", (f"Brier {fmt_num(cal.get('brier'), 3)}, AUC {fmt_num(cal.get('auc'), 3)}; "
                                f"mean P(halt) {fmt_num(cal.get('mean_p_halt'), 3)} vs reward rate "
                                f"{fmt_num(cal.get('reward_rate'), 3)} (reward: error <= {fmt_num(act.get('halt_ref'), 3)} sd)")),
    ]
    if hc:
        b = float(hc.get("b", 0.0))
        rows.append(("Q head calibration", (f"P = sigmoid({fmt_num(hc.get('a'), 3)} x logit {'-' if b < 0 else '+'} {abs(b):.3f}), "
                                           f"fit on {hc.get('rows', 0):,} training rows; the raw head: Brier "
                                           f"{fmt_num(raw.get('brier'), 3)}, mean P(halt) {fmt_num(raw.get('mean_p_halt'), 3)}")))
    show(kv_table("ACT summary", rows + [
        ("segments under --act", (f"{fmt_num(act['mean_halting_step'], 2)} of {len(act['steps'])} on average; "
                                 f"{fmt_pct(act.get('compute_saved'))} of the compute could be skipped")),
        ("MAE after all steps", fmt_num(act["mae_all_steps"])),
        ("MAE with --act", f"{fmt_num(act['mae_act'])} ({act.get('mae_act_change', 0):+.4g})"),
        *([("best step by MAE", str(act["best_step"]))] if act.get("best_step_measurable") else []),
        ("verdict", verdict_text(act, training)),
    ]))
