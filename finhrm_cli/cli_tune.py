"""``finhrm tune``: the command's options (``cli`` registers it under its guard)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer

from finhrm_cli.cli_options import ColMap, DateCol, JsonOpt, QuietOpt, examples
from finhrm_cli.config import TrainConfig, default_text
from finhrm_cli.errors import UsageError

SEED = {f.name: f for f in fields(TrainConfig)}["seed"]

EPILOG = examples(
    "finhrm tune prices.csv --trials 30 --timeout 2400",
    "finhrm tune prices.csv --space narrow.toml --config base.toml",
    "finhrm tune prices.csv --storage postgresql://me:pw@db/finhrm --study goog   (on each machine)",
    "finhrm tune --show prices",
    "finhrm tune prices.csv --trials 0 --ensemble 3   (average the 3 best trials of the study)",
    "finhrm tune prices.csv --objective folds --folds 3 --study prices-wf",
    "finhrm train prices.csv --config ~/.local/share/finhrm/runs/studies/prices-best.toml",
)


def tune(
    data_paths: Annotated[Optional[list[Path]], typer.Argument(metavar="DATA", help="The series to tune on: CSV, .parquet or prepared folders (as `finhrm train` takes them).", show_default=False)] = None,
    trials: Annotated[int, typer.Option("--trials", "-n", min=0, metavar="N", help="Trials to add to the study in this run (0: none, e.g. to make an --ensemble).")] = 30,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=1, metavar="SECONDS", help="Start no new trial after this many seconds (a running trial finishes).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with the settings every trial starts from (as in `finhrm train`).")] = None,
    space: Annotated[Optional[Path], typer.Option("--space", metavar="FILE.toml", help="Search space over the default one: per setting a list of choices or {low, high, log} (docs/tune.md).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help=f"Seeds the sampler and every trial's training (else --config's seed). [default: {default_text(SEED)}]", show_default=False)] = None,
    study: Annotated[Optional[str], typer.Option("--study", metavar="NAME", help="The study's name (default: DATA's series); the same name continues it.")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", metavar="URL", help="An Optuna RDB URL (postgresql://, mysql://, sqlite:///) shared by several workers (default: a SQLite file in the runs home).")] = None,
    show_study: Annotated[Optional[str], typer.Option("--show", metavar="STUDY", help="Show a study (its name or .db file) and exit; nothing is trained.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE", help="Where to write the best settings as a --config TOML file (default: beside the study, NAME-best.toml).")] = None,
    compare: Annotated[bool, typer.Option("--compare/--no-compare", help="Train the default settings once on the same split and show them beside the best trial.")] = True,
    objective: Annotated[str, typer.Option("--objective", metavar="val|folds", help="What a trial is scored on: val (the validation split) or folds (walk-forward folds inside the training and validation rows; never the test split).")] = "val",
    folds: Annotated[int, typer.Option("--folds", metavar="K", min=2, max=10, help="With --objective folds: how many walk-forward folds each trial trains.")] = 3,
    ensemble: Annotated[Optional[int], typer.Option("--ensemble", metavar="K", min=2, max=20, help="Also make one ensemble run averaging the K best trials' forecasts (predict, evaluate and inspect take it as any run).", show_default=False)] = None,
    ensemble_seeds: Annotated[bool, typer.Option("--ensemble-seeds", help="With --ensemble K: the best trial and K-1 runs of its settings with the next seeds, instead of the K best trials.")] = False,
    date_col: DateCol = None,
    col: ColMap = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
):
    """Search the training settings on DATA with Optuna (validation only); the best is scored on test once."""
    from finhrm_cli import data
    from finhrm_cli.ui import console
    from finhrm_cli.ui.tuning import TuneProgress, render_tune

    if show_study is not None:
        from finhrm_cli.service.tuning import show

        if ensemble or objective != "val":
            raise UsageError("--show only shows a study; --ensemble and --objective go with DATA "
                             "(e.g. `finhrm tune prices.csv --trials 0 --ensemble 3`).")

        result = show(show_study, storage)
    else:
        from finhrm_cli.run.files import check_output
        from finhrm_cli.service.tuning import tune as run_tune

        if ensemble_seeds and not ensemble:
            raise UsageError("--ensemble-seeds needs --ensemble K (how many runs to average).")
        if not data_paths:
            raise UsageError("missing DATA: pass the series to tune on (e.g. `finhrm tune prices.csv`), or --show STUDY.")
        check_output(out, "--out")
        with TuneProgress(quiet=quiet or as_json) as progress:
            result = run_tune(data_paths, config=config, space_path=space, trials=trials, timeout=timeout, seed=seed,
                              study_name=study, storage=storage, best_toml=out, compare=compare, date_col=date_col,
                              col_map=data.parse_col_map(col or []), callback=progress, ensemble=ensemble,
                              ensemble_seeds=ensemble_seeds, objective=objective, folds=folds)
    console.print_json(result) if as_json else render_tune(result)
