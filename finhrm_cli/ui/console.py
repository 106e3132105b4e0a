"""The two rich consoles and the small helpers every view uses.

Data goes to stdout (``out``: tables, JSON, CSV); progress, warnings and errors go to stderr
(``err``), so ``finhrm predict data.csv --format csv > out.csv`` stays clean.  ``NO_COLOR``
is honoured by rich itself.  The number formatters live here too, so each view formats a
number the same way.

Other modules read ``out`` and ``err`` as ``console.out`` / ``console.err`` at call time
(never ``from ... import out``): a test that swaps a console then sees every view use it.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


# ---------------------------------------------------------------------------- messages
def error(message: str) -> None:
    """One line on stderr: the whole of a user error."""
    err.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)


def warn(message: str) -> None:
    err.print(Text("warning: ", style="yellow") + Text(message), soft_wrap=True)


def note(message: str) -> None:
    err.print(Text(message, style="dim"), soft_wrap=True)


# ---------------------------------------------------------------------------- stdout
STDOUT = "standard output"


class stdout_errors:
    """Name standard output in an OSError raised while writing to it (a full device, a
    closed pipe), so the error handler can say where the write failed."""

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = STDOUT
        return False


def print_json(obj: Any) -> None:
    """One JSON document on stdout, nothing else (no colour, no wrapping)."""
    from finhrm_cli.fsutil import dumps_strict

    with stdout_errors():
        sys.stdout.write(dumps_strict(obj) + "\n")
        sys.stdout.flush()


def show(*renderables) -> None:
    """Print rich renderables (tables, charts) on stdout."""
    with stdout_errors():
        for r in renderables:
            out.print(r)


# ---------------------------------------------------------------------------- numbers
def fmt_num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return f"{x:,}"
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(xf):
        return "-"
    if xf != 0 and (abs(xf) >= 1e6 or abs(xf) < 10 ** (-digits)):
        return f"{xf:.{digits}g}"
    return f"{xf:,.{digits}f}"


def fmt_pct(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    xf = float(x)
    return "-" if math.isnan(xf) else f"{100 * xf:.{digits}f}%"


def fmt_p(p: Any) -> str:
    """A p-value: three decimals, '<0.001' below that, '-' when there is none."""
    if p is None or not isinstance(p, (int, float)) or p != p:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
