"""Production modes on real data: is a model fit on every row, refreshed as bars arrive, better
than the frozen evaluation run?

For each series the last ``--test-frac`` (20%) of the sessions is walked through in blocks of
``--every`` sessions (21: monthly).  Before each block only the rows before it exist (the file
is cut there, under the same name, as a user's file grows).  Modes:

* (a) ``frozen``: one run trained on the rows before the test period (split 85/15 for
  validation, as ``benchmarks/real_data.py``), used for every block, as today;
* (b) ``warm``: at each block ``finhrm train FILE --from PREVIOUS`` (warm start, one epoch at
  the end of the schedule), chained from (a);
* (c) ``scratch``: at each block ``finhrm train FILE --from (a) --scratch`` (fresh weights,
  the epochs (a)'s validation chose), every ``--scratch-every`` sessions (costly);
* (d) ``once``: the first refit of (b) at the start of the test period, then frozen.

Every mode's forecasts for a block come from ``finhrm predict FULL --all -m RUN`` on the rows
of that block (made at the close of a session whose next session the run has not seen), and
are scored in price units (mean of high and low MAE).  Printed: test MAE / (a) per mode, the
wall time of a refresh (median) against the full training of (a), and the series' shift in
next-session range against its trailing volatility scale (last third / first two thirds).

    python benchmarks/production.py --series goog sample --modes frozen warm once
    python benchmarks/production.py --csv my.csv --every 21 --scratch-every 63 -- --scale-inputs

Series: ``goog``, ``sp500``, ``nasdaq`` (``benchmarks/real_data.py``), ``sample`` (the
synthetic TradingView file), ``nasdaq-shift`` (NASDAQ 2000-12-26 .. 2008-12-09, the public
segment with the largest step up in next-session range per unit of trailing volatility found
in the packages here: +5.0% in its last third), ``nasdaq-gaps`` (the same segment with its last
third's overnight gaps cut to a quarter, ``benchmarks/regime_shift.py``: +12.7%).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_data as rd  # noqa: E402
from finhrm_cli.forecast.baselines import diebold_mariano  # noqa: E402
import regime_shift  # noqa: E402

MODES = ("frozen", "warm", "scratch", "once")


def load(name: str) -> pl.DataFrame:
    if name == "sample":
        return pl.read_csv(ROOT / "sample_data" / "synthetic_yahoo.csv")
    if name == "nasdaq-gaps":
        return regime_shift.nasdaq_gaps()
    if name == "nasdaq-shift":
        df = pl.read_csv(rd.series_path("nasdaq"))
        return df.slice(500, 2000)
    return pl.read_csv(rd.series_path(name))


def train(path: Path, out: Path, *args: str) -> tuple[dict, float]:
    t0 = time.perf_counter()
    res = json.loads(rd.finhrm("train", str(path), "--out", str(out), "--json", "--quiet", *args))
    return res, time.perf_counter() - t0


def forecasts(full: Path, run: str) -> dict[str, tuple[float, float, float, float]]:
    """date -> (pred_high, pred_low, actual_high, actual_low) for every row of ``full``."""
    text = rd.finhrm("predict", str(full), "--all", "--format", "csv", "-m", run)
    out = {}
    for r in csv.DictReader(io.StringIO(text)):
        if r.get("actual_high") and r.get("actual_low"):
            out[r["date"]] = tuple(float(r[k]) for k in ("pred_high", "pred_low", "actual_high", "actual_low"))
    return out


def block_errors(fc: dict, dates: list[str]) -> np.ndarray:
    """Per forecast row of ``dates``: (|high error|, |low error|) in price units."""
    rows = [fc[d] for d in dates if d in fc]
    if not rows:
        return np.zeros((0, 2))
    a = np.array(rows)
    return np.abs(a[:, :2] - a[:, 2:])


def run_series(name: str, df: pl.DataFrame, args, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        stem = "bars"
        full = tmp / f"{stem}.csv"
        df.write_csv(full)
        n = df.height
        cut = int(round(n * (1 - args.test_frac)))
        fit = cut / n
        root, root_s = train(full, tmp / "runs", "--train-frac", f"{fit * 0.85:.10f}", "--val-frac",
                             f"{fit * 0.15:.10f}", *extra)
        dates_all = [r["date"] for r in json.loads(rd.finhrm("predict", str(full), "--all", "--json",
                                                              "-m", root["run"]))["rows"]]
        # forecasts made at the close of rows cut-1 .. n-2 (their next session is in the test
        # period); predict --all has one row per session from the warm-up on, the last row last
        made = dates_all[-(n - cut + 1):-1]
        starts = list(range(cut, n - 1, args.every))
        blocks = [made[(s - cut):(min(s + args.every, n) - cut)] for s in starts]
        runs: dict[str, list[str]] = {m: [] for m in MODES}
        times: dict[str, list[float]] = {m: [] for m in MODES}
        prev = root["run"]
        for k, s in enumerate(starts):
            part = tmp / f"cut{k}" / f"{stem}.csv"
            part.parent.mkdir()
            df.head(s).write_csv(part)
            if "warm" in args.modes or ("once" in args.modes and k == 0):
                res, sec = train(part, tmp / "runs", "--from", prev, *extra)
                prev = res["run"]
                runs["warm"].append(prev)
                times["warm"].append(sec)
                if k == 0:
                    times["once"].append(sec)
            if "scratch" in args.modes:
                if k % max(1, args.scratch_every // args.every) == 0:
                    res, sec = train(part, tmp / "runs", "--from", root["run"], "--scratch", *extra)
                    runs["scratch"].append(res["run"])
                    times["scratch"].append(sec)
                else:
                    runs["scratch"].append(runs["scratch"][-1])
            print(f"{name}: block {k + 1} of {len(starts)}", file=sys.stderr, flush=True)
        cache: dict[str, dict] = {}

        def fc(run):
            if run not in cache:
                cache[run] = forecasts(full, run)
            return cache[run]

        result = {"series": name, "rows": n, "test_rows": n - cut, "blocks": len(starts), "every": args.every,
                  "range_shift": round(regime_shift.range_shift(df), 4), "full_training_s": round(root_s, 1), "modes": {}}
        errors = {}
        for mode in ("frozen",) + tuple(m for m in MODES[1:] if m in args.modes):
            per_block = []
            for k, dates in enumerate(blocks):
                run = {"frozen": root["run"], "warm": runs["warm"][min(k, len(runs["warm"]) - 1)],
                       "scratch": runs["scratch"][min(k, len(runs["scratch"]) - 1)] if runs["scratch"] else None,
                       "once": runs["warm"][0]}[mode] if mode != "frozen" else root["run"]
                per_block.append(block_errors(fc(run), dates))
            errors[mode] = np.concatenate(per_block)
            secs = times.get(mode) or []
            result["modes"][mode] = {"mae": float(errors[mode].mean()), "rows": len(errors[mode]),
                                     "refresh_s_median": round(statistics.median(secs), 1) if secs else None}
        base = result["modes"]["frozen"]["mae"]
        for mode, v in result["modes"].items():
            v["ratio_to_frozen"] = round(v["mae"] / base, 4)
            if mode != "frozen":  # Diebold-Mariano: is the difference to the frozen run more than noise?
                v["dm_p_vs_frozen"] = round(diebold_mariano(errors[mode], errors["frozen"])["p"], 3)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", nargs="+", default=["goog", "sp500", "nasdaq", "sample", "nasdaq-gaps"])
    ap.add_argument("--csv", type=Path, action="append", default=[])
    ap.add_argument("--modes", nargs="+", default=["frozen", "warm", "once"], choices=MODES)
    ap.add_argument("--every", type=int, default=21, help="sessions between refreshes (21: monthly)")
    ap.add_argument("--scratch-every", type=int, default=63, help="sessions between scratch refits (mode scratch)")
    ap.add_argument("--test-frac", type=float, default=0.2)
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    todo = [(s, load(s)) for s in args.series] + [(p.stem, pl.read_csv(p)) for p in args.csv]
    for name, df in todo:
        r = run_series(name, df, args, extra)
        print(json.dumps(r), flush=True)
        print(f"\n{name}: {r['test_rows']} test sessions in {r['blocks']} blocks of {r['every']}; range shift "
              f"{100 * r['range_shift']:+.1f}%; full training {r['full_training_s']} s", file=sys.stderr)
        for mode, v in r["modes"].items():
            t = f", refresh {v['refresh_s_median']} s" if v["refresh_s_median"] else ""
            p = f", DM p {v['dm_p_vs_frozen']}" if "dm_p_vs_frozen" in v else ""
            print(f"  {mode:8s} MAE {v['mae']:.4g} ({v['ratio_to_frozen']:.4f} x frozen{p}){t}", file=sys.stderr)


if __name__ == "__main__":
    main()
