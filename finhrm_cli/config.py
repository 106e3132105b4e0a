"""Settings as dataclasses, TOML loading and the finhrm home folder.

Three groups travel together into every run's ``config.json``:

* ``FeatureConfig``: how a file becomes model inputs (window, horizon, splits).
* ``ModelConfig``: the HRM's shape (everything needed to rebuild it).
* ``TrainConfig``: the optimisation.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from finhrm_cli.errors import UsageError

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


def shown(v: Any) -> str:
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
                raise UsageError(f"{label(f.name)} must be a whole number (got {shown(v)}).")
        elif kind == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise UsageError(f"{label(f.name)} must be a number (got {shown(v)}).")
            if not math.isfinite(v):
                raise UsageError(f"{label(f.name)} must be a finite number (got {shown(v)}).")
        elif kind == "bool":
            if not isinstance(v, bool):
                raise UsageError(f"{label(f.name)} must be true or false (got {shown(v)}).")
        elif kind == "str":
            if not isinstance(v, str):
                raise UsageError(f"{label(f.name)} must be text (got {shown(v)}).")
            continue
        if f.name in LIMITS:
            lo, hi = LIMITS[f.name]
            if not lo <= v <= hi:
                raise UsageError(f"{label(f.name)} must lie in [{lo}, {hi}] (got {shown(v)}).")


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
            raise UsageError(f"{label('loss')} must be huber, mse or mae (got {shown(self.loss)}).")
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
