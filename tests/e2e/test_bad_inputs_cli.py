"""Bad input through `finhrm prepare` in a subprocess: one line on stderr, exit 2, no traceback;
warnings about suspicious data one line each.

The files are built as in unit/test_bad_inputs.py: a valid small CSV, corrupted once.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import ROOT
from helpers import corrupt_cell as corrupt
from helpers import csv_rows as rows
from helpers import scale_prices as _scale_prices
from helpers import shift_dates as _shift_dates
from helpers import write_rows as write


# --------------------------------------------------------------------------- suspicious data (warnings)

def test_cli_prepare_shows_each_warning_on_one_line(tmp_path):
    body = _scale_prices(_shift_dates(rows(), 40, 800), 100, 3.0)
    path = write(tmp_path / "odd.csv", body=body)
    env = {k: v for k, v in os.environ.items() if k != "FINHRM_DEBUG"}
    env.update(FINHRM_HOME=str(tmp_path / "home"), NO_COLOR="1", COLUMNS="80")
    proc = subprocess.run([sys.executable, "-m", "finhrm_cli", "prepare", str(path), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    warned = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 2 and "2.2 years" in warned[0] and "ratio 3.0" in warned[1], proc.stderr
    assert sum(1 for ln in proc.stderr.splitlines() if ln.strip()) == 2, proc.stderr


# --------------------------------------------------------------------------- through the CLI

CLI_CASES = {
    "missing": lambda p: p / "missing.csv",
    "non_numeric": lambda p: corrupt(p, 30, "close", "abc"),
    "duplicate": lambda p: write(p / "dup.csv", body=[*rows()[:50], rows()[49], *rows()[50:]]),
    "binary": lambda p: (p / "b.csv").write_bytes(b"\x00\xff" * 64) and p / "b.csv",
    "too_few": lambda p: write(p / "short.csv", body=rows(40)),
    "high_low": lambda p: corrupt(p, 30, "high", "1.0"),
}


@pytest.mark.skipif(not (ROOT / "finhrm_cli" / "cli.py").exists(), reason="finhrm_cli/cli.py not written yet")
@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_prepare_bad_input_exits_2(tmp_path, case):
    bad = CLI_CASES[case](tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "FINHRM_DEBUG"}
    env.update(FINHRM_HOME=str(tmp_path / "home"), NO_COLOR="1", COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "finhrm_cli", "prepare", str(bad)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and str(bad) in lines[0]
