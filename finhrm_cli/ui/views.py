"""Every command's view: what ``prepare``, ``train``, ``evaluate``, ``predict`` (as a
table), ``inspect`` and ``inspect --list`` show, and the small terminal charts they use (predict's
table and the run lines after a command's output: ``forecasts``).

Each ``render_*`` takes the dict a ``service`` function returned and draws it with rich:
tables and charts on stdout, notes and warnings on stderr (``ui.console``).  ``--json``
bypasses these (``console.print_json``); ``predict``'s JSON and CSV go through
``ui.export``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from finhrm_cli.ui.console import fmt_bytes, fmt_num, fmt_p, fmt_pct, note, show, warn


# ---------------------------------------------------------------------------- building blocks
def kv_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left", title_style="bold", box=None, pad_edge=False)
    t.add_column(style="cyan", no_wrap=True)
    t.add_column()
    for k, v in rows:
        t.add_row(k, v if isinstance(v, (Text, Table)) else str(v))
    return t


# ---------------------------------------------------------------------------- prepare
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
        t = Table(title="Chronological splits", title_justify="left", title_style="bold")
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
        show(kv_table("Rows dropped", [(k, fmt_num(v)) for k, v in dropped.items()]))
    for n in summary.get("notes") or []:
        note(n)
    for w in summary.get("warnings") or []:
        warn(w)


# ---------------------------------------------------------------------------- metrics
METRIC_ROWS = [
    ("MAE high", "mae_high", fmt_num),
    ("MAE low", "mae_low", fmt_num),
    ("MAE mean", "mae", fmt_num),
    ("RMSE high", "rmse_high", fmt_num),
    ("RMSE low", "rmse_low", fmt_num),
    ("MAPE high", "mape_high", fmt_pct),
    ("MAPE low", "mape_low", fmt_pct),
    ("R² high (target)", "r2_high", lambda v: fmt_num(v, 3)),
    ("R² low (target)", "r2_low", lambda v: fmt_num(v, 3)),
    ("direction high", "direction_high", fmt_pct),
    ("direction low", "direction_low", fmt_pct),
    ("range valid", "range_valid", fmt_pct),
    ("interval coverage high", "coverage_high", fmt_pct),
    ("interval coverage low", "coverage_low", fmt_pct),
    ("skill (MAE / persistence)", "skill", lambda v: fmt_num(v, 3)),
    ("p (DM test vs finhrm)", "dm_p", lambda v: fmt_p(v)),
]


def metrics_table(title: str, results: dict[str, dict]) -> Table:
    """results: column name (model, persistence, ...) -> metric dict."""
    t = Table(title=title, title_justify="left", title_style="bold")
    t.add_column("metric", style="cyan", no_wrap=True)
    for name in results:
        t.add_column(name, justify="right")
    for label, key, fmt in METRIC_ROWS:
        if not any(key in m for m in results.values()):
            continue
        vals = [fmt(m[key]) if m.get(key) is not None else "-" for m in results.values()]
        t.add_row(label, *vals)
    return t


# ---------------------------------------------------------------------------- charts
_BLOCKS = " ▁▂▃▄▅▆▇█"


def _finite(v: Any) -> bool:
    """A real, finite number (history.jsonl is read as found: a hand-edited value may be text)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def line_chart(series: dict[str, Sequence[float]], height: int = 8, width: int = 60, title: str = "") -> Panel:
    """A small terminal chart: one row of block characters per level, one column per point.

    Several series share the y axis; each gets its own colour.  Points are resampled to
    ``width`` columns.
    """
    colours = ["cyan", "magenta", "green", "yellow"]
    clean = {k: [float(v) for v in vs if _finite(v)] for k, vs in series.items()}
    clean = {k: v for k, v in clean.items() if v}
    if not clean:
        return Panel(Text("no data"), title=title)
    lo = min(min(v) for v in clean.values())
    hi = max(max(v) for v in clean.values())
    span = hi - lo or 1.0
    lines = [Text() for _ in range(height)]
    n = max(len(v) for v in clean.values())
    cols = min(width, n * max(1, min(4, width // n)))  # few points: each gets several columns
    for ci, (name, vals) in enumerate(clean.items()):
        colour = colours[ci % len(colours)]
        m = len(vals)
        pts = [vals[min(m - 1, int(round(i * (m - 1) / max(cols - 1, 1))))] for i in range(cols)]
        grid = [[" "] * cols for _ in range(height)]
        for x, v in enumerate(pts):
            level = (v - lo) / span * (height * 8 - 1)
            full, part = divmod(int(level), 8)
            row = height - 1 - full
            grid[row][x] = _BLOCKS[part + 1] if part < 8 else "█"
        for r in range(height):
            lines[r].append("".join(grid[r]) + "  ", style=colour)
    label_hi, label_lo = fmt_num(hi, 4), fmt_num(lo, 4)
    body = Text()
    for r, line in enumerate(lines):
        label = label_hi if r == 0 else (label_lo if r == height - 1 else "")
        body.append(f"{label:>10} ┤", style="dim")
        body.append_text(line)
        body.append("\n")
    legend = Text("  ".join(f"■ {k}" for k in clean), style="dim")
    for ci, k in enumerate(clean):
        start = sum(len(f"■ {kk}  ") for kk in list(clean)[:ci])
        legend.stylize(colours[ci % len(colours)], start, start + 1)
    return Panel(Group(body, legend), title=title, title_align="left", expand=False)


def histogram(counts: Sequence[int], labels: Sequence[str], width: int = 40, title: str = "") -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", box=None)
    t.add_column("step", justify="right")
    t.add_column("samples", justify="right")
    t.add_column("")
    top = max(counts) if counts else 0
    for lab, c in zip(labels, counts):
        bar = "█" * (int(round(width * c / top)) if top else 0)
        t.add_row(str(lab), f"{c:,}", Text(bar, style="cyan"))
    return t


# ---------------------------------------------------------------------------- command views
def series_table(title: str, series: dict[str, dict]) -> Table:
    """One line per ticker: rows, MAE of the model and the baselines, skill, coverage."""
    t = Table(title=title, title_justify="left", title_style="bold")
    for c in ("ticker", "rows", "MAE", "persistence", "recent range", "skill", "p (DM)", "coverage"):
        t.add_column(c, justify="left" if c == "ticker" else "right", no_wrap=True)
    for name, sc in series.items():
        r = sc["results"]
        m = r.get("finhrm", {})
        cov = [m.get("coverage_high"), m.get("coverage_low")]
        t.add_row(name, fmt_num(sc.get("rows")), fmt_num(m.get("mae")), fmt_num(r["persistence"].get("mae")),
                  fmt_num(r["recent range"].get("mae")), fmt_num(m.get("skill"), 3),
                  fmt_p(r["persistence"].get("dm_p")), fmt_pct(sum(cov) / 2) if None not in cov else "-")
    return t


def _metrics_views(metrics: dict) -> list:
    views = []
    for split, m in metrics.items():
        if not m or "results" not in m:
            continue
        pooled = " (all series pooled)" if m.get("series") else ""
        views.append(
            metrics_table(
                f"{split}{pooled}: {m.get('rows', 0):,} rows, {m.get('first_date')} .. {m.get('last_date')}",
                m["results"],
            )
        )
        if m.get("series"):
            views.append(series_table(f"{split} per ticker", m["series"]))
    return views


def act_training_line(mode: str | None, segments: float | None) -> str:
    """How ACT spent training compute: "carry: 1.21 segments per window (last epoch)"."""
    what = {"carry": "carry-and-replace", "every": "every segment for every window"}.get(mode or "every", mode)
    return f"{what}: {fmt_num(segments, 2)} segments per window (last epoch)"


def render_train(result: dict) -> None:
    metrics = result.get("metrics", {})
    rows = [
        ("run", result.get("run")),
        ("best epoch", f"{result.get('best_epoch')} of {result.get('epochs_run')} ({result.get('stopped')})"),
        ("speed", f"{fmt_num(result.get('train_samples_per_s'), 0)} samples/s"),
        ("time", f"{fmt_num(result.get('seconds'), 1)} s"),
        ("ACT training", act_training_line(result.get("act_training"), result.get("segments_per_window"))),
    ]
    val = (metrics.get("val") or {}).get("results", {})
    if val:
        m = next(iter(val.values()))
        rows.append(("validation MAE", f"{fmt_num(m.get('mae'))} (skill {fmt_num(m.get('skill'), 3)})"))
    if "blend" in result:
        rows.append(("forecast", blend_line(result.get("blend"), result.get("blend_enabled", True))))
    test = {k: v for k, v in metrics.items() if k == "test"}
    show(kv_table("Training finished", rows), *_metrics_views(test))
    note("skill = MAE / persistence MAE; below 1 beats 'tomorrow = today'. "
         f"Next: finhrm predict DATA --model {result.get('name')}")


def render_evaluate(result: dict) -> None:
    if "folds" in result:
        t = Table(title="Walk-forward folds", title_justify="left", title_style="bold")
        for c in ("fold", "train rows", "test from", "test to", "MAE", "persistence MAE", "skill", "p (DM)"):
            t.add_column(c, justify="right")
        for f in result["folds"]:
            r = f["results"]
            t.add_row(str(f["fold"]), fmt_num(f.get("train_rows")), str(f.get("first_date")), str(f.get("last_date")),
                      fmt_num(r["finhrm"]["mae"]), fmt_num(r["persistence"]["mae"]), fmt_num(r["finhrm"].get("skill"), 3),
                      fmt_p(r["persistence"].get("dm_p")))
        show(t, metrics_table("Mean over folds", result["mean"]))
        return
    pooled = " (all series pooled)" if result.get("series") else ""
    title = f"{result.get('evaluated')}{pooled}: {result.get('rows', 0):,} rows, {result.get('first_date')} .. {result.get('last_date')}"
    show(metrics_table(title, result["results"]))
    if result.get("series"):
        show(series_table("per ticker", result["series"]))
    act_segments_note(result.get("act_segments"))
    note("p (DM): Diebold-Mariano test that finhrm and the baseline have the same MAE on these rows; "
         "below 0.05 the difference is unlikely to be luck.")
    if result.get("intervals"):
        note(f"intervals: {result['intervals']} conformal"
             + (" (they learn from each outcome after the training period)" if result["intervals"] == "adaptive" else ""))
    for n in result.get("notes", []):
        note(n)
    if result.get("plot"):
        note(f"plot written to {result['plot']}")


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
    t = Table(title=f"Runs in {result['root']}", title_justify="left", title_style="bold")
    for c in ("name", "status", "data", "created", "size", "best val MAE"):
        t.add_column(c, justify="right" if c in ("size", "best val MAE") else "left")
    styles = {"finished": "green", "training": "cyan", "unfinished": "yellow"}
    for r in runs:
        st = r.get("status") or "-"
        t.add_row(r["name"], Text(st, style=styles.get(st, "")), str(r.get("data") or "-"),
                  str(r.get("created") or "-"), fmt_bytes(r.get("size", 0)), fmt_num(r.get("best_val_mae")))
    if any(r.get("status") == "unfinished" for r in runs):
        note("unfinished runs were interrupted or crashed: finish one with `finhrm train --resume NAME`.")
    show(t)


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
        ("data", f"{src.get('path')} ({src.get('shape')}, {fmt_num(src.get('n_rows'))} rows)"),
        ("splits", "; ".join(f"{k} {fmt_num(v.get('n_windows'))} windows {v.get('first_date')}..{v.get('last_date')}"
                             for k, v in splits.items())),
        ("features", ", ".join(r.get("feature_names") or [])),
        ("versions", ", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items())),
    ]))
    params = r.get("parameters") or {}
    pt = Table(title="Model", title_justify="left", title_style="bold", box=None)
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
        ("epochs", f"{train.get('epochs')} (best {train.get('best_epoch')})"),
        ("best val MAE", fmt_num(train.get("best_val_mae"))),
        ("time", f"{fmt_num(train.get('seconds'), 1)} s"),
        ("speed", f"{fmt_num(train.get('samples_per_s'), 0)} samples/s"),
        ("ACT training", act_training_line(train.get("act_training"), train.get("segments_per_window"))),
        ("forecast", blend_line(r.get("blend"), (r.get("train") or {}).get("blend", True))),
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
        render_act(act)


def blend_line(bl: dict | None, enabled: bool = True) -> str:
    """How a run forecasts: the HRM alone, or its blend with the linear partner and the
    validation MAE of each (finhrm_cli.forecast.linear)."""
    if not bl:
        return ("HRM alone (too few training or validation rows for the linear partner)" if enabled
                else "HRM alone (--no-blend)")
    w = float(bl.get("hrm_weight", 1.0))
    v = bl.get("val_mae") or {}
    maes = (f"; val MAE: HRM {fmt_num(v.get('hrm'))}, linear {fmt_num(v.get('linear'))}, blend {fmt_num(v.get('blend'))}"
            if v else "")
    best = v.get("best_weight")
    how = (f"validation's best HRM weight {float(best):.2f}, taken halfway to 0.5" if isinstance(best, (int, float))
           else "weight chosen on validation")
    return f"{w:.2f} x HRM + {1 - w:.2f} x median linear regression ({how}){maes}"


def _interval(s: dict, base: float | None) -> str:
    """MAE(k) - MAE(1) and its 90% interval, in % of step 1's MAE (the verdict's unit)."""
    if s["step"] == 1 or not base:
        return "-"
    p = [100.0 * s[k] / base for k in ("mae_vs_step1", "mae_vs_step1_lo", "mae_vs_step1_hi")]
    return f"{p[0]:+.2f}% [{p[1]:+.2f}, {p[2]:+.2f}]"


def render_act(act: dict) -> None:
    """ACT on a run: per-step MAE against step 1 (90% paired bootstrap), P(halt) against the
    halting reward, where the Q head halts, the compute --act saves and the verdict."""
    # seven columns fit an 80-column terminal; per-step Brier and AUC are in --json, and the
    # summary below gives them pooled over the steps
    t = Table(title=f"ACT halting on the {act.get('on')} ({act.get('samples'):,} samples)", title_justify="left",
              title_style="bold", box=None, pad_edge=False)
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
        ("P(halt) calibration", f"Brier {fmt_num(cal.get('brier'), 3)}, AUC {fmt_num(cal.get('auc'), 3)}; "
                                f"mean P(halt) {fmt_num(cal.get('mean_p_halt'), 3)} vs reward rate "
                                f"{fmt_num(cal.get('reward_rate'), 3)} (reward: error <= {fmt_num(act.get('halt_ref'), 3)} sd)"),
    ]
    if hc:
        b = float(hc.get("b", 0.0))
        rows.append(("Q head calibration", f"P = sigmoid({fmt_num(hc.get('a'), 3)} x logit {'-' if b < 0 else '+'} {abs(b):.3f}), "
                                           f"fit on {hc.get('rows', 0):,} training rows; the raw head: Brier "
                                           f"{fmt_num(raw.get('brier'), 3)}, mean P(halt) {fmt_num(raw.get('mean_p_halt'), 3)}"))
    show(kv_table("ACT summary", rows + [
        ("segments under --act", f"{fmt_num(act['mean_halting_step'], 2)} of {len(act['steps'])} on average; "
                                 f"{fmt_pct(act.get('compute_saved'))} of the compute could be skipped"),
        ("MAE after all steps", fmt_num(act["mae_all_steps"])),
        ("MAE with --act", f"{fmt_num(act['mae_act'])} ({act.get('mae_act_change', 0):+.4g})"),
        ("best step by MAE", str(act["best_step"])),
        ("verdict", act.get("verdict") or "one segment only: nothing to compare"),
    ]))
