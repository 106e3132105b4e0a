"""Which session a forecast is for (finhrm_cli.forecast.sessions): the next weekday for daily
equity data, the next calendar day for a 7-day market, read from the file; and which of a
run's splits a forecast's target session falls in."""

from __future__ import annotations

import numpy as np

from finhrm_cli.forecast import sessions


def days(start: str, n: int, every_day: bool = False) -> np.ndarray:
    d0 = np.datetime64(start, "D")
    return d0 + np.arange(n) if every_day else np.busday_offset(d0, np.arange(n), roll="forward")


def test_a_weekday_file_forecasts_the_next_weekday():
    d = days("2024-01-01", 200)
    assert sessions.trading_days(d) == (0, 1, 2, 3, 4) and sessions.describe((0, 1, 2, 3, 4)) == "Mon-Fri"
    fri = np.datetime64("2024-03-01")  # a Friday
    assert sessions.next_session(fri, (0, 1, 2, 3, 4)) == np.datetime64("2024-03-04")  # Monday
    assert sessions.next_session(fri, (0, 1, 2, 3, 4), 2) == np.datetime64("2024-03-05")
    assert sessions.next_session(np.datetime64("2024-02-29"), (0, 1, 2, 3, 4)) == fri


def test_a_seven_day_file_forecasts_the_next_calendar_day():
    d = days("2024-01-01", 200, every_day=True)
    week = sessions.trading_days(d)
    assert week == tuple(range(7)) and sessions.describe(week) == "every day"
    assert sessions.next_session(np.datetime64("2024-03-01"), week) == np.datetime64("2024-03-02")  # Saturday


def test_a_stray_weekend_session_does_not_make_a_seven_day_market():
    d = np.sort(np.append(days("2024-01-01", 119), np.datetime64("2024-03-02")))  # one Saturday session
    assert sessions.trading_days(d) == (0, 1, 2, 3, 4)
    # a market open Sunday to Thursday keeps its own week
    sun_thu = np.array([x for x in days("2024-01-01", 200, every_day=True) if sessions.weekday(x) not in (4, 5)])
    assert sessions.describe(sessions.trading_days(sun_thu)) == "Mon Tue Wed Thu Sun"


def test_target_dates_use_the_files_own_next_row_then_count_on():
    d = np.array(["2024-03-07", "2024-03-08", "2024-03-12"], "datetime64[D]")  # a holiday on Monday the 11th
    t = sessions.target_dates(d, np.array([0, 1, 2]), 1, (0, 1, 2, 3, 4))
    assert list(t.astype(str)) == ["2024-03-08", "2024-03-12", "2024-03-13"]
    t2 = sessions.target_dates(d, np.array([1, 2]), 2, (0, 1, 2, 3, 4))
    assert list(t2.astype(str)) == ["2024-03-13", "2024-03-14"]


def test_split_of_a_target_session():
    splits = {"train": {"last_date": "2024-01-10"}, "val": {"first_date": "2024-01-15", "last_date": "2024-01-20"},
              "test": {"last_date": "2024-01-31"}}
    t = np.array(["2024-01-10", "2024-01-11", "2024-01-20", "2024-01-21", "2024-01-31", "2024-02-01"], "datetime64[D]")
    assert sessions.split_of(t, splits) == ["train", "validation", "validation", "test", "test", "after_run"]
    assert sessions.split_of(t[:1], {}) == ["after_run"]
