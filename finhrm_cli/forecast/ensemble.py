"""An ensemble's forecaster: the mean of several runs' forecasts, used like one run's.

Each member is a finished run (its Forecaster, its config, its folder).  The ensemble's own
windows are those of the member with the longest window (``seq_len``), on the frame its
features give; every member builds its own windows of the same rows with its own features,
window length and normaliser, and the forecasts are aligned by date (every row of the
ensemble's windows has a forecast from each member, or it is one line naming the row).  The
ensemble's forecast of a row is the mean of the members' blended forecasts (log ratios, each
member's HRM with its own linear partner); its conformal residuals are its own, from its
validation forecasts (``run.ensemble``).  Halting is per member: with ``--act`` each member
halts where its own Q head says, and the segments are pooled (summed per row).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from finhrm_cli.errors import DataError
from finhrm_cli.forecast.parts import iso
from finhrm_cli.forecast.scoring import score_parts


@dataclasses.dataclass
class Member:
    fc: object          # the member's Forecaster
    rc: object          # its RunConfig
    path: Path          # its folder (a copy inside the ensemble's folder)


def same_features(a, b) -> bool:
    """Two FeatureConfigs that give the same frame (they may differ in ``seq_len`` only)."""
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    da.pop("seq_len"), db.pop("seq_len")
    return da == db


def pool_segments(per_member: list[dict]) -> dict:
    """``actstats.segments_used`` of every member as one: the segments the ensemble runs per
    row (summed over members), the halting steps counted over members, and each member's."""
    seg = [s for s in per_member if s.get("mean_segments") is not None]
    if not seg:
        return {"mean_segments": None, "segments_histogram": [], "max_segments": 0, "skippable_share": None,
                "members": per_member}
    total, most = sum(s["mean_segments"] for s in seg), sum(s["max_segments"] for s in seg)
    hist = np.zeros(max(len(s["segments_histogram"]) for s in seg), np.int64)
    for s in seg:
        hist[:len(s["segments_histogram"])] += np.asarray(s["segments_histogram"], np.int64)
    return {"mean_segments": total, "segments_histogram": [int(c) for c in hist], "max_segments": most,
            "skippable_share": 1.0 - total / most, "members": per_member}


class EnsembleForecaster:
    """The Forecaster of an ensemble run (module notes): the same calls ``predict``,
    ``evaluate`` and ``inspect`` make of one run's."""

    blend = None             # each member blends with its own partner
    halt_calibration = None  # each member has its own
    weights_sha256 = None

    def __init__(self, members: list[Member], conformal: dict | None = None, run_dir: Path | None = None):
        self.members = members
        self.conformal = conformal
        self.run_dir = Path(run_dir) if run_dir is not None else None
        acts = {m.fc.act for m in members}
        self.act = acts.pop() if len(acts) == 1 else None  # None: each member's own default
        self._own: dict[int, dict] = {}

    @property
    def model(self):
        return self.members[0].fc.model

    @property
    def cfg(self):
        return self.members[0].fc.cfg

    # ------------------------------------------------------------------ each member's windows

    def _member_dataset(self, i: int, ds):
        """Member ``i``'s dataset of the rows ``ds`` holds, with its own features and normaliser."""
        from finhrm_cli.data.dataset import Normalizer
        from finhrm_cli.run.data import dataset_for_run, run_datasets

        m = self.members[i]
        if same_features(m.rc.features, ds.fcfg):  # the same frame: a window length of its own
            mds = dataclasses.replace(ds, fcfg=m.rc.features, _x=None)
            mds.use_normalizer(Normalizer.from_dict(m.rc.normalizer))
            return mds
        src = ds.source
        if src.shape == "prepared":
            inside = self.run_dir is not None and Path(src.path).resolve().is_relative_to(self.run_dir.resolve())
            if not inside:
                raise DataError(f"{src.path}: a prepared folder holds one feature set, and this ensemble's members "
                                "use several; pass the CSV or Parquet file instead.")
            if i not in self._own:  # the ensemble's own data: the member's own prepared copy
                self._own[i] = {d.source.name: d for d in run_datasets(m.path, m.rc)}
            if src.name not in self._own[i]:
                raise DataError(f"{m.path}: holds no series {src.name!r}; the ensemble is damaged, make it again.")
            return self._own[i][src.name]
        cols = dict(src.columns)
        date_col = cols.pop("date", None)
        return dataset_for_run(m.rc, src.path, date_col, cols or None, tuple(src.acknowledged))

    def member_parts(self, i: int, parts) -> list:
        """Member ``i``'s windows of the rows of ``parts``, aligned by date."""
        out = []
        for ds, w in parts:
            mds = self._member_dataset(i, ds)
            if mds.frame is ds.frame:
                ends = np.asarray(w.end, np.int64)
                found = np.ones(len(ends), bool)
            else:
                dates = mds.frame["date"].to_numpy().astype("datetime64[D]")
                ends = np.searchsorted(dates, w.dates).astype(np.int64)
                found = ends < len(dates)
                found[found] = dates[ends[found]] == w.dates[found]
            found &= ends >= mds.fcfg.seq_len - 1
            if not found.all():
                bad = iso(w.dates[int(np.flatnonzero(~found)[0])])
                raise DataError(f"{ds.source.path}: member {self.members[i].path.name} of the ensemble has no "
                                f"window ending {bad}; the members were trained on other data, make it again.")
            out.append((mds, mds.windows_at(ends)))
        return out

    # ------------------------------------------------------------------ forecasts

    def hrm(self, parts, act: bool | None = None, segments: dict | None = None) -> list[np.ndarray]:
        """The mean of the members' forecasts (log ratios; each blended with its own partner)."""
        if sum(len(w) for _, w in parts) == 0:
            return [np.zeros((0, 2)) for _ in parts]
        total = [np.zeros((len(w), 2)) for _, w in parts]
        per_member = []
        for i, m in enumerate(self.members):
            seg: dict | None = {} if segments is not None else None
            preds = m.fc.forecast(self.member_parts(i, parts), act=act, segments=seg)
            for t, p in zip(total, preds):
                t += p
            if seg is not None:
                per_member.append(seg)
        if segments is not None and per_member:
            segments.update(pool_segments(per_member))
        return [t / len(self.members) for t in total]

    def combine(self, parts, hrm_preds: list[np.ndarray]) -> list[np.ndarray]:
        return hrm_preds  # the members blended already

    def forecast(self, parts, act: bool | None = None, segments: dict | None = None) -> list[np.ndarray]:
        return self.hrm(parts, act, segments)

    def extra(self, hrm_preds) -> None:
        return None

    def residuals(self, parts, dss, preds: list[np.ndarray]) -> dict:
        """Conformal residuals of the ensemble's own forecasts ``preds`` of ``parts`` (its
        validation), as a single run's (``forecaster.residuals``): per volatility third, with
        residual heads fit on the ensemble's forecasts of the training windows of ``dss``."""
        from finhrm_cli.forecast.forecaster import residuals
        from finhrm_cli.forecast.parts import of

        tr = [(ds, w) for ds, w in of(dss, "train") if len(w)]
        return residuals(dss, parts, preds, tr, self.forecast(tr) if tr else None)

    def score(self, parts, coverage: float = 0.8, intervals: str = "adaptive", cutoffs=None,
              hrm_preds: list[np.ndarray] | None = None, train_scales: list | None = None) -> dict:
        preds = self.forecast(parts) if hrm_preds is None else hrm_preds
        return score_parts(parts, preds, self.conformal, coverage, intervals, cutoffs, None, train_scales)
