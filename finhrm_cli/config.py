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
from dataclasses import dataclass, field, fields
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
# The HRM's parameters, estimated from its shape: above this (1 GB of float32 weights, 4 GB
# with the optimizer state) a model is a typo, not a choice.
STALE_AFTER = 20  # sessions after a run's last training row before predict suggests a refit
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


def setting(default, help: str):
    """A settings field with its command-line help: one source for the default the code uses,
    the one ``--help`` shows (``help_for``) and the one a test compares them by."""
    return field(default=default, metadata={"help": help})


FEATURE_SET_HELP = (
    "Feature set: extended (the 18 inputs plus volatility, returns, gap, 20-day extremes, weekday), long "
    "(extended plus 66/132-session ranges and range-based volatility estimators), slow (extended plus a "
    "66-250-session context that only the H module reads: two clocks) or hrm18 (the original 18)."
)


@dataclass
class FeatureConfig:
    seq_len: int = setting(10, "Days per window.")
    horizon: int = setting(1, "Predict the high/low this many sessions ahead.")
    train_frac: float = setting(0.70, "Share of rows for training (the earliest).")
    val_frac: float = setting(0.15, "Share of rows for validation; test gets the rest.")
    volume_window: int = setting(20, "Sessions in the trailing mean of relative volume.")
    # "extended" was chosen over "hrm18" on validation MAE (docs/results.md)
    feature_set: str = setting("extended", FEATURE_SET_HELP)
    # one model then fits calm and wild markets alike
    scale_targets: bool = setting(True, "Divide the targets by the trailing volatility scale (mean log "
                                        "true range, 20 days) for training; predictions are scaled back.")
    scale_inputs: bool = setting(False, "Divide the log price-ratio inputs by the same scale (scale-free inputs).")

    def validate(self, label: Label = flag_label) -> None:
        _check_fields(self, label)
        if self.every_row():
            return
        if not (0 < self.train_frac < 1) or not (0 <= self.val_frac < 1):
            raise UsageError(f"{label('train_frac')} must lie in (0, 1) and {label('val_frac')} in [0, 1).")
        if self.train_frac + self.val_frac >= 1.0 + 1e-9:
            raise UsageError(
                f"{label('train_frac')} ({self.train_frac}) + {label('val_frac')} ({self.val_frac}) must be below 1 "
                "so the test split gets rows; lower one of them."
            )

    def every_row(self) -> bool:
        """A production run's split (``train --from``): every row trains, none validates or tests."""
        return self.train_frac == 1.0 and self.val_frac == 0.0


@dataclass
class ModelConfig:
    n_features: int = setting(18, "Inputs per day (set from the feature set).")
    seq_len: int = setting(10, "Days per window (set from the features).")
    d_model: int = setting(128, "Hidden width.")
    n_heads: int = setting(4, "Attention heads.")
    h_layers: int = setting(2, "Blocks in the high-level module.")
    l_layers: int = setting(2, "Blocks in the low-level module.")
    h_cycles: int = setting(2, "High-level updates per segment.")
    l_cycles: int = setting(2, "Low-level updates per high-level update.")
    expansion: float = setting(4.0, "SwiGLU width over d_model.")
    halt_max_steps: int = setting(4, "ACT segments at most.")
    halt_exploration: float = setting(0.1, "ACT exploration probability.")
    # "hrm": q_halt and q_continue, the continue target from one more no-gradient segment;
    # "trm": the Tiny Recursive Model's single halting head (Jolicoeur-Martineau 2025), BCE on
    # the halting reward alone, halt where P(halt) > 0.5, no extra segment (docs/results.md).
    halt_head: str = setting("hrm", "ACT halting head: hrm (q_halt and q_continue) or trm (one head, no extra pass).")
    n_out: int = setting(2, "Outputs: the high and the low.")
    # Two clocks: the last h_context feature columns are a slow context (set by the feature
    # set, see data.context_width) that H reads from the window's last day; L gets the rest.
    h_context: int = setting(0, "Slow-context inputs only the high-level module reads (set by the feature set).")

    def validate(self, label: Label = flag_label) -> None:
        _check_fields(self, label)
        if self.halt_head not in ("hrm", "trm"):
            raise UsageError(f"{label('halt_head')} must be hrm or trm (got {shown(self.halt_head)}).")
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
    batch_size: int = setting(64, "Windows per optimizer step.")
    lr: float = setting(1e-3, "Peak learning rate.")
    weight_decay: float = setting(0.1, "AdamW weight decay.")
    # The learning rate decays over the epochs, so their number is the schedule's length, not
    # only a cap: a short decayed schedule was level with a long one cut by early stopping, in
    # half the time (docs/results.md).
    epochs: int = setting(6, "Epochs; the learning rate decays over them (cosine), so this sets the schedule too.")
    patience: int = setting(6, "Stop after this many epochs without a better validation MAE.")
    grad_accum: int = setting(1, "Micro-batches per optimizer step.")
    grad_clip: float = setting(1.0, "Global gradient-norm clip; 0 turns it off.")
    warmup_frac: float = setting(0.05, "Share of the updates the learning rate warms up over.")
    # The score is MAE, and the L1 loss aims at the conditional median, the MAE-optimal point
    # forecast (chosen over huber on validation MAE, docs/results.md).
    loss: str = setting("mae", "Regression loss: mae (the score is MAE), huber or mse.")
    huber_delta: float = setting(1.0, "Huber loss threshold, in units of the normalised target.")
    seed: int = setting(0, "Random seed; the same seed gives the same weights.")
    eval_every: int = setting(0, "Steps between validations; 0: once per epoch.")
    # With the L1 loss and weight averaging the validation curve is flat, and tiny gains kept
    # runs going for many epochs at no benefit (docs/results.md).
    min_delta: float = setting(0.002, "Relative drop in validation MAE that counts as better for early stopping.")
    # Taking the noise out of the epoch-to-epoch curve keeps early stopping from picking a
    # lucky or unlucky epoch.  Decay min(ema, (1+n)/(10+n)) at step n.
    ema: float = setting(0.95, "Average the weights (exponential moving average with this decay per step); "
                               "validation and the saved model use the average. 0 turns it off.")
    # The linear partner (finhrm_cli.forecast.linear); its measurements are in docs/results.md.
    blend: bool = setting(True, "Blend the HRM with a median linear regression on the last day's inputs (fit on "
                                "training rows, the HRM's weight chosen on validation; `finhrm inspect` shows it). "
                                "--no-blend: the HRM alone.")
    # How ACT spends training compute: "carry" is HRM's carry-and-replace (train.carry), one
    # segment per update for every batch slot, a halted slot taking the next window, so a
    # window costs the segments it uses; "every" runs every segment for every window.  Carry
    # was level on validation at a fraction of the time (docs/results.md).
    act_training: str = setting("carry", "ACT training: carry (HRM's carry-and-replace: a window costs the "
                                         "segments it uses) or every (every segment for every window).")
    # How the run forecasts, in validation during training and afterwards: "halted" stops each
    # window at the segment its Q head halts on (inference.predict_act, with an early exit), as
    # HRM's model halts; "all" runs every segment and keeps the last, as HRM evaluates.  Chosen
    # on validation (docs/results.md); `predict`/`evaluate --act/--all-steps` override it.
    act_inference: str = setting("halted", "ACT inference, in validation and forecasts: halted (each window "
                                           "stops where its Q head says halt) or all (every segment runs).")

    def validate(self, label: Label = flag_label) -> None:
        _check_fields(self, label)
        if self.act_training not in ("every", "carry"):
            raise UsageError(f"{label('act_training')} must be every or carry (got {shown(self.act_training)}).")
        if self.act_inference not in ("halted", "all"):
            raise UsageError(f"{label('act_inference')} must be halted or all (got {shown(self.act_inference)}).")
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


def default_text(f) -> str:
    """A field's default as ``--help`` shows it."""
    v = f.default
    if isinstance(v, bool):
        return f"--{'' if v else 'no-'}{flag_label(f.name)[2:]}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def help_for(cls, name: str) -> str:
    """The ``--help`` text of the setting ``name`` of ``cls``: its help and its default."""
    f = {f.name: f for f in fields(cls)}[name]
    return f"{f.metadata['help']} [default: {default_text(f)}]"


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


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        text = repr(v)  # shortest round-trip form: 0.001, 1e-05, 3.0 (all valid TOML)
        if not math.isfinite(v):
            raise ValueError(f"{v} has no TOML form here")
        return text
    import json

    return json.dumps(str(v))  # a basic TOML string


def dump_toml(settings: dict[str, dict], comments: list[str] = ()) -> str:
    """Settings as a --config file (``load_toml`` reads it back): ``comments`` first, then
    the [features], [model] and [train] tables, each key sorted."""
    lines = [f"# {c}" for c in comments]
    for section in SECTIONS:
        values = settings.get(section) or {}
        if not values:
            continue
        lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(values[k])}" for k in sorted(values)]
    return "\n".join(lines).lstrip("\n") + "\n"


def settings_to_configs(settings: dict) -> tuple["FeatureConfig", "ModelConfig", "TrainConfig"]:
    """The three checked settings groups of a settings dict ({"features": {...}, "model": ...,
    "train": ...}); ``UsageError`` naming the first bad or unknown setting."""
    try:
        fcfg = FeatureConfig(**settings.get("features", {}))
        mcfg = ModelConfig(**settings.get("model", {}))
        tcfg = TrainConfig(**settings.get("train", {}))
    except TypeError as exc:  # an unknown key slipped through
        raise UsageError(f"unknown setting: {exc}") from exc
    for c in (fcfg, mcfg, tcfg):
        c.validate()
    return fcfg, mcfg, tcfg
