"""The optimized BLAS loaded ahead of MLX, in this process: it is used, its matmul agrees with
numpy, and its thread count leaves the cores other work holds.  The subprocess probes (a missing
BLAS, the kernel cache) are in e2e/test_blas_probes.py."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from finhrm_cli import blas
from finhrm_cli.blas import info, mlx_core


def test_loaded_matmul_agrees_with_numpy():
    mx = mlx_core()
    rng = np.random.default_rng(0)
    for m, k, n in ((64, 128, 384), (640, 128, 128), (3, 5, 7)):
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        got = np.array(mx.array(a) @ mx.array(b))
        np.testing.assert_allclose(got, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS swap is Linux-only")
def test_an_optimized_blas_is_loaded_on_linux():
    assert info()["kind"] in ("mkl", "openblas", "custom"), info()


@pytest.mark.skipif(not os.path.exists("/proc/stat") or (os.cpu_count() or 1) < 2, reason="needs /proc/stat and 2+ cores")
def test_blas_threads_leave_the_cores_other_work_holds(monkeypatch):
    from finhrm_cli import blas

    n = os.cpu_count()
    monkeypatch.setattr(blas, "cores_busy", lambda sample_s=0.1: 0.2)
    assert blas.auto_threads() == n
    monkeypatch.setattr(blas, "cores_busy", lambda sample_s=0.1: 1.0)
    assert blas.auto_threads() == n - 1
    monkeypatch.setattr(blas, "cores_busy", lambda sample_s=0.1: n + 3.0)
    assert blas.auto_threads() == 1
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        monkeypatch.undo()
        assert blas.cores_busy(0.3) >= 0.7   # the hog's core is seen as taken
    finally:
        hog.kill()
        hog.wait()


def test_cores_busy_measures_over_the_start_up_and_leaves_out_its_own_work(monkeypatch):
    """The reading taken first thing (start_sample) spans the imports; the process's own CPU
    time in that window is not 'other work', no sleep is needed once the window is long, and a
    stale reading is replaced.  /proc/stat and the clocks are faked, so the machine's load
    cannot sway it."""
    import time

    from finhrm_cli import blas

    hz = os.sysconf("SC_CLK_TCK")
    n = os.cpu_count() or 1
    readings = iter([(0, 0), (n * hz // 2, n * hz // 2)])  # half a second, every core busy
    clock = {"wall": 100.0, "own": 5.0}
    slept = []
    monkeypatch.setattr(blas, "_START", {})
    monkeypatch.setattr(blas, "_cpu_times", lambda: next(readings))
    monkeypatch.setattr(time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(time, "process_time", lambda: clock["own"])
    monkeypatch.setattr(time, "sleep", slept.append)
    blas.start_sample()
    clock["wall"] += 0.5            # the imports: half a second,
    clock["own"] += 0.5             # all of it this process's own work on one core
    busy = blas.cores_busy(0.1)
    assert slept == [0.0]           # the window was long enough: no real sleep
    assert busy == pytest.approx(n - 1)  # the other cores are taken, ours is not counted
    readings = iter([(0, 0), (0, 0), (0, n * hz // 10)])  # the stale one, a fresh one, after the sleep
    monkeypatch.setattr(blas, "_cpu_times", lambda: next(readings))
    blas.start_sample()
    clock["wall"] += 10             # a stale reading is replaced and slept for, not used
    assert blas.cores_busy(0.1) == 0.0
    assert slept[-1] == pytest.approx(0.1)


def test_numpys_own_openblas_runs_on_one_thread(monkeypatch):
    """finhrm's numpy fits are small: numpy's bundled OpenBLAS is set to one thread (the
    second call reads back what the first set), unless OPENBLAS_NUM_THREADS says otherwise."""
    first = blas.numpy_one_thread()
    if first is None:
        pytest.skip("this numpy has no bundled OpenBLAS to set (not the Linux wheel)")
    assert first >= 1
    assert blas.numpy_one_thread() == 1
    monkeypatch.setattr(blas, "_USER_OPENBLAS_THREADS", "2")
    assert blas.numpy_one_thread() is None
