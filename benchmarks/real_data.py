"""Forecast quality on real market data: finhrm against persistence and classical baselines.

Runs the real command line end to end on GOOG daily bars 2004-2013 (``backtesting/test/GOOG.csv``
inside the PyPI package ``backtesting``; install it with ``pip install backtesting``):

1. ``finhrm train GOOG.csv`` with default settings, its training and validation rows taken
   from the first 80% of the sessions (the last 15% of those validate), once per seed;
2. ``finhrm predict GOOG.csv --all`` with each run;
3. scores the last 20% of the sessions (forecasts made at the close of a test day for the
   next session), in dollars, averaged over high and low, next to persistence, recent range
   and a ridge regression on the same log-ratio features (LightGBM too when installed),
   all fit on the first 80% only.

Prints a table and, with ``--json``, one JSON line.  Usage::

    python benchmarks/real_data.py [--seeds 0 1 2] [--csv PATH] [-- extra finhrm train flags]

Other real files used in the README: ``arch/data/sp500/sp500.csv.gz`` and
``arch/data/nasdaq/nasdaq.csv.gz`` from the PyPI package ``arch`` (``pip download --no-deps
arch`` and unzip the wheel).  ``--seeds`` with no value prints the baselines only.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finhrm_cli import baselines, data  # noqa: E402
from finhrm_cli.config import FeatureConfig  # noqa: E402


def goog_csv() -> Path:
    spec = importlib.util.find_spec("backtesting")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("backtesting is not installed: pip install backtesting (it ships GOOG.csv), or pass --csv PATH")
    return Path(list(spec.submodule_search_locations)[0]) / "test" / "GOOG.csv"


def finhrm(*args: str) -> str:
    exe = [sys.executable, "-m", "finhrm_cli", *args]
    out = subprocess.run(exe, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"finhrm {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return out.stdout


def ridge_fit_predict(x_tr, y_tr, x_te, alpha=1.0):
    mu, sd = x_tr.mean(0), x_tr.std(0)
    sd[sd < 1e-12] = 1.0
    a = np.c_[np.ones(len(x_tr)), (x_tr - mu) / sd]
    reg = alpha * np.eye(a.shape[1])
    reg[0, 0] = 0.0
    w = np.linalg.solve(a.T @ a + reg, a.T @ y_tr)
    return np.c_[np.ones(len(x_te)), (x_te - mu) / sd] @ w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=None, help="another daily OHLCV file (default: GOOG.csv)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="finhrm seeds to train (none: baselines only)")
    ap.add_argument("--test-frac", type=float, default=0.2)
    ap.add_argument("--json", action="store_true", help="print one JSON line at the end")
    ap.add_argument("train_args", nargs="*", help="extra flags for finhrm train (after --)")
    args = ap.parse_args()
    path = args.csv or goog_csv()

    # The same rows for every method: the feature frame of the file (warm-up dropped).  The
    # classical baselines see the original 18 log-ratio inputs, as in the table;
    # LightGBM also gets the extended set finhrm uses by default.
    ds = data.prepare(path, FeatureConfig(feature_set="hrm18"))
    ext = data.prepare(path, FeatureConfig(feature_set="extended"))
    assert ext.frame.height == ds.frame.height
    frame = ds.frame
    n_raw = ds.source.n_rows
    warm = sum(ds.dropped.values())
    cut_raw = int(n_raw * (1 - args.test_frac))      # first test session in the file
    cut = cut_raw - warm                             # the same row in the frame
    fit_frac = cut / frame.height
    train_frac, val_frac = fit_frac * 0.85, fit_frac * 0.15
    dates = frame["date"].to_numpy().astype("datetime64[D]")
    close = frame["close"].to_numpy()
    high, low = frame["high"].to_numpy(), frame["low"].to_numpy()
    nh, nl = frame["next_high"].to_numpy(), frame["next_low"].to_numpy()
    test = np.arange(cut, frame.height - 1)          # forecasts made at t, scored on t+1
    fit = np.arange(0, cut - 1)                      # rows whose target lies before the test

    def mae(ph, pl):
        return float((np.abs(ph - nh[test]).mean() + np.abs(pl - nl[test]).mean()) / 2)

    rows: dict[str, float] = {}
    rows["persistence"] = mae(high[test], low[test])
    rh, rl = baselines.recent_range(high, low, close, test, 1, 20)
    rows["close x median recent range"] = mae(rh, rl)
    x = ds.features()
    y = np.c_[np.log(nh / close), np.log(nl / close)]
    p = ridge_fit_predict(x[fit], y[fit], x[test])
    rows["ridge on 18 log-ratio features"] = mae(close[test] * np.exp(p[:, 0]), close[test] * np.exp(p[:, 1]))
    try:
        import lightgbm as lgb

        for label, xx in (("18 log-ratio features", x), ("extended features", ext.features())):
            preds = []
            for j in range(2):
                m = lgb.LGBMRegressor(objective="l1", n_estimators=300, learning_rate=0.03, num_leaves=15,
                                      subsample=0.8, subsample_freq=1, colsample_bytree=0.8, verbose=-1,
                                      random_state=0)
                m.fit(xx[fit], y[fit, j])
                preds.append(m.predict(xx[test]))
            rows[f"LightGBM (L1) on {label}"] = mae(close[test] * np.exp(preds[0]), close[test] * np.exp(preds[1]))
    except ImportError:
        print("(LightGBM not installed: pip install lightgbm to add it)", file=sys.stderr)

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            t0 = time.perf_counter()
            summary = json.loads(finhrm("train", str(path), "--train-frac", f"{train_frac:.10f}", "--val-frac",
                                        f"{val_frac:.10f}", "--seed", str(seed), "--out", tmp, "--json", "--quiet",
                                        *args.train_args))
            seconds = time.perf_counter() - t0
            out = finhrm("predict", str(path), "--model", summary["run"], "--all", "--format", "csv")
            pred = {r["date"]: r for r in csv.DictReader(out.splitlines())}
            ph = np.array([float(pred[str(d)]["pred_high"]) for d in dates[test]])
            pl = np.array([float(pred[str(d)]["pred_low"]) for d in dates[test]])
            runs.append({"seed": seed, "mae": mae(ph, pl), "seconds": round(seconds, 1),
                         "best_epoch": summary.get("best_epoch"),
                         "train_samples_per_s": summary.get("train_samples_per_s")})
            print(f"seed {seed}: MAE {runs[-1]['mae']:.3f} ({seconds:.0f} s)", file=sys.stderr)

    pers = rows["persistence"]
    maes = np.array([r["mae"] for r in runs])
    print(f"\n{path.name}: {len(fit)} fit rows up to {dates[cut - 1]}, {len(test)} test forecasts "
          f"{dates[test[0]]} .. {dates[test[-1]]}\n")
    print("| model | test MAE | ratio to persistence |\n|---|---|---|")
    for name, v in rows.items():
        print(f"| {name} | {v:.3f} | {v / pers:.3f} |")
    for r in runs:
        print(f"| finhrm (defaults, seed {r['seed']}) | {r['mae']:.3f} | {r['mae'] / pers:.3f} |")
    if runs:
        print(f"| finhrm mean ± sd over {len(runs)} seeds | {maes.mean():.3f} ± {maes.std(ddof=1) if len(maes) > 1 else 0:.3f} "
              f"| {maes.mean() / pers:.3f} |")
        print(f"\ntraining time per seed: {np.mean([r['seconds'] for r in runs]):.0f} s")
    if args.json:
        print(json.dumps({"file": str(path), "baselines": rows, "runs": runs,
                          "ratio_mean": float(maes.mean() / pers) if runs else None,
                          "ratio_max": float(maes.max() / pers) if runs else None}))


if __name__ == "__main__":
    main()
