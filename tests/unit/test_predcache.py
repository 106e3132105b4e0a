"""The forecast cache: hits skip the model, any input change misses, hostile files are ignored."""

from __future__ import annotations

import dataclasses
import io
import os
import stat

import numpy as np
import pytest

from finhrm_cli.forecast import memo


class Counter:
    """A stand-in model call: output is a function of the input, calls are counted."""

    def __init__(self):
        self.rows = 0

    def __call__(self, model, x):
        self.rows += len(x)
        return np.stack([x.sum(axis=(1, 2)), -x.mean(axis=(1, 2))], axis=1).astype(np.float32)


class Model:
    digest = "ab" * 32


def ident(model) -> str:
    """The cache identity of a stand-in model: its weights' digest and its settings."""
    return memo.identity(getattr(model, "digest", None), getattr(model, "cfg", None))


def predict(model, x, fn):
    return memo.predict(ident(model), model, x, fn)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINHRM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "forecasts"


def windows(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 5, 3)).astype(np.float32)


def test_second_call_runs_only_new_rows(cache):
    fn, x = Counter(), windows(40)
    first = predict(Model(), x[:39], fn)
    assert fn.rows == 39
    again = predict(Model(), x, fn)           # one more day
    assert fn.rows == 40                                 # only the new row ran
    np.testing.assert_array_equal(again[:39], first)
    np.testing.assert_array_equal(again, Counter()(None, x))
    assert len(list(cache.glob("*.npz"))) == 1


def test_changed_input_or_other_weights_miss(cache):
    fn, x = Counter(), windows(10)
    predict(Model(), x, fn)
    y = x.copy()
    y[3, 0, 0] += 1e-6                                   # one feature of one window
    out = predict(Model(), y, fn)
    assert fn.rows == 11
    np.testing.assert_array_equal(out, Counter()(None, y))
    other = type("Other", (), {"digest": "cd" * 32})()
    predict(other, x, fn)
    assert fn.rows == 21


def test_off_without_digest_or_when_disabled(cache, monkeypatch):
    fn, x = Counter(), windows(5)
    predict(object(), x, fn)
    predict(object(), x, fn)
    assert fn.rows == 10 and not cache.exists()
    monkeypatch.setenv("FINHRM_CACHE", "tmp")
    predict(Model(), x, fn)
    predict(Model(), x, fn)
    assert fn.rows == 20


@pytest.mark.parametrize("payload", ["garbage", "pickle", "nan", "shape"])
def test_hostile_or_broken_cache_file_is_ignored_and_replaced(cache, payload):
    fn, x = Counter(), windows(6)
    predict(Model(), x, fn)
    path = next(cache.glob("*.npz"))
    keys = memo.keys(x)
    buf = io.BytesIO()
    if payload == "garbage":
        buf.write(b"PK\x03\x04 not a zip at all")
    elif payload == "pickle":  # an object array needs pickle to load: refused
        np.savez(buf, keys=np.array([object()] * 6, dtype=object), preds=np.zeros((6, 2), np.float32))
    elif payload == "nan":     # right shapes, poisoned values
        np.savez(buf, keys=keys, preds=np.full((6, 2), np.nan, np.float32))
    else:
        np.savez(buf, keys=keys[:, :8], preds=np.zeros((6, 2), np.float32))
    path.write_bytes(buf.getvalue())
    out = predict(Model(), x, fn)
    assert fn.rows == 12                                 # recomputed, not read
    np.testing.assert_array_equal(out, Counter()(None, x))
    assert len(memo.load(ident(Model()))) == 6  # and the file is whole again


def test_size_is_bounded(cache, monkeypatch):
    monkeypatch.setattr(memo, "MAX_ROWS", 8)
    fn = Counter()
    predict(Model(), windows(6, 1), fn)
    predict(Model(), windows(6, 2), fn)
    table = memo.load(ident(Model()))
    assert len(table) == 8
    assert all(bytes(k) in table for k in memo.keys(windows(6, 2)))  # the newest are kept


def test_calls_bigger_than_the_cache_bypass_it(cache, monkeypatch):
    monkeypatch.setattr(memo, "MAX_ROWS", 8)
    fn = Counter()
    out = predict(Model(), windows(9), fn)
    np.testing.assert_array_equal(out, Counter()(None, windows(9)))
    assert fn.rows == 9 and not cache.exists()


def test_another_finhrm_version_starts_afresh(cache, monkeypatch):
    import finhrm_cli

    fn, x = Counter(), windows(4)
    predict(Model(), x, fn)
    monkeypatch.setattr(finhrm_cli, "__version__", "9.9.9")
    predict(Model(), x, fn)
    assert fn.rows == 8 and len(list(cache.glob("*.npz"))) == 2


def test_a_digest_never_becomes_a_path(cache, tmp_path):
    fn = Counter()
    evil = type("Evil", (), {"digest": "../../etc/x"})()
    predict(evil, windows(3), fn)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(p.parent == cache for p in written)
    assert all(len(p.name.split("-")[0]) == 40 and p.name.split("-")[0].isalnum() for p in written)


@dataclasses.dataclass
class Cfg:
    h_cycles: int = 2
    halt_max_steps: int = 4


class Configured:
    """A model whose output depends on its settings as well as its weights."""

    digest = "ab" * 32

    def __init__(self, **kw):
        self.cfg = Cfg(**kw)


class ByConfig(Counter):
    def __call__(self, model, x):
        return super().__call__(model, x) * model.cfg.h_cycles


@pytest.mark.parametrize("change", [{"h_cycles": 1}, {"halt_max_steps": 2}])
def test_same_weights_other_settings_miss(cache, change):
    """A copied run with another model setting must never get the original's forecasts."""
    fn, x = ByConfig(), windows(7)
    first = predict(Configured(), x, fn)
    other = Configured(**change)
    out = predict(other, x, fn)
    assert fn.rows == 14
    np.testing.assert_array_equal(out, ByConfig()(other, x))
    assert len(list(cache.glob("*.npz"))) == 2
    np.testing.assert_array_equal(predict(Configured(), x, fn), first)
    assert fn.rows == 14


def test_a_well_formed_file_of_another_identity_is_not_served(cache):
    """A crafted file with the right name, shapes and keys but other forecasts is ignored."""
    fn, x = Counter(), windows(5)
    predict(Model(), x, fn)
    path = next(cache.glob("*.npz"))
    buf = io.BytesIO()
    np.savez(buf, keys=memo.keys(x), preds=np.full((5, 2), 75.0, np.float32),
             identity=np.array("someone else's model"))
    path.write_bytes(buf.getvalue())
    out = predict(Model(), x, fn)
    assert fn.rows == 10
    np.testing.assert_array_equal(out, Counter()(None, x))


@pytest.mark.parametrize("how", ["group-writable", "symlink"])
def test_a_cache_file_others_could_write_is_not_read(cache, tmp_path, how):
    fn, x = Counter(), windows(5)
    predict(Model(), x, fn)
    path = next(cache.glob("*.npz"))
    if how == "group-writable":
        os.chmod(path, 0o664)
    else:
        real = tmp_path / "elsewhere.npz"
        real.write_bytes(path.read_bytes())
        path.unlink()
        path.symlink_to(real)
    assert memo.load(ident(Model())) == {}
    predict(Model(), x, fn)
    assert fn.rows == 10


def test_cache_files_and_folders_are_private_under_any_umask(cache):
    old = os.umask(0)
    try:
        predict(Model(), windows(3), Counter())
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in cache.iterdir())
