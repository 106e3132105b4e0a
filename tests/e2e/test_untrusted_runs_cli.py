"""Run folders are untrusted input (the read side).

A crafted or damaged config.json, history.jsonl or model.safetensors ends in one line on stderr
and exit 2 (or a warning), never "internal error" or a hang.  Each test tampers with its own
copy of the session's trained run (conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from helpers import SAMPLE_TV as SAMPLE
from helpers import cli, one_line_error


@pytest.fixture
def run(trained_run, tmp_path):
    """A private copy of the session's trained run to tamper with."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst


def edit_config(run: Path, fn) -> None:
    p = run / "config.json"
    cfg = json.loads(p.read_text())
    fn(cfg)
    p.write_text(json.dumps(cfg))


def commands(run: Path):
    return [["predict", SAMPLE, "--model", run], ["evaluate", run], ["inspect", run]]


# ------------------------------------------------------------------ config.json


CRAFTED = [
    ("halt_max_steps", lambda c: c["model"].update(halt_max_steps=10**6), "model.halt_max_steps"),
    ("h_cycles", lambda c: c["model"].update(h_cycles=10**7), "model.h_cycles"),
    ("h_layers", lambda c: c["model"].update(h_layers=10**6), "model.h_layers"),
    # each within its bound, together 8,704 block passes per forecast (minutes to compile, GBs)
    ("passes", lambda c: c["model"].update(halt_max_steps=32, h_cycles=16, l_cycles=16), "block passes"),
    ("d_model_2_31", lambda c: c["model"].update(d_model=2**31), "model.d_model"),
    ("d_model_text", lambda c: c["model"].update(d_model="32"), "model.d_model"),
    ("no_features", lambda c: c.pop("features"), "'features'"),
    ("no_normalizer", lambda c: c.pop("normalizer"), "'normalizer'"),
    ("no_feature_names", lambda c: c.pop("feature_names"), "'feature_names'"),
    ("no_train", lambda c: c.pop("train"), "'train'"),
    ("feature_names_short", lambda c: c["feature_names"].pop(), "feature_names"),
    ("feature_names_text", lambda c: c.update(feature_names="close"), "feature_names"),
    ("normalizer_nan", lambda c: c["normalizer"]["std"].__setitem__(0, "NaN"), "normalizer.std"),
    ("normalizer_list", lambda c: c.update(normalizer=[1, 2]), "normalizer"),
    ("normalizer_huge_int", lambda c: c["normalizer"]["std"].__setitem__(0, 10**400), "normalizer.std"),
    ("conformal_text", lambda c: c.update(conformal="wide"), "conformal"),
    ("conformal_values", lambda c: c["conformal"].update(high=["a"]), "conformal.high"),
    # the residuals per volatility third of a run made since issue 27
    ("by_volatility_text", lambda c: c["conformal"].update(by_volatility="calm"), "conformal.by_volatility"),
    ("by_volatility_beta", lambda c: c["conformal"]["by_volatility"].update(beta=3), "conformal.by_volatility.beta"),
    ("by_volatility_edges", lambda c: c["conformal"]["by_volatility"].update(edges={"x": [1]}),
     "conformal.by_volatility.edges"),
    ("by_volatility_lists", lambda c: c["conformal"]["by_volatility"].update(high=[[0.1], [0.2]]),
     "conformal.by_volatility.high"),
    ("by_volatility_gamma", lambda c: c["conformal"]["by_volatility"].update(gamma=-1),
     "conformal.by_volatility.gamma"),
    ("by_volatility_decay", lambda c: c["conformal"]["by_volatility"].update(decay=0),
     "conformal.by_volatility.decay"),
    ("by_volatility_gamma_min", lambda c: c["conformal"]["by_volatility"].update(gamma_min=0.5),
     "conformal.by_volatility.gamma_min"),
    # the residual heads: two finite, bounded coefficient lists per target, one per feature plus the intercept
    ("heads_text", lambda c: c["conformal"]["by_volatility"].update(heads="wide"), "conformal.by_volatility.heads"),
    ("heads_short", lambda c: c["conformal"]["by_volatility"]["heads"]["high"][0].pop(),
     "conformal.by_volatility.heads"),
    ("heads_huge", lambda c: c["conformal"]["by_volatility"]["heads"]["low"][1].__setitem__(0, 1e300),
     "conformal.by_volatility.heads"),
    ("heads_one_list", lambda c: c["conformal"]["by_volatility"]["heads"].update(high=[[0.0]]),
     "conformal.by_volatility.heads"),
    ("heads_forecast_deviation", lambda c: c["conformal"]["by_volatility"]["heads"]["forecast"].update(low=[0.0, -1]),
     "conformal.by_volatility.heads.forecast"),
    ("heads_forecast_tiny_deviation",
     lambda c: c["conformal"]["by_volatility"]["heads"]["forecast"].update(high=[0.0, 1e-300]),
     "conformal.by_volatility.heads.forecast"),
    ("heads_forecast_dropped", lambda c: c["conformal"]["by_volatility"]["heads"].pop("forecast"),
     "conformal.by_volatility.heads"),
    ("series_text", lambda c: c.update(series="AAA"), "series"),
    ("series_no_name", lambda c: c.update(series=[{"nom": "AAA"}]), "series[0].name"),
    ("seq_len_mismatch", lambda c: c["features"].update(seq_len=20), "seq_len"),
    ("splits_bad_date", lambda c: c["splits"]["val"].update(last_date="soon"), "splits.val.last_date"),
    ("features_list", lambda c: c.update(features=[1]), "features"),
    ("seed_negative", lambda c: c["train"].update(seed=-5), "train.seed"),
    # the Q head's calibration map: a > 0 keeps every halting decision, finite and bounded
    ("halt_cal_text", lambda c: c.update(halt_calibration="steep"), "halt_calibration"),
    ("halt_cal_a_nan", lambda c: c["halt_calibration"].update(a=float("nan")), "halt_calibration.a"),
    ("halt_cal_a_negative", lambda c: c["halt_calibration"].update(a=-1.0), "halt_calibration.a"),
    ("halt_cal_a_zero", lambda c: c["halt_calibration"].update(a=0), "halt_calibration.a"),
    ("halt_cal_a_huge_int", lambda c: c["halt_calibration"].update(a=10**400), "halt_calibration.a"),
    ("halt_cal_b_text", lambda c: c["halt_calibration"].update(b="0.1"), "halt_calibration.b"),
    ("halt_cal_b_inf", lambda c: c["halt_calibration"].update(b=float("inf")), "halt_calibration.b"),
    ("halt_cal_b_far", lambda c: c["halt_calibration"].update(b=1e6), "halt_calibration.b"),
    ("halt_cal_no_a", lambda c: c["halt_calibration"].pop("a"), "halt_calibration.a"),
    ("halt_cal_rows", lambda c: c["halt_calibration"].update(rows=-3), "halt_calibration.rows"),
    # a production run's lineage: what a refresh computes with
    ("parent_text", lambda c: c.update(parent="me"), "parent"),
    ("parent_weight", lambda c: c.update(parent={"hrm_weight": 7}), "parent.hrm_weight"),
    ("parent_epochs", lambda c: c.update(parent={"epochs_chosen": "all"}), "parent.epochs_chosen"),
    ("parent_start_date", lambda c: c.update(parent={"hrm_trains_from": {"sample": "soon"}}), "parent.hrm_trains_from"),
]


@pytest.mark.parametrize("edit,key", [(e, k) for _, e, k in CRAFTED], ids=[n for n, _, _ in CRAFTED])
def test_crafted_config_is_one_line_naming_file_and_key(fresh_home, run, edit, key):
    edit_config(run, edit)
    for args in commands(run):
        one_line_error(cli(args, fresh_home), "config.json", key)
    one_line_error(cli(["train", "--resume", run], fresh_home), "config.json", key)


def test_config_that_is_not_an_object(fresh_home, run):
    (run / "config.json").write_text("[1, 2]")
    one_line_error(cli(["inspect", run], fresh_home), "config.json")
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(cli(["inspect", run], fresh_home), "config.json")
    (run / "config.json").write_text('{"model": {"d_model": ' + "9" * 5000 + "}}")
    one_line_error(cli(["inspect", run], fresh_home), "config.json")


def test_huge_value_gives_a_short_line(fresh_home, run):
    edit_config(run, lambda c: c["model"].update(d_model="x" * 1_000_000))
    assert len(one_line_error(cli(["inspect", run], fresh_home), "model.d_model")) < 400


def test_halt_calibration_map_never_moves_a_halting_decision(fresh_home, run):
    """Without the key (a run made before it) inspect reports the raw head; with any map
    within the bounds, the probabilities change and where rows halt does not (inspect,
    evaluate --act, predict --act)."""
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["halt_calibration"]["a"] > 0
    outs = []
    for hc in (None, {"a": 0.001, "b": 5.0, "rows": 1}, {"a": 100.0, "b": -100.0}):
        edit_config(run, lambda c: c.update(halt_calibration=hc) if hc else c.pop("halt_calibration", None))
        res = [cli(args, fresh_home) for args in (["inspect", run, "--json"], ["evaluate", run, "--act", "--json"],
                                            ["predict", SAMPLE, "--model", run, "--all", "--act", "--json"])]
        assert all(r.exit_code == 0 for r in res), [r.output for r in res]
        outs.append([json.loads(r.stdout) for r in res])
    (plain, ev, pr), *mapped = outs
    assert plain["act"]["halt_calibration"] is None
    assert plain["act"]["calibration"]["brier"] == plain["act"]["uncalibrated"]["brier"]
    for ins, ev2, pr2 in mapped:
        a = ins["act"]
        assert a["calibration"]["mean_p_halt"] != plain["act"]["calibration"]["mean_p_halt"]
        assert a["uncalibrated"] == plain["act"]["uncalibrated"]
        for key in ("halting_histogram", "mean_halting_step", "mae_act", "compute_saved"):
            assert a[key] == plain["act"][key], key
        assert ev2["results"] == ev["results"] and ev2["act_segments"] == ev["act_segments"]
        assert pr2["rows"] == pr["rows"] and pr2["act_segments"] == pr["act_segments"]


def test_unknown_keys_and_missing_optional_ones_still_load(fresh_home, run):
    edit_config(run, lambda c: (c.update(future_key={"x": 1}), c.pop("versions"), c.pop("source")))
    assert cli(["evaluate", run, "--json"], fresh_home).exit_code == 0


def test_a_run_made_before_issue_27_keeps_its_intervals(fresh_home, run):
    """A run whose residuals have no per-third part (made before issue 27) keeps one adaptive
    level: its intervals differ from the new runs' on the same rows, and its quantiles order."""
    new = json.loads(cli(["evaluate", run, "--json"], fresh_home).stdout)
    edit_config(run, lambda c: c["conformal"].pop("by_volatility"))
    old = json.loads(cli(["evaluate", run, "--json"], fresh_home).stdout)
    assert new["intervals_per_third"] is True and old["intervals_per_third"] is False
    assert old["results"]["finhrm"]["mae"] == new["results"]["finhrm"]["mae"]
    assert old["results"]["finhrm"]["winkler"] != new["results"]["finhrm"]["winkler"]
    res = cli(["predict", SAMPLE, "--model", run, "--json", "--quantiles", "0.1,0.5,0.9"], fresh_home)
    r = json.loads(res.stdout)["rows"][0]
    assert r["pred_low_q0.1"] <= r["pred_low_q0.5"] <= r["pred_low_q0.9"] <= r["pred_high_q0.9"]


# ------------------------------------------------------------------ names never leave the run


def _as_series_run(run: Path) -> None:
    """Turn the one-series run into the multi-series layout: data/<name>/ per series."""
    data = run / "data"
    tmp = run / "AAA"
    data.rename(tmp)
    data.mkdir()
    tmp.rename(data / "AAA")
    edit_config(run, lambda c: c.update(series=[{**c["series"][0], "name": "AAA"}]))


def test_series_layout_evaluates(fresh_home, run):
    _as_series_run(run)
    res = cli(["evaluate", run, "--json"], fresh_home)
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("name", ["/elsewhere", "../..", "..", ".", "a/b", "a\\b", "", ".hidden", "x\x00y", 7])
def test_series_name_never_becomes_a_path(fresh_home, run, tmp_path, name):
    _as_series_run(run)
    # a foreign dataset where the crafted name would lead
    shutil.copytree(run / "data" / "AAA", tmp_path / "elsewhere")
    edit_config(run, lambda c: c["series"][0].update(name=name))
    for args in commands(run)[1:]:
        one_line_error(cli(args, fresh_home), "config.json", "series[0].name")


def test_series_folder_symlinked_outside_is_refused(fresh_home, run, tmp_path):
    _as_series_run(run)
    shutil.move(run / "data" / "AAA", tmp_path / "foreign")
    (run / "data" / "AAA").symlink_to(tmp_path / "foreign", target_is_directory=True)
    for args in commands(run)[1:]:
        one_line_error(cli(args, fresh_home), "outside")


# ------------------------------------------------------------------ history.jsonl


def test_damaged_history_lines_are_skipped_with_a_warning(fresh_home, run):
    good = [ln for ln in (run / "history.jsonl").read_text().splitlines() if ln.strip()]
    junk = ["[1,2]", "garbage{", "42", '"text"', "null", '{"epoch": "one", "train_loss": "abc", "val_mae": [1]}']
    (run / "history.jsonl").write_text("\n".join(junk[:3] + good + junk[3:]) + "\n")
    res = cli(["inspect", run], fresh_home)
    assert res.exit_code == 0, res.output
    assert "warning" in res.output and "history.jsonl" in res.output and "5 line" in res.output
    as_json = json.loads(cli(["inspect", run, "--json"], fresh_home).stdout)
    assert len(as_json["history"]) == len(good) + 1 and any("history.jsonl" in w for w in as_json["warnings"])


def test_damaged_history_never_breaks_the_run_list(fresh_home, run):
    (run / "history.jsonl").write_text("[1,2]\n{\"val_mae\": \"x\"}\n\x00\xff\n")
    edit_config(run, lambda c: c.update(created=12345))
    (run / "metrics.json").unlink()  # the best validation MAE then comes from the history
    runs_home = run.parent / "listhome"
    (runs_home / "runs").mkdir(parents=True)
    shutil.move(run, runs_home / "runs" / "r1")
    res = cli(["inspect", "--list"], runs_home)
    assert res.exit_code == 0 and "r1" in res.output, res.output
    listed = json.loads(cli(["inspect", "--list", "--json"], runs_home).stdout)["runs"]
    assert [r["name"] for r in listed] == ["r1"] and listed[0]["best_val_mae"] is None


# ------------------------------------------------------------------ strict JSON


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"bare {name} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_json_output_never_prints_infinity(fresh_home, run):
    # too few calibration residuals for 99% coverage: the interval is unbounded
    edit_config(run, lambda c: c.update(conformal={"n": 3, "units": c["conformal"]["units"],
                                                    "high": [-0.1, 0.0, 0.1], "low": [-0.1, 0.0, 0.1]}))
    ev = cli(["evaluate", run, "--coverage", "0.99", "--json"], fresh_home)
    assert ev.exit_code == 0, ev.output
    _strict(ev.stdout)
    for args in (["--json"], ["-f", "json"]):
        res = cli(["predict", SAMPLE, "--model", run, "--coverage", "0.99", *args], fresh_home)
        assert res.exit_code == 0, res.output
        row = _strict(res.stdout)["rows"][0]
        # the upper ends are unbounded (null); the lower ones are exp(-inf) = 0
        assert row["pred_high_hi"] is None and row["pred_low_hi"] is None and row["pred_high"] > 0
    q = cli(["predict", SAMPLE, "--model", run, "--quantiles", "0.005,0.5,0.995", "--json"], fresh_home)
    assert _strict(q.stdout)["rows"][0]["pred_high_q0.995"] is None  # unbounded: null, never Infinity
    table = cli(["predict", SAMPLE, "--model", run, "--quantiles", "0.005,0.5,0.995"], fresh_home)
    assert table.exit_code == 0 and "unbounded" in table.output and "inf" not in table.output.replace("info", "")
    res = cli(["predict", SAMPLE, "--model", run, "--coverage", "0.99", "-f", "csv"], fresh_home)
    assert "inf" not in res.stdout.lower()


# ------------------------------------------------------------------ weights checksum


def test_trained_run_records_the_weights_digest(trained_run):
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["weights_sha256"] == hashlib.sha256((trained_run / "model.safetensors").read_bytes()).hexdigest()
    assert "weights_sha256_next" not in cfg


def test_flipped_bit_in_weights_is_caught(fresh_home, run):
    w = run / "model.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-100] ^= 0x01  # inside the last tensor's data: the file still parses
    w.write_bytes(bytes(raw))
    for args in commands(run):
        one_line_error(cli(args, fresh_home), "model.safetensors in", "does not match its checksum", "retrain or restore")


def test_run_without_digest_still_loads(fresh_home, run):
    edit_config(run, lambda c: c.pop("weights_sha256"))
    assert cli(["predict", SAMPLE, "--model", run], fresh_home).exit_code == 0


# ------------------------------------------------------------------ forecasts a run can make


def test_blend_coefficients_beyond_the_bound_are_one_line(fresh_home, run):
    edit_config(run, lambda c: c["blend"].update(coef_high=[9.9e5] * len(c["blend"]["coef_high"])))
    for args in commands(run):
        one_line_error(cli(args, fresh_home), "config.json", "blend.coef_high")


def test_a_forecast_out_of_any_price_range_is_never_printed(fresh_home, run):
    """Coefficients inside the bound can still blow a forecast up: refused when shown, one
    line, exit 2, no numpy overflow warnings, no inf or 1e112 in the output."""
    edit_config(run, lambda c: c["blend"].update(coef_high=[9.9e3] * len(c["blend"]["coef_high"])))
    res = cli(["predict", SAMPLE, "--model", run, "--json"], fresh_home)
    line = one_line_error(res, str(SAMPLE), "not a price range")
    assert "overflow" not in res.output and "Warning" not in res.output, line


def test_a_copied_run_with_other_settings_never_gets_the_originals_forecasts(fresh_home, run, tmp_path, monkeypatch):
    """Same weights, another h_cycles: the forecast cache must miss."""
    monkeypatch.setenv("FINHRM_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other"
    shutil.copytree(run, other)
    edit_config(other, lambda c: c["model"].update(h_cycles=2))

    def forecast(r):
        res = cli(["predict", SAMPLE, "--model", r, "--all", "--json"], fresh_home)
        assert res.exit_code == 0, res.output
        return [(row["pred_high"], row["pred_low"]) for row in json.loads(res.stdout)["rows"]]

    original, copied = forecast(run), forecast(other)
    assert list((tmp_path / "cache" / "forecasts").glob("*.npz"))
    monkeypatch.setenv("FINHRM_CACHE", "tmp")
    assert forecast(other) == copied != original
    assert forecast(run) == original
