"""``finhrm prepare``: read a file, build its features and save the prepared copy."""

from __future__ import annotations

from pathlib import Path

from finhrm_cli.config import FeatureConfig


def prepare(path: Path, fcfg: FeatureConfig, out: Path | None = None, date_col=None, col_map=None) -> dict:
    from finhrm_cli import data
    from finhrm_cli.run.files import check_run_free

    if out is not None:
        check_run_free(out, "--out")
    ds = data.prepare(path, fcfg, date_col=date_col, col_map=col_map)
    target = Path(out) if out else Path.cwd() / f"{ds.source.name}.prepared"
    check_run_free(target, "--out")
    data.save_prepared(ds, target)
    summary = ds.summary()
    summary["output"] = str(target)
    return summary
