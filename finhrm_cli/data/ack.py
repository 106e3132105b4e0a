"""Acknowledged dates: data warnings the user has already checked (``--ack DATE``).

A dated data warning (``reading._suspicious``: a long gap, a one-day jump) ends with the
``--ack`` that silences it; a date given with ``--ack`` (or recorded in a run's or a
prepared folder's source, or in ``FINHRM_ACK``) is left out of the warning, and a warning
left with no date is not given.  Warnings without a date are never affected.
"""

from __future__ import annotations

import datetime as _dt
import re

from finhrm_cli.errors import UsageError

ACK_FLAG = "--ack"
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}")
_HINT = re.compile(r"--ack (\d{4}-\d{2}-\d{2})")
_MORE = re.compile(r" and \d+ more\b")


def parse_ack(items, what: str = ACK_FLAG) -> list[str]:
    """``["2000-09-29", ...]`` (repeatable ``--ack``; ``what`` names the flag or variable in
    the error) -> the sorted distinct ISO dates; a malformed one is one ``UsageError``."""
    out: set[str] = set()
    for item in items or []:
        text = str(item).strip()
        try:
            if not _ISO.fullmatch(text):
                raise ValueError
            out.add(_dt.date.fromisoformat(text).isoformat())
        except ValueError:
            raise UsageError(
                f"{what} {item!r}: expected a date as YYYY-MM-DD, for example {ACK_FLAG} 2000-09-29 "
                "(the date a data warning names)."
            ) from None
    return sorted(out)


def parse_ack_env(value: str | None, name: str = "FINHRM_ACK") -> list[str]:
    """The dates of an environment variable: ISO dates separated by commas or spaces."""
    return parse_ack([v for v in re.split(r"[,\s]+", value or "") if v], what=name)


def day_numbers(ack) -> set[int]:
    """Acknowledged ISO dates as days since 1970-01-01 (how ``reading`` holds dates)."""
    epoch = _dt.date(1970, 1, 1)
    return {(_dt.date.fromisoformat(d) - epoch).days for d in ack or ()}


def hint(dates: list[str]) -> str:
    """The tail of a dated warning: how to acknowledge the dates it names."""
    if not dates:
        return ""
    what = "a known date" if len(dates) == 1 else "known dates"
    return f", or acknowledge {what} with {' '.join(f'{ACK_FLAG} {d}' for d in dates)}"


def unacknowledged(warnings: list[str], ack) -> list[str]:
    """Stored warnings (read before ``ack`` was known: a prepared folder's) less those whose
    every date to acknowledge is in ``ack`` (and that name no further ones, "and N more")."""
    ack = set(ack or ())
    if not ack:
        return list(warnings)
    out = []
    for w in warnings:
        dates = _HINT.findall(w)
        if not (dates and set(dates) <= ack and not _MORE.search(w)):
            out.append(w)
    return out


def check_ack_list(value) -> str | None:
    """Why a stored list of acknowledged dates (config.json, meta.json) is not one (None when it is)."""
    if not isinstance(value, list):
        return "must be a list of dates (YYYY-MM-DD)"
    try:
        parse_ack(value)
    except UsageError:
        return f"must be a list of dates (YYYY-MM-DD), got {value!r:.60}"
    if not all(isinstance(v, str) for v in value):
        return "must be a list of dates (YYYY-MM-DD)"
    return None
