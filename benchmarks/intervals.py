"""Intervals in calm and wild markets (issue 27): finhrm's interval methods against the
conformalized anchor (``forecast.anchor``: linear quantile regression on the scale-free
inputs, fit on the training rows, conformalized on validation, adaptive), per volatility third.

For each run (trained by ``finhrm train`` with the split of ``benchmarks/real_data.py``: the
last 20% of the sessions are the test rows) the script loads the run, forecasts its
validation and test rows once, and builds every candidate's residuals from the validation
forecasts the way ``Forecaster.finish`` does, then scores the test rows with ``evaluate``'s own
code (``scoring.score_parts``, adaptive intervals at 80%):

* ``old``: one residual list in units of the volatility scale, one adaptive level (step 0.005;
  runs made before issue 27);
* ``default`` (new runs, ``conformal.DEFAULT``): heads that are linear quantile regressions of
  the outcome on the scale-free inputs and finhrm's standardised forecast (ridge 100, fit on
  the training rows, ``conformal.fit_heads``), CQR scores on validation, one adaptive level per
  volatility third (edges from the training rows) with decaying steps (0.05, decay 25, floor
  0.01); ``previous-default`` (quantile regressions of finhrm's residuals, step
  0.03), ``resid-heads-decay`` and ``heads-forecast-0.03`` change one of the two;
* ``per-third-0.02`` (the default before the residual heads): the old list, one adaptive level
  per third, step 0.02; ``per-third-0.005``/``-0.01``: smaller steps;
* ``mondrian``: residuals and levels per third (step 0.005; ``mondrian-0.02``), and
  ``mondrian-shared``: residuals per third, one level;
* ``width-beta``: residuals in units of ``scale ** beta`` (beta fitted on validation: the slope
  of log |residual| on log scale), one level; ``width-beta-per-third``: a level per third;
* ``features-width``: a width model on the scale-free inputs (fit on the training rows,
  ``conformal.fit_width``) times the scale, a level per third (step 0.02; ``-0.005``);
* ``cqr-heads``: the anchor's quantile offsets around finhrm's forecast, CQR scores on
  validation, a level per third (step 0.02; ``cqr_heads``, always computed);
* ``resid-heads*`` (``HEADS``): quantile regressions of finhrm's own residuals around its
  forecast, fit on the training rows or cross-fitted on the validation halves, ridge and step
  as named (``resid-heads-r100-0.03`` is the new default, computed here independently).

``--on val`` scores the second half of the validation rows instead, every candidate (and the
anchor's conformal scores) calibrated on the first half: the choice of the default is made
there, never on test rows.  Usage::

    python benchmarks/intervals.py --train 0 1 2 --out /tmp/i27/runs   # trains the 5 series x seeds
    python benchmarks/intervals.py --train 0 1 2 --test-frac 0.4 --out /tmp/i27/runs40   # twice the test rows
    python benchmarks/intervals.py --index /tmp/i27/runs/index.json [--on val] [--methods ...] [--json]
    python benchmarks/intervals.py --index /tmp/i27/runs40/index.json --walk-forward 4   # refit per fold
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from finhrm_cli import data  # noqa: E402
from finhrm_cli.config import FeatureConfig  # noqa: E402
from finhrm_cli.forecast import anchor, baselines, conformal  # noqa: E402
from finhrm_cli.forecast.forecaster import residuals  # noqa: E402
from finhrm_cli.forecast.parts import of, scale, train_scale  # noqa: E402
from finhrm_cli.forecast.scoring import score_parts  # noqa: E402

CANDIDATES = {  # name -> (beta: None = fitted, residuals per third, a level per third, step[, feature width])
    "default": None,  # what new runs store (conformal.DEFAULT: heads with the forecast as an input, decaying steps)
    "previous-default": {"heads_forecast": False, "decay": None, "gamma": 0.03},  # residual heads, step 0.03
    "resid-heads-decay": {"heads_forecast": False},  # the residual heads alone, decaying steps
    "heads-forecast-0.03": {"decay": None, "gamma": 0.03},  # the forecast heads at the constant step 0.03
    **{f"heads-forecast-r{r:g}": {"ridge": float(r)} for r in (1, 30, 300, 1000)},  # other L2 penalties
    "decay-fast": {"gamma": 0.08, "decay": 10.0},  # decaying steps from 0.08, decay 10
    "resid-heads-0.05": {"heads_forecast": False, "decay": None, "gamma": 0.05},  # a larger constant step
    "per-third-0.02": (1.0, False, True, 0.02),  # the default before the residual heads
    "per-third-0.005": (1.0, False, True, 0.005),
    "per-third-0.01": (1.0, False, True, 0.01),
    "mondrian": (1.0, True, True, 0.005),
    "mondrian-0.02": (1.0, True, True, 0.02),
    "mondrian-shared": (1.0, True, False, 0.005),
    "width-beta": (None, False, False, 0.005),
    "width-beta-per-third": (None, False, True, 0.02),
    "features-width": (1.0, False, True, 0.02, True),
    "features-width-0.005": (1.0, False, True, 0.005, True),
}


HEADS = {  # residual quantile heads: name -> (L2 penalty (linear.RIDGE is 1), cross-fitted on validation, step)
    "resid-heads": (1.0, False, 0.02), "resid-heads-r30": (30.0, False, 0.02),
    "resid-heads-r100": (100.0, False, 0.02), "resid-heads-r300": (300.0, False, 0.02),
    "resid-heads-r30-0.03": (30.0, False, 0.03), "resid-heads-r100-0.03": (100.0, False, 0.03),
    "resid-heads-cross": (1.0, True, 0.02), "resid-heads-cross-r30": (30.0, True, 0.02),
}


def series_files() -> dict[str, Path]:
    import real_data as rd

    return {"goog": rd.series_path("goog"), "sp500": rd.series_path("sp500"), "nasdaq": rd.series_path("nasdaq"),
            "sample": ROOT / "sample_data" / "synthetic_tradingview.csv", "nasdaq-gaps": Path("/tmp/nasdaq-gaps.csv")}


def fractions(path: Path, test_frac: float = 0.2) -> tuple[float, float]:
    """The train and validation fractions of ``real_data.py`` (its anchors' split)."""
    hrm = data.prepare(path, FeatureConfig(feature_set="hrm18"))
    cut = int(hrm.source.n_rows * (1 - test_frac)) - sum(hrm.dropped.values())
    f = cut / hrm.frame.height
    return f * 0.85, f * 0.15


def train(seeds: list[int], out: Path, test_frac: float = 0.2) -> None:
    """Train every series x seed (skipping those in ``out/index.json``) with default settings,
    the last ``test_frac`` of each series' sessions held out as test rows."""
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.json"
    done = json.loads(index.read_text()) if index.exists() else {}
    for seed in seeds:
        for name, path in series_files().items():
            if f"{name}:{seed}" in done:
                continue
            tr, va = fractions(path, test_frac)
            t0 = time.time()
            r = subprocess.run([sys.executable, "-m", "finhrm_cli", "train", str(path), "--train-frac", f"{tr:.10f}",
                                "--val-frac", f"{va:.10f}", "--seed", str(seed), "--out", str(out / name), "--json",
                                "--quiet"], capture_output=True, text=True, check=True)
            done[f"{name}:{seed}"] = {"run": json.loads(r.stdout)["run"], "path": str(path),
                                      "seconds": round(time.time() - t0, 1)}
            index.write_text(json.dumps(done, indent=1))


def halves(parts):
    """Each part's windows cut in two halves in time order."""
    first, second = [], []
    for ds, w in parts:
        k = len(w) // 2
        first.append((ds, w.subset(np.arange(k))))
        second.append((ds, w.subset(np.arange(k, len(w)))))
    return first, second


def measure(run_dir: str, on: str = "test", coverage: float = 0.8, names=None) -> dict:
    from finhrm_cli.run.data import run_datasets
    from finhrm_cli.run.store import load_run

    fc, rc = load_run(run_dir)
    dss = run_datasets(Path(run_dir), rc)
    cal = of(dss, "val")
    scored = of(dss, "test")
    cutoffs = [rc.cutoff(ds.source.name) for ds in dss]
    if on == "val":
        cal, scored = halves(cal)
        cutoffs = [w.dates.max() for _, w in cal]
    pred_cal = fc.forecast(cal)
    pred_sc = fc.forecast(scored)
    scales = [train_scale(ds) for ds in dss]
    anc = anchor.fit(of(dss, "train"), cal, coverage)
    variants = {"old": baselines.conformal_residuals(np.concatenate(pred_cal), np.concatenate([w.y for _, w in cal]),
                                                     np.concatenate([scale(ds, w) for ds, w in cal]))}
    tr = [(ds, w) for ds, w in of(dss, "train") if len(w)]
    pred_tr = fc.forecast(tr)
    for name, spec in CANDIDATES.items():
        if names is not None and name not in names:
            continue
        if spec is None or isinstance(spec, dict):  # the default, or the default with some options changed
            variants[name] = residuals(dss, cal, pred_cal, tr, pred_tr, coverage, **{**conformal.DEFAULT, **(spec or {})})
            continue
        beta, mondrian, per_third, gamma, *width = spec
        variants[name] = residuals(dss, cal, pred_cal, beta=beta, mondrian=mondrian, per_third=per_third, gamma=gamma,
                                   width_model=bool(width), heads=False, decay=None)
    out = {}
    for name, conf in variants.items():
        res = score_parts(scored, pred_sc, conf, coverage, "adaptive", cutoffs, None, scales, anc)["results"]
        out[name] = figures(res["finhrm"])
        out[name]["winkler_p"] = res[anchor.NAME].get("winkler_dm_p")
        if "beta" in conf.get("by_volatility", {}):
            out[name]["beta"] = conf["by_volatility"]["beta"]
    out["anchor"] = figures(res[anchor.NAME])
    args = (dss, cal, pred_cal, scored, pred_sc, cutoffs)
    out["cqr-heads"] = cqr_heads(*args, anchor_heads(anc), coverage)
    for name, (ridge, cross, step) in HEADS.items():
        if names is not None and name not in names:
            continue
        b, sc = cross_fit(cal, pred_cal, coverage, ridge) if cross else (
            resid_heads(fit_resid_heads(tr, pred_tr, coverage, ridge)), None)
        out[name] = cqr_heads(*args, b, coverage, sc, step)
    return out


def anchor_heads(anc):
    """The anchor's quantile offsets around finhrm's forecast (``cqr-heads``)."""
    def bounds(ds, w, p):
        q = anchor.quantiles(anc, w.x[:, -1, :])
        s = scale(ds, w)
        return {k: (p[:, j] / s + q[k][:, 0] - q[k][:, 1], p[:, j] / s + q[k][:, 2] - q[k][:, 1])
                for j, k in enumerate(("high", "low"))}, s
    return bounds


def fit_resid_heads(parts, preds, coverage: float, ridge: float) -> dict:
    """Linear quantile regressions (``alpha/2``, ``1 - alpha/2``) of finhrm's residuals (units of
    the scale) on the scale-free inputs of ``parts`` with forecasts ``preds``: per target, (2, F+1)."""
    from finhrm_cli.forecast import linear

    x = np.concatenate([w.x[:, -1, :] for _, w in parts])
    r = np.concatenate([(w.y - p) / scale(ds, w)[:, None] for (ds, w), p in zip(parts, preds)])
    a = 1.0 - coverage
    return {k: np.array([linear.fit_quantile(x, r[:, j], t, ridge=ridge) for t in (a / 2, 1 - a / 2)])
            for j, k in enumerate(("high", "low"))}


def resid_heads(coef: dict):
    """Interval ends (units of the scale) ``p/s + q_lo(x)``, ``p/s + q_hi(x)`` from ``fit_resid_heads``."""
    from finhrm_cli.forecast import linear

    def bounds(ds, w, p):
        d, s = linear.design(w.x[:, -1, :]), scale(ds, w)
        out = {}
        for j, k in enumerate(("high", "low")):
            q = np.sort(d @ coef[k].T, axis=1)
            out[k] = (p[:, j] / s + q[:, 0], p[:, j] / s + q[:, 1])
        return out, s
    return bounds


def cross_fit(cal, pred_cal, coverage: float, ridge: float):
    """Residual heads cross-fitted on the calibration rows: each time half's CQR scores come from
    heads fit on the other half; the scored rows use the mean of the two fits' coefficients."""
    first, second = halves(cal)
    k = [len(w) // 2 for _, w in cal]
    p1, p2 = [p[:n] for p, n in zip(pred_cal, k)], [p[n:] for p, n in zip(pred_cal, k)]
    c1, c2 = fit_resid_heads(first, p1, coverage, ridge), fit_resid_heads(second, p2, coverage, ridge)
    scores = {"high": [], "low": []}
    for parts, preds, c in ((second, p2, c1), (first, p1, c2)):
        cqr_scores(parts, preds, resid_heads(c), scores)
    mean = {key: (c1[key] + c2[key]) / 2 for key in c1}
    return resid_heads(mean), {key: np.sort(np.concatenate(v)) for key, v in scores.items()}


def cqr_scores(parts, preds, bounds, scores: dict) -> dict:
    """Append the CQR scores ``max(lo - y, y - hi)`` (units of the scale) of ``parts`` to ``scores``."""
    for (ds, w), p in zip(parts, preds):
        b, s = bounds(ds, w, p)
        y = w.y / s[:, None]
        for j, k in enumerate(("high", "low")):
            e = np.maximum(b[k][0] - y[:, j], y[:, j] - b[k][1])
            scores[k].append(e[np.isfinite(e)])
    return scores


def cqr_heads(dss, cal, pred_cal, scored, pred_sc, cutoffs, bounds, coverage: float, scores=None,
              step: float = 0.02) -> dict:
    """Tried and measured: quantile heads around finhrm's forecast.  ``bounds(ds, w, p)`` gives
    row t's interval ends in units of the scale (``anchor_heads``: ``p_t + (q_lo - q_med)``,
    ``p_t + (q_hi - q_med)`` with the anchor's quantile regressions; ``resid_heads``: quantile
    regressions of finhrm's own residuals), conformalized with the CQR score on the calibration
    rows (or the given ``scores``) and adapted with one level per volatility third (``step``)."""
    from finhrm_cli.forecast import intervals_quality as iq

    if scores is None:
        scores = cqr_scores(cal, pred_cal, bounds, {"high": [], "low": []})
        scores = {k: np.sort(np.concatenate(v)) for k, v in scores.items()}
    parts = []
    for (ds, w), p, cutoff in zip(scored, pred_sc, cutoffs):
        b, s = bounds(ds, w, p)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.log(np.stack([w.next_high, w.next_low], axis=1) / w.close[:, None])
        third = iq.thirds(w.scale, iq.volatility_edges(train_scale(ds)))
        upd = w.dates > np.datetime64(cutoff, "D")
        iv = {}
        for j, k in enumerate(("high", "low")):
            lo, hi, _ = conformal.aci(b[k][0] * s, b[k][1] * s, y[:, j], s,
                                      lambda a, g, sc=scores[k]: anchor.cqr_offsets(sc, a), third - 1, 1 - coverage,
                                      w.end, ds.fcfg.horizon, step, upd, groups=3)
            iv[f"{k}_lo"], iv[f"{k}_hi"] = w.close * np.exp(lo), w.close * np.exp(hi)
        keep = np.isfinite(w.next_high) & np.isfinite(w.next_low)
        parts.append(({k: v[keep] for k, v in iv.items()}, w.next_high[keep], w.next_low[keep], third[keep]))
    iv = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    nh, nl = np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
    m = iq.quality(iv, nh, nl, coverage, np.concatenate([p[3] for p in parts]))
    m["coverage_high"] = float(np.mean(iq.inside(iv["high_lo"], iv["high_hi"], nh)))
    m["coverage_low"] = float(np.mean(iq.inside(iv["low_lo"], iv["low_hi"], nl)))
    return figures(m)


def figures(m: dict) -> dict:
    thirds = [np.nan if t["coverage"] is None else t["coverage"] for t in m["coverage_by_volatility"]]
    return {"coverage": (m["coverage_high"] + m["coverage_low"]) / 2, "thirds": thirds,
            "rows": [t["rows"] for t in m["coverage_by_volatility"]],
            "spread": float(np.nanmax(thirds) - np.nanmin(thirds)), "winkler": m["winkler"], "joint": m["joint_coverage"]}


def binomial_p(coverage: float, n: int, nominal: float) -> float:
    """Two-sided exact binomial p-value of ``round(coverage * n)`` hits in ``n`` rows at the
    ``nominal`` rate (conservative here: the coverage averages the high's and the low's)."""
    import math

    k = round(coverage * n)
    lp = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(nominal)
          + (n - i) * math.log(1 - nominal) for i in range(n + 1)]
    return float(min(1.0, sum(math.exp(q) for q in lp if q <= lp[k] + 1e-9)))


def table(results: dict[str, dict[str, dict]], names: list[str], coverage: float = 0.8) -> None:
    """Per series (mean over its seeds): coverage per third, the calm-to-wild spread (largest
    minus smallest third), the worst third's distance from nominal over every seed, how many
    (seed, third) coverages differ from nominal at 5% (``binomial_p``), the
    Winkler score as a ratio to the anchor's in the same run with the Diebold-Mariano p-value
    of equal interval scores per seed (``evaluate``'s), joint coverage.  The series column ends
    with the binomial 95% half-width of a coverage measured on the smallest third's rows."""
    print("| series (seeds; test rows calm / mid / wild) | method | coverage calm / mid / wild | spread | worst third "
          "off nominal | thirds off (p < 0.05) | Winkler / anchor | p (DM) per seed | joint coverage |")
    print("|---|---|---|---|---|---|---|---|---|")
    for series, runs in results.items():
        rows_n = np.mean([r["old"]["rows"] for r in runs], axis=0)
        # the binomial 95% half-width of one seed's coverage in the smallest third with rows: the
        # resolution of a "within 3 points" check on that many rows
        half = 196 * np.sqrt(coverage * (1 - coverage) / max(1.0, float(np.min(rows_n[rows_n > 0]))))
        where = f"{series} ({len(runs)}; {' / '.join(f'{v:.0f}' for v in rows_n)}; ±{half:.1f})"
        for name in names:
            rows = [r[name] for r in runs]
            th = np.mean([r["thirds"] for r in rows], axis=0) * 100
            spread = np.mean([r["spread"] for r in rows]) * 100
            worst = np.nanmax([np.abs(np.array(r["thirds"]) - coverage) for r in rows]) * 100
            ratio = np.mean([r["winkler"] / a["anchor"]["winkler"] for r, a in zip(rows, runs)])
            joint = np.mean([r["joint"] for r in rows]) * 100
            beta = [r["beta"] for r in rows if "beta" in r]
            label = name + (f" (beta {np.mean(beta):.2f})" if beta and name.startswith("width-beta") else "")
            ps = "/".join("-" if r.get("winkler_p") is None else f"{r['winkler_p']:.2f}" for r in rows)
            cells = [(c, n) for r in rows for c, n in zip(r["thirds"], r["rows"]) if n]
            off = sum(binomial_p(c, n, coverage) < 0.05 for c, n in cells)
            print(f"| {where} | {label} | {th[0]:.1f} / {th[1]:.1f} / {th[2]:.1f} | {spread:.1f} | {worst:.1f} "
                  f"| {off} of {len(cells)} | {ratio:.3f} | {ps} | {joint:.1f} |")


def walk_forward(index: dict, folds: int, cache: Path, coverage: float = 0.8) -> None:
    """``finhrm evaluate RUN --walk-forward K --json`` for every run of the index (the default
    intervals of today's code, refit per fold; cached as ``cache/SERIES_SEED.json``), then per
    series, over seeds: the coverage per third pooled over the folds (edges from each fold's
    training rows), the spread, the (seed, third) coverages off nominal at 5%, and the Winkler
    score against the anchor: the mean of the folds' ratios, and the folds where finhrm's is
    significantly higher (DM p < 0.05) out of all."""
    cache.mkdir(parents=True, exist_ok=True)
    per: dict[str, list] = {}
    for key, entry in sorted(index.items()):
        path = cache / f"{key.replace(':', '_')}.json"
        if not path.exists():
            r = subprocess.run([sys.executable, "-m", "finhrm_cli", "evaluate", entry["run"], "--walk-forward",
                                str(folds), "--json"], capture_output=True, text=True, check=True)
            path.write_text(r.stdout)
        per.setdefault(key.split(":")[0], []).append(json.loads(path.read_text()))
    print("| series (seeds; rows calm / mid / wild per seed) | method | coverage calm / mid / wild | spread | thirds off "
          "(p < 0.05) | Winkler / anchor, mean of folds (folds above 1) | folds finhrm significantly worse |")
    print("|---|---|---|---|---|---|---|")
    for series, evs in per.items():
        for name in ("finhrm", "cqr_linear"):
            th = [ev["mean"][name]["coverage_by_volatility"] for ev in evs]
            cov = np.array([[np.nan if t["coverage"] is None else t["coverage"] for t in x] for x in th], np.float64)
            rows = np.array([[t["rows"] for t in x] for x in th])
            off = sum(binomial_p(c, int(n), coverage) < 0.05 for c, n in zip(cov.ravel(), rows.ravel()) if n)
            m = np.nanmean(cov, axis=0) * 100
            spread = float(np.mean(np.nanmax(cov, axis=1) - np.nanmin(cov, axis=1))) * 100
            head = (f"| {series} ({len(evs)}; {' / '.join(f'{v:.0f}' for v in rows.mean(axis=0))}) | "
                    f"{'default' if name == 'finhrm' else 'anchor'} | {m[0]:.1f} / {m[1]:.1f} / {m[2]:.1f} | "
                    f"{spread:.1f} | {off} of {rows.size} |")
            if name == "cqr_linear":
                print(head + " 1 | - |")
                continue
            ratios, worse = [], 0
            for ev in evs:
                for f in ev["folds"]:
                    fin, anc = f["results"]["finhrm"], f["results"]["cqr_linear"]
                    ratios.append(fin["winkler"] / anc["winkler"])
                    worse += bool(anc.get("winkler_dm_p", 1.0) < 0.05 and fin["winkler"] > anc["winkler"])
            above = sum(r > 1 for r in ratios)
            print(head + f" {np.mean(ratios):.3f} ({above} of {len(ratios)}) | {worse} of {len(ratios)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, nargs="*", default=None, help="train these seeds first")
    ap.add_argument("--out", type=Path, default=Path("/tmp/finhrm-intervals"), help="where --train puts runs")
    ap.add_argument("--test-frac", type=float, default=0.2,
                    help="--train: the share of each series' last sessions held out as test rows (more rows per "
                         "third: a finer check)")
    ap.add_argument("--index", type=Path, default=None, help="index.json of trained runs (default OUT/index.json)")
    ap.add_argument("--on", choices=("test", "val"), default="test")
    ap.add_argument("--methods", nargs="+", default=["old", "default", "anchor"],
                    help=f"rows to show: old, anchor, {', '.join(CANDIDATES)}")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--walk-forward", type=int, default=None, metavar="K",
                    help="instead: `finhrm evaluate RUN --walk-forward K` on every run (cached beside the index), "
                         "summed up per series")
    args = ap.parse_args()
    if args.train:
        train(args.train, args.out, args.test_frac)
    index_path = args.index or args.out / "index.json"
    index = json.loads(index_path.read_text())
    if args.walk_forward:
        walk_forward(index, args.walk_forward, index_path.parent / f"walk-forward-{args.walk_forward}")
        return
    results: dict[str, list] = {}
    for key, entry in sorted(index.items()):
        series = key.split(":")[0]
        results.setdefault(series, []).append(measure(entry["run"], args.on, names=set(args.methods)))
        print(f"{key}: done", file=sys.stderr)
    table(results, args.methods)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
