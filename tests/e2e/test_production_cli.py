"""Production runs (`finhrm train DATA --from RUN`, issue 24): RUN's settings on every row of
DATA, warm-started from RUN's weights (or `--scratch`), the epoch count RUN's validation chose,
RUN's conformal residuals; lineage in config.json, `inspect` and `inspect --list`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from finhrm_cli.service.training import REFRESH_EPOCHS, REFRESH_REPLAY
from helpers import SAMPLE_TV, TINY
from helpers import cli as run_cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _rows(path, n=None):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:] if n is None else rows[1:n + 1]


def _day(cell: str) -> str:
    """The sample's time column (epoch seconds, TradingView's shape) as an ISO date."""
    import datetime as dt

    return dt.datetime.fromtimestamp(int(cell), dt.timezone.utc).date().isoformat()


def _write(path, header, body):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(body)
    return path


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A run on the first 80% of the sample's sessions, and the whole file under the same name
    (the file a user appends bars to)."""
    tmp = tmp_path_factory.mktemp("prod")
    header, body = _rows(SAMPLE_TV)
    (tmp / "early").mkdir()
    early = _write(tmp / "early" / "bars.csv", header, body[: int(len(body) * 0.8)])
    full = _write(tmp / "bars.csv", header, body)
    home = tmp / "home"
    res = run_cli(["train", early, *TINY, "--quiet", "--json"], home)
    assert res.exit_code == 0, res.output
    return {"home": home, "early": early, "full": full, "run": json.loads(res.stdout), "tmp": tmp}


def _train_window_dates(run_dir):
    from finhrm_cli.forecast.parts import of
    from finhrm_cli.run import store
    from finhrm_cli.run.data import run_datasets

    _, rc = store.load_run(run_dir)
    return np.concatenate([w.dates for _, w in of(run_datasets(run_dir, rc), "train")])


def _config(run):
    from pathlib import Path

    return json.loads((Path(run) / "config.json").read_text())


def test_from_trains_every_row_warm_with_lineage_and_intervals(parent):
    home, run = parent["home"], parent["run"]
    res = run_cli(["train", parent["full"], "--from", run["name"], "--quiet", "--json"], home)
    assert res.exit_code == 0, res.output
    prod = json.loads(res.stdout)
    cfg = _config(prod["run"])
    lin = cfg["parent"]
    assert lin["name"] == run["name"] and lin["start"] == "warm" and lin["root"] == run["name"]
    assert lin["epochs_chosen"] == run["best_epoch"]
    # every row trains: the training split holds every window with a known next session
    sp = cfg["splits"]
    assert sp["val"]["n_windows"] == 0 and sp["test"]["n_windows"] == 0
    header, body = _rows(parent["full"])
    assert sp["train"]["last_date"] == _day(body[-1][0])
    assert prod["metrics"]["every_row"]["windows"] == sp["train"]["n_windows"]
    # the warm start: a few epochs at the end of the parent's schedule, from its normaliser
    parent_cfg = _config(run["run"])
    assert cfg["normalizer"] == parent_cfg["normalizer"]
    assert cfg["train"]["epochs"] == REFRESH_EPOCHS
    assert cfg["train"]["lr"] == pytest.approx(parent_cfg["train"]["lr"] * 0.1)
    # ... on the windows the parent's weights never saw and as many of the latest they did
    # (at least REFRESH_REPLAY); the linear partner still fits on every row
    dates = _train_window_dates(prod["run"])
    new = int((dates > np.datetime64(parent_cfg["splits"]["train"]["last_date"])).sum())
    assert 0 < new < len(dates)
    k = min(len(dates), new + max(REFRESH_REPLAY, new))
    assert lin["hrm_trains_from"] == {"bars": str(dates[len(dates) - k])}
    assert prod["metrics"]["every_row"]["hrm_windows"] == k < len(dates)
    assert cfg["blend"]["rows"] == len(dates)
    assert cfg["conformal"] == parent_cfg["conformal"]
    assert "by_volatility" in cfg["conformal"]  # issue 27: the parent's per-third intervals carry over
    assert "heads" in cfg["conformal"]["by_volatility"]  # and its residual heads (predict computes them from these)
    assert cfg["blend"]["hrm_weight"] == parent_cfg["blend"]["hrm_weight"]
    # valid intervals on the next session, and predict picks the production run for this file
    out = run_cli(["predict", parent["full"], "--json"], home)
    assert out.exit_code == 0, out.output
    r = json.loads(out.stdout)["rows"][0]
    assert r["run"] == prod["name"]
    assert r["pred_high_lo"] <= r["pred_high"] <= r["pred_high_hi"]
    assert r["pred_low_lo"] <= r["pred_low"] <= r["pred_low_hi"]
    assert all(np.isfinite([r[k] for k in ("pred_high_lo", "pred_high_hi", "pred_low_lo", "pred_low_hi")]))
    q = json.loads(run_cli(["predict", parent["full"], "--json", "--quantiles", "0.1,0.5,0.9"], home).stdout)["rows"][0]
    assert q["pred_low_q0.1"] <= q["pred_low_q0.5"] <= q["pred_low_q0.9"] <= q["pred_high_q0.9"]
    # inspect and inspect --list name the parent
    listed = json.loads(run_cli(["inspect", "--list", "--json"], home).stdout)["runs"]
    assert {x["name"]: x["parent"] for x in listed}[prod["name"]] == run["name"]
    ins = json.loads(run_cli(["inspect", prod["name"], "--json"], home).stdout)
    assert ins["parent"]["name"] == run["name"]
    # evaluate says why there is no test split
    ev = run_cli(["evaluate", prod["name"]], home)
    assert ev.exit_code == 2 and "production run" in ev.output


def test_warm_start_starts_from_the_parent_weights(parent):
    """At a learning rate of almost zero the warm-started run keeps its parent's weights;
    --scratch does not."""
    from finhrm_cli.run import store

    home, run = parent["home"], parent["run"]
    res = run_cli(["train", parent["full"], "--from", run["name"], "--lr", "1e-12", "--quiet", "--json"], home)
    assert res.exit_code == 0, res.output
    warm, _ = store.load_run(json.loads(res.stdout)["run"])
    base, _ = store.load_run(run["run"])
    scratch = run_cli(["train", parent["full"], "--from", run["name"], "--scratch", "--quiet", "--json"], home)
    assert scratch.exit_code == 0, scratch.output
    fresh, _ = store.load_run(json.loads(scratch.stdout)["run"])
    from mlx.utils import tree_flatten

    # (the trainable weights: the halting reference, a buffer, tracks the new rows by design)
    w, b, f = (dict(tree_flatten(m.model.trainable_parameters())) for m in (warm, base, fresh))
    for k in b:
        np.testing.assert_allclose(np.array(w[k]), np.array(b[k]), rtol=1e-4, atol=1e-6, err_msg=k)
    assert any(not np.allclose(np.array(f[k]), np.array(b[k])) for k in b)
    assert _config(json.loads(scratch.stdout)["run"])["train"]["epochs"] == run["best_epoch"]


def test_the_epoch_count_ignores_the_rows_after_the_parents_validation(parent, tmp_path):
    """The production run's epochs are the parent's validation choice: rewriting every row after
    the parent's validation period (its test rows and the new ones) cannot change them."""
    home, run = parent["home"], parent["run"]
    header, body = _rows(parent["full"])
    cut = _config(run["run"])["splits"]["val"]["last_date"]
    changed = [row if _day(row[0]) <= cut else row[:1] + [f"{float(v) * 1.5:.4f}" if i < 4 else v
                                                             for i, v in enumerate(row[1:])]
               for row in body]
    other = _write(tmp_path / "bars.csv", header, changed)
    epochs = []
    for path in (parent["full"], other):
        res = run_cli(["train", path, "--from", run["run"], "--scratch", "--quiet", "--json"], home)
        assert res.exit_code == 0, res.output
        epochs.append(_config(json.loads(res.stdout)["run"])["train"]["epochs"])
    assert epochs == [run["best_epoch"]] * 2


def test_from_and_scratch_misuse_are_one_line_errors(parent):
    home, run = parent["home"], parent["run"]
    for args, words in ((["train", parent["full"], "--scratch"], "--scratch goes with --from"),
                        (["train", parent["full"], "--from", "nope-20200101-000000"], "nope"),
                        (["train", parent["full"], "--from", run["name"], "--d-model", "64"], "d_model differ")):
        res = run_cli(args, home)
        assert res.exit_code == 2 and words in res.output, res.output
