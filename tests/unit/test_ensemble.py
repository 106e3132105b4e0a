"""The ensemble forecaster's pieces: which feature settings share a frame, and the pooled
segments of ``--act``."""

from __future__ import annotations

from finhrm_cli.config import FeatureConfig
from finhrm_cli.forecast.actstats import segments_used
from finhrm_cli.forecast.ensemble import pool_segments, same_features


def test_same_features_ignores_the_window_length_only():
    assert same_features(FeatureConfig(seq_len=5), FeatureConfig(seq_len=20))
    assert not same_features(FeatureConfig(feature_set="hrm18"), FeatureConfig(feature_set="extended"))
    assert not same_features(FeatureConfig(scale_inputs=True), FeatureConfig())
    assert not same_features(FeatureConfig(train_frac=0.6), FeatureConfig())


def test_pooled_segments_sum_over_members():
    a = segments_used([1, 2, 2, 1], 2)   # mean 1.5 of 2
    b = segments_used([4, 4, 1, 3], 4)   # mean 3.0 of 4
    pooled = pool_segments([a, b])
    assert pooled["mean_segments"] == a["mean_segments"] + b["mean_segments"]
    assert pooled["max_segments"] == 6
    assert pooled["segments_histogram"] == [3, 2, 1, 2]
    assert abs(pooled["skippable_share"] - (1 - 4.5 / 6)) < 1e-12
    assert pooled["members"] == [a, b]
    assert pool_segments([{"mean_segments": None}])["mean_segments"] is None


def test_a_killed_ensemble_creation_is_finhrms_only_without_symlinks(tmp_path):
    """An ensemble folder killed before its config.json (members copied) is finhrm's to take
    back; one with a symlink among the members is not touched."""
    from finhrm_cli.run.create import abandoned_creation, discard_creation, new_run_dir

    run = new_run_dir("bars-ensemble", tmp_path)
    (run / "members" / "00").mkdir(parents=True)
    (run / "members" / "00" / "config.json").write_text("{}")
    assert abandoned_creation(run)
    (run / "members" / "01").symlink_to(tmp_path)
    assert not abandoned_creation(run) and not discard_creation(run) and run.exists()
    (run / "members" / "01").unlink()
    assert discard_creation(run) and not run.exists()
