"""Which run a command uses (finhrm_cli.run.choose): the newest finished run trained on the
data's series, never silently another ticker's; a run named explicitly, with a warning when it
was trained on other series."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from finhrm_cli.errors import FinhrmWarning, RunError
from finhrm_cli.run.choose import SeriesKey, choose_run, covers, data_series, run_series


def fake_run(root: Path, name: str, series, created: str, finished: bool = True) -> Path:
    """A run folder with just what choosing reads: config.json (series, created) and, when
    finished, metrics.json."""
    p = root / name
    p.mkdir(parents=True)
    cfg = {"model": {}, "created": created,
           "source": {"name": series[0][0], "fingerprint": series[0][1]},
           "series": [{"name": n, "source": {"name": n, "fingerprint": fp}} for n, fp in series]}
    (p / "config.json").write_text(json.dumps(cfg))
    if finished:
        (p / "metrics.json").write_text("{}")
    return p


@pytest.fixture
def home(tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "aapl-1", [("aapl", "a1")], "2024-01-01T10:00:00+00:00")
    fake_run(root, "aapl-2", [("aapl", "a2")], "2024-02-01T10:00:00+00:00")
    fake_run(root, "jfc-1", [("jfc", "j1")], "2024-03-01T10:00:00+00:00")   # the newest run: another ticker
    fake_run(root, "aapl-3", [("aapl", "a3")], "2024-04-01T10:00:00+00:00", finished=False)
    fake_run(root, "watch-1", [("AAA", "x"), ("BBB", "y")], "2023-01-01T10:00:00+00:00")
    return root


def test_the_newest_finished_run_of_the_same_series_is_chosen(home):
    c = choose_run(None, [SeriesKey("aapl", "zz")], root=home)
    assert c.name == "aapl-2"  # not jfc-1 (newer, another ticker), not aapl-3 (unfinished)
    assert c.reason == "newest finished run trained on aapl"  # the stderr line: ui.forecasts.run_notes
    assert choose_run(None, [SeriesKey("JFC")], root=home).name == "jfc-1"  # case is ignored
    assert choose_run(None, root=home).name == "jfc-1"  # no data: the newest finished run


def test_the_fingerprint_checks_the_match_and_finds_a_renamed_copy(home):
    assert choose_run(None, [SeriesKey("aapl", "a2")], root=home).reason == \
        "newest finished run trained on aapl, the same file"
    c = choose_run(None, [SeriesKey("my_copy", "a1")], root=home)
    assert c.name == "aapl-1" and c.reason == "newest finished run trained on this very file, as aapl"


def test_no_run_of_the_series_is_one_error_with_the_fix(home):
    with pytest.raises(RunError) as e:
        choose_run(None, [SeriesKey("msft", "m")], root=home, fix="finhrm train msft.csv")
    msg = str(e.value)
    assert "no finished run trained on msft" in msg and "finhrm train msft.csv" in msg and "--model RUN" in msg
    assert "jfc" not in msg and "aapl" not in msg  # never a hint to use another ticker's run
    with pytest.raises(RunError, match="no runs yet under .*finhrm train x.csv"):
        choose_run(None, [SeriesKey("msft")], root=home / "empty", fix="finhrm train x.csv")


def test_only_an_unfinished_run_of_the_series_says_how_to_finish_it(tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "gold-1", [("gold", "g")], "2024-01-01T10:00:00+00:00", finished=False)
    fake_run(root, "aapl-1", [("aapl", "a")], "2024-01-01T10:00:00+00:00")
    with pytest.raises(RunError, match=r"gold-1, is unfinished\); finish it with `finhrm train --resume gold-1`"):
        choose_run(None, [SeriesKey("gold")], root=root)


def test_a_watch_list_needs_a_run_of_every_ticker(home):
    c = choose_run(None, [SeriesKey("AAA"), SeriesKey("BBB")], root=home)
    assert c.name == "watch-1" and c.reason == "newest finished run trained on AAA, BBB"
    assert choose_run(None, [SeriesKey("BBB")], root=home).name == "watch-1"  # one ticker of the list
    with pytest.raises(RunError, match="no finished run trained on AAA, aapl"):
        choose_run(None, [SeriesKey("AAA"), SeriesKey("aapl")], root=home)


def test_a_run_named_explicitly_is_used_and_warns_about_another_series(home):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        c = choose_run("jfc-1", [SeriesKey("aapl", "a2")], root=home)
        same = choose_run("aapl-1", [SeriesKey("aapl", "a2")], root=home)
    assert c.name == "jfc-1" and c.reason == "named with --model" and same.name == "aapl-1"
    msgs = [str(w.message) for w in seen if issubclass(w.category, FinhrmWarning)]
    assert len(msgs) == 1 and msgs[0].startswith("jfc-1 was trained on jfc, not on aapl")


def test_series_of_runs_and_files(tmp_path, home):
    assert run_series(home / "watch-1") == [SeriesKey("AAA", "x"), SeriesKey("BBB", "y")]
    assert covers([SeriesKey("aapl", "f")], [SeriesKey("AAPL")])
    assert not covers([SeriesKey("aapl", "f")], [SeriesKey("goog", None)])
    f = tmp_path / "GOOG.csv.gz"
    f.write_bytes(b"abc")
    (key,) = data_series([f])
    assert key.name == "GOOG" and len(key.fingerprint) == 64


def test_a_renamed_copy_of_a_training_file_keeps_its_series_dates():
    """Chosen by fingerprint (a renamed copy), a file gets the dates of the series it is a
    copy of: its cutoff, splits and staleness, not the first series' or none."""
    from types import SimpleNamespace

    import numpy as np

    from finhrm_cli.run.config import RunConfig
    from finhrm_cli.service.prediction import _sessions_after

    def series(name, fp, train_last, val_last):
        return {"name": name, "source": {"fingerprint": fp},
                "splits": {"train": {"last_date": train_last}, "val": {"last_date": val_last}}}

    rc = RunConfig(series=[series("aapl", "a" * 64, "2020-01-31", "2020-06-30"),
                           series("msft", "b" * 64, "2021-01-29", "2021-06-30")])
    copy = SimpleNamespace(name="msft_copy", fingerprint="b" * 64)
    other = SimpleNamespace(name="tsla", fingerprint="c" * 64)
    assert rc.trained_name(copy) == "msft" and rc.trained_name(other) is None
    assert rc.trained_name(SimpleNamespace(name="AAPL", fingerprint=None)) == "aapl"
    assert rc.cutoff(copy) == np.datetime64("2021-06-30")
    assert rc.series_splits(copy)["train"]["last_date"] == "2021-01-29"
    dates = np.array(["2021-01-28", "2021-02-01", "2021-02-02"], dtype="datetime64[D]")
    assert _sessions_after(rc, copy, dates) == ("2021-01-29", 2)
    assert _sessions_after(rc, other, dates) == (None, None)
