"""The command line's shared pieces: the option types several commands take, the choices
they offer, and the help's examples (typer lives here and in ``cli`` only)."""

from __future__ import annotations

import functools
from enum import Enum
from typing import Annotated, Optional

import typer


def _flag_type(display):
    """Typer shows a type placeholder after every option, `<bool>` after a flag too, which
    takes no value: flags show none."""

    @functools.wraps(display)
    def shown(self, ctx):
        return None if getattr(self, "is_flag", False) else display(self, ctx)

    return shown


if hasattr(typer.core, "TyperOption") and hasattr(typer.core.TyperOption, "display_type_rich"):
    typer.core.TyperOption.display_type_rich = _flag_type(typer.core.TyperOption.display_type_rich)


def examples(*lines: str) -> str:
    """A command's help epilog: its examples, one command per line."""
    return "**Examples**\n\n" + "\n\n".join(f"`{line}`" for line in lines)


DateCol = Annotated[Optional[str], typer.Option("--date-col", help="Name of the date column when it is not detected.", rich_help_panel="Input")]
ColMap = Annotated[Optional[list[str]], typer.Option("--col", help="Map a field to an odd header, e.g. `--col open=Opening` (repeatable).", rich_help_panel="Input")]
AckOpt = Annotated[Optional[list[str]], typer.Option(
    "--ack", metavar="DATE", rich_help_panel="Input",
    help="Acknowledge a data warning's date, YYYY-MM-DD (a real fall, a known gap): it is not warned about "
    "again (repeatable; also $FINHRM_ACK). `train` records it in the run, so its predict and evaluate stay quiet too.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Hide progress.")]
RunArg = Annotated[Optional[str], typer.Argument(metavar="RUN", help="The run, as with -m/--model (kept for compatibility).", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="A run folder, a run's name, or its model.safetensors (default: the newest finished run trained on DATA's series; without DATA, the newest finished run).", show_default=False)]
CoverageOpt = Annotated[float, typer.Option("--coverage", min=0.01, max=0.99, help="Prediction interval coverage.")]


class Intervals(str, Enum):
    adaptive = "adaptive"
    split = "split"


IntervalsOpt = Annotated[Intervals, typer.Option(
    "--intervals",
    help="adaptive: conformal intervals that learn from each outcome after the training period "
    "(adaptive conformal inference); split: the fixed validation residuals.")]
ActOpt = Annotated[Optional[bool], typer.Option("--act/--all-steps", help="--act: stop each sample where its ACT Q head says halt; --all-steps: run every segment. Default: the run's act_inference.", show_default=False)]


class Loss(str, Enum):
    huber = "huber"
    mse = "mse"
    mae = "mae"


class ActTraining(str, Enum):
    every = "every"
    carry = "carry"


class ActInference(str, Enum):
    halted = "halted"
    all = "all"


class Split(str, Enum):
    test = "test"
    val = "val"
    all = "all"


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def _one_line_usage_error(error) -> None:
    """A mistyped option or a bad value, as every other user error: one ``error:`` line on
    stderr naming the fix (typer draws a box with the usage above it); exit code 2 as before."""
    import sys

    if error.__class__.__name__ == "NoArgsIsHelpError":  # typer printed the help already
        return
    ctx = getattr(error, "ctx", None)
    message = " ".join(str(error.format_message()).split()).rstrip(".")
    where = f" (`{ctx.command_path} --help` shows the usage)" if ctx is not None else ""
    print(f"error: {message}{where}{'' if message.endswith('?') and not where else '.'}", file=sys.stderr)


try:
    from typer import rich_utils as _rich_utils
except ImportError:  # pragma: no cover - typer without rich prints click's own lines
    _rich_utils = None
if _rich_utils is not None and hasattr(_rich_utils, "rich_format_error"):
    _rich_utils.rich_format_error = _one_line_usage_error
