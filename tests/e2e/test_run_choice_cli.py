"""Two tickers in one FINHRM_HOME, the way issue 24 found them: each command picks the run of
the data's own series, says which and why, and warns when told to use another ticker's run.
Also: what predict says it forecasts (target session, series, run, split and actuals) and how
stale the run is for the file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from helpers import TINY_D16, cli, one_line_error, write_csv


@pytest.fixture(scope="module")
def two_tickers(tmp_path_factory):
    """A home with a run on aapl.csv (weekdays) and, newer, one on btc.csv (every calendar
    day); the files, and the runs' names."""
    home = tmp_path_factory.mktemp("two_tickers")
    files = tmp_path_factory.mktemp("files")
    aapl = write_csv(files / "aapl.csv", n=320, seed=1)
    btc = write_csv(files / "btc.csv", n=320, seed=2, every_day=True)
    runs = {}
    for name, f in (("aapl", aapl), ("btc", btc)):
        res = cli(["train", f, *TINY_D16, "--json"], home)
        assert res.exit_code == 0, res.output
        runs[name] = json.loads(res.stdout)["name"]
    return home, {"aapl": aapl, "btc": btc}, runs


def model_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("model: ")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_predict_uses_the_run_of_the_files_own_series(two_tickers):
    home, files, runs = two_tickers
    res = cli(["predict", files["aapl"], "--json"], home)  # btc's run is newer: not used
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["run_name"] == runs["aapl"]
    assert model_line(res) == f"model: {runs['aapl']} (newest finished run trained on aapl, the same file)"
    assert "warning" not in res.stderr
    res = cli(["predict", files["btc"], "--json"], home)
    assert json.loads(res.stdout)["run_name"] == runs["btc"]


def test_evaluate_and_inspect_with_data_choose_the_same_way(two_tickers):
    home, files, runs = two_tickers
    for args in (["evaluate", "--data", files["aapl"], "--json"], ["inspect", "--data", files["aapl"], "--json"]):
        res = cli(args, home)
        assert res.exit_code == 0, (args, res.output)
        assert json.loads(res.stdout)["run_name"] == runs["aapl"], args
        assert "trained on aapl" in model_line(res)
    res = cli(["evaluate", "--json"], home)  # no data: the newest finished run
    assert json.loads(res.stdout)["run_name"] == runs["btc"]
    assert model_line(res) == f"model: {runs['btc']} (newest finished run)"


def test_naming_another_tickers_run_works_with_one_warning(two_tickers):
    home, files, runs = two_tickers
    res = cli(["predict", files["aapl"], "--model", runs["btc"], "--json"], home)
    assert res.exit_code == 0, res.output
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and f"{runs['btc']} was trained on btc, not on aapl" in warned[0]
    assert model_line(res) == f"model: {runs['btc']} (named with --model)"


def test_a_series_without_a_run_is_one_line_with_the_fix(two_tickers, tmp_path):
    home, _, _ = two_tickers
    msft = write_csv(tmp_path / "msft.csv", n=200, seed=5)
    line = one_line_error(cli(["predict", msft], home), "no finished run trained on msft",
                          f"finhrm train {msft}", "--model RUN")
    assert "aapl" not in line and "btc" not in line


def test_a_mistyped_file_is_a_file_problem_before_any_run(two_tickers, tmp_path):
    home, files, _ = two_tickers
    typo = files["aapl"].with_name("aapl.cvs")
    for args in (["predict", typo], ["evaluate", "--data", typo], ["inspect", "--data", typo]):
        one_line_error(cli(args, home), str(typo), "file not found", "aapl.csv", "check the path")
    # a home whose only run is unfinished: still the file, not "train --resume"
    lonely = tmp_path / "home"
    (lonely / "runs" / "aapl-20240101-000000").mkdir(parents=True)
    (lonely / "runs" / "aapl-20240101-000000" / "config.json").write_text('{"model": {}}')
    line = one_line_error(cli(["predict", typo], lonely), "file not found")
    assert "resume" not in line


def test_evaluate_and_inspect_take_the_run_as_model_too(two_tickers):
    home, _, runs = two_tickers
    for cmd in ("evaluate", "inspect"):
        by_opt = cli([cmd, "-m", runs["aapl"], "--json"], home)
        by_arg = cli([cmd, runs["aapl"], "--json"], home)
        assert by_opt.exit_code == by_arg.exit_code == 0, (by_opt.output, by_arg.output)
        assert json.loads(by_opt.stdout)["run_name"] == json.loads(by_arg.stdout)["run_name"] == runs["aapl"]
        assert model_line(by_opt) == f"model: {runs['aapl']} (named with --model)"
        one_line_error(cli([cmd, runs["aapl"], "--model", runs["btc"]], home), "give the run once")


def test_predict_says_how_stale_the_run_is_and_hints_a_refit(two_tickers):
    home, files, runs = two_tickers
    res = cli(["predict", files["aapl"], "--json"], home)
    st = json.loads(res.stdout)["staleness"]
    cfg = json.loads((home / "runs" / runs["aapl"] / "config.json").read_text())
    last = cfg["series"][0]["splits"]["train"]["last_date"]
    splits = cfg["series"][0]["splits"]
    after = splits["test"]["end"] - splits["train"]["end"]  # every usable row after the training split
    assert st == {"last_training_date": {"aapl": last}, "sessions_after_training": {"aapl": after},
                  "stale_after": 20, "refit": f"finhrm train {files['aapl']} --from {runs['aapl']}"}
    notes = res.stderr.splitlines()
    assert f"aapl: the file holds {after} sessions after the run's last training row ({last})" in notes
    hint = [ln for ln in notes if ln.startswith("hint:")]
    assert hint == [(f"hint: the run has not trained on the file's last {after} sessions; refit on every row "
                     f"with `finhrm train {files['aapl']} --from {runs['aapl']}`")]
    quiet = cli(["predict", files["aapl"], "--stale-after", str(after), "--json"], home)
    assert quiet.exit_code == 0 and "hint:" not in quiet.stderr and "the file holds" in quiet.stderr


def _cut(src: Path, dest: Path, rows: int) -> Path:
    """The first ``rows`` data rows of ``src`` as ``dest`` (the same series, fewer sessions)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(src.read_text().splitlines()[: rows + 1]) + "\n")
    return dest


def test_the_target_session_is_the_next_weekday_or_the_next_calendar_day(two_tickers, tmp_path):
    home, files, runs = two_tickers
    btc = _cut(files["btc"], tmp_path / "btc.csv", 318)  # every calendar day, ending on a Friday
    aapl = _cut(files["aapl"], tmp_path / "aapl.csv", 303)  # weekdays, ending on a Friday
    out = {}
    for name, f in (("btc", btc), ("aapl", aapl)):
        res = cli(["predict", f, "--json"], home)
        assert res.exit_code == 0, res.output
        out[name] = json.loads(res.stdout)
    b, a = out["btc"]["rows"][0], out["aapl"]["rows"][0]
    assert (b["date"], b["target_date"]) == ("2020-11-13", "2020-11-14")  # Friday, then Saturday
    assert (a["date"], a["target_date"]) == ("2021-02-26", "2021-03-01")  # Friday, then Monday
    assert out["btc"]["trading_days"] == {"btc": "every day"} and out["aapl"]["trading_days"] == {"aapl": "Mon-Fri"}
    assert (b["ticker"], b["run"], a["ticker"], a["run"]) == ("btc", runs["btc"], "aapl", runs["aapl"])


def test_predict_all_is_a_backtest_export_with_split_and_actuals(two_tickers, tmp_path):
    home, files, runs = two_tickers
    out = tmp_path / "bt.csv"
    res = cli(["predict", files["aapl"], "--all", "-f", "csv", "-o", out], home)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0])[-4:] == ["split", "actual_high", "actual_low", "run"]
    cfg = json.loads((home / "runs" / runs["aapl"] / "config.json").read_text())
    sp = cfg["series"][0]["splits"]
    for r in rows:  # the split is the one whose rows hold the target session
        want = ("train" if r["target_date"] <= sp["train"]["last_date"] else
                "validation" if r["target_date"] <= sp["val"]["last_date"] else
                "test" if r["target_date"] <= sp["test"]["last_date"] else "after_run")
        assert r["split"] == want, r
    assert [r["split"] for r in rows][-1] == "after_run" and {r["split"] for r in rows} >= {"train", "validation", "test"}
    # the actuals are the target session's own high and low, the file's next row, beside the forecast
    bars = {r["date"]: r for r in csv.DictReader(io.StringIO(files["aapl"].read_text()))}
    for r in rows[:-1]:
        assert r["target_date"] in bars and r["target_date"] > r["date"]
        assert float(r["actual_high"]) == pytest.approx(float(bars[r["target_date"]]["high"]))
        assert float(r["actual_low"]) == pytest.approx(float(bars[r["target_date"]]["low"]))
    assert rows[-1]["actual_high"] == rows[-1]["actual_low"] == ""  # the next session is not known yet
    # the forecast of a row does not change when the rows after it (its actuals among them) change
    short = _cut(files["aapl"], tmp_path / "cut" / "aapl.csv", 300)
    cut = json.loads(cli(["predict", short, "--all", "--intervals", "split", "--json"], home).stdout)["rows"]
    full = json.loads(cli(["predict", files["aapl"], "--all", "--intervals", "split", "--json"], home).stdout)["rows"]
    assert cut[-1]["date"] == full[len(cut) - 1]["date"]
    assert cut[-1]["pred_high"] == pytest.approx(full[len(cut) - 1]["pred_high"], rel=1e-6)


def test_the_table_names_the_session_the_series_and_the_run_at_80_columns(two_tickers, tmp_path):
    home, files, runs = two_tickers
    from finhrm_cli.ui import console

    assert console.out.width == 80  # no terminal: rich's 80 columns
    res = cli(["predict", files["aapl"]], home)
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].startswith("Forecast for ") and "(aapl, the session after " in res.stdout
    assert f"run {runs['aapl']}" in res.stdout
    allr = cli(["predict", files["aapl"], "--all"], home)
    head = [ln for ln in allr.stdout.splitlines() if "split" in ln and "for" in ln]
    assert head and "actual high" in allr.stdout and "after_run" in allr.stdout and "…" not in allr.stdout


def test_no_staleness_for_a_series_the_run_was_not_trained_on(two_tickers):
    home, files, runs = two_tickers
    res = cli(["predict", files["aapl"], "-m", runs["btc"], "--json"], home)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["staleness"]["sessions_after_training"] == {"aapl": None}
    assert "the file holds" not in res.stderr and "hint:" not in res.stderr
