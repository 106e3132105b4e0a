"""``finhrm predict``: the next session's high and low (with intervals) for one or more files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finhrm_cli.errors import DataError
from finhrm_cli.config import STALE_AFTER
from finhrm_cli.forecast import quantiles, sessions
from finhrm_cli.forecast.parts import iso
from finhrm_cli.forecast.scoring import interval_arrays, to_prices
from finhrm_cli.run.choose import open_for_data, train_command
from finhrm_cli.run.data import datasets_for_run


def predict(data_paths, run_ref: str | None, all_rows: bool = False, coverage: float = 0.8,
            act: bool | None = None, date_col=None, col_map=None, intervals: str = "adaptive",
            stale_after: int = STALE_AFTER, ack=(), levels: list[float] | None = None) -> dict:
    """Forecasts for the last row of each file (or every row with ``all_rows``).

    ``levels``: quantile levels (``forecast.quantiles``) whose high and low quantiles each row
    gets too; with ``all_rows`` their coverage, pair by pair, over the rows after the run's
    validation period whose outcome the file holds.

    With adaptive intervals, the rows after the run's validation period are predicted too
    (even without ``all_rows``), in time order, so that the interval of each row has learnt
    from the outcomes known by its close (adaptive conformal inference).
    """
    if isinstance(data_paths, (str, Path)):
        data_paths = [data_paths]
    files, run_dir, fc, rc, choice = open_for_data(run_ref, data_paths)
    if levels and not fc.conformal:
        raise DataError(f"{run_dir.name} has no conformal residuals, so no quantiles: train it again "
                        "(`finhrm train`), or leave out --quantiles.")
    dss = datasets_for_run(rc, files, date_col, col_map, ack)
    parts = []
    staleness, calendars = {}, {}
    for ds in dss:
        w = ds.windows("all")
        staleness[ds.source.name] = _sessions_after(rc, ds.source, w.dates)
        calendars[ds.source.name] = (w.dates, sessions.trading_days(w.dates))
        if len(w) == 0:
            need = rc.features.seq_len
            raise DataError(f"{ds.source.path}: too short to predict; it needs at least {need} usable rows after indicator warm-up.")
        if not all_rows:
            keep = np.array([len(w) - 1])
            cutoff = rc.cutoff(ds.source)
            if intervals == "adaptive" and fc.conformal and cutoff is not None:
                keep = np.union1d(np.nonzero(w.dates > cutoff)[0], keep)
            w = w.subset(keep)
        parts.append((ds, w))
    segments: dict | None = {} if act else None  # segments per row, when --act asks for them
    preds = fc.forecast(parts, act=act, segments=segments)
    conformal = fc.conformal
    rows, scored = [], []
    for (ds, w), pred in zip(parts, preds):
        cutoff = rc.cutoff(ds.source)
        iv = interval_arrays(ds, w, pred, conformal, coverage, intervals, cutoff)
        q = quantiles.quantiles(ds, w, pred, conformal, levels, intervals, cutoff) if levels else None
        if q is not None and all_rows:  # out of sample: after the run's validation period
            after = np.ones(len(w), bool) if cutoff is None else (w.dates > cutoff)
            scored.append(({k: v[after] for k, v in q.items()}, w.next_high[after], w.next_low[after]))
        if not all_rows:  # only the last row is shown
            last = np.array([len(w) - 1])
            w, pred = w.subset(last), pred[last]
            iv = {k: v[last] for k, v in iv.items()} if iv else None
            q = {k: v[last] for k, v in q.items()} if q else None
        ph, pl = to_prices(pred, w.close)
        _check_range(ds, w, ph, pl)
        new = _rows(ds, w, ph, pl, iv, calendars[ds.source.name], rc, choice.name, all_rows)
        for i, r in enumerate(new if q else []):
            r.update({quantiles.key(side, tau): float(q[side][i, j]) for j, tau in enumerate(levels)
                      for side in ("high", "low")})
        rows += new
    return {
        "run": str(run_dir),
        "run_name": choice.name,
        "run_choice": choice.reason,
        "data": [str(ds.source.path) for ds in dss] if len(dss) > 1 else str(dss[0].source.path),
        "series": [ds.source.name for ds in dss],
        "trading_days": {k: sessions.describe(v[1]) for k, v in calendars.items()},
        "horizon": rc.features.horizon,
        "coverage": coverage,
        "intervals": intervals if conformal else None,
        "rows": rows,
        "staleness": {
            "last_training_date": {k: v[0] for k, v in staleness.items()},
            "sessions_after_training": {k: v[1] for k, v in staleness.items()},
            "stale_after": stale_after,
            "refit": (f"{train_command(data_paths)} --from {choice.name}" if "ensemble" not in rc.extra else
                      f"{train_command(data_paths)} --from MEMBER for each of its members/ (an ensemble is not refit)"),
        },
        **({"act_segments": segments} if act else {}),
        **({"quantiles": _quantile_report(levels, scored if all_rows else None)} if levels else {}),
    }


def _quantile_report(levels: list[float], scored: list | None) -> dict:
    """The levels and, with ``--all``, each pair's coverage over the out-of-sample rows."""
    out: dict = {"levels": levels}
    if scored:
        q = {k: np.concatenate([s[0][k] for s in scored]) for k in ("high", "low")}
        out["coverage"] = quantiles.pair_coverage(q, levels, np.concatenate([s[1] for s in scored]),
                                                  np.concatenate([s[2] for s in scored]))
    return out


def _rows(ds, w, ph, pl, iv, calendar, rc, run_name: str, all_rows: bool) -> list[dict]:
    """One output row per forecast: the series, the last observed day and the session the
    forecast is for, the forecast and its interval, the run; with ``all_rows`` (a backtest
    export) the run's split of the target session and the actual high and low of that
    session where the file holds it.  The actuals are the targets aligned with each forecast
    (row t + horizon), shown beside it and never fed to the model."""
    row_dates, days = calendar
    h = rc.features.horizon
    first = int(ds.window_ends("all")[0])  # row_dates holds the rows from this one on
    targets = sessions.target_dates(row_dates, w.end - first, h, days)
    split = sessions.split_of(targets, rc.series_splits(ds.source)) if all_rows else None
    out = []
    for i in range(len(w)):
        r = {
            "ticker": ds.source.name,
            "date": iso(w.dates[i]),
            "target_date": iso(targets[i]),
            "close": float(w.close[i]),
            "pred_high": float(ph[i]),
            "pred_low": float(pl[i]),
            "pred_high_lo": float(iv["high_lo"][i]) if iv else None,
            "pred_high_hi": float(iv["high_hi"][i]) if iv else None,
            "pred_low_lo": float(iv["low_lo"][i]) if iv else None,
            "pred_low_hi": float(iv["low_hi"][i]) if iv else None,
        }
        if all_rows:
            r["split"] = split[i]
            r["actual_high"] = float(w.next_high[i]) if np.isfinite(w.next_high[i]) else None
            r["actual_low"] = float(w.next_low[i]) if np.isfinite(w.next_low[i]) else None
        r["run"] = run_name
        out.append(r)
    return out


def _sessions_after(rc, source, dates: np.ndarray) -> tuple[str | None, int | None]:
    """(the run's last training date for the series of ``source``, how many of ``dates`` come
    after it); (None, None) for a series the run was not trained on (named with --model): its
    own training dates say nothing about this file.  A renamed copy of a training file counts
    as that series (``RunConfig.trained_name``)."""
    name = rc.trained_name(source)
    if name is None:
        return None, None
    last = (rc.series_splits(name).get("train") or {}).get("last_date")
    if not last:
        return None, None
    return last, int(np.count_nonzero(dates > np.datetime64(last[:10])))


MAX_MOVE = 1e3  # a forecast high above 1000x the close, or a low below 1/1000 of it, is no forecast


def _check_range(ds, w, ph: np.ndarray, pl: np.ndarray) -> None:
    """Never print a forecast that is not a price range: both ends finite, the high not below
    the low, neither beyond ``MAX_MOVE`` times the close either way.  The model and its
    linear partner keep the order by construction (``model`` and ``linear.combine``), so a
    row that breaks this has inputs or a run far out of range: one line naming it, exit 2."""
    close = np.asarray(w.close, np.float64)
    with np.errstate(all="ignore"):
        ok = (np.isfinite(ph) & np.isfinite(pl) & (ph >= pl)
              & (ph <= close * MAX_MOVE) & (pl >= close / MAX_MOVE))
    if ok.all():
        return
    i = int(np.flatnonzero(~ok)[0])
    raise DataError(
        f"{ds.source.path}: the forecast after {iso(w.dates[i])} (close {w.close[i]:.6g}) is not a price range "
        f"(high {ph[i]:.6g}, low {pl[i]:.6g}); that row's values or the run's settings are far out of range: "
        "check the row, or train the run again."
    )
