"""Every file name of a run folder, and nothing else: the one place that spells them.

A run is one folder, never overwritten::

    model.safetensors   best weights, frozen buffers included (H_init, L_init, head stats)
    config.json         settings, normaliser, versions, calibrations (``run.config.RunConfig``)
    history.jsonl       one line per evaluation
    metrics.json        final metrics; written last, so its presence marks the run finished
    state/              state.safetensors (current weights, optimizer, rng key; the JSON
                        bookkeeping rides in its metadata) and state.json (a readable copy)
    data/               the prepared copy of the series the run was trained on
    members/            an ensemble run's member runs, copied (``run.ensemble``)
    train.lock          held while a process trains or finishes the run
    .finhrm-run         written first: the folder's own name and a random id
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from finhrm_cli.errors import UsageError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
HISTORY = "history.jsonl"
METRICS = "metrics.json"
STATE_DIR = "state"
STATE_ARRAYS = "state.safetensors"
STATE_JSON = "state.json"
STATE_META_KEY = "finhrm_state"  # the safetensors metadata key holding the state's JSON
DATA_DIR = "data"
MEMBERS_DIR = "members"
LOCK = "train.lock"
MARKER = ".finhrm-run"


def temp_names() -> set[str]:
    """The files a run folder or a prepared folder may have interrupted temp copies of
    (safetensors files by stem, as their temp files are named)."""
    from finhrm_cli.data.reading import PREPARED_FRAME, PREPARED_META

    return {CONFIG, HISTORY, METRICS, STATE_JSON, Path(WEIGHTS).stem, Path(STATE_ARRAYS).stem, MARKER,
            PREPARED_META, PREPARED_FRAME}


def run_folder_of(path: Path) -> Path | None:
    """The run folder ``path`` lies in (itself or an ancestor holding config.json next to
    model.safetensors, state/ or history.jsonl), else None."""
    for d in [path, *path.parents]:
        try:
            if (d / CONFIG).is_file() and any((d / f).exists() for f in (WEIGHTS, STATE_DIR, HISTORY, MEMBERS_DIR)):
                return d
        except OSError:
            return None
    return None


# ---------------------------------------------------------------------------------------------
# outputs never go into a run


def check_run_free(path: str | os.PathLike, option: str) -> None:
    """Refuse an output path (file or folder) that is, or lies inside, a run folder or the runs home."""
    from finhrm_cli import config as cfgmod

    p = Path(path).expanduser()
    resolved = Path(os.path.realpath(p))
    home = Path(os.path.realpath(cfgmod.runs_dir()))
    run = run_folder_of(resolved)
    if run is not None:
        raise UsageError(
            f"{option} {p}: lies inside the run folder {run}; finhrm never writes outputs into a run, "
            "pick a path outside it."
        )
    if resolved == home or home in resolved.parents:
        raise UsageError(f"{option} {p}: lies inside the runs home {home}; pick a path outside it.")


def check_output(path: str | os.PathLike | None, option: str) -> Path | None:
    """Refuse an output path that exists and is not a regular file (folder, device, FIFO,
    symlink), or that lies inside the runs home or a run folder.  One-line UsageError."""
    if path is None:
        return None
    p = Path(path).expanduser()
    try:
        st = p.lstat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UsageError(f"{option} {p}: cannot use this path ({exc.strerror}); pick another output file.") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = (
            "a symlink" if stat.S_ISLNK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode)
            else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file"
        )
        raise UsageError(f"{option} {p}: exists and is {kind}; finhrm only replaces regular files, pick another output file.")
    check_run_free(p, option)
    return p
