"""What each command does, as plain functions that return JSON-able dicts.

``cli`` parses options and calls these; ``ui`` renders what they return.  Keeping the
work here makes every command usable from Python and testable without a terminal.

One module per command (``prepare``, ``train``, ``evaluate``, ``predict``, ``inspect``) and
``_shared`` for the helpers they share.  The public functions are re-exported here, so
``service.train(...)`` is the function; a submodule itself is ``sys.modules["finhrm_cli.service.train"]``
(``import finhrm_cli.service.train as m`` gives the function, as in mlx-lm's ``generate``).
Nothing here imports mlx or polars at module level.
"""

from finhrm_cli.service._shared import Callback, run_datasets, score_parts, to_prices
from finhrm_cli.service.evaluate import evaluate
from finhrm_cli.service.inspect import act_stats, inspect, list_runs
from finhrm_cli.service.predict import predict
from finhrm_cli.service.prepare import prepare
from finhrm_cli.service.train import finalize_run, train

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
