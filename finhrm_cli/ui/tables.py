"""The tables and small terminal charts the views are built from.

One rule for every table (issue 25): at 80 columns a number is never cut.  Number columns
never wrap and never shrink (``num_col``); a name column (a ticker, a run, a path) is the one
that gives way, folding onto more lines with every character kept (``name_col``), since a run
name is what ``--model`` takes.  Headers are short or break onto two lines.  Tables with many
columns drop the box (``compact``), which saves three characters a column.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from finhrm_cli.ui.console import fmt_num, fmt_p, fmt_pct

# JSON keys of the forecasts scored -> the column a table shows (runs made before issue 25
# stored "HRM alone" and "recent range" as keys: those show as they are)
LABELS = {"finhrm": "finhrm", "hrm_alone": "HRM alone", "persistence": "persistence", "recent_range": "recent range",
          "cqr_linear": "CQR linear"}


def label(key: str) -> str:
    return LABELS.get(key, key)


def result_for(results: dict, key: str) -> dict:
    """``results[key]``, also under the key a run made before issue 25 used (``recent range``)."""
    return results.get(key) or results.get(key.replace("_", " ")) or results.get(label(key)) or {}


def table(title: str, compact: bool = False, **kw) -> Table:
    if compact:
        kw.setdefault("box", None)
        kw.setdefault("pad_edge", False)
        kw.setdefault("header_style", "bold")
    return Table(title=title, title_justify="left", title_style="bold", **kw)


def name_col(t: Table, header: str, **kw) -> None:
    """A column of names: the one that gives way, folding (never cutting) a long name."""
    t.add_column(header, justify="left", overflow="fold", **kw)


def num_col(t: Table, header: str, **kw) -> None:
    """A column of numbers: right-aligned, never wrapped, never shrunk."""
    t.add_column(header, justify="right", no_wrap=True, **kw)


def kv_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left", title_style="bold", box=None, pad_edge=False)
    t.add_column(style="cyan", no_wrap=True)
    t.add_column(overflow="fold")
    for k, v in rows:
        t.add_row(k, v if isinstance(v, (Text, Table)) else str(v))
    return t


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
    ("skill, mean over series", "skill_mean", lambda v: fmt_num(v, 3)),
    ("p (DM test vs finhrm)", "dm_p", lambda v: fmt_p(v)),
]
PRICE_UNIT_KEYS = {"mae_high", "mae_low", "mae", "rmse_high", "rmse_low"}


def metrics_table(title: str, results: dict[str, dict], scale_free: bool = False) -> Table:
    """results: forecast key (finhrm, persistence, ...) -> metric dict.  ``scale_free``: leave
    out the price-unit rows (MAE, RMSE), which mean nothing pooled over several series or
    averaged over folds of different price levels."""
    t = table(title)
    t.add_column("metric", style="cyan")
    for name in results:
        num_col(t, label(name))
    for text, key, fmt in METRIC_ROWS:
        if (scale_free and key in PRICE_UNIT_KEYS) or not any(key in m for m in results.values()):
            continue
        t.add_row(text, *[fmt(m[key]) if m.get(key) is not None else "-" for m in results.values()])
    return t


THIRD_NAMES = {1: "calm", 2: "mid", 3: "wild"}


def intervals_table(title: str, results: dict[str, dict], scale_free: bool = False) -> Table | None:
    """Interval quality (issue 27) of the forecasts that have intervals (``winkler`` among
    their metrics): Winkler score and pinball loss (price units: left out when ``scale_free``),
    coverage in each volatility third with its rows, joint coverage.  None: no intervals."""
    have = {k: m for k, m in results.items() if "winkler" in m or "joint_coverage" in m}
    if not have:
        return None
    t = table(title)
    t.add_column("metric", style="cyan")
    for name in have:
        num_col(t, label(name))
    rows: list[tuple[str, list]] = []
    if not scale_free:
        rows += [("winkler", [m.get("winkler") for m in have.values()]),
                 ("pinball", [m.get("pinball") for m in have.values()])]
    if any(m.get("winkler_dm_p") is not None for m in have.values()):  # the anchor's, against finhrm's
        rows.append(("winkler p (DM)", [m.get("winkler_dm_p") for m in have.values()]))
    first = next(iter(have.values())).get("coverage_by_volatility") or []
    for i, third in enumerate(first):
        cells = [(m.get("coverage_by_volatility") or [{}] * 3)[i].get("coverage") for m in have.values()]
        rows.append((f"coverage {THIRD_NAMES.get(third['third'], third['third'])} ({third['rows']:,} rows)", cells))
    rows.append(("joint coverage", [m.get("joint_coverage") for m in have.values()]))
    for text, cells in rows:
        fmt = fmt_pct if "coverage" in text else fmt_p if "(DM)" in text else fmt_num
        t.add_row(text, *[fmt(v) if v is not None else "-" for v in cells])
    return t


def series_table(title: str, series: dict[str, dict]) -> Table:
    """One line per ticker: rows, MAE of the model and the baselines (each in its own price
    units), skill, the DM p-value against persistence, interval coverage."""
    t = table(title, compact=True)
    name_col(t, "ticker")
    for c in ("rows", "MAE", "persistence\nMAE", "recent range\nMAE", "skill", "p (DM)", "coverage"):
        num_col(t, c)
    for name, sc in series.items():
        r = sc["results"]
        m, pers, rr = result_for(r, "finhrm"), result_for(r, "persistence"), result_for(r, "recent_range")
        cov = [m.get("coverage_high"), m.get("coverage_low")]
        t.add_row(name, fmt_num(sc.get("rows")), fmt_num(m.get("mae")), fmt_num(pers.get("mae")),
                  fmt_num(rr.get("mae")), fmt_num(m.get("skill"), 3),
                  fmt_p(pers.get("dm_p")), fmt_pct(sum(cov) / 2) if None not in cov else "-")
    return t


# ---------------------------------------------------------------------------- charts
_BLOCKS = " ▁▂▃▄▅▆▇█"


def finite(v: Any) -> bool:
    """A real, finite number (history.jsonl is read as found: a hand-edited value may be text)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def line_chart(series: dict[str, Sequence[float]], height: int = 8, width: int = 60, title: str = "") -> Panel:
    """A small terminal chart: one row of block characters per level, one column per point.

    Several series share the y axis; each gets its own colour.  Points are resampled to
    ``width`` columns.
    """
    colours = ["cyan", "magenta", "green", "yellow"]
    clean = {k: [float(v) for v in vs if finite(v)] for k, vs in series.items()}
    clean = {k: v for k, v in clean.items() if v}
    if not clean:
        return Panel(Text("no data"), title=title)
    lo = min(min(v) for v in clean.values())
    hi = max(max(v) for v in clean.values())
    span = hi - lo or 1.0
    lines = [Text() for _ in range(height)]
    n = max(len(v) for v in clean.values())
    cols = min(width, n * max(1, min(4, width // n)))  # few points: each gets several columns
    for ci, (_name, vals) in enumerate(clean.items()):
        colour = colours[ci % len(colours)]
        m = len(vals)
        pts = [vals[min(m - 1, round(i * (m - 1) / max(cols - 1, 1)))] for i in range(cols)]
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
        tick = label_hi if r == 0 else (label_lo if r == height - 1 else "")
        body.append(f"{tick:>10} ┤", style="dim")
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
        bar = "█" * (round(width * c / top) if top else 0)
        t.add_row(str(lab), f"{c:,}", Text(bar, style="cyan"))
    return t
