"""Acknowledged dates (``--ack DATE``, issue 25 point 5): a dated data warning names the
``--ack`` that silences it; an acknowledged date is left out, every other date still warned
about, and warnings without a date are unaffected."""

from __future__ import annotations

import json

import pytest

from helpers import cli, csv_rows, one_line_error, scale_prices, shift_dates, write_rows
from finhrm_cli import data
from finhrm_cli.config import FeatureConfig
from finhrm_cli.data.ack import parse_ack, parse_ack_env, unacknowledged
from finhrm_cli.errors import RunError, UsageError
from finhrm_cli.run.config import RunConfig

FALL = "close moves by a factor of 1.4"


def two_falls(tmp_path, name="falls.csv"):
    """csv_rows() with a 50% one-day fall on rows 60 and 110 (two unadjusted 2-for-1 splits)."""
    body = scale_prices(scale_prices(csv_rows(), 60, 0.5), 110, 0.5)
    return write_rows(tmp_path / name, body=body), body[60][0], body[110][0]


def falls(src) -> list[str]:
    return [w for w in src.warnings if FALL in w]


def test_a_fall_is_warned_with_the_ack_that_silences_it(tmp_path):
    path, d1, d2 = two_falls(tmp_path)
    _, src = data.read_bars(path)
    [w] = falls(src)
    assert d1 in w and d2 in w and "ratio 0.50" in w, w
    assert w.endswith(f"use split-adjusted prices, or acknowledge known dates with --ack {d1} --ack {d2}."), w
    assert src.acknowledged == []


def test_an_acknowledged_fall_is_not_warned_and_another_date_still_is(tmp_path):
    path, d1, d2 = two_falls(tmp_path)
    _, src = data.read_bars(path, ack=[d1])
    [w] = falls(src)
    assert d1 not in w and d2 in w and w.endswith(f"acknowledge a known date with --ack {d2}."), w
    assert src.acknowledged == [d1]
    _, src = data.read_bars(path, ack=[d1, d2])
    assert src.warnings == [] and src.acknowledged == sorted([d1, d2])


def test_a_date_that_is_not_warned_about_changes_nothing(tmp_path):
    path, d1, d2 = two_falls(tmp_path)
    _, plain = data.read_bars(path)
    _, other = data.read_bars(path, ack=["1999-01-04"])
    assert other.warnings == plain.warnings


def test_a_gap_is_acknowledged_by_either_of_its_dates(tmp_path):
    body = shift_dates(csv_rows(), 75, 3 * 365)
    path = write_rows(tmp_path / "gap.csv", body=body)
    _, src = data.read_bars(path)
    [w] = src.warnings
    assert w.endswith(f"acknowledge a known date with --ack {body[75][0]}."), w
    for day in (body[74][0], body[75][0]):
        assert data.read_bars(path, ack=[day])[1].warnings == []


def test_warnings_without_a_date_are_unaffected(tmp_path):
    body = [r[:5] for r in scale_prices(csv_rows(), 60, 0.5)]  # no volume column, and a fall
    path = write_rows(tmp_path / "novol.csv", header=["date", "open", "high", "low", "close"], body=body)
    _, src = data.read_bars(path, ack=[body[60][0]])
    assert src.warnings == ["no volume column: the volume input is set to 0."]


def test_a_prepared_folder_keeps_its_acknowledged_dates_and_takes_more(tmp_path):
    path, d1, d2 = two_falls(tmp_path)
    folder = tmp_path / "falls.prepared"
    data.save_prepared(data.prepare(path, FeatureConfig(), ack=[d1]), folder)
    ds = data.prepare(folder, FeatureConfig())
    [w] = falls(ds.source)
    assert d2 in w and d1 not in w and ds.source.acknowledged == [d1]
    ds = data.prepare(folder, FeatureConfig(), ack=[d2])
    assert falls(ds.source) == [] and ds.source.acknowledged == sorted([d1, d2])


def test_stored_warnings_stay_while_a_date_they_name_is_not_acknowledged():
    w = "close moves ... on 2000-09-29 (...): ...; use split-adjusted prices, or acknowledge a known date with --ack 2000-09-29."
    more = w.replace("(...):", "(...) and 2 more:")
    assert unacknowledged([w, more, "rows were newest-first"], ["2000-09-29"]) == [more, "rows were newest-first"]
    assert unacknowledged([w], ["2000-09-30"]) == [w]


@pytest.mark.parametrize("bad", ["2000-9-29", "29.09.2000", "2000-02-30", "yesterday", ""])
def test_a_malformed_date_is_one_error_naming_the_flag(bad):
    with pytest.raises(UsageError, match=r"^--ack .*expected a date as YYYY-MM-DD"):
        parse_ack([bad])


def test_dates_are_sorted_and_distinct_and_the_variable_splits_on_commas_and_spaces():
    assert parse_ack(["2014-06-09", "2000-09-29", "2014-06-09"]) == ["2000-09-29", "2014-06-09"]
    assert parse_ack_env(" 2014-06-09, 2000-09-29 2020-08-31") == ["2000-09-29", "2014-06-09", "2020-08-31"]
    assert parse_ack_env(None) == []
    with pytest.raises(UsageError, match="^FINHRM_ACK '2000-09'"):
        parse_ack_env("2000-09")


def test_a_run_without_acknowledged_dates_loads_and_a_damaged_list_is_one_line(tmp_path):
    cfg = {"model": {}, "source": {"name": "aapl"}, "series": [{"name": "aapl", "source": {"name": "aapl"}}]}
    assert RunConfig.from_dict(cfg, tmp_path / "config.json").acknowledged() == []
    cfg["series"][0]["source"]["acknowledged"] = ["2000-09-29"]
    assert RunConfig.from_dict(cfg, tmp_path / "config.json").acknowledged() == ["2000-09-29"]
    cfg["source"]["acknowledged"] = ["2000-13-01"]
    with pytest.raises(RunError, match=r"config\.json: source\.acknowledged must be a list of dates"):
        RunConfig.from_dict(cfg, tmp_path / "config.json")


def test_a_source_read_back_with_a_hand_edited_list_acknowledges_nothing():
    src = data.Source.from_dict({"path": "a.csv", "name": "a", "shape": "generic", "columns": {},
                                 "fingerprint": "", "n_rows": 1, "acknowledged": "2000-09-29"})
    assert src.acknowledged == []
    old = json.loads(json.dumps({"path": "a.csv", "name": "a", "shape": "generic", "columns": {},
                                 "fingerprint": "", "n_rows": 1}))  # a source stored before --ack
    assert data.Source.from_dict(old).acknowledged == []


@pytest.mark.parametrize("command", [["prepare", "{f}"], ["train", "{f}"], ["predict", "{f}"],
                                     ["evaluate", "--data", "{f}"], ["inspect", "--data", "{f}"]])
def test_every_command_that_reads_data_takes_ack_and_refuses_a_bad_one(tmp_path, command):
    path, d1, _ = two_falls(tmp_path)
    res = cli([a.format(f=path) for a in command] + ["--ack", d1, "--ack", "2000-02-30"], tmp_path / "home")
    line = one_line_error(res)
    assert "--ack '2000-02-30'" in line and "YYYY-MM-DD" in line, line
