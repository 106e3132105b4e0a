"""Compiled inference only where its kernels need no compiler (issue 23): a cold backfill runs
the plain graph; training builds the kernels and leaves a mark in the kernel cache; a later
process on that machine runs compiled.  The outputs are the same either way."""

from __future__ import annotations

import numpy as np
import pytest

from finhrm_cli import blas
from finhrm_cli.config import ModelConfig
from finhrm_cli.forecast import inference
from finhrm_cli.train import step

T, F = 5, 4


def model():
    return step.build_model(ModelConfig(n_features=F, seq_len=T, d_model=32, n_heads=2, h_layers=1, l_layers=1,
                                        h_cycles=1, l_cycles=1, halt_max_steps=2), 0)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setitem(blas._STATE, "kernel_cache", str(tmp_path))
    monkeypatch.setattr(inference, "COMPILE_ABOVE", 40)
    return tmp_path


def x(n=60):
    return np.random.default_rng(0).standard_normal((n, T, F)).astype(np.float32)


def marks(folder):
    return list(folder.glob(".finhrm-forward-*"))


def test_a_cold_backfill_runs_the_plain_graph(cache):
    m = model()
    out = inference.predict(m, x())
    assert inference.usage(m).seen == 60 and inference.usage(m).compiled is None
    assert not marks(cache)
    np.testing.assert_array_equal(out, inference.predict(model(), x()))


def test_training_builds_the_kernels_and_a_later_process_uses_them(cache):
    trained = model()
    inference.usage(trained).build_kernels = True      # as the training loop sets it
    first = inference.predict(trained, x())
    assert inference.usage(trained).compiled is not None and len(marks(cache)) == 1
    later = model()                                     # another process, same model settings
    again = inference.predict(later, x())
    assert inference.usage(later).compiled is not None
    np.testing.assert_array_equal(first, again)
    other = step.build_model(ModelConfig(n_features=F, seq_len=T, d_model=64, n_heads=2, h_layers=1, l_layers=1,
                                         h_cycles=1, l_cycles=1, halt_max_steps=2), 0)
    inference.predict(other, x())                       # other settings: other kernels, not built
    assert inference.usage(other).compiled is None


def test_without_a_persistent_cache_nothing_is_marked(monkeypatch):
    monkeypatch.setitem(blas._STATE, "kernel_cache", None)
    monkeypatch.setattr(inference, "COMPILE_ABOVE", 40)
    m = model()
    inference.predict(m, x())
    assert inference.usage(m).compiled is None
