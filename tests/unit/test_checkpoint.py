"""Run folders: naming, atomic writes, save/load round trip, lookup, listing, bad files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from finhrm_cli.run import store
from finhrm_cli.run import files
from finhrm_cli.run import create
from finhrm_cli.train import step
from finhrm_cli.forecast import inference
from finhrm_cli.config import ModelConfig, to_dict
from finhrm_cli.errors import RunError

from finhrm_cli.blas import mlx_core

mx = mlx_core()

T, F = 5, 4


def mcfg(**kw) -> ModelConfig:
    base = dict(n_features=F, seq_len=T, d_model=32, n_heads=2, h_layers=1, l_layers=1,
                h_cycles=1, l_cycles=2, halt_max_steps=2)
    base.update(kw)
    return ModelConfig(**base)


def make_run(root, name="spy", seed=0, created=None, val_mae=None, finished=True):
    model = step.build_model(mcfg(), seed)
    model.set_target_stats(np.random.default_rng(seed).normal([0.01, -0.01], 0.01, (50, 2)))
    path = create.new_run_dir(name, root=root)
    run = store.RunWriter(path)
    run.save_weights(model)
    cfg = {"model": to_dict(mcfg()), "source": {"path": f"/data/{name}.csv"}}
    if created:
        cfg["created"] = created
    run.save_config(cfg)
    if val_mae is not None:
        run.append_history({"epoch": 1, "val_mae": val_mae + 1})
        run.append_history({"epoch": 2, "val_mae": val_mae})
    if finished:  # metrics.json is the last file a run gets: it marks the run finished
        run.save_metrics({})
    return path, model


def test_new_run_dir_names_and_never_overwrites(tmp_path, monkeypatch):
    import datetime as real_dt

    class Fixed(real_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return real_dt.datetime(2025, 3, 4, 5, 6, 7)

    monkeypatch.setattr(create._dt, "datetime", Fixed)
    a = create.new_run_dir("My Data", root=tmp_path / "runs")
    b = create.new_run_dir("My Data", root=tmp_path / "runs")
    c = create.new_run_dir("My Data", root=tmp_path / "runs")
    assert [p.name for p in (a, b, c)] == ["My-Data-20250304-050607", "My-Data-20250304-050607-2",
                                           "My-Data-20250304-050607-3"]
    for p in (a, b, c):  # new and empty but for the marker that names the folder as finhrm's
        assert [q.name for q in p.iterdir()] == [files.MARKER]
        assert json.loads((p / files.MARKER).read_text())["run"] == p.name


def test_save_then_load_gives_identical_predictions(tmp_path):
    path, model = make_run(tmp_path)
    x = np.random.default_rng(1).standard_normal((33, T, F)).astype(np.float32)
    before = inference.predict(model, x)
    forecaster, cfg = store.load_run(path)
    loaded = forecaster.model
    after = inference.predict(loaded, x)
    assert np.array_equal(before, after)
    stored = mx.load(str(path / "model.safetensors"))
    assert {"buffers.H_init", "buffers.L_init", "buffers.c_mid", "buffers.scale", "buffers.b0"} <= stored.keys()
    assert np.array_equal(np.array(stored["buffers.scale"]), np.array(model.buffers.scale))
    assert cfg.model.d_model == 32
    assert not [p for p in os.listdir(path) if "tmp" in p]  # no temp files left behind


def test_resolve_run_by_latest_name_path_and_weights_file(tmp_path):
    from finhrm_cli.run.choose import choose_run

    with pytest.raises(RunError, match="no runs yet under .*finhrm train"):
        choose_run(None, root=tmp_path)
    old, _ = make_run(tmp_path, "aaa", created="2024-01-01T10:00:00+00:00")
    new, _ = make_run(tmp_path, "bbb", created="2024-06-01T10:00:00+00:00")
    assert choose_run(None, root=tmp_path).path == new
    assert store.resolve_run(old.name, root=tmp_path) == old
    assert store.resolve_run(str(old), root=tmp_path) == old
    assert store.resolve_run(str(old / "model.safetensors"), root=tmp_path) == old
    assert store.resolve_run("aaa", root=tmp_path) == old  # unique prefix
    with pytest.raises(RunError, match="not found"):
        store.resolve_run("nope", root=tmp_path)
    with pytest.raises(RunError, match="not a finhrm run"):
        store.resolve_run(str(tmp_path), root=tmp_path)


def test_list_runs_newest_first_with_best_val_mae(tmp_path):
    assert store.list_runs(root=tmp_path / "none") == []
    make_run(tmp_path, "old", created="2024-01-01T10:00:00+00:00", val_mae=1.5)
    new, _ = make_run(tmp_path, "new", created="2024-06-01T10:00:00+00:00")
    store.RunWriter(new).save_metrics({"val": {"results": {"finhrm": {"mae_high": 1.0, "mae_low": 2.0}}}})
    runs = store.list_runs(root=tmp_path)
    assert [r["name"].split("-")[0] for r in runs] == ["new", "old"]
    assert runs[0]["best_val_mae"] == pytest.approx(1.5)  # from metrics.json
    assert runs[1]["best_val_mae"] == pytest.approx(1.5)  # from history.jsonl
    assert runs[0]["data"] == "/data/new.csv" and runs[0]["size"] > 0


def test_corrupt_or_foreign_weights_are_run_errors(tmp_path):
    path, _ = make_run(tmp_path)
    w = path / "model.safetensors"
    w.write_bytes(b"not a safetensors file at all")
    with pytest.raises(RunError, match="cannot load weights"):
        store.load_run(path)
    # weights of another shape of model
    other = step.build_model(mcfg(d_model=64), 0)
    store.RunWriter(path).save_weights(other)
    with pytest.raises(RunError, match="corrupt or from another model"):
        store.load_run(path)
    (path / "config.json").write_text("{broken")
    with pytest.raises(RunError, match="not valid JSON"):
        store.load_run(path)
    os.remove(path / "model.safetensors")
    (path / "config.json").write_text(json.dumps({"model": to_dict(mcfg())}))
    with pytest.raises(RunError, match="no weights file"):
        store.load_run(path)


def test_state_round_trip_and_missing_state(tmp_path):
    path, model = make_run(tmp_path)
    with pytest.raises(RunError, match="no saved training state"):
        store.load_state(path)
    from mlx.utils import tree_flatten

    opt = {"step": mx.array(7, mx.uint64), "learning_rate": mx.array(1e-3), "H.layers.0.qkv.weight.m": mx.ones((2, 3))}
    info = {"step": 3, "epoch": 1, "np_rng": np.random.default_rng(0).bit_generator.state, "best_val_mae": 0.5}
    store.RunWriter(path).save_state(weights=dict(tree_flatten(model.parameters())), optimizer=opt,
                                          rng_key=mx.random.key(5), info=info)
    st = store.load_state(path)
    assert st["info"]["step"] == 3 and st["info"]["np_rng"] == json.loads(json.dumps(info["np_rng"]))
    assert int(st["optimizer"]["step"].item()) == 7 and st["optimizer"]["step"].dtype == mx.uint64
    assert np.array_equal(np.array(st["rng_key"]), np.array(mx.random.key(5)))
    assert set(st["weights"]) == {k for k, _ in tree_flatten(model.parameters())}
    assert json.loads((path / "state" / "state.json").read_text())["epoch"] == 1


def test_history_append_and_rewrite(tmp_path):
    run = store.RunWriter(tmp_path / "r")
    for i in range(3):
        run.append_history({"epoch": i + 1, "val_mae": float(i)})
    assert [h["epoch"] for h in store.read_history(run.path)] == [1, 2, 3]
    run.write_history([{"epoch": 1}])
    assert store.read_history(run.path) == [{"epoch": 1}]
    run.update_config({"a": 1})
    run.update_config({"b": 2})
    assert store.read_json(run.path / "config.json") == {"a": 1, "b": 2}
