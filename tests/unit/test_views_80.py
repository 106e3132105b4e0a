"""Every table at 80 columns (issue 25): numbers are never cut, long names fold whole.

Each view is drawn into a recording rich Console 80 columns wide from a result dict like the
services return, with prices the size of Bitcoin's (five-digit MAEs) and names as long as
real run names; every number the dict holds must appear whole, and no cell ends in "…".
"""

from __future__ import annotations


from finhrm_cli.ui import forecasts, views
from finhrm_cli.ui.console import fmt_num, fmt_p, fmt_pct

RUN = "aapl_bokeh-20240101-120000"


def _metrics(mae: float, skill: float, p: float | None = None, cov: bool = False) -> dict:
    m = {"n": 384, "mae_high": mae * 1.01, "mae_low": mae * 0.99, "mae": mae, "rmse_high": mae * 1.3,
         "rmse_low": mae * 1.2, "mape_high": 0.0123, "mape_low": 0.0117, "r2_high": -0.052, "r2_low": 0.013,
         "direction_high": 0.613, "direction_low": 0.587, "range_valid": 1.0, "skill": skill}
    if cov:
        m.update(coverage_high=0.802, coverage_low=0.815)
    if p is not None:
        m.update(dm_stat=-3.2, dm_p=p)
    return m


def _results(mae: float) -> dict:
    return {"finhrm": _metrics(mae, 0.731, cov=True), "hrm_alone": _metrics(mae * 1.002, 0.733, 0.448),
            "persistence": _metrics(mae / 0.731, 1.0, 0.0004), "recent_range": _metrics(mae * 1.04, 0.76, 0.0123)}


def _text(screen) -> str:
    text = screen.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    return text


def _first_column(text: str, last_header: str) -> list[str]:
    """The names in a table's first column, a folded name joined again (its continuation
    lines hold nothing else)."""
    names: list[str] = []
    for line in text.split(last_header, 1)[1].splitlines()[1:]:
        tokens = line.split()
        if len(tokens) > 1:
            names.append(tokens[0])
        elif tokens:
            names[-1] += tokens[0]
    return names


def _has_all_numbers(text: str, results: dict) -> None:
    for m in results.values():
        for key, v in m.items():
            if key.startswith(("mae", "rmse")):
                assert fmt_num(v) in text, (key, fmt_num(v))
            elif key.startswith(("mape", "direction", "coverage")):
                assert fmt_pct(v) in text, (key, v)
            elif key == "dm_p":
                assert fmt_p(v) in text


def test_evaluate_of_several_tickers_keeps_every_number(screen):
    series = {name: {"rows": 1_234, "results": _results(mae)} for name, mae in
              (("btcusd_coinbase_daily", 12_345.6789), ("psei_manila_ac", 4.5678), ("aapl", 2.3456))}
    views.render_evaluate({"evaluated": "test split", "rows": 3_702, "first_date": "2016-04-01",
                           "last_date": "2025-02-27", "results": _results(3_456.789), "series": series})
    text = _text(screen)
    _has_all_numbers(text, {k: {m: v for m, v in r.items() if not m.startswith(("mae", "rmse"))}
                            for k, r in series["aapl"]["results"].items()})
    for sc in series.values():
        r = sc["results"]
        for v in (r["finhrm"]["mae"], r["persistence"]["mae"], r["recent_range"]["mae"]):
            assert fmt_num(v) in text
    assert "3,456.7890" not in text  # a price-unit MAE pooled over BTC and AAPL is not shown (issue 25)
    assert _first_column(text.split("\nper ticker")[1], "coverage") == list(series)  # long tickers fold onto more lines, never cut


def test_walk_forward_folds_keep_their_dates_and_numbers(screen):
    folds = [{"fold": i, "train_rows": 1_000 * i, "first_date": f"201{5 + i}-04-01", "last_date": f"201{6 + i}-03-31",
              "results": _results(mae)} for i, mae in ((1, 18.1234), (2, 210.5678), (3, 12_345.6789))]
    views.render_evaluate({"walk_forward": 3, "folds": folds, "mean": _results(1_000.0)})
    text = _text(screen)
    for f in folds:
        assert f["first_date"] in text and f["last_date"] in text
        assert fmt_num(f["results"]["finhrm"]["mae"]) in text and fmt_num(f["results"]["persistence"]["mae"]) in text


def test_run_list_shows_whole_run_names(screen):
    runs = [{"name": f"{RUN[:-1]}{i}", "status": s, "data": "/home/me/data/aapl_bokeh.csv",
             "created": "2024-01-01T12:00:00+01:00", "size": 3_900_000, "best_val_mae": 12_345.6789}
            for i, s in enumerate(("finished", "training", "unfinished"))]
    views.render_list({"root": "/home/me/.local/share/finhrm/runs", "runs": runs})
    text = _text(screen)
    for r in runs:
        assert r["name"] in text  # on one line, as --model takes it
    assert "12,345.6789" in text


def test_predict_keeps_the_intervals_at_80_columns(screen):
    row = {"date": "2025-02-27", "close": 96_123.45, "pred_high": 97_001.23, "pred_low": 95_010.98,
           "pred_high_lo": 96_500.01, "pred_high_hi": 98_700.99, "pred_low_lo": 93_900.5, "pred_low_hi": 95_800.75}
    rows = [{"ticker": name, "target_date": "2025-02-28", **row} for name in ("btcusd_coinbase_daily", "aapl", "psei_manila_ac")]
    forecasts.render_predict({"rows": rows, "coverage": 0.8, "run": RUN}, "table")
    text = _text(screen)
    for k in ("close", "pred_high", "pred_low", "pred_high_lo", "pred_high_hi", "pred_low_lo", "pred_low_hi"):
        assert fmt_num(row[k], 2) in text, k
    assert "left out" not in text


def _with_intervals(m: dict) -> dict:
    return {**m, "winkler": 4_321.98, "winkler_high": 4_300.0, "winkler_low": 4_343.96, "pinball": 123.456,
            "pinball_high": 120.0, "pinball_low": 126.912, "joint_coverage": 0.703,
            "coverage_by_volatility": [{"third": 1, "rows": 1_234, "coverage": 0.761},
                                       {"third": 2, "rows": 1_111, "coverage": 0.802},
                                       {"third": 3, "rows": 1_357, "coverage": 0.884}]}


def test_evaluate_shows_the_interval_quality_at_80_columns(screen):
    results = _results(12_345.6)
    results["finhrm"] = _with_intervals(results["finhrm"])
    views.render_evaluate({"evaluated": "test split of BTCUSD", "rows": 3_702, "first_date": "2016-04-01",
                           "last_date": "2024-12-31", "intervals": "adaptive", "results": results})
    text = screen.export_text()
    assert "Intervals" in text and "…" not in text
    for s in ("4,321.98", "123.456", "76.1%", "80.2%", "88.4%", "70.3%", "1,234 rows", "1,111 rows", "1,357 rows"):
        assert s in text, s
    assert max(len(line) for line in text.splitlines()) <= 80
