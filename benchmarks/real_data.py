"""Forecast quality on real market data: finhrm against persistence and strong anchors.

Runs the real command line end to end on one or more real daily series:

1. ``finhrm train FILE`` with default settings, its training and validation rows taken from
   the first 80% of the sessions (the last 15% of those validate), once per seed;
2. ``finhrm predict FILE --all`` with each run;
3. scores the last 20% of the sessions (forecasts made at the close of a test day for the
   next session), in price units, averaged over high and low, next to the anchors below,
   every one of them fit on the rows before the test period only.

Anchors (what a careful user builds in twenty lines):

* persistence; close times the median recent range ratio;
* ridge and LightGBM (L1 objective) on the log-ratio features (the 18 HRM inputs, and for
  LightGBM also finhrm's extended set), targets ``log(next_high / close)``,
  ``log(next_low / close)``;
* the same two, **volatility-scaled**: targets divided by the trailing volatility scale
  finhrm uses (``scale``: the mean log true range of the last ``data.SCALE_N`` sessions, known
  at the close of day t), the log-ratio features divided by the same scale (scale-free
  inputs; log ATR features become log(ATR / scale)), predictions multiplied back.

For each series the script prints finhrm's test MAE as a ratio to persistence and to the
best anchor (the anchor with the lowest test MAE: a generous choice for the anchors, since
picking it looks at the test rows; the finhrm runs are chosen on validation only).  With
``--seeds`` and no value it prints the anchors only (cheap).  With ``--json`` it ends with one
JSON line holding every series.

Series (``--series NAME ...``; any other file with ``--csv PATH``, repeatable):

* ``goog``: GOOG daily bars 2004-08-19 .. 2013-03-01 (2,148 sessions), the file
  ``backtesting/test/GOOG.csv`` inside the PyPI package ``backtesting`` (the bench extra
  installs it).  Prices are not split-adjusted, and need not be: Google's only split (2:1,
  April 2014) lies after the file ends; it starts at the IPO price of 100.  No one-day move
  beyond 20% (largest: 18% on 2008-04-18), no gap longer than the 5-day New Year and
  Hurricane Sandy closures.
* ``sp500``: S&P 500 index daily bars 1999-01-04 .. 2018-12-31 (5,031 sessions),
  ``arch/data/sp500/sp500.csv.gz`` inside the PyPI package ``arch`` (in the bench extra too).  An index: nothing to
  adjust (Adj Close equals Close).  Largest one-day move 11.6% (2008-10-13); the longest gap
  is the 7-day closure after 2001-09-11.
* ``nasdaq``: NASDAQ Composite daily bars, same dates, ``arch/data/nasdaq/nasdaq.csv.gz``
  from ``arch``.  Same remarks; largest one-day move 14.2% (2001-01-03).

No other real daily OHLC series ships in the packages finhrm or its bench extra installs
(``backtesting`` also has EURUSD, hourly, and BTCUSD, monthly; ``arch`` has close-only or
monthly series).  Usage::

    python benchmarks/real_data.py [--series goog sp500 nasdaq] [--csv PATH ...]
                                   [--seeds [0 1 2]] [--json] [-- extra finhrm train flags]
    python benchmarks/real_data.py --series goog sp500 --runs RUN_GOOG RUN_SP500   # score existing runs

Each finhrm run is also scored for its interval coverage on the test rows (``--coverage``,
default 80%), once with the static split-conformal intervals and once with the adaptive ones
(``predict --intervals split|adaptive``).
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

from finhrm_cli import data  # noqa: E402
from finhrm_cli.forecast import baselines
from finhrm_cli.config import FeatureConfig  # noqa: E402

SERIES = {  # name -> (PyPI package, path inside it, label)
    "goog": ("backtesting", "test/GOOG.csv", "GOOG 2004-2013"),
    "sp500": ("arch", "data/sp500/sp500.csv.gz", "S&P 500 1999-2018"),
    "nasdaq": ("arch", "data/nasdaq/nasdaq.csv.gz", "NASDAQ Composite 1999-2018"),
}

# Features that are log price ratios (divided by the scale to make them scale-free) and log
# volatility levels (made relative to the scale): the same sets as finhrm's own scale_inputs.
# Volume, RSI and the weekday stay as they are.
LOG_RATIO = data.features.LOG_RATIO_FEATURES
LOG_LEVEL = data.features.LOG_LEVEL_FEATURES


def series_path(name: str) -> Path:
    pkg, rel, _ = SERIES[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{pkg} is not installed: pip install {pkg} (it ships {rel}), or pass --csv PATH")
    return Path(list(spec.submodule_search_locations)[0]) / rel


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


def lgbm_fit_predict(x_tr, y_tr, x_te):
    import lightgbm as lgb

    # The native API (the scikit-learn wrapper would need scikit-learn); the settings of
    # LGBMRegressor(objective="l1", n_estimators=300, learning_rate=0.03, num_leaves=15,
    # subsample=0.8, subsample_freq=1, colsample_bytree=0.8).
    params = {"objective": "l1", "learning_rate": 0.03, "num_leaves": 15, "bagging_fraction": 0.8,
              "bagging_freq": 1, "feature_fraction": 0.8, "verbose": -1, "seed": 0, "num_threads": 2}
    out = []
    for j in range(y_tr.shape[1]):
        m = lgb.train(params, lgb.Dataset(x_tr, y_tr[:, j]), num_boost_round=300)
        out.append(m.predict(x_te))
    return np.stack(out, axis=1)


def scale_free(names: list[str], x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Features with every log price ratio divided by the row's scale (row t reads rows <= t)."""
    x = x.copy()
    for j, n in enumerate(names):
        if n in LOG_RATIO:
            x[:, j] /= scale
        elif n in LOG_LEVEL:
            x[:, j] -= np.log(scale)
    return x


def anchors(path: Path, test_frac: float) -> dict:
    """Every anchor's test MAE on one file, and the split the finhrm runs must use."""
    hrm = data.prepare(path, FeatureConfig(feature_set="hrm18"))
    ext = data.prepare(path, FeatureConfig(feature_set="extended"))
    assert ext.frame.height == hrm.frame.height
    frame = hrm.frame
    warm = sum(hrm.dropped.values())
    cut = int(hrm.source.n_rows * (1 - test_frac)) - warm  # first test session, as a frame row
    dates = frame["date"].to_numpy().astype("datetime64[D]")
    close = frame["close"].to_numpy()
    high, low = frame["high"].to_numpy(), frame["low"].to_numpy()
    nh, nl = frame["next_high"].to_numpy(), frame["next_low"].to_numpy()
    scale = frame["scale"].to_numpy()
    test = np.arange(cut, frame.height - 1)  # forecasts made at t, scored on t+1
    fit = np.arange(0, cut - 1)              # rows whose target lies before the test period

    def mae(ph, pl):
        return float((np.abs(ph - nh[test]).mean() + np.abs(pl - nl[test]).mean()) / 2)

    def from_log(p):
        return mae(close[test] * np.exp(p[:, 0]), close[test] * np.exp(p[:, 1]))

    rows: dict[str, float] = {"persistence": mae(high[test], low[test])}
    rows["recent range"] = mae(*baselines.recent_range(high, low, close, test, 1, 20))
    y = np.c_[np.log(nh / close), np.log(nl / close)]
    ys = y / scale[:, None]
    sets = {"18": (hrm.feature_names, hrm.features()), "extended": (ext.feature_names, ext.features())}
    try:
        import lightgbm  # noqa: F401
        have_lgb = True
    except ImportError:
        have_lgb = False
        print("(LightGBM not installed: pip install lightgbm to add it)", file=sys.stderr)
    for label, (names, x) in sets.items():
        xs = scale_free(names, x, scale)
        rows[f"ridge, {label}"] = from_log(ridge_fit_predict(x[fit], y[fit], x[test]))
        rows[f"ridge vol-scaled, {label}"] = from_log(ridge_fit_predict(xs[fit], ys[fit], xs[test]) * scale[test, None])
        if have_lgb:
            rows[f"LightGBM, {label}"] = from_log(lgbm_fit_predict(x[fit], y[fit], x[test]))
            rows[f"LightGBM vol-scaled, {label}"] = from_log(lgbm_fit_predict(xs[fit], ys[fit], xs[test]) * scale[test, None])
    return {"rows": rows, "cut": cut, "fit": fit, "test": test, "dates": dates, "nh": nh, "nl": nl,
            "fit_frac": cut / frame.height, "mae": mae}


def finhrm_runs(path: Path, a: dict, seeds: list[int], train_args: list[str], coverage: float) -> list[dict]:
    train_frac, val_frac = a["fit_frac"] * 0.85, a["fit_frac"] * 0.15
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            t0 = time.perf_counter()
            summary = json.loads(finhrm("train", str(path), "--train-frac", f"{train_frac:.10f}", "--val-frac",
                                        f"{val_frac:.10f}", "--seed", str(seed), "--out", tmp, "--json", "--quiet",
                                        *train_args))
            seconds = time.perf_counter() - t0
            run = {"seed": seed, "seconds": round(seconds, 1), "best_epoch": summary.get("best_epoch"),
                   "train_samples_per_s": summary.get("train_samples_per_s"), "coverage": {},
                   "segments_per_window": summary.get("segments_per_window")}
            run.update(validation_maes(summary["run"]))
            run.update(score_run(summary["run"], path, a, coverage))
            runs.append(run)
            print(f"{path.name} seed {seed}: MAE {run['mae']:.3f} ({seconds:.0f} s)", file=sys.stderr)
    return runs


def validation_maes(run_dir: str) -> dict:
    """The HRM's own validation MAE (no linear partner) as the run forecasts (its
    ``act_inference``), halted and with every segment: what chooses the inference default."""
    out = {}
    for key, flag in (("val_mae_hrm", None), ("val_mae_hrm_halted", "--act"), ("val_mae_hrm_all", "--all-steps")):
        res = json.loads(finhrm("evaluate", run_dir, "--split", "val", "--json", *([flag] if flag else [])))
        out[key] = res["results"]["hrm_alone"]["mae"]
    return out


def score_run(run_dir: str, path: Path, a: dict, coverage: float) -> dict:
    """Test MAE of one run, and the coverage of its split and adaptive conformal intervals."""
    test, dates, nh, nl = a["test"], a["dates"], a["nh"][a["test"]], a["nl"][a["test"]]
    out = {"coverage": {}}
    for method in ("split", "adaptive"):
        text = finhrm("predict", str(path), "--model", run_dir, "--all", "--format", "csv", "--coverage",
                      str(coverage), "--intervals", method)
        pred = {r["date"]: r for r in csv.DictReader(text.splitlines())}

        def col(name):
            return np.array([float(pred[str(d)][name] or "nan") for d in dates[test]])

        out["mae"] = a["mae"](col("pred_high"), col("pred_low"))
        out["coverage"][method] = {
            "high": float(np.mean((nh >= col("pred_high_lo")) & (nh <= col("pred_high_hi")))),
            "low": float(np.mean((nl >= col("pred_low_lo")) & (nl <= col("pred_low_hi")))),
        }
    return out


def report(name: str, path: Path, a: dict, runs: list[dict]) -> dict:
    rows = a["rows"]
    pers = rows["persistence"]
    best = min(rows, key=rows.get)
    dates, test = a["dates"], a["test"]
    print(f"\n{name} ({path.name}): {len(a['fit'])} fit rows up to {dates[a['cut'] - 1]}, {len(test)} test "
          f"forecasts {dates[test[0]]} .. {dates[test[-1]]}\n")
    print("| model | test MAE | ratio to persistence | ratio to best anchor |\n|---|---|---|---|")
    for k, v in rows.items():
        print(f"| {k}{' (best anchor)' if k == best else ''} | {v:.4g} | {v / pers:.3f} | {v / rows[best]:.3f} |")
    for r in runs:
        print(f"| finhrm {'seed ' + str(r['seed']) if 'seed' in r else Path(r['run']).name} | {r['mae']:.4g} | {r['mae'] / pers:.3f} | {r['mae'] / rows[best]:.3f} |")
    out = {"series": name, "file": str(path), "test_rows": int(len(test)), "first_test": str(dates[test[0]]),
           "anchors": rows, "best_anchor": best, "runs": runs}
    if runs:
        maes = np.array([r["mae"] for r in runs])
        sd = maes.std(ddof=1) if len(maes) > 1 else 0.0
        print(f"| finhrm mean ± sd over {len(runs)} seeds | {maes.mean():.4g} ± {sd:.2g} | {maes.mean() / pers:.3f} "
              f"| {maes.mean() / rows[best]:.3f} |")
        if "seconds" in runs[0]:
            print(f"\ntraining time per seed: {np.mean([r['seconds'] for r in runs]):.0f} s")
        if "val_mae_hrm" in runs[0]:
            v = {k: np.mean([r[k] for r in runs]) for k in ("val_mae_hrm", "val_mae_hrm_halted", "val_mae_hrm_all")}
            seg = [r.get("segments_per_window") for r in runs]
            print(f"validation MAE, the HRM alone (mean of seeds): as the run forecasts {v['val_mae_hrm']:.4g}, "
                  f"halted {v['val_mae_hrm_halted']:.4g}, every segment {v['val_mae_hrm_all']:.4g}; "
                  f"segments per training window {', '.join('-' if x is None else f'{x:.2f}' for x in seg)}")
        for method in runs[0]["coverage"]:
            cov = [f"{r['coverage'][method]['high']:.3f} / {r['coverage'][method]['low']:.3f}" for r in runs]
            print(f"{method} conformal intervals, coverage of the test rows (high / low): {', '.join(cov)}")
        out.update(ratio_mean=float(maes.mean() / pers), ratio_max=float(maes.max() / pers),
                   ratio_to_best_mean=float(maes.mean() / rows[best]), ratio_to_best_max=float(maes.max() / rows[best]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", nargs="+", choices=sorted(SERIES), default=None,
                    help="built-in real series (default: goog unless --csv is given)")
    ap.add_argument("--csv", type=Path, action="append", default=[], help="another daily OHLC file (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="finhrm seeds to train (none: anchors only)")
    ap.add_argument("--test-frac", type=float, default=0.2)
    ap.add_argument("--coverage", type=float, default=0.8, help="interval coverage scored on the test rows")
    ap.add_argument("--runs", nargs="+", default=None,
                    help="score these finhrm runs (one per series, trained on the same split) instead of training")
    ap.add_argument("--json", action="store_true", help="print one JSON line at the end")
    ap.add_argument("train_args", nargs="*", help="extra flags for finhrm train (after --)")
    args = ap.parse_args()
    todo = [(n, series_path(n)) for n in (args.series or ([] if args.csv else ["goog"]))]
    todo += [(p.name, p) for p in args.csv]
    results = []
    for name, path in todo:
        a = anchors(path, args.test_frac)
        if args.runs:
            runs = [{"run": args.runs[len(results)], **score_run(args.runs[len(results)], path, a, args.coverage)}]
        else:
            runs = finhrm_runs(path, a, args.seeds, args.train_args, args.coverage)
        results.append(report(name, path, a, runs))
    if len(results) > 1:
        print("\n| series | persistence MAE | best anchor | best anchor / persistence | finhrm / persistence | "
              "finhrm / best anchor |\n|---|---|---|---|---|---|")
        for r in results:
            pers, best = r["anchors"]["persistence"], r["anchors"][r["best_anchor"]]
            fin = f"{r['ratio_mean']:.3f}" if r["runs"] else "-"
            fin_b = f"{r['ratio_to_best_mean']:.3f}" if r["runs"] else "-"
            print(f"| {r['series']} | {pers:.4g} | {r['best_anchor']} | {best / pers:.3f} | {fin} | {fin_b} |")
    if args.json:
        print(json.dumps({"series": results}))


if __name__ == "__main__":
    main()
