"""The forecast cache: hits skip the model, any input change misses, hostile files are ignored."""

from __future__ import annotations

import io

import numpy as np
import pytest

from finhrm_cli import predcache


class Counter:
    """A stand-in model call: output is a function of the input, calls are counted."""

    def __init__(self):
        self.rows = 0

    def __call__(self, model, x):
        self.rows += len(x)
        return np.stack([x.sum(axis=(1, 2)), -x.mean(axis=(1, 2))], axis=1).astype(np.float32)


class Model:
    _finhrm_digest = "ab" * 32


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINHRM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "forecasts"


def windows(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 5, 3)).astype(np.float32)


def test_second_call_runs_only_new_rows(cache):
    fn, x = Counter(), windows(40)
    first = predcache.predict(Model(), x[:39], fn)
    assert fn.rows == 39
    again = predcache.predict(Model(), x, fn)           # one more day
    assert fn.rows == 40                                 # only the new row ran
    np.testing.assert_array_equal(again[:39], first)
    np.testing.assert_array_equal(again, Counter()(None, x))
    assert len(list(cache.glob("*.npz"))) == 1


def test_changed_input_or_other_weights_miss(cache):
    fn, x = Counter(), windows(10)
    predcache.predict(Model(), x, fn)
    y = x.copy()
    y[3, 0, 0] += 1e-6                                   # one feature of one window
    out = predcache.predict(Model(), y, fn)
    assert fn.rows == 11
    np.testing.assert_array_equal(out, Counter()(None, y))
    other = type("Other", (), {"_finhrm_digest": "cd" * 32})()
    predcache.predict(other, x, fn)
    assert fn.rows == 21


def test_off_without_digest_or_when_disabled(cache, monkeypatch):
    fn, x = Counter(), windows(5)
    predcache.predict(object(), x, fn)
    predcache.predict(object(), x, fn)
    assert fn.rows == 10 and not cache.exists()
    monkeypatch.setenv("FINHRM_CACHE", "tmp")
    predcache.predict(Model(), x, fn)
    predcache.predict(Model(), x, fn)
    assert fn.rows == 20


@pytest.mark.parametrize("payload", ["garbage", "pickle", "nan", "shape"])
def test_hostile_or_broken_cache_file_is_ignored_and_replaced(cache, payload):
    fn, x = Counter(), windows(6)
    predcache.predict(Model(), x, fn)
    path = next(cache.glob("*.npz"))
    keys = predcache.keys(x)
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
    out = predcache.predict(Model(), x, fn)
    assert fn.rows == 12                                 # recomputed, not read
    np.testing.assert_array_equal(out, Counter()(None, x))
    assert len(predcache.load(Model._finhrm_digest)) == 6  # and the file is whole again


def test_size_is_bounded(cache, monkeypatch):
    monkeypatch.setattr(predcache, "MAX_ROWS", 8)
    fn = Counter()
    predcache.predict(Model(), windows(6, 1), fn)
    predcache.predict(Model(), windows(6, 2), fn)
    table = predcache.load(Model._finhrm_digest)
    assert len(table) == 8
    assert all(bytes(k) in table for k in predcache.keys(windows(6, 2)))  # the newest are kept


def test_calls_bigger_than_the_cache_bypass_it(cache, monkeypatch):
    monkeypatch.setattr(predcache, "MAX_ROWS", 8)
    fn = Counter()
    out = predcache.predict(Model(), windows(9), fn)
    np.testing.assert_array_equal(out, Counter()(None, windows(9)))
    assert fn.rows == 9 and not cache.exists()


def test_another_finhrm_version_starts_afresh(cache, monkeypatch):
    import finhrm_cli

    fn, x = Counter(), windows(4)
    predcache.predict(Model(), x, fn)
    monkeypatch.setattr(finhrm_cli, "__version__", "9.9.9")
    predcache.predict(Model(), x, fn)
    assert fn.rows == 8 and len(list(cache.glob("*.npz"))) == 2


def test_digest_must_be_hex(cache):
    fn = Counter()
    evil = type("Evil", (), {"_finhrm_digest": "../../etc/x"})()
    predcache.predict(evil, windows(3), fn)
    assert not cache.exists()
