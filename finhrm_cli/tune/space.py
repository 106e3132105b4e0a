"""The search space of ``finhrm tune``: the default one, ``--space FILE.toml`` over it, and a
trial's settings from it.

A space maps a setting (its name in ``[features]``, ``[model]`` or ``[train]`` of a
``--config`` file) to one of

* ``{"choices": [...]}``: one of these values (a one-value list fixes the setting);
* ``{"low": a, "high": b, "log": bool}``: a whole number (int settings) or a number (float
  settings) in [a, b], drawn on a log scale with ``log``.

In a ``--space`` file the same is written ``d_model = [64, 128]`` or
``lr = {low = 1e-4, high = 3e-3, log = true}``; each entry replaces the default's entry for
that setting (or adds a setting the default does not search), the others stay.

This module does not import optuna: ``suggest`` takes the trial it is given.
"""

from __future__ import annotations

import copy
import math
from dataclasses import fields
from pathlib import Path

from finhrm_cli.config import ALIASES, LIMITS, SECTIONS, load_toml, shown, tomllib
from finhrm_cli.errors import UsageError

# The settings that matter, around the defaults (config.py), within what trains in minutes on
# 2 cores: the learning rate, width and depth, the recurrence (cycles, ACT segments), the
# window, the inputs, the loss, weight averaging and the schedule's length.
DEFAULT_SPACE: dict[str, dict] = {
    "lr": {"low": 3e-4, "high": 3e-3, "log": True},
    "d_model": {"choices": [64, 128, 192]},
    "h_layers": {"low": 1, "high": 3},
    "l_layers": {"low": 1, "high": 3},
    "h_cycles": {"low": 1, "high": 3},
    "l_cycles": {"low": 1, "high": 3},
    "halt_max_steps": {"low": 2, "high": 6},
    "seq_len": {"choices": [5, 10, 15, 20]},
    "feature_set": {"choices": ["extended", "long", "slow", "hrm18"]},
    "loss": {"choices": ["mae", "huber"]},
    "ema": {"choices": [0.0, 0.9, 0.95, 0.98]},
    "epochs": {"low": 3, "high": 10},
    "weight_decay": {"low": 0.01, "high": 0.5, "log": True},
}

# Never searched: they change the split or the target (so trials would not be comparable with
# each other or with the default), or they are derived from other settings.
NOT_SEARCHED = {"train_frac", "val_frac", "horizon", "n_features", "n_out", "h_context", "seed"}


def section_of(name: str) -> str:
    """The settings table that holds ``name`` (``seq_len`` is the features' own)."""
    for section, cls in SECTIONS.items():
        if name in {f.name for f in fields(cls)}:
            return section
    raise KeyError(name)


def _kind(name: str) -> str:
    cls = SECTIONS[section_of(name)]
    f = next(f for f in fields(cls) if f.name == name)
    return f.type if isinstance(f.type, str) else f.type.__name__


def _check_entry(name: str, entry, where: str) -> dict:
    """One entry of a space, checked against the setting's type and bounds; the normal form."""
    kind = _kind(name)
    if isinstance(entry, list):
        entry = {"choices": entry}
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: {name} must be a list of choices or {{low, high, log}} (got {shown(entry)}).")
    if "choices" in entry:
        extra = set(entry) - {"choices"}
        values = entry["choices"]
        if extra or not isinstance(values, list) or not values:
            raise UsageError(f"{where}: {name} = a non-empty list of choices, nothing else (got {shown(entry)}).")
        for v in values:
            ok = {"int": isinstance(v, int) and not isinstance(v, bool),
                  "float": isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                  "bool": isinstance(v, bool), "str": isinstance(v, str)}[kind]
            if not ok:
                raise UsageError(f"{where}: {name} takes {kind} values (got {shown(v)}).")
        return {"choices": list(values)}
    extra = set(entry) - {"low", "high", "log", "step"}
    lo, hi, log = entry.get("low"), entry.get("high"), entry.get("log", False)
    if extra or lo is None or hi is None or not isinstance(log, bool):
        raise UsageError(f"{where}: {name} = {{low = A, high = B, log = true|false}} (got {shown(entry)}).")
    if kind not in ("int", "float"):
        raise UsageError(f"{where}: {name} is not a number; give it a list of choices.")
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
                (kind == "int" and not isinstance(v, int)):
            raise UsageError(f"{where}: {name} low and high must be {'whole numbers' if kind == 'int' else 'numbers'} "
                             f"(got {shown(v)}).")
    if not lo <= hi:
        raise UsageError(f"{where}: {name} low ({lo}) must not exceed high ({hi}).")
    if log and lo <= 0:
        raise UsageError(f"{where}: {name} with log = true needs low above 0 (got {lo}).")
    if name in LIMITS and not (LIMITS[name][0] <= lo and hi <= LIMITS[name][1]):
        raise UsageError(f"{where}: {name} must lie in [{LIMITS[name][0]}, {LIMITS[name][1]}] (got {lo}..{hi}).")
    out = {"low": lo, "high": hi, "log": log}
    if kind == "float":
        out = {"low": float(lo), "high": float(hi), "log": log}
    return out


def _name(key: str, where: str) -> str:
    name = ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
    if name in NOT_SEARCHED:
        raise UsageError(f"{where}: {key} cannot be searched (it changes the split or the target, or follows "
                         "from other settings); set it in --config instead.")
    try:
        section_of(name)
    except KeyError:
        raise UsageError(f"{where}: unknown setting {key!r}; the names are those of `finhrm train --help` "
                         "(with underscores).") from None
    return name


def load_space(path: Path | None) -> dict[str, dict]:
    """The default space with the entries of ``path`` (a --space file) over it, checked."""
    space = {name: _check_entry(name, copy.deepcopy(e), "the default space") for name, e in DEFAULT_SPACE.items()}
    if path is None:
        return space
    path = Path(path)
    where = f"--space {path}"
    if not path.is_file():
        raise UsageError(f"{where}: file not found; pass an existing .toml file.")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{where}: not valid TOML ({exc}); fix the file or drop --space.") from exc
    for key, entry in raw.items():
        if key in SECTIONS and isinstance(entry, dict) and not ({"low", "high", "choices"} & set(entry)):
            items = entry.items()  # [model] d_model = [...] is accepted too
        else:
            items = [(key, entry)]
        for k, e in items:
            name = _name(k, where)
            space[name] = _check_entry(name, e, where)
    return space


def suggest(trial, space: dict[str, dict]) -> dict:
    """The trial's value for every setting of ``space`` (``trial.suggest_*``)."""
    params = {}
    for name, e in space.items():
        if "choices" in e:
            params[name] = e["choices"][0] if len(e["choices"]) == 1 else trial.suggest_categorical(name, e["choices"])
        elif _kind(name) == "int":
            params[name] = trial.suggest_int(name, e["low"], e["high"], log=e["log"])
        else:
            params[name] = trial.suggest_float(name, e["low"], e["high"], log=e["log"])
    return params


def trial_settings(base: dict[str, dict], space: dict[str, dict], params: dict) -> dict[str, dict]:
    """A trial's settings from its ``params`` (what Optuna drew): ``base``, the space's fixed
    settings (one-value lists, which Optuna does not record), then ``params``."""
    fixed = {name: e["choices"][0] for name, e in space.items() if len(e.get("choices", ())) == 1}
    return settings_with(base, {**fixed, **params})


def settings_with(base: dict[str, dict], params: dict) -> dict[str, dict]:
    """``base`` (a --config file's settings) with ``params`` put in their tables."""
    out = {section: dict(base.get(section, {})) for section in SECTIONS}
    for name, value in params.items():
        out[section_of(name)][name] = value
    return out


def base_settings(config: Path | None, seed: int | None) -> dict[str, dict]:
    """The settings every trial and the default run start from: --config, then --seed."""
    base = load_toml(config) if config else {name: {} for name in SECTIONS}
    if seed is not None:
        base["train"]["seed"] = seed
    return base


def fits(settings: dict[str, dict]) -> str | None:
    """None when the settings make a valid model (``validate``); else the one-line reason."""
    from finhrm_cli.config import settings_to_configs

    try:
        settings_to_configs(settings)
    except UsageError as exc:
        return str(exc)
    return None
