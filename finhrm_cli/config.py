"""Settings as dataclasses, TOML loading and the finhrm home folder.

Three groups travel together into every run's ``config.json``:

* ``FeatureConfig``: how a file becomes model inputs (window, horizon, splits).
* ``ModelConfig``: the HRM's shape (everything needed to rebuild it).
* ``TrainConfig``: the optimisation.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from finhrm_cli.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


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

    def validate(self) -> None:
        if self.seq_len < 1:
            raise UsageError(f"--seq-len must be at least 1 (got {self.seq_len}).")
        if self.horizon < 1:
            raise UsageError(f"--horizon must be at least 1 (got {self.horizon}).")
        if not (0 < self.train_frac < 1) or not (0 <= self.val_frac < 1):
            raise UsageError("--train-frac must lie in (0, 1) and --val-frac in [0, 1).")
        if self.train_frac + self.val_frac >= 1.0 + 1e-9:
            raise UsageError(
                f"--train-frac ({self.train_frac}) + --val-frac ({self.val_frac}) must be below 1 "
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

    def validate(self) -> None:
        for name in ("d_model", "n_heads", "h_layers", "l_layers", "h_cycles", "l_cycles", "halt_max_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)}).")
        if self.d_model % self.n_heads:
            raise UsageError(
                f"--d-model ({self.d_model}) must be divisible by --heads ({self.n_heads}); "
                "pick, for example, --heads 4 with --d-model 128."
            )
        if not 0.0 <= self.halt_exploration <= 1.0:
            raise UsageError(f"--halt-exploration must lie in [0, 1] (got {self.halt_exploration}).")


@dataclass
class TrainConfig:
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    epochs: int = 30
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

    def validate(self) -> None:
        if self.loss not in ("huber", "mse", "mae"):
            raise UsageError(f"--loss must be huber, mse or mae (got {self.loss!r}).")
        for name in ("batch_size", "epochs", "grad_accum"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)}).")
        if self.lr <= 0:
            raise UsageError(f"--lr must be positive (got {self.lr}).")
        if not 0.0 <= self.ema < 1.0:
            raise UsageError(f"--ema must lie in [0, 1) (got {self.ema}); 0 turns averaging off.")
        if not 0.0 <= self.min_delta < 1.0:
            raise UsageError(f"--min-delta must lie in [0, 1) (got {self.min_delta}).")
        if self.patience < 0:
            raise UsageError(f"--patience must be 0 or more (got {self.patience}).")


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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
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
