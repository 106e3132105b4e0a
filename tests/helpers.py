"""Plain helpers shared by the test modules of tests/unit and tests/e2e.

``pythonpath = ["tests"]`` in pyproject.toml's pytest section makes this module importable as
``helpers`` from either folder.  The fixtures are in tests/conftest.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_TV = ROOT / "sample_data" / "synthetic_tradingview.csv"
SAMPLE_YAHOO = ROOT / "sample_data" / "synthetic_yahoo.csv"

# A tiny model for the sample data: the session's trained run (conftest.py) and e2e/test_cli.py's
# own trainings use these flags (a few seconds per run).
TINY = [
    "--d-model", "32", "--heads", "2", "--h-layers", "1", "--l-layers", "1",
    "--h-cycles", "1", "--l-cycles", "1", "--halt-max-steps", "2",
    "--batch-size", "64", "--epochs", "3", "--patience", "3", "--lr", "3e-3",
]


def scaled_test_bars(csv: Path, out: Path, factor: float = 1.7) -> Path:
    """A copy of ``csv`` (written to ``out``) whose every bar of the default test split is
    multiplied by ``factor``: a run or study that never reads test rows cannot tell the two apart."""
    from finhrm_cli import data
    from finhrm_cli.config import FeatureConfig

    test_from = data.prepare_many([csv], FeatureConfig())[0].splits["test"]["first_date"]
    lines = Path(csv).read_text().splitlines()
    rows = [lines[0]]
    for ln in lines[1:]:
        cells = ln.split(",")
        if cells[0] >= test_from:
            cells = [cells[0]] + [f"{float(c) * factor:.6f}" for c in cells[1:]]
        rows.append(",".join(cells))
    out.write_text("\n".join(rows) + "\n")
    return out


def tiny_space(ema: str = "[0.0, 0.9]") -> str:
    """A ``finhrm tune --space`` file of tiny models and one or two epochs (a trial trains in
    about a second), for the tune tests; ``ema``: its choices, as TOML."""
    return f"""
d_model = [16]
heads = [2]
h_layers = [1]
l_layers = [1]
h_cycles = [1]
l_cycles = [1]
halt_max_steps = [2]
batch_size = [32]
feature_set = ["extended"]
loss = ["mae"]
weight_decay = [0.1]
seq_len = [5, 10]
ema = {ema}
epochs = {{low = 1, high = 2}}
lr = {{low = 1e-3, high = 5e-3, log = true}}
"""


def synthetic_ohlcv(n: int = 200, seed: int = 0, start: dt.date = dt.date(2020, 1, 1), price: float = 100.0,
                    every_day: bool = False) -> dict:
    """A valid random daily series as numpy arrays: dates (business days; every calendar day
    with ``every_day``, a 7-day market), open, high, low, close, volume."""
    rng = np.random.default_rng(seed)
    ret = rng.standard_t(4, n) * 0.01
    close = price * np.exp(np.cumsum(ret))
    prev = np.concatenate([[price], close[:-1]])
    open_ = prev * np.exp(rng.normal(0, 0.003, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.005, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.005, n)))
    volume = np.round(rng.lognormal(12, 0.5, n))
    dates = (np.datetime64(start, "D") + np.arange(n) if every_day
             else np.busday_offset(np.datetime64(start, "D"), np.arange(n), roll="forward"))
    return {"date": dates, "open": open_, "high": high, "low": low, "close": close, "volume": volume}


# --------------------------------------------------------------------------- the command line, in process


def cli(args, home, **kw):
    """``finhrm ARGS`` through Typer's CliRunner with FINHRM_HOME=home and no colour; exceptions propagate."""
    from typer.testing import CliRunner

    from finhrm_cli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"FINHRM_HOME": str(home), "NO_COLOR": "1"},
                              catch_exceptions=False, **kw)


def one_line_error(res, *needles) -> str:
    """Exit 2, exactly one non-blank line, no traceback and no 'internal error'."""
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1, res.output
    assert "internal error" not in res.output and "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def one_error_line(res) -> str:
    """The output of a failed command: exactly one line, no traceback, no internal error."""
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    return lines[0]


# --------------------------------------------------------------------------- run files and folders (write side)

# a quicker model than TINY, for the write side's small synthetic files
TINY_D16 = [
    "--d-model", "16", "--heads", "2", "--h-layers", "1", "--l-layers", "1",
    "--h-cycles", "1", "--l-cycles", "1", "--halt-max-steps", "2",
    "--batch-size", "32", "--epochs", "2", "--patience", "3", "--quiet",
]


def write_csv(path: Path, n: int = 320, seed: int = 0, every_day: bool = False) -> Path:
    """A valid daily CSV (date, open, high, low, close, volume) of ``n`` synthetic sessions
    (on every calendar day with ``every_day``)."""
    d = synthetic_ohlcv(n, seed, every_day=every_day)
    cols = ["date", "open", "high", "low", "close", "volume"]
    lines = [",".join(cols)] + [
        ",".join([str(d["date"][i])] + [f"{d[c][i]:.6f}" for c in cols[1:]]) for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def evil_prepared(tmp_path: Path, name: str) -> Path:
    """A prepared folder (``tmp_path / "evil.prepared"``) whose meta.json names its series ``name``."""
    import json

    from finhrm_cli import data
    from finhrm_cli.config import FeatureConfig

    folder = tmp_path / "evil.prepared"
    data.save_prepared(data.prepare(write_csv(tmp_path / "src.csv", seed=3), FeatureConfig()), folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["source"]["name"] = name
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


# --------------------------------------------------------------------------- bad input files: valid rows to damage

CSV_HEADER = ["date", "open", "high", "low", "close", "volume"]


def csv_rows(n: int = 150, seed: int = 4) -> list[list[str]]:
    """Valid bars as CSV cells, one list per row, in CSV_HEADER's order."""
    d = synthetic_ohlcv(n, seed)
    return [[str(d["date"][i]), *(f"{d[c][i]:.6f}" for c in CSV_HEADER[1:])] for i in range(n)]


def write_rows(path: Path, header=CSV_HEADER, body=None, sep=",") -> Path:
    """A CSV file of ``header`` and ``body`` (csv_rows() by default); data row i is on line i + 2."""
    body = csv_rows() if body is None else body
    path.write_text("\n".join(sep.join(r) for r in [header, *body]) + "\n", encoding="utf-8")
    return path


def corrupt_cell(tmp_path, i: int, col: str, value: str, name="bad.csv") -> Path:
    """csv_rows() written to ``tmp_path / name`` with row ``i``'s ``col`` set to ``value``."""
    body = csv_rows()
    body[i][CSV_HEADER.index(col)] = value
    return write_rows(tmp_path / name, body=body)


def shift_dates(body, at: int, days: int):
    """Move the dates of rows ``at``.. by ``days`` calendar days (a gap before row ``at``)."""
    for r in body[at:]:
        r[0] = str(dt.date.fromisoformat(r[0]) + dt.timedelta(days=days))
    return body


def scale_prices(body, at: int, factor: float):
    """Scale open/high/low/close of rows ``at``.. by ``factor`` (an unadjusted split, say)."""
    for r in body[at:]:
        r[1:5] = [f"{float(v) * factor:.6f}" for v in r[1:5]]
    return body


# --------------------------------------------------------------------------- the kernel cache


def some_shared_object() -> str:
    """A real, whole ELF shared library on this machine (one of numpy's)."""
    import numpy

    found = sorted(Path(numpy.__file__).parent.rglob("*.so"))
    return str(found[0])
