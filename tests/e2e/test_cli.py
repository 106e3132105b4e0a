"""End to end through the command line: train, evaluate, predict and inspect a small run.

The session's tiny run (conftest.py), trained once on the sample data into a FINHRM_HOME that
holds it alone, is the run the tests drive the commands against, the way a user would.  Tests
that train write their runs elsewhere (``--out`` or a fresh home).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finhrm_cli.forecast.actstats import CALIBRATION_ROWS

from helpers import SAMPLE_TV, SAMPLE_YAHOO, TINY
from helpers import cli as run_cli


def test_train_writes_a_complete_run(trained_summary):
    run = Path(trained_summary["run"])
    for name in ("model.safetensors", "config.json", "history.jsonl", "metrics.json", "state"):
        assert (run / name).exists(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["features"]["seq_len"] == 10 and cfg["model"]["d_model"] == 32
    assert len(cfg["feature_names"]) == 30 and cfg["source"]["fingerprint"]
    assert cfg["conformal"]["n"] > 100
    assert trained_summary["train_samples_per_s"] > 0 and trained_summary["best_epoch"] >= 1
    m = trained_summary["metrics"]["test"]["results"]
    assert set(m) == {"finhrm", "hrm_alone", "persistence", "recent_range"}
    assert m["finhrm"]["range_valid"] == 1.0
    # the linear partner: fit on the training windows, its weight within [0.25, 0.75]
    bl = cfg["blend"]
    assert bl == trained_summary["blend"] and 0.25 <= bl["hrm_weight"] <= 0.75
    assert bl["rows"] == cfg["splits"]["train"]["n_windows"] and len(bl["coef_high"]) == 31
    hist = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == list(range(1, len(hist) + 1))


def test_train_and_inspect_report_the_same_training_time(trained_home, trained_summary):
    """issue 25: `train` and `inspect` showed different times for the same run."""
    ins = json.loads(run_cli(["inspect", trained_summary["run"], "--json"], trained_home).stdout)
    assert trained_summary["train_seconds"] == ins["training"]["seconds"] > 0
    assert trained_summary["seconds"] >= trained_summary["train_seconds"]  # the whole command's


def test_runs_are_never_overwritten(trained_home, trained_summary, tmp_path):
    res = run_cli(["train", SAMPLE_TV, *TINY, "--epochs", "1", "--json", "--out", tmp_path], trained_home)
    assert res.exit_code == 0, res.output
    first = json.loads(res.stdout)["run"]
    res = run_cli(["train", SAMPLE_TV, *TINY, "--epochs", "1", "--json", "--out", tmp_path], trained_home)
    second = json.loads(res.stdout)["run"]
    assert first != second and Path(first).is_dir() and Path(second).is_dir()


def test_predict_last_row_equals_its_row_in_all(trained_home, trained_summary):
    one = run_cli(["predict", SAMPLE_YAHOO, "--model", trained_summary["run"], "--format", "json"], trained_home)
    assert one.exit_code == 0, one.output
    allr = run_cli(["predict", SAMPLE_YAHOO, "--model", trained_summary["run"], "--all", "--format", "json"], trained_home)
    rows_one = json.loads(one.stdout)["rows"]
    rows_all = json.loads(allr.stdout)["rows"]
    assert len(rows_one) == 1 and len(rows_all) > 2000
    backtest = {"split", "actual_high", "actual_low"}  # --all's backtest columns
    assert rows_one[0] == {k: v for k, v in rows_all[-1].items() if k not in backtest}
    r = rows_one[0]
    assert set(r) == {"ticker", "date", "target_date", "close", "pred_high", "pred_low", "pred_high_lo", "pred_high_hi",
                      "pred_low_lo", "pred_low_hi", "run"}
    assert r["date"] == "2025-02-27" and r["target_date"] == "2025-02-28"  # a Thursday, then Friday
    assert r["ticker"] == "synthetic_yahoo" and r["run"] == Path(trained_summary["run"]).name
    alias = run_cli(["predict", SAMPLE_YAHOO, "--model", trained_summary["run"], "--json"], trained_home)
    assert json.loads(alias.stdout)["rows"] == rows_one
    assert r["pred_high"] >= r["pred_low"]
    assert r["pred_high_lo"] <= r["pred_high"] <= r["pred_high_hi"]
    assert r["pred_low_lo"] <= r["pred_low"] <= r["pred_low_hi"]


def test_predict_act_reports_segments_per_row(trained_home, trained_summary):
    res = run_cli(["predict", SAMPLE_YAHOO, "--model", trained_summary["run"], "--all", "--act", "--json"], trained_home)
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    seg = r["act_segments"]
    assert sum(seg["segments_histogram"]) == len(r["rows"]) and 1 <= seg["mean_segments"] <= 2
    hist = seg["segments_histogram"]
    assert seg["mean_segments"] == pytest.approx((hist[0] + 2 * hist[1]) / len(r["rows"]))
    assert seg["skippable_share"] == pytest.approx(1 - seg["mean_segments"] / 2)
    # the run forecasts halted by default (act_inference), --all-steps runs every segment
    default = run_cli(["predict", SAMPLE_YAHOO, "--model", trained_summary["run"], "--all", "--json"], trained_home)
    assert json.loads(default.stdout)["rows"] == r["rows"] and "act_segments" not in json.loads(default.stdout)
    every = run_cli(["predict", SAMPLE_YAHOO, "--model", trained_summary["run"], "--all", "--all-steps", "--json"],
                    trained_home)
    assert every.exit_code == 0 and len(json.loads(every.stdout)["rows"]) == len(r["rows"])
    human = run_cli(["predict", SAMPLE_YAHOO, "--model", trained_summary["run"], "--act"], trained_home)
    assert human.exit_code == 0 and "segments per row" in human.output and "could be skipped" in human.output


def test_predict_csv_output_file(trained_home, trained_summary, tmp_path):
    out = tmp_path / "pred.csv"
    res = run_cli(["predict", SAMPLE_TV, "--all", "--format", "csv", "-o", out], trained_home)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == ["ticker", "date", "target_date", "close", "pred_high", "pred_low", "pred_high_lo",
                             "pred_high_hi", "pred_low_lo", "pred_low_hi", "split", "actual_high", "actual_low", "run"]
    assert all(float(r["pred_high"]) >= float(r["pred_low"]) for r in rows)


def test_predict_is_scale_free(trained_home, trained_summary, tmp_path):
    """The same series at 100x the price level gives 100x the forecast."""
    import polars as pl

    df = pl.read_csv(SAMPLE_YAHOO)
    scaled = df.with_columns([pl.col(c) * 100 for c in ("Open", "High", "Low", "Close", "Adj Close")])
    path = tmp_path / "x100.csv"
    scaled.write_csv(path)
    run = ["--model", trained_summary["run"]]  # the run of the same series, from another file
    a = json.loads(run_cli(["predict", SAMPLE_YAHOO, *run, "--all", "-f", "json"], trained_home).stdout)["rows"]
    b = json.loads(run_cli(["predict", path, *run, "--all", "-f", "json"], trained_home).stdout)["rows"]
    for key in ("pred_high", "pred_low", "pred_high_lo", "pred_low_hi"):
        np.testing.assert_allclose([r[key] for r in b], [100 * r[key] for r in a], rtol=1e-5)


def test_evaluate_reports_model_and_baselines(trained_home, trained_summary):
    res = run_cli(["evaluate", trained_summary["run"], "--json"], trained_home)
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    assert ev["split"] == "test"
    stored = trained_summary["metrics"]["test"]["results"]["finhrm"]
    assert ev["results"]["finhrm"]["mae"] == pytest.approx(stored["mae"], rel=1e-9)
    assert ev["results"]["persistence"]["skill"] == 1.0
    # with a fresh file, rows inside the training period are left out and the output says so
    fresh = run_cli(["evaluate", trained_summary["run"], "--data", SAMPLE_YAHOO, "--json"], trained_home)
    fe = json.loads(fresh.stdout)
    assert any("left out" in n for n in fe["notes"])
    assert fe["first_date"] > trained_summary["metrics"]["val"]["last_date"]


def test_evaluate_scores_the_intervals(trained_home, trained_summary):
    """Issue 27: Winkler score, pinball loss, joint coverage and coverage per volatility third,
    the thirds' edges from the run's training rows (a fresh file is sorted by the same edges)."""
    ev = json.loads(run_cli(["evaluate", trained_summary["run"], "--json"], trained_home).stdout)
    m = ev["results"]["finhrm"]
    for key in ("winkler", "winkler_high", "winkler_low", "pinball", "pinball_high", "pinball_low", "joint_coverage"):
        assert isinstance(m[key], float), key
    assert m["winkler"] > 0 and 0.0 <= m["joint_coverage"] <= min(m["coverage_high"], m["coverage_low"])
    by = m["coverage_by_volatility"]
    assert [t["third"] for t in by] == [1, 2, 3] and sum(t["rows"] for t in by) == ev["rows"]
    e1, e2 = ev["volatility_edges"]
    assert 0 < e1 <= e2
    assert "winkler" not in ev["results"]["persistence"]  # a point forecast: no intervals
    fe = json.loads(run_cli(["evaluate", trained_summary["run"], "--data", SAMPLE_YAHOO, "--json"],
                            trained_home).stdout)
    assert fe["volatility_edges"] == ev["volatility_edges"]
    human = run_cli(["evaluate", trained_summary["run"]], trained_home)
    assert "Intervals" in human.output and "joint coverage" in human.output and "coverage wild" in human.output


def test_evaluate_scores_the_conformalized_anchor_beside_finhrm(trained_home, trained_summary):
    """Issue 27: CQR on linear quantile regression, its intervals scored like finhrm's, in the
    table and in --json, and the run's residuals per volatility third stored."""
    ev = json.loads(run_cli(["evaluate", trained_summary["run"], "--json"], trained_home).stdout)
    a = ev["results"]["cqr_linear"]
    assert a["n"] == ev["results"]["finhrm"]["n"]
    for key in ("winkler", "pinball", "joint_coverage", "coverage_high", "coverage_low", "mae", "dm_p"):
        assert isinstance(a[key], float), key
    # the DM test of equal interval scores: its sign follows which Winkler score is lower
    assert 0 <= a["winkler_dm_p"] <= 1
    assert np.sign(a["winkler_dm_stat"]) == np.sign(ev["results"]["finhrm"]["winkler"] - a["winkler"])
    assert [t["rows"] for t in a["coverage_by_volatility"]] == \
        [t["rows"] for t in ev["results"]["finhrm"]["coverage_by_volatility"]]
    cfg = json.loads((Path(trained_summary["run"]) / "config.json").read_text())
    assert cfg["conformal"]["by_volatility"]["per_third"] is True and ev["intervals_per_third"] is True
    assert len(cfg["conformal"]["by_volatility"]["heads"]["high"]) == 2  # residual heads (new runs' default)
    human = run_cli(["evaluate", trained_summary["run"]], trained_home)
    assert "CQR linear" in human.output and "winkler p (DM)" in human.output


def test_predict_quantiles_never_cross_and_report_joint_coverage(trained_home, trained_summary):
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    res = run_cli(["predict", SAMPLE_YAHOO, "--model", trained_summary["run"], "--all", "--json",
                   "--quantiles", "0.95,0.05,0.5,0.25,0.75"], trained_home)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["quantiles"]["levels"] == levels
    for r in out["rows"]:
        hi = [r[f"pred_high_q{t:g}"] for t in levels]
        lo = [r[f"pred_low_q{t:g}"] for t in levels]
        assert hi == sorted(hi) and lo == sorted(lo) and all(a <= b for a, b in zip(lo, hi))
        assert r["pred_high_q0.5"] == r["pred_high"]
    pairs = out["quantiles"]["coverage"]
    assert [(p["lower"], p["upper"]) for p in pairs] == [(0.05, 0.95), (0.25, 0.75)]
    assert all(p["rows"] > 0 and p["joint_coverage"] <= min(p["coverage_high"], p["coverage_low"]) for p in pairs)
    text = run_cli(["predict", SAMPLE_YAHOO, "--model", trained_summary["run"], "--format", "csv",
                    "--quantiles", "0.1,0.9"], trained_home).stdout
    header = text.splitlines()[0].split(",")
    assert {"pred_high_q0.1", "pred_low_q0.1", "pred_high_q0.9", "pred_low_q0.9"} <= set(header)
    human = run_cli(["predict", SAMPLE_YAHOO, "--model", trained_summary["run"], "--quantiles", "0.1,0.5,0.9"],
                    trained_home)
    assert human.exit_code == 0 and "Quantiles" in human.output


@pytest.mark.parametrize("levels,needle", [("0", "between 0 and 1"), ("1.2", "between 0 and 1"),
                                           ("abc", "not a number"), ("0.1,,x", "not a number")])
def test_predict_refuses_bad_quantile_levels_in_one_line(trained_home, trained_summary, levels, needle):
    from helpers import one_line_error

    res = run_cli(["predict", SAMPLE_YAHOO, "--model", trained_summary["run"], "--quantiles", levels], trained_home)
    assert res.exit_code == 2
    one_line_error(res, "--quantiles", needle)


def test_evaluate_reports_diebold_mariano_per_baseline(trained_home, trained_summary):
    ev = json.loads(run_cli(["evaluate", trained_summary["run"], "--json"], trained_home).stdout)
    for name in ("persistence", "recent_range"):
        r = ev["results"][name]
        assert 0.0 <= r["dm_p"] <= 1.0
        # the statistic's sign says who is ahead, as the MAEs do
        assert (r["dm_stat"] < 0) == (ev["results"]["finhrm"]["mae"] < r["mae"])
    assert "dm_p" not in ev["results"]["finhrm"]
    wf = json.loads(run_cli(["evaluate", trained_summary["run"], "--walk-forward", "2", "--json"], trained_home).stdout)
    assert all(0.0 <= f["results"]["persistence"]["dm_p"] <= 1.0 for f in wf["folds"])
    assert "dm_p" not in wf["mean"]["persistence"]  # p-values are not averaged
    thirds = wf["mean"]["finhrm"]["coverage_by_volatility"]  # pooled over the folds' rows
    assert sum(t["rows"] for t in thirds) == sum(f["rows"] for f in wf["folds"])
    assert all("coverage_by_volatility" in f["results"]["finhrm"] for f in wf["folds"])


def test_adaptive_intervals_start_after_training_and_never_look_ahead(trained_home, trained_summary, tmp_path):
    import polars as pl

    def rows(path, method):
        res = run_cli(["predict", path, "--model", trained_summary["run"], "--all", "-f", "json", "--intervals", method], trained_home)
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)["rows"]

    ada, split = rows(SAMPLE_TV, "adaptive"), rows(SAMPLE_TV, "split")
    cutoff = trained_summary["metrics"]["val"]["last_date"]
    keys = ("pred_high_lo", "pred_high_hi", "pred_low_lo", "pred_low_hi")
    inside = [i for i, r in enumerate(ada) if r["date"] <= cutoff]
    after = [i for i, r in enumerate(ada) if r["date"] > cutoff]
    assert inside and len(after) > 50
    for i in inside:  # up to the end of validation: the static intervals
        assert [ada[i][k] for k in keys] == [split[i][k] for k in keys]
    assert any(ada[i][k] != split[i][k] for i in after for k in keys)  # afterwards they adapt
    # cut the file 20 rows after the cutoff: every interval up to there is unchanged
    df = pl.read_csv(SAMPLE_TV)
    n_keep = df.height - (len(after) - 20)
    short = tmp_path / "short.csv"
    df.head(n_keep).write_csv(short)
    cut = rows(short, "adaptive")
    assert cut[-1]["date"] == ada[len(cut) - 1]["date"]
    for a, b in zip(cut, ada):
        assert [a[k] for k in keys] == pytest.approx([b[k] for k in keys], rel=1e-6)
    # predict without --all gives the last row's adaptive interval, as --all does
    one = json.loads(run_cli(["predict", short, "--model", trained_summary["run"], "-f", "json"], trained_home).stdout)["rows"]
    assert [one[0][k] for k in keys] == pytest.approx([cut[-1][k] for k in keys], rel=1e-6)


def test_interval_coverage_near_requested(trained_home, trained_summary):
    for cov in (0.8, 0.9):
        ev = json.loads(run_cli(["evaluate", trained_summary["run"], "--json", "--coverage", cov], trained_home).stdout)
        m = ev["results"]["finhrm"]
        assert abs(m["coverage_high"] - cov) <= 0.05, m
        assert abs(m["coverage_low"] - cov) <= 0.05, m


def test_no_blend_trains_the_hrm_alone_and_predicts_with_it(fresh_home, tmp_path):
    res = run_cli(["train", SAMPLE_TV, *TINY, "--no-blend", "--json", "--out", str(tmp_path)], fresh_home)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    cfg = json.loads((Path(summary["run"]) / "config.json").read_text())
    assert cfg["blend"] is None and cfg["train"]["blend"] is False
    assert set(summary["metrics"]["test"]["results"]) == {"finhrm", "persistence", "recent_range"}
    ev = json.loads(run_cli(["evaluate", summary["run"], "--json"], fresh_home).stdout)
    assert "hrm_alone" not in ev["results"]
    assert ev["results"]["finhrm"]["mae"] == pytest.approx(summary["metrics"]["test"]["results"]["finhrm"]["mae"], rel=1e-9)


def test_inspect_json_and_act_stats(trained_home, trained_summary):
    res = run_cli(["inspect", trained_summary["run"], "--json"], trained_home)
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    for key in ("run", "source", "splits", "feature_names", "model", "parameters", "training", "history", "metrics", "act"):
        assert key in r, key
    act = r["act"]
    assert sum(act["halting_histogram"]) == act["samples"]
    assert len(act["steps"]) == 2
    # the per-step MAE (the HRM's own) at the last step equals evaluate --all-steps' "hrm_alone"
    # on the same split; the run forecasts halted (act_inference), and its blend with the
    # linear partner, fitted on those forecasts, is what inspect reports
    ev_all = json.loads(run_cli(["evaluate", trained_summary["run"], "--split", "val", "--all-steps", "--json"],
                                trained_home).stdout)
    assert act["steps"][-1]["mae"] == pytest.approx(ev_all["results"]["hrm_alone"]["mae"], rel=1e-9)
    ev = json.loads(run_cli(["evaluate", trained_summary["run"], "--split", "val", "--json"], trained_home).stdout)
    assert ev["act"] is True and act["mae_act"] == pytest.approx(ev["results"]["hrm_alone"]["mae"], rel=1e-9)
    bl = r["blend"]
    assert 0.25 <= bl["hrm_weight"] <= 0.75 and bl["val_mae"]["blend"] == pytest.approx(ev["results"]["finhrm"]["mae"], rel=1e-9)
    assert bl["val_mae"]["hrm"] == pytest.approx(ev["results"]["hrm_alone"]["mae"], rel=1e-9)
    assert 0.0 <= ev["results"]["hrm_alone"]["dm_p"] <= 1.0
    # ... and with --act, inspect's ACT MAE and segments are evaluate --act's
    ev_act = json.loads(run_cli(["evaluate", trained_summary["run"], "--split", "val", "--act", "--json"], trained_home).stdout)
    assert act["mae_act"] == pytest.approx(ev_act["results"]["hrm_alone"]["mae"], rel=1e-9)
    seg = ev_act["act_segments"]
    assert seg["segments_histogram"] == act["halting_histogram"] and seg["max_segments"] == 2
    assert seg["mean_segments"] == pytest.approx(act["mean_halting_step"])
    assert seg["skippable_share"] == pytest.approx(act["compute_saved"]) and 0 <= seg["skippable_share"] <= 0.5
    assert ev["act_segments"] == seg and "act_segments" not in ev_all and ev_all["act"] is False
    # calibration against the halting reward, per step and pooled; intervals; the verdict
    cal = act["calibration"]
    assert 0 <= cal["brier"] <= 1 and 0 < cal["reward_rate"] < 1
    assert cal["mean_p_halt"] == pytest.approx(np.mean([s["q_halt"] for s in act["steps"]]))
    assert act["steps"][0]["mae_vs_step1_lo"] == act["steps"][0]["mae_vs_step1_hi"] == 0
    s2 = act["steps"][1]
    assert s2["mae_vs_step1_lo"] <= s2["mae_vs_step1"] <= s2["mae_vs_step1_hi"]
    assert act["verdict"] in ("later segments help on this run", "later segments hurt on this run",
                              "later segments make no measurable difference on this run")
    assert act["halt_ref"] > 0
    # the Q head's map, fit by train on the training windows, is what inspect reports through
    cfg = json.loads((Path(trained_summary["run"]) / "config.json").read_text())
    hc = cfg["halt_calibration"]
    assert act["halt_calibration"] == hc and hc["a"] > 0 and hc["rows"] == min(CALIBRATION_ROWS, cfg["splits"]["train"]["n_windows"])
    assert set(act["uncalibrated"]) == {"brier", "auc", "mean_p_halt", "step1_p_halt"}
    assert r["parameters"]["trainable"] > 0
    # how the run's intervals are made: what config.json stores, summed up
    iv = r["intervals"]
    bv = cfg["conformal"]["by_volatility"]
    assert iv["heads"] == "inputs and forecast" and iv["per_third"] is True
    assert (iv["gamma"], iv["decay"], iv["gamma_min"]) == (bv["gamma"], bv["decay"], bv["gamma_min"])
    assert iv["rows"] == cfg["conformal"]["n"] == sum(iv["rows_by_third"])
    human = run_cli(["inspect", trained_summary["run"]], trained_home).output
    assert "quantile heads on the inputs and the forecast" in " ".join(human.split())
    # inspect reports the epoch training kept (not merely the lowest validation MAE)
    assert r["training"]["best_epoch"] == trained_summary["best_epoch"]


def test_inspect_list(trained_home, trained_summary):
    r = json.loads(run_cli(["inspect", "--list", "--json"], trained_home).stdout)
    assert any(x["path"] == trained_summary["run"] for x in r["runs"])


def test_human_views_render(trained_home, trained_summary):
    for args in (["evaluate"], ["inspect"], ["inspect", "--list"], ["predict", SAMPLE_TV]):
        res = run_cli(args, trained_home)
        assert res.exit_code == 0, (args, res.output)
        assert "Traceback" not in res.output
        if args == ["evaluate"]:  # the Diebold-Mariano p-value sits beside the skill
            assert "skill" in res.output and "(DM)" in res.output
        if args == ["inspect"]:  # the training settings are shown, not just the outcome
            assert "settings" in res.output and "ema" in res.output and "loss" in res.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["predict", "missing.csv"], "missing.csv"),
        (["evaluate", "no-such-run"], "no-such-run"),
        (["inspect", "no-such-run"], "no-such-run"),
        (["train", SAMPLE_TV, "--seq-len", "0"], "--seq-len"),
        (["train", SAMPLE_TV, "--d-model", "30", "--heads", "4"], "--heads"),
        (["train", SAMPLE_TV, "--batch-size", "100000"], "batch"),
        (["train", SAMPLE_TV, "--ema", "1.5"], "--ema"),
        (["train"], "DATA"),
    ],
)
def test_user_errors_exit_2_in_one_line(trained_home, trained_summary, args, needle):
    res = run_cli(args, trained_home)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.output


def test_corrupt_run_is_one_line(fresh_home, tmp_path):
    bad = tmp_path / "badrun"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    res = run_cli(["inspect", bad], fresh_home)
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1


def test_config_file_and_flags(fresh_home, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nd_model = 32\nheads = 2\n[train]\nepochs = 1\nbatch_size = 64\n")
    res = run_cli(["train", SAMPLE_TV, "--config", cfg, "--h-layers", "1", "--l-layers", "1", "--h-cycles", "1",
                   "--l-cycles", "1", "--halt-max-steps", "1", "--epochs", "1", "--json", "--out", tmp_path], fresh_home)
    assert res.exit_code == 0, res.output
    run = Path(json.loads(res.stdout)["run"])
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["d_model"] == 32 and saved["model"]["h_layers"] == 1  # file and flag
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nd_modle = 3\n")
    res = run_cli(["train", SAMPLE_TV, "--config", bad], fresh_home)
    assert res.exit_code == 2 and "d_modle" in res.output


def test_module_entry_point_and_version():
    out = subprocess.run([sys.executable, "-m", "finhrm_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("finhrm ")


def test_option_typo_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "finhrm_cli", "train", "--epoch", "3", "x.csv"],
                         capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    assert out.returncode == 2 and "--epochs" in out.stderr and "Traceback" not in out.stderr


def test_walk_forward_folds(trained_home, trained_summary, tmp_path):
    png = tmp_path / "wf.png"
    plot = ["--plot", png] if importlib.util.find_spec("matplotlib") else []
    res = run_cli(["evaluate", trained_summary["run"], "--walk-forward", "2", "--json", *plot], trained_home)
    assert res.exit_code == 0, res.output
    wf = json.loads(res.stdout)
    if plot:  # issue 25: the walk-forward's plot was never written
        assert wf["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [f["fold"] for f in wf["folds"]] == [1, 2]
    # folds expand and each tests after what it trained_summary on
    assert wf["folds"][0]["train_rows"] < wf["folds"][1]["train_rows"]
    assert wf["folds"][0]["last_date"] < wf["folds"][1]["first_date"]
    # the mean over folds holds scale-free figures only (issue 25): the skill is the folds' mean
    skills = [f["results"]["finhrm"]["skill"] for f in wf["folds"]]
    assert wf["mean"]["finhrm"]["skill"] == pytest.approx(np.mean(skills)) and "mae" not in wf["mean"]["finhrm"]
    # each fold forecasts as training does: the HRM with its own linear partner, the HRM alone beside
    maes = [f["results"]["finhrm"]["mae"] for f in wf["folds"]]
    alone = [f["results"]["hrm_alone"]["mae"] for f in wf["folds"]]
    assert wf["mean"]["hrm_alone"]["skill"] == pytest.approx(np.mean([f["results"]["hrm_alone"]["skill"] for f in wf["folds"]]))
    assert alone != maes


def test_plot_needs_matplotlib_or_writes_png(trained_home, trained_summary, tmp_path):
    out = tmp_path / "p.png"
    res = run_cli(["evaluate", trained_summary["run"], "--plot", out], trained_home)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert res.exit_code == 2 and "matplotlib" in res.output
    else:
        assert res.exit_code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _three_tickers(tmp_path) -> Path:
    """Three series in three shapes: the sample, a 3.7x copy of its first 1,500 days, and a Yahoo copy."""
    import polars as pl

    folder = tmp_path / "tickers"
    folder.mkdir()
    df = pl.read_csv(SAMPLE_YAHOO)
    df.write_csv(folder / "AAA.csv")
    df.head(1500).with_columns([pl.col(c) * 3.7 for c in ("Open", "High", "Low", "Close", "Adj Close")]).write_csv(folder / "BBB.csv")
    (folder / "CCC.csv").write_bytes(SAMPLE_TV.read_bytes())
    return folder


def test_several_tickers_train_evaluate_predict(fresh_home, tmp_path):
    folder = _three_tickers(tmp_path)
    res = run_cli(["train", folder / "AAA.csv", folder / "BBB.csv", folder / "CCC.csv", *TINY, "--epochs", "1",
                   "--json", "--out", tmp_path / "runs"], fresh_home)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["series"] == ["AAA", "BBB", "CCC"]
    run = Path(summary["run"])
    cfg = json.loads((run / "config.json").read_text())
    assert [s["name"] for s in cfg["series"]] == ["AAA", "BBB", "CCC"]
    assert all(len(s["source"]["fingerprint"]) == 64 for s in cfg["series"])
    test = summary["metrics"]["test"]
    assert set(test["series"]) == {"AAA", "BBB", "CCC"}
    assert test["rows"] == sum(s["rows"] for s in test["series"].values())
    ev = json.loads(run_cli(["evaluate", run, "--json"], fresh_home).stdout)
    assert ev["results"]["finhrm"]["mae"] == pytest.approx(test["results"]["finhrm"]["mae"], rel=1e-9)
    pred = json.loads(run_cli(["predict", folder, "--model", run, "-f", "json"], fresh_home).stdout)["rows"]
    assert [r["ticker"] for r in pred] == ["AAA", "BBB", "CCC"]
    # BBB is AAA's first 1,500 days at 3.7x the price: the same forecast, scaled, on that day
    alone = json.loads(run_cli(["predict", folder / "AAA.csv", "--model", run, "--all", "-f", "json"], fresh_home).stdout)["rows"]
    day = {r["date"]: r for r in alone}[pred[1]["date"]]
    assert pred[1]["pred_high"] == pytest.approx(3.7 * day["pred_high"], rel=1e-5)


def test_pooled_normaliser_uses_training_rows_of_every_series(tmp_path):
    from finhrm_cli import data
    from finhrm_cli.config import FeatureConfig

    folder = _three_tickers(tmp_path)
    dss = data.prepare_many([folder], FeatureConfig())
    assert [d.source.name for d in dss] == ["AAA", "BBB", "CCC"]
    assert all(d.normalizer == dss[0].normalizer for d in dss)
    rows = np.concatenate([d.features()[d.splits["train"]["start"]: d.splits["train"]["end"] - 1] for d in dss])
    np.testing.assert_allclose(dss[0].normalizer.mean, rows.mean(axis=0))


def test_predict_warns_about_suspicious_data_in_the_file_it_reads(trained_home, trained_summary, tmp_path):
    lines = Path(SAMPLE_YAHOO).read_text().splitlines()
    head, rows = lines[0], [ln.split(",") for ln in lines[1:]]
    for r in rows[2000:]:  # an unadjusted 2-for-1 split: every price halves from here on
        r[1:6] = [f"{float(v) / 2:.4f}" for v in r[1:6]]
    path = tmp_path / "split" / "synthetic_tradingview.csv"  # the run's series, with an unadjusted split
    path.parent.mkdir()
    path.write_text("\n".join([head, *(",".join(r) for r in rows)]) + "\n")
    res = run_cli(["predict", path, "--model", trained_summary["run"], "--json"], trained_home)
    assert res.exit_code == 0, res.output
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and rows[2000][0] in warned[0] and "split-adjusted" in warned[0], res.stderr
    assert json.loads(res.stdout)["rows"]  # stdout is still one JSON document
    clean = run_cli(["predict", SAMPLE_TV, "--model", trained_summary["run"], "--json"], trained_home)
    assert "warning:" not in clean.stderr


def test_predict_reuses_cached_forecasts_and_matches_a_cold_run(trained_home, trained_summary, tmp_path, monkeypatch):
    """The forecast cache (finhrm_cli.forecast.memo): the second predict runs the model on no
    row it has seen, a file with one more session on that row only, and the output is the
    same as with the cache off."""
    import polars as pl

    from finhrm_cli.forecast import inference

    ran = []
    real = inference.predict_act  # the run forecasts halted (act_inference)

    def spy(model, x, **kw):
        ran.append(len(x))
        return real(model, x, **kw)

    monkeypatch.setattr(inference, "predict_act", spy)
    df = pl.read_csv(SAMPLE_TV)
    short = tmp_path / "short.csv"
    df.head(df.height - 1).write_csv(short)
    args = ["--model", trained_summary["run"], "-f", "json"]

    def rows(path):
        res = run_cli(["predict", path, *args], trained_home)
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)["rows"]

    monkeypatch.setenv("FINHRM_CACHE", "off")
    cold_short, cold_full = rows(short), rows(SAMPLE_TV)
    monkeypatch.setenv("FINHRM_CACHE", str(tmp_path / "cache"))
    for path, want, model_rows in ((short, cold_short, None), (short, cold_short, 0), (SAMPLE_TV, cold_full, 1)):
        ran.clear()
        assert rows(path) == want
        if model_rows is None:
            assert sum(ran) > 50                          # the first call fills the cache
        else:
            assert sum(ran) == model_rows                 # then nothing, then the new session


def test_inspect_act_table_fits_an_80_column_terminal(monkeypatch):
    """Every cell of the ACT table is whole at 80 columns (no ellipsis), the interval in % of
    step 1's MAE."""
    from rich.console import Console

    from finhrm_cli.ui import console as ui_console
    from finhrm_cli.ui import views

    console = Console(width=80, record=True, highlight=False, force_terminal=False)
    monkeypatch.setattr(ui_console, "out", console)
    step = dict(mae=0.5192, q_halt=0.484, reward_rate=0.535, q_continue=0.402, halted=383, halted_share=1.0,
                brier=0.248, auc=0.57)
    steps = [dict(step=1, **step)] + [
        dict(step=k, **{**step, "mae": 0.5193, "halted": 0, "halted_share": 0.0}, mae_vs_step1=0.000128,
             mae_vs_step1_lo=-0.000138, mae_vs_step1_hi=0.000412) for k in (2, 3, 4)]
    act = dict(on="validation split", samples=383, steps=steps, halting_histogram=[383, 0, 0, 0],
               calibration=dict(brier=0.248, auc=0.573, mean_p_halt=0.485, reward_rate=0.537), halt_ref=0.573,
               mean_halting_step=1.0, compute_saved=0.75, mae_all_steps=0.5194, mae_act=0.5192, mae_act_change=-0.0001,
               best_step=1, verdict="later segments make no measurable difference on this run")
    views.render_act(act)
    text = console.export_text()
    assert "…" not in text
    assert "+0.02% [-0.03, +0.08]" in text and "383 (100.0%)" in text


def test_predict_says_unbounded_instead_of_printing_infinity(monkeypatch):
    from rich.console import Console

    from finhrm_cli.ui import console as ui_console
    from finhrm_cli.ui import forecasts

    console = Console(width=100, record=True, highlight=False, force_terminal=False)
    monkeypatch.setattr(ui_console, "out", console)
    monkeypatch.setattr(ui_console, "err", console)
    row = dict(ticker="x", date="2015-06-18", target_date="2015-06-19", close=94.98, pred_high=95.48, pred_low=94.57, pred_high_lo=0.0,
               pred_high_hi=float("inf"), pred_low_lo=0.0, pred_low_hi=float("inf"))
    forecasts.render_predict({"rows": [row], "coverage": 0.8, "run": "r"}, "table")
    text = console.export_text()
    assert "inf" not in text.replace("interval", "") and text.count("unbounded") == 3
    assert "too few rows to bound the 80% interval" in text


def _keys(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{path}.{k}", str(k)
            yield from _keys(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v, path + "[]")


def test_every_json_key_is_snake_case(trained_home, trained_summary, tmp_path):
    """issue 25: `evaluate --json` had keys with spaces ("HRM alone"); jq and pandas want snake_case."""
    import re

    docs = {"train": trained_summary}
    for args in (["evaluate"], ["evaluate", "--act"], ["inspect"], ["inspect", "--list"], ["predict", SAMPLE_TV],
                 ["prepare", SAMPLE_YAHOO, "-o", tmp_path / "prep"]):
        res = run_cli([*args, "--json"], trained_home)
        assert res.exit_code == 0, (args, res.output)
        docs[" ".join(map(str, args))] = json.loads(res.stdout)
    bad = [(cmd, p) for cmd, doc in docs.items() for p, k in _keys(doc) if not re.fullmatch(r"[a-z0-9_]+", k)]
    assert not bad, bad[:10]
