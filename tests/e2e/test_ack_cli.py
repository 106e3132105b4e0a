"""``--ack DATE`` through the command line (issue 25 point 5): a daily cron job acknowledges a
real fall once, at training, and the run's predict stays quiet about it without the flag;
a date nobody acknowledged is still one ``warning:`` line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import TINY_D16, cli, csv_rows, scale_prices, write_rows

pytestmark = pytest.mark.slow


def warnings_of(res) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]


def test_train_records_ack_and_the_runs_predict_stays_quiet_about_that_date(fresh_home, tmp_path):
    body = scale_prices(scale_prices(csv_rows(320, seed=5), 100, 0.5), 250, 0.5)  # two 50% one-day falls
    path = write_rows(tmp_path / "aapl.csv", body=body)
    known, other = body[100][0], body[250][0]

    res = cli(["train", path, *TINY_D16, "--ack", known, "--json"], fresh_home)
    assert res.exit_code == 0, res.output
    [w] = warnings_of(res)
    assert other in w and known not in w and w.endswith(f"--ack {other}."), w
    run = json.loads(res.stdout)["run"]
    config = json.loads((Path(run) / "config.json").read_text(encoding="utf-8"))
    assert config["source"]["acknowledged"] == [known]

    res = cli(["predict", path, "--json"], fresh_home)  # the run is picked by the series; no --ack
    assert res.exit_code == 0, res.output
    [w] = warnings_of(res)
    assert other in w and known not in w, res.stderr
    assert w == f"warning: {path}: close moves by a factor of 1.4 or more in one day on {other} " \
                f"({float(body[249][4]):g} to {float(body[250][4]):g}, ratio 0.50): a likely unadjusted split or a bad " \
                f"print; use split-adjusted prices, or acknowledge a known date with --ack {other}.", w

    res = cli(["predict", path, "--ack", other, "--json"], fresh_home)
    assert res.exit_code == 0, res.output
    assert warnings_of(res) == [], res.stderr
