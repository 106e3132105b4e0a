"""What each command does, as plain functions that return JSON-able dicts.

``cli`` parses options and calls these; ``ui`` renders what they return.  Keeping the work
here makes every command usable from Python and testable without a terminal.  A service
never prints: what the user should know and that does not stop the command goes through
``errors.warn`` (the command line shows it as a ``warning:`` line) or into the result.

One module per command, named for the work so no module shadows the function it exports:

==================  ==============================================================
``preparation``     ``prepare``: read, check and featurise a file; save a prepared folder
``training``        ``train``, ``finalize_run``: a run from data to weights and metrics
``evaluation``      ``evaluate``: a run against baselines; walk-forward; ``--plot``
``prediction``      ``predict``: the next session's high/low (or a backfill) with intervals
``inspection``      ``inspect``, ``list_runs``: what a run is and does
==================  ==============================================================

Nothing here imports mlx or polars at module level.
"""
