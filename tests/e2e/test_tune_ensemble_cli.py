"""Ensemble runs and ``finhrm tune``'s walk-forward objective, end to end on a small
synthetic series with tiny models: an ensemble of runs with different windows and feature sets
forecasts the mean of its members' forecasts, row by row, survives the deletion of the runs it
was made from, and is used by predict, evaluate and inspect like any run; ``tune --ensemble``
and ``--ensemble-seeds`` make one; the folds objective never reads a test row."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import cli, one_line_error, scaled_test_bars, tiny_space, write_csv

pytest.importorskip("optuna")
pytestmark = pytest.mark.slow

TINY = """
[model]
d_model = 16
n_heads = 2
h_layers = 1
l_layers = 1
h_cycles = 1
l_cycles = 1
halt_max_steps = 2
[train]
epochs = 2
batch_size = 32
"""

SPACE = tiny_space(ema="[0.0]")


@pytest.fixture(autouse=True)
def _no_compile(monkeypatch):
    monkeypatch.setenv("MLX_DISABLE_COMPILE", "1")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ens")
    (d / "tiny.toml").write_text(TINY)
    (d / "space.toml").write_text(SPACE)
    return {"csv": write_csv(d / "bars.csv", n=400), "tiny": d / "tiny.toml", "space": d / "space.toml", "dir": d}


def _train(home, files, *flags) -> str:
    res = cli(["train", files["csv"], "--config", files["tiny"], "--json", "-q", "--out", home / "made", *flags], home)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["run"]


def _forecasts(home, files, run) -> dict[str, tuple[float, float]]:
    res = cli(["predict", files["csv"], "--model", run, "--all", "--format", "csv"], home)
    assert res.exit_code == 0, res.output
    return {r["date"]: (float(r["pred_high"]), float(r["pred_low"])) for r in csv.DictReader(io.StringIO(res.stdout))}


@pytest.fixture(scope="module")
def ensemble(files, tmp_path_factory):
    """An ensemble of three runs: window 5 and 10, features extended and hrm18."""
    from finhrm_cli.run.make_ensemble import make_ensemble

    home = tmp_path_factory.mktemp("home")
    members = [_train(home, files, "--seq-len", "5"), _train(home, files, "--seq-len", "10", "--seed", "1"),
               _train(home, files, "--seq-len", "7", "--features", "hrm18")]
    import os

    old = os.environ.get("FINHRM_HOME")
    os.environ["FINHRM_HOME"] = str(home)
    try:
        made = make_ensemble([Path(m) for m in members], home / "ens", "bars-ensemble", {"how": "test"})
    finally:
        os.environ.pop("FINHRM_HOME") if old is None else os.environ.__setitem__("FINHRM_HOME", old)
    return {"home": home, "members": members, "run": made["run"], "made": made}


def test_the_ensemble_forecasts_the_mean_of_its_members_by_date(files, ensemble):
    home = ensemble["home"]
    own = [_forecasts(home, files, m) for m in ensemble["members"]]
    ens = _forecasts(home, files, ensemble["run"])
    # the longest window (10) sets the rows: every member forecasts each of them
    assert len(ens) == min(len(o) for o in own) and all(set(ens) <= set(o) for o in own)
    for date in list(ens)[::25]:
        mean_log = np.mean([np.log(o[date]) for o in own], axis=0)  # the mean of log ratios, same close
        assert np.allclose(np.log(ens[date]), mean_log, rtol=0, atol=1e-4), date
    # its conformal residuals are its own, from its validation forecasts
    from finhrm_cli.run import store

    conf = store.read_config(ensemble["run"]).conformal
    assert conf and all(conf != store.read_config(m).conformal for m in ensemble["members"])
    # ... calibrated as a single run's: per volatility third, with residual heads
    assert conf["by_volatility"]["per_third"] and conf["by_volatility"].get("heads")


def test_predict_evaluate_inspect_use_it_as_a_run(files, ensemble):
    home, run = ensemble["home"], ensemble["run"]
    res = cli(["evaluate", run, "--json"], home)
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    assert ev["results"]["finhrm"]["mae"] > 0 and ev["split"] == "test"
    res = cli(["inspect", run, "--json"], home)
    assert res.exit_code == 0, res.output
    ins = json.loads(res.stdout)
    assert [m["features"]["seq_len"] for m in ins["ensemble"]["members"]] == [5, 10, 7]
    assert all(m["act"]["samples"] > 0 for m in ins["ensemble"]["members"])  # halting per member
    res = cli(["inspect", run], home)
    assert res.exit_code == 0 and "mean of 3 runs" in res.stdout
    one_line_error(cli(["evaluate", run, "--walk-forward", "2"], home), "ensemble", "members")
    one_line_error(cli(["train", files["csv"], "--from", run], home), "ensemble", "--from")


def test_it_holds_copies_deleting_the_originals_changes_nothing(files, ensemble, tmp_path):
    home = ensemble["home"]
    copy = tmp_path / "ens-copy"
    shutil.copytree(ensemble["run"], copy)
    before = _forecasts(home, files, str(copy))
    saved = tmp_path / "originals"
    shutil.move(str(home / "made"), saved)  # the member runs it was made from are gone
    try:
        assert _forecasts(home, files, str(copy)) == before
    finally:
        shutil.move(str(saved), home / "made")
    # a member whose weights were swapped is refused in one line, naming the member
    shutil.copy(copy / "members" / "00" / "model.safetensors", copy / "members" / "01" / "model.safetensors")
    one_line_error(cli(["predict", files["csv"], "--model", copy], home), "01")


def test_a_member_outside_the_ensemble_is_refused(files, ensemble, tmp_path):
    copy = tmp_path / "ens-evil"
    shutil.copytree(ensemble["run"], copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["ensemble"]["members"][1]["dir"] = "members/../../elsewhere"
    (copy / "config.json").write_text(json.dumps(cfg))
    one_line_error(cli(["predict", files["csv"], "--model", copy], ensemble["home"]), "members")


def _tune(home, files, *args, csv_path=None):
    res = cli(["tune", csv_path or files["csv"], "--space", files["space"], "--json", *args], home)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_tune_ensemble_of_the_best_trials_and_of_seeds(files, fresh_home):
    out = _tune(fresh_home, files, "--trials", "3", "--no-compare", "--ensemble", "2")
    ens = out["ensemble"]
    done = sorted((t["value"], t["number"]) for t in out["trials"] if t["state"] == "complete")
    assert [m["trial"] for m in ens["members"]] == [n for _, n in done[:2]]
    assert ens["val"]["rows"] == ens["best_alone_val"]["rows"] > 0  # compared on the same rows
    assert ens["test"]["mae"] > 0 and ens["best_alone_test"]["mae"] > 0
    res = cli(["predict", files["csv"], "--model", ens["run"], "--json"], fresh_home)
    assert res.exit_code == 0, res.output
    # no new trial; the best trial and one run of its settings with the next seed
    seeds = _tune(fresh_home, files, "--trials", "0", "--no-compare", "--ensemble", "2", "--ensemble-seeds")
    assert len(seeds["trials"]) == 3
    members = seeds["ensemble"]["members"]
    assert [m["seed"] for m in members] == [0, 1] and {m["trial"] for m in members} == {out["best"]["number"]}
    from finhrm_cli.run import store

    a, b = (store.read_config(Path(seeds["ensemble"]["run"]) / m["dir"]) for m in members)
    assert (a.features, a.model) == (b.features, b.model) and a.train.seed != b.train.seed
    one_line_error(cli(["tune", files["csv"], "--space", files["space"], "--trials", "0", "--ensemble-seeds"],
                       fresh_home), "--ensemble")


def test_the_folds_objective_never_reads_test_rows(files, tmp_path):
    """Every test bar scaled by 1.7: the walk-forward trials keep their settings and scores
    (to the last bit), the best trial's test score moves."""
    moved = scaled_test_bars(files["csv"], tmp_path / "bars.csv")
    args = ("--trials", "2", "--objective", "folds", "--folds", "2")
    a = _tune(tmp_path / "a", files, *args)
    b = _tune(tmp_path / "b", files, *args, csv_path=moved)
    strip = [(t["number"], t["state"], t["value"], t["params"]) for t in a["trials"]]
    assert strip == [(t["number"], t["state"], t["value"], t["params"]) for t in b["trials"]]
    assert a["metric"].startswith("walk-forward") and all(t["run"] is None for t in a["trials"])
    assert a["default"]["value"] == b["default"]["value"]  # the defaults' folds too
    assert a["best"]["run"] and a["best"]["test"]["mae"] != pytest.approx(b["best"]["test"]["mae"], rel=0.05)
    # the study's objective is fixed: the validation objective is refused on it
    one_line_error(cli(["tune", files["csv"], "--space", files["space"], "--trials", "1"], tmp_path / "a"),
                   "objective")


def test_ensemble_and_objective_errors_are_one_line(files, fresh_home):
    one_line_error(cli(["tune", "--show", "bars", "--ensemble", "2"], fresh_home), "--show", "--ensemble")
    one_line_error(cli(["tune", files["csv"], "--space", files["space"], "--objective", "fold"], fresh_home),
                   "--objective fold", "folds")
    one_line_error(cli(["tune", files["csv"], "--space", files["space"], "--trials", "0", "--ensemble", "2",
                        "--no-compare"], fresh_home), "--ensemble", "no complete trial")
