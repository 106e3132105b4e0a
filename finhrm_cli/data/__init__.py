"""Daily bars in, model-ready numpy windows out (polars + numpy only).

Pipeline: ``read_bars`` (detect the file's shape, read only the columns it needs, validate with
one-line errors naming file, line and column) -> ``build_features`` (one lazy polars
query: indicators the file lacks, scale-free inputs, targets) -> chronological splits ->
``Normalizer`` fit on training rows only -> ``Dataset.windows`` (numpy stride tricks).

One job per module (each imports only the ones above it):

- ``values``: number and date parsing of one column (``parse_numbers``, ``parse_dates``).
- ``ack``: acknowledged dates (``--ack DATE``): ``parse_ack``, the hint a dated warning
  ends with, stored warnings less the acknowledged ones.
- ``files``: a file's bytes and dialects: gzip, Parquet, UTF-8/UTF-16, CSV sniffing; big
  CSV files are read block by block, never whole in memory (``open_data``).
- ``reading``: header matching, the checks and warnings, ``Source``, ``read_bars``,
  ``parse_col_map``, ``expand_inputs``.
- ``features``: features and targets as polars expressions: ``HRM18``, ``FEATURE_SETS``,
  indicators, the volatility scale, ``build_features``.
- ``dataset``: splits, ``Normalizer``, ``Windows``, ``Dataset``, ``concat_windows``.
- ``prepared``: ``prepare``, ``from_bars``, ``prepare_many``, ``save_prepared`` and the
  loader of prepared folders.

This package re-exports the names the rest of finhrm, the tests and the benchmarks use,
so ``from finhrm_cli import data; data.prepare(...)`` keeps working.
"""

from finhrm_cli.data.reading import (
    ALIASES,
    CANONICAL,
    DATE_ALIASES,
    INDICATOR_COLS,
    N_PREV,
    OHLC_RTOL,
    PREPARED_FORMAT,
    PREPARED_FRAME,
    PREPARED_META,
    PREPARED_VERSION,
    PRICE_COLS,
    PRICE_LIKE_INDICATORS,
    Source,
    parse_col_map,
    read_bars,
)
from finhrm_cli.data.ack import parse_ack, parse_ack_env
from finhrm_cli.data.inputs import DATA_SUFFIXES, expand_inputs, input_files, series_identity
from finhrm_cli.data.features import (
    EMA_ALPHA,
    EXTENDED_EXTRA,
    FEATURE_PREFIX,
    FEATURE_SETS,
    HRM18,
    RAW_COLUMNS,
    RSI_MA_N,
    RSI_N,
    SCALE_FLOOR,
    SCALE_N,
    SLOW_CONTEXT,
    TARGET_COLUMNS,
    VOLUME_FLOOR,
    scale_expr,
    build_features,
    context_width,
    feature_columns,
)
from finhrm_cli.data.dataset import SPLITS, Dataset, Normalizer, Windows, concat_windows, pool_normalizer
from finhrm_cli.data.prepared import from_bars, prepare, prepare_many, save_prepared

__all__ = [
    # reading
    "ALIASES", "CANONICAL", "DATA_SUFFIXES", "DATE_ALIASES", "INDICATOR_COLS", "N_PREV", "OHLC_RTOL",
    "PREPARED_FORMAT", "PREPARED_FRAME", "PREPARED_META", "PREPARED_VERSION", "PRICE_COLS",
    "PRICE_LIKE_INDICATORS", "Source", "expand_inputs", "input_files", "parse_col_map", "read_bars", "series_identity",
    "parse_ack", "parse_ack_env",
    # features
    "EMA_ALPHA", "EXTENDED_EXTRA", "FEATURE_PREFIX", "FEATURE_SETS", "HRM18", "RAW_COLUMNS",
    "RSI_MA_N", "RSI_N", "SCALE_FLOOR", "SCALE_N", "SLOW_CONTEXT", "TARGET_COLUMNS", "VOLUME_FLOOR",
    "scale_expr", "build_features", "context_width", "feature_columns",
    # dataset
    "SPLITS", "Dataset", "Normalizer", "Windows", "concat_windows", "pool_normalizer",
    # prepared
    "from_bars", "prepare", "prepare_many", "save_prepared",
]
