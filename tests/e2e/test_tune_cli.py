"""``finhrm tune`` end to end, on a small synthetic series with a tiny search space: resume,
the best settings' TOML trains the same run, ``--show``, the objective never reads test rows,
two processes share one SQLite study, and the one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, cli, one_line_error, scaled_test_bars, tiny_space, write_csv

pytest.importorskip("optuna")
pytestmark = pytest.mark.slow

SPACE = tiny_space()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    (d / "space.toml").write_text(SPACE)
    return {"csv": write_csv(d / "bars.csv", n=400), "space": d / "space.toml", "dir": d}


@pytest.fixture(autouse=True)
def _no_compile(monkeypatch):
    monkeypatch.setenv("MLX_DISABLE_COMPILE", "1")


def tune(home, files, *args, csv=None):
    res = cli(["tune", csv or files["csv"], "--space", files["space"], "--json", *args], home)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_resume_show_and_the_best_toml_trains_the_best_run(files, fresh_home):
    first = tune(fresh_home, files, "--trials", "2")
    assert [t["number"] for t in first["trials"]] == [0, 1]
    assert first["best"]["test"]["mae"] > 0 and first["default"]["test"]["mae"] > 0
    second = tune(fresh_home, files, "--trials", "1")  # the same command: the same study, one more trial
    assert second["study"] == first["study"] == "bars"
    assert [t["number"] for t in second["trials"]] == [0, 1, 2]
    assert second["default"]["run"] == first["default"]["run"]  # trained once, reused
    shown = cli(["tune", "--show", "bars", "--json"], fresh_home)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["counts"] == second["counts"]
    # the best settings, as written, train the best trial's run again (same settings, same weights)
    toml = Path(second["best_toml"])
    out = fresh_home / "again"
    res = cli(["train", files["csv"], "--config", toml, "--json", "-q", "--out", out], fresh_home)
    assert res.exit_code == 0, res.output
    from finhrm_cli.run import store

    again = store.read_config(json.loads(res.stdout)["run"])
    best = store.read_config(second["best"]["run"])
    for part in ("features", "model", "train"):
        assert getattr(again, part) == getattr(best, part), part
    val = json.loads(res.stdout)["metrics"]["val"]["results"]["finhrm"]["mae"]
    assert val == pytest.approx(second["best"]["value"], rel=1e-6)


def test_the_objective_never_reads_test_rows(files, tmp_path):
    """Scale every bar of the test split by 1.7: the trials (their settings and validation
    scores) do not change at all; only the test score of the best trial does."""
    moved = scaled_test_bars(files["csv"], tmp_path / "bars.csv")
    a = tune(tmp_path / "a", files, "--trials", "2", "--no-compare")
    b = tune(tmp_path / "b", files, "--trials", "2", "--no-compare", csv=moved)
    strip = [(t["number"], t["state"], t["value"], t["params"]) for t in a["trials"]]
    assert strip == [(t["number"], t["state"], t["value"], t["params"]) for t in b["trials"]]
    assert a["best"]["test"]["mae"] != pytest.approx(b["best"]["test"]["mae"], rel=0.05)


def test_two_processes_share_one_study(files, fresh_home):
    db = fresh_home / "shared.db"
    env = {**os.environ, "FINHRM_HOME": str(fresh_home), "MLX_DISABLE_COMPILE": "1", "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "finhrm_cli", "tune", str(files["csv"]), "--space", str(files["space"]),
           "--trials", "2", "--no-compare", "-q", "--json", "--study", "shared", "--storage", f"sqlite:///{db}"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    res = cli(["tune", "--show", "shared", "--storage", f"sqlite:///{db}", "--json"], fresh_home)
    trials = json.loads(res.stdout)["trials"]
    assert sorted(t["number"] for t in trials) == [0, 1, 2, 3]
    params = [json.dumps(t["params"], sort_keys=True) for t in trials]
    assert len(set(params)) == 4  # the workers drew distinct settings


def test_tune_errors_are_one_line(files, fresh_home, monkeypatch):
    one_line_error(cli(["tune", "--show", "nothing-here"], fresh_home), "nothing-here")
    bad = files["dir"] / "bad_space.toml"
    bad.write_text("train_frac = [0.5, 0.6]\n")
    one_line_error(cli(["tune", files["csv"], "--space", bad], fresh_home), "train_frac", "--config")
    bad.write_text("d_model = {low = 64}\n")
    one_line_error(cli(["tune", files["csv"], "--space", bad], fresh_home), "d_model")
    bad.write_text("colour = [1]\n")
    one_line_error(cli(["tune", files["csv"], "--space", bad], fresh_home), "colour")
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if the extra were not installed
    one_line_error(cli(["tune", files["csv"]], fresh_home), "pip install 'finhrm[tune]'")
