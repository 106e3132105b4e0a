"""The command-line interface a new user meets (issue 25, point 8): an example in every
command's help, no `<bool>` after a flag, one error style for a missing DATA, evaluate's rows
as CSV, and shell completion."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from helpers import cli as run_cli
from helpers import one_line_error

COMMANDS = ["prepare", "train", "evaluate", "predict", "inspect"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_an_example_and_no_bool_placeholder(command, tmp_path):
    res = run_cli([*([command] if command else []), "--help"], tmp_path, terminal_width=80)
    assert res.exit_code == 0, res.output
    assert "Examples" in res.output and f"finhrm {command or ''}".strip() in res.output.split("Examples")[1]
    assert "<bool>" not in res.output


@pytest.mark.parametrize("command", ["prepare", "train", "predict"])
def test_a_missing_data_argument_is_one_line(command, tmp_path):
    one_line_error(run_cli([command], tmp_path), "missing DATA", f"finhrm {command}")


@pytest.mark.parametrize("args", [["prepare"], ["train"], ["predict"], ["evaluate", "--data"], ["inspect", "--data"]])
def test_a_data_file_that_is_not_there_is_one_line(args, trained_home, trained_summary, tmp_path):
    one_line_error(run_cli([*args, tmp_path / "nope.csv"], trained_home), "nope.csv: file not found")


def test_evaluate_writes_its_rows_as_csv(trained_home, trained_summary, tmp_path):
    out = tmp_path / "rows.csv"
    res = run_cli(["evaluate", trained_summary["run"], "--csv", out], trained_home)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == trained_summary["metrics"]["test"]["rows"]
    assert list(rows[0])[:6] == ["date", "close", "next_high", "next_low", "pred_high", "pred_low"]
    assert {"pred_high_lo", "pred_low_hi", "persistence_high"} <= set(rows[0])
    assert rows[0]["date"] == trained_summary["metrics"]["test"]["first_date"]


def test_install_completion_writes_the_shell_script(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash"}
    res = subprocess.run([sys.executable, "-m", "finhrm_cli", "--install-completion", "bash"], env=env, check=False,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "finhrm" in (tmp_path / ".bashrc").read_text()


def test_a_mistyped_option_or_command_is_one_error_line(tmp_path):
    """Typer's usage errors (an unknown option, a bad value, a mistyped command) read like every
    other user error: one `error:` line naming the fix, exit 2, no box."""
    import subprocess
    import sys

    for args, words in ((["train", "x.csv", "--frm", "RUN"], "No such option: --frm"),
                        (["predict", "x.csv", "--coverage", "2"], "--coverage"),
                        (["predcit", "x.csv"], "Did you mean 'predict'")):
        res = subprocess.run([sys.executable, "-m", "finhrm_cli", *args], capture_output=True, text=True,
                             env={**__import__("os").environ, "FINHRM_HOME": str(tmp_path), "NO_COLOR": "1"})
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1, res.stderr
        assert lines[0].startswith("error: ") and words in lines[0] and "--help" in lines[0], lines
