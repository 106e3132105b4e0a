"""``predict``'s forecasts as files (JSON or CSV, to ``--output`` or to stdout), and
``evaluate --csv``'s scored rows.

Split from the views because this is data, not a picture: it must be byte-stable for
scripts (``finhrm predict ... --format csv > out.csv``), written atomically to a file, and
a failed write must name the file the user asked for.  The table view is in ``views``.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

from finhrm_cli.ui.console import note, stdout_errors

PRED_FIELDS = ["ticker", "date", "target_date", "close", "pred_high", "pred_low", "pred_high_lo", "pred_high_hi",
               "pred_low_lo", "pred_low_hi"]
BACKTEST_FIELDS = ["split", "actual_high", "actual_low"]  # predict --all


def forecast_text(result: dict, fmt: str) -> str | None:
    """The forecasts as JSON (the whole result) or CSV (one line per row); None for a table."""
    rows = result["rows"]
    if fmt == "json":
        from finhrm_cli.fsutil import dumps_strict

        return dumps_strict(result) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        levels = [k for k in (rows[0] if rows else {}) if k.startswith(("pred_high_q", "pred_low_q"))]
        fields = PRED_FIELDS + levels + (BACKTEST_FIELDS if rows and "split" in rows[0] else []) + ["run"]
        wr = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        wr.writeheader()
        for r in rows:
            wr.writerow({k: _csv_cell(r[k]) for k in fields})
        return buf.getvalue()
    return None


def _csv_cell(v):
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else (round(v, 6) if isinstance(v, float) else v)


def write_rows(rows: list[dict], output) -> None:
    """``evaluate --csv``: the scored rows as CSV, written atomically to ``output``; columns
    that are empty on every row (no ticker, no fold, no intervals) are left out."""
    fields = [k for k in (rows[0] if rows else {}) if any(r.get(k) is not None for r in rows)]
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: _csv_cell(r.get(k)) for k in fields})
    _write_file(output, buf.getvalue())
    note(f"{len(rows):,} scored row(s) written to {output}")


def _write_file(output, text: str) -> None:
    from finhrm_cli.fsutil import atomic_write_text

    try:  # (the command line checked the path before any work: run.files.check_output)
        atomic_write_text(Path(output).expanduser(), text)
    except OSError as exc:
        # a full disk fails on the hidden temp file beside FILE, or names no file at all:
        # name the file the user asked for
        raise OSError(exc.errno, exc.strerror or str(exc), str(output)) from exc


def write_forecasts(result: dict, fmt: str, output=None) -> bool:
    """Write the forecasts as ``fmt`` to ``output`` (a table asked for a file is written as
    CSV, the useful format there) or, for JSON and CSV, to stdout.  False when nothing was
    written: a table for the terminal, which the caller draws."""
    text = forecast_text(result, fmt)
    if output is not None:
        _write_file(output, text if text is not None else forecast_text(result, "csv"))
        note(f"{len(result['rows']):,} prediction(s) written to {output}")
        return True
    if text is None:
        return False
    with stdout_errors():
        sys.stdout.write(text)
        sys.stdout.flush()
    return True
