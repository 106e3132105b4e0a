"""The ``finhrm`` command line: parse options, call the core, render with ``ui``.

Heavy imports (mlx, polars) happen inside the command bodies so that ``finhrm --help``
starts instantly.  Every command runs inside ``_guard``: a ``FinhrmError`` becomes one line
on stderr and its exit code (2 for bad input), Ctrl-C exits 130, and anything unexpected
exits 1 with one line; ``FINHRM_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

from finhrm_cli import blas as _blas

_blas.start_sample()  # the BLAS thread choice measures other work over the imports below

import typer  # noqa: E402

from finhrm_cli import __version__  # noqa: E402
from finhrm_cli.config import STALE_AFTER, FeatureConfig, ModelConfig, TrainConfig, help_for  # noqa: E402
from finhrm_cli.errors import FinhrmError, FinhrmWarning, UsageError  # noqa: E402
from finhrm_cli.cli_options import (  # noqa: E402
    AckOpt, ActInference, ActOpt, ActTraining, ColMap, CoverageOpt, DateCol, Format, Intervals, IntervalsOpt,
    JsonOpt, Loss, ModelOpt, QuietOpt, RunArg, Split, examples as _examples,
)


def _show_warning(message, category, filename, lineno, file=None, line=None, _python=None):
    """finhrm's own warnings as one ``warning:`` line on stderr; others as Python shows them."""
    if issubclass(category, FinhrmWarning):
        from finhrm_cli.ui import console

        console.warn(str(message))
    else:
        _python(message, category, filename, lineno, file, line)


app = typer.Typer(
    name="finhrm",
    help="Train a Hierarchical Reasoning Model (HRM, in MLX) on daily bars and predict the next "
    "session's high and low.\n\nTypical use: `finhrm train data.csv`, then `finhrm predict fresh.csv`.",
    epilog=_examples("finhrm train prices.csv", "finhrm predict prices.csv", "finhrm inspect --list",
                     "finhrm --install-completion   (tab completion for your shell)"),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _debug() -> bool:
    return os.environ.get("FINHRM_DEBUG", "").strip() not in ("", "0", "false", "no")


def _stdout_failed() -> None:
    """Standard output cannot take more bytes (full device, closed pipe): point it at
    /dev/null so the interpreter's last flush at exit stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _quiet_sigint():
    """From here on a further Ctrl-C is ignored (we are already on the way out); returns the
    handler it replaced (None when it could not be changed)."""
    import signal

    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):  # not the main thread
        return None


def _guard(fn):
    """Turn exceptions into one clear line and the documented exit codes.  After a Ctrl-C a
    second one is ignored while the first is reported; ``main`` catches any later one."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import signal

        before = signal.getsignal(signal.SIGINT)
        try:
            return _guarded(fn, *args, **kwargs)
        except KeyboardInterrupt:  # a second Ctrl-C while reporting the first: just leave
            _quiet_sigint()
            raise typer.Exit(130)
        finally:  # in-process callers (tests, library use) get their handler back; `finhrm` keeps ignoring
            if not _STANDALONE and before is not None and signal.getsignal(signal.SIGINT) is not before:
                try:
                    signal.signal(signal.SIGINT, before)
                except (ValueError, OSError):
                    pass

    return wrapper


def _guarded(fn, *args, **kwargs):
    import warnings

    with warnings.catch_warnings():  # finhrm's warnings: one line each, every time, as they come
        warnings.simplefilter("always", FinhrmWarning)
        warnings.showwarning = functools.partial(_show_warning, _python=warnings.showwarning)
        return _reported(fn, *args, **kwargs)


def _reported(fn, *args, **kwargs):
    from finhrm_cli.errors import FilesystemError
    from finhrm_cli.ui import console

    try:
        out = fn(*args, **kwargs)
        with console.stdout_errors():
            sys.stdout.flush()  # a full stdout device fails here, inside the guard
        return out
    except typer.Exit:
        raise
    except FinhrmError as exc:
        if _debug():
            traceback.print_exc()
        console.error(str(exc))
        raise typer.Exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        _quiet_sigint()
        if _debug():
            traceback.print_exc()
        msg = getattr(exc, "message", None) or "interrupted."
        console.error(msg)
        raise typer.Exit(130)
    except BrokenPipeError:
        # `finhrm predict ... | head`: the reader went away; not an error worth a trace.
        _stdout_failed()
        sys.stderr.close()
        raise typer.Exit(0)
    except OSError as exc:
        # disk full, read-only place, a folder where a file was meant, ...: one line with the path
        if _debug():
            traceback.print_exc()
        todo = None
        if exc.filename == console.STDOUT:
            _stdout_failed()
            todo = "send the output where there is room, or write it to a file with -o FILE (predict)"
        err = FilesystemError.from_oserror(exc, todo=todo)
        console.error(str(err))
        raise typer.Exit(err.exit_code)
    except Exception as exc:  # noqa: BLE001 - last line of defence
        if _debug():
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        console.error(
            f"internal error: {type(exc).__name__}: {first} "
            "(please report it; FINHRM_DEBUG=1 shows the traceback)"
        )
        raise typer.Exit(1)


def _version(value: bool):
    if value:
        typer.echo(f"finhrm {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
):
    """finhrm: next-session high/low forecasts from a Hierarchical Reasoning Model."""


# ------------------------------------------------------------------ shared options
def _show(result: dict, as_json: bool, render) -> None:
    """One JSON document on stdout with --json, else the command's rich view."""
    from finhrm_cli.ui import console

    console.print_json(result) if as_json else render(result)


def _say_run(result: dict) -> None:
    """Which run the command used and why, and predict's staleness (``views.run_notes``), on
    stderr after the output, so that a failed write stays the only line."""
    from finhrm_cli.ui.forecasts import run_notes

    run_notes(result)


def _one_run(run: str | None, model: str | None) -> str | None:
    """RUN given as the positional argument or as -m/--model (the same in every command)."""
    if run is not None and model is not None and run != model:
        raise UsageError(f"two runs given ({run!r} and --model {model!r}); give the run once, as -m/--model RUN.")
    return model if model is not None else run


def _col_map(items: list[str] | None) -> dict[str, str]:
    from finhrm_cli import data

    return data.parse_col_map(items or [])


def _ack(items: list[str] | None) -> list[str]:
    """The dates of repeatable ``--ack`` and of ``$FINHRM_ACK`` (commas or spaces between)."""
    from finhrm_cli import data

    return sorted(set(data.parse_ack(items or [])) | set(data.parse_ack_env(os.environ.get("FINHRM_ACK"))))


def _feature_cfg(**overrides):
    from finhrm_cli.config import FeatureConfig

    cfg = FeatureConfig(**{k: v for k, v in overrides.items() if v is not None})
    cfg.validate()
    return cfg


# ------------------------------------------------------------------ prepare
@app.command(epilog=_examples("finhrm prepare prices.csv     (writes prices.prepared/ beside it)", "finhrm prepare prices.csv -o ~/prep/aapl", "finhrm train ~/prep/aapl"))
@_guard
def prepare(
    data_path: Annotated[Optional[Path], typer.Argument(metavar="DATA", help="A CSV (.csv, .csv.gz) or .parquet file.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="The folder to write the prepared dataset to (default: DATA's name + `.prepared` beside DATA).")] = None,
    date_col: DateCol = None,
    col: ColMap = None,
    ack: AckOpt = None,
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", help=help_for(FeatureConfig, "seq_len"), rich_help_panel="Features")] = None,
    horizon: Annotated[Optional[int], typer.Option("--horizon", help=help_for(FeatureConfig, "horizon"), rich_help_panel="Features")] = None,
    train_frac: Annotated[Optional[float], typer.Option("--train-frac", help=help_for(FeatureConfig, "train_frac"), rich_help_panel="Features")] = None,
    val_frac: Annotated[Optional[float], typer.Option("--val-frac", help=help_for(FeatureConfig, "val_frac"), rich_help_panel="Features")] = None,
    feature_set: Annotated[Optional[str], typer.Option("--features", help=help_for(FeatureConfig, "feature_set"), rich_help_panel="Features")] = None,
    as_json: JsonOpt = False,
):
    """Read, check and featurize DATA; write a prepared dataset and show a summary."""
    from finhrm_cli.service.preparation import prepare as run_prepare
    from finhrm_cli.ui.views import prepare_summary

    if data_path is None:
        raise UsageError("missing DATA: pass the CSV or Parquet file to prepare (e.g. `finhrm prepare data.csv`).")
    fcfg = _feature_cfg(seq_len=seq_len, horizon=horizon, train_frac=train_frac, val_frac=val_frac, feature_set=feature_set)
    summary = run_prepare(data_path, fcfg, out=out, date_col=date_col, col_map=_col_map(col), ack=_ack(ack))
    _show(summary, as_json, prepare_summary)


# ------------------------------------------------------------------ train



_M = "Model"
_T = "Training"
_F = "Features"


@app.command(epilog=_examples("finhrm train prices.csv", "finhrm train watchlist/     (one model for every file in the folder)", "finhrm train prices.csv --config my.toml --seed 1 -o ~/runs", "finhrm train --resume prices-20240101-120000", "finhrm train prices.csv --from prices-20240101-120000   (production: every row, warm start)"))
@_guard
def train(
    data_paths: Annotated[Optional[list[Path]], typer.Argument(metavar="DATA", help="Training data: a CSV, .parquet or prepared folder (omit with --resume).", show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with [features], [model], [train] settings; flags win over it.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="The folder to hold the new run folder (default: the runs home, $FINHRM_HOME/runs).")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue an interrupted run (a run folder or name).")] = None,
    from_run: Annotated[Optional[str], typer.Option("--from", metavar="RUN", help="A production run: RUN's settings on every row of DATA (nothing held out), warm-started from RUN's weights; refresh it with new bars the same way.")] = None,
    scratch: Annotated[bool, typer.Option("--scratch", help="With --from: start from fresh weights and train for the epochs RUN's validation chose.")] = False,
    date_col: DateCol = None,
    col: ColMap = None,
    ack: AckOpt = None,
    d_model: Annotated[Optional[int], typer.Option("--d-model", help=help_for(ModelConfig, "d_model"), rich_help_panel=_M)] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", help=help_for(ModelConfig, "n_heads"), rich_help_panel=_M)] = None,
    h_layers: Annotated[Optional[int], typer.Option("--h-layers", help=help_for(ModelConfig, "h_layers"), rich_help_panel=_M)] = None,
    l_layers: Annotated[Optional[int], typer.Option("--l-layers", help=help_for(ModelConfig, "l_layers"), rich_help_panel=_M)] = None,
    h_cycles: Annotated[Optional[int], typer.Option("--h-cycles", help=help_for(ModelConfig, "h_cycles"), rich_help_panel=_M)] = None,
    l_cycles: Annotated[Optional[int], typer.Option("--l-cycles", help=help_for(ModelConfig, "l_cycles"), rich_help_panel=_M)] = None,
    halt_max_steps: Annotated[Optional[int], typer.Option("--halt-max-steps", help=help_for(ModelConfig, "halt_max_steps"), rich_help_panel=_M)] = None,
    halt_exploration: Annotated[Optional[float], typer.Option("--halt-exploration", help=help_for(ModelConfig, "halt_exploration"), rich_help_panel=_M)] = None,
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", help=help_for(FeatureConfig, "seq_len"), rich_help_panel=_F)] = None,
    horizon: Annotated[Optional[int], typer.Option("--horizon", help=help_for(FeatureConfig, "horizon"), rich_help_panel=_F)] = None,
    train_frac: Annotated[Optional[float], typer.Option("--train-frac", help=help_for(FeatureConfig, "train_frac"), rich_help_panel=_F)] = None,
    val_frac: Annotated[Optional[float], typer.Option("--val-frac", help=help_for(FeatureConfig, "val_frac"), rich_help_panel=_F)] = None,
    feature_set: Annotated[Optional[str], typer.Option("--features", help=help_for(FeatureConfig, "feature_set"), rich_help_panel=_F)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help=help_for(TrainConfig, "batch_size"), rich_help_panel=_T)] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help=help_for(TrainConfig, "lr"), rich_help_panel=_T)] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help=help_for(TrainConfig, "weight_decay"), rich_help_panel=_T)] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help=help_for(TrainConfig, "epochs"), rich_help_panel=_T)] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help=help_for(TrainConfig, "patience"), rich_help_panel=_T)] = None,
    grad_accum: Annotated[Optional[int], typer.Option("--grad-accum", help=help_for(TrainConfig, "grad_accum"), rich_help_panel=_T)] = None,
    min_delta: Annotated[Optional[float], typer.Option("--min-delta", help=help_for(TrainConfig, "min_delta"), rich_help_panel=_T)] = None,
    ema: Annotated[Optional[float], typer.Option("--ema", help=help_for(TrainConfig, "ema"), rich_help_panel=_T)] = None,
    loss: Annotated[Optional[Loss], typer.Option("--loss", help=help_for(TrainConfig, "loss"), rich_help_panel=_T)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help=help_for(TrainConfig, "seed"), rich_help_panel=_T)] = None,
    blend: Annotated[Optional[bool], typer.Option("--blend/--no-blend", help=help_for(TrainConfig, "blend"), rich_help_panel=_T, show_default=False)] = None,
    act_training: Annotated[Optional[ActTraining], typer.Option("--act-training", help=help_for(TrainConfig, "act_training"), rich_help_panel=_T, show_default=False)] = None,
    act_inference: Annotated[Optional[ActInference], typer.Option("--act-inference", help=help_for(TrainConfig, "act_inference"), rich_help_panel=_T, show_default=False)] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
):
    """Train an HRM on DATA and save a run folder (weights, config, history, metrics)."""
    from finhrm_cli import config as cfgmod
    from finhrm_cli.service.training import train as run_train
    from finhrm_cli.ui.progress import TrainProgress
    from finhrm_cli.ui.views import render_train

    flags = {
        "features": dict(seq_len=seq_len, horizon=horizon, train_frac=train_frac, val_frac=val_frac, feature_set=feature_set),
        "model": dict(d_model=d_model, n_heads=heads, h_layers=h_layers, l_layers=l_layers, h_cycles=h_cycles,
                      l_cycles=l_cycles, halt_max_steps=halt_max_steps, halt_exploration=halt_exploration),
        "train": dict(batch_size=batch_size, lr=lr, weight_decay=weight_decay, epochs=epochs, patience=patience,
                      grad_accum=grad_accum, loss=loss.value if loss else None, seed=seed, ema=ema, min_delta=min_delta,
                      blend=blend, act_training=act_training.value if act_training else None,
                      act_inference=act_inference.value if act_inference else None),
    }
    if resume is None and not data_paths:
        raise UsageError("missing DATA: pass a CSV to train on (e.g. `finhrm train data.csv`), or --resume RUN.")
    acked = _ack(ack)
    settings = cfgmod.load_toml(config) if config else {k: {} for k in flags}
    for section, values in flags.items():
        settings[section].update({k: v for k, v in values.items() if v is not None})
    from finhrm_cli import distributed

    main_rank = distributed.is_main()  # under mlx.launch only rank 0 draws and prints
    with TrainProgress(quiet=quiet or as_json or not main_rank) as progress:
        result = run_train(
            data_paths or [],
            settings,
            out=out,
            resume=resume,
            date_col=date_col,
            col_map=_col_map(col),
            callback=progress,
            from_run=from_run,
            scratch=scratch,
            ack=acked,
        )
    if not main_rank:
        return
    _show(result, as_json, render_train)


# ------------------------------------------------------------------ evaluate

@app.command(epilog=_examples("finhrm evaluate", "finhrm evaluate prices-20240101-120000 --plot test.png", "finhrm evaluate --data fresh.csv --csv rows.csv", "finhrm evaluate --walk-forward 3 --plot wf.png --csv folds.csv"))
@_guard
def evaluate(
    run: RunArg = None,
    model: ModelOpt = None,
    data_path: Annotated[Optional[list[Path]], typer.Option("--data", help="Score a fresh file instead of the run's own split (repeatable, one per ticker).")] = None,
    split: Annotated[Split, typer.Option("--split", help="Which of the run's splits to score.")] = Split.test,
    walk_forward: Annotated[Optional[int], typer.Option("--walk-forward", min=2, help="Retrain on K expanding windows and score each next block.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Save a PNG of predicted against actual high and low (needs matplotlib); with --walk-forward, the folds' test blocks.")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", metavar="FILE", help="Also write the scored rows as CSV (date, actual, forecast, interval, persistence; with --walk-forward a fold column).")] = None,
    plot_last: Annotated[int, typer.Option("--plot-last", min=0, help="Sessions the --plot shows: the last N of the period (0: all of them).")] = 120,
    coverage: CoverageOpt = 0.8,
    intervals: IntervalsOpt = Intervals.adaptive,
    act: ActOpt = None,
    date_col: DateCol = None,
    col: ColMap = None,
    ack: AckOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
):
    """Score a run against naive baselines: MAE, RMSE, MAPE, R², direction, interval coverage."""
    from finhrm_cli.run.files import check_output
    from finhrm_cli.service.evaluation import evaluate as run_evaluate
    from finhrm_cli.ui.progress import TrainProgress
    from finhrm_cli.ui.views import render_evaluate

    check_output(plot, "--plot")
    check_output(csv_out, "--csv")
    acked = _ack(ack)

    with TrainProgress(quiet=quiet or as_json or not walk_forward) as progress:
        result = run_evaluate(
            _one_run(run, model), data_path=data_path, split=split.value, coverage=coverage, act=act,
            walk_forward=walk_forward, plot=plot, date_col=date_col, col_map=_col_map(col), callback=progress,
            intervals=intervals.value, plot_last=plot_last, with_rows=csv_out is not None, ack=acked,
        )
    if csv_out is not None:
        from finhrm_cli.ui.export import write_rows

        write_rows(result.pop("rows"), csv_out)
    _show(result, as_json, render_evaluate)
    _say_run(result)


# ------------------------------------------------------------------ predict

@app.command(epilog=_examples("finhrm predict prices.csv", "finhrm predict watchlist/ --coverage 0.9", "finhrm predict prices.csv --all -f csv -o forecasts.csv", "finhrm predict prices.csv -m prices-20240101-120000 --json | jq .rows"))
@_guard
def predict(
    data_path: Annotated[Optional[list[Path]], typer.Argument(metavar="DATA", help="One or more CSV/Parquet files (one per ticker), or a folder of them.", show_default=False)] = None,
    model: ModelOpt = None,
    all_rows: Annotated[bool, typer.Option("--all", help="Predict for every row with enough history (a backfill), not just the next session.")] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json (as in the other commands).")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="The file to write the predictions to, instead of stdout (CSV unless --format json).")] = None,
    coverage: CoverageOpt = 0.8,
    intervals: IntervalsOpt = Intervals.adaptive,
    quantile_levels: Annotated[Optional[str], typer.Option("--quantiles", metavar="LEVELS", help="Also give the high's and the low's quantiles at these levels, e.g. 0.05,0.25,0.5,0.75,0.95 (never crossing, low <= high at each; with --all, each pair's coverage).", show_default=False)] = None,
    act: ActOpt = None,
    stale_after: Annotated[int, typer.Option("--stale-after", min=0, metavar="N", help="Suggest a refit (`finhrm train FILE --from RUN`) when the file holds more than N sessions after the run's last training row.")] = STALE_AFTER,
    date_col: DateCol = None,
    col: ColMap = None,
    ack: AckOpt = None,
):
    """Predict the next session's high and low after the last row of DATA (one row per ticker)."""
    from finhrm_cli.run.files import check_output
    from finhrm_cli.service.prediction import predict as run_predict
    from finhrm_cli.ui.forecasts import render_predict

    if not data_path:
        raise UsageError("missing DATA: pass the CSV or Parquet file to predict from (e.g. `finhrm predict data.csv`).")
    check_output(output, "--output")
    levels = None
    if quantile_levels is not None:
        from finhrm_cli.forecast.quantiles import parse

        try:
            levels = parse(quantile_levels)
        except ValueError as exc:
            raise UsageError(f"--quantiles {quantile_levels}: {exc}; pass levels between 0 and 1 separated by "
                             "commas, e.g. --quantiles 0.05,0.25,0.5,0.75,0.95.") from None

    result = run_predict(data_path, model, all_rows=all_rows, coverage=coverage, act=act,
                         date_col=date_col, col_map=_col_map(col), intervals=intervals.value,
                         stale_after=stale_after, ack=_ack(ack), levels=levels)
    render_predict(result, "json" if as_json else fmt.value, output)
    _say_run(result)


# ------------------------------------------------------------------ inspect
@app.command(epilog=_examples("finhrm inspect", "finhrm inspect --list", "finhrm inspect prices-20240101-120000 --json"))
@_guard
def inspect(
    run: RunArg = None,
    model: ModelOpt = None,
    list_runs: Annotated[bool, typer.Option("--list", help="List the runs on this machine, newest first.")] = False,
    data_path: Annotated[Optional[Path], typer.Option("--data", help="Compute the ACT halting stats on this file instead of the run's validation split.")] = None,
    date_col: DateCol = None,
    col: ColMap = None,
    ack: AckOpt = None,
    as_json: JsonOpt = False,
):
    """Show a run: data, features, model, training curve, metrics and ACT halting stats."""
    from finhrm_cli.service import inspection
    from finhrm_cli.ui.views import render_inspect, render_list

    if list_runs:
        result = inspection.list_runs()
        _show(result, as_json, render_list)
        return
    result = inspection.inspect(_one_run(run, model), data_path=data_path, date_col=date_col, col_map=_col_map(col),
                                ack=_ack(ack))
    _show(result, as_json, render_inspect)
    _say_run(result)


# ------------------------------------------------------------------ tune
from finhrm_cli.cli_tune import EPILOG as _TUNE_EPILOG, tune as _tune  # noqa: E402

app.command("tune", epilog=_TUNE_EPILOG)(_guard(_tune))


_STANDALONE = False  # set by main(): the process ends with the command


def main() -> None:
    global _STANDALONE
    _STANDALONE = True
    try:
        app(prog_name="finhrm")
    except KeyboardInterrupt:  # Ctrl-C outside a command (while parsing, or a late second one)
        _quiet_sigint()
        sys.exit(130)
    except SystemExit:  # the command is over: a Ctrl-C from here to the exit changes nothing
        _quiet_sigint()
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
