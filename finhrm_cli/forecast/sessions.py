"""Which session a forecast is for, and which of a run's splits a row belongs to.

The target session is the next day after the forecast's last row on a day of the week the
file trades on: Monday to Friday for daily equity data, every calendar day for a 7-day market
(crypto), read from the file itself (a weekday counts when it holds at least 5% of the last 120
rows, so a stray weekend session does not turn a stock into a 7-day market).  Holidays are not
known: the forecast made before one names the holiday.  Where the file already holds the
target row (``predict --all``), its own date is used.
"""

from __future__ import annotations

import numpy as np

RECENT = 120          # rows that say which days of the week the market trades
MIN_SHARE = 0.05      # a weekday counts from this share of those rows
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
SPLIT_NAMES = (("train", "train"), ("val", "validation"), ("test", "test"))
AFTER = "after_run"   # a row past the run's test split


def weekday(dates) -> np.ndarray:
    """Day of the week, Monday 0 (1970-01-01 was a Thursday)."""
    return (np.asarray(dates, "datetime64[D]").astype(np.int64) + 3) % 7


def trading_days(dates) -> tuple[int, ...]:
    """The days of the week (Monday 0) the file trades on, from its last ``RECENT`` rows."""
    recent = np.asarray(dates, "datetime64[D]")[-RECENT:]
    if recent.size == 0:
        return (0, 1, 2, 3, 4)
    counts = np.bincount(weekday(recent), minlength=7)
    days = tuple(int(d) for d in range(7) if counts[d] >= max(1.0, MIN_SHARE * recent.size))
    return days or (0, 1, 2, 3, 4)


def describe(days: tuple[int, ...]) -> str:
    """"Mon-Fri", "every day", or the days named."""
    if days == tuple(range(7)):
        return "every day"
    if days == (0, 1, 2, 3, 4):
        return "Mon-Fri"
    return " ".join(DAY_NAMES[d] for d in days)


def next_session(day, days: tuple[int, ...], steps: int = 1) -> np.datetime64:
    """The ``steps``-th day after ``day`` that falls on one of ``days``."""
    d = np.datetime64(day, "D")
    for _ in range(max(steps, 0)):
        d += np.timedelta64(1, "D")
        while int(weekday(d)) not in days:
            d += np.timedelta64(1, "D")
    return d


def target_dates(row_dates, ends, horizon: int, days: tuple[int, ...]) -> np.ndarray:
    """The session each forecast is for: the date of row ``end + horizon`` where the file
    holds it, else counted on from the file's last row by ``next_session``."""
    row_dates = np.asarray(row_dates, "datetime64[D]")
    n = row_dates.size
    out = np.empty(len(ends), "datetime64[D]")
    for i, e in enumerate(np.asarray(ends, np.int64)):
        t = int(e) + horizon
        out[i] = row_dates[t] if t < n else next_session(row_dates[-1], days, t - (n - 1))
    return out


def split_of(targets, splits: dict) -> list[str]:
    """Which of the run's splits each forecast's target session falls in (by the recorded
    last dates of train, validation and test; a row in the gap between two splits counts with
    the next one, as its target was not trained on); ``after_run`` past the test split."""
    bounds = [(label, np.datetime64(str((splits.get(key) or {}).get("last_date"))[:10], "D"))
              for key, label in SPLIT_NAMES if (splits.get(key) or {}).get("last_date")]
    out = []
    for t in np.asarray(targets, "datetime64[D]"):
        out.append(next((label for label, last in bounds if t <= last), AFTER))
    return out
