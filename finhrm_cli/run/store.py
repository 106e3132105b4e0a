"""Run folders: create, write atomically, find, list and load.

A run is one folder, never overwritten::

    model.safetensors   best weights, frozen buffers included (H_init, L_init, head stats)
    config.json         model / feature / training config, normalizer, versions, ...
    history.jsonl       one line per evaluation
    metrics.json        final metrics
    state/              state.safetensors (current weights, optimizer, rng key; the JSON
                        bookkeeping rides in its metadata) and state.json (a readable copy)

Every write goes to a temporary file in the same folder, then ``os.replace``: a crash or
Ctrl-C leaves the old file or the new one, never half a file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any

from finhrm_cli import config as cfgmod
from finhrm_cli.fsutil import json_default
from finhrm_cli.errors import RunError
from finhrm_cli.fsutil import atomic_write_text, temp_target, write_error

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
HISTORY = "history.jsonl"
METRICS = "metrics.json"
STATE_DIR = "state"
STATE_ARRAYS = "state.safetensors"
STATE_JSON = "state.json"
MARKER = ".finhrm-run"       # written first into a new run folder: {"run": its name, "id": a random id}
DATA_DIR = "data"
_STATE_META_KEY = "finhrm_state"


def _mx():
    from finhrm_cli.blas import mlx_core

    return mlx_core()


def _root(root) -> Path:
    return Path(root).expanduser() if root is not None else cfgmod.runs_dir()


def _dumps(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, default=json_default, allow_nan=True)


def atomic_save_safetensors(path: Path, arrays: dict, metadata: dict[str, str] | None = None,
                            before_rename=None) -> Path:
    """``mx.save_safetensors`` to a temp name ending in .safetensors next to ``path``,
    fsync, ``before_rename(temp path)`` if given, then ``os.replace``."""
    mx = _mx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp.safetensors"
    try:
        try:
            mx.save_safetensors(str(tmp), arrays, metadata=metadata or {})
        except OSError:
            raise
        except Exception as exc:  # mlx says only "Unable to write N bytes": name the file and the cause
            raise write_error(path, exc) from exc
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return path


# ---------------------------------------------------------------------------------------------
# creating and writing


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip(".-")
    return name[:80] or "run"


def new_run_dir(data_name: str, root=None) -> Path:
    """A new, empty run folder ``{data_name}-{YYYYmmdd-HHMMSS}`` (then -2, -3, ...), holding
    only its marker (``MARKER``: the folder's name and a random id), which is what later lets
    finhrm recognise a creation it abandoned as its own (``clean_abandoned``)."""
    base = _root(root)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{base}: cannot create the runs folder ({exc.strerror}); pass --out DIR or set FINHRM_HOME.") from exc
    clean_abandoned(base)
    stem = f"{_safe_name(data_name)}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 10_000):
        path = base / (stem if i == 1 else f"{stem}-{i}")
        try:
            path.mkdir(exist_ok=False)
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunError(f"{path}: cannot create the run folder ({exc.strerror}).") from exc
        try:
            atomic_write_text(path / MARKER, json.dumps({"run": path.name, "id": uuid.uuid4().hex}) + "\n")
        except BaseException:
            try:
                path.rmdir()  # empty but for a temp file at most: made a moment ago, by us
            except OSError:
                pass
            raise
        return path
    raise RunError(f"{base}: too many runs named {stem}; pass --out DIR.")  # pragma: no cover


LOCK = "train.lock"

try:  # a lock on the run folder while training (POSIX); Windows is not a target, but do not crash there
    import fcntl as _fcntl
except ImportError:  # pragma: no cover
    _fcntl = None


class RunLock:
    """An exclusive, non-blocking lock on a run folder (``flock`` on ``train.lock``) held while
    a run trains or is finalised: a second ``train --resume`` of the same run is refused.
    The kernel drops it when the process dies, so a killed run never stays locked."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        path = self.run_dir / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if _fcntl is not None:
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    pid = os.read(fd, 32).decode("ascii", "replace").strip()
                except OSError:
                    pid = ""
                os.close(fd)
                who = f" (pid {pid})" if pid.isdigit() else ""
                raise RunError(
                    f"{self.run_dir}: another `finhrm train`{who} is using this run; "
                    "wait for it to finish (or stop it) and try again."
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                if _fcntl is not None:
                    _fcntl.flock(self.fd, _fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(run_dir) -> bool:
    """True while some process trains (holds the lock on) ``run_dir``."""
    if _fcntl is None:
        return False
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        _fcntl.flock(fd, _fcntl.LOCK_SH | _fcntl.LOCK_NB)
        _fcntl.flock(fd, _fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


FINISHED, TRAINING, UNFINISHED = "finished", "training", "unfinished"


def run_status(run_dir) -> str:
    """``finished`` (metrics.json, the last file a run writes, is there), ``training`` (a
    process holds its lock) or ``unfinished`` (crashed or interrupted: ``--resume`` it)."""
    run_dir = Path(run_dir)
    if is_locked(run_dir):
        return TRAINING
    return FINISHED if (run_dir / METRICS).is_file() else UNFINISHED


_RUN_NAME = re.compile(r"-\d{8}-\d{6}(-\d+)?$")  # the tail new_run_dir gives every run


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


def abandoned_creation(p: Path) -> bool:
    """``p`` is a run folder whose creation stopped before config.json: named as
    ``new_run_dir`` names runs, holding its own marker, and nothing but the marker,
    ``train.lock`` and the prepared data (checked file by file)."""
    if p.is_symlink() or not p.is_dir() or not _RUN_NAME.search(p.name) or not _own_marker(p):
        return False
    names = {c.name for c in p.iterdir()}
    if not names <= {MARKER, DATA_DIR, LOCK} or (p / CONFIG).exists():
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
    import shutil
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


def discard_creation(run_dir: Path, lock: "RunLock | None" = None) -> bool:
    """Undo ``new_run_dir`` after the run's data or config failed to be written (disk full,
    Ctrl-C): release ``lock`` and remove the folder, only if it is still a creation of
    finhrm's (``abandoned_creation``).  True when removed; never raises."""
    import shutil

    if lock is not None:
        lock.release()
    try:
        if abandoned_creation(Path(run_dir)):
            shutil.rmtree(run_dir)
            return True
    except OSError:
        pass
    return False


def temp_names() -> set[str]:
    """The files a run folder or a prepared folder may have interrupted temp copies of."""
    from finhrm_cli.data.reading import PREPARED_FRAME, PREPARED_META

    return {CONFIG, HISTORY, METRICS, STATE_JSON, Path(WEIGHTS).stem, Path(STATE_ARRAYS).stem, MARKER,
            PREPARED_META, PREPARED_FRAME}


class RunWriter:
    """Writes the files of one run folder, each atomically."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RunWriter({str(self.path)!r})"

    def save_weights(self, model) -> Path:
        """All parameters, frozen buffers included, to model.safetensors, and its sha256 to
        config.json (``load_run`` checks it).

        The weights are rewritten at every better epoch, so the digest must describe whatever
        file is on disk if training dies at any instant.  Two atomic config writes bracket the
        rename: first config.json accepts the old digest and the new one (``weights_sha256_next``),
        then the file is renamed into place, then only the new digest stays.  Whichever of the
        old or new file a crash leaves, config.json accepts it.  Without a config.json (the
        engine used as a library) the weights are written alone."""
        from mlx.utils import tree_flatten

        arrays = dict(tree_flatten(model.parameters()))
        digest: dict = {}

        def before_rename(tmp: Path) -> None:
            if not (self.path / CONFIG).is_file():
                return
            digest["new"] = file_sha256(tmp)
            cfg = read_json(self.path / CONFIG, default={}) or {}
            if not cfg.get("weights_sha256") and (self.path / WEIGHTS).is_file():
                cfg["weights_sha256"] = file_sha256(self.path / WEIGHTS)  # a run made before digests
            cfg["weights_sha256_next"] = digest["new"]
            self.save_config(cfg)

        out = atomic_save_safetensors(self.path / WEIGHTS, arrays, {"format": "finhrm-hrm"}, before_rename)
        if digest:
            cfg = read_json(self.path / CONFIG, default={}) or {}
            cfg["weights_sha256"] = digest["new"]
            cfg.pop("weights_sha256_next", None)
            self.save_config(cfg)
        return out

    def save_config(self, cfg: dict) -> Path:
        return atomic_write_text(self.path / CONFIG, _dumps(cfg) + "\n")

    def update_config(self, updates: dict) -> Path:
        """Merge top-level keys into config.json (created if missing)."""
        cfg = read_json(self.path / CONFIG, default={}) or {}
        cfg.update(updates)
        return self.save_config(cfg)

    def append_history(self, record: dict) -> Path:
        lines = []
        p = self.path / HISTORY
        if p.exists():
            lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        lines.append(_dumps(record, indent=None))
        return atomic_write_text(p, "\n".join(lines) + "\n")

    def write_history(self, records: list[dict]) -> Path:
        """Replace history.jsonl (used on resume to drop records the saved state never saw)."""
        text = "".join(_dumps(r, indent=None) + "\n" for r in records)
        return atomic_write_text(self.path / HISTORY, text)

    def save_metrics(self, metrics: dict) -> Path:
        return atomic_write_text(self.path / METRICS, _dumps(metrics) + "\n")

    def save_state(self, *, weights: dict, optimizer: dict, rng_key, info: dict, ema: dict | None = None) -> Path:
        """Everything ``--resume`` needs: current weights and optimizer state (flat dicts of
        arrays), the rng key and the JSON bookkeeping ``info`` (step, epoch, best so far,
        numpy rng state, history).  One safetensors file holds all of it (the JSON in its
        metadata), so a crash can never pair new arrays with old bookkeeping."""
        arrays = {f"model/{k}": v for k, v in weights.items()}
        arrays.update({f"optimizer/{k}": v for k, v in optimizer.items()})
        arrays.update({f"ema/{k}": v for k, v in (ema or {}).items()})
        arrays["rng/key"] = rng_key
        sdir = self.path / STATE_DIR
        atomic_save_safetensors(sdir / STATE_ARRAYS, arrays, {_STATE_META_KEY: _dumps(info, indent=None)})
        atomic_write_text(sdir / STATE_JSON, _dumps(info) + "\n")
        return sdir


# ---------------------------------------------------------------------------------------------
# reading


def read_json(path, default: Any = ...) -> Any:
    """Parse a JSON file; missing -> ``default`` (or RunError if none given); corrupt -> RunError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if default is ...:
            raise RunError(f"{path}: missing; the run folder is incomplete.") from None
        return default
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror}).") from exc
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, a 5,000-digit int
        raise RunError(f"{path}: not valid JSON ({exc}); the file is corrupt, train a new run.") from exc


def read_config(run_dir, required: tuple[str, ...] = ("model",)) -> dict:
    """config.json of a run, checked by ``config.validate_run_config`` (types, bounds, names);
    ``required`` lists the keys that must be there (``config.RUN_KEYS`` for the commands)."""
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / CONFIG, default=None)
    if cfg is None:
        raise RunError(f"{run_dir}: not a finhrm run (no {CONFIG}); pass a run folder made by `finhrm train`.")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise RunError(f"{run_dir / CONFIG}: has no model section; it is not a finhrm run config.")
    return cfgmod.validate_run_config(cfg, run_dir / CONFIG, required)


def read_history(run_dir, warnings: list[str] | None = None) -> list[dict]:
    """The records of history.jsonl.  A line that is not a JSON object (damaged, foreign or
    edited) is skipped, never fatal; with ``warnings``, one message per file says how many."""
    p = Path(run_dir) / HISTORY
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        if warnings is not None:
            warnings.append(f"{p}: cannot read ({exc.strerror}); the training curve is left out.")
        return []
    out, bad, first = [], 0, None
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            rec = None
        if isinstance(rec, dict):
            out.append(rec)
        else:
            bad += 1
            first = first or i
    if bad and warnings is not None:
        warnings.append(f"{p}: skipped {bad} line(s) that are not JSON objects (first: line {first}).")
    return out


def _created_ts(run_dir: Path) -> float:
    cfg_path = run_dir / CONFIG
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        created = cfg.get("created") if isinstance(cfg, dict) else None
        if created:
            return _dt.datetime.fromisoformat(str(created)).timestamp()
    except (OSError, ValueError, TypeError, RecursionError, OverflowError):
        pass
    try:
        return cfg_path.stat().st_mtime
    except OSError:
        return 0.0


def _runs(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    return [p for p in base.iterdir() if p.is_dir() and (p / CONFIG).is_file()]


def resolve_run(ref: str | os.PathLike | None, root=None) -> Path:
    """Find a run: None -> the latest; else a run folder, a path to its model.safetensors,
    a run name under the runs folder, or a unique prefix of one."""
    base = _root(root)
    if ref is None or str(ref) == "":
        runs = _runs(base)
        if not runs:
            raise RunError(f"no runs yet under {base}; train one with `finhrm train DATA`.")
        finished = [p for p in runs if run_status(p) == FINISHED]
        if not finished:
            latest = max(runs, key=lambda p: (_created_ts(p), p.name))
            raise RunError(
                f"no finished run under {base} (the latest, {latest.name}, is {run_status(latest)}); "
                f"resume it with `finhrm train --resume {latest.name}`, or name a run explicitly."
            )
        return max(finished, key=lambda p: (_created_ts(p), p.name))
    p = Path(ref).expanduser()
    if p.is_file():
        if p.suffix == ".safetensors" and (p.parent / CONFIG).is_file():
            return p.parent
        raise RunError(f"{p}: not a run; pass a run folder or its model.safetensors (next to config.json).")
    if p.is_dir():
        if (p / CONFIG).is_file():
            return p
        raise RunError(f"{p}: not a finhrm run (no {CONFIG}); pass a folder made by `finhrm train`.")
    name = str(ref)
    if os.sep not in name and "/" not in name:
        cand = base / name
        if (cand / CONFIG).is_file():
            return cand
        matches = sorted(q for q in _runs(base) if q.name.startswith(name))
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(q.name for q in matches[:5])
            raise RunError(f"run {name!r} is ambiguous under {base} ({names}...); give the full name.")
    raise RunError(
        f"run {name!r} not found: no such folder and no run of that name under {base}; "
        "list runs with `finhrm inspect --list`."
    )


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _best_val_mae(run_dir: Path) -> float | None:
    metrics = read_json(run_dir / METRICS, default=None) if (run_dir / METRICS).exists() else None
    try:
        if isinstance(metrics, dict):
            if isinstance(metrics.get("best_val_mae"), (int, float)):
                return float(metrics["best_val_mae"])
            res = (metrics.get("val") or {}).get("results") or {}
            m = res.get("finhrm") or {}
            if "mae_high" in m and "mae_low" in m:
                return (float(m["mae_high"]) + float(m["mae_low"])) / 2
    except (AttributeError, TypeError, ValueError):
        pass
    vals = [h.get("val_mae") for h in read_history(run_dir)]
    vals = [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    return min(vals) if vals else None


def list_runs(root=None) -> list[dict]:
    """Runs under the runs folder, newest first."""
    out = []
    for p in _runs(_root(root)):
        try:
            cfg = read_json(p / CONFIG, default={})
        except RunError:
            cfg = {}
        cfg = cfg if isinstance(cfg, dict) else {}
        src = cfg.get("source") if isinstance(cfg.get("source"), dict) else {}
        data = src.get("path") or cfg.get("data")
        ts = _created_ts(p)
        try:
            best = _best_val_mae(p)
        except RunError:
            best = None
        created = cfg.get("created")
        out.append({
            "name": p.name,
            "path": str(p),
            "data": data if isinstance(data, str) else None,
            "created": created if isinstance(created, str) and created else
            _dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds"),
            "size": _dir_size(p),
            "best_val_mae": best,
            "has_weights": (p / WEIGHTS).is_file(),
            "status": run_status(p),
            "_ts": ts,
        })
    out.sort(key=lambda r: (r["_ts"], r["name"]), reverse=True)
    for r in out:
        del r["_ts"]
    return out


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_weights(model, path, sha256: tuple[str, ...] = ()) -> None:
    """Load ``path`` into ``model`` strictly (every array, right shapes, finite).  With
    ``sha256`` (the digests config.json accepts), the file's own digest must be one of them.
    The digest is kept as ``model._finhrm_digest``."""
    mx = _mx()
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no weights file; the run has not finished an epoch yet (resume it or train again).")
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror}).") from exc
    if sha256:
        if digest not in sha256:
            raise RunError(
                f"{path.name} in {path.parent} does not match its checksum: the file is corrupted; "
                "retrain or restore it."
            )
    try:
        weights = mx.load(str(path))
        if not isinstance(weights, dict):
            raise ValueError("not a safetensors weights file")
        model.load_weights(list(weights.items()), strict=True)
    except Exception as exc:  # corrupt bytes, foreign file, wrong shapes: all one message
        detail = " ".join(str(exc).split())[:200]
        raise RunError(f"{path}: cannot load weights ({detail}); the file is corrupt or from another model.") from exc
    bad = [k for k, v in weights.items() if not bool(mx.all(mx.isfinite(v)).item())]
    if bad:
        raise RunError(f"{path}: weights contain NaN or infinity ({bad[0]}); train the run again.")
    model._finhrm_digest = digest  # names the weights in the forecast cache (finhrm_cli.forecast.memo)


def load_run(path, required: tuple[str, ...] = ("model",)) -> tuple[Any, dict]:
    """Rebuild the model from config.json (checked, see ``read_config``) and load
    model.safetensors, checking it against the digest config.json records (runs made before
    the digest existed load unchecked).  -> (model, config)."""
    from finhrm_cli.config import ModelConfig
    from finhrm_cli.errors import UsageError
    from finhrm_cli.model.hrm import HRM

    run_dir = Path(path) if path is not None and Path(path).is_dir() else resolve_run(path)
    cfg = read_config(run_dir, required)
    try:
        mcfg = cfgmod.from_dict(ModelConfig, cfg["model"])
        model = HRM(mcfg)
    except (TypeError, ValueError, UsageError) as exc:
        raise RunError(f"{run_dir / CONFIG}: the model section is invalid ({exc}).") from exc
    load_weights(model, run_dir / WEIGHTS, tuple(cfg[k] for k in cfgmod.WEIGHTS_HASH_KEYS if cfg.get(k)))
    model.eval()
    model._finhrm_blend = cfg.get("blend")  # the linear partner (finhrm_cli.forecast.linear), checked above
    return model, cfg


def load_state(path) -> dict:
    """The resumable state of a run (``path`` is the run or its state folder):
    {"info": dict, "weights": {name: array}, "optimizer": {name: array}, "rng_key": array,
    "ema": {name: array} (empty when the run does not average weights)}."""
    mx = _mx()
    path = Path(path)
    sdir = path if (path / STATE_ARRAYS).exists() else path / STATE_DIR
    f = sdir / STATE_ARRAYS
    if not f.is_file():
        raise RunError(f"{path}: no saved training state ({STATE_DIR}/{STATE_ARRAYS} missing); start a new run with `finhrm train DATA`.")
    try:
        arrays, meta = mx.load(str(f), return_metadata=True)
        info = json.loads(meta[_STATE_META_KEY]) if _STATE_META_KEY in meta else read_json(sdir / STATE_JSON)
        out = {"info": info, "weights": {}, "optimizer": {}, "rng_key": arrays["rng/key"], "path": str(sdir),
               "ema": {}}
    except RunError:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise RunError(f"{f}: cannot read the training state ({detail}); it is corrupt, start a new run.") from exc
    for k, v in arrays.items():
        group, _, name = k.partition("/")
        if group in ("model", "optimizer", "ema"):
            out[{"model": "weights"}.get(group, group)][name] = v
    return out
