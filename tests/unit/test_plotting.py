"""``evaluate --plot``'s picture: the last sessions by default, folds joined, the MAE shown."""

from __future__ import annotations

import numpy as np
import pytest

from finhrm_cli.service.plotting import LAST, PlotSeries, plot_png, shown_mae


def _series(n: int, start: str = "2024-01-01", offset: float = 0.0) -> PlotSeries:
    dates = np.arange(np.datetime64(start), np.datetime64(start) + n)
    close = 100 + offset + np.arange(n, dtype=float)
    return PlotSeries(dates, close + 1, close - 1, close + 2, close - 2, close + 2.5, close - 1.5)


def test_tail_keeps_the_last_sessions_and_the_folds_inside_them():
    ps = PlotSeries.join([_series(200), _series(100, "2024-07-19")])
    assert len(ps.dates) == 300 and ps.fold_starts == [np.datetime64("2024-07-19")]
    shown = ps.tail(LAST)
    assert len(shown.dates) == LAST and shown.dates[-1] == ps.dates[-1]
    assert shown.fold_starts == ps.fold_starts  # the second fold starts 100 sessions before the end
    assert len(ps.tail(0).dates) == 300 and ps.tail(50).fold_starts == []


def test_shown_mae_is_the_mean_of_high_and_low_and_its_skill():
    mae, skill = shown_mae(_series(10))
    assert mae == pytest.approx(0.5) and skill == pytest.approx(0.5 / 1.0)


def test_plot_png_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_png(tmp_path / "p.png", _series(300), "AAPL", "aapl-20240101-120000", 0.8)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
