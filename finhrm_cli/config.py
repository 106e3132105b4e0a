"""Settings as dataclasses, TOML loading and the finhrm home folder.

Three groups travel together into every run's ``config.json``:

* ``FeatureConfig``: how a file becomes model inputs (window, horizon, splits).
* ``ModelConfig``: the HRM's shape (everything needed to rebuild it).
* ``TrainConfig``: the optimisation.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from finhrm_cli.errors import RunError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# ---------------------------------------------------------------------------------------------
# Bounds.  Every setting, whether it comes from a flag, a --config file or a run's config.json,
# is type-checked and must lie within these (inclusive) limits.  They sit far beyond any model
# that makes sense for daily bars on one machine (the defaults are 10-100x inside them), so they
# never get in a real user's way; they turn a typo such as `--d-model 100000` or a crafted
# config.json (`h_cycles` 10**7) into one clear line instead of a segfault in MLX or gigabytes of
# memory.  Checks that are not plain ranges (open ends, divisibility) follow in ``validate``.
LIMITS: dict[str, tuple[float, float]] = {
    # features
    "seq_len": (1, 1024),            # days per window (also the model's positions)
    "horizon": (1, 256),
    "train_frac": (0.0, 1.0),
    "val_frac": (0.0, 1.0),
    "volume_window": (1, 1024),
    # model
    "n_features": (1, 1024),
    "h_context": (0, 1023),          # trailing feature columns routed to H (< n_features)
    "d_model": (1, 4096),
    "n_heads": (1, 256),
    "h_layers": (1, 32),
    "l_layers": (1, 32),
    "h_cycles": (1, 16),
    "l_cycles": (1, 16),
    "expansion": (0.25, 16.0),
    "halt_max_steps": (1, 32),
    "halt_exploration": (0.0, 1.0),
    "n_out": (2, 2),                 # the head predicts high and low
    # training
    "batch_size": (1, 65536),
    "lr": (0.0, 10.0),               # and above 0, see TrainConfig.validate
    "weight_decay": (0.0, 10.0),
    "epochs": (1, 100_000),
    "patience": (0, 100_000),
    "grad_accum": (1, 1024),
    "grad_clip": (0.0, 1e6),         # 0 turns clipping off
    "warmup_frac": (0.0, 1.0),
    "huber_delta": (0.0, 1e6),       # and above 0
    "seed": (0, 2**32 - 1),
    "eval_every": (0, 10**9),
    "min_delta": (0.0, 1.0),
    "ema": (0.0, 1.0),
}
# A run's "halt_calibration" in config.json: the map logit' = a * logit + b that
# ``service.training.finalize_run`` fits to the ACT Q head on the training rows
# (``finhrm_cli.forecast.actstats.platt_fit``, which keeps its result inside these bounds).  a must be
# positive, so the map keeps every halting decision.  The default runs on the sample data give
# a = 1.9-26 (the raw logits barely vary, so the map stretches them) and |b| < 0.7; a value
# outside these bounds is damage, not a calibration.
HALT_CAL_A = (1e-3, 1000.0)
HALT_CAL_B = 1000.0  # |b| at most
COEF_LIMIT = 1e4     # blend coefficients (finhrm_cli.forecast.linear) above this are refused: fits on normalised
                    # inputs give |c| < 1 (0.43 on the sample); a forecast still out of range is
                    # refused when shown (service.prediction._check_range)
# The HRM's parameters, estimated from its shape: above this (1 GB of float32 weights, 4 GB
# with the optimizer state) a model is a typo, not a choice.
MAX_PARAMS = 250_000_000
# Block passes in one forecast, halt_max_steps * h_cycles * (l_cycles * l_layers + h_layers):
# inference compiles them unrolled, at about 75 ms and 0.3 MB each (2-core CPU; 48 passes for
# the default model, 384 for the HRM paper's 16 segments of 2x2 cycles and 4 layers).  The
# per-key bounds alone allow 32 * 16 * (16 * 32 + 32) passes: hours and gigabytes.
MAX_BLOCK_PASSES = 1024


def flag_label(name: str) -> str:
    """How the command line spells a setting: n_heads -> --heads, feature_set -> --features."""
    return "--" + {"n_heads": "heads", "feature_set": "features"}.get(name, name).replace("_", "-")


Label = Callable[[str], str]


def _got(v: Any) -> str:
    """A value as shown in an error: its repr, cut short (a crafted file may hold megabytes)."""
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _check_fields(obj, label: Label) -> None:
    """Type and range of every field of a settings dataclass, against ``LIMITS``."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if kind == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                raise UsageError(f"{label(f.name)} must be a whole number (got {_got(v)}).")
        elif kind == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise UsageError(f"{label(f.name)} must be a number (got {_got(v)}).")
            if not math.isfinite(v):
                raise UsageError(f"{label(f.name)} must be a finite number (got {_got(v)}).")
        elif kind == "bool":
            if not isinstance(v, bool):
                raise UsageError(f"{label(f.name)} must be true or false (got {_got(v)}).")
        elif kind == "str":
            if not isinstance(v, str):
                raise UsageError(f"{label(f.name)} must be text (got {_got(v)}).")
            continue
        if f.name in LIMITS:
            lo, hi = LIMITS[f.name]
            if not lo <= v <= hi:
                raise UsageError(f"{label(f.name)} must lie in [{lo}, {hi}] (got {_got(v)}).")


@dataclass
class FeatureConfig:
    seq_len: int = 10          # days per window
    horizon: int = 1           # predict the high/low h sessions ahead
    train_frac: float = 0.70   # chronological split; test gets the rest
    val_frac: float = 0.15
    volume_window: int = 20    # trailing mean for relative volume
    # "extended" = the original 18 inputs + volatility, returns, gap, 20-day extremes and day
    # of week; chosen over "hrm18" on validation MAE (sample data and GOOG), see README.
    feature_set: str = "extended"  # see data.FEATURE_SETS
    # Divide the targets by the trailing volatility scale (mean log true range, 20 days) for
    # training and multiply predictions back: one model then fits calm and wild markets alike.
    scale_targets: bool = True
    # Divide the log price-ratio inputs by the same scale (log volatility levels become
    # relative to it): scale-free inputs.
    scale_inputs: bool = False

    def validate(self, label: Label = flag_label) -> None:
        _check_fields(self, label)
        if not (0 < self.train_frac < 1) or not (0 <= self.val_frac < 1):
            raise UsageError(f"{label('train_frac')} must lie in (0, 1) and {label('val_frac')} in [0, 1).")
        if self.train_frac + self.val_frac >= 1.0 + 1e-9:
            raise UsageError(
                f"{label('train_frac')} ({self.train_frac}) + {label('val_frac')} ({self.val_frac}) must be below 1 "
                "so the test split gets rows; lower one of them."
            )


@dataclass
class ModelConfig:
    n_features: int = 18
    seq_len: int = 10
    d_model: int = 128
    n_heads: int = 4
    h_layers: int = 2
    l_layers: int = 2
    h_cycles: int = 2
    l_cycles: int = 2
    expansion: float = 4.0
    halt_max_steps: int = 4
    halt_exploration: float = 0.1
    n_out: int = 2
    # Two clocks: the last h_context feature columns are a slow context (set by the feature
    # set, see data.context_width) that H reads from the window's last day; L gets the rest.
    h_context: int = 0

    def validate(self, label: Label = flag_label) -> None:
        _check_fields(self, label)
        if self.h_context >= self.n_features:
            raise UsageError(
                f"h_context ({self.h_context}) must be below n_features ({self.n_features}): "
                "the L module needs at least one daily input."
            )
        if self.d_model % self.n_heads:
            raise UsageError(
                f"{label('d_model')} ({self.d_model}) must be divisible by {label('n_heads')} ({self.n_heads}); "
                "pick, for example, --heads 4 with --d-model 128."
            )
        passes = self.halt_max_steps * self.h_cycles * (self.l_cycles * self.l_layers + self.h_layers)
        if passes > MAX_BLOCK_PASSES:
            raise UsageError(
                f"{label('halt_max_steps')} {self.halt_max_steps} x {label('h_cycles')} {self.h_cycles} x "
                f"({label('l_cycles')} {self.l_cycles} x {label('l_layers')} {self.l_layers} + "
                f"{label('h_layers')} {self.h_layers}) = {passes} block passes per forecast, above the limit "
                f"of {MAX_BLOCK_PASSES}; lower the steps, cycles or layers."
            )
        if (n := self.approx_params()) > MAX_PARAMS:
            raise UsageError(
                f"this model would have about {n / 1e6:,.0f} million parameters, above the limit of "
                f"{MAX_PARAMS / 1e6:,.0f} million; lower {label('d_model')} or the layers."
            )

    def approx_params(self) -> int:
        """Parameters of the blocks (attention 4*d^2, SwiGLU 3*d*width), within a few percent."""
        d = self.d_model
        width = -(-int(round(self.expansion * d * 2 / 3)) // 16) * 16
        return (self.h_layers + self.l_layers) * (4 * d * d + 3 * d * width) + d * (self.n_features + self.seq_len + 8)


@dataclass
class TrainConfig:
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    # The learning rate decays (cosine) over the epochs, so their number is the schedule's
    # length, not only a cap: 6 epochs with their decay are level with 30 epochs cut by early
    # stopping on validation MAE (S&P 500 -0.5%, GOOG +0.3%, NASDAQ +0.3%, sample 0.0%) in
    # half the time on 5,000 sessions, see README.
    epochs: int = 6
    patience: int = 6
    grad_accum: int = 1
    grad_clip: float = 1.0
    warmup_frac: float = 0.05
    # The score is MAE, and the L1 loss aims at the conditional median, the MAE-optimal point
    # forecast; chosen over huber on validation MAE (GOOG, S&P 500, sample data), see README.
    loss: str = "mae"
    huber_delta: float = 1.0   # in units of the normalised target
    seed: int = 0
    eval_every: int = 0        # steps between validations; 0 = once per epoch
    # An evaluation counts as better (kept, resets patience) only when it lowers the best
    # validation MAE by more than this fraction.  With the L1 loss and weight averaging the
    # validation curve is flat, and 0.05% gains kept runs going for 20+ epochs: 0.2% cut
    # training time by 15-25% (GOOG, sample) for at most 0.2% of validation MAE.
    min_delta: float = 0.002
    # Exponential moving average of the weights, updated after every step (decay
    # min(ema, (1+n)/(10+n)) at step n); validation, early stopping and the saved model use
    # the average.  Chosen on validation MAE: it takes the noise out of the epoch-to-epoch
    # curve, so early stopping no longer picks a lucky or unlucky epoch.  0 turns it off.
    ema: float = 0.95
    # Blend the HRM with a median (L1) linear regression on the last day's inputs, fit on the
    # training windows, the HRM's weight chosen on validation (finhrm_cli.forecast.linear).  On the
    # real series, 3-seed test MAE / best anchor, HRM alone -> blend: GOOG 0.985 -> 0.978,
    # S&P 500 1.001 -> 0.995, NASDAQ 1.017 -> 1.005; see README.  False: the HRM alone.
    blend: bool = True

    def validate(self, label: Label = flag_label) -> None:
        _check_fields(self, label)
        if self.loss not in ("huber", "mse", "mae"):
            raise UsageError(f"{label('loss')} must be huber, mse or mae (got {_got(self.loss)}).")
        if self.lr <= 0:
            raise UsageError(f"{label('lr')} must be positive (got {self.lr}).")
        if self.huber_delta <= 0:
            raise UsageError(f"{label('huber_delta')} must be positive (got {self.huber_delta}).")
        if self.ema >= 1.0:
            raise UsageError(f"{label('ema')} must lie in [0, 1) (got {self.ema}); 0 turns averaging off.")
        if self.min_delta >= 1.0:
            raise UsageError(f"{label('min_delta')} must lie in [0, 1) (got {self.min_delta}).")


SECTIONS = {"features": FeatureConfig, "model": ModelConfig, "train": TrainConfig}
# command-line spellings accepted in a --config file too
ALIASES = {"heads": "n_heads", "features": "feature_set"}


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def from_dict(cls, data: dict | None):
    """Build a dataclass from a dict, ignoring unknown keys (forward compatible)."""
    data = data or {}
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def load_toml(path: Path) -> dict[str, dict]:
    """Read a --config file: optional [features], [model], [train] tables.

    Top-level keys are also accepted and routed to whichever section knows them.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: config file not found; pass an existing .toml file to --config.")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError, UnicodeDecodeError, huge ints
        raise UsageError(f"{path}: not valid TOML ({exc}); fix the file or drop --config.") from exc
    out: dict[str, dict] = {name: {} for name in SECTIONS}
    known = {name: {f.name for f in fields(cls)} for name, cls in SECTIONS.items()}
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            for k, v in value.items():
                k2 = k.replace("-", "_")
                k2 = ALIASES.get(k2, k2)
                if k2 not in known[key]:
                    raise UsageError(
                        f"{path}: unknown setting [{key}] {k}; known: {', '.join(sorted(known[key]))}."
                    )
                out[key][k2] = v
            continue
        k2 = key.replace("-", "_")
        k2 = ALIASES.get(k2, k2)
        homes = [name for name, ks in known.items() if k2 in ks]
        if not homes:
            raise UsageError(f"{path}: unknown setting {key!r}; see `finhrm train --help` for the names.")
        for name in homes:
            out[name][k2] = value
    return out


def finhrm_home() -> Path:
    """Where runs live: $FINHRM_HOME, else the platform's user data folder."""
    env = os.environ.get("FINHRM_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_path("finhrm", appauthor=False))


def runs_dir() -> Path:
    return finhrm_home() / "runs"


# ---------------------------------------------------------------------------------------------
# a run's config.json, checked once when the run is read


def _safe_name_error(name: Any) -> str | None:
    """Why ``name`` cannot be a folder name inside a run (None when it can)."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty name"
    if len(name) > 200 or name in (".", "..") or name.startswith(".") or name != name.strip():
        return "must be a plain folder name (no leading dot or space, at most 200 characters)"
    if re.search(r"[/\\\x00-\x1f\x7f:]", name) or os.sep in name or (os.altsep and os.altsep in name):
        return "must not contain a path separator or control characters"
    return None


def _finite(x: Any) -> bool:
    """A finite int or float (not a bool; an int too big for a float is not finite)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # json reads a 400-digit integer as an int
        return False


def _numbers(v: Any, n: int | None = None) -> bool:
    """A list of finite numbers (of length ``n`` when given)."""
    return isinstance(v, list) and (n is None or len(v) == n) and all(_finite(x) for x in v)


def _iso_date(v: Any) -> bool:
    if v is None:
        return True
    try:
        _dt.date.fromisoformat(str(v)[:10])
        return isinstance(v, str)
    except ValueError:
        return False


def _check_splits(splits: Any, key: str) -> None:
    if not isinstance(splits, dict):
        raise UsageError(f"{key} must be an object")
    for name, s in splits.items():
        if not isinstance(s, dict):
            raise UsageError(f"{key}.{name} must be an object")
        for k in ("first_date", "last_date"):
            if not _iso_date(s.get(k)):
                raise UsageError(f"{key}.{name}.{k} must be a date (YYYY-MM-DD), got {_got(s.get(k))}")


# What the commands need from a run's config.json; a run written by the engine alone (as a
# library) holds only "model" and "train", and ``checkpoint.load_run`` accepts that.
RUN_KEYS = ("model", "features", "train", "feature_names", "normalizer")


def validate_run_config(cfg: Any, path: Path, required: tuple[str, ...] = ("model",)) -> dict:
    """Check a run's config.json (``path``) before anything uses it: the ``required`` keys are
    there, every key the commands read has the right type, every setting lies within
    ``LIMITS``, the shapes agree with each other, every series name is a plain folder name.
    A problem is one ``RunError`` line naming the file and the key.  Returns ``cfg``; unknown
    keys are left alone (forward compatible)."""
    try:
        _validate_run_config(cfg, required)
    except UsageError as exc:
        raise RunError(
            f"{path}: {str(exc).rstrip('.')}; the file is damaged or was edited by hand, "
            "restore it or train a new run."
        ) from None
    return cfg


def _check_blend(bl: Any, cfg: dict) -> None:
    """A run's ``blend`` (finhrm_cli.forecast.linear): the HRM weight in [0, 1] and one finite
    coefficient per feature plus the intercept for the high and the low."""
    if bl is None:
        return
    if not isinstance(bl, dict):
        raise UsageError("blend must be an object or null")
    w = bl.get("hrm_weight")
    if not _finite(w) or not 0.0 <= w <= 1.0:
        raise UsageError(f"blend.hrm_weight must lie in [0, 1] (got {_got(w)})")
    n = (cfg.get("model") or {}).get("n_features")
    for k in ("coef_high", "coef_low"):
        c = bl.get(k)
        if not _numbers(c) or any(abs(v) > COEF_LIMIT for v in c):
            raise UsageError(f"blend.{k} must be a list of finite numbers below {COEF_LIMIT:g} in size")
        if isinstance(n, int) and len(c) != n + 1:
            raise UsageError(f"blend.{k} has {len(c)} numbers; the model's {n} features need {n + 1}")


def _validate_run_config(cfg: Any, required: tuple[str, ...]) -> None:
    if not isinstance(cfg, dict):
        raise UsageError("is not a JSON object")
    for key in required:
        if cfg.get(key) is None:
            raise UsageError(f"the key {key!r} is missing")
    sections = {}
    for key, cls in (("features", FeatureConfig), ("model", ModelConfig), ("train", TrainConfig)):
        if cfg.get(key) is None:
            continue
        if not isinstance(cfg[key], dict):
            raise UsageError(f"{key} must be an object")
        obj = from_dict(cls, cfg[key])
        obj.validate(label=lambda name, key=key: f"{key}.{name}")
        sections[key] = obj
    fcfg, mcfg = sections.get("features"), sections.get("model")
    if fcfg and mcfg and mcfg.seq_len != fcfg.seq_len:
        raise UsageError(f"model.seq_len ({mcfg.seq_len}) differs from features.seq_len ({fcfg.seq_len})")
    n = mcfg.n_features if mcfg else None
    names = cfg.get("feature_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise UsageError("feature_names must be a list of names")
        if n is not None and len(names) != n:
            raise UsageError(f"feature_names has {len(names)} names but model.n_features is {n}")
    norm = cfg.get("normalizer")
    if norm is not None:
        if not isinstance(norm, dict):
            raise UsageError("normalizer must be an object")
        for k in ("mean", "std"):
            if not _numbers(norm.get(k), n):
                raise UsageError(f"normalizer.{k} must be a list of finite numbers"
                                 + (f", {n} of them (model.n_features)" if n else ""))
        if len(norm["mean"]) != len(norm["std"]) or any(x <= 0 for x in norm["std"]):
            raise UsageError("normalizer.std must be positive, one per mean")
    conf = cfg.get("conformal")
    if conf is not None:
        if not isinstance(conf, dict):
            raise UsageError("conformal must be an object or null")
        if conf.get("units", "log") not in ("log", "scale"):
            raise UsageError(f"conformal.units must be 'log' or 'scale' (got {_got(conf.get('units'))})")
        for k in ("high", "low"):
            if not _numbers(conf.get(k)):
                raise UsageError(f"conformal.{k} must be a list of finite numbers")
        if "n" in conf and (isinstance(conf["n"], bool) or not isinstance(conf["n"], int) or conf["n"] < 0):
            raise UsageError(f"conformal.n must be a count (got {_got(conf['n'])})")
    hc = cfg.get("halt_calibration")
    if hc is not None:
        if not isinstance(hc, dict):
            raise UsageError("halt_calibration must be an object or null")
        for k in ("a", "b"):
            if not _finite(hc.get(k)):
                raise UsageError(f"halt_calibration.{k} must be a finite number (got {_got(hc.get(k))})")
        lo, hi = HALT_CAL_A
        if not lo <= hc["a"] <= hi:
            raise UsageError(f"halt_calibration.a must lie in [{lo:g}, {hi:g}] (got {hc['a']:g})")
        if abs(hc["b"]) > HALT_CAL_B:
            raise UsageError(f"halt_calibration.b must lie in [{-HALT_CAL_B:g}, {HALT_CAL_B:g}] (got {hc['b']:g})")
        if "rows" in hc and (isinstance(hc["rows"], bool) or not isinstance(hc["rows"], int) or hc["rows"] < 0):
            raise UsageError(f"halt_calibration.rows must be a count (got {_got(hc['rows'])})")
    _check_blend(cfg.get("blend"), cfg)
    src = cfg.get("source")
    if src is not None and (not isinstance(src, dict) or not isinstance(src.get("name", ""), str)):
        raise UsageError("source must be an object with a text name")
    if cfg.get("splits") is not None:
        _check_splits(cfg["splits"], "splits")
    series = cfg.get("series")
    if series is not None:
        if not isinstance(series, list):
            raise UsageError("series must be a list")
        seen = set()
        for i, s in enumerate(series):
            if not isinstance(s, dict):
                raise UsageError(f"series[{i}] must be an object")
            why = _safe_name_error(s.get("name"))
            if why:
                raise UsageError(f"series[{i}].name {_got(s.get('name'))} {why}")
            if s["name"] in seen:
                raise UsageError(f"series[{i}].name {_got(s['name'])} appears twice")
            seen.add(s["name"])
            if s.get("splits") is not None:
                _check_splits(s["splits"], f"series[{i}].splits")
    for k in ("created",):
        if cfg.get(k) is not None and not isinstance(cfg[k], str):
            raise UsageError(f"{k} must be text")
    if cfg.get("versions") is not None and not isinstance(cfg["versions"], dict):
        raise UsageError("versions must be an object")
    for k in WEIGHTS_HASH_KEYS:
        v = cfg.get(k)
        if v is not None and not (isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)):
            raise UsageError(f"{k} must be a sha256 digest (64 hex digits)")


# model.safetensors' sha256, and the one of the weights being written (see RunWriter.save_weights)
WEIGHTS_HASH_KEYS = ("weights_sha256", "weights_sha256_next")
