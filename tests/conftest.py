"""Shared fixtures for tests/unit and tests/e2e.

Small, valid synthetic daily bars (no files unless asked), and one tiny run trained once per
session through the command line: nothing trains unless a test asks for ``trained_summary``,
``trained_run`` or a fixture built on them.  Plain helpers are in tests/helpers.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import SAMPLE_TV, TINY, cli, synthetic_ohlcv


@pytest.fixture
def screen(monkeypatch):
    """An 80-column terminal for the views: the ``rich`` console they print to, recorded."""
    from rich.console import Console

    from finhrm_cli.ui import console as ui_console

    out = Console(width=80, record=True, highlight=False, force_terminal=False)
    monkeypatch.setattr(ui_console, "out", out)
    monkeypatch.setattr(ui_console, "err", Console(width=80, record=True, stderr=True))
    return out


@pytest.fixture
def ohlcv():
    """Factory: ``ohlcv(n=200, seed=0, ...)`` -> dict of numpy arrays (see synthetic_ohlcv)."""
    return synthetic_ohlcv


@pytest.fixture
def bars_frame():
    """Factory: ``bars_frame(n=200, seed=0)`` -> polars DataFrame of canonical bars."""
    import polars as pl

    def make(n: int = 200, seed: int = 0, **kw):
        d = synthetic_ohlcv(n, seed, **kw)
        return pl.DataFrame({k: (pl.Series(k, v).cast(pl.Date) if k == "date" else v) for k, v in d.items()})

    return make


# --------------------------------------------------------------------------- the session's trained run


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory) -> Path:
    """The FINHRM_HOME the session's run is trained into.  It holds that run and nothing else,
    so tests may rely on "the latest run" and on ``inspect --list`` there: a test that trains
    writes its run elsewhere (``--out`` or ``fresh_home``), a test that tampers copies the run."""
    return tmp_path_factory.mktemp("trained_home")


@pytest.fixture(scope="session")
def trained_summary(trained_home) -> dict:
    """One tiny model trained once per session on the sample data, the way a user would
    (``finhrm train sample_data/synthetic_tradingview.csv`` with helpers.TINY, a few seconds):
    the JSON summary the command prints."""
    res = cli(["train", SAMPLE_TV, *TINY, "--json"], trained_home)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="session")
def trained_run(trained_summary) -> Path:
    """The session's trained run folder, to read only: a test that changes a run works on its
    own copy (``shutil.copytree(trained_run, tmp_path / "run")``)."""
    return Path(trained_summary["run"])


@pytest.fixture
def fresh_home(tmp_path_factory) -> Path:
    """An empty FINHRM_HOME of the test's own."""
    return tmp_path_factory.mktemp("home")
