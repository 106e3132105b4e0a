"""Creating a run folder, and taking back a creation that did not finish.

finhrm deletes only what it can prove it made: a new folder gets a marker naming it first
(``MARKER``), and only a folder holding that marker, with nothing foreign inside, is ever
removed (``clean_abandoned``, ``discard_creation``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import stat
import uuid
from pathlib import Path

from finhrm_cli import config as cfgmod
from finhrm_cli.errors import RunError
from finhrm_cli.fsutil import atomic_write_text, temp_target
from finhrm_cli.run.files import CONFIG, DATA_DIR, LOCK, MARKER, MEMBERS_DIR
from finhrm_cli.run.lock import RunLock, is_locked


def runs_root(root) -> Path:
    """``root`` (``--out``) or the runs home."""
    return Path(root).expanduser() if root is not None else cfgmod.runs_dir()


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip(".-")
    return name[:80] or "run"


def new_run_dir(data_name: str, root=None) -> Path:
    """A new run folder ``{data_name}-{YYYYmmdd-HHMMSS}`` (then -2, -3, ...), holding only its
    marker (``MARKER``: the folder's name and a random id), which is what later lets finhrm
    recognise a creation it abandoned as its own (``clean_abandoned``).

    The folder appears whole: it is made as a hidden staging folder (``.NAME.creating-ID``)
    with the marker written inside, then renamed into place, so no instant leaves a run
    folder that finhrm could not prove it made (a kill mid-way leaves the staging folder,
    which is recognisably finhrm's)."""
    base = runs_root(root)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{base}: cannot create the runs folder ({exc.strerror}); pass --out DIR or set FINHRM_HOME.") from exc
    clean_abandoned(base)
    stem = f"{_safe_name(data_name)}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    ident = uuid.uuid4().hex
    staging = base / f".{stem}.creating-{ident}"
    try:
        staging.mkdir()
    except OSError as exc:
        raise RunError(f"{base}: cannot create a run folder there ({exc.strerror}).") from exc
    try:
        for i in range(1, 10_000):
            path = base / (stem if i == 1 else f"{stem}-{i}")
            if path.exists() or path.is_symlink():
                continue
            atomic_write_text(staging / MARKER, json.dumps({"run": path.name, "id": ident}) + "\n")
            try:
                os.rename(staging, path)  # (refused when a non-empty folder of that name appeared meanwhile)
            except OSError:
                if path.exists():
                    continue
                raise
            return path
        raise RunError(f"{base}: too many runs named {stem}; pass --out DIR.")  # pragma: no cover
    except OSError as exc:
        raise RunError(f"{base}: cannot create a run folder there ({exc.strerror}).") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)  # ours, made above: the marker at most


_RUN_NAME = re.compile(r"-\d{8}-\d{6}(-\d+)?$")  # the tail new_run_dir gives every run
_STAGING = re.compile(r"^\..+-\d{8}-\d{6}\.creating-(?P<id>[0-9a-f]{32})$")


def _own_marker(p: Path) -> bool:
    """``p`` holds the marker ``new_run_dir`` wrote into it, naming ``p`` itself."""
    try:
        st = (p / MARKER).lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > 4096:
            return False
        m = json.loads((p / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(m, dict) and m.get("run") == p.name and isinstance(m.get("id"), str) and len(m["id"]) == 32


def _data_files_only(data: Path) -> bool:
    """``data/`` holds nothing but what ``save_prepared`` writes: meta.json, features.parquet
    and their temp files, directly or in one level of per-series folders."""
    from finhrm_cli.data.reading import PREPARED_FRAME, PREPARED_META

    ours = {PREPARED_META, PREPARED_FRAME}

    def plain(f: Path) -> bool:
        return (f.name in ours or temp_target(f.name) in ours) and not f.is_symlink() and f.is_file()

    for entry in data.iterdir():
        if entry.is_symlink():
            return False
        if entry.is_dir():
            if not all(plain(f) for f in entry.iterdir()):
                return False
        elif not plain(entry):
            return False
    return True


def _plain_tree(folder: Path) -> bool:
    """``folder`` holds only folders and regular files, no symlink anywhere."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    return all(not f.is_symlink() and (f.is_dir() or f.is_file()) for f in folder.rglob("*"))


def _staging(p: Path) -> bool:
    """``p`` is a staging folder ``new_run_dir`` left (killed before the rename): its name,
    and nothing inside but the marker or the marker's temp file."""
    if not _STAGING.match(p.name) or p.is_symlink() or not p.is_dir():
        return False
    return all(c.name == MARKER or temp_target(c.name) == MARKER for c in p.iterdir())


def abandoned_creation(p: Path) -> bool:
    """``p`` is a run folder whose creation stopped before config.json: named as
    ``new_run_dir`` names runs, holding its own marker, and nothing but the marker,
    ``train.lock`` and the prepared data (checked file by file); or a staging folder of
    ``new_run_dir``'s that never became a run."""
    if _staging(p):
        return True
    if p.is_symlink() or not p.is_dir() or not _RUN_NAME.search(p.name) or not _own_marker(p):
        return False
    names = {c.name for c in p.iterdir()}
    if not names <= {MARKER, DATA_DIR, LOCK, MEMBERS_DIR} or (p / CONFIG).exists():
        return False
    if MEMBERS_DIR in names and not _plain_tree(p / MEMBERS_DIR):  # an ensemble's copied members
        return False
    if DATA_DIR in names:
        data = p / DATA_DIR
        if data.is_symlink() or not data.is_dir() or not _data_files_only(data):
            return False
    return True


def clean_abandoned(base, older_than: float | None = None) -> list[Path]:
    """Remove run folders whose creation was killed before config.json was written
    (``abandoned_creation``: finhrm's marker naming the folder, nothing foreign inside),
    unlocked and untouched for ``older_than`` seconds (default ``fsutil.STALE_SECONDS``).
    A folder without finhrm's own marker is never touched, whatever its name or content."""
    import time

    from finhrm_cli.fsutil import STALE_SECONDS

    limit = STALE_SECONDS if older_than is None else older_than
    removed = []
    try:
        entries = list(Path(base).iterdir())
    except OSError:
        return removed
    for p in entries:
        try:
            if not abandoned_creation(p) or is_locked(p):
                continue
            files = [p, *p.rglob("*")]
            if time.time() - max(f.lstat().st_mtime for f in files) <= limit:
                continue
            shutil.rmtree(p)
            removed.append(p)
        except OSError:
            continue
    return removed


def claim_folder(path: Path, option: str) -> Path:
    """An output folder finhrm may write into (``prepare``): a new one, made now with finhrm's
    marker naming it (as ``new_run_dir`` marks a run), an empty one, or one holding that
    marker already (made by an earlier ``prepare``).  Any other existing folder is refused,
    untouched: finhrm never writes over a folder it cannot prove it made."""
    from finhrm_cli.errors import UsageError

    p = Path(path).expanduser()
    if p.is_symlink() or (p.exists() and not p.is_dir()):
        raise UsageError(f"{option} {p}: exists and is not a folder; pick a new folder.")
    if p.is_dir() and not _own_marker(p) and any(p.iterdir()):
        raise UsageError(
            f"{option} {p}: exists and is not a prepared folder finhrm made (no {MARKER} naming it), so "
            "finhrm will not write over it; pick a new or empty folder with -o DIR, or delete it yourself."
        )
    p.mkdir(parents=True, exist_ok=True)
    if not _own_marker(p):
        atomic_write_text(p / MARKER, json.dumps({"run": p.name, "id": uuid.uuid4().hex}) + "\n")
    return p


def discard_creation(run_dir: Path, lock: "RunLock | None" = None) -> bool:
    """Undo ``new_run_dir`` after the run's data or config failed to be written (disk full,
    Ctrl-C): release ``lock`` and remove the folder, only if it is still a creation of
    finhrm's (``abandoned_creation``).  True when removed; never raises."""
    if lock is not None:
        lock.release()
    try:
        if abandoned_creation(Path(run_dir)):
            shutil.rmtree(run_dir)
            return True
    except OSError:
        pass
    return False


def versions() -> dict:
    """What made a run: finhrm, MLX, numpy and Python versions and the BLAS MLX runs on."""
    import platform

    import numpy as np

    from finhrm_cli import __version__, blas

    mx = blas.mlx_core()
    return {
        "finhrm": __version__,
        "mlx": getattr(mx, "__version__", "?"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "blas": blas.info().get("kind"),
    }
