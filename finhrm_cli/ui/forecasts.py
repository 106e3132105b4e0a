"""predict's table: the forecasts with their intervals, the series, the session each is for
and the run; and the lines every command that uses a run prints after its output (which run
and why, how stale it is for the file).  JSON and CSV go through ``export``."""

from __future__ import annotations


from rich.table import Table
from rich.text import Text

from finhrm_cli.ui import console, export
from finhrm_cli.ui.console import fmt_num, note, show
from finhrm_cli.ui.tables import finite, name_col, num_col, table
from finhrm_cli.ui.views import act_segments_note


def render_predict(result: dict, fmt: str, output=None) -> None:
    """predict's view: JSON or CSV (to stdout or ``output``) through ``export``; else a
    table of the forecasts with their intervals, naming the series, the session each is
    for and the run."""
    if export.write_forecasts(result, fmt, output):
        return
    rows = result["rows"]
    cov = result.get("coverage", 0.8)
    unbounded: list[int] = []
    if len(rows) == 1:
        r = rows[0]
        show(Text.assemble(("Forecast for ", "bold"), (_day(r["target_date"]), "bold"),
                           f" ({r.get('ticker')}, the session after {r['date']}, close {fmt_num(r['close'], 2)})"),
             _forecast_table(r, cov, unbounded))
    else:
        _show_forecast_rows(rows, cov, unbounded)
    if result.get("quantiles"):
        _show_quantiles(rows, result["quantiles"])
    show(Text(f"run {result.get('run_name') or result.get('run')}", style="dim"))
    if unbounded:
        note(f"unbounded: the run's validation split has too few rows to bound the {cov:.0%} interval; "
             "train on a longer history or ask for a lower --coverage.")
    act_segments_note(result.get("act_segments"))


def _show_quantiles(rows: list[dict], q: dict) -> None:
    """The quantiles of each ticker's latest forecast, one line per level; with --all, each
    pair of levels' coverage (high, low, both) over the rows after the run's validation."""
    from finhrm_cli.forecast.quantiles import key

    last = {r.get("ticker"): r for r in rows}  # each ticker's latest row
    t = table("Quantiles" + (" (latest forecast)" if len(rows) > 1 else ""),
              compact=True)
    num_col(t, "level")
    for name in last:
        for side in ("high", "low"):
            num_col(t, f"{name} {side}" if len(last) > 1 else side)
    def cell(v):  # too few residuals for a level: no bound (0 or infinity), as the intervals say
        return fmt_num(v, 2) if finite(v) and v > 0 else "unbounded"

    for tau in q["levels"]:
        t.add_row(f"{tau:g}", *[cell(r.get(key(side, tau))) for r in last.values() for side in ("high", "low")])
    show(t)
    for c in q.get("coverage") or []:
        if c["rows"]:
            note(f"{c['lower']:g} .. {c['upper']:g} ({c['nominal']:.0%} each) over {c['rows']:,} rows after the "
                 f"run's validation: high {c['coverage_high']:.1%}, low {c['coverage_low']:.1%}, "
                 f"both {c['joint_coverage']:.1%}")


def _day(iso_date: str) -> str:
    """"Fri 2025-02-28": the day of the week helps check the session."""
    import datetime as dt

    try:
        return f"{dt.date.fromisoformat(iso_date):%a} {iso_date}"
    except (TypeError, ValueError):
        return str(iso_date)


def run_notes(result: dict) -> None:
    """After a command's output, on stderr: which run it used and why (``run.choose``), and
    for ``predict`` how many sessions the file holds after the run's last training row, with
    a one-line hint to refit when that is more than ``stale_after``."""
    if result.get("run_name"):
        note(f"model: {result['run_name']} ({result.get('run_choice')})")
    st = result.get("staleness") or {}
    after = {k: v for k, v in (st.get("sessions_after_training") or {}).items() if v is not None}
    if not after:
        return
    lasts = sorted({d for d in (st.get("last_training_date") or {}).values() if d})
    since = f"the run's last training row ({lasts[0]})" if len(lasts) == 1 else "the run's last training row"
    counts = sorted(after.values())
    if len(after) == 1:
        (name, n), = after.items()
        note(f"{name}: the file holds {n:,} session{'s' if n != 1 else ''} after {since}")
    elif len(after) <= 4:
        note(f"sessions after {since}: " + ", ".join(f"{k} {v:,}" for k, v in after.items()))
    else:
        note(f"{counts[0]:,} to {counts[-1]:,} sessions per ticker after {since}")
    limit = st.get("stale_after")
    if isinstance(limit, int) and counts[-1] > limit:
        what = (f"the file's last {counts[-1]:,} sessions" if len(after) == 1
                else f"up to {counts[-1]:,} recent sessions of a ticker")
        note(f"hint: the run has not trained on {what}; refit on every row with `{st.get('refit')}`")


def _interval_cell(lo, hi, unbounded: list) -> str:
    """A forecast's interval; 'unbounded' (and a mark in ``unbounded``) when it has no bound."""
    if lo is None:
        return "-"
    if not (finite(lo) and finite(hi)):  # too few validation residuals for this coverage
        unbounded.append(1)
        return "unbounded"
    return f"{fmt_num(lo, 2)} .. {fmt_num(hi, 2)}"


def _forecast_table(r: dict, cov: float, unbounded: list) -> Table:
    """One forecast: high and low, their change from the close and their intervals."""
    c = r["close"]
    t = Table(box=None, pad_edge=False)
    for col in ("", "forecast", "vs close", f"{cov:.0%} interval"):
        t.add_column(col, justify="left" if not col else "right")
    t.add_row(Text("high", style="green"), Text(fmt_num(r["pred_high"], 2), style="bold green"),
              f"{100 * (r['pred_high'] / c - 1):+.2f}%", _interval_cell(r["pred_high_lo"], r["pred_high_hi"], unbounded))
    t.add_row(Text("low", style="red"), Text(fmt_num(r["pred_low"], 2), style="bold red"),
              f"{100 * (r['pred_low'] / c - 1):+.2f}%", _interval_cell(r["pred_low_lo"], r["pred_low_hi"], unbounded))
    return t


def _forecast_columns(multi: bool, backtest: bool, width: int) -> tuple[list[str], bool]:
    """The columns of several forecasts at this width, and whether the intervals get columns
    of their own (else each goes under its forecast, in the same cell): the target session
    always; the last observed day and the close when there is room; with --all the split and
    the actual high and low."""
    wide = width >= (112 if multi else 96) + (30 if backtest else 0)
    cols = (["ticker"] if multi else []) + ([] if backtest or not wide else ["after"]) + ["for"] \
        + (["split"] if backtest else []) + ([] if backtest and not wide else ["close"]) + ["high"] \
        + (["high interval"] if wide else []) + ["low"] + (["low interval"] if wide else []) \
        + (["actual high", "actual low"] if backtest else [])
    return cols, wide


def _show_forecast_rows(rows: list[dict], cov: float, unbounded: list) -> None:
    """Several forecasts (tickers, or --all): the last 200 rows, with their intervals beside
    them when the terminal is wide enough, else under each forecast."""
    multi = len({r.get("ticker") for r in rows}) > 1
    backtest = "split" in rows[0]
    cols, wide = _forecast_columns(multi, backtest, console.out.width)
    under = not wide and not backtest  # a backtest has no room for them: its CSV has them
    where = "" if wide else ", under each forecast" if under else ""
    t = table("Forecasts, each for the session in 'for'" + (f" ({cov:.0%} intervals{where})" if wide or under else ""),
              compact=not wide)
    for col in cols:
        if col == "ticker":
            name_col(t, col)
        elif col == "split":
            t.add_column(col, no_wrap=True)
        else:
            num_col(t, col)
    for r in rows[-200:]:
        cell = {
            "ticker": r.get("ticker"), "after": r["date"], "for": r["target_date"], "split": r.get("split"),
            "close": fmt_num(r["close"], 2),
            "actual high": fmt_num(r.get("actual_high"), 2), "actual low": fmt_num(r.get("actual_low"), 2),
        }
        for side, style in (("high", "green"), ("low", "red")):
            value = Text(fmt_num(r[f"pred_{side}"], 2), style=style)
            iv = _interval_cell(r[f"pred_{side}_lo"], r[f"pred_{side}_hi"], unbounded)
            if wide:
                cell[side], cell[f"{side} interval"] = value, iv
            else:
                cell[side] = value + Text("\n" + iv, style="dim") if under and iv != "-" else value
        t.add_row(*(cell[c] for c in cols))
    show(t)
    if not (wide or under):
        note("intervals are left out of a backtest at this terminal width; --format csv shows them.")
    if len(rows) > 200:
        note(f"showing the last 200 of {len(rows):,} rows; use --format csv -o FILE for all of them.")
