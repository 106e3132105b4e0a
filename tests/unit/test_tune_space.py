"""``finhrm tune``'s search space and study helpers, without training: the default space,
``--space`` over it, refused settings, a trial's settings, the schedule step, the view at 80
columns."""

from __future__ import annotations

import io

import pytest

from finhrm_cli.errors import UsageError
from finhrm_cli.tune import space as sp


def test_the_default_space_is_valid_and_every_setting_is_known():
    space = sp.load_space(None)
    assert set(space) == set(sp.DEFAULT_SPACE)
    assert space["lr"] == {"low": 3e-4, "high": 3e-3, "log": True}
    assert space["epochs"]["log"] is False and isinstance(space["epochs"]["low"], int)


def test_a_space_file_narrows_widens_and_adds(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('lr = {low = 1e-4, high = 1e-3, log = true}\nd_model = [128]\nbatch-size = [32, 64]\n'
                 '[model]\nheads = [2, 4]\n')
    space = sp.load_space(f)
    assert space["lr"]["low"] == 1e-4 and space["d_model"] == {"choices": [128]}
    assert space["batch_size"] == {"choices": [32, 64]} and space["n_heads"] == {"choices": [2, 4]}
    assert space["epochs"] == sp.load_space(None)["epochs"]  # untouched entries stay


@pytest.mark.parametrize("text, needle", [
    ("val_frac = [0.1, 0.2]", "cannot be searched"),
    ("horizon = [1, 2]", "cannot be searched"),
    ("colour = [1]", "unknown setting"),
    ("d_model = {low = 64}", "low = A, high = B"),
    ("d_model = {low = 64.5, high = 128}", "whole numbers"),
    ("lr = {low = 0, high = 1, log = true}", "above 0"),
    ("epochs = {low = 9, high = 3}", "must not exceed"),
    ("loss = [1, 2]", "str values"),
    ("loss = {low = 1, high = 2}", "not a number"),
    ("d_model = [64, 'wide']", "int values"),
    ("h_cycles = {low = 1, high = 99}", "must lie in"),
    ("lr = [", "not valid TOML"),
])
def test_bad_space_files_are_one_clear_line(tmp_path, text, needle):
    f = tmp_path / "s.toml"
    f.write_text(text + "\n")
    with pytest.raises(UsageError, match=needle) as exc:
        sp.load_space(f)
    assert "--space" in str(exc.value) and "\n" not in str(exc.value)


def test_a_trials_settings_hold_the_fixed_choices_optuna_does_not_record():
    space = {"d_model": {"choices": [32]}, "lr": {"low": 1e-3, "high": 2e-3, "log": True},
             "seq_len": {"choices": [5, 10]}}
    base = {"features": {}, "model": {"n_heads": 2}, "train": {"seed": 3}}
    s = sp.trial_settings(base, space, {"lr": 0.0015, "seq_len": 5})
    assert s == {"features": {"seq_len": 5}, "model": {"n_heads": 2, "d_model": 32},
                 "train": {"seed": 3, "lr": 0.0015}}
    assert sp.fits(s) is None
    assert "divisible" in sp.fits(sp.settings_with(base, {"d_model": 33}))


def test_schedule_step_compares_schedules_of_different_length():
    from finhrm_cli.tune.study import schedule_step

    assert schedule_step(1, 2) == schedule_step(3, 6) == 50
    assert schedule_step(10, 10) == 100


def test_the_study_view_fits_80_columns(monkeypatch):
    from rich.console import Console

    from finhrm_cli.ui import console, tuning

    buf = io.StringIO()
    monkeypatch.setattr(console, "out", Console(file=buf, width=80, no_color=True))
    monkeypatch.setattr(console, "err", Console(file=io.StringIO(), width=80, no_color=True))
    params = {"lr": 0.0012345, "d_model": 192, "h_layers": 3, "l_layers": 2, "h_cycles": 3, "l_cycles": 1,
              "halt_max_steps": 6, "seq_len": 20, "feature_set": "extended", "loss": "huber", "ema": 0.98,
              "epochs": 10, "weight_decay": 0.2345}
    trials = [{"number": i, "state": "complete", "value": 1.23456 + i, "params": params, "seconds": 1234.5}
              for i in range(12)] + [{"number": 12, "state": "fail", "value": None, "params": {}, "seconds": 1,
                                      "reason": "these settings make no valid model"}]
    tuning.render_tune({
        "study": "a-rather-long-series-name-and-2-more", "storage": "sqlite:////home/someone/.local/share/finhrm/"
        "runs/studies/a-rather-long-series-name-and-2-more.db", "metric": "val MAE", "series": ["x"],
        "counts": {"complete": 12, "pruned": 3, "fail": 1}, "trials": trials,
        "best": {"number": 0, "value": 1.23456, "params": params, "run": "/x/" + "y" * 90,
                 "test": {"mae": 12345.678, "skill": 0.987, "rows": 1234, "first_date": "2020-01-01"}},
        "default": {"value": 1.3, "val": {"mae": 1.3}, "test": {"mae": 12000.5, "skill": 0.99, "rows": 1230,
                                                             "first_date": "2020-01-08"}},
        "importances": {"lr": 0.61, "d_model": 0.2, "halt_max_steps": 0.19}, "best_toml": "/t/best.toml",
        "trials_run": 12, "wall_seconds": 2400.4})
    lines = buf.getvalue().splitlines()
    assert max(len(ln) for ln in lines) <= 80
    assert any("12,345.6780" in ln for ln in lines) and any("halt_max_steps" in ln for ln in lines)


def test_a_trial_behind_the_median_is_pruned_but_never_at_its_last_epoch(monkeypatch, tmp_path):
    """The pruning callback, with training replaced by a script of validation MAEs."""
    optuna = pytest.importorskip("optuna")
    from finhrm_cli.service import tuning
    from finhrm_cli.train.events import Evaluated

    def fake_train(paths, settings, out, callback, **kw):
        epochs = settings["train"]["epochs"]
        for e in range(1, epochs + 1):
            callback(Evaluated(epoch=e, step=e, train_loss=None, q_loss=None, train_halt_steps=None,
                               train_segments=None, val_mae=settings["train"]["lr"] * 1000, val_mae_high=None,
                               val_mae_low=None, best_val_mae=None, best_epoch=None, is_best=True,
                               samples_per_s=None, seconds=0.0, lr=0.0))
        return {"run": str(out), "epochs_run": epochs,
                "metrics": {"val": {"results": {"finhrm": {"mae": settings["train"]["lr"] * 1000}}}}}

    monkeypatch.setattr(tuning.training, "train", fake_train)
    monkeypatch.setattr(tuning, "_run_splits", lambda run: [])
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    study.set_user_attr(tuning.ATTR, {"split": {}})
    events = []
    search = tuning._Search([], {"features": {}, "model": {}, "train": {}}, {}, 0, study, tmp_path, False,
                            events.append, None, None)
    for lr, epochs in ((1e-3, 4), (2e-3, 4), (3e-3, 4), (9e-3, 4), (9e-3, 1)):
        search.space = {"lr": {"choices": [lr]}, "epochs": {"choices": [epochs]}}
        search.one(1, 1)
    states = [t.state.name for t in study.trials]
    # the 4th is behind the median at its first validation; the 5th has only its last one
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert not (tmp_path / "trial-0003").exists()  # a pruned trial's folder is removed
