"""``finhrm prepare``: read a file, build its features and save the prepared copy."""

from __future__ import annotations

from pathlib import Path

from finhrm_cli.config import FeatureConfig


def prepare(path: Path, fcfg: FeatureConfig, out: Path | None = None, date_col=None, col_map=None,
            ack=()) -> dict:
    """Read and featurise ``path``; write the prepared folder to ``out``, by default beside
    the file (``NAME.prepared``), never over a folder finhrm did not make
    (``run.create.claim_folder``)."""
    from finhrm_cli import data
    from finhrm_cli.run.create import claim_folder
    from finhrm_cli.run.files import check_run_free

    if out is not None:
        check_run_free(out, "--out")
    ds = data.prepare(path, fcfg, date_col=date_col, col_map=col_map, ack=ack)
    beside = Path(path).expanduser().resolve().parent
    target = Path(out) if out else beside / f"{ds.source.name}.prepared"
    check_run_free(target, "--out")
    data.save_prepared(ds, claim_folder(target, "--out" if out else "prepare's default output"))
    summary = ds.summary()
    summary["output"] = str(target)
    return summary
