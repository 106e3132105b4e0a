"""Model-ready data: chronological splits, the normaliser, windows and ``Dataset``.

``Dataset`` holds the feature frame of one series with its splits and normaliser and
cuts it into ``Windows`` (numpy stride tricks); ``Normalizer`` is fit on training rows
only; ``concat_windows`` joins the windows of several series.  ``finish_dataset`` turns a
feature frame into a Dataset (used by ``prepared``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from finhrm_cli.config import FeatureConfig
from finhrm_cli.data.features import RSI_MA_N, RSI_N, feature_columns
from finhrm_cli.data.reading import N_PREV, PREPARED_FORMAT, PREPARED_VERSION, Source
from finhrm_cli.data.values import fail
from finhrm_cli.errors import DataError


# --------------------------------------------------------------------------- normalizer

@dataclass
class Normalizer:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x2d: np.ndarray) -> "Normalizer":
        x = np.asarray(x2d, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise DataError("no training rows to fit the normaliser on; use a longer history.")
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std = np.where(std < 1e-12, 1.0, std)
        return cls(mean=mean, std=std)

    @classmethod
    def fit_frame(cls, frame: pl.DataFrame, columns: list[str], start: int, stop: int) -> "Normalizer":
        """``fit`` on rows ``start:stop`` of ``columns``, one column at a time (no 2-D copy of
        a big frame; the same numbers, as numpy reduces each contiguous column alike)."""
        if stop <= start or not columns:
            raise DataError("no training rows to fit the normaliser on; use a longer history.")
        part = frame.slice(start, stop - start)
        cols = [np.asarray(part[c].to_numpy(), dtype=np.float64) for c in columns]
        mean = np.array([v.mean() for v in cols])
        std = np.array([v.std() for v in cols])
        return cls(mean=mean, std=np.where(std < 1e-12, 1.0, std))

    def transform(self, x2d: np.ndarray) -> np.ndarray:
        x = np.asarray(x2d, dtype=np.float64)
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"stored normaliser is malformed ({exc}); re-run prepare/train.") from None
        if mean.shape != std.shape or mean.ndim != 1 or not np.all(np.isfinite(mean)) or not np.all(std > 0):
            raise DataError("stored normaliser is malformed (mean/std shapes or values); re-run prepare/train.")
        return cls(mean=mean, std=std)

    def __eq__(self, other) -> bool:
        return isinstance(other, Normalizer) and np.array_equal(self.mean, other.mean) and np.array_equal(self.std, other.std)


# --------------------------------------------------------------------------- windows

@dataclass
class Windows:
    x: np.ndarray          # (n, T, F) float32, normalised
    y: np.ndarray          # (n, 2) float32 log-ratio targets [high, low]; NaN where unknown
    end: np.ndarray        # (n,) int64 row in Dataset.frame of the last observed day
    dates: np.ndarray      # (n,) datetime64[D] of the last observed day
    close: np.ndarray      # (n,) float64 of the last observed day
    high: np.ndarray
    low: np.ndarray
    next_high: np.ndarray  # (n,) float64 actual price h ahead; NaN if unknown
    next_low: np.ndarray
    scale: np.ndarray      # (n,) float64 volatility scale of the last observed day (see scale_expr)

    def __len__(self) -> int:
        return int(self.end.shape[0])

    def subset(self, idx) -> "Windows":
        return Windows(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})


# --------------------------------------------------------------------------- splits

SPLITS = ("train", "val", "test")


def _split_sizes(n: int, fcfg: FeatureConfig) -> dict[str, tuple[int, int]]:
    n_train = int(math.floor(n * fcfg.train_frac + 1e-9))
    n_val = int(math.floor(n * fcfg.val_frac + 1e-9))
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}


def _ends(start: int, end: int, seq_len: int, horizon: int) -> np.ndarray:
    """Window end rows t with rows t-seq_len+1..t and the target row t+h all in [start, end)."""
    lo, hi = start + seq_len - 1, end - 1 - horizon
    return np.arange(lo, hi + 1, dtype=np.int64) if hi >= lo else np.zeros(0, dtype=np.int64)


def _rows_needed(fcfg: FeatureConfig, min_windows: int) -> int:
    if min_windows <= 0:
        return fcfg.seq_len
    k = fcfg.seq_len - 1 + fcfg.horizon + min_windows
    shares = {"train": fcfg.train_frac, "val": fcfg.val_frac, "test": 1.0 - fcfg.train_frac - fcfg.val_frac}
    used = {name for name, share in shares.items() if share > 1e-9}  # (every row trains: train only)
    n = max(k, int(k / max(min(shares[u] for u in used), 1e-9)) - 3)
    for n in range(n, n + 10_000_000):
        sizes = _split_sizes(n, fcfg)
        if all(e - s >= k for name, (s, e) in sizes.items() if name in used):
            return n
    return n  # pragma: no cover


def _compute_splits(frame: pl.DataFrame, fcfg: FeatureConfig) -> dict[str, dict]:
    dates = frame["date"]
    out = {}
    for name, (s, e) in _split_sizes(frame.height, fcfg).items():
        ends = _ends(s, e, fcfg.seq_len, fcfg.horizon)
        out[name] = {
            "start": s,
            "end": e,
            "rows": e - s,
            "first_date": dates[s].isoformat() if e > s else None,
            "last_date": dates[e - 1].isoformat() if e > s else None,
            "n_windows": int(ends.size),
            "first_end": int(ends[0]) if ends.size else None,
            "last_end": int(ends[-1]) if ends.size else None,
        }
    return out


# --------------------------------------------------------------------------- dataset

@dataclass
class Dataset:
    frame: pl.DataFrame
    feature_names: list[str]
    source: Source
    fcfg: FeatureConfig
    normalizer: Normalizer
    splits: dict[str, dict]
    dropped: dict[str, int]
    _x: np.ndarray | None = field(default=None, repr=False, compare=False)

    # ---- arrays
    def features(self) -> np.ndarray:
        """(n_rows, F) float64 un-normalised features of every row of ``frame``."""
        return self.frame.select(feature_columns(self.feature_names)).to_numpy().astype(np.float64, copy=False)

    def use_normalizer(self, normalizer: "Normalizer") -> None:
        """Normalise with ``normalizer`` from now on (several series share one)."""
        self.normalizer, self._x = normalizer, None

    def _normalized(self) -> np.ndarray:
        if self._x is None:
            self._x = np.ascontiguousarray(self.normalizer.transform(self.features()), dtype=np.float32)
        return self._x

    def window_ends(self, split: str) -> np.ndarray:
        T, h = self.fcfg.seq_len, self.fcfg.horizon
        if split == "all":
            return np.arange(T - 1, self.frame.height, dtype=np.int64)
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; use train, val, test or all")
        sp = self.splits[split]
        return _ends(sp["start"], sp["end"], T, h)

    def windows(self, split: str) -> Windows:
        """Windows of ``seq_len`` days ending at each end row of ``split``.

        train/val/test: only windows whose rows and target row lie in that split.
        all: every row with enough history, including the last rows whose target is unknown.
        """
        return self.windows_at(self.window_ends(split))

    def windows_at(self, ends: np.ndarray) -> Windows:
        """The windows ending at the frame rows ``ends`` (each at least ``seq_len - 1``)."""
        ends = np.asarray(ends, np.int64)
        T = self.fcfg.seq_len
        x2 = self._normalized()
        F = x2.shape[1]
        if ends.size:
            view = np.lib.stride_tricks.sliding_window_view(x2, T, axis=0)  # (n-T+1, F, T)
            x = np.ascontiguousarray(view[ends - (T - 1)].transpose(0, 2, 1), dtype=np.float32)
        else:
            x = np.zeros((0, T, F), dtype=np.float32)
        f = self.frame

        def col(name: str) -> np.ndarray:
            return f[name].to_numpy(allow_copy=True).astype(np.float64)[ends]

        y = np.stack([col("target_high"), col("target_low")], axis=1).astype(np.float32) if ends.size else np.zeros((0, 2), np.float32)
        return Windows(
            x=x,
            y=y,
            end=ends,
            dates=f["date"].to_numpy().astype("datetime64[D]")[ends],
            close=col("close"),
            high=col("high"),
            low=col("low"),
            next_high=col("next_high"),
            next_low=col("next_low"),
            scale=col("scale"),
        )

    def head(self, n_rows: int, fcfg: FeatureConfig, normalizer: "Normalizer | None" = None) -> "Dataset":
        """The first ``n_rows`` rows as a dataset of their own, split by ``fcfg`` and with a
        normaliser fit on its own training rows (walk-forward folds)."""
        return finish_dataset(self.frame.head(n_rows), self.feature_names, self.source, fcfg, normalizer,
                       self.dropped, self.source.path, 1)

    # ---- descriptions
    def summary(self) -> dict:
        """JSON-able description: source, usable rows and date range, splits, dropped rows, warnings."""
        d = self.frame["date"]
        has = self.frame.height > 0
        return {
            "source": self.source.to_dict(),
            "shape": self.source.shape,
            "rows": self.frame.height,            # usable rows (after the warm-up)
            "rows_read": self.source.n_rows,
            "first_date": d[0].isoformat() if has else None,
            "last_date": d[-1].isoformat() if has else None,
            "seq_len": self.fcfg.seq_len,
            "horizon": self.fcfg.horizon,
            "splits": {k: dict(v) for k, v in self.splits.items()},
            "windows_all": int(self.window_ends("all").size),
            "dropped": dict(self.dropped),
            "warnings": list(self.source.warnings),
            "notes": list(self.source.notes),
            "feature_names": list(self.feature_names),
        }

    def meta(self) -> dict:
        from finhrm_cli import __version__

        return {
            "format": PREPARED_FORMAT,
            "format_version": PREPARED_VERSION,
            "finhrm_version": __version__,
            "source": self.source.to_dict(),
            "features": dataclasses.asdict(self.fcfg),
            "feature_names": list(self.feature_names),
            "normalizer": self.normalizer.to_dict(),
            "splits": {k: dict(v) for k, v in self.splits.items()},
            "dropped": dict(self.dropped),
            "n_rows": self.frame.height,
        }


def _too_few(shown: str, fcfg: FeatureConfig, n_read: int, usable: int, warm: int, min_windows: int) -> DataError:
    need = _rows_needed(fcfg, min_windows)
    if usable == 0:  # the file ended inside the warm-up: say what a full warm-up takes
        warm = max(warm, RSI_N + RSI_MA_N - 1, N_PREV, fcfg.volume_window - 1)
    if min_windows <= 0:
        what = f"seq_len={fcfg.seq_len} needs at least {need} usable rows"
    else:
        what = (
            f"seq_len={fcfg.seq_len}, horizon={fcfg.horizon} and splits {fcfg.train_frac:.2f}/{fcfg.val_frac:.2f}/"
            f"{1 - fcfg.train_frac - fcfg.val_frac:.2f} need at least {need} usable rows"
        )
    return fail(
        shown,
        f"too few rows: {what} ({need + warm} in the file with {warm} indicator warm-up rows), but it has "
        f"{n_read} rows, {usable} usable; use a longer history or lower --seq-len/--horizon.",
    )


def finish_dataset(frame, names, source, fcfg, normalizer, dropped, shown, min_windows) -> Dataset:
    usable = frame.height
    warm = sum(dropped.values())
    need = _rows_needed(fcfg, min_windows)
    if usable < need:
        raise _too_few(shown, fcfg, source.n_rows, usable, warm, min_windows)
    splits = _compute_splits(frame, fcfg)
    ds = Dataset(frame=frame, feature_names=list(names), source=source, fcfg=fcfg,
                 normalizer=normalizer, splits=splits, dropped=dict(dropped))
    if normalizer is None:
        sp = splits["train"]
        ds.normalizer = Normalizer.fit_frame(frame, feature_columns(names), sp["start"], sp["end"] - fcfg.horizon)
    elif ds.normalizer.mean.shape[0] != len(names):
        raise DataError(
            f"{shown}: the normaliser has {ds.normalizer.mean.shape[0]} features but feature set "
            f"{fcfg.feature_set!r} has {len(names)}; use the run's --feature-set."
        )
    return ds


def concat_windows(parts: list[Windows]) -> Windows:
    """Windows of several series, one after the other (``end`` stays per series)."""
    if len(parts) == 1:
        return parts[0]
    return Windows(**{f.name: np.concatenate([getattr(w, f.name) for w in parts]) for f in dataclasses.fields(Windows)})


def pool_normalizer(dss) -> None:
    """One normaliser for several series, fit on all their training rows (each series' own
    rows up to its training split, less the horizon, so no target leaks into it)."""
    rows = [ds.features()[ds.splits["train"]["start"]: ds.splits["train"]["end"] - ds.fcfg.horizon] for ds in dss]
    pooled = Normalizer.fit(np.concatenate(rows))
    for ds in dss:
        ds.use_normalizer(pooled)
