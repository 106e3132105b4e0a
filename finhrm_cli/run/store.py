"""Run folders: write atomically, find, list and load (the file names: ``run.files``).

Every write goes to a temporary file in the same folder, then ``os.replace``: a crash or
Ctrl-C leaves the old file or the new one, never half a file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

from finhrm_cli.fsutil import json_default
from finhrm_cli.errors import RunError
from finhrm_cli.fsutil import atomic_write_text, file_sha256, write_error
from finhrm_cli.forecast.forecaster import Forecaster
from finhrm_cli.run.config import RunConfig
from finhrm_cli.run.create import runs_root
from finhrm_cli.run.files import (
    CONFIG, HISTORY, METRICS, STATE_ARRAYS, STATE_DIR, STATE_JSON, STATE_META_KEY, WEIGHTS,
)
from finhrm_cli.run.lock import run_status



def _mx():
    from finhrm_cli.blas import mlx_core

    return mlx_core()


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
# writing


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

    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    def has_model_config(self) -> bool:
        """config.json exists and records the model's settings."""
        return "model" in (read_json(self.path / CONFIG, default={}) or {})

    def save_config(self, cfg: "RunConfig | dict") -> Path:
        if isinstance(cfg, RunConfig):
            cfg = cfg.to_dict()
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

    def save_state(self, *, weights: dict, optimizer: dict, rng_key, info: dict, ema: dict | None = None,
                   carry: dict | None = None) -> Path:
        """Everything ``--resume`` needs: current weights and optimizer state (flat dicts of
        arrays), the rng key and the JSON bookkeeping ``info`` (step, epoch, best so far,
        numpy rng state, history).  One safetensors file holds all of it (the JSON in its
        metadata), so a crash can never pair new arrays with old bookkeeping."""
        arrays = {f"model/{k}": v for k, v in weights.items()}
        arrays.update({f"optimizer/{k}": v for k, v in optimizer.items()})
        arrays.update({f"ema/{k}": v for k, v in (ema or {}).items()})
        arrays.update({f"carry/{k}": v for k, v in (carry or {}).items()})
        arrays["rng/key"] = rng_key
        sdir = self.path / STATE_DIR
        atomic_save_safetensors(sdir / STATE_ARRAYS, arrays, {STATE_META_KEY: _dumps(info, indent=None)})
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


def read_config(run_dir, required: tuple[str, ...] = ("model",)) -> RunConfig:
    """config.json of a run, checked and typed (``RunConfig.from_dict``: types, bounds,
    names); ``required`` lists the keys that must be there (``RUN_KEYS`` for the commands)."""
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / CONFIG, default=None)
    if cfg is None:
        raise RunError(f"{run_dir}: not a finhrm run (no {CONFIG}); pass a run folder made by `finhrm train`.")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise RunError(f"{run_dir / CONFIG}: has no model section; it is not a finhrm run config.")
    return RunConfig.from_dict(cfg, run_dir / CONFIG, required)


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


def resolve_run(ref: str | os.PathLike, root=None) -> Path:
    """Find a run named by the user: a run folder, a path to its model.safetensors, a run
    name under the runs folder, or a unique prefix of one.  Without a name, the commands
    choose a run with ``run.choose.choose_run`` (one rule for all of them)."""
    base = runs_root(root)
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


def list_runs(root=None, sizes: bool = True) -> list[dict]:
    """Runs under the runs folder, newest first (``sizes=False``: without the folder sizes
    and validation MAEs, which read every file)."""
    out = []
    for p in _runs(runs_root(root)):
        try:
            cfg = read_json(p / CONFIG, default={})
        except RunError:
            cfg = {}
        cfg = cfg if isinstance(cfg, dict) else {}
        src = cfg.get("source") if isinstance(cfg.get("source"), dict) else {}
        data = src.get("path") or cfg.get("data")
        ts = _created_ts(p)
        try:
            best = _best_val_mae(p) if sizes else None
        except RunError:
            best = None
        created = cfg.get("created")
        parent = cfg.get("parent") if isinstance(cfg.get("parent"), dict) else {}
        out.append({
            "parent": parent.get("name") if isinstance(parent.get("name"), str) else None,
            "name": p.name,
            "path": str(p),
            "data": data if isinstance(data, str) else None,
            "created": created if isinstance(created, str) and created else
            _dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds"),
            "size": _dir_size(p) if sizes else None,
            "best_val_mae": best,
            "has_weights": (p / WEIGHTS).is_file(),
            "status": run_status(p),
            "_ts": ts,
        })
    out.sort(key=lambda r: (r["_ts"], r["name"]), reverse=True)
    for r in out:
        del r["_ts"]
    return out




def load_weights(model, path, sha256: tuple[str, ...] = ()) -> str:
    """Load ``path`` into ``model`` strictly (every array, right shapes, finite).  With
    ``sha256`` (the digests config.json accepts), the file's own digest must be one of them.
    Returns the file's digest (it names the weights in the forecast cache)."""
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
    return digest


def load_run(path, required: tuple[str, ...] = ("model",)) -> tuple[Forecaster, RunConfig]:
    """Rebuild the model from config.json (checked, see ``read_config``) and load
    model.safetensors, checking it against the digest config.json records (runs made before
    the digest existed load unchecked).  An ensemble run loads its members instead
    (``run.ensemble``).  -> (the run's Forecaster, its RunConfig)."""
    from finhrm_cli.errors import UsageError
    from finhrm_cli.model.hrm import HRM

    run_dir = Path(path) if path is not None and Path(path).is_dir() else resolve_run(path)
    rc = read_config(run_dir, required)
    if rc.is_ensemble():  # the mean of its member runs (``run.ensemble``)
        from finhrm_cli.run.ensemble import load_ensemble

        return load_ensemble(run_dir, rc, load_run)
    try:
        model = HRM(rc.model)
    except (TypeError, ValueError, UsageError) as exc:
        raise RunError(f"{run_dir / CONFIG}: the model section is invalid ({exc}).") from exc
    digest = load_weights(model, run_dir / WEIGHTS, rc.weight_digests())
    model.eval()
    return Forecaster(model, digest, blend=rc.blend, conformal=rc.conformal,
                      halt_calibration=rc.halt_calibration, act=rc.halted_inference()), rc


def has_state(run_dir) -> bool:
    """The run has a resumable training state (written at its first checkpoint)."""
    return (Path(run_dir) / STATE_DIR / STATE_ARRAYS).is_file()


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
        info = json.loads(meta[STATE_META_KEY]) if STATE_META_KEY in meta else read_json(sdir / STATE_JSON)
        out = {"info": info, "weights": {}, "optimizer": {}, "rng_key": arrays["rng/key"], "path": str(sdir),
               "ema": {}, "carry": {}}
    except RunError:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise RunError(f"{f}: cannot read the training state ({detail}); it is corrupt, start a new run.") from exc
    for k, v in arrays.items():
        group, _, name = k.partition("/")
        if group in ("model", "optimizer", "ema", "carry"):
            out[{"model": "weights"}.get(group, group)][name] = v
    return out


def read_metrics(run_dir, warnings: list[str]) -> dict:
    """metrics.json of a finished run ({} when missing; a file that is not a JSON object is
    left out with a message in ``warnings``)."""
    metrics = read_json(Path(run_dir) / METRICS, default={})
    if not isinstance(metrics, dict):
        warnings.append(f"{Path(run_dir) / METRICS}: not a JSON object; the final metrics are left out.")
        metrics = {}
    return metrics
