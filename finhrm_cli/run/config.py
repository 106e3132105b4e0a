"""A run's config.json, typed (``RunConfig``) and checked once when the run is read.

config.json is untrusted input (a run folder can be damaged, copied or edited by hand), so
``RunConfig.from_dict`` checks every key the commands read before anything uses it: types,
the settings' bounds, shapes that must agree, series names that must be plain folder names.
A problem is one ``RunError`` line naming the file and the key.  Keys this version does not
know are kept as they are (``extra``) and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finhrm_cli.config import FeatureConfig, ModelConfig, TrainConfig, from_dict, shown, to_dict
from finhrm_cli.errors import RunError, UsageError

# What the commands need; a run written by the engine alone (as a library) holds only "model"
# and "train", and ``store.load_run`` accepts that.
RUN_KEYS = ("model", "features", "train", "feature_names", "normalizer")
# model.safetensors' sha256, and the one of the weights being written (see RunWriter.save_weights)
WEIGHTS_HASH_KEYS = ("weights_sha256", "weights_sha256_next")
_SECTIONS = {"features": FeatureConfig, "model": ModelConfig, "train": TrainConfig}
# Settings a run made before they existed was trained with, where today's default differs: a
# run's own config.json decides how it resumes, not the default of the finhrm reading it.
_SETTINGS_BEFORE = {"train": {"act_training": "every", "act_inference": "all"}}


@dataclass
class RunConfig:
    """Everything config.json holds.  The three settings groups are dataclasses; the rest
    are the JSON values as written (checked by ``from_dict``)."""

    model: ModelConfig | None = None
    features: FeatureConfig | None = None
    train: TrainConfig | None = None
    feature_names: list[str] | None = None
    normalizer: dict | None = None
    created: str | None = None
    versions: dict | None = None
    source: dict | None = None
    splits: dict | None = None
    series: list[dict] | None = None
    dropped: dict | None = None
    conformal: dict | None = None
    blend: dict | None = None
    halt_calibration: dict | None = None
    processes: int | None = None
    weights_sha256: str | None = None
    weights_sha256_next: str | None = None
    # a production run (`finhrm train DATA --from RUN`): the run it came from and how, its
    # settings' origin (the epoch count that the first run's validation chose)
    parent: dict | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, cfg: Any, path: Path, required: tuple[str, ...] = ("model",)) -> "RunConfig":
        """Check ``cfg`` (read from ``path``) and type it; one ``RunError`` line otherwise."""
        try:
            check(cfg, required)
        except UsageError as exc:
            raise RunError(
                f"{path}: {str(exc).rstrip('.')}; the file is damaged or was edited by hand, "
                "restore it or train a new run."
            ) from None
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in cfg.items() if k in known}
        for key, kind in _SECTIONS.items():
            if cfg.get(key) is not None:
                values[key] = from_dict(kind, {**_SETTINGS_BEFORE.get(key, {}), **cfg[key]})
        return cls(**values, extra={k: v for k, v in cfg.items() if k not in known})

    def to_dict(self) -> dict:
        """config.json's content: known keys in a stable order, then the unknown ones."""
        out: dict = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if f.name in _SECTIONS:
                v = to_dict(v) if v is not None else None
            if v is not None or f.name in ("conformal", "blend", "halt_calibration"):
                out[f.name] = v
        out.update(self.extra)
        return out

    def weight_digests(self) -> tuple[str, ...]:
        """The sha256 digests model.safetensors may have (two while it is being replaced)."""
        return tuple(d for d in (self.weights_sha256, self.weights_sha256_next) if d)

    def acknowledged(self) -> list[str]:
        """The dates whose data warnings the run was told to leave out (``train --ack``),
        recorded in its sources; none for a run made before ``--ack``."""
        sources = [self.source or {}] + [s.get("source") or {} for s in self.series or []]
        return sorted({d for src in sources for d in src.get("acknowledged") or []})

    def series_names(self) -> list[str]:
        return [s["name"] for s in self.series or []]

    def is_ensemble(self) -> bool:
        """An ensemble run (config.json's ``ensemble`` section, ``run.ensemble``)."""
        return "ensemble" in (self.extra or {})

    def blend_enabled(self) -> bool:
        return self.train is None or self.train.blend

    def halted_inference(self) -> bool:
        """The run forecasts with ACT halting (``TrainConfig.act_inference``); a run written
        without the setting ran every segment."""
        return self.train is not None and self.train.act_inference == "halted"

    def series_records(self) -> list[dict]:
        """Per series the run was trained on, its record (``name``, ``source``, ``splits``); a
        run written without the list (one series) gives one record from its source and splits."""
        return self.series or [{"name": (self.source or {}).get("name"), "source": self.source or {},
                                "splits": self.splits}]

    def trained_name(self, source) -> str | None:
        """The name under which the run was trained on the series of ``source`` (a data
        source: ``.name``, ``.fingerprint``): the same name (case ignored), else the same file
        under another name (its sha256, as ``run.choose`` matches a run); None: another series."""
        series = self.series_records()
        named = [s["name"] for s in series if isinstance(s.get("name"), str)]
        for n in named:
            if n.casefold() == str(source.name).casefold():
                return n
        fp = getattr(source, "fingerprint", None)
        for s in series:
            if fp and isinstance(s.get("source"), dict) and s["source"].get("fingerprint") == fp:
                return s.get("name")
        return None

    def _name_of(self, key) -> str:
        """A series name, or a data source resolved by ``trained_name`` (its own name if the
        run has not seen it)."""
        return key if isinstance(key, str) else (self.trained_name(key) or key.name)

    def series_splits(self, name) -> dict:
        """The splits recorded for the series ``name`` (case ignored; or a data source,
        ``trained_name``); for a series the run was not trained on, the run's own (its first
        series')."""
        name = self._name_of(name)
        for s in self.series or []:
            if s["name"].casefold() == str(name).casefold():
                return s.get("splits") or {}
        return self.splits or {}

    def cutoff(self, name):
        """Last validation date of the series ``name`` (or a data source, ``trained_name``;
        of the latest series when unknown), as ``datetime64[D]``, or None; a production run,
        which validates nothing, has its last training date: the rows after it are the ones
        it has not seen."""
        name = self._name_of(name)
        series = self.series_records()

        def last(s):
            sp = s.get("splits") or {}
            return (sp.get("val") or {}).get("last_date") or (self.parent and (sp.get("train") or {}).get("last_date"))

        dates = {s["name"]: last(s) for s in series}
        d = dates.get(name) or max((v for v in dates.values() if v), default=None)
        return np.datetime64(d) if d else None


# ---------------------------------------------------------------------------------------------
# the checks


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


def _count(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and v >= 0


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
                raise UsageError(f"{key}.{name}.{k} must be a date (YYYY-MM-DD), got {shown(s.get(k))}")


def check(cfg: Any, required: tuple[str, ...] = ("model",)) -> None:
    """Every check of config.json, in the order a reader meets the keys; ``UsageError``."""
    if not isinstance(cfg, dict):
        raise UsageError("is not a JSON object")
    for key in required:
        if cfg.get(key) is None:
            raise UsageError(f"the key {key!r} is missing")
    n = _check_sections(cfg)
    _check_inputs(cfg, n)
    _check_conformal(cfg.get("conformal"), n)
    _check_halt_calibration(cfg.get("halt_calibration"))
    _check_blend(cfg.get("blend"), n)
    _check_source_and_series(cfg)
    _check_bookkeeping(cfg)
    _check_parent(cfg.get("parent"))


def _check_sections(cfg: dict) -> int | None:
    """The settings groups against their bounds; the model's feature count (or None)."""
    sections = {}
    for key, cls in _SECTIONS.items():
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
    return mcfg.n_features if mcfg else None


def _check_inputs(cfg: dict, n: int | None) -> None:
    names = cfg.get("feature_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise UsageError("feature_names must be a list of names")
        if n is not None and len(names) != n:
            raise UsageError(f"feature_names has {len(names)} names but model.n_features is {n}")
    norm = cfg.get("normalizer")
    if norm is None:
        return
    if not isinstance(norm, dict):
        raise UsageError("normalizer must be an object")
    for k in ("mean", "std"):
        if not _numbers(norm.get(k), n):
            raise UsageError(f"normalizer.{k} must be a list of finite numbers"
                             + (f", {n} of them (model.n_features)" if n else ""))
    if len(norm["mean"]) != len(norm["std"]) or any(x <= 0 for x in norm["std"]):
        raise UsageError("normalizer.std must be positive, one per mean")


def _check_conformal(conf: Any, n: int | None = None) -> None:
    if conf is None:
        return
    if not isinstance(conf, dict):
        raise UsageError("conformal must be an object or null")
    if conf.get("units", "log") not in ("log", "scale"):
        raise UsageError(f"conformal.units must be 'log' or 'scale' (got {shown(conf.get('units'))})")
    for k in ("high", "low"):
        if not _numbers(conf.get(k)):
            raise UsageError(f"conformal.{k} must be a list of finite numbers")
    if "n" in conf and not _count(conf["n"]):
        raise UsageError(f"conformal.n must be a count (got {shown(conf['n'])})")
    if "by_volatility" in conf:
        _check_by_volatility(conf["by_volatility"], n)


def _check_by_volatility(bv: Any, n: int | None = None) -> None:
    """The residuals per volatility third of a run made since issue 27 (``forecast.conformal``)."""
    if not isinstance(bv, dict):
        raise UsageError("conformal.by_volatility must be an object")
    if not (_finite(bv.get("beta")) and 0 <= bv["beta"] <= 1):
        raise UsageError(f"conformal.by_volatility.beta must be a number in [0, 1] (got {shown(bv.get('beta'))})")
    edges = bv.get("edges")
    if not isinstance(edges, dict) or "*" not in edges or not all(
            isinstance(e, list) and len(e) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                        and not math.isnan(x) for x in e) for e in edges.values()):
        raise UsageError("conformal.by_volatility.edges must map series names (and \"*\") to two numbers")
    for k in ("high", "low"):
        if not (isinstance(bv.get(k), list) and len(bv[k]) in (1, 3) and all(_numbers(r) for r in bv[k])):
            raise UsageError(f"conformal.by_volatility.{k} must be one or three lists of finite numbers")
    if not isinstance(bv.get("per_third", True), bool):
        raise UsageError("conformal.by_volatility.per_third must be true or false")
    wm = bv.get("width_model")
    if wm is not None and not (isinstance(wm, dict) and all(_numbers(wm.get(k)) for k in ("high", "low"))
                               and all(_finite(wm.get(f"{k}_norm")) and wm[f"{k}_norm"] > 0 for k in ("high", "low"))):
        raise UsageError("conformal.by_volatility.width_model must hold lists high and low and positive high_norm, "
                         "low_norm")
    _check_heads(bv.get("heads"), n)
    if not (_finite(bv.get("gamma", 0.005)) and 0 <= bv.get("gamma", 0.005) <= 1):
        raise UsageError(f"conformal.by_volatility.gamma must be a number in [0, 1] (got {shown(bv.get('gamma'))})")
    if "decay" in bv and not (_finite(bv["decay"]) and bv["decay"] > 0):
        raise UsageError(f"conformal.by_volatility.decay must be a positive number (got {shown(bv['decay'])})")
    if not (_finite(bv.get("gamma_min", 0.0)) and 0 <= bv.get("gamma_min", 0.0) <= bv.get("gamma", 0.005)):
        raise UsageError("conformal.by_volatility.gamma_min must be a number in [0, gamma] "
                         f"(got {shown(bv.get('gamma_min'))})")


def _check_heads(h: Any, n: int | None) -> None:
    """The residual heads (``conformal.fit_heads``): per target two coefficient lists, one per
    feature plus the intercept (and the forecast, with ``"forecast"``: per target its mean and
    its deviation, at least ``conformal.HEADS_MIN_SD``), each finite and below
    ``linear.COEF_LIMIT`` in size."""
    from finhrm_cli.forecast.conformal import HEADS_MIN_SD
    from finhrm_cli.forecast.linear import COEF_LIMIT

    if h is None:
        return
    lists = [c for k in ("high", "low") for c in (h.get(k) if isinstance(h, dict) and isinstance(h.get(k), list)
                                                  and len(h[k]) == 2 else [None])]
    fc = h.get("forecast") if isinstance(h, dict) else None
    extra = 0 if fc is None else 1
    m = (n + 1 + extra) if isinstance(n, int) else len(lists[0]) if isinstance(lists[0], list) else None
    if not all(_numbers(c, m) and c and all(abs(v) <= COEF_LIMIT for v in c) for c in lists):
        raise UsageError("conformal.by_volatility.heads must hold high and low: two lists of finite numbers each, "
                         + (f"{m} per list (model.n_features + {1 + extra}), " if m else "")
                         + f"below {COEF_LIMIT:g} in size")
    if fc is not None and not (isinstance(fc, dict) and all(
            _numbers(fc.get(k), 2) and abs(fc[k][0]) <= COEF_LIMIT and HEADS_MIN_SD <= fc[k][1] <= COEF_LIMIT
            for k in ("high", "low"))):
        raise UsageError("conformal.by_volatility.heads.forecast must hold high and low: a mean and a deviation "
                         f"of at least {HEADS_MIN_SD:g} each")


def _check_halt_calibration(hc: Any) -> None:
    from finhrm_cli.forecast.actstats import HALT_CAL_A, HALT_CAL_B

    if hc is None:
        return
    if not isinstance(hc, dict):
        raise UsageError("halt_calibration must be an object or null")
    for k in ("a", "b"):
        if not _finite(hc.get(k)):
            raise UsageError(f"halt_calibration.{k} must be a finite number (got {shown(hc.get(k))})")
    lo, hi = HALT_CAL_A
    if not lo <= hc["a"] <= hi:
        raise UsageError(f"halt_calibration.a must lie in [{lo:g}, {hi:g}] (got {hc['a']:g})")
    if abs(hc["b"]) > HALT_CAL_B:
        raise UsageError(f"halt_calibration.b must lie in [{-HALT_CAL_B:g}, {HALT_CAL_B:g}] (got {hc['b']:g})")
    if "rows" in hc and not _count(hc["rows"]):
        raise UsageError(f"halt_calibration.rows must be a count (got {shown(hc['rows'])})")


def _check_blend(bl: Any, n: int | None) -> None:
    """A run's ``blend`` (finhrm_cli.forecast.linear): the HRM weight in [0, 1] and one finite
    coefficient per feature plus the intercept for the high and the low."""
    from finhrm_cli.forecast.linear import COEF_LIMIT

    if bl is None:
        return
    if not isinstance(bl, dict):
        raise UsageError("blend must be an object or null")
    w = bl.get("hrm_weight")
    if not _finite(w) or not 0.0 <= w <= 1.0:
        raise UsageError(f"blend.hrm_weight must lie in [0, 1] (got {shown(w)})")
    for k in ("coef_high", "coef_low"):
        c = bl.get(k)
        if not _numbers(c) or any(abs(v) > COEF_LIMIT for v in c):
            raise UsageError(f"blend.{k} must be a list of finite numbers below {COEF_LIMIT:g} in size")
        if isinstance(n, int) and len(c) != n + 1:
            raise UsageError(f"blend.{k} has {len(c)} numbers; the model's {n} features need {n + 1}")


def _check_acknowledged(src: Any, key: str) -> None:
    from finhrm_cli.data.ack import check_ack_list

    if isinstance(src, dict) and src.get("acknowledged") is not None:
        why = check_ack_list(src["acknowledged"])
        if why:
            raise UsageError(f"{key}.acknowledged {why}")


def _check_source_and_series(cfg: dict) -> None:
    src = cfg.get("source")
    if src is not None and (not isinstance(src, dict) or not isinstance(src.get("name", ""), str)):
        raise UsageError("source must be an object with a text name")
    _check_acknowledged(src, "source")
    if cfg.get("splits") is not None:
        _check_splits(cfg["splits"], "splits")
    series = cfg.get("series")
    if series is None:
        return
    if not isinstance(series, list):
        raise UsageError("series must be a list")
    seen = set()
    for i, s in enumerate(series):
        if not isinstance(s, dict):
            raise UsageError(f"series[{i}] must be an object")
        why = _safe_name_error(s.get("name"))
        if why:
            raise UsageError(f"series[{i}].name {shown(s.get('name'))} {why}")
        if s["name"] in seen:
            raise UsageError(f"series[{i}].name {shown(s['name'])} appears twice")
        seen.add(s["name"])
        if s.get("source") is not None and not isinstance(s["source"], dict):
            raise UsageError(f"series[{i}].source must be an object")
        _check_acknowledged(s.get("source"), f"series[{i}].source")
        if s.get("splits") is not None:
            _check_splits(s["splits"], f"series[{i}].splits")


def _check_parent(parent: Any) -> None:
    """A production run's lineage (``train --from``): the keys finhrm computes with."""
    if parent is None:
        return
    if not isinstance(parent, dict):
        raise UsageError("parent must be an object or null")
    if parent.get("epochs_chosen") is not None and not (_count(parent["epochs_chosen"]) and parent["epochs_chosen"] >= 1):
        raise UsageError(f"parent.epochs_chosen must be a whole number of epochs (got {shown(parent['epochs_chosen'])})")
    w = parent.get("hrm_weight")
    if w is not None and not (_finite(w) and 0 <= w <= 1):
        raise UsageError(f"parent.hrm_weight must be a number in [0, 1] or null (got {shown(w)})")
    starts = parent.get("hrm_trains_from")
    if starts is not None:
        if not isinstance(starts, dict):
            raise UsageError("parent.hrm_trains_from must be an object (series name -> date)")
        for name, d in starts.items():
            if d is None or not _iso_date(d):
                raise UsageError(f"parent.hrm_trains_from.{name} must be a date (YYYY-MM-DD), got {shown(d)}")


def _check_bookkeeping(cfg: dict) -> None:
    if cfg.get("created") is not None and not isinstance(cfg["created"], str):
        raise UsageError("created must be text")
    if cfg.get("versions") is not None and not isinstance(cfg["versions"], dict):
        raise UsageError("versions must be an object")
    for k in WEIGHTS_HASH_KEYS:
        v = cfg.get(k)
        if v is not None and not (isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)):
            raise UsageError(f"{k} must be a sha256 digest (64 hex digits)")
