"""``evaluate --plot``: one series' next-session high and low, predicted against actual, as a PNG.

Readable on purpose: by default only the last ``LAST`` sessions (a whole period of daily bars
squeezes the lines into one band), a title naming the series, the run and the MAE on the
sessions shown, and high and low told apart by marker shape (up and down triangles) and line
style (actual solid, predicted dashed) as well as by colour.  Walk-forward plots join the folds'
test blocks and mark where each fold starts.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finhrm_cli.errors import UsageError

LAST = 120  # sessions shown by default (--plot-last; 0 shows every session)


@dataclass
class PlotSeries:
    """The rows of one series to draw, in time order (prices; ``iv``: interval arrays or None)."""

    dates: np.ndarray        # the session each row forecasts (its target session)
    high: np.ndarray         # that day's high and low: the persistence forecast, for the skill in the title
    low: np.ndarray
    next_high: np.ndarray
    next_low: np.ndarray
    pred_high: np.ndarray
    pred_low: np.ndarray
    iv: dict | None = None
    fold_starts: list = field(default_factory=list)  # walk-forward: the first date of each fold

    @classmethod
    def join(cls, pieces: list[PlotSeries]) -> PlotSeries:
        """Several blocks one after the other (walk-forward folds); intervals only if every block has them."""
        cat = {k: np.concatenate([getattr(p, k) for p in pieces])
               for k in ("dates", "high", "low", "next_high", "next_low", "pred_high", "pred_low")}
        ivs = [p.iv for p in pieces]
        iv = None if any(v is None for v in ivs) else {k: np.concatenate([v[k] for v in ivs]) for k in ivs[0]}
        return cls(**cat, iv=iv, fold_starts=[p.dates[0] for p in pieces[1:] if len(p.dates)])

    def tail(self, n: int) -> PlotSeries:
        if not n or len(self.dates) <= n:
            return self
        s = slice(len(self.dates) - n, None)
        iv = {k: v[s] for k, v in self.iv.items()} if self.iv is not None else None
        return PlotSeries(self.dates[s], self.high[s], self.low[s], self.next_high[s], self.next_low[s],
                          self.pred_high[s], self.pred_low[s], iv,
                          [d for d in self.fold_starts if d >= self.dates[s][0]])


def shown_mae(ps: PlotSeries) -> tuple[float | None, float | None]:
    """(MAE, skill) over the rows drawn whose outcome is known: the mean of the high and the
    low MAE, and that over persistence's (today's high and low as tomorrow's)."""
    ok = np.isfinite(ps.next_high) & np.isfinite(ps.next_low)
    if not ok.any():
        return None, None
    mae = float((np.abs(ps.pred_high - ps.next_high)[ok].mean() + np.abs(ps.pred_low - ps.next_low)[ok].mean()) / 2)
    base = float((np.abs(ps.high - ps.next_high)[ok].mean() + np.abs(ps.low - ps.next_low)[ok].mean()) / 2)
    return mae, (mae / base if base > 0 else None)


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError(
            "--plot needs matplotlib, which is not installed; install it with `pip install 'finhrm[plot]'` "
            "(or `pip install matplotlib`)."
        ) from exc
    return plt


def plot_png(path: Path, ps: PlotSeries, series: str, run: str, coverage: float, last: int = LAST,
             what: str = "") -> Path:
    """Draw ``ps`` (its last ``last`` rows; 0: all) to the PNG ``path``, written atomically."""
    plt = pyplot()
    from finhrm_cli.fsutil import atomic_write_bytes

    total = len(ps.dates)
    ps = ps.tail(last)
    nd = ps.dates.astype("datetime64[D]")  # the session each row forecasts
    many = len(nd) > 250  # markers only where they stay readable
    mk = {"markersize": 4} if not many else {"marker": None}
    fig, ax = plt.subplots(figsize=(12, 5.5), dpi=110)
    if ps.iv is not None:
        ax.fill_between(nd, ps.iv["high_lo"], ps.iv["high_hi"], color="tab:green", alpha=0.12, lw=0,
                        label=f"{coverage:.0%} interval, high")
        ax.fill_between(nd, ps.iv["low_lo"], ps.iv["low_hi"], color="tab:red", alpha=0.12, lw=0, hatch="///",
                        label=f"{coverage:.0%} interval, low")
    ax.plot(nd, ps.next_high, color="tab:green", lw=1.2, ls="-", **({"marker": "^"} | mk), label="actual high (▲, solid)")
    ax.plot(nd, ps.pred_high, color="darkgreen", lw=1.2, ls="--", **({"marker": "^", "mfc": "none"} | mk),
            label="predicted high (△, dashed)")
    ax.plot(nd, ps.next_low, color="tab:red", lw=1.2, ls="-", **({"marker": "v"} | mk), label="actual low (▼, solid)")
    ax.plot(nd, ps.pred_low, color="darkred", lw=1.2, ls="--", **({"marker": "v", "mfc": "none"} | mk),
            label="predicted low (▽, dashed)")
    for i, d in enumerate(ps.fold_starts):
        ax.axvline(np.datetime64(d, "D") + np.timedelta64(1, "D"), color="grey", lw=0.8, ls=":",
                   label="a walk-forward fold starts" if i == 0 else None)
    mae, skill = shown_mae(ps)
    span = f"the last {len(nd)} of {total} sessions" if len(nd) < total else f"all {total} sessions"
    score = (f"MAE {mae:,.4g} on these sessions" + (f", skill {skill:.3f} (MAE / persistence MAE)" if skill else "")
             if mae is not None else "no outcome known yet")
    ax.set_title(f"{series}: next-session high and low, predicted against actual{what}\n"
                 f"run {run}; {span}; {score}", fontsize=10)
    ax.set_ylabel("price")
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
