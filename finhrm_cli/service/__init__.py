"""What each command does, as plain functions that return JSON-able dicts.

``cli`` parses options and calls these; ``ui`` renders what they return.  Keeping the
work here makes every command usable from Python and testable without a terminal.

One module per command, named for the work so no module shadows the function it exports:

==================  ==============================================================
``preparation``     ``prepare``: read, check and featurise a file; save a prepared folder
``training``        ``train``, ``finalize_run``: a run from data to weights and metrics
``evaluation``      ``evaluate``: a run against baselines; walk-forward; ``--plot``
``prediction``      ``predict``: the next session's high/low (or a backfill) with intervals
``inspection``      ``inspect``, ``act_stats``, ``list_runs``: what a run is and does
``_shared``         loading runs and their data, windows, scoring, prices
==================  ==============================================================

The public functions are re-exported here (``service.train(...)``).  Nothing here imports
mlx or polars at module level.
"""

from finhrm_cli.service._shared import Callback, run_datasets, score_parts, to_prices
from finhrm_cli.service.evaluation import evaluate
from finhrm_cli.service.inspection import act_stats, inspect, list_runs
from finhrm_cli.service.prediction import predict
from finhrm_cli.service.preparation import prepare
from finhrm_cli.service.training import finalize_run, train

__all__ = [
    "Callback",
    "act_stats",
    "evaluate",
    "finalize_run",
    "inspect",
    "list_runs",
    "predict",
    "prepare",
    "run_datasets",
    "score_parts",
    "to_prices",
    "train",
]
