"""Features and targets as polars expressions.

The feature sets (``HRM18``, ``FEATURE_SETS``), the indicators a file may lack (EMA 7,
Wilder RSI and its mean, the previous days' extremes), the scale-free inputs, the extra
features of the "extended" set, the volatility scale (``scale_expr``) and the targets,
all put together by ``build_features`` in one lazy query.  Everything at row t reads
rows <= t only (targets aside).
"""

from __future__ import annotations

import math

import polars as pl

from finhrm_cli.config import FeatureConfig
from finhrm_cli.data.reading import INDICATOR_COLS, N_PREV
from finhrm_cli.data.values import first_index
from finhrm_cli.errors import DataError

# --------------------------------------------------------------------------- feature sets

HRM18: list[str] = [
    "open", "high", "low", "close", "ema7", "volume", "rsi", "rsi_ma",
    "prev1_high", "prev1_low", "prev2_high", "prev2_low", "prev3_high", "prev3_low",
    "prev4_high", "prev4_low", "prev5_high", "prev5_low",
]
# "extended": the 18 inputs plus what a careful user would add for a next-day range
# forecast: today's true range and its 5- and 20-day means (the volatility regime),
# multi-day returns, the overnight gap, the distance to the 20-day extremes, realised
# volatility and the day of the week.  All of them read rows <= t only.
EXTENDED_EXTRA: list[str] = [
    "true_range", "atr_5", "atr_20", "ret_1", "ret_5", "ret_20", "gap",
    "hi_20", "lo_20", "vol_20", "dow_sin", "dow_cos",
]
# "long": "extended" plus long memory: the mean true range over 66 and 132 sessions, the
# high-low range over 5/22/66/132 sessions, and three range-based volatility estimators over
# 22 sessions (Parkinson, Garman-Klass, Rogers-Satchell), which use the open, high, low and
# close of each day and are several times more efficient than close-to-close volatility.
LONG_EXTRA: list[str] = [
    "atr_66", "atr_132", "rng_5", "rng_22", "rng_66", "rng_132", "park_22", "gk_22", "rs_22",
]
# "slow": "extended" plus a slow context for the two-clock HRM: the mean true range and the
# high-low range over 66/132/250 sessions (about a quarter, half a year and a year), the
# momentum over the same spans, the 22-session range and the three range-based volatility
# estimators.  These columns come last; the model reads them from the window's last day and
# feeds them to the H (slow) module only, while L reads the daily columns (see
# ``context_width`` and ``ModelConfig.h_context``).
SLOW_CONTEXT: list[str] = [
    "atr_66", "atr_132", "atr_250", "rng_22", "rng_66", "rng_132", "rng_250",
    "mom_66", "mom_132", "mom_250", "park_22", "gk_22", "rs_22",
]
FEATURE_SETS: dict[str, list[str]] = {
    "hrm18": HRM18, "extended": HRM18 + EXTENDED_EXTRA, "long": HRM18 + EXTENDED_EXTRA + LONG_EXTRA,
    "slow": HRM18 + EXTENDED_EXTRA + SLOW_CONTEXT,
}
# feature sets whose trailing columns are the H module's slow context
CONTEXT_SETS: dict[str, list[str]] = {"slow": SLOW_CONTEXT}


def context_width(feature_set: str) -> int:
    """How many trailing columns of ``feature_set`` are the slow context H reads (0: none)."""
    return len(CONTEXT_SETS.get(feature_set, ()))


# With scale_inputs, these log price ratios are divided by the day's volatility scale and
# these log volatility levels are taken relative to it, so the inputs are scale-free.
LOG_RATIO_FEATURES = frozenset(
    {"open", "high", "low", "ema7", "true_range", "ret_1", "ret_5", "ret_20", "gap", "hi_20", "lo_20",
     "vol_20", "rng_5", "rng_22", "rng_66", "rng_132", "rng_250", "mom_66", "mom_132", "mom_250"}
    | {f"prev{k}_{s}" for k in range(1, 6) for s in ("high", "low")}
)
LOG_LEVEL_FEATURES = frozenset({"atr_5", "atr_20", "atr_66", "atr_132", "atr_250", "park_22", "gk_22", "rs_22"})
LONG_MIN_SAMPLES = 22   # the 66- to 250-session features start from 22 sessions, not 250

FEATURE_PREFIX = "f_"   # feature columns in Dataset.frame are "f_<name>"; raw prices keep their names
RAW_COLUMNS = ["date", "open", "high", "low", "close", "volume", "next_high", "next_low", "scale"]
SCALE_N = 20            # trailing days of the volatility scale
SCALE_FLOOR = 1e-4
TARGET_COLUMNS = ["target_high", "target_low"]

EMA_ALPHA = 2.0 / 8.0   # EMA 7
RSI_N = 14
RSI_MA_N = 14
VOLUME_FLOOR = 1e-3     # relative volume is clipped here before the log (a zero-volume day)


def feature_columns(names: list[str]) -> list[str]:
    """Column names in ``Dataset.frame`` for the given feature names."""
    return [FEATURE_PREFIX + n for n in names]


# --------------------------------------------------------------------------- features

def _wilder(x: pl.Expr, idx: pl.Expr, n: int) -> pl.Expr:
    """Wilder's smoothing of ``x`` (x[0] is null: a diff): the first value, at row n, is the
    simple mean of x[1..n]; then avg_t = (avg_{t-1} * (n-1) + x_t) / n."""
    seeded = pl.when(idx == n).then(x.rolling_mean(n)).when(idx > n).then(x).otherwise(None)
    return seeded.ewm_mean(alpha=1.0 / n, adjust=False)


def _indicator_exprs(present: set[str]) -> list[pl.Expr]:
    """Expressions for ema7 / rsi / rsi_ma / prevK_* the bars lack (as given otherwise)."""
    idx = pl.col("_i")
    out = []
    if "ema7" not in present:
        out.append(pl.col("close").ewm_mean(alpha=EMA_ALPHA, adjust=False).alias("ema7"))
    if "rsi" not in present:
        delta = pl.col("close").diff()
        gain = _wilder(delta.clip(lower_bound=0.0), idx, RSI_N)
        loss = _wilder((-delta).clip(lower_bound=0.0), idx, RSI_N)
        rsi = pl.when(loss == 0.0).then(pl.lit(100.0)).otherwise(100.0 - 100.0 / (1.0 + gain / loss))
        out.append(pl.when(gain.is_null()).then(None).otherwise(rsi).alias("rsi"))
    for k in range(1, N_PREV + 1):
        for s in ("high", "low"):
            if f"prev{k}_{s}" not in present:
                out.append(pl.col(s).shift(k).alias(f"prev{k}_{s}"))
    return out


def _true_range() -> pl.Expr:
    """log(max(high, prev close) / min(low, prev close)); log(high / low) on the first row."""
    pc = pl.col("close").shift(1)
    hi = pl.max_horizontal(pl.col("high"), pc)
    lo = pl.min_horizontal(pl.col("low"), pc)
    return (hi / lo).log()


def scale_expr() -> pl.Expr:
    """The volatility scale of day t: mean log true range over the last SCALE_N days.

    Targets are divided by it for training (and predictions multiplied back), so the model
    works on a homoscedastic problem: a 2% range means something else in a calm and in a
    wild market.  Only rows <= t are read; early rows use the days there are.
    """
    return _true_range().rolling_mean(SCALE_N, min_samples=1).clip(lower_bound=SCALE_FLOOR).alias("scale")


def _extra_feature(name: str) -> pl.Expr | None:
    lc = pl.col("close").log()
    if name == "true_range":
        return _true_range()
    if name.startswith("atr_"):
        n = int(name[4:])
        return _true_range().rolling_mean(n, min_samples=min(n, LONG_MIN_SAMPLES)).log()
    if name.startswith("rng_"):
        n = int(name[4:])
        m = min(n, LONG_MIN_SAMPLES)
        return (pl.col("high").rolling_max(n, min_samples=m) / pl.col("low").rolling_min(n, min_samples=m)).log()
    if name in ("park_22", "gk_22", "rs_22"):
        hl = (pl.col("high") / pl.col("low")).log()
        if name == "park_22":
            var = hl * hl / (4 * math.log(2))
        elif name == "gk_22":
            co = (pl.col("close") / pl.col("open")).log()
            var = 0.5 * hl * hl - (2 * math.log(2) - 1) * co * co
        else:
            h, lo = pl.col("high"), pl.col("low")
            var = ((h / pl.col("close")).log() * (h / pl.col("open")).log()
                   + (lo / pl.col("close")).log() * (lo / pl.col("open")).log())
        # log of the volatility; a flat stretch (all four prices equal) floors at 1e-8
        return (var.rolling_mean(22).clip(lower_bound=1e-16).sqrt()).log()
    if name.startswith("ret_"):
        return lc - lc.shift(int(name[4:]))
    if name.startswith("mom_"):
        # log return over n sessions; before n sessions exist, since the first row (from
        # LONG_MIN_SAMPLES on, so a short file keeps its rows)
        n = int(name[4:])
        i = pl.int_range(pl.len())
        since = pl.when(i >= n).then(lc - lc.shift(n)).otherwise(lc - lc.first())
        return pl.when(i >= LONG_MIN_SAMPLES - 1).then(since).otherwise(None)
    if name == "gap":
        return (pl.col("open") / pl.col("close").shift(1)).log()
    if name == "hi_20":
        return (pl.col("high").rolling_max(20) / pl.col("close")).log()
    if name == "lo_20":
        return (pl.col("low").rolling_min(20) / pl.col("close")).log()
    if name == "vol_20":
        return (lc - lc.shift(1)).rolling_std(20)
    if name in ("dow_sin", "dow_cos"):
        ang = pl.col("date").dt.weekday().cast(pl.Float64) * (2 * math.pi / 7)
        return ang.sin() if name == "dow_sin" else ang.cos()
    return None


def _feature_exprs(names: list[str], has_volume: bool, volume_window: int, scale_inputs: bool = False) -> list[pl.Expr]:
    exprs = []
    for name in names:
        extra = _extra_feature(name)
        if extra is not None:
            e = extra
        elif name in ("open", "high", "low", "close", "ema7") or name.startswith("prev"):
            e = (pl.col(name) / pl.col("close")).log()
        elif name == "volume":
            if has_volume:
                mean = pl.col("volume").rolling_mean(volume_window)
                ratio = (pl.col("volume") / mean).clip(lower_bound=VOLUME_FLOOR)
                e = pl.when(mean.is_null()).then(None).when(mean > 0).then(ratio.log()).otherwise(0.0)
            else:
                e = pl.lit(0.0)
        elif name in ("rsi", "rsi_ma"):
            e = pl.col(name) / 100.0
        else:
            raise DataError(f"feature {name!r} has no definition in finhrm_cli/data/features.py; pick another --feature-set.")
        if scale_inputs and name in LOG_RATIO_FEATURES:
            e = e / scale_expr()
        elif scale_inputs and name in LOG_LEVEL_FEATURES:
            e = e - scale_expr().log()
        exprs.append(e.cast(pl.Float64).alias(FEATURE_PREFIX + name))
    return exprs


def target_exprs(h: int) -> list[pl.Expr]:
    return [
        pl.col("high").shift(-h).alias("next_high"),
        pl.col("low").shift(-h).alias("next_low"),
        (pl.col("high").shift(-h) / pl.col("close")).log().alias("target_high"),
        (pl.col("low").shift(-h) / pl.col("close")).log().alias("target_low"),
    ]


def build_features(bars: pl.DataFrame, fcfg: FeatureConfig) -> tuple[pl.DataFrame, dict[str, int]]:
    """Bars -> (frame, dropped).

    ``frame``: one row per usable day (leading warm-up rows dropped) with the raw columns
    (date, open, high, low, close, volume, next_high, next_low), the targets
    (target_high, target_low; null for the last ``horizon`` rows) and one ``f_<name>``
    column per feature of ``fcfg.feature_set``.  ``dropped``: reason -> rows.
    Everything at row t depends on rows <= t only (targets aside).
    """
    if fcfg.feature_set not in FEATURE_SETS:
        raise DataError(f"unknown feature set {fcfg.feature_set!r}; use one of {', '.join(FEATURE_SETS)}.")
    names = FEATURE_SETS[fcfg.feature_set]
    present = {c for c in INDICATOR_COLS if c in bars.columns}
    if "volume" not in bars.columns:
        bars = bars.with_columns(pl.lit(None, dtype=pl.Float64).alias("volume"))
    has_volume = bars.height > 0 and bars["volume"].null_count() < bars.height
    fcols = feature_columns(names)
    lf = (
        bars.lazy()
        .with_row_index("_i")
        .with_columns(pl.col(["open", "high", "low", "close", "volume"]).cast(pl.Float64))
        .with_columns(
            pl.any_horizontal([pl.col(c).is_null() for c in sorted(present)] or [pl.lit(False)]).alias("_file_blank")
        )
        .with_columns(_indicator_exprs(present))
    )
    if "rsi_ma" not in present:
        lf = lf.with_columns(pl.col("rsi").rolling_mean(RSI_MA_N).alias("rsi_ma"))
    lf = lf.with_columns(_feature_exprs(names, has_volume, fcfg.volume_window, fcfg.scale_inputs) + target_exprs(fcfg.horizon) + [scale_expr()])
    lf = lf.with_columns(pl.all_horizontal([pl.col(c).is_not_null() & pl.col(c).is_finite() for c in fcols]).alias("_ok"))
    full = lf.select(["date"] + RAW_COLUMNS[1:] + TARGET_COLUMNS + fcols + ["_file_blank", "_ok"]).collect()

    ok = full["_ok"].to_numpy()
    lead = first_index(ok)
    lead = full.height if lead is None else lead
    frame = full.slice(lead)
    bad = first_index(~frame["_ok"].to_numpy())
    if bad is not None:
        row = frame.row(bad, named=True)
        missing = [c[len(FEATURE_PREFIX):] for c in fcols if row[c] is None or not math.isfinite(row[c])]
        raise DataError(
            f"the bars of {row['date']} give no value for {', '.join(missing)} after the warm-up; "
            "fill the gap in the file or delete the row."
        )
    file_blank = full["_file_blank"].to_numpy()[:lead]
    n_file = int(first_index(~file_blank) if first_index(~file_blank) is not None else lead)
    dropped: dict[str, int] = {}
    if n_file:
        dropped["file_indicator_warmup"] = n_file  # blanks at the start of the file's indicator columns
    if lead - n_file:
        dropped["indicator_warmup"] = lead - n_file  # rows before the computed indicators are defined
    return frame.drop(["_file_blank", "_ok"]), dropped
